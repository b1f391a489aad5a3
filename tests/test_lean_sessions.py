"""Lean handshake-era sessions (``lean_sessions.py``): held without the SDK until a request needs it, then
handed to it under the same id. Real uvicorn on real sockets, a real upstream, the SDK's own client."""

from __future__ import annotations

import asyncio
import json
import signal
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import mcp.types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import bad
from tests.test_fastpath import ACCEPT, call, open_session, sse_json
from tests.test_mcp_endpoint import endpoint_server
from tests.test_serve import Served, start_serve, stop_serve

INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"mb": bad()}}))
    s = await start_serve(config)
    yield s
    await stop_serve(s)


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def test_an_sdk_client_gets_everything_from_a_session_opened_lean(served: Served) -> None:
    """``patchbay serve`` and the SDK's ClientSession: the handshake and the client's GET stream are
    served lean, ``list_prompts`` hands the session (its open stream too) to the SDK, and everything works
    on it, list_changed on the same stream included."""
    changed = asyncio.Event()

    async def on_message(msg: Any) -> None:
        if isinstance(msg, types.ToolListChangedNotification):
            changed.set()

    async with (
        streamable_http_client(served.mcp) as (r, w),
        ClientSession(r, w, message_handler=on_message) as session,
    ):
        init = await session.initialize()
        assert init.server_info.name == "patchbay" and init.protocol_version == "2025-11-25"
        assert init.capabilities.tools is not None and init.capabilities.tools.list_changed
        assert text(await session.call_tool("mb__echo", {"text": "lean"})) == "lean"
        assert {p.name for p in (await session.list_prompts()).prompts} == {"mb__greet"}
        with warnings.catch_warnings():  # deprecated in 2026-07-28; still the SDK's to serve
            warnings.simplefilter("ignore")
            await session.set_logging_level("debug")
        for n in range(60):  # until the GET stream (opened by the client in the background) carries one
            await session.call_tool("mb__set_tools", {"names": [f"extra{n}"]})
            try:
                await asyncio.wait_for(changed.wait(), 0.5)
                break
            except TimeoutError:
                continue
        assert changed.is_set()
        assert f"mb__extra{n}" in {t.name for t in (await session.list_tools()).tools}


async def test_initialize_is_answered_lean_exactly_as_the_sdk_answers_it(make_hub: Any) -> None:
    hub = await make_hub({"mb": bad()})
    async with (
        endpoint_server(hub) as (base, endpoint),
        httpx2.AsyncClient(base_url=base, timeout=30) as http,
    ):
        lean = await http.post("/mcp", json=INIT, headers=ACCEPT)
        assert endpoint.lean is not None
        lean_id = lean.headers["mcp-session-id"]
        assert lean_id in endpoint.lean and lean_id not in endpoint.manager._server_instances
        endpoint.fast_sessions.lean = None  # this one the SDK opens, as it did before lean sessions
        sdk = await http.post("/mcp", json=INIT, headers=ACCEPT)
        endpoint.fast_sessions.lean = endpoint.lean
        sdk_id = sdk.headers["mcp-session-id"]
        assert sdk_id in endpoint.manager._server_instances
        assert lean.status_code == sdk.status_code == 200
        assert lean.headers["content-type"] == sdk.headers["content-type"] == "text/event-stream"
        assert sse_json(lean.text) == sse_json(sdk.text)
        assert sse_json(lean.text)["result"]["protocolVersion"] == "2025-06-18"
        assert len(lean_id) == len(sdk_id) == 32 and int(lean_id, 16) >= 0  # the SDK's kind of id
        assert endpoint.sessions == 1  # the lean one counts at once (metrics), the SDK's once initialized
        # what the SDK refuses, it answers: an initialize without clientInfo opens nothing lean
        bad_init = {**INIT, "params": {"protocolVersion": "2025-11-25", "capabilities": {}}}
        refused = await http.post("/mcp", json=bad_init, headers=ACCEPT)
        assert refused.status_code in (200, 400) and "error" in sse_json(refused.text)
        assert len(endpoint.lean) == 1


class Stream:
    """A session's GET stream, read by a task of the test: its SSE messages, as they arrive."""

    def __init__(self, http: httpx2.AsyncClient, headers: dict[str, str]) -> None:
        self.messages: list[dict[str, Any]] = []
        self.status: int | None = None
        self.arrived = asyncio.Event()
        self.task = asyncio.create_task(self._read(http, {**headers, "Accept": "text/event-stream"}))

    async def _read(self, http: httpx2.AsyncClient, headers: dict[str, str]) -> None:
        async with http.stream("GET", "/mcp", headers=headers) as stream:
            self.status = stream.status_code
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    self.messages.append(json.loads(line[5:]))
                    self.arrived.set()

    async def next(self, method: str) -> dict[str, Any]:
        """The first message with this method not taken yet (a bounded wait for it)."""
        async with asyncio.timeout(30):
            while True:
                for i, message in enumerate(self.messages):
                    if message.get("method") == method:
                        return self.messages.pop(i)
                if self.task.done():
                    self.task.result()
                    raise AssertionError(f"the stream ended without {method}: {self.messages}")
                self.arrived.clear()
                await self.arrived.wait()

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def until_true(check: Any, what: str) -> None:
    """A bounded wait for a condition of the real system, never a guessed sleep."""
    async with asyncio.timeout(30):
        while not check():
            await asyncio.sleep(0.02)


