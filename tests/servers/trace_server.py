"""A stdio MCP server that reports the ``_meta`` of each request it gets, for the tracing tests.

Hand-written JSON-RPC (no SDK import, so it starts in milliseconds). Tools: ``meta`` answers with the
``params._meta`` of its ``tools/call`` as JSON text; ``fail`` answers ``isError``; ``env`` answers with
the value of an environment variable (empty if unset). The resource
``trace://meta`` and the prompt ``meta`` answer with the ``_meta`` of their request the same way.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

JsonObj = dict[str, Any]
EMPTY = {"type": "object", "properties": {}}
TOOLS = [
    {"name": "meta", "description": "The _meta of this call, as JSON.", "inputSchema": EMPTY},
    {"name": "fail", "description": "Always fails (isError).", "inputSchema": EMPTY},
    {
        "name": "env",
        "description": "The value of an environment variable.",
        "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    },
]


def handle(method: str, params: JsonObj) -> Any:
    meta = json.dumps(params.get("_meta") or {})
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion", "2025-11-25"),
            "capabilities": {"tools": {}, "resources": {}, "prompts": {}},
            "serverInfo": {"name": "trace", "version": "1"},
        }
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "resources/list":
        return {"resources": [{"uri": "trace://meta", "name": "meta", "mimeType": "application/json"}]}
    if method == "resources/templates/list":
        return {"resourceTemplates": []}
    if method == "prompts/list":
        return {"prompts": [{"name": "meta", "description": "The _meta of this request."}]}
    if method == "tools/call":
        if params.get("name") == "fail":
            return {"content": [{"type": "text", "text": "it failed"}], "isError": True}
        if params.get("name") == "env":
            value = os.environ.get(str((params.get("arguments") or {}).get("name")), "")
            return {"content": [{"type": "text", "text": value}]}
        return {"content": [{"type": "text", "text": meta}]}
    if method == "resources/read":
        return {"contents": [{"uri": params.get("uri"), "mimeType": "application/json", "text": meta}]}
    if method == "prompts/get":
        return {"messages": [{"role": "user", "content": {"type": "text", "text": meta}}]}
    if method == "ping":
        return {}
    raise LookupError(method)


def main() -> None:
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict) or "method" not in msg or "id" not in msg:
            continue  # notifications: nothing to do
        try:
            reply: JsonObj = {"result": handle(msg["method"], msg.get("params") or {})}
        except LookupError as exc:
            reply = {"error": {"code": -32601, "message": f"Method not found: {exc}"}}
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], **reply}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
