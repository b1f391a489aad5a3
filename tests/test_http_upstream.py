"""Remote upstreams over real sockets on 127.0.0.1: streamable HTTP and legacy SSE.

The servers are real processes: the SDK's ``MCPServer`` (tests/servers/http_server.py) and, where installed,
server-everything in streamableHttp mode. They are killed and restarted under the hub to check that it
notices, fails in-flight calls fast and reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.message import SessionMessage
from mcp.types import jsonrpc_message_adapter

from patchbay import CallTimeoutError, ServerExitedError, ServerUnavailableError, UpstreamError, supervisor
from patchbay.config import ResolvedSpec
from patchbay.transports import http as http_transport
from tests import thirdparty
from tests.conftest import HubFactory, bad, wait_for

HTTP_SERVER = Path(__file__).parent / "servers" / "http_server.py"
TOKEN = "xyz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.03)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


class ServerProcess:
    """tests/servers/http_server.py on a fixed port.

    ``start()`` spawns it and waits until it listens. ``prepare()`` spawns it held (imports done, not yet
    listening) and ``release()`` lets it listen: a restart then takes milliseconds, not the 1-2 s of
    importing the SDK.
    """

    def __init__(self, port: int, *args: str) -> None:
        self.port = port
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        path = "/sse" if "sse" in self.args else "/mcp"
        return f"http://127.0.0.1:{self.port}{path}"

    def prepare(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, str(HTTP_SERVER), str(self.port), *self.args, "--hold"], stdin=subprocess.PIPE
        )
        return self

    def release(self) -> ServerProcess:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()
        wait_listening(self.port, self.proc)
        return self

    def start(self) -> ServerProcess:
        return self.prepare().release()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def astart(self) -> ServerProcess:
        return await asyncio.to_thread(self.start)

    async def arelease(self) -> ServerProcess:
        return await asyncio.to_thread(self.release)


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Servers a test starts; all are killed at the end."""
    started: list[ServerProcess] = []
    yield started
    for s in started:
        s.kill()


@pytest.fixture(scope="module")
def token_server() -> Iterator[ServerProcess]:
    """One streamable HTTP MCPServer that wants ``Authorization: Bearer xyz``, shared by several tests."""
    server = ServerProcess(free_port(), "--token", TOKEN, "--name", "remote-test").start()
    yield server
    server.kill()


def remote(url: str, **settings: Any) -> dict[str, Any]:
    return {"url": url, "headers": {"Authorization": "Bearer ${PB_TEST_TOKEN}"}, **settings}


