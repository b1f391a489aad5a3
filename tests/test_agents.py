"""Remote agents end to end: a real hub (``patchbay serve``) and real agents (``patchbay agent``), each in
its own process, over real sockets on 127.0.0.1.

Most tests share one hub (started once for the module, ``--agent-ping 0.5 --agent-max-frame 65536``) and
one well-behaved agent ``laptop``; every other test uses agent names of its own, so they do not interfere.
Tests that stop the hub start hubs of their own. Every process is started in a session of its own and
killed with its whole tree at the end (the agent's servers run in sessions of their own too).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import mcp.types as types
import psutil
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests import thirdparty
from tests.conftest import bad
from tests.test_serve import free_port

PING = 0.5  # the shared hub pings agents every 0.5 s and drops one that does not answer within 0.5 s
MAX_FRAME = 65536

# Every agent the shared hub accepts, each with its own token. "laptop"'s comes from a placeholder.
AGENTS = (
    "laptop", "killed", "revoked", "shadow_a", "shadow_b", "evil", "twin", "frozen", "watched", "bigmouth",
    "chatty", "desk", "desk2", "sampler", "stock",
)  # fmt: skip


def token(name: str) -> str:
    return f"{name}-token-0123456789abcdef"


# --- processes -------------------------------------------------------------------------------------------


def kill_tree(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """``sig`` to the process, its group and every descendant (servers run in sessions of their own)."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    for kid in kids:
        with contextlib.suppress(psutil.NoSuchProcess):
            kid.send_signal(sig)
    if sig == signal.SIGKILL:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


class HubProc:
    """``patchbay serve`` as a subprocess, on a port chosen once (so it can be restarted on the same port)."""

    def __init__(self, config: Path, log: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log = log
        self.extra = extra
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/agents"

    def start(self) -> HubProc:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "patchbay", "serve", "--config", str(self.config),
                 "--port", str(self.port), *self.extra],
                env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self

    def http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url=self.base, timeout=30)

    async def ready(self, timeout: float = 30) -> None:
        assert self.proc is not None
        async with self.http() as http, asyncio.timeout(timeout):
            while True:
                assert self.proc.poll() is None, f"the hub exited:\n{self.log.read_text()}"
                with contextlib.suppress(httpx2.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)

    def stop(self) -> int | None:
        """SIGTERM, as a user would; the whole tree is killed if it has not gone within 15 s."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        kill_tree(self.proc)
        return self.proc.returncode


class AgentProc:
    """``patchbay agent`` as a subprocess; stdout and stderr go to a log file the test can read."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def says(self, text: str, count: int = 1, timeout: float = 15, *, since: int = 0) -> None:
        """Until ``text`` appears ``count`` times in the output (after its first ``since`` characters)."""
        await eventually(
            lambda: self.output[since:].count(text) >= count, timeout, f"agent output {text!r} x{count}"
        )

    def kill(self) -> None:
        kill_tree(self.proc)


def start_agent(
    hub: HubProc | None,
    config: Path,
    log: Path,
    tok: str | None,
    *,
    env: dict[str, str] | None = None,
    url: str | None = None,
) -> AgentProc:
    url = url or (hub.ws if hub else "")
    argv = [sys.executable, "-m", "patchbay", "agent", "--hub", url, "--config", str(config)]
    if tok is not None:
        argv += ["--token", tok]
    base_env = {k: v for k, v in os.environ.items() if k != "PATCHBAY_AGENT_TOKEN"}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env={**base_env, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return AgentProc(proc, log)


# --- waiting and asking ----------------------------------------------------------------------------------


async def eventually(check: Callable[[], Any], timeout: float = 15, what: str = "condition") -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def tool_names(http: httpx2.AsyncClient) -> set[str]:
    r = await http.get("/api/tools")
    r.raise_for_status()
    return {t["name"] for t in r.json()}


async def agent_status(http: httpx2.AsyncClient, name: str) -> dict[str, Any] | None:
    r = await http.get("/api/agents")
    r.raise_for_status()
    return next((a for a in r.json() if a["name"] == name), None)


async def call(
    http: httpx2.AsyncClient, tool: str, arguments: dict[str, Any] | None = None, timeout: float | None = None
) -> httpx2.Response:
    body: dict[str, Any] = {"arguments": arguments or {}}
    if timeout is not None:
        body["timeout"] = timeout
    return await http.post(f"/api/tools/{tool}/call", json=body, timeout=60)


def text(response: httpx2.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["content"][0]["text"])


async def wait_connected(
    http: httpx2.AsyncClient, name: str, tool: str, timeout: float = 20
) -> dict[str, Any]:
    """Until ``tool`` is in the hub's catalog and the agent is connected; returns its status."""

    async def check() -> dict[str, Any] | None:
        status = await agent_status(http, name)
        if status and status["state"] == "connected" and tool in await tool_names(http):
            return status
        return None

    result: dict[str, Any] = await eventually(check, timeout, f"agent {name!r} to offer {tool!r}")
    return result


async def wait_gone(http: httpx2.AsyncClient, name: str, timeout: float = 10) -> dict[str, Any] | None:
    """Until none of the agent's tools is in the catalog and it is not connected; returns its status."""

    async def check() -> bool:
        status = await agent_status(http, name)
        names = await tool_names(http)
        return (status is None or status["state"] == "disconnected") and not any(
            n.startswith(f"{name}__") for n in names
        )

    await eventually(check, timeout, f"agent {name!r} to leave")
    return await agent_status(http, name)


# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("agents")
    (d / "agent-mb.json").write_text(json.dumps({"mcpServers": {"mb": bad()}}))
    # no prefix: the agent's own catalog has `echo`, so the hub shows `<agent>__echo`; t00 is not shadowed
    (d / "agent-bare.json").write_text(json.dumps({"mcpServers": {"mb": bad("--tools", "1", prefix="")}}))
    # a catalog whose tools/list answer is larger than the shared hub's frame limit
    (d / "agent-huge.json").write_text(json.dumps({"mcpServers": {"mb": bad("--tools", "1000")}}))
    (d / "agent-everything.json").write_text(
        json.dumps({"mcpServers": {"everything": thirdparty.everything()}})
    )
    return d


@pytest.fixture(scope="module")
def hub(workdir: Path) -> Iterator[HubProc]:
    """The shared hub; its config accepts every agent in ``AGENTS``."""
    config = workdir / "hub.json"
    agents: dict[str, Any] = {n: {"token": token(n)} for n in AGENTS}
    agents["laptop"] = {"token": "${LAPTOP_TOKEN}"}
    config.write_text(json.dumps({"mcpServers": {}, "agents": agents}, indent=2))
    h = HubProc(
        config, workdir / "hub.log", "--agent-ping", str(PING), "--agent-max-frame", str(MAX_FRAME),
        env={"LAPTOP_TOKEN": token("laptop")},
    )  # fmt: skip
    h.start()
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="module")
def early(hub: HubProc, workdir: Path) -> Iterator[dict[str, AgentProc]]:
    """Agents started with the module, so that their start-up (~2 s of imports each) overlaps the first
    tests; the tests that use them wait for them to connect as usual."""
    configs = {
        "killed": "mb",
        "frozen": "mb",
        "bigmouth": "mb",
        "shadow_a": "bare",
        "revoked": "mb",
        "desk": "mb",
    }
    started = {}
    for name, config in configs.items():
        # revoked's token comes from the environment
        tok, env = (None, {"PATCHBAY_AGENT_TOKEN": token(name)}) if name == "revoked" else (token(name), None)
        config_path = workdir / f"agent-{config}.json"
        started[name] = start_agent(hub, config_path, workdir / f"{name}.log", tok, env=env)
    try:
        yield started
    finally:
        for agent in started.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(agent.proc.pid, signal.SIGCONT)
            agent.kill()


