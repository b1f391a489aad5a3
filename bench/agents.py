"""Benchmark of a tool call through a dial-in agent, against the same call made locally by a hub.

The same ``echo`` tool of the same hand-written stdio server (bench/floor_server.py), timed in one run:

- local: ``Hub.call_tool("floor__echo")`` in this process, the floor server configured locally (stdio).
- agent: via patchbay agent: ``Hub.call_tool("bench__floor__echo")`` in this process, whose hub serves
  ``/agents`` on 127.0.0.1 (``create_app`` + uvicorn with ``patchbay serve``'s settings); a separate
  ``patchbay agent`` process dials in and runs the floor server itself. The path: hub → WebSocket frame →
  agent (its MCP server, its own ``Hub.call_tool``) → stdio → floor server, and back.
- agent: no permessage-deflate: the same, but the hub's uvicorn refuses compression
  (``ws_per_message_deflate=False``, which ``patchbay serve`` does not set): what turning it off buys.
- agent: hand-written forwarder: the same hub, but the process dialling in is ``--forwarder`` below
  (``websockets`` without compression, ``json``, the floor server over stdio; no MCP SDK, no hub inside):
  the floor of the agent design with this hub, i.e. what a lean ``patchbay agent`` could reach.

Sequential calls, interleaved in rounds of at most 500 calls a row (bench/rounds.py: floor, local, agent,
…, then the next round in a rotated order) so that the noise of this shared machine falls on every row
alike, and so that no agent answers more than 500 calls a second for long (the hub's flood limit would
disconnect it: tests/test_agents.py). Each row's figure is the median of its per-round medians; ratios are
computed per round. The figure of merit is agent / hand-written forwarder (goal ≤ 1.15). With
``--profile``, the hub (this process) and then the agent and the forwarder are sampled with py-spy
(``--gil``, calls paced at 400/s) and their on-CPU time per call is broken down by component, package and
function; the collapsed stacks are kept in bench/results/agents-profile-*.txt. py-spy comes from
bench/.venv-peers (``make bench-http`` or ``make bench-agents`` installs it) or PATH.

Run with ``make bench-agents`` or ``python -m bench.agents [--calls N] [--rounds N] [--profile]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvicorn

from bench.core import FLOOR_SERVER, timed
from bench.floor_client import FloorSession
from bench.profiling import FRAME, short
from bench.rounds import Column, Section, finish, latency_metrics, run_async
from patchbay import Hub
from patchbay.server.app import ServeSettings, create_app

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-agent-token-0123456789"
AGENT = "bench"
GOAL = 1.15  # a call through patchbay agent / through the hand-written forwarder (issue 12)
MAX_PER_ROUND = 500
PROFILE_RATE = 1000
PROFILE_CALL_RATE = 400  # calls a second while profiling
ARGS = {"text": "hi"}
FLOOR_SPEC = {"command": FLOOR_SERVER[0], "args": FLOOR_SERVER[1:]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentHub:
    """A hub in this process serving ``/agents`` on 127.0.0.1, and one ``patchbay agent`` dialled in."""

    def __init__(self, workdir: Path, kind: str = "patchbay", *, deflate: bool = True) -> None:
        self.kind = kind  # "patchbay" (patchbay agent) or "forwarder" (the hand-written one below)
        self.workdir = workdir / f"agent-{kind}-{'deflate' if deflate else 'plain'}"
        self.workdir.mkdir()
        self.port = free_port()
        self.hub = Hub.from_dict({"mcpServers": {}, "agents": {AGENT: {"token": TOKEN}}})
        app = create_app(self.hub, ServeSettings(port=self.port, watch_config=False))
        # the settings of `patchbay serve` (cli.py) at their defaults
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                ws="websockets-sansio",
                ws_max_size=16 * 1024 * 1024,
                ws_ping_interval=10.0,
                ws_ping_timeout=10.0,
                ws_per_message_deflate=deflate,
                lifespan="on",
            )
        )
        self.task: asyncio.Task[None] | None = None
        self.agent: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> AgentHub:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        config = self.workdir / "agent.json"
        config.write_text(json.dumps({"mcpServers": {"floor": FLOOR_SPEC}}))
        self.log = self.workdir / "agent.log"
        url = f"ws://127.0.0.1:{self.port}/agents"
        argv = (
            ["-m", "patchbay", "agent", "--hub", url, "--token", TOKEN, "--config", str(config)]
            if self.kind == "patchbay"
            else ["-m", "bench.agents", "--forwarder", url, TOKEN]
        )
        with self.log.open("wb") as out:
            self.agent = subprocess.Popen(  # noqa: ASYNC220 (once, before anything is timed)
                [sys.executable, *argv],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while f"{AGENT}__floor__echo" not in self.hub.catalog.tools:
            if self.agent.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not connect:\n{self.log.read_text()}")
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.agent is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.agent.pid, signal.SIGTERM)
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.agent.pid, signal.SIGKILL)
                self.agent.wait()
        self.server.should_exit = True
        if self.task is not None:
            await self.task


# --- the hand-written forwarder (the "agent floor" row) ----------------------------------------------------


async def forwarder(url: str, token: str) -> None:
    """A minimal agent: answers the hub's handshake itself and relays each ``tools/call`` to the floor server
    (sequentially: the floor server is sequential too). No SDK, no hub, no compression."""
    from websockets.asyncio.client import connect

    proc = await asyncio.create_subprocess_exec(
        *FLOOR_SERVER, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    tool = {
        "name": "floor__echo",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
    }
    init = {"capabilities": {"tools": {}}, "serverInfo": {"name": "forwarder", "version": "1"}}
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    async with connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, compression=None, max_size=None
    ) as ws:
        async for frame in ws:
            msg = json.loads(frame)
            method, rid = msg.get("method"), msg.get("id")
            if rid is None or method is None:
                continue  # notifications, stray answers
            if method == "tools/call":
                params = msg["params"]
                name = params["name"].removeprefix("floor__")
                forwarded = {"name": name, "arguments": params.get("arguments", {})}
                call = {"jsonrpc": "2.0", "id": rid, "method": method, "params": forwarded}
                stdin.write(dumps(call).encode() + b"\n")
                await ws.send((await stdout.readline()).decode())
                continue
            if method == "initialize":
                result: dict[str, object] = {**init, "protocolVersion": msg["params"]["protocolVersion"]}
            elif method == "tools/list":
                result = {"tools": [tool]}
            elif method == "ping":
                result = {}
            else:
                await ws.send(
                    dumps({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": method}})
                )
                continue
            await ws.send(dumps({"jsonrpc": "2.0", "id": rid, "result": result}))


# --- profile ---------------------------------------------------------------------------------------------

PACKAGES = [
    ("patchbay", "patchbay/"),
    ("mcp SDK (server, shared)", "mcp/"),
    ("mcp_types", "mcp_types/"),
    ("pydantic", "pydantic"),
    ("websockets", "websockets/"),
    ("uvicorn", "uvicorn/"),
    ("starlette/fastapi", "starlette/"),
    ("starlette/fastapi", "fastapi/"),
    ("anyio", "anyio/"),
    ("asyncio", "asyncio/"),
    ("json", "json/"),
    ("logging", "logging/"),
]


def py_spy() -> str | None:
    local = ROOT / "bench" / ".venv-peers" / "bin" / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def package(file: str) -> str:
    for name, needle in PACKAGES:
        if f"/{needle}" in file or file.startswith(needle):
            return name
    return "other (stdlib, C)"


# Who a sample is charged to: the innermost frame from one of these (generic libraries such as pydantic,
# anyio, json and asyncio are charged to whoever called them). First match wins.
EVENT_LOOP = "event loop (asyncio scheduling, select)"
COMPONENTS = [
    ("websockets (frames, permessage-deflate)", "websockets/"),
    ("uvicorn + Starlette WebSocket", "uvicorn/"),
    ("uvicorn + Starlette WebSocket", "starlette/"),
    ("patchbay agent.py (SDK streams glue)", "patchbay/agent.py"),
    ("patchbay server/mcp.py (McpEndpoint)", "patchbay/server/"),
    ("patchbay WebSocketWire", "patchbay/transports/websocket.py"),
    ("patchbay hub → JSON-RPC peer → stdio", "patchbay/"),
    ("MCP SDK server (dispatcher, runner, OTel)", "mcp/"),
    ("MCP SDK mcp_types (validate, serialize)", "mcp_types/"),
    ("bench/agents.py (timing loop, forwarder)", "bench/"),
]


def component(files: list[str]) -> str:
    for file in reversed(files):
        if file.endswith(("patchbay/cli.py", "patchbay/__main__.py")):
            continue  # the root of every agent stack: asyncio.run(...)
        for name, needle in COMPONENTS:
            if f"/{needle}" in file or file.startswith(needle):
                return name
    return EVENT_LOOP


def summarize(label: str, raw: Path, calls: int, top: int = 12) -> float:
    """Print on-CPU µs per call by component, by package (leaf frame) and the heaviest functions."""
    by_comp: collections.Counter[str] = collections.Counter()
    by_pkg: collections.Counter[str] = collections.Counter()
    self_fn: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines() if raw.exists() else []:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if FRAME.match(f)]
        if not frames or any("_do_waitpid" in f for f in frames):
            continue  # asyncio's child watcher, blocked in waitpid(): idle
        n = int(count)
        total += n
        files = [m["file"] for m in map(FRAME.match, frames) if m]
        by_comp[component(files)] += n
        by_pkg[package(files[-1])] += n
        self_fn[short(frames[-1])] += n
    us = 1e6 / PROFILE_RATE / max(calls, 1)
    print(f"\n  {label}: {total} samples for {calls} calls = {total * us:.0f} µs on CPU per call")
    if not total:
        return 0.0
    print("    by component (libraries charged to their caller):")
    for name, n in by_comp.most_common():
        print(f"      {n * us:6.0f} µs  {n / total * 100:5.1f}%  {name}")
    print("    self time by package (leaf frame):")
    for name, n in by_pkg.most_common():
        print(f"      {n * us:6.0f} µs  {n / total * 100:5.1f}%  {name}")
    print(f"    top {top} functions by self time:")
    for name, n in self_fn.most_common(top):
        print(f"      {n * us:6.0f} µs  {n / total * 100:5.1f}%  {name}")
    return total * us


async def profile(agent_hub: AgentHub, workdir: Path, what: str) -> None:
    spy = py_spy()
    if spy is None:
        print("\nprofile: py-spy not found (pip install py-spy, or make bench-http's bench/.venv-peers)")
        return
    assert agent_hub.agent is not None
    targets = {"hub": os.getpid(), what: agent_hub.agent.pid}
    kind = "forwarder" if agent_hub.kind == "forwarder" else "agent"
    seconds = 8.0
    procs = {}
    for label, pid in targets.items():
        side = "hub" if label == "hub" else "agent"
        out = workdir / f"agents-profile-via-{kind}-{side}.txt"  # e.g. agents-profile-via-agent-hub.txt
        procs[label] = (out, subprocess.Popen(  # noqa: ASYNC220
            [spy, "record", "--pid", str(pid), "--gil", "--rate", str(PROFILE_RATE), "--duration",
             f"{seconds:.0f}", "--format", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        ))  # fmt: skip
    await asyncio.sleep(1.0)  # py-spy attaches
    done = 0
    started = time.monotonic()
    while (now := time.monotonic()) - started < seconds - 2:
        # paced below the hub's agent flood limit (500 frames/s, burst 1000), which a sequential caller
        # exceeds: see tests/test_agents.py::test_a_busy_agent_is_not_mistaken_for_a_flood
        if (wait := started + done / PROFILE_CALL_RATE - now) > 0:
            await asyncio.sleep(wait)
        await agent_hub.hub.call_tool(f"{AGENT}__floor__echo", ARGS)
        done += 1
    print(
        f"\nprofile of calls through the {what}: {done} calls in {seconds - 2:g} s, "
        f"py-spy --gil {PROFILE_RATE} Hz"
    )
    for label, (out, proc) in procs.items():
        _, err = await asyncio.to_thread(proc.communicate)
        if proc.returncode != 0:
            print(f"  {label}: py-spy failed: {err.decode()[-300:]}")
            continue
        summarize(f"{label} process (pid {targets[label]})", out, done)


async def main(ns: argparse.Namespace) -> None:
    # at most 500 calls per row and round: a faster agent would otherwise trip the hub's flood limit
    calls, rounds = min(ns.calls, MAX_PER_ROUND), ns.rounds
    print(f"patchbay agent benchmark: {rounds} interleaved rounds of {calls} sequential echo calls per row\n")
    with tempfile.TemporaryDirectory(prefix="patchbay-bench-agents-") as tmp:
        workdir = Path(tmp)
        async with (
            FloorSession(FLOOR_SERVER) as floor,
            Hub.from_dict({"mcpServers": {"floor": FLOOR_SPEC}}) as local,
            AgentHub(workdir) as remote,
            AgentHub(workdir, deflate=False) as plain,
            AgentHub(workdir, "forwarder") as lean,
        ):
            tool = f"{AGENT}__floor__echo"
            calls_of = {
                "floor": floor.call,
                "local": lambda: local.call_tool("floor__echo", ARGS),
                "agent": lambda: remote.hub.call_tool(tool, ARGS),
                "no deflate": lambda: plain.hub.call_tool(tool, ARGS),
                "forwarder": lambda: lean.hub.call_tool(tool, ARGS),
            }

            def measure(fn: Callable[[], Awaitable[object]]) -> Callable[[int], Awaitable[dict[str, float]]]:
                async def row(rnd: int) -> dict[str, float]:
                    return latency_metrics(await timed(calls, fn, 200 if rnd == 0 else 20))

                return row

            results = await run_async(
                {k: measure(fn) for k, fn in calls_of.items()}, rounds, verbose=ns.verbose
            )
            section = Section(
                name="agents",
                title="A call through a dial-in agent against the same call made locally",
                command=f"python -m bench.agents --calls {calls} --rounds {rounds}",
                rounds=rounds,
                rows=list(calls_of),
                columns=[Column("median_ms", "median", unit=" ms"), Column("p99_ms", "p99", unit=" ms")],
                vs={"local": "floor", "agent": "local", "no deflate": "local", "forwarder": "local"},
                vs_header="ratio (per round)",
                labels={
                    "floor": "floor: hand-written client ↔ hand-written stdio server",
                    "local": "local: `Hub.call_tool` → stdio server",
                    "agent": "through `patchbay agent` (hub → WebSocket → agent → stdio)",
                    "no deflate": "the same, permessage-deflate off",
                    "forwarder": "through a hand-written WebSocket forwarder (the floor of the design)",
                },
                params={"calls": calls},
                results=results,
            )
            vs_fw = results.ratio("agent", "forwarder", "median_ms")
            section.goal(
                "patchbay agent / hand-written forwarder", vs_fw.median, f"≤ {GOAL}", vs_fw.median <= GOAL
            )
            extra = results.stat("agent", "median_ms").median - results.stat("local", "median_ms").median
            section.notes.append(f"agent - local: {extra * 1000:.0f} µs per call (medians)")
            deflate = (
                results.stat("agent", "median_ms").median - results.stat("no deflate", "median_ms").median
            )
            section.notes.append(f"permessage-deflate costs {deflate * 1000:.0f} µs per call (medians)")
            finish([section], ns.json)
            if ns.profile:
                await profile(remote, workdir, "patchbay agent")
                await profile(lean, workdir, "forwarder")
                keep = ROOT / "bench" / "results"
                keep.mkdir(exist_ok=True)
                for p in workdir.glob("agents-profile-*.txt"):
                    shutil.copy(p, keep / p.name)
                print(f"\n  collapsed stacks: {keep}/agents-profile-*.txt")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--forwarder"]:
        asyncio.run(forwarder(sys.argv[2], sys.argv[3]))
        sys.exit(0)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--calls", type=int, default=300, help="sequential calls per row and round (default 300, at most 500)"
    )
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument("--profile", action="store_true", help="profile with py-spy even if the goal is met")
    parser.add_argument("--json", help="write the results here (bench/all.py does)")
    parser.add_argument("--verbose", action="store_true", help="print every round")
    ns = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(ns))