def streaming(lean: Any, session_id: str) -> bool:
    session = lean.get(session_id)
    return session is not None and session.stream is not None


async def test_a_lean_sessions_get_stream_carries_list_changed_before_and_after_the_sdk_takes_it(
    make_hub: Any,
) -> None:
    hub = await make_hub({"mb": bad()})
    async with (
        endpoint_server(hub) as (base, endpoint),
        httpx2.AsyncClient(base_url=base, timeout=30) as http,
    ):
        lean = endpoint.lean
        assert lean is not None
        headers = await open_session(http)
        sid = headers["Mcp-Session-Id"]
        stream = Stream(http, headers)
        try:
            await until_true(lambda: streaming(lean, sid), "the stream")
            assert stream.status == 200 and sid not in endpoint.manager._server_instances
            second = await http.get("/mcp", headers={**headers, "Accept": "text/event-stream"})
            assert second.status_code == 409 and "Only one SSE stream" in second.json()["error"]["message"]
            r = await http.post("/mcp", json=call(1, "mb__echo", {"text": "x"}), headers=headers)
            assert r.json()["result"]["content"][0]["text"] == "x"
            await endpoint.notify_catalog_changed({"tools"})
            assert await stream.next("notifications/tools/list_changed")
            assert sid in lean and lean.materialised == 0  # the stream is patchbay's: still lean
            # A request for the SDK hands the session over; the same GET stream now carries its messages.
            prompts = {"jsonrpc": "2.0", "id": 2, "method": "prompts/list"}
            listed = await http.post("/mcp", json=prompts, headers=headers)
            assert [p["name"] for p in sse_json(listed.text)["result"]["prompts"]] == ["mb__greet"]
            assert sid not in lean and sid in endpoint.manager._server_instances and lean.materialised == 1
            await endpoint.notify_catalog_changed({"prompts"})
            assert await stream.next("notifications/prompts/list_changed")
            level = {"jsonrpc": "2.0", "id": 3, "method": "logging/setLevel", "params": {"level": "info"}}
            assert sse_json((await http.post("/mcp", json=level, headers=headers)).text)["result"] == {}
            still = await http.post("/mcp", json=call(5, "mb__echo", {"text": "y"}), headers=headers)
            assert still.headers["content-type"].startswith("application/json")  # the fast path, still
            # The SDK's DELETE ends the session, and with it the GET stream held here.
            assert (await http.delete("/mcp", headers=headers)).status_code == 200
            async with asyncio.timeout(30):
                await stream.task
        finally:
            await stream.close()


async def test_an_open_lean_stream_holds_its_session_and_ends_with_it(make_hub: Any) -> None:
    hub = await make_hub({"mb": bad()})
    async with (
        endpoint_server(hub, session_idle_timeout=1.0) as (base, endpoint),
        httpx2.AsyncClient(base_url=base, timeout=30) as http,
    ):
        lean = endpoint.lean
        assert lean is not None
        idle = await open_session(http)
        headers = await open_session(http)
        sid = headers["Mcp-Session-Id"]
        stream = Stream(http, headers)
        try:
            await until_true(lambda: streaming(lean, sid), "the stream")
            # an open stream is a request in flight: the idle session beside it expires, it does not
            await until_true(lambda: idle["Mcp-Session-Id"] not in lean, "the idle session to expire")
            assert sid in lean
            assert (await http.delete("/mcp", headers=headers)).status_code == 200
            async with asyncio.timeout(30):  # a lean session's DELETE ends its stream
                await stream.task
            assert sid not in lean
        finally:
            await stream.close()
        # A stream the client closes releases its session, which then expires.
        again = await open_session(http)
        other = Stream(http, again)
        await until_true(lambda: streaming(lean, again["Mcp-Session-Id"]), "the second stream")
        await other.close()
        await until_true(lambda: again["Mcp-Session-Id"] not in lean, "the released session to expire")
        after = await http.post("/mcp", json=call(1, "mb__echo", {"text": "x"}), headers=again)
        assert after.status_code == 404