@pytest.fixture(scope="module")
def laptop(hub: HubProc, workdir: Path, early: dict[str, AgentProc]) -> Iterator[AgentProc]:
    """The well-behaved agent, connected for the whole module (tests wait for it themselves)."""
    agent = start_agent(hub, workdir / "agent-mb.json", workdir / "laptop.log", token("laptop"))
    try:
        yield agent
    finally:
        agent.kill()


@pytest.fixture
async def http(hub: HubProc) -> AsyncIterator[httpx2.AsyncClient]:
    await hub.ready()
    async with hub.http() as client:
        yield client


@pytest.fixture
async def laptop_ready(laptop: AgentProc, http: httpx2.AsyncClient) -> AgentProc:
    await wait_connected(http, "laptop", "laptop__mb__echo", timeout=30)
    return laptop


@pytest.fixture
def agents(hub: HubProc, tmp_path: Path) -> Iterator[Callable[..., AgentProc]]:
    """Start agents against the shared hub (or another, ``on=``); all killed at the end of the test."""
    started: list[AgentProc] = []

    def start(
        tok: str | None, config: str = "agent-mb.json", *, on: HubProc | None = None, **kw: Any
    ) -> AgentProc:
        log = tmp_path / f"agent-{len(started)}.log"
        agent = start_agent(on or hub, hub.config.parent / config, log, tok, **kw)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        with contextlib.suppress(Exception):
            os.kill(agent.proc.pid, signal.SIGCONT)
        agent.kill()


async def assert_laptop_works(http: httpx2.AsyncClient, connections: int | None = None) -> None:
    status = await agent_status(http, "laptop")
    assert status is not None and status["state"] == "connected", status
    if connections is not None:
        assert status["connections"] == connections, "the well-behaved agent was disconnected"
    stamp = f"still here {time.monotonic()}"
    assert text(await call(http, "laptop__mb__echo", {"text": stamp})) == stamp


# --- 1. catalog and calls ---------------------------------------------------------------------------------


async def test_agent_tools_are_listed_and_called_over_rest_and_mcp(
    hub: HubProc, http: httpx2.AsyncClient, laptop_ready: AgentProc
) -> None:
    names = await tool_names(http)
    assert {"laptop__mb__echo", "laptop__mb__add", "laptop__mb__sleep", "laptop__mb__whoami"} <= names
    status = await agent_status(http, "laptop")
    assert status is not None
    assert status["address"].startswith("127.0.0.1:") and status["protocol_version"]
    assert status["tool_count"] >= 11 and status["connections"] >= 1 and status["last_error"] is None

    r = await call(http, "laptop__mb__add", {"a": 2, "b": 40})
    assert r.status_code == 200 and r.json()["structuredContent"] == {"result": 42}
    failed = await call(http, "laptop__mb__fail")
    assert failed.status_code == 200 and failed.json()["isError"] is True  # a tool error stays a tool error
    upstream = await call(http, "laptop__mb__rpc_error")
    # the agent's /mcp turns its server's JSON-RPC error into a tool error, as the hub's own /mcp does
    assert upstream.status_code == 200 and upstream.json()["isError"] is True
    assert "server 'mb' returned error -32050: deliberate upstream error" in text(upstream)

    # 50 concurrent 1 s calls through the agent: each slept, all together in well under 50 s
    started = time.monotonic()
    sleeps = await asyncio.gather(*(call(http, "laptop__mb__sleep", {"seconds": 1}) for _ in range(50)))
    elapsed = time.monotonic() - started
    assert [text(r) for r in sleeps] == ["slept 1"] * 50
    assert elapsed < 5, f"50 concurrent 1 s calls took {elapsed:.1f} s"

    async with Client(f"{hub.base}/mcp") as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        assert {"laptop__mb__echo", "laptop__mb__sleep"} <= listed
        results = await asyncio.gather(
            *(client.call_tool("laptop__mb__echo", {"text": f"call {i}"}) for i in range(50))
        )
        assert [r.content[0].text for r in results] == [f"call {i}" for i in range(50)]  # type: ignore[union-attr]
        added = await client.call_tool("laptop__mb__add", {"a": 1, "b": 2})
        assert added.structured_content == {"result": 3}
        prompt = await client.get_prompt("laptop__mb__greet", {"name": "Ada"})
        assert prompt.messages[0].content.text == "Hello, Ada!"  # type: ignore[union-attr]

    # progress travels back through the agent; a timeout at the hub is a clean 504 naming the agent
    async with streamable_http_client(f"{hub.base}/mcp") as (r, w), ClientSession(r, w) as session:
        await session.initialize()
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        slept = await session.call_tool("laptop__mb__sleep", {"seconds": 0.5}, progress_callback=on_progress)
        assert not slept.is_error
        await eventually(lambda: len(seen) >= 2, 3, "progress notifications through the agent")
    timed_out = await call(http, "laptop__mb__sleep", {"seconds": 10}, timeout=0.5)
    assert timed_out.status_code == 504 and "'laptop' did not answer tools/call" in timed_out.json()["detail"]
    await eventually(lambda: _idle(http, "laptop"), 3, "the timed-out call to be forgotten")


