"""One error table: /mcp (fast path and SDK path), the REST API and the LLM helpers answer a failure alike."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from patchbay import Hub, replies
from patchbay.errors import (
    CallTimeoutError,
    ConfigError,
    PatchbayError,
    ServerExitedError,
    ServerUnavailableError,
    UnknownServerError,
    UnknownToolError,
    UpstreamError,
)
from patchbay.llm import run_anthropic_tool_uses
from tests.conftest import bad
from tests.test_fastpath import call, open_session, sse_json
from tests.test_serve import Served, start_serve, stop_serve


async def wait_for_state(http: Any, name: str, state: str) -> None:
    async with asyncio.timeout(30):
        while (await http.get(f"/api/servers/{name}")).json()["state"] != state:
            await asyncio.sleep(0.05)


def test_the_table_covers_every_error_class_once() -> None:
    cases: list[tuple[PatchbayError, int, bool, int]] = [
        (UnknownToolError("x", []), -32602, False, 404),
        (UnknownToolError("r://x", [], kind="resource"), -32002, False, 404),
        (UnknownServerError("x", []), -32602, False, 404),
        (ConfigError("bad"), -32602, False, 422),
        (ServerUnavailableError("s", "server 's' is not running"), -32603, True, 503),
        (ServerExitedError("s", "exited with status 3"), -32603, True, 503),
        (CallTimeoutError("s", "tools/call", 1.0), -32001, True, 504),
        (UpstreamError("s", -32099, "nope", {"k": 1}), -32099, True, 502),
        (PatchbayError("other"), -32603, True, 502),
    ]
    for exc, code, tool_error, status in cases:
        assert replies.jsonrpc_code(exc) == code, exc
        assert replies.error_kind(exc).tool_error is tool_error, exc
        assert replies.rest_error(exc)[1] == status, exc
        reply = replies.call_reply(1, exc)
        if tool_error:
            assert reply["result"]["isError"] is True and str(exc) in reply["result"]["content"][0]["text"]
        else:
            assert reply["error"]["code"] == code
    assert replies.call_reply(1, RuntimeError("secret detail"))["error"] == {
        "code": -32603,
        "message": replies.INTERNAL_MESSAGE,
    }


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    config = tmp_path / "patchbay.json"
    servers = {"mb": bad(), "down": bad("--exit-at-start", "1", maxRestarts=0)}
    config.write_text(json.dumps({"mcpServers": servers}))
    s = await start_serve(config, ready=False)  # readyz stays 503: a server failed
    async with s.http() as http:
        await wait_for_state(http, "down", "failed")
        await wait_for_state(http, "mb", "ready")
    yield s
    await stop_serve(s)


async def test_every_surface_answers_a_failure_alike(served: Served) -> None:
    """A tool of a server that is down, an upstream JSON-RPC error, and an unknown tool."""
    async with served.http() as http:
        fast = await open_session(http)
        sdk = await open_session(http, {"sampling": {}})
        for name, kind in (
            ("down__echo", "unavailable"),
            ("mb__rpc_error", "upstream"),
            ("mb__nope", "unknown"),
        ):
            answers: dict[str, Any] = {}
            for form, headers in (("fast", fast), ("sdk", sdk)):
                r = await http.post("/mcp", json=call(1, name, {}), headers=headers)
                answers[form] = (
                    r.json() if r.headers["content-type"].startswith("application/json") else sse_json(r.text)
                )
            assert answers["fast"] == answers["sdk"], name
            rest = await http.post(f"/api/tools/{name}/call", json={"arguments": {}})
            if kind == "unknown":
                assert answers["fast"]["error"]["code"] == -32602
                assert rest.status_code == 404 and rest.json()["error"] == "unknown_tool"
            else:
                result = answers["fast"]["result"]
                assert result["isError"] is True
                server = "down" if kind == "unavailable" else "mb"
                assert f"'{server}'" in result["content"][0]["text"]
                assert rest.status_code == (503 if kind == "unavailable" else 502)
                assert rest.json()["server"] == server
                assert rest.json()["detail"] == result["content"][0]["text"]


async def test_the_llm_helpers_give_the_same_text(make_hub: Any) -> None:
    hub: Hub = await make_hub({"down": bad("--exit-at-start", "1", maxRestarts=0)})
    [block] = await run_anthropic_tool_uses(
        hub, [{"type": "tool_use", "id": "t", "name": "down__echo", "input": {}}]
    )
    try:
        await hub.call_tool("down__echo", {})
    except PatchbayError as exc:
        assert block["content"] == [{"type": "text", "text": str(exc)}]
        assert block["is_error"] is True
