"""A small, fast-starting stdio MCP server for the pass-through tests (completion, subscriptions, counting).

Hand-written JSON-RPC (no SDK import, so it starts in milliseconds). It counts every ``tools/call`` it
receives, so a test can prove that a malformed request never reached it; it answers
``completion/complete`` for its prompt and its resource template; it keeps the set of subscribed URIs and,
on the ``touch`` tool, sends ``notifications/resources/updated`` for a subscribed URI.

Flags: ``--no-completions`` and ``--no-subscribe`` leave those capabilities out.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

JsonObj = dict[str, Any]

COLORS = ["red", "green", "blue", "black"]
ITEMS = ["1", "2", "3", "10"]


def _obj(props: JsonObj | None = None, required: list[str] | None = None) -> JsonObj:
    schema: JsonObj = {"type": "object", "properties": props or {}}
    if required:
        schema["required"] = required
    return schema


TOOLS: list[JsonObj] = [
    {"name": "count", "description": "Count this call; return the count so far.", "inputSchema": _obj()},
    {"name": "hits", "description": "Return how many tools/call requests arrived.", "inputSchema": _obj()},
    {
        "name": "touch",
        "description": "Send resources/updated for the URI if it is subscribed.",
        "inputSchema": _obj({"uri": {"type": "string"}}, ["uri"]),
    },
    {"name": "subscribed", "description": "The URIs subscribed now, sorted.", "inputSchema": _obj()},
]
RESOURCES: list[JsonObj] = [
    {"uri": "pt://a", "name": "a", "mimeType": "text/plain"},
    {"uri": "pt://b", "name": "b", "mimeType": "text/plain"},
]
TEMPLATES: list[JsonObj] = [{"uriTemplate": "pt://item/{id}", "name": "item", "mimeType": "text/plain"}]
PROMPTS: list[JsonObj] = [
    {"name": "pick", "description": "Pick a colour.", "arguments": [{"name": "color", "required": True}]}
]


class Server:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.calls = 0
        self.subscribed: set[str] = set()

    def send(self, message: JsonObj) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    def capabilities(self) -> JsonObj:
        caps: JsonObj = {
            "tools": {},
            "resources": {"subscribe": not self.args.no_subscribe},
            "prompts": {},
        }
        if not self.args.no_completions:
            caps["completions"] = {}
        return caps

    def handle(self, method: str, params: JsonObj) -> Any:
        if method == "initialize":
            return {
                "protocolVersion": params.get("protocolVersion", "2025-11-25"),
                "capabilities": self.capabilities(),
                "serverInfo": {"name": "passthrough", "version": "1"},
            }
        if method == "ping":
            return {}
        if method == "tools/list":
            return {"tools": TOOLS}
        if method == "resources/list":
            return {"resources": RESOURCES}
        if method == "resources/templates/list":
            return {"resourceTemplates": TEMPLATES}
        if method == "prompts/list":
            return {"prompts": PROMPTS}
        if method == "resources/read":
            uri = params.get("uri")
            return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": f"content of {uri}"}]}
        if method == "prompts/get":
            color = (params.get("arguments") or {}).get("color", "?")
            return {"messages": [{"role": "user", "content": {"type": "text", "text": f"pick {color}"}}]}
        if method == "resources/subscribe" and not self.args.no_subscribe:
            self.subscribed.add(str(params.get("uri")))
            return {}
        if method == "resources/unsubscribe" and not self.args.no_subscribe:
            self.subscribed.discard(str(params.get("uri")))
            return {}
        if method == "completion/complete" and not self.args.no_completions:
            return self.complete(params)
        if method == "tools/call":
            return self.call(params)
        raise LookupError(method)

    def complete(self, params: JsonObj) -> JsonObj:
        ref = params.get("ref") or {}
        argument = params.get("argument") or {}
        prefix = str(argument.get("value", ""))
        if ref.get("type") == "ref/prompt" and ref.get("name") == "pick":
            pool = COLORS
        elif ref.get("type") == "ref/resource" and ref.get("uri") == "pt://item/{id}":
            pool = ITEMS
        else:
            pool = []
        values = [v for v in pool if v.startswith(prefix)]
        return {"completion": {"values": values, "total": len(values), "hasMore": False}}

    def call(self, params: JsonObj) -> JsonObj:
        self.calls += 1
        name = params.get("name")
        arguments = params.get("arguments") or {}
        if name == "count":
            text = str(self.calls)
        elif name == "hits":
            self.calls -= 1  # asking does not count
            text = str(self.calls)
        elif name == "touch":
            self.calls -= 1
            uri = str(arguments.get("uri"))
            if uri in self.subscribed:
                self.send(
                    {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}}
                )
            text = "touched"
        elif name == "subscribed":
            self.calls -= 1
            text = ",".join(sorted(self.subscribed))
        else:
            return {"content": [{"type": "text", "text": f"unknown tool {name}"}], "isError": True}
        return {"content": [{"type": "text", "text": text}]}

    def run(self) -> None:
        for line in sys.stdin:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if not isinstance(msg, dict) or "method" not in msg:
                continue
            if "id" not in msg:
                continue  # notifications: nothing to do
            try:
                result = self.handle(msg["method"], msg.get("params") or {})
            except LookupError as exc:
                error = {"code": -32601, "message": f"Method not found: {exc}"}
                self.send({"jsonrpc": "2.0", "id": msg["id"], "error": error})
                continue
            self.send({"jsonrpc": "2.0", "id": msg["id"], "result": result})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--no-completions", action="store_true")
    p.add_argument("--no-subscribe", action="store_true")
    Server(p.parse_args()).run()


if __name__ == "__main__":
    main()