@pytest.fixture
def short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff still starts at 0.5 s but stops doubling at 1 s, so a restarted server is found quickly."""
    monkeypatch.setattr(supervisor, "BACKOFF_MAX", 1.0)


@pytest.fixture(autouse=True)
def _token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PB_TEST_TOKEN", TOKEN)


def text(result: Any) -> str:
    return str(result.content[0].text)


# --- 1, 2: a real streamable HTTP server end to end, headers -------------------------------------------


async def test_streamable_http_end_to_end(make_hub: HubFactory, token_server: ServerProcess) -> None:
    hub = await make_hub({"remote": remote(token_server.url, timeout=10)})
    st = hub.status()["remote"]
    assert st.state == "ready", st.last_error
    assert st.transport == "http" and st.pid is None
    assert st.protocol_version == "2025-11-25"
    assert st.server_info is not None and st.server_info["name"] == "remote-test"
    names = {t["name"] for t in hub.tools(server="remote")}
    assert {"remote__echo", "remote__add", "remote__sleep", "remote__header"} <= names

    assert text(await hub.call_tool("remote__echo", {"text": "héllo"})) == "héllo"
    assert (await hub.call_tool("remote__add", {"a": 2, "b": 40})).structured_content == {"result": 42}

    # 20 concurrent calls, each gets its own answer
    results = await asyncio.gather(*(hub.call_tool("remote__echo", {"text": f"n{i}"}) for i in range(20)))
    assert [text(r) for r in results] == [f"n{i}" for i in range(20)]

    # progress reaches the callback
    seen: list[tuple[float, float | None, str | None]] = []
    result = await hub.call_tool(
        "remote__sleep", {"seconds": 0.3}, progress=lambda p, t, m: seen.append((p, t, m))
    )
    assert text(result) == "slept 0.3"
    await wait_for(lambda: len(seen) >= 2, 2)
    assert seen[0][0] == 0 and seen[0][2] == "step 0"

    # a timeout raises CallTimeoutError, and the hub stays usable
    t0 = time.monotonic()
    with pytest.raises(CallTimeoutError):
        await hub.call_tool("remote__sleep", {"seconds": 5}, timeout=0.3)
    assert time.monotonic() - t0 < 1.5
    assert hub.status()["remote"].state == "ready"
    assert text(await hub.call_tool("remote__echo", {"text": "still here"})) == "still here"

    # bad arguments come back as a tool error, passed through
    result = await hub.call_tool("remote__add", {"a": "x", "b": 1})
    assert result.is_error

    # a 2 MB result is one SSE event: more than the SDK's default 1 MiB event limit
    big = "x" * 2_000_000
    assert text(await hub.call_tool("remote__echo", {"text": big})) == big


async def test_headers_reach_the_server_with_placeholders(
    make_hub: HubFactory, token_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PB_TEST_EXTRA", "from-env")
    spec = remote(token_server.url)
    spec["headers"]["X-Patchbay-Test"] = "v=${PB_TEST_EXTRA}"
    hub = await make_hub({"remote": spec, "wrong": {"url": token_server.url, "maxRestarts": 0}})
    assert text(await hub.call_tool("remote__header", {"name": "X-Patchbay-Test"})) == "v=from-env"
    assert text(await hub.call_tool("remote__header", {"name": "Authorization"})) == f"Bearer {TOKEN}"
    # without the token the server answers 401: a clear error, not a hang
    st = hub.status()["wrong"]
    assert st.state == "failed"
    assert "401" in (st.last_error or "") and token_server.url in (st.last_error or "")
    assert "headers" in (st.last_error or "")


# --- 3, 6: the server goes away, or forgets the session -------------------------------------------------


async def test_killed_server_is_noticed_and_reconnected(
    make_hub: HubFactory, servers: list[ServerProcess], short_backoff: None
) -> None:
    server = await ServerProcess(free_port()).astart()
    successor = ServerProcess(server.port).prepare()  # will take over the port after the kill
    servers += [server, successor]
    hub = await make_hub({"remote": {"url": server.url, "maxRestarts": 50}})
    assert hub.status()["remote"].state == "ready"
    first_pid = (await hub.call_tool("remote__pid", {})).structured_content

    slow = asyncio.create_task(hub.call_tool("remote__sleep", {"seconds": 30}))
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    server.kill()
    with pytest.raises(ServerUnavailableError) as info:
        await slow
    assert time.monotonic() - t0 < 1.0
    assert server.url in str(info.value)
    await wait_for(lambda: hub.status()["remote"].state != "ready", 2)
    assert not hub.tools(server="remote")  # tools left the catalog
    with pytest.raises(ServerUnavailableError):
        await hub.call_tool("remote__echo", {"text": "x"}, timeout=0.2)
    await asyncio.sleep(0.6)  # a couple of failed reconnects against the closed port
    st = hub.status()["remote"]
    assert st.state in ("backoff", "starting")
    assert "connection refused" in (st.last_error or "") and server.url in (st.last_error or "")

    await successor.arelease()  # same port, new process
    await wait_for(lambda: hub.status()["remote"].state == "ready", 15)
    assert hub.tools(server="remote")
    assert text(await hub.call_tool("remote__echo", {"text": "back"})) == "back"
    assert (await hub.call_tool("remote__pid", {})).structured_content != first_pid
    assert hub.status()["remote"].restarts >= 1


async def test_session_not_found_reconnects(make_hub: HubFactory, token_server: ServerProcess) -> None:
    hub = await make_hub({"remote": remote(token_server.url, maxRestarts=50)})
    restarts = hub.status()["remote"].restarts
    # The server forgets every session but keeps the connections (a restarted instance behind a proxy):
    # the next request gets 404 "Session not found", which the SDK client never recovers from by itself.
    assert text(await hub.call_tool("remote__forget_sessions", {})).startswith("forgot")
    with pytest.raises(ServerUnavailableError) as info:
        await hub.call_tool("remote__echo", {"text": "x"})
    assert "Session not found" in str(info.value)
    await wait_for(lambda: hub.status()["remote"].state == "ready", 10)
    assert hub.status()["remote"].restarts == restarts + 1
    assert text(await hub.call_tool("remote__echo", {"text": "again"})) == "again"


async def test_broken_stream_with_a_live_server_keeps_the_connection(
    make_hub: HubFactory, token_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A response stream that breaks while the server is fine (here: a read timeout, as a proxy cutting a
    # quiet stream would cause) fails that one call; a ping shows the server is alive, so no reconnect.
    monkeypatch.setattr(http_transport.limits, "READ_TIMEOUT", 0.5)
    hub = await make_hub({"remote": remote(token_server.url)})
    restarts = hub.status()["remote"].restarts
    with pytest.raises(UpstreamError) as info:
        await hub.call_tool("remote__quiet_sleep", {"seconds": 1.5})
    assert info.value.code == -32000 and "SSE stream" in info.value.message
    assert hub.status()["remote"].state == "ready"
    assert hub.status()["remote"].restarts == restarts
    assert text(await hub.call_tool("remote__echo", {"text": "fine"})) == "fine"


# --- 4: unreachable ---------------------------------------------------------------------------------------


async def test_unreachable_url_fails_clearly_and_alone(make_hub: HubFactory) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    t0 = time.monotonic()
    hub = await make_hub(
        {"gone": {"url": url, "maxRestarts": 0}, "flaky": {"url": url, "maxRestarts": 50}, "local": bad()}
    )
    assert time.monotonic() - t0 < 5
    status = hub.status()
    assert status["gone"].state == "failed"
    assert status["flaky"].state in ("backoff", "starting")
    for name in ("gone", "flaky"):
        error = status[name].last_error or ""
        assert url in error and "connection refused" in error, error
    assert status["local"].state == "ready"
    assert (await hub.call_tool("local__add", {"a": 1, "b": 2})).structured_content == {"result": 3}
    with pytest.raises(ServerUnavailableError):
        await hub.call_tool("flaky__echo", {"text": "x"})


async def test_bad_url_and_non_mcp_endpoint(make_hub: HubFactory) -> None:
    async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nno such!\n"
        )
        await writer.drain()
        writer.close()

    plain_http = await asyncio.start_server(not_found, "127.0.0.1", 0)
    port = plain_http.sockets[0].getsockname()[1]
    async with plain_http:
        hub = await make_hub(
            {
                "nourl": {"type": "http", "url": "localhost:3000/mcp"},
                "notmcp": {"url": f"http://127.0.0.1:{port}/mcp", "maxRestarts": 0, "startTimeout": 5},
            }
        )
    st = hub.status()["nourl"]
    assert st.state == "failed" and "is not an http:// or https:// URL" in (st.last_error or "")
    st = hub.status()["notmcp"]
    assert st.state == "failed"
    assert f"answered HTTP 404 Not Found at http://127.0.0.1:{port}/mcp: no such!" in (st.last_error or "")


# --- 5: legacy SSE ----------------------------------------------------------------------------------------


async def test_legacy_sse_end_to_end(
    make_hub: HubFactory, servers: list[ServerProcess], short_backoff: None
) -> None:
    args = ("--transport", "sse", "--token", TOKEN)
    server = await ServerProcess(free_port(), *args).astart()
    successor = ServerProcess(server.port, *args).prepare()
    servers += [server, successor]
    hub = await make_hub({"old": {**remote(server.url), "type": "sse", "maxRestarts": 50}})
    st = hub.status()["old"]
    assert st.state == "ready", st.last_error
    assert st.transport == "sse"
    assert text(await hub.call_tool("old__echo", {"text": "sse"})) == "sse"
    results = await asyncio.gather(*(hub.call_tool("old__add", {"a": i, "b": 1}) for i in range(10)))
    assert [r.structured_content for r in results] == [{"result": i + 1} for i in range(10)]
    seen: list[float] = []
    await hub.call_tool("old__sleep", {"seconds": 0.3}, progress=lambda p, t, m: seen.append(p))
    await wait_for(lambda: len(seen) >= 2, 2)
    assert text(await hub.call_tool("old__header", {"name": "authorization"})) == f"Bearer {TOKEN}"
    with pytest.raises(CallTimeoutError):
        await hub.call_tool("old__sleep", {"seconds": 5}, timeout=0.3)

    slow = asyncio.create_task(hub.call_tool("old__sleep", {"seconds": 30}))
    await asyncio.sleep(0.2)
    server.kill()
    with pytest.raises(ServerUnavailableError):
        await asyncio.wait_for(slow, 2)
    await wait_for(lambda: hub.status()["old"].state != "ready", 2)
    assert server.url in (hub.status()["old"].last_error or "")
    await successor.arelease()
    await wait_for(lambda: hub.status()["old"].state == "ready", 15)
    assert text(await hub.call_tool("old__echo", {"text": "back"})) == "back"


# --- server-everything (TypeScript SDK) in streamableHttp mode ---------------------------------------------


def start_everything_http(port: int) -> subprocess.Popen[bytes]:
    spec = thirdparty.everything_http(port)
    return subprocess.Popen(
        [spec["command"], *spec["args"]],
        env={**os.environ, **spec["env"]},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # a line per request
        stderr=subprocess.DEVNULL,
    )


async def test_everything_over_streamable_http(make_hub: HubFactory) -> None:
    thirdparty.require("everything")
    port = free_port()
    proc = start_everything_http(port)
    try:
        await asyncio.to_thread(wait_listening, port, proc)
        hub = await make_hub({"every": {"url": thirdparty.everything_http_url(port), "maxRestarts": 50}})
        st = hub.status()["every"]
        assert st.state == "ready", st.last_error
        # it registers one more tool after `initialized` and announces it with list_changed
        await wait_for(lambda: "every__simulate-research-query" in {t["name"] for t in hub.tools()}, 5)
        probe = thirdparty.EVERYTHING_PROBE
        assert probe.expect in text(await hub.call_tool(f"every__{probe.tool}", probe.arguments))
        results = await asyncio.gather(
            *(hub.call_tool("every__echo", {"message": f"m{i}"}) for i in range(10))
        )
        assert [text(r) for r in results] == [f"Echo: m{i}" for i in range(10)]
        proc.kill()
        proc.wait()
        await wait_for(lambda: hub.status()["every"].state != "ready", 3)
        assert "every__echo" not in {t["name"] for t in hub.tools()}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- the wire alone, over fake SDK streams: what it passes through, skips and reports ---------------------


class FakeSdkWire(http_transport.HttpTransport):
    """HttpTransport with the SDK context replaced by memory streams the test plays the server on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.to_wire, self.read = anyio.create_memory_object_stream[Any](100)
        self.write, self.from_wire = anyio.create_memory_object_stream[Any](100)

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[tuple[Any, Any]]:
        async with self.read, self.write:
            yield self.read, self.write