async def test_a_server_behind_an_agent_asks_the_calling_client_for_sampling(
    hub: HubProc, http: httpx2.AsyncClient, agents: Callable[..., AgentProc]
) -> None:
    """server-everything, on the agent's machine, asks for sampling during a plain call (the agent's fast
    path, no progress token): the question travels agent → hub → the /mcp client that made the call, and
    the client's answer back the same way."""
    thirdparty.require("everything")
    agents(token("sampler"), "agent-everything.json")
    tool = "sampler__everything__trigger-sampling-request"
    await wait_connected(http, "sampler", tool, timeout=60)
    asked: list[types.CreateMessageRequestParams] = []

    async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append(params)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled downstream"), model="t"
        )

    async with (
        streamable_http_client(f"{hub.base}/mcp") as (r, w),
        ClientSession(r, w, sampling_callback=sampling) as session,
    ):
        await session.initialize()
        result = await session.call_tool(tool, {"prompt": "hello from the hub"})
        assert not result.is_error, result
        assert "sampled downstream" in json.dumps(result.model_dump(mode="json"))
        assert "hello from the hub" in str(asked[0].messages[0].content)
    # a caller that cannot sample (REST) gets the server's own refusal as a result, and nothing hangs
    refused = await call(http, tool, {"prompt": "x"})
    assert refused.status_code == 200 and "no client is connected" in refused.text, refused.text


async def test_max_in_flight_refuses_calls_beyond_the_limit_cleanly(
    http: httpx2.AsyncClient, laptop_ready: AgentProc
) -> None:
    """maxInFlight defaults to 64 for an agent: the 65th concurrent call is refused, nobody else fails."""
    results = await asyncio.gather(*(call(http, "laptop__mb__sleep", {"seconds": 1}) for _ in range(70)))
    ok = [r for r in results if r.status_code == 200]
    refused = [r for r in results if r.status_code == 503]
    assert len(ok) == 64 and len(refused) == 6, [r.status_code for r in results]
    assert "maxInFlight" in refused[0].json()["detail"]
    await assert_laptop_works(http)


async def test_small_and_large_answers_in_one_burst_all_arrive_intact(
    http: httpx2.AsyncClient, laptop_ready: AgentProc
) -> None:
    """Concurrent answers leave the agent in batches, the short ones uncompressed and the long ones
    (listings, big results) compressed: the hub reads each one back as it was sent, whatever the mix."""
    texts = [
        f"small {i}" if i % 2 else f"large {i} " + "".join(f"{j:x}" for j in range(3000)) for i in range(40)
    ]
    results = await asyncio.gather(*(call(http, "laptop__mb__echo", {"text": t}) for t in texts))
    assert [text(r) for r in results] == texts
    await assert_laptop_works(http)


def test_short_messages_go_uncompressed_and_every_message_reads_back() -> None:
    """permessage-deflate at both ends (``SmallFramesPlain``) against the library's stock decoder, as an
    older agent or hub runs it: short frames have RSV1 unset, long ones are compressed, and skipping
    compression for some messages never desynchronises the shared compression context."""
    from websockets.extensions.permessage_deflate import PerMessageDeflate
    from websockets.frames import Frame, Opcode

    from patchbay.transports.deflate import COMPRESS_MIN, SmallFramesPlain

    sender = SmallFramesPlain(False, False, 15, 15, {"memLevel": 5})
    receiver = PerMessageDeflate(False, False, 15, 15)
    long = b'{"tools": [' + b",".join(b'{"name": "tool_%d"}' % i for i in range(200)) + b"]}"
    assert len(long) > COMPRESS_MIN
    for i, data in enumerate([b'{"id": 1}', long, b'{"id": 2}', long, b"x" * (COMPRESS_MIN - 1), long]):
        frame = sender.encode(Frame(Opcode.TEXT, data))
        assert frame.rsv1 == (len(data) >= COMPRESS_MIN), i
        if frame.rsv1:
            assert len(frame.data) < len(data) // 2
        assert bytes(receiver.decode(frame).data) == data, i