async def test_requests_the_fast_path_does_not_answer_hand_the_session_to_the_sdk(make_hub: Any) -> None:
    hub = await make_hub({"mb": bad()})
    async with (
        endpoint_server(hub) as (base, endpoint),
        httpx2.AsyncClient(base_url=base, timeout=30) as http,
    ):
        assert endpoint.lean is not None
        headers = await open_session(http)
        sid = headers["Mcp-Session-Id"]
        level = {"jsonrpc": "2.0", "id": 1, "method": "logging/setLevel", "params": {"level": "debug"}}
        r = await http.post("/mcp", json=level, headers=headers)
        assert r.status_code == 200 and sse_json(r.text)["result"] == {}
        assert sid not in endpoint.lean and sid in endpoint.manager._server_instances
        prompts = await http.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "prompts/list"}, headers=headers
        )
        assert [p["name"] for p in sse_json(prompts.text)["result"]["prompts"]] == ["mb__greet"]
        # a client that may be asked for sampling: its calls are the SDK's, so is its session then
        asks = await open_session(http, {"sampling": {}})
        assert asks["Mcp-Session-Id"] in endpoint.lean
        answer = await http.post("/mcp", json=call(3, "mb__echo", {"text": "z"}), headers=asks)
        assert sse_json(answer.text)["result"]["content"][0]["text"] == "z"
        assert asks["Mcp-Session-Id"] in endpoint.manager._server_instances
        assert endpoint.lean.materialised == 2 and len(endpoint.lean) == 0


async def test_a_lean_session_is_deleted_as_the_sdk_deletes_one(make_hub: Any) -> None:
    hub = await make_hub({"mb": bad()})
    async with (
        endpoint_server(hub) as (base, endpoint),
        httpx2.AsyncClient(base_url=base, timeout=30) as http,
    ):
        assert endpoint.lean is not None
        headers = await open_session(http)
        sid = headers["Mcp-Session-Id"]
        gone = await http.delete("/mcp", headers=headers)
        assert gone.status_code == 200 and gone.headers["mcp-session-id"] == sid
        assert sid not in endpoint.lean and endpoint.sessions == 0
        assert sid not in endpoint.fast_sessions.eligible and sid not in endpoint.fast_sessions.listable
        after = await http.post("/mcp", json=call(1, "mb__echo", {"text": "x"}), headers=headers)
        assert after.status_code == 404  # the SDK's answer for an ended session
        listed = await http.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=headers
        )
        assert listed.status_code == 404
        stream = await http.get("/mcp", headers={**headers, "Accept": "text/event-stream"})
        assert stream.status_code == 404
        assert endpoint.lean.materialised == 0


async def test_idle_lean_sessions_expire_and_busy_ones_are_held(make_hub: Any) -> None:
    hub = await make_hub({"mb": bad()})
    async with (
        endpoint_server(hub, session_idle_timeout=1.0) as (base, endpoint),
        httpx2.AsyncClient(base_url=base, timeout=30) as http,
    ):
        assert endpoint.lean is not None
        idle = await open_session(http)
        busy = await open_session(http)
        # A call that lasts three idle timeouts holds its lean session.
        slow = await http.post("/mcp", json=call(1, "mb__sleep", {"seconds": 3}), headers=busy)
        assert slow.json()["result"]["content"][0]["text"] == "slept 3"
        assert busy["Mcp-Session-Id"] in endpoint.lean
        still = await http.post("/mcp", json=call(4, "mb__echo", {"text": "here"}), headers=busy)
        assert still.status_code == 200 and still.json()["result"]["content"][0]["text"] == "here"
        # A call in flight while its session is handed to the SDK goes on holding it there.
        moving = await open_session(http)
        sid = moving["Mcp-Session-Id"]
        long_call = asyncio.create_task(
            http.post("/mcp", json=call(2, "mb__sleep", {"seconds": 3}), headers=moving)
        )
        async with asyncio.timeout(30):
            while (sid, 2) not in endpoint.fast_sessions.in_flight:
                await asyncio.sleep(0.02)
        ping = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 3, "method": "ping"}, headers=moving)
        assert sse_json(ping.text)["result"] == {}
        assert sid in endpoint.manager._server_instances and sid not in endpoint.lean
        assert (await long_call).json()["result"]["content"][0]["text"] == "slept 3"
        still = await http.post("/mcp", json=call(4, "mb__echo", {"text": "here"}), headers=moving)
        assert still.status_code == 200 and still.json()["result"]["content"][0]["text"] == "here"
        async with asyncio.timeout(30):  # the idle one expired long ago; a sweep ends it
            while idle["Mcp-Session-Id"] in endpoint.lean:
                await asyncio.sleep(0.05)
        assert idle["Mcp-Session-Id"] not in endpoint.fast_sessions.listable
        expired = await http.post("/mcp", json=call(5, "mb__echo", {"text": "x"}), headers=idle)
        assert expired.status_code == 404


