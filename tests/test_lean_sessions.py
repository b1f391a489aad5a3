"""Lean handshake-era sessions (``lean_sessions.py``): held without the SDK until a request needs it, then
handed to it under the same id. Real uvicorn on real sockets, a real upstream, the SDK's own client."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import mcp.types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from patchbay.server.mcp import McpEndpoint
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
    """``patchbay serve`` and the SDK's ClientSession: the handshake is answered lean, the client's GET
    stream hands the session to the SDK, and everything works on it, list_changed included."""
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


async def list_changed_on_stream(
    http: httpx2.AsyncClient, endpoint: McpEndpoint, headers: dict[str, str]
) -> list[str]:
    """Open the session's GET stream and send list_changed rounds until one arrives on it; its lines."""
    got = asyncio.Event()
    lines: list[str] = []
    get = {**headers, "Accept": "text/event-stream"}

    async def read() -> None:
        async with http.stream("GET", "/mcp", headers=get) as stream:
            assert stream.status_code == 200
            async for line in stream.aiter_lines():
                lines.append(line)
                if "notifications/tools/list_changed" in line:
                    got.set()
                    return

    reader = asyncio.create_task(read())
    try:
        for _ in range(60):
            if reader.done():
                reader.result()
            await endpoint.notify_catalog_changed({"tools"})
            try:
                await asyncio.wait_for(got.wait(), 0.5)
                break
            except TimeoutError:
                continue
        assert got.is_set()
        await reader
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return lines


async def test_a_lean_session_that_opens_its_get_stream_is_handed_to_the_sdk(make_hub: Any) -> None:
    hub = await make_hub({"mb": bad()})
    async with (
        endpoint_server(hub) as (base, endpoint),
        httpx2.AsyncClient(base_url=base, timeout=30) as http,
    ):
        assert endpoint.lean is not None
        headers = await open_session(http)
        sid = headers["Mcp-Session-Id"]
        r = await http.post("/mcp", json=call(1, "mb__echo", {"text": "x"}), headers=headers)
        assert r.json()["result"]["content"][0]["text"] == "x"
        listed = await http.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=headers
        )
        assert "mb__echo" in {t["name"] for t in listed.json()["result"]["tools"]}
        assert sid in endpoint.lean and endpoint.notifiable == 0  # still lean: nothing needed the SDK
        lines = await list_changed_on_stream(http, endpoint, headers)
        assert any("notifications/tools/list_changed" in line for line in lines)
        assert sid not in endpoint.lean and sid in endpoint.manager._server_instances
        assert endpoint.lean.materialised == 1 and endpoint.sessions == 1
        # the SDK's session now, under the same id; plain calls still take the fast path
        again = await http.post("/mcp", json=call(3, "mb__echo", {"text": "y"}), headers=headers)
        assert again.headers["content-type"].startswith("application/json")
        assert again.json()["result"]["content"][0]["text"] == "y"


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