async def test_the_hub_sends_short_messages_uncompressed_to_a_stock_client(
    hub: HubProc, http: httpx2.AsyncClient
) -> None:
    """An agent on the stock websockets client (as an older patchbay agent is): the hub's short frames
    arrive with RSV1 unset, a long one compressed, and its compressed answers are read as before."""
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    from websockets.frames import Frame, Opcode

    seen: list[tuple[bool, str]] = []  # (compressed, method) of every data frame the hub sent

    class Recording(ClientPerMessageDeflateFactory):
        def process_response_params(self, params: Any, accepted: Any) -> Any:
            ext = super().process_response_params(params, accepted)
            decode = ext.decode

            def record(frame: Frame, *, max_size: int | None = None) -> Frame:
                out = decode(frame, max_size=max_size)
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    seen.append((frame.rsv1, json.loads(bytes(out.data)).get("method", "")))
                return out

            ext.decode = record  # type: ignore[method-assign]
            return ext

    auth = {"Authorization": f"Bearer {token('stock')}"}
    factory = Recording(compress_settings={"memLevel": 5})
    async with connect(hub.ws, additional_headers=auth, max_size=None, extensions=[factory]) as ws:
        init = json.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": init["id"], "result": {
            "protocolVersion": init["params"]["protocolVersion"], "capabilities": {"tools": {}},
            "serverInfo": {"name": "stock", "version": "1"}}}))  # fmt: skip
        while (msg := json.loads(await asyncio.wait_for(ws.recv(), 5))).get("method") != "tools/list":
            pass
        tool = {"name": "echo", "inputSchema": {"type": "object"}}
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": [tool]}}))
        await wait_connected(http, "stock", "stock__echo")
        big = "".join(f"{j:x}" for j in range(3000))
        for arguments in ({"text": "short"}, {"text": big}):
            pending = asyncio.create_task(call(http, "stock__echo", arguments))
            while (msg := json.loads(await asyncio.wait_for(ws.recv(), 10))).get("method") != "tools/call":
                pass
            content = [{"type": "text", "text": msg["params"]["arguments"]["text"] * 2}]
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"content": content}}))
            assert text(await pending) == arguments["text"] * 2
    calls = [compressed for compressed, method in seen if method == "tools/call"]
    assert calls == [False, True], seen
    assert not any(compressed for compressed, method in seen if method in ("initialize", "tools/list")), seen


# --- 2. kill -9 -----------------------------------------------------------------------------------------


async def test_killed_agent_fails_its_calls_fast_leaves_and_comes_back(
    http: httpx2.AsyncClient,
    agents: Callable[..., AgentProc],
    early: dict[str, AgentProc],
    laptop_ready: AgentProc,
) -> None:
    agent = early["killed"]
    await wait_connected(http, "killed", "killed__mb__sleep")
    assert text(await call(http, "killed__mb__echo", {"text": "before"})) == "before"

    pending = asyncio.create_task(call(http, "killed__mb__sleep", {"seconds": 10}))
    await eventually(lambda: _in_flight(http, "killed"), 5, "the sleep call to be in flight at the agent")
    killed_at = time.monotonic()
    agent.kill()
    r = await pending
    elapsed = time.monotonic() - killed_at
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["server"] == "killed" and "'killed'" in body["detail"], body
    assert elapsed < 2, f"the caller waited {elapsed:.2f} s after the agent died"

    status = await wait_gone(http, "killed", 5)
    assert status is not None and status["state"] == "disconnected"
    assert status["last_error"] and status["tool_count"] == 0 and status["calls_in_flight"] == 0
    down = await call(http, "killed__mb__echo", {"text": "x"})
    assert down.status_code == 503 and "agent 'killed' is not connected" in down.json()["detail"]
    await assert_laptop_works(http)

    agents(token("killed"))  # started again: tools return and calls work
    status = await wait_connected(http, "killed", "killed__mb__echo")
    assert status["connections"] == 2 and status["last_error"] is None
    assert text(await call(http, "killed__mb__echo", {"text": "after"})) == "after"


async def _in_flight(http: httpx2.AsyncClient, name: str) -> bool:
    status = await agent_status(http, name)
    return bool(status and status["calls_in_flight"] >= 1)


async def _idle(http: httpx2.AsyncClient, name: str) -> bool:
    status = await agent_status(http, name)
    return bool(status and status["calls_in_flight"] == 0)


# --- 3. the hub goes away and comes back on the same port -------------------------------------------------


async def test_agent_retries_while_the_hub_is_down_and_reconnects_on_the_same_port(
    tmp_path: Path, workdir: Path, agents: Callable[..., AgentProc]
) -> None:
    config = tmp_path / "hub.json"
    config.write_text(json.dumps({"mcpServers": {}, "agents": {"roamer": {"token": token("roamer")}}}))
    own = HubProc(config, tmp_path / "hub.log", "--agent-ping", str(PING)).start()
    try:
        agent = agents(token("roamer"), on=own)
        await own.ready()
        async with own.http() as http:
            await wait_connected(http, "roamer", "roamer__mb__echo")
        await agent.says("agent connected")

        mark = len(agent.output)
        assert own.stop() in (0, -signal.SIGTERM)
        # the hub went away: the agent says so, and keeps trying (each attempt: "agent disconnected: …")
        await agent.says("agent disconnected:", 2, since=mark)
        assert "retrying in" in agent.output[mark:]
        assert "is unreachable" in agent.output[mark:]
        assert agent.alive()

        own.start()  # same port
        await own.ready()
        async with own.http() as http:
            status = await wait_connected(http, "roamer", "roamer__mb__echo", timeout=30)
            assert status["connections"] == 1  # a new hub process: its first connection of roamer
            assert text(await call(http, "roamer__mb__echo", {"text": "back"})) == "back"
        assert agent.output.count("agent connected") == 2
    finally:
        own.stop()


# --- 4. tokens --------------------------------------------------------------------------------------------


async def test_a_bad_token_is_refused_and_the_agent_keeps_retrying(
    hub: HubProc, http: httpx2.AsyncClient, agents: Callable[..., AgentProc]
) -> None:
    agent = agents("not-a-token-anyone-accepts")
    # two attempts, each refused (each printed as "agent disconnected: <why>; retrying in …")
    await agent.says("agent disconnected: the hub refused this agent's token (HTTP 403)", 2)
    assert agent.alive()
    assert "retrying in" in agent.output
    assert "refused an agent from 127.0.0.1" in hub.log.read_text()  # the hub says so too, without the token
    assert "not-a-token-anyone-accepts" not in hub.log.read_text()


