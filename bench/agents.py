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

And the throughput of 64 concurrent callers (``--concurrency``) making the same call, locally and through
``patchbay agent`` (the agent's default ``maxInFlight`` is 64): the goal is ≥ 70% of the local calls per
second. With ``--baseline SRC`` (e.g. ``--baseline /work/main/src``), a second ``patchbay agent`` run from
the source tree SRC dials in too, and its rows (sequential and concurrent) are measured in the same rounds:
a before/after of the agent process on one machine at one time (the hub is this tree's in both).

Every row also reports the CPU time per call of the hub (this process) and of the agent process (all its
threads, from the kernel's scheduler accounts in /proc), steadier than wall time on a shared machine.

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
from patchbay.transports.deflate import hub_ws_protocol

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-agent-token-0123456789"
AGENT = "bench"
GOAL = 1.15  # a call through patchbay agent / through the hand-written forwarder (issue 12)
GOAL_CONCURRENT = 0.70  # 64 concurrent calls through one agent / the same locally, calls per second
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

    def __init__(
        self, workdir: Path, kind: str = "patchbay", *, deflate: bool = True, src: str | None = None
    ) -> None:
        self.kind = kind  # "patchbay" (patchbay agent) or "forwarder" (the hand-written one below)
        self.config: dict[str, object] = {}  # more top-level keys of the agent's config (experiments)
        self.src = src  # run the agent from this source tree (--baseline) instead of this one's
        suffix = "-baseline" if src else ""
        self.workdir = workdir / f"agent-{kind}-{'deflate' if deflate else 'plain'}{suffix}"
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
                ws=hub_ws_protocol(),  # websockets-sansio, short messages uncompressed
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
        config.write_text(json.dumps({"mcpServers": {"floor": FLOOR_SPEC}, **self.config}))
        self.log = self.workdir / "agent.log"
        url = f"ws://127.0.0.1:{self.port}/agents"
        argv = (
            ["-m", "patchbay", "agent", "--hub", url, "--token", TOKEN, "--config", str(config)]
            if self.kind == "patchbay"
            else ["-m", "bench.agents", "--forwarder", url, TOKEN]
        )
        env = None
        if self.src is not None:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([self.src, str(ROOT)])}
        with self.log.open("wb") as out:
            self.agent = subprocess.Popen(  # noqa: ASYNC220 (once, before anything is timed)
                [sys.executable, *argv],
                cwd=ROOT,
                env=env,
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


async def profile(
    workdir: Path,
    what: str,
    tag: str,
    call: Callable[[], Awaitable[object]],
    targets: dict[str, int],
    concurrency: int = 1,
) -> None:
    """Sample ``targets`` (label → pid) with py-spy while ``call`` runs: paced and sequential, or
    ``concurrency`` callers as fast as they go; print each process's on-CPU time per call."""
    spy = py_spy()
    if spy is None:
        print("\nprofile: py-spy not found (pip install py-spy, or make bench-http's bench/.venv-peers)")
        return
    seconds = 8.0
    procs = {}
    for label, pid in targets.items():
        side = "hub" if label == "hub" else "agent"
        out = workdir / f"agents-profile-{tag}-{side}.txt"  # e.g. agents-profile-via-agent-hub.txt
        procs[label] = (out, subprocess.Popen(  # noqa: ASYNC220
            [spy, "record", "--pid", str(pid), "--gil", "--rate", str(PROFILE_RATE), "--duration",
             f"{seconds:.0f}", "--format", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        ))  # fmt: skip
    await asyncio.sleep(1.0)  # py-spy attaches
    done = 0
    started = time.monotonic()
    if concurrency == 1:
        while (now := time.monotonic()) - started < seconds - 2:
            # paced: the figures per call are of a steady rate, comparable from run to run
            if (wait := started + done / PROFILE_CALL_RATE - now) > 0:
                await asyncio.sleep(wait)
            await call()
            done += 1
    else:

        async def caller() -> None:
            nonlocal done
            while time.monotonic() - started < seconds - 2:
                await call()
                done += 1

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    how = "sequential" if concurrency == 1 else f"{concurrency} concurrent callers"
    rate = f"py-spy --gil {PROFILE_RATE} Hz"
    print(f"\nprofile of calls {what}: {done} calls in {seconds - 2:g} s ({how}), {rate}")
    for label, (out, proc) in procs.items():
        _, err = await asyncio.to_thread(proc.communicate)
        if proc.returncode != 0:
            print(f"  {label}: py-spy failed: {err.decode()[-300:]}")
            continue
        summarize(f"{label} process (pid {targets[label]})", out, done)


def cpu_seconds(pid: int) -> float:
    """On-CPU time of every thread of process ``pid`` so far (the scheduler's own account, in ns)."""
    total = 0.0
    for sched in Path(f"/proc/{pid}/task").glob("*/sched"):
        with contextlib.suppress(OSError):
            for line in sched.read_text().splitlines():
                if line.startswith("se.sum_exec_runtime"):
                    total += float(line.rpartition(":")[2]) / 1000  # ms
                    break
    return total


async def throughput(
    fn: Callable[[], Awaitable[object]], concurrency: int, per_caller: int
) -> dict[str, float]:
    """``concurrency`` callers, each making ``per_caller`` calls one after another: calls a second."""

    async def caller() -> None:
        for _ in range(per_caller):
            await fn()

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return {"calls_per_s": concurrency * per_caller / seconds, "seconds": seconds}


async def main(ns: argparse.Namespace) -> None:
    # at most 500 calls per row and round: a faster agent would otherwise trip the hub's flood limit
    calls, rounds, conc = min(ns.calls, MAX_PER_ROUND), ns.rounds, ns.concurrency
    per_caller = max(1, ns.concurrent_calls // conc)
    print(
        f"patchbay agent benchmark: {rounds} interleaved rounds of {calls} sequential echo calls per row, "
        f"and of {conc} concurrent callers x {per_caller} calls\n"
    )
    with tempfile.TemporaryDirectory(prefix="patchbay-bench-agents-") as tmp:
        workdir = Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            floor = await stack.enter_async_context(FloorSession(FLOOR_SERVER))
            local = await stack.enter_async_context(Hub.from_dict({"mcpServers": {"floor": FLOOR_SPEC}}))
            remote = await stack.enter_async_context(AgentHub(workdir))
            plain = await stack.enter_async_context(AgentHub(workdir, deflate=False))
            lean = await stack.enter_async_context(AgentHub(workdir, "forwarder"))
            base = None
            if ns.baseline:
                base = await stack.enter_async_context(AgentHub(workdir, src=ns.baseline))
            tool = f"{AGENT}__floor__echo"
            calls_of: dict[str, Callable[[], Awaitable[object]]] = {
                "floor": floor.call,
                "local": lambda: local.call_tool("floor__echo", ARGS),
                "agent": lambda: remote.hub.call_tool(tool, ARGS),
                "no deflate": lambda: plain.hub.call_tool(tool, ARGS),
                "forwarder": lambda: lean.hub.call_tool(tool, ARGS),
            }
            concurrent_of: dict[str, Callable[[], Awaitable[object]]] = {
                "local x64": calls_of["local"],
                "agent x64": calls_of["agent"],
            }
            if base is not None:
                calls_of["baseline"] = lambda: base.hub.call_tool(tool, ARGS)
                concurrent_of["baseline x64"] = calls_of["baseline"]

            # the agent process whose CPU a row also reports (the hub's is this process's)
            agent_of = {"agent": remote, "no deflate": plain, "forwarder": lean, "baseline": base}

            def measure(
                fn: Callable[[], Awaitable[object]], agent: AgentHub | None
            ) -> Callable[[int], Awaitable[dict[str, float]]]:
                async def row(rnd: int) -> dict[str, float]:
                    warmup = 200 if rnd == 0 else 20
                    pid = agent.agent.pid if agent is not None and agent.agent is not None else None
                    hub0, agent0 = time.process_time(), cpu_seconds(pid) if pid else 0.0
                    metrics = latency_metrics(await timed(calls, fn, warmup))
                    n = calls + warmup
                    metrics["hub_cpu_us"] = (time.process_time() - hub0) / n * 1e6
                    if pid:
                        metrics["agent_cpu_us"] = (cpu_seconds(pid) - agent0) / n * 1e6
                    return metrics

                return row

            def measure_concurrent(
                fn: Callable[[], Awaitable[object]], agent: AgentHub | None
            ) -> Callable[[int], Awaitable[dict[str, float]]]:
                async def row(rnd: int) -> dict[str, float]:
                    if rnd == 0:
                        await throughput(fn, conc, 5)  # warm-up
                    pid = agent.agent.pid if agent is not None and agent.agent is not None else None
                    hub0, agent0 = time.process_time(), cpu_seconds(pid) if pid else 0.0
                    metrics = await throughput(fn, conc, per_caller)
                    n = conc * per_caller
                    metrics["hub_cpu_us"] = (time.process_time() - hub0) / n * 1e6
                    if pid:
                        metrics["agent_cpu_us"] = (cpu_seconds(pid) - agent0) / n * 1e6
                    return metrics

                return row

            rows = {k: measure(fn, agent_of.get(k)) for k, fn in calls_of.items()}
            agent_of.update({"agent x64": remote, "baseline x64": base})
            rows.update({k: measure_concurrent(fn, agent_of.get(k)) for k, fn in concurrent_of.items()})
            results = await run_async(rows, rounds, verbose=ns.verbose)
            command = (
                f"python -m bench.agents --calls {calls} --rounds {rounds} --concurrency {conc} "
                f"--concurrent-calls {conc * per_caller}"
            )
            vs = {"local": "floor", "agent": "local", "no deflate": "local", "forwarder": "local"}
            labels = {
                "floor": "floor: hand-written client ↔ hand-written stdio server",
                "local": "local: `Hub.call_tool` → stdio server",
                "agent": "through `patchbay agent` (hub → WebSocket → agent → stdio)",
                "no deflate": "the same, permessage-deflate off",
                "forwarder": "through a hand-written WebSocket forwarder (the floor of the design)",
            }
            if base is not None:
                vs["baseline"] = "agent"
                labels["baseline"] = f"through `patchbay agent` run from {ns.baseline} (baseline)"
            section = Section(
                name="agents",
                title="A call through a dial-in agent against the same call made locally",
                command=command,
                rounds=rounds,
                rows=list(calls_of),
                columns=[
                    Column("median_ms", "median", unit=" ms"),
                    Column("p99_ms", "p99", unit=" ms"),
                    Column("hub_cpu_us", "hub CPU/call", fmt="{:.0f}", unit=" µs"),
                    Column("agent_cpu_us", "agent CPU/call", fmt="{:.0f}", unit=" µs"),
                ],
                vs=vs,
                vs_header="ratio (per round)",
                labels=labels,
                params={"calls": calls},
                results=results,
            )
            vs_fw = results.ratio("agent", "forwarder", "median_ms")
            section.goal(
                "patchbay agent / hand-written forwarder", vs_fw.median, f"≤ {GOAL}", vs_fw.median <= GOAL
            )
            if base is not None:
                vs_fw = results.ratio("baseline", "forwarder", "median_ms")
                section.notes.append(f"baseline agent / hand-written forwarder: {vs_fw.median:.2f}")
            extra = results.stat("agent", "median_ms").median - results.stat("local", "median_ms").median
            section.notes.append(f"agent - local: {extra * 1000:.0f} µs per call (medians)")
            deflate = (
                results.stat("agent", "median_ms").median - results.stat("no deflate", "median_ms").median
            )
            section.notes.append(f"permessage-deflate costs {deflate * 1000:.0f} µs per call (medians)")
            concurrent = Section(
                name="agents-concurrent",
                title=f"{conc} concurrent calls through one dial-in agent against the same locally",
                command=command,
                rounds=rounds,
                rows=list(concurrent_of),
                columns=[
                    Column("calls_per_s", "calls/s", fmt="{:.0f}"),
                    Column("hub_cpu_us", "hub CPU/call", fmt="{:.0f}", unit=" µs"),
                    Column("agent_cpu_us", "agent CPU/call", fmt="{:.0f}", unit=" µs"),
                ],
                vs={k: "local x64" for k in concurrent_of if k != "local x64"},
                vs_header="ratio (per round)",
                labels={
                    "local x64": f"local: {conc} callers, `Hub.call_tool` → stdio server",
                    "agent x64": f"through `patchbay agent`: {conc} callers",
                    "baseline x64": f"through `patchbay agent` run from {ns.baseline}: {conc} callers",
                },
                params={"concurrency": conc, "calls": conc * per_caller},
                results=results,
            )
            vs_local = results.ratio("agent x64", "local x64", "calls_per_s")
            concurrent.goal(
                f"{conc} concurrent calls through patchbay agent / locally (calls/s)",
                vs_local.median,
                f"≥ {GOAL_CONCURRENT}",
                vs_local.median >= GOAL_CONCURRENT,
            )
            finish([section, concurrent], ns.json)
            if ns.profile:
                hub = os.getpid()
                assert remote.agent is not None and lean.agent is not None
                agent_pids = {"hub": hub, "patchbay agent": remote.agent.pid}
                via = "through the patchbay agent"
                await profile(workdir, via, "via-agent", calls_of["agent"], agent_pids)
                await profile(
                    workdir, "through the forwarder", "via-forwarder", calls_of["forwarder"],
                    {"hub": hub, "forwarder": lean.agent.pid},
                )  # fmt: skip
                await profile(workdir, via, "via-agent-x64", calls_of["agent"], agent_pids, conc)
                await profile(workdir, "made locally", "local-x64", calls_of["local"], {"hub": hub}, conc)
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
    parser.add_argument(
        "--concurrency", type=int, default=64, help="concurrent callers of the throughput rows (default 64)"
    )
    parser.add_argument(
        "--concurrent-calls", type=int, default=3200, help="calls per throughput row and round (default 3200)"
    )
    parser.add_argument(
        "--baseline", metavar="SRC", help="also run a patchbay agent from this source tree (before/after)"
    )
    parser.add_argument("--profile", action="store_true", help="profile with py-spy even if the goal is met")
    parser.add_argument("--json", help="write the results here (bench/all.py does)")
    parser.add_argument("--verbose", action="store_true", help="print every round")
    ns = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(ns))