async def test_a_profile_endpoint_holds_its_sessions_lean_too(tmp_path: Path) -> None:
    """``/mcp/<profile>`` through ``patchbay serve``: the lean session sees the profile's view, its
    DELETE ends it, and a session of one path is unknown on the other."""
    config = tmp_path / "patchbay.json"
    doc = {
        "mcpServers": {"gh": bad("--name", "gh"), "fs": bad("--name", "fs")},
        "profiles": {"coding": {"servers": ["gh"]}},
    }
    config.write_text(json.dumps(doc))
    served = await start_serve(config)
    try:
        async with served.http() as http:
            r = await http.post("/mcp/coding", json=INIT, headers=ACCEPT)
            assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
            assert "Profile: coding." in sse_json(r.text)["result"]["instructions"]
            headers = {
                **ACCEPT,
                "Mcp-Session-Id": r.headers["mcp-session-id"],
                "MCP-Protocol-Version": "2025-06-18",
            }
            done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            assert (await http.post("/mcp/coding", json=done, headers=headers)).status_code == 202
            listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            names = {
                t["name"]
                for t in (await http.post("/mcp/coding", json=listing, headers=headers)).json()["result"][
                    "tools"
                ]
            }
            assert "gh__echo" in names and not any(n.startswith("fs__") for n in names)
            outside = await http.post("/mcp/coding", json=call(2, "fs__echo", {"text": "x"}), headers=headers)
            assert "error" in outside.json() or outside.json()["result"].get("isError")
            assert (await http.post("/mcp", json=listing, headers=headers)).status_code == 404
            assert (await http.delete("/mcp/coding", headers=headers)).status_code == 200
            after = await http.post("/mcp/coding", json=call(3, "gh__echo", {"text": "x"}), headers=headers)
            assert after.status_code == 404
    finally:
        await stop_serve(served)


async def test_lean_sessions_count_toward_the_session_cap(make_hub: Any) -> None:
    hub = await make_hub({"mb": bad()})
    async with (
        endpoint_server(hub) as (base, endpoint),
        httpx2.AsyncClient(base_url=base, timeout=30) as http,
    ):
        assert endpoint.lean is not None
        endpoint.manager.max_sessions = 2
        first = await open_session(http)
        await open_session(http)
        refused = await http.post("/mcp", json=INIT, headers=ACCEPT)
        assert refused.status_code == 503 and "mcp-session-id" not in refused.headers
        assert refused.json()["error"] == {"code": -32603, "message": "Too many open sessions"}
        assert len(endpoint.lean) == 2
        assert (await http.delete("/mcp", headers=first)).status_code == 200  # room again
        assert (await http.post("/mcp", json=INIT, headers=ACCEPT)).status_code == 200


async def test_serve_ends_the_lean_streams_it_holds_when_it_stops(served: Served) -> None:
    """SIGTERM with lean GET streams open (one still lean, one handed to the SDK): they end, as the SDK's
    own streams do, and the server stops without running into its graceful-shutdown timeout."""
    async with served.http() as http:
        plain = await open_session(http)
        moved = await open_session(http)
        streams = [Stream(http, plain), Stream(http, moved)]
        try:
            for stream in streams:
                await until_true(lambda s=stream: s.status == 200, "the stream")  # type: ignore[misc]
            await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "prompts/list"}, headers=moved)
            served.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                for stream in streams:
                    await stream.task  # ended by the server (no error: a clean end of the response)
        finally:
            for stream in streams:
                await stream.close()
    # uvicorn re-raises the signal once it has shut down gracefully
    assert await asyncio.wait_for(served.proc.wait(), 30) == -signal.SIGTERM
    err = (await served.proc.stderr.read()).decode()  # type: ignore[union-attr]
    assert "timeout graceful shutdown exceeded" not in err, err


async def test_a_tools_only_sdk_client_stays_lean_with_its_stream_and_gets_list_changed(
    make_hub: Any,
) -> None:
    hub = await make_hub({"mb": bad()})
    changed = asyncio.Event()

    async def on_message(msg: Any) -> None:
        if isinstance(msg, types.ToolListChangedNotification):
            changed.set()

    async with (
        endpoint_server(hub) as (base, endpoint),
        streamable_http_client(f"{base}/mcp") as (r, w),
        ClientSession(r, w, message_handler=on_message) as session,
    ):
        lean = endpoint.lean
        assert lean is not None
        await session.initialize()
        (sid,) = list(lean.sessions)
        await until_true(lambda: streaming(lean, sid), "the client's GET stream")
        assert text(await session.call_tool("mb__echo", {"text": "lean"})) == "lean"
        await session.call_tool("mb__set_tools", {"names": ["fresh"]})  # the upstream re-lists
        async with asyncio.timeout(30):
            await changed.wait()
        assert "mb__fresh" in {t.name for t in (await session.list_tools()).tools}
        assert sid in lean and lean.materialised == 0 and sid not in endpoint.manager._server_instances