async def test_a_wrong_hub_path_is_not_blamed_on_the_token(
    hub: HubProc, http: httpx2.AsyncClient, agents: Callable[..., AgentProc]
) -> None:
    agent = agents(token("laptop"), url=hub.ws.replace("/agents", "/mcp"))  # a valid token, the wrong path
    await agent.says("agent disconnected:", 1)
    first = next(line for line in agent.output.splitlines() if line.startswith("agent disconnected:"))
    assert "token" not in first, first


async def test_no_token_exits_with_a_clear_message(hub: HubProc, workdir: Path, tmp_path: Path) -> None:
    agent = start_agent(hub, workdir / "agent-mb.json", tmp_path / "agent.log", None)
    try:
        assert agent.proc.wait(30) == 2
    finally:
        agent.kill()
    assert "give --token or set PATCHBAY_AGENT_TOKEN" in agent.output


async def test_revoking_an_agent_closes_its_connection_and_refuses_it_afterwards(
    hub: HubProc,
    http: httpx2.AsyncClient,
    agents: Callable[..., AgentProc],
    early: dict[str, AgentProc],
    laptop_ready: AgentProc,
) -> None:
    agent = early["revoked"]  # its token comes from PATCHBAY_AGENT_TOKEN
    await wait_connected(http, "revoked", "revoked__mb__echo")
    pending = asyncio.create_task(call(http, "revoked__mb__sleep", {"seconds": 10}))
    await eventually(lambda: _in_flight(http, "revoked"), 5, "the call to be in flight")

    r = await http.delete("/api/agents/revoked")
    assert r.status_code == 204
    failed = await asyncio.wait_for(pending, 3)  # the live call fails at once, cleanly
    assert failed.status_code == 503 and "revoked" in failed.json()["detail"], failed.text
    assert not any(n.startswith("revoked__") for n in await tool_names(http))
    assert await agent_status(http, "revoked") is None
    assert "revoked" not in json.loads(hub.config.read_text())["agents"]
    gone = await call(http, "revoked__mb__echo", {"text": "x"})
    assert gone.status_code == 404
    await agent.says("the hub refused this agent's token (HTTP 403)", 1)
    assert agent.alive()
    assert (await http.delete("/api/agents/revoked")).status_code == 404
    await assert_laptop_works(http)


async def test_an_agent_added_through_the_api_can_connect_and_its_token_is_never_shown(
    hub: HubProc, http: httpx2.AsyncClient, agents: Callable[..., AgentProc]
) -> None:
    secret = "phone-secret-" + os.urandom(8).hex()
    assert (await http.post("/api/agents", json={"name": "phone", "token": "short"})).status_code == 422
    r = await http.post("/api/agents", json={"name": "phone", "token": secret})
    assert r.status_code in (200, 201), r.text
    assert secret not in r.text
    again = await http.post("/api/agents", json={"name": "phone", "token": secret + "x"})
    assert again.status_code == 409
    clash = await http.post("/api/agents", json={"name": "laptop", "token": secret})
    assert clash.status_code == 409

    saved = json.loads(hub.config.read_text())["agents"]["phone"]
    assert saved == {"tokenSha256": hashlib.sha256(secret.encode()).hexdigest()}
    assert secret not in hub.config.read_text()

    agents(secret)
    await wait_connected(http, "phone", "phone__mb__echo")
    assert text(await call(http, "phone__mb__echo", {"text": "ring"})) == "ring"
    listing = (await http.get("/api/agents")).text
    assert secret not in listing and '"token"' not in listing and "tokenSha256" not in listing


# --- 5. an agent never shadows a local tool ---------------------------------------------------------------


async def test_a_local_tool_wins_over_an_agent_tool_whichever_came_first(
    http: httpx2.AsyncClient, agents: Callable[..., AgentProc], early: dict[str, AgentProc]
) -> None:
    # order B: the local server first (prefix "shadow_b" → shadow_b__echo), then the agent
    r = await http.post("/api/servers", json={"name": "local_b", "spec": bad(prefix="shadow_b")})
    assert r.status_code in (200, 201), r.text
    # order A: the agent first (its `echo` → shadow_a__echo), then the local server
    # (shadow_a is one of the early agents)
    agents(token("shadow_b"), "agent-bare.json")
    try:
        await wait_connected(http, "shadow_a", "shadow_a__t00")
        await wait_connected(http, "shadow_b", "shadow_b__t00")
        agent_a_pid = json.loads(text(await call(http, "shadow_a__whoami")))["pid"]

        r = await http.post("/api/servers", json={"name": "local_a", "spec": bad(prefix="shadow_a")})
        assert r.status_code in (200, 201), r.text
        for side in ("a", "b"):
            local = (await http.get(f"/api/servers/local_{side}")).json()
            assert local["state"] == "ready"
            who = json.loads(text(await call(http, f"shadow_{side}__whoami")))
            assert who["pid"] == local["pid"], f"order {side}: the agent's whoami answered, not local_{side}"
            assert who["pid"] != agent_a_pid
            names = await tool_names(http)
            assert f"shadow_{side}__t00" in names  # the agent's own, unshadowed tool is still there
            status = await agent_status(http, f"shadow_{side}")
            assert status is not None and status["state"] == "connected"
            notes = " ".join(status["conflicts"])
            assert f"'shadow_{side}__echo' already belongs to 'local_{side}'" in notes, status["conflicts"]
            assert text(await call(http, f"shadow_{side}__t00", {"text": "mine"})) == "mine"
    finally:
        for side in ("a", "b"):
            await http.delete(f"/api/servers/local_{side}")

    # the local servers gone, the agents' tools take their names
    async def agent_answers() -> bool:
        r = await call(http, "shadow_a__whoami")
        return r.status_code == 200 and json.loads(text(r))["pid"] == agent_a_pid

    await eventually(agent_answers, 5, "shadow_a__whoami to be the agent's again")