def as_session_message(msg: dict[str, Any]) -> SessionMessage:
    return SessionMessage(jsonrpc_message_adapter.validate_python(msg))


async def test_wire_passes_messages_through_unchanged() -> None:
    got: list[Any] = []
    closed: list[tuple[str, int | None]] = []
    spec = ResolvedSpec("fake", "http", None, (), {}, None, "http://127.0.0.1:9/mcp", {})
    wire = FakeSdkWire(spec, got.append, lambda reason, code: closed.append((reason, code)))
    assert wire.pid is None and wire.stderr is None
    await wire.start()

    wire.send(
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    )
    sent = await wire.from_wire.receive()
    assert sent.message.method == "initialize" and sent.metadata is None
    init_reply = {"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-11-25", "capabilities": {}}}
    odd = [
        {"jsonrpc": "2.0", "id": 7, "error": {"code": -32050, "message": "nope", "data": {"why": [1, None]}}},
        {"jsonrpc": "2.0", "id": "s-1", "error": {"code": -32000, "message": "Bad things"}},
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": {"x": 1}}},
        {"jsonrpc": "2.0", "method": "vendor/thing", "params": {"_meta": {"k": "v"}, "camelCase": True}},
        {"jsonrpc": "2.0", "id": 9, "method": "roots/list"},
    ]
    await wire.to_wire.send(as_session_message(init_reply))
    await wire.to_wire.send(ValueError("Failed to parse SSE message"))  # unparseable: logged, skipped
    for msg in odd:
        await wire.to_wire.send(as_session_message(msg))
    await wait_for(lambda: len(got) == 1 + len(odd), 2)
    assert got == [init_reply, *odd]
    assert wire.protocol_version == "2025-11-25"

    # after the handshake every message carries MCP-Protocol-Version
    wire.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    sent = await wire.from_wire.receive()
    assert sent.metadata.headers == {"mcp-protocol-version": "2025-11-25"}

    # the server's "Session not found" (as the SDK forwards it): the connection is reported gone, once
    assert not closed
    lost = {"jsonrpc": "2.0", "id": 2, "error": {"code": -32600, "message": "Session not found"}}
    await wire.to_wire.send(as_session_message(lost))
    await wait_for(lambda: bool(closed), 2)
    assert "'Session not found'" in closed[0][0] and spec.url in closed[0][0] and closed[0][1] is None
    with pytest.raises(ServerExitedError):
        wire.send({"jsonrpc": "2.0", "id": 3, "method": "ping"})
    await wire.close()
    assert len(closed) == 1 and len(got) == 1 + len(odd)


async def test_wire_reports_eof_once_and_close_is_quiet_after() -> None:
    closed: list[str] = []
    spec = ResolvedSpec("fake", "http", None, (), {}, None, "http://127.0.0.1:9/mcp", {})
    wire = FakeSdkWire(spec, lambda m: None, lambda reason, code: closed.append(reason))
    await wire.start()
    await wire.to_wire.aclose()  # the SDK closed its read stream
    await wait_for(lambda: bool(closed), 2)
    await wire.close()
    assert closed == ["lost its HTTP connection to http://127.0.0.1:9/mcp"]

    stopped: list[str] = []
    wire2 = FakeSdkWire(spec, lambda m: None, lambda reason, code: stopped.append(reason))
    await wire2.start()
    await wire2.close()
    assert stopped == ["was stopped"]
