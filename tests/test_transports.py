"""The wires on their own and under a hub, against real processes: typed errors, environments, ownership."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

from patchbay import Hub, PatchbayError, ServerExitedError, ServerUnavailableError
from patchbay.config import ResolvedSpec
from patchbay.transports.base import MessageEncodeError, OutboxFullError
from patchbay.transports.http import WireState
from patchbay.transports.http.proxy import bypassed
from patchbay.transports.stdio import SECRET_ENV_VARS, StdioTransport
from patchbay.transports.websocket import WebSocketWire
from tests.conftest import HubFactory, alive, bad, wait_for
from tests.test_http_upstream import FakeSdkWire, free_port


def stdio_spec(code: str, name: str = "child") -> ResolvedSpec:
    return ResolvedSpec(name, "stdio", sys.executable, ("-c", code), {}, None, None, {})


def whoami_env(result: Any) -> str | None:
    value = json.loads(result.content[0].text)["env"]
    return value if value is None else str(value)


# --- 6: patchbay's secrets stay out of children's environments --------------------------------------------


async def test_children_do_not_inherit_patchbay_secrets(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {"PATCHBAY_TOKEN", "PATCHBAY_AGENT_TOKEN"} <= SECRET_ENV_VARS
    monkeypatch.setenv("PATCHBAY_TOKEN", "hub-secret")
    monkeypatch.setenv("PATCHBAY_AGENT_TOKEN", "agent-secret")
    monkeypatch.setenv("PB_TEST_VISIBLE", "ordinary")
    hub = await make_hub(
        {
            "tok": bad("--echo-env", "PATCHBAY_TOKEN"),
            "agent": bad("--echo-env", "PATCHBAY_AGENT_TOKEN"),
            "plain": bad("--echo-env", "PB_TEST_VISIBLE"),
            # listed explicitly in the server's env: the user asked for it, so it gets it
            "asked": bad("--echo-env", "PATCHBAY_TOKEN", env={"PATCHBAY_TOKEN": "${PATCHBAY_TOKEN}"}),
        }
    )
    assert whoami_env(await hub.call_tool("tok__whoami", {})) is None
    assert whoami_env(await hub.call_tool("agent__whoami", {})) is None
    assert whoami_env(await hub.call_tool("plain__whoami", {})) == "ordinary"
    assert whoami_env(await hub.call_tool("asked__whoami", {})) == "hub-secret"


# --- 5: a dying wire answers send() with patchbay errors only ---------------------------------------------


async def test_send_to_a_child_that_closed_its_stdin_is_a_typed_error() -> None:
    closed: list[tuple[str, int | None]] = []
    got: list[Any] = []
    code = "import os, time; os.close(0); print('{\"closed\": true}', flush=True); time.sleep(60)"
    wire = StdioTransport(stdio_spec(code), got.append, lambda r, c: closed.append((r, c)))
    await wire.start()
    try:
        await wait_for(lambda: got == [{"closed": True}], 10)
        assert wire._stdin is not None
        await wait_for(wire._stdin.is_closing, 5)  # asyncio noticed the read end went away
        with pytest.raises(ServerExitedError) as info:
            wire.send({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert "'child'" in str(info.value) and not isinstance(info.value, OSError)
        # the child lingers without stdin: it counts as broken, is reported once and is stopped
        await wait_for(lambda: bool(closed), 5)
        assert closed == [("closed its stdin", None)]
        with pytest.raises(ServerExitedError, match="closed its stdin"):
            wire.send({"jsonrpc": "2.0", "id": 2, "method": "ping"})
    finally:
        await wire.close()
    assert not alive(wire.pid)
    assert len(closed) == 1


async def test_lines_sent_in_one_turn_arrive_in_order_and_a_stop_writes_them_first() -> None:
    """The lines sent in one turn of the event loop after the first are written together at its end; a
    stop right after them still delivers every one, in order, before stdin is closed."""
    code = (
        "import json, sys\n"
        "ids = [json.loads(line)['id'] for line in sys.stdin]\n"  # until EOF
        "print(json.dumps({'ids': ids}), flush=True)\n"
    )
    got: list[Any] = []
    wire = StdioTransport(stdio_spec(code), got.append, lambda r, c: None)
    await wire.start()
    for rid in range(200):  # one turn: no await in between
        wire.send({"jsonrpc": "2.0", "id": rid, "method": "ping"})
    await wire.close()
    assert got == [{"ids": list(range(200))}]


async def test_lines_sent_over_several_turns_each_reach_the_child_once() -> None:
    code = (
        "import json, sys\n"
        "for line in sys.stdin:\n"
        "    msg = json.loads(line)\n"
        "    print(json.dumps({'id': msg['id'], 'result': {}}), flush=True)\n"
    )
    got: list[Any] = []
    wire = StdioTransport(stdio_spec(code), got.append, lambda r, c: None)
    await wire.start()
    try:
        sent = 0
        for burst in (1, 5, 1, 64, 2):
            for _ in range(burst):
                wire.send({"jsonrpc": "2.0", "id": sent, "method": "ping"})
                sent += 1
            await asyncio.sleep(0)
        await wait_for(lambda: len(got) == sent, 10)
        assert [m["id"] for m in got] == list(range(sent))
    finally:
        await wire.close()


async def test_unencodable_message_is_a_typed_error() -> None:
    wire = StdioTransport(stdio_spec("import sys; sys.stdin.read()"), lambda m: None, lambda r, c: None)
    await wire.start()
    try:
        with pytest.raises(MessageEncodeError) as info:
            wire.send({"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"v": object()}})
        assert isinstance(info.value, PatchbayError) and "'child'" in str(info.value)
    finally:
        await wire.close()


async def test_send_before_start_and_after_close_is_a_typed_error() -> None:
    wire = StdioTransport(stdio_spec("import sys; sys.stdin.read()"), lambda m: None, lambda r, c: None)
    with pytest.raises(ServerExitedError, match="not running yet"):
        wire.send({"jsonrpc": "2.0", "method": "x"})
    await wire.start()
    await wire.close()
    await wire.close()  # a second close waits for the same stop, and is quiet
    with pytest.raises(ServerExitedError, match="'child' exited with status 0"):
        wire.send({"jsonrpc": "2.0", "method": "x"})


async def test_killed_server_under_a_flood_of_calls_fails_every_call_with_a_patchbay_error(
    make_hub: HubFactory,
) -> None:
    hub: Hub = await make_hub({"mb": bad(maxRestarts=0)})
    pid = hub.status()["mb"].pid
    assert pid is not None
    outcomes: list[BaseException | None] = []
    sent = asyncio.Event()

    async def one(i: int) -> None:
        try:
            await hub.call_tool("mb__echo", {"text": f"m{i}" * 50}, timeout=30)
            outcomes.append(None)
        except BaseException as exc:
            outcomes.append(exc)

    async def flood() -> None:
        tasks: list[asyncio.Task[None]] = []
        # Keep sending until the hub itself says the server is gone: some calls meet the live server,
        # some a closing stdin, some the closed connection.
        for i in range(100_000):
            tasks.append(asyncio.create_task(one(i)))
            if i == 200:
                sent.set()
            if i % 20 == 0:
                await asyncio.sleep(0)
            if hub.status()["mb"].state != "ready" and i > 400:
                break
        await asyncio.gather(*tasks)

    flooding = asyncio.create_task(flood())
    await sent.wait()
    os.killpg(pid, signal.SIGKILL)
    await asyncio.wait_for(flooding, 60)
    failures = [e for e in outcomes if e is not None]
    assert failures, "the kill should have failed some calls"
    assert all(isinstance(e, PatchbayError) for e in failures), {type(e).__name__ for e in failures}


# --- 2, 3: the remote wire's state and its bounded outbox ---------------------------------------------------


def remote_spec(url: str = "http://127.0.0.1:9/mcp") -> ResolvedSpec:
    return ResolvedSpec("fake", "http", None, (), {}, None, url, {})


async def test_remote_wire_moves_through_its_states_and_fails_fast_when_full() -> None:
    closed: list[str] = []
    wire = FakeSdkWire(remote_spec(), lambda m: None, lambda r, c: closed.append(r), outbox_limit=3)
    assert wire.state is WireState.NEW
    with pytest.raises(ServerExitedError, match="is not connected yet"):
        wire.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    await wire.start()
    assert wire.state is WireState.OPEN
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    # The writer hands messages to the SDK's stream (100 deep here) as fast as it takes them; without
    # yielding to it, the outbox fills after 3 and the 4th send fails at once, naming the server.
    for _ in range(3):
        wire.send(ping)
    with pytest.raises(OutboxFullError) as info:
        wire.send(ping)
    assert isinstance(info.value, ServerUnavailableError) and info.value.server == "fake"
    assert "3 messages are already waiting to be sent to http://127.0.0.1:9/mcp" in str(info.value)
    for _ in range(3):  # the writer drains the outbox into the SDK's stream
        await wire.from_wire.receive()
    wire.send(ping)  # room again
    assert (await wire.from_wire.receive()).message.method == "ping"

    await wire.to_wire.aclose()  # the SDK's read side ended: the connection is lost
    await wait_for(lambda: wire.state is WireState.LOST, 5)
    assert closed == ["lost its HTTP connection to http://127.0.0.1:9/mcp"]
    with pytest.raises(ServerExitedError, match="lost its HTTP connection"):
        wire.send(ping)
    await wire.close()
    assert wire.state is WireState.CLOSED and len(closed) == 1
    assert wire._task is not None and wire._task.done()


async def test_remote_wire_close_tells_the_owner_once() -> None:
    closed: list[str] = []
    wire = FakeSdkWire(remote_spec(), lambda m: None, lambda r, c: closed.append(r))
    await wire.start()
    await wire.close()
    await wire.close()
    assert wire.state is WireState.CLOSED and closed == ["was stopped"]


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypass"),
    [
        ("127.0.0.1", 80, "127.0.0.1", True),
        ("127.0.0.1", 80, "10.0.0.0/8,127.0.0.0/8", True),
        ("127.0.0.1", 80, "127.0.0.2", False),
        ("api.example.com", 443, "example.com", True),
        ("api.example.com", 443, ".example.com", True),
        ("notexample.com", 443, "example.com", False),
        ("example.com", 443, "example.com:8443", False),
        ("example.com", 8443, "example.com:8443", True),
        ("::1", 80, "[::1]", True),
        ("localhost", 80, "", False),  # loopback is not exempt by default
        ("anything", 80, " * ", True),
    ],
)
def test_no_proxy_matching(host: str, port: int, no_proxy: str, bypass: bool) -> None:
    assert bypassed(host, port, no_proxy) is bypass


# --- 3: the agent side's bounded send queue, over a real WebSocket ----------------------------------------


async def test_agent_that_stops_reading_makes_sends_fail_at_once() -> None:
    wires: list[WebSocketWire] = []
    closed: list[str] = []
    done = asyncio.Event()

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        wire = WebSocketWire(ws, "slow", lambda m: None, lambda r, c: closed.append(r), send_queue_limit=4)
        await wire.start()
        wires.append(wire)
        await done.wait()
        await wire.close()

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[WebSocketRoute("/ws", endpoint)]),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started, 10)
        # The client never reads: its small receive queue, then the kernel's buffers, fill up.
        # (No compression: the frames below would shrink to nothing.)
        connecting = connect(f"ws://127.0.0.1:{port}/ws", max_size=None, max_queue=1, compression=None)
        async with connecting as client:
            await wait_for(lambda: bool(wires), 5)
            wire = wires[0]
            frame = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "x" * 500_000}}
            error: OutboxFullError | None = None
            for _ in range(5000):  # bounded by the buffers (tens of MB at most), not by time
                try:
                    wire.send(frame)
                except OutboxFullError as exc:
                    error = exc
                    break
                await asyncio.sleep(0)  # let the writer push frames out until the socket blocks
            assert error is not None, "the send queue never filled"
            assert error.server == "slow" and isinstance(error, ServerUnavailableError)
            assert "agent 'slow': 4 messages are already waiting to be sent to its WebSocket" in str(error)
            client.transport.abort()  # a polite close would queue behind the frames it never read
            await wait_for(lambda: bool(closed), 10)  # the hub notices the agent left, with its queue full
        with pytest.raises(ServerExitedError, match="'slow'"):
            wire.send(frame)
        done.set()
        await wait_for(lambda: all(t.done() for t in wire._tasks), 10)
    finally:
        done.set()
        server.should_exit = True
        await serving


async def test_child_that_stops_reading_stdin_makes_sends_fail_at_once() -> None:
    code = "import time; print('{\"up\": true}', flush=True); time.sleep(60)"  # never reads its stdin
    got: list[Any] = []
    wire = StdioTransport(stdio_spec(code), got.append, lambda r, c: None, max_unread_bytes=1_000_000)
    await wire.start()
    try:
        await wait_for(lambda: bool(got), 10)
        frame = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "x" * 100_000}}
        error: OutboxFullError | None = None
        for _ in range(1000):  # the pipe (64 KiB) and then our 1 MB bound fill after ~11 frames
            try:
                wire.send(frame)
            except OutboxFullError as exc:
                error = exc
                break
            await asyncio.sleep(0)
        assert error is not None and error.server == "child"
        assert "server 'child': 1000000 bytes are already waiting to be sent to its stdin" in str(error)
    finally:
        await wire.close(grace=0.1)