# --- 6. a malicious agent with a valid token ----------------------------------------------------------------


async def evil_connect(
    hub: HubProc, *, handshake: bool = True, compression: str | None = "deflate"
) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect as agent "evil"; with ``handshake``, answer initialize and the listings properly first."""
    auth = {"Authorization": f"Bearer {token('evil')}"}
    ws = await connect(hub.ws, additional_headers=auth, max_size=None, compression=compression)
    init = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert init["method"] == "initialize" and init["params"]["clientInfo"]["name"] == "patchbay"
    if not handshake:
        return ws, init
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": init["id"], "result": {
        "protocolVersion": init["params"]["protocolVersion"], "capabilities": {"tools": {}},
        "serverInfo": {"name": "evil", "version": "6.6.6"}}}))  # fmt: skip
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if msg.get("method") == "tools/list":
            tool = {"name": "bait", "inputSchema": {"type": "object"}}
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": [tool]}}))
            return ws, init


async def closed_with(ws: ClientConnection, timeout: float = 5) -> int | None:
    """The close code the hub sent, or None if it kept the connection open for ``timeout`` s."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed:
        return ws.close_code
    except TimeoutError:
        return None


async def test_a_malicious_agent_is_disconnected_and_nobody_else_is(
    hub: HubProc, http: httpx2.AsyncClient, laptop_ready: AgentProc
) -> None:
    before = await agent_status(http, "laptop")
    assert before is not None
    laptop_connections = before["connections"]

    async def evil_left(why: str) -> None:
        status = await wait_gone(http, "evil", 5)
        assert status is not None and status["state"] == "disconnected"
        assert why in (status["last_error"] or ""), status
        await assert_laptop_works(http, laptop_connections)

    # (a) a frame that is not JSON, as the answer to initialize
    ws, _ = await evil_connect(hub, handshake=False)
    await ws.send("this is not JSON {")
    assert await closed_with(ws) == 1007
    await assert_laptop_works(http, laptop_connections)

    # (b) a binary frame, once fully connected (its tool listed)
    ws, _ = await evil_connect(hub)
    await wait_connected(http, "evil", "evil__bait", 5)
    await ws.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
    assert await closed_with(ws) == 1007
    await evil_left("binary frame")

    # (c) a frame larger than --agent-max-frame: as sent, and as a tiny compressed frame that inflates beyond
    for compression in (None, "deflate"):
        ws, _ = await evil_connect(hub, compression=compression)
        await wait_connected(http, "evil", "evil__bait", 5)
        pad = os.urandom(MAX_FRAME).hex() if compression is None else "x" * (MAX_FRAME + 1)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps({"jsonrpc": "2.0", "method": "x", "params": {"pad": pad}}))
        assert await closed_with(ws) == 1009, compression
        await evil_left("larger than the hub accepts")

    # (d) a flood of tiny notifications, while the laptop is being called
    ws, _ = await evil_connect(hub)
    await wait_connected(http, "evil", "evil__bait", 5)
    calls = asyncio.gather(*(call(http, "laptop__mb__echo", {"text": f"c{i}"}) for i in range(20)))
    frame = json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "debug"}})
    with contextlib.suppress(ConnectionClosed):
        for _ in range(5000):
            await ws.send(frame)
    assert await closed_with(ws) == 1008
    assert [text(r) for r in await calls] == [f"c{i}" for i in range(20)]
    await evil_left("flood")

    # (d') a flood of answers to requests the hub never made: a flood all the same
    ws, _ = await evil_connect(hub)
    await wait_connected(http, "evil", "evil__bait", 5)
    with contextlib.suppress(ConnectionClosed):
        for i in range(5000):
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 10_000_000 + i, "result": {}}))
    assert await closed_with(ws) == 1008, "5000 answers to requests never made were not cut off"
    await evil_left("flood")

    # (e) valid JSON, but a nonsense answer to initialize: refused, no tools, nothing else disturbed
    ws, init = await evil_connect(hub, handshake=False)
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": init["id"], "result": "garbage"}))
    await closed_with(ws)
    status = await eventually(lambda: _evil_error(http), 5, "evil to be refused")
    assert "failed to initialize" in status["last_error"]
    await assert_laptop_works(http, laptop_connections)

    # (f) answers to requests never made, unknown methods, requests of its own: ignored or refused, and the
    # session keeps working
    ws, _ = await evil_connect(hub)
    await wait_connected(http, "evil", "evil__bait", 5)
    for junk in (
        {"jsonrpc": "2.0", "id": 999999, "result": {"content": []}},
        {"jsonrpc": "2.0", "id": "nope", "error": {"code": 1, "message": "x"}},
        {"jsonrpc": "2.0", "method": "notifications/unknown"},
        {"jsonrpc": "2.0", "id": 1, "method": "sampling/createMessage", "params": {"messages": []}},
        {"not": "json-rpc"},
        [1, 2, 3],
    ):
        await ws.send(json.dumps(junk))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 5))  # the hub answers its sampling request
    assert answer["id"] == 1 and "error" in answer
    pending = asyncio.create_task(call(http, "evil__bait", {}))
    request = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert request["method"] == "tools/call" and request["params"]["name"] == "bait"
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {
        "content": [{"type": "text", "text": "caught"}]}}))  # fmt: skip
    assert text(await pending) == "caught"
    await ws.close()
    await wait_gone(http, "evil", 5)
    await assert_laptop_works(http, laptop_connections)


