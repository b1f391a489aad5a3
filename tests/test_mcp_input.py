"""Malformed JSON-RPC on ``/mcp``: the fast path and the SDK path answer every input alike, never 500, and
nothing invalid reaches an upstream (the passthrough server counts every ``tools/call`` it receives)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.test_fastpath import ACCEPT, open_session
from tests.test_serve import Served, start_serve, stop_serve

PASSTHROUGH = Path(__file__).parent / "servers" / "passthrough_server.py"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


def passthrough(*flags: str) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(PASSTHROUGH), *flags]}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"pt": passthrough()}}))
    s = await start_serve(config)
    yield s
    await stop_serve(s)


def request(rid: Any = 1, params: Any = None, **extra: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": "tools/call"}
    msg["params"] = {"name": "pt__count", "arguments": {}} if params is None else params
    msg.update(extra)
    return msg


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@dataclass
class Case:
    name: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)  # replaces the defaults where given
    runs: bool = False  # whether the SDK executes it (then both paths must)
    runs_modern: bool | None = None  # the same for the 2026-07-28 leg, when it differs


def raw(msg: Any) -> bytes:
    return json.dumps(msg).encode()


CALL = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pt__count","arguments":{"a":%s}}}'
CANCEL = {"jsonrpc": "2.0", "method": "notifications/cancelled"}
CASES = [
    Case("well-formed (control)", raw(request()), runs=True),
    Case("100000-deep arguments", (CALL % deep(100_000)).encode()),
    # The handshake-era leg parses with pydantic (nesting limit 200), the modern one with json (about 1000).
    Case("300-deep arguments", (CALL % deep(300)).encode(), runs_modern=True),
    Case("object id", raw(request({"a": 1}))),
    Case("array id", raw(request([1]))),
    Case("bool id", raw(request(True))),
    Case("null id", raw(request(None))),
    Case("float id", raw(request(1.5))),
    Case("text/plain", raw(request()), {"Content-Type": "text/plain"}),
    Case("no content type", raw(request()), {"Content-Type": ""}),
    Case("invalid UTF-8", CALL.encode().replace(b'"a":%s', b'"a":"\xff\xfe"')),
    Case("lone surrogate", CALL.encode().replace(b'"a":%s', b'"a":"\xed\xa0\x80"')),
    Case("string body", raw("tools/call")),
    Case("number body", b"42"),
    Case("null body", b"null"),
    Case("empty body", b""),
    Case("batch", raw([request()])),
    Case("5000-digit number", (CALL % ("1" * 5000)).encode()),
    Case("missing method", raw({"jsonrpc": "2.0", "id": 1, "params": {"name": "pt__count"}})),
    Case("method not a string", raw({**request(), "method": 5})),
    Case("no jsonrpc member", raw({k: v for k, v in request().items() if k != "jsonrpc"})),
    Case("params an array", raw(request(1, ["pt__count"]))),
    Case("params a string", raw(request(1, "pt__count"))),
    Case("name not a string", raw(request(1, {"name": 5, "arguments": {}}))),
    Case("arguments an array", raw(request(1, {"name": "pt__count", "arguments": []}))),
    Case("arguments a string", raw(request(1, {"name": "pt__count", "arguments": "x"}))),
    Case("arguments a number", raw(request(1, {"name": "pt__count", "arguments": 0}))),
    Case("arguments null (valid)", raw(request(1, {"name": "pt__count", "arguments": None})), runs=True),
    Case("cancel, object requestId", raw({**CANCEL, "params": {"requestId": {"a": 1}}})),
    Case("cancel, params an array", raw({**CANCEL, "params": [1]})),
    Case("_meta an array", raw(request(1, {"name": "pt__count", "arguments": {}, "_meta": []}))),
]


def modern(msg_bytes: bytes, progress: bool) -> bytes:
    """The same body as a 2026-07-28 request: the envelope in _meta (and a progress token for the SDK)."""
    try:
        msg = json.loads(msg_bytes)
    except (ValueError, RecursionError):
        return msg_bytes
    params = msg.get("params") if isinstance(msg, dict) else None
    if isinstance(params, dict) and (params.get("_meta") is None or isinstance(params.get("_meta"), dict)):
        meta = {**MODERN_META, **(params.get("_meta") or {})}
        if progress:
            meta["progressToken"] = "p"
        params["_meta"] = meta
    return json.dumps(msg).encode()


def outcome(r: httpx2.Response) -> tuple[int, Any]:
    """(status, JSON-RPC error code, or "result", or None for no body)."""
    text = r.text
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        lines = [ln[5:].strip() for ln in text.splitlines() if ln.startswith("data:") and ln[5:].strip()]
        text = lines[-1] if lines else ""
    if not text:
        return r.status_code, None
    try:
        body = json.loads(text)
    except ValueError:
        return r.status_code, f"not JSON: {text[:40]}"
    if not isinstance(body, dict):
        return r.status_code, f"not an object: {text[:40]}"
    return r.status_code, body["error"]["code"] if "error" in body else "result"


async def hits(http: httpx2.AsyncClient, headers: dict[str, str]) -> int:
    r = await http.post("/mcp", json=request(999, {"name": "pt__hits", "arguments": {}}), headers=headers)
    _, result = outcome(r)
    assert result == "result"
    text = r.text if r.headers["content-type"].startswith("application/json") else r.text.split("data:")[-1]
    return int(json.loads(text)["result"]["content"][0]["text"])


async def test_malformed_requests_get_the_same_answer_on_both_paths_and_never_run(served: Served) -> None:
    async with served.http() as http:
        fast = await open_session(http)
        sdk = await open_session(http, {"sampling": {}})  # a client that may be asked back: the SDK's path
        modern_headers = {**ACCEPT, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"}
        modern_headers["Mcp-Name"] = "pt__count"
        table: list[str] = []
        problems: list[str] = []
        for case in CASES:
            answers = {}
            forms = {
                "fast": (case.body, {**fast, **case.headers}),
                "sdk": (case.body, {**sdk, **case.headers}),
                "modern-fast": (modern(case.body, False), {**modern_headers, **case.headers}),
                "modern-sdk": (modern(case.body, True), {**modern_headers, **case.headers}),
            }
            for form, (body, headers) in forms.items():
                before = await hits(http, fast)
                r = await http.post("/mcp", content=body, headers={k: v for k, v in headers.items() if v})
                answers[form] = outcome(r)
                ran = await hits(http, fast) - before
                table.append(f"{case.name:28} {form:12} {answers[form]} ran={ran}")
                runs = case.runs
                if form.startswith("modern") and case.runs_modern is not None:
                    runs = case.runs_modern
                status, answer = answers[form]
                if status >= 500 or (isinstance(answer, str) and answer != "result"):
                    problems.append(f"{case.name} ({form}): {answers[form]}, not a JSON-RPC answer")
                if ran != int(runs):
                    problems.append(f"{case.name} ({form}): ran upstream {ran} times")
            for a, b in (("fast", "sdk"), ("modern-fast", "modern-sdk")):
                if answers[a] != answers[b]:
                    problems.append(f"{case.name}: {a} {answers[a]} != {b} {answers[b]}")
        assert not problems, "\n".join([*problems, "", *table])
