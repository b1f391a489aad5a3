"""``/mcp`` under stress: first lists while servers start, upstream deaths under load, session reaping,
and coalesced catalog notifications. Real processes, sockets and SDK clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import mcp.types as types
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from starlette.applications import Starlette
from starlette.routing import Route

from patchbay import Hub
from patchbay.events import CatalogEvent
from patchbay.server.fastpath import McpFastPath
from patchbay.server.mcp import McpEndpoint
from tests.conftest import bad
from tests.test_fastpath import call, open_session, sse_json
from tests.test_serve import free_port, start_serve, stop_serve


async def test_a_client_connecting_during_start_up_sees_every_tool(tmp_path: Path) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"slow": bad("--slow-start", "4"), "quick": bad()}}))
    served = await start_serve(config, ready=False)  # returns as soon as serve accepts connections
    try:
        async with streamable_http_client(served.mcp) as (r, w), ClientSession(r, w) as session:
            await session.initialize()
            names = {t.name for t in (await session.list_tools()).tools}
            assert {"slow__echo", "quick__echo"} <= names
            assert {p.name for p in (await session.list_prompts()).prompts} == {"slow__greet", "quick__greet"}
            # one URI from both servers: the first in config order owns it (it is the slow one)
            assert [str(x.uri) for x in (await session.list_resources()).resources] == ["test://hello"]
            assert (await session.list_resource_templates()).resource_templates
    finally:
        await stop_serve(served)


# --- upstream deaths under load -----------------------------------------------------------------------


async def test_no_500_and_no_reset_while_the_upstream_is_killed_under_load(tmp_path: Path) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"mb": bad()}}))
    served = await start_serve(config)
    problems: list[str] = []
    failures = successes = 0
    stop = asyncio.Event()
    try:
        limits = httpx2.Limits(max_connections=64)
        async with httpx2.AsyncClient(base_url=served.base, timeout=30, limits=limits) as http:

            async def client(i: int) -> None:
                nonlocal failures, successes
                headers = await open_session(http, {"sampling": {}} if i % 2 else None)  # SDK and fast paths
                for n in range(400):  # bounded
                    if stop.is_set():
                        return
                    try:
                        r = await http.post(
                            "/mcp", json=call(n, "mb__sleep", {"seconds": 0.05}), headers=headers
                        )
                    except httpx2.TransportError as exc:
                        problems.append(f"client {i}: {exc!r}")
                        return
                    if r.status_code != 200:
                        problems.append(f"client {i}: HTTP {r.status_code} {r.text[:200]}")
                        return
                    body = (
                        r.json()
                        if r.headers["content-type"].startswith("application/json")
                        else sse_json(r.text)
                    )
                    if "error" in body:
                        failures += 1
                        if "'mb'" not in body["error"]["message"]:
                            problems.append(f"client {i}: error not naming the server: {body}")
                    elif body["result"].get("isError"):
                        failures += 1
                        if "'mb'" not in body["result"]["content"][0]["text"]:
                            problems.append(f"client {i}: tool error not naming the server: {body}")
                    else:
                        successes += 1

            async def pid() -> int | None:
                status = (await http.get("/api/servers/mb")).json()
                return status["pid"] if status["state"] == "ready" else None

            async def until_ready(not_pid: int | None) -> int:
                """The pid of a ready mb that is not ``not_pid`` (a restarted one), once there is one."""
                async with asyncio.timeout(30):
                    while (current := await pid()) is None or current == not_pid:
                        await asyncio.sleep(0.05)
                return current

            async def busy() -> None:
                """Until calls are in flight on mb: a kill must land mid-traffic, however slow the start."""
                async with asyncio.timeout(60):
                    while (await http.get("/api/servers/mb")).json()["calls_in_flight"] < 4:
                        await asyncio.sleep(0.02)

            async def killer() -> None:
                try:
                    current = await until_ready(None)
                    for _ in range(2):
                        await busy()
                        os.kill(current, signal.SIGKILL)
                        current = await until_ready(current)
                    before = successes
                    async with asyncio.timeout(30):  # calls succeed again after the second restart
                        while successes < before + 32:
                            await asyncio.sleep(0.05)
                finally:
                    stop.set()

            await asyncio.gather(killer(), *(client(i) for i in range(32)))
    finally:
        await stop_serve(served)
    assert not problems, "\n".join(problems[:20])
    assert failures > 0 and successes > 0  # the kills did land mid-traffic


# --- session idle timeout -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def endpoint_server(hub: Hub, **settings: Any) -> AsyncIterator[tuple[str, McpEndpoint]]:
    """An ``McpEndpoint`` (with its fast path) on a real port, served by uvicorn in this process."""
    endpoint = McpEndpoint(hub, dns_rebinding_protection=False, **settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with endpoint.manager.run():
            endpoint.start()
            try:
                yield
            finally:
                await endpoint.stop()

    app = Starlette(
        routes=[Route("/mcp", StreamableHTTPASGIApp(endpoint.manager), methods=["GET", "POST", "DELETE"])],
        lifespan=lifespan,
    )
    fast = McpFastPath(
        app,
        hub=hub,
        manager=endpoint.manager,
        sessions=endpoint.fast_sessions,
        server_info=lambda: endpoint.server.server_info_stamp,
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fast, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}", endpoint
    finally:
        server.should_exit = True
        await task


async def test_idle_sessions_are_reaped_and_busy_ones_kept(make_hub: Any) -> None:
    hub = await make_hub({"mb": bad()})
    async with (
        endpoint_server(hub, session_idle_timeout=1.0) as (base, endpoint),
        httpx2.AsyncClient(base_url=base, timeout=30) as http,
    ):
        idle = await open_session(http)
        busy = await open_session(http)
        # A fast-path call that lasts three idle timeouts: in flight, it holds its session open.
        r = await http.post("/mcp", json=call(1, "mb__sleep", {"seconds": 3}), headers=busy)
        assert r.headers["content-type"].startswith("application/json")  # it was the fast path
        again = await http.post("/mcp", json=call(2, "mb__echo", {"text": "still here"}), headers=busy)
        assert again.status_code == 200 and again.json()["result"]["content"][0]["text"] == "still here"
        async with asyncio.timeout(30):  # the idle one is reaped (the SDK ends it; we forget it)
            while idle["Mcp-Session-Id"] in endpoint.fast_sessions.eligible:
                await asyncio.sleep(0.05)
        gone = await http.post("/mcp", json=call(3, "mb__echo", {"text": "x"}), headers=idle)
        assert gone.status_code == 404
        assert endpoint.manager.session_idle_timeout == 1.0


def test_the_idle_timeout_defaults_to_five_minutes() -> None:
    endpoint = McpEndpoint(Hub.from_dict({"mcpServers": {}}))
    assert endpoint.manager.session_idle_timeout == 300.0
    assert (
        McpEndpoint(Hub.from_dict({"mcpServers": {}}), session_idle_timeout=None).manager.session_idle_timeout
        is None
    )


# --- coalesced catalog notifications ------------------------------------------------------------------


async def test_a_burst_of_catalog_changes_gives_a_constant_number_of_notification_rounds(
    make_hub: Any,
) -> None:
    hub = await make_hub({"mb": bad()})
    tool_changes: list[int] = []

    async def on_message(msg: Any) -> None:
        if isinstance(msg, types.ToolListChangedNotification):
            tool_changes.append(1)

    async with (
        endpoint_server(hub) as (base, endpoint),
        streamable_http_client(f"{base}/mcp") as (r, w),
        ClientSession(r, w, message_handler=on_message) as session,
    ):
        await session.initialize()
        async with asyncio.timeout(30):  # the session's GET stream is open: it can be notified
            while endpoint.notifiable < 1:
                await asyncio.sleep(0.02)
        rounds = endpoint.notify_rounds
        for i in range(50):  # fifty catalog changes in one burst
            hub.publish(CatalogEvent(version=hub.catalog.version, server="mb", added=[f"x{i}"]))
        async with asyncio.timeout(30):
            while not tool_changes:
                await asyncio.sleep(0.02)
        await endpoint.fanout_settled()
        sent = endpoint.notify_rounds - rounds
        assert 1 <= sent <= 2, sent  # at most one round in flight and one pending, not fifty
        await endpoint.notify_catalog_changed()  # a sentinel: it arrives after every earlier round's
        async with asyncio.timeout(30):
            while len(tool_changes) < sent + 1:
                await asyncio.sleep(0.02)
        assert len(tool_changes) == sent + 1