async def _evil_error(http: httpx2.AsyncClient) -> dict[str, Any] | None:
    status = await agent_status(http, "evil")
    return status if status and "initialize" in (status["last_error"] or "") else None


# --- 7. a second connection of the same agent ---------------------------------------------------------------


async def test_a_second_connection_of_the_same_agent_replaces_the_first(
    http: httpx2.AsyncClient, agents: Callable[..., AgentProc]
) -> None:
    first = agents(token("twin"))
    await wait_connected(http, "twin", "twin__mb__sleep")
    pid_first = json.loads(text(await call(http, "twin__mb__whoami")))["pid"]
    pending = asyncio.create_task(call(http, "twin__mb__sleep", {"seconds": 10}))
    await eventually(lambda: _in_flight(http, "twin"), 5, "the call to be in flight")

    second = agents(token("twin"))
    failed = await asyncio.wait_for(pending, 15)  # replaced: the call on the first connection fails cleanly
    assert failed.status_code == 503, failed.text
    assert "replaced by a new" in failed.json()["detail"], failed.json()
    status = await wait_connected(http, "twin", "twin__mb__echo")
    assert status["connections"] >= 2
    assert first.alive() and second.alive()
    pid_now = json.loads(text(await call(http, "twin__mb__whoami")))["pid"]
    assert pid_now != pid_first


async def test_two_agents_with_the_same_token_settle_instead_of_flapping(
    http: httpx2.AsyncClient, agents: Callable[..., AgentProc]
) -> None:
    agents(token("twin"))
    agents(token("twin"))
    await wait_connected(http, "twin", "twin__mb__echo")
    await asyncio.sleep(1)
    before = (await agent_status(http, "twin") or {})["connections"]
    failures = 0
    for _ in range(10):
        r = await call(http, "twin__mb__sleep", {"seconds": 0.2})
        failures += r.status_code != 200
    after = (await agent_status(http, "twin") or {})["connections"]
    assert (failures, after - before) == (0, 0), f"{failures} failed calls, {after - before} reconnections"


async def test_an_agent_dropped_right_after_connecting_backs_off(
    http: httpx2.AsyncClient, agents: Callable[..., AgentProc]
) -> None:
    agent = agents(token("chatty"), "agent-huge.json")
    await agent.says("agent connected", 1, timeout=20)
    status = await eventually(lambda: agent_status(http, "chatty"), 5)
    await eventually(lambda: _last_error(http, "chatty"), 5, "chatty to be refused")
    status = await agent_status(http, "chatty")
    assert status is not None and "larger than the hub accepts" in status["last_error"], status
    first = agent.output.count("agent connected")
    await asyncio.sleep(3)
    again = agent.output.count("agent connected") - first
    # exponential backoff from 0.5 s (x0.5-1 jitter) allows at most 3 attempts in 3 s
    assert again <= 3, f"{again} reconnections in 3 s"


async def _last_error(http: httpx2.AsyncClient, name: str) -> str | None:
    status = await agent_status(http, name)
    return status["last_error"] if status else None


