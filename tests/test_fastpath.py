"""The /mcp fast path: which requests it answers itself, and that it answers them as the SDK would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import bad
from tests.test_serve import Served, start_serve, stop_serve

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"mb": bad()}}))
    s = await start_serve(config)
    yield s
    await stop_serve(s)


async def open_session(
    http: httpx2.AsyncClient, capabilities: dict[str, Any] | None = None
) -> dict[str, str]:
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": capabilities or {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    r = await http.post("/mcp", json=init, headers=ACCEPT)
    assert r.status_code == 200
    headers = {**ACCEPT, "Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    done = await http.post(
        "/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
    )
    assert done.status_code == 202
    return headers


def call(
    rid: Any, name: str, arguments: dict[str, Any], meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


def sse_json(text: str) -> dict[str, Any]:
    data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]
    return json.loads(data[-1])  # type: ignore[no-any-return]


async def stderr_tail(http: httpx2.AsyncClient) -> list[str]:
    return (await http.get("/api/servers/mb")).json()["stderr_tail"]  # type: ignore[no-any-return]


async def test_plain_call_is_answered_as_json(served: Served) -> None:
    async with served.http() as http:
        headers = await open_session(http)
        r = await http.post("/mcp", json=call(7, "mb__add", {"a": 1, "b": 2}), headers=headers)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert body["id"] == 7
        assert body["result"]["structuredContent"] == {"result": 3}
        assert "resultType" not in body["result"]  # a handshake-era result, exactly as the SDK sends it
        unknown = (await http.post("/mcp", json=call(8, "mb__nope", {}), headers=headers)).json()
        assert unknown["error"]["code"] == -32602 and "unknown tool 'mb__nope'" in unknown["error"]["message"]


async def test_requests_that_need_the_sdk_go_to_it(served: Served) -> None:
    async with served.http() as http:
        headers = await open_session(http)
        with_progress = await http.post(
            "/mcp", json=call(1, "mb__sleep", {"seconds": 0.2}, {"progressToken": "p"}), headers=headers
        )
        assert with_progress.headers["content-type"].startswith("text/event-stream")  # progress streams
        assert sse_json(with_progress.text)["result"]["content"][0]["text"] == "slept 0.2"
        listing = await http.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "prompts/list"}, headers=headers
        )
        assert listing.headers["content-type"].startswith("text/event-stream")
        asks_back = await open_session(http, {"sampling": {}})  # its calls may need sampling: the SDK's path
        r = await http.post("/mcp", json=call(3, "mb__echo", {"text": "x"}), headers=asks_back)
        assert r.headers["content-type"].startswith("text/event-stream")
        unknown_session = {**headers, "Mcp-Session-Id": "not-a-session"}
        assert (
            await http.post("/mcp", json=call(4, "mb__echo", {"text": "x"}), headers=unknown_session)
        ).status_code == 404


async def test_modern_era_call_is_stamped_like_the_sdks(served: Served) -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    headers = {
        **ACCEPT,
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "mb__echo",
    }
    async with served.http() as http:
        r = await http.post("/mcp", json=call(1, "mb__echo", {"text": "modern"}, meta), headers=headers)
        result = r.json()["result"]
        assert result["content"] == [{"type": "text", "text": "modern"}]
        assert result["resultType"] == "complete"
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "patchbay"


async def in_flight(http: httpx2.AsyncClient) -> int:
    return (await http.get("/api/servers/mb")).json()["calls_in_flight"]  # type: ignore[no-any-return]


async def cancelled_upstream(http: httpx2.AsyncClient) -> int:
    return sum(line.startswith("CANCELLED") for line in await stderr_tail(http))


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    """Wait for a condition of the real system (bounded), never for a guessed amount of time."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def test_cancellation_and_disconnect_reach_the_upstream(served: Served) -> None:
    async with served.http() as http:
        headers = await open_session(http)
        pending = asyncio.create_task(
            http.post("/mcp", json=call(9, "mb__sleep", {"seconds": 30}), headers=headers)
        )
        await until(lambda: _eq(in_flight(http), 1), "the call to reach the upstream")
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}}
        assert (await http.post("/mcp", json=cancel, headers=headers)).status_code == 202
        assert (await pending).status_code == 202  # a cancelled request gets no answer
        await until(lambda: _eq(cancelled_upstream(http), 1), "the upstream to see the cancellation")

        async with httpx2.AsyncClient(base_url=served.base, timeout=30) as impatient:
            hanging = asyncio.create_task(
                impatient.post("/mcp", json=call(10, "mb__sleep", {"seconds": 30}), headers=headers)
            )
            await until(lambda: _eq(in_flight(http), 1), "the second call to reach the upstream")
            hanging.cancel()  # the client hangs up mid-call: its connection is closed
            with pytest.raises(asyncio.CancelledError):
                await hanging
        await until(lambda: _eq(cancelled_upstream(http), 2), "the upstream to see the disconnect")
        assert await in_flight(http) == 0
        # the session is still good afterwards
        r = await http.post("/mcp", json=call(11, "mb__echo", {"text": "ok"}), headers=headers)
        assert r.json()["result"]["content"][0]["text"] == "ok"


async def _eq(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