async def test_an_oversized_result_fails_the_call_clearly_and_the_agent_comes_back(
    http: httpx2.AsyncClient,
    agents: Callable[..., AgentProc],
    early: dict[str, AgentProc],
    laptop_ready: AgentProc,
) -> None:
    """A result larger than --agent-max-frame: the hub drops that agent (1009), the call fails naming it,
    and the agent reconnects. (It costs the agent's other calls in flight too: see the report.)"""
    await wait_connected(http, "bigmouth", "bigmouth__mb__big")
    small = await call(http, "bigmouth__mb__big", {"bytes": MAX_FRAME // 2})
    assert len(text(small)) == MAX_FRAME // 2
    r = await call(http, "bigmouth__mb__big", {"bytes": MAX_FRAME * 2})
    assert r.status_code == 503, r.text[:300]
    assert "'bigmouth'" in r.json()["detail"] and "larger than the hub accepts" in r.json()["detail"]
    status = await wait_connected(http, "bigmouth", "bigmouth__mb__echo")
    assert status["connections"] == 2
    assert text(await call(http, "bigmouth__mb__echo", {"text": "ok"})) == "ok"
    await assert_laptop_works(http)


async def test_a_busy_agent_is_not_mistaken_for_a_flood(workdir: Path, tmp_path: Path) -> None:
    """The hub in this process (the same app and uvicorn settings as ``patchbay serve``), so that it can
    be driven faster than its REST API allows; the agent is a real ``patchbay agent`` process."""
    import uvicorn

    from patchbay import Hub
    from patchbay.server.app import ServeSettings, create_app

    port = free_port()
    hub = Hub.from_dict({"mcpServers": {}, "agents": {"busy": {"token": token("busy")}}})
    app = create_app(hub, ServeSettings(port=port, watch_config=False))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio")
    )
    serving = asyncio.create_task(server.serve())
    url = f"ws://127.0.0.1:{port}/agents"
    agent = start_agent(None, workdir / "agent-mb.json", tmp_path / "agent.log", token("busy"), url=url)
    try:
        await eventually(lambda: "busy__mb__echo" in hub.catalog.tools, 20, "the agent to connect")
        done, failures, started = 0, list[str](), time.monotonic()

        async def worker() -> None:
            nonlocal done
            while time.monotonic() - started < 8 and not failures:
                try:
                    await hub.call_tool("busy__mb__echo", {"text": "x"})
                    done += 1
                except Exception as exc:
                    failures.append(f"{exc} (after {done} calls, {time.monotonic() - started:.1f} s)")

        await asyncio.gather(*(worker() for _ in range(32)))
        rate = done / (time.monotonic() - started)
        if not failures and rate < 650:  # 8 s above 625/s exhaust the bucket; slower proves nothing
            pytest.skip(f"this machine drove only {rate:.0f} calls/s")
        assert not failures, failures[0]
    finally:
        agent.kill()
        server.should_exit = True
        await serving


# --- 8. liveness ---------------------------------------------------------------------------------------


async def test_a_frozen_agent_is_dropped_by_the_ping_and_comes_back_when_thawed(
    http: httpx2.AsyncClient,
    agents: Callable[..., AgentProc],
    early: dict[str, AgentProc],
    laptop_ready: AgentProc,
) -> None:
    agent = early["frozen"]
    await wait_connected(http, "frozen", "frozen__mb__echo")
    pending = asyncio.create_task(call(http, "frozen__mb__sleep", {"seconds": 30}))
    await eventually(lambda: _in_flight(http, "frozen"), 5, "the call to be in flight")
    os.kill(agent.proc.pid, signal.SIGSTOP)  # the process only: TCP stays open, pings go unanswered
    stopped_at = time.monotonic()
    try:
        status = await wait_gone(http, "frozen", 10)
        dropped_after = time.monotonic() - stopped_at
        assert status is not None and status["last_error"], status
        assert dropped_after < 4 * PING + 2, f"dropped {dropped_after:.1f} s after it froze"
        failed = await asyncio.wait_for(pending, 2)
        assert failed.status_code == 503 and "'frozen'" in failed.json()["detail"]
        await assert_laptop_works(http)
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
    status = await wait_connected(http, "frozen", "frozen__mb__echo", 20)  # thawed: it reconnects
    assert status["connections"] == 2
    assert text(await call(http, "frozen__mb__echo", {"text": "thawed"})) == "thawed"


# --- 9. the agent's catalog changes -----------------------------------------------------------------------


async def test_a_change_in_the_agents_catalog_reaches_the_hub(
    hub: HubProc, http: httpx2.AsyncClient, laptop_ready: AgentProc
) -> None:
    async with Client(f"{hub.base}/mcp") as client:
        seen: list[Any] = []

        async def listen() -> None:
            async with client.listen(tools_list_changed=True) as sub:
                async for event in sub:
                    seen.append(event)

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.3)
        try:
            r = await call(http, "laptop__mb__set_tools", {"names": ["extra"]})
            assert text(r) == "ok"
            await eventually(lambda: _has_tool(http, "laptop__mb__extra"), 5, "laptop__mb__extra")
            assert text(await call(http, "laptop__mb__extra", {"text": "new"})) == "new"
            await eventually(lambda: bool(seen), 5, "a list_changed for the MCP client")
            assert "laptop__mb__extra" in {t.name for t in (await client.list_tools()).tools}
            assert text(await call(http, "laptop__mb__set_tools", {"names": []})) == "ok"
            await eventually(lambda: _lacks_tool(http, "laptop__mb__extra"), 5, "laptop__mb__extra gone")
        finally:
            listener.cancel()


async def _has_tool(http: httpx2.AsyncClient, name: str) -> bool:
    return name in await tool_names(http)


async def _lacks_tool(http: httpx2.AsyncClient, name: str) -> bool:
    return name not in await tool_names(http)


# --- 10. events -------------------------------------------------------------------------------------------


async def test_agent_arrivals_and_departures_are_events(
    hub: HubProc, http: httpx2.AsyncClient, agents: Callable[..., AgentProc]
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    async def read() -> None:
        async with httpx2.AsyncClient(base_url=hub.base, timeout=None) as sse:  # noqa: SIM117
            async with sse.stream("GET", "/api/events") as stream:
                kind = ""
                async for line in stream.aiter_lines():
                    if line.startswith("event:"):
                        kind = line.partition(":")[2].strip()
                    elif line.startswith("data:"):
                        events.append((kind, json.loads(line.partition(":")[2])))

    reader = asyncio.create_task(read())
    try:
        await asyncio.sleep(0.3)
        agent = agents(token("watched"))

        def agent_events(state: str) -> list[dict[str, Any]]:
            return [e for k, e in events if k == "agent" and e["agent"] == "watched" and e["state"] == state]

        await eventually(lambda: agent_events("connected"), 20, "an agent connected event")
        connected = agent_events("connected")[0]
        assert connected["type"] == "agent" and connected["address"].startswith("127.0.0.1:")
        assert any(k == "catalog" and "watched__mb__echo" in e["added"] for k, e in events), (
            "no catalog event adding the agent's tools"
        )
        agent.kill()
        await eventually(lambda: agent_events("disconnected"), 5, "an agent disconnected event")
        assert agent_events("disconnected")[0]["error"]
        assert any(k == "catalog" and "watched__mb__echo" in e["removed"] for k, e in events)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


# --- the config file ----------------------------------------------------------------------------------------


def edit_config(hub: HubProc, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit the shared hub's config file by hand, as a user would (the hub watches it)."""
    doc = json.loads(hub.config.read_text())
    change(doc)
    hub.config.write_text(json.dumps(doc, indent=2))


async def test_removing_an_agent_from_the_config_file_revokes_it(
    hub: HubProc, http: httpx2.AsyncClient, early: dict[str, AgentProc]
) -> None:
    await wait_connected(http, "desk", "desk__mb__echo")
    edit_config(hub, lambda doc: doc["agents"].pop("desk"))
    await wait_gone(http, "desk", 4)  # the watcher polls once a second
    assert await agent_status(http, "desk") is None


async def test_an_agent_removed_from_the_file_by_hand_can_still_be_revoked(
    hub: HubProc, http: httpx2.AsyncClient
) -> None:
    assert await agent_status(http, "desk2") is not None
    edit_config(hub, lambda doc: doc["agents"].pop("desk2"))
    await asyncio.sleep(2.5)  # the watcher polls once a second
    r = await http.delete("/api/agents/desk2")
    assert r.status_code in (204, 404), r.text
    assert await agent_status(http, "desk2") is None
