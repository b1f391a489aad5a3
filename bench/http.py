"""Benchmark of ``tools/call`` through patchbay's ``/mcp``, against mcp-proxy and a bare ASGI app.

The load generator is ``wrk`` (C, epoll) with bench/wrk_mcp.lua: every request has its own JSON-RPC id,
every response is checked (non-200 status, JSON-RPC ``error``, ``"isError": true``, or no echoed result
count as errors; JSON and SSE bodies alike). All rows run in the same run, on the same machine, against the
same hand-written stdio server (bench/floor_server.py). The rows are interleaved in rounds (bench/rounds.py:
every row at 1 connection, then at 16, …, the row order rotated each round); each cell shows the median of
its round values, and ratios against the bare ASGI app and mcp-proxy are computed per round (the machine is
shared and noisy; absolute numbers move between runs, ratios much less).

Rows:
- bare ASGI: bench/bare_asgi.py on uvicorn with patchbay's uvicorn settings, answering the same JSON with no
  MCP and no upstream: the HTTP floor.
- mcp-proxy: ``mcp-proxy==0.13.0`` (bench/.venv-peers) fronting the floor server over stdio.
- patchbay (legacy): ``patchbay serve --no-reload`` with the floor server as ``floor``, handshake era: one
  session opened (``initialize`` + ``notifications/initialized``) before wrk starts, its ``Mcp-Session-Id``
  on every request, ``MCP-Protocol-Version: 2025-11-25``. mcp-proxy is driven the same way.
- patchbay (modern): the same process, 2026-07-28 era: no session; ``params._meta`` carries the protocol
  version and client capabilities, and ``Mcp-Method`` / ``Mcp-Name`` headers match the body.

Run with ``make bench-http`` or ``python -m bench.http [--duration 5] [--connections 1,16,64]`` from the
repository root (as a module: run as a script, this file would shadow the standard library's ``http``).
``--profile`` then samples patchbay with py-spy under load and prints where its CPU time goes.
``--baseline OTHER/src`` adds the patchbay rows once more, served from another checkout (``git worktree
add`` or ``git archive``), in the same rounds: a change measured before and after in one run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import psutil

from bench.profiling import FRAME, short
from bench.rounds import Column, RatioColumn, Rounds, Section, finish, order

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS = BENCH / ".venv-peers" / "bin"
LUA = BENCH / "wrk_mcp.lua"
RESULTS = BENCH / "results"
FLOOR = [sys.executable, str(BENCH / "floor_server.py")]
TEXT = "patchbay-bench"
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
MCP_PROXY = "mcp-proxy"
BARE = "bare ASGI"
LEGACY_ROW = "patchbay (legacy)"
MODERN_ROW = "patchbay (modern)"
BASELINE = " (baseline)"  # the suffix of the rows served from --baseline's tree
# issue 12: p50 at 1 connection ≤ 1.6x the bare app; req/s at 64 ≥ 0.6x the bare app and ≥ 3.5x mcp-proxy
GOAL_P50_VS_BARE = 1.6
GOAL_RPS_VS_BARE = 0.6
GOAL_RPS_VS_PROXY = 3.5


# --- servers -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def cpu_seconds(self) -> float:
        """CPU time of the server and every process under it (the upstream stdio server)."""
        total = 0.0
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own process group: it and its upstream
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start(
    name: str, cmd: list[str], port: int, path: str, logdir: Path, env: dict[str, str] | None = None
) -> Server:
    log = logdir / f"{name.replace(' ', '_').replace('/', '-').replace('(', '').replace(')', '')}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, proc, f"http://127.0.0.1:{port}{path}", log)


def wait_until(server: Server, ready: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited ({server.proc.returncode}):\n{server.log.read_text()}")
        try:
            if ready():
                return
        except httpx2.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} not ready after {timeout} s ({last}):\n{server.log.read_text()}")


# --- MCP over HTTP, by hand (the handshake and a check that the endpoint answers what wrk will ask) ------


def body_messages(response: httpx2.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages in a response body: plain JSON, or the ``data:`` lines of an SSE stream."""
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return [
            json.loads(line[5:])
            for line in text.splitlines()
            if line.startswith("data:") and line[5:].strip()
        ]
    return [json.loads(text)] if text.strip() else []


@dataclass
class Target:
    """One row: a server and how to talk to it."""

    label: str
    server: Server
    tool: str
    protocol: str = LEGACY
    session: str | None = None
    modern: bool = False
    results: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        h = {**ACCEPT, "MCP-Protocol-Version": self.protocol}
        if self.session:
            h["Mcp-Session-Id"] = self.session
        if self.modern:
            h["Mcp-Method"] = "tools/call"
            h["Mcp-Name"] = self.tool
        return h

    def call_body(self, request_id: int) -> dict[str, Any]:
        params: dict[str, Any] = {"name": self.tool, "arguments": {"text": TEXT}}
        if self.modern:
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": self.protocol,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
            }
        return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}

    def open_session(self, client: httpx2.Client) -> None:
        """The handshake era: ``initialize``, then ``notifications/initialized`` on the new session."""
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": {"name": "bench-http", "version": "1"},
            },
        }
        r = client.post(self.server.url, json=init, headers=ACCEPT)
        r.raise_for_status()
        (reply,) = [m for m in body_messages(r) if m.get("id") == 0]
        if "result" not in reply:
            raise RuntimeError(f"{self.label}: initialize failed: {reply}")
        self.session = r.headers.get("mcp-session-id")
        self.protocol = reply["result"]["protocolVersion"]
        r = client.post(
            self.server.url,
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
            headers=self.headers(),
        )
        if r.status_code not in (200, 202):
            raise RuntimeError(f"{self.label}: notifications/initialized answered {r.status_code}: {r.text}")

    def check(self, client: httpx2.Client, calls: int = 200) -> None:
        """Warm up with the very request wrk sends, and fail loudly if it is not answered as expected."""
        for i in range(calls):
            r = client.post(self.server.url, json=self.call_body(-1 - i), headers=self.headers())
            replies = [m for m in body_messages(r) if m.get("id") == -1 - i]
            ok = (
                r.status_code == 200
                and len(replies) == 1
                and "result" in replies[0]
                and not replies[0]["result"].get("isError")
                and replies[0]["result"]["content"][0]["text"] == TEXT
            )
            if not ok:
                raise RuntimeError(f"{self.label}: tools/call answered {r.status_code}: {r.text[:500]}")


# --- wrk -------------------------------------------------------------------------------------------------


def wrk(target: Target, connections: int, duration: float, threads: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_TOOL": target.tool,
        "BENCH_TEXT": TEXT,
        "BENCH_PROTOCOL": target.protocol,
        "BENCH_SESSION": target.session or "",
        "BENCH_MODERN": "1" if target.modern else "0",
    }
    cmd = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        target.server.url,
    ]
    cpu0 = target.server.cpu_seconds()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = target.server.cpu_seconds()
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    r: dict[str, Any] = json.loads(line[8:])
    seconds = r["duration_us"] / 1e6
    r["rps"] = r["requests"] / seconds
    socket_errors = r["socket_connect"] + r["socket_read"] + r["socket_write"] + r["socket_timeout"]
    r["err"] = r["errors"] + socket_errors
    r["server_cpu_us_per_call"] = (cpu1 - cpu0) / max(r["requests"], 1) * 1e6
    wrk_cpu = (kids1.ru_utime - kids0.ru_utime) + (kids1.ru_stime - kids0.ru_stime)
    r["wrk_cpu_pct"] = wrk_cpu / wall * 100
    r["connections"] = connections
    return r


# --- the run ---------------------------------------------------------------------------------------------


def labelled(label: str, stack: str, stacks: list[str]) -> str:
    """A row's label: with several stacks (``--stacks``), the stack is part of it."""
    return label if len(stacks) == 1 else f"{label} {stack}"


@contextlib.contextmanager
def servers(
    rows: list[str], logdir: Path, stacks: list[str], baseline: str | None = None
) -> Iterator[list[Target]]:
    """Every row's server; bare ASGI and patchbay once per stack (``http/loop``, e.g. ``h11/asyncio``);
    with ``baseline`` (another checkout's ``src``), the patchbay rows once more from that tree."""
    started: list[Server] = []
    try:
        targets: list[Target] = []
        for stack in stacks if "bare" in rows else ():
            http, loop = stack.split("/")
            port = free_port()
            label = labelled(BARE, stack, stacks)
            cmd = [sys.executable, "-m", "bench.bare_asgi", str(port), http, loop]
            bare = start(label, cmd, port, "/mcp", logdir)
            started.append(bare)
            targets.append(Target(label, bare, "echo"))
        if "mcp-proxy" in rows:
            exe = PEERS / "mcp-proxy"
            if not exe.exists():
                raise SystemExit(
                    f"{exe} missing: python3 -m venv bench/.venv-peers && "
                    "bench/.venv-peers/bin/pip install -r bench/requirements-peers.txt"
                )
            port = free_port()
            # --log-level WARNING: uvicorn's per-request access log off, as in patchbay (its default is INFO).
            cmd = [
                str(exe),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "WARNING",
                "--",
                *FLOOR,
            ]
            proxy = start(MCP_PROXY, cmd, port, "/mcp", logdir)
            started.append(proxy)
            targets.append(Target(MCP_PROXY, proxy, "echo"))
        trees: list[tuple[str, dict[str, str] | None]] = [("", None)]
        if baseline:
            trees.append((BASELINE, {**os.environ, "PYTHONPATH": str(Path(baseline).resolve())}))
        serving = "patchbay" in rows or "patchbay-modern" in rows
        for (suffix, env), stack in ((t, st) for t in trees for st in stacks) if serving else ():
            http, loop = stack.split("/")
            config = logdir / "patchbay.json"
            config.write_text(json.dumps({"mcpServers": {"floor": {"command": FLOOR[0], "args": FLOOR[1:]}}}))
            port = free_port()
            exe = Path(sys.executable).parent / "patchbay"
            cmd = [
                str(exe),
                "serve",
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-reload",
                "--http",
                http,
                "--loop",
                loop,
            ]
            hub = start(f"patchbay {stack.replace('/', '-')}{suffix}", cmd, port, "/mcp", logdir, env)
            started.append(hub)
            if "patchbay" in rows:
                targets.append(Target(labelled(LEGACY_ROW, stack, stacks) + suffix, hub, "floor__echo"))
            if "patchbay-modern" in rows:
                label = labelled(MODERN_ROW, stack, stacks) + suffix
                targets.append(Target(label, hub, "floor__echo", protocol=MODERN, modern=True))

        with httpx2.Client(timeout=10) as client:
            for t in targets:
                if t.label.startswith("patchbay"):
                    base = t.server.url.removesuffix("/mcp")
                    wait_until(t.server, lambda b=base: client.get(f"{b}/readyz").status_code == 200)
                else:
                    wait_until(
                        t.server, lambda s=t.server: client.post(s.url, json={}, headers=ACCEPT) and True
                    )
                if not t.label.startswith(BARE) and not t.modern:
                    t.open_session(client)
                t.check(client)
        yield targets
    finally:
        for s in started:
            s.stop()


def section(
    targets: list[Target], results: Rounds, conns: list[int], ns: argparse.Namespace, stacks: list[str]
) -> Section:
    """Per row, medians of the round values; ratios to the bare app and mcp-proxy computed per round.

    With several stacks, "bare ASGI" is the bare app on the first stack (the ratio columns), and each
    row's own stack's bare app is the ``vs`` column (p50 at the lowest connection count)."""
    lo, hi = conns[0], conns[-1]
    labels = [t.label for t in targets]
    bare = labelled(BARE, stacks[0], stacks)
    columns = [
        Column(f"p50_ms@{lo}", f"p50 @{lo}", unit=" ms", fmt="{:.2f}"),
        Column(f"p99_ms@{lo}", f"p99 @{lo}", unit=" ms", fmt="{:.2f}"),
        *(Column(f"rps@{c}", f"req/s @{c}", fmt="{:.0f}") for c in conns[1:] or conns),
        Column(f"cpu_us@{hi}", f"server CPU µs/call @{hi}", fmt="{:.0f}"),
    ]
    ratios = []
    if bare in labels:
        ratios += [
            RatioColumn(f"p50_ms@{lo}", bare, f"p50 @{lo} vs {bare}"),
            RatioColumn(f"rps@{hi}", bare, f"req/s @{hi} vs {bare}"),
        ]
    if MCP_PROXY in labels:
        ratios.append(RatioColumn(f"rps@{hi}", MCP_PROXY, f"req/s @{hi} vs mcp-proxy"))
    sec = Section(
        name="http",
        title="tools/call through /mcp under wrk",
        command=(
            f"python -m bench.http --duration {ns.duration:g} --rounds {ns.rounds} "
            f"--connections {ns.connections} --stacks {ns.stacks}"
            + (" --baseline OTHER/src" if ns.baseline else "")
        ),
        rounds=ns.rounds,
        rows=labels,
        columns=columns,
        ratios=ratios,
        params={"duration": ns.duration, "connections": conns, "threads": ns.threads, "stacks": stacks},
        results=results,
    )
    if len(stacks) > 1:  # each row against the bare app on its own stack
        for t in targets:
            stack = t.label.removesuffix(BASELINE).rsplit(" ", 1)[-1]
            own = labelled(BARE, stack, stacks)
            if stack in stacks and own in labels and t.label != own:
                sec.vs[t.label] = own
        sec.vs_header = f"p50 @{lo} vs bare ASGI on the same stack"
        sec.notes.append(
            "stacks are uvicorn's HTTP implementation / event loop (`patchbay serve --http/--loop`); "
            "mcp-proxy runs on its own uvicorn defaults (h11/asyncio: its venv has neither httptools "
            "nor uvloop)"
        )
    for t in targets:
        errors = sum(sum(v.values()) for k, v in results.values[t.label].items() if k.startswith("err@"))
        requests = sum(
            sum(v.values()) for k, v in results.values[t.label].items() if k.startswith("requests@")
        )
        sec.notes.append(f"{t.label}: {errors:.0f} errors in {requests:.0f} requests (every round and cell)")
        if t.label.startswith("patchbay") and not t.label.endswith(BASELINE):
            sec.goal(f"{t.label}: errors", errors, "= 0", errors == 0)
            if bare in labels:
                p50 = results.ratio(t.label, bare, f"p50_ms@{lo}").median
                sec.goal(
                    f"{t.label}: p50 @{lo} / {bare}", p50, f"≤ {GOAL_P50_VS_BARE}", p50 <= GOAL_P50_VS_BARE
                )
                rps = results.ratio(t.label, bare, f"rps@{hi}").median
                sec.goal(
                    f"{t.label}: req/s @{hi} / {bare}",
                    rps,
                    f"≥ {GOAL_RPS_VS_BARE}",
                    rps >= GOAL_RPS_VS_BARE,
                )
            if MCP_PROXY in labels:
                rps = results.ratio(t.label, MCP_PROXY, f"rps@{hi}").median
                sec.goal(
                    f"{t.label}: req/s @{hi} / mcp-proxy",
                    rps,
                    f"≥ {GOAL_RPS_VS_PROXY}",
                    rps >= GOAL_RPS_VS_PROXY,
                )
    for stack in stacks:
        legacy, modern = labelled(LEGACY_ROW, stack, stacks), labelled(MODERN_ROW, stack, stacks)
        if legacy in labels and modern in labels:
            m = results.ratio(modern, legacy, f"p50_ms@{lo}").median
            sec.goal(f"{modern} / {legacy}, p50 @{lo}", m, "≤ 1.0", m <= 1.0)
    return sec


# --- profile ---------------------------------------------------------------------------------------------

CATEGORIES = [
    ("patchbay", "/patchbay/"),
    ("mcp (server)", "/mcp/server/"),
    ("mcp (shared)", "/mcp/shared/"),
    ("mcp_types", "/mcp_types/"),
    ("pydantic", "/pydantic"),
    ("starlette/fastapi", "/starlette/"),
    ("starlette/fastapi", "/fastapi/"),
    ("sse_starlette", "/sse_starlette/"),
    ("uvicorn", "/uvicorn/"),
    ("h11", "/h11/"),
    ("anyio", "/anyio/"),
    ("asyncio", "/asyncio/"),
    ("json", "/json/"),
    ("logging", "/logging/"),
    ("opentelemetry", "/opentelemetry/"),
]
PROFILE_RATE = 250


# Who is responsible for a sample: the innermost frame from one of these (generic libraries such as
# pydantic, anyio and asyncio are charged to whoever called them). First match wins.
EVENT_LOOP = "event loop (asyncio/anyio scheduling, select)"
COMPONENTS = [
    (EVENT_LOOP, "patchbay/cli.py"),  # the root of every stack: asyncio.run(...)
    ("patchbay: server (mcp.py handlers, Guard)", "patchbay/server/"),
    ("patchbay: hub → upstream (stdio)", "patchbay/"),
    ("SDK: session manager", "mcp/server/streamable_http_manager"),
    ("SDK: 2026-07-28 entry (_streamable_http_modern)", "mcp/server/_streamable_http_modern"),
    ("SDK: streamable HTTP transport", "mcp/server/streamable_http"),
    ("SDK: OpenTelemetry middleware", "mcp/server/_otel"),
    ("SDK: OpenTelemetry middleware", "mcp/shared/_otel"),
    ("SDK: dispatcher/runner (mcp/server, mcp/shared)", "mcp/"),
    ("SDK: mcp_types (validate/serialize)", "mcp_types/"),
    ("sse-starlette (SSE response)", "sse_starlette/"),
    ("FastAPI/Starlette (routing, middleware)", "fastapi/"),
    ("FastAPI/Starlette (routing, middleware)", "starlette/"),
    ("uvicorn + h11 (HTTP/1.1)", "uvicorn/"),
    ("uvicorn + h11 (HTTP/1.1)", "h11/"),
]


def _matches(file: str, needle: str) -> bool:
    return f"/{needle}" in file or file.startswith(needle)


# A 2026-07-28 tools/call with arguments makes the SDK list every tool (through the whole dispatch pipeline)
# to validate Mcp-Param-* headers, unless the server gives it get_tool_input_schema: charged separately.
PARAM_CHECK = "SDK: tools/list run per tools/call (Mcp-Param check)"


def component(frames: list[str], files: list[str]) -> str:
    if any(f.startswith("_tool_input_schema ") for f in frames):
        return PARAM_CHECK
    for file in reversed(files):
        for name, needle in COMPONENTS:
            if _matches(file, needle):
                return name
    return EVENT_LOOP


def category(file: str) -> str:
    """py-spy shortens paths to ``package/module.py``; full paths appear for some frames."""
    for name, needle in CATEGORIES:
        if needle in file or file.startswith(needle[1:]):
            return name
    return "other (stdlib, C)"


def summarize_profile(raw: Path, cpu_us_per_call: float, top: int = 30) -> None:
    """Where patchbay's time goes, from py-spy's raw output: by component, by package, by function.

    Shares are of the samples; µs/call apportions ``cpu_us_per_call`` (the patchbay process's own CPU time
    per call, measured during the profiled run) by those shares.
    """
    by_component: collections.Counter[str] = collections.Counter()
    self_by_cat: collections.Counter[str] = collections.Counter()
    self_by_func: collections.Counter[str] = collections.Counter()
    incl_by_func: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if FRAME.match(f)]
        if any("_do_waitpid" in f for f in frames):
            continue  # asyncio's child-watcher thread, blocked in waitpid(): idle, whatever py-spy thinks
        total += n
        if not frames:
            continue
        files = [m["file"] for m in map(FRAME.match, frames) if m]
        by_component[component(frames, files)] += n
        m = FRAME.match(frames[-1])
        self_by_cat[category(m["file"] if m else "")] += n
        self_by_func[short(frames[-1])] += n
        for f in set(frames):
            incl_by_func[short(f)] += n
    if not total:
        print("  no samples")
        return
    per_call = cpu_us_per_call / total  # µs of CPU per call, per sample
    print(f"  {total} samples; patchbay's own CPU: {cpu_us_per_call:.0f} µs per call")
    print(
        "\n  by component (innermost frame of patchbay, the SDK or the HTTP stack; "
        "libraries charged to their caller):"
    )
    for name, n in by_component.most_common():
        print(f"    {n / total * 100:5.1f}%  {n * per_call:6.0f} µs/call  {name}")
    print("\n  self time by package (leaf frame):")
    for name, n in self_by_cat.most_common():
        print(f"    {n / total * 100:5.1f}%  {name}")
    print(f"\n  top {top} functions by self time:")
    for name, n in self_by_func.most_common(top):
        print(f"    {n / total * 100:5.1f}%  {name}")
    print(f"\n  top {top} functions by inclusive time:")
    for name, n in incl_by_func.most_common(top):
        print(f"    {n / total * 100:5.1f}%  {name}")


def profile(targets: list[Target], connections: int, seconds: float, outdir: Path) -> None:
    spy = PEERS / "py-spy"
    if not spy.exists():
        raise SystemExit(f"{spy} missing: bench/.venv-peers/bin/pip install -r bench/requirements-peers.txt")
    for t in targets:
        if not t.label.startswith("patchbay"):
            continue
        era = "modern" if t.modern else "legacy"
        raw = outdir / f"profile-{era}.txt"
        svg = outdir / f"profile-{era}.svg"
        print(f"\nprofile of {t.label} at {connections} connections, {seconds:g} s (py-spy, on-CPU samples):")
        for fmt, out in (("raw", raw), ("flamegraph", svg)):
            spy_proc = subprocess.Popen(
                # --gil: only samples of a thread holding the GIL, i.e. running Python (not waiting for a
                # CPU on this shared machine, nor blocked in a system call).
                [
                    str(spy),
                    "record",
                    "--pid",
                    str(t.server.proc.pid),
                    "--gil",
                    "--rate",
                    str(PROFILE_RATE),
                    "--duration",
                    f"{seconds + 1:.0f}",
                    "--format",
                    fmt,
                    "-o",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(0.5)
            me = psutil.Process(t.server.proc.pid)
            cpu0 = sum(me.cpu_times()[:2])
            r = wrk(t, connections, seconds, 1)
            cpu_us_per_call = (sum(me.cpu_times()[:2]) - cpu0) / max(r["requests"], 1) * 1e6
            _, err = spy_proc.communicate(timeout=seconds + 30)
            if spy_proc.returncode != 0:
                print(f"  py-spy failed: {err.decode()[-500:]}")
                break
            if fmt == "raw":
                print(
                    f"  under profiling: {r['rps']:.0f} req/s, p50 {r['p50_us'] / 1000:.2f} ms, "
                    f"errors {r['err']}"
                )
                summarize_profile(raw, cpu_us_per_call)
        print(f"\n  collapsed stacks: {raw}\n  flame graph: {svg}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per cell (default 5)")
    parser.add_argument("--connections", default="1,16,64", help="comma-separated (default 1,16,64)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds; medians of the rounds are shown (default 3)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="wrk threads (default 1: the machine has 2 cores)"
    )
    parser.add_argument(
        "--rows",
        default="bare,mcp-proxy,patchbay,patchbay-modern",
        help="comma-separated subset of bare,mcp-proxy,patchbay,patchbay-modern",
    )
    parser.add_argument(
        "--stacks",
        default="auto/auto",
        help="comma-separated HTTP/loop pairs (`patchbay serve --http/--loop`) for bare ASGI and patchbay, "
        "e.g. h11/asyncio,httptools/uvloop (default auto/auto: what `patchbay serve` picks)",
    )
    parser.add_argument(
        "--baseline",
        help="also serve the patchbay rows from another checkout's src (PYTHONPATH=BASELINE), in the same "
        "rounds: before/after in one run",
    )
    parser.add_argument("--json", help="write the results here (default bench/results/http-<time>.json)")
    parser.add_argument("--profile", action="store_true", help="then profile patchbay under load with py-spy")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--profile-connections", type=int, default=64)
    ns = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk (make bench-http installs it)")
    conns = [int(c) for c in ns.connections.split(",")]
    rows = [r.strip() for r in ns.rows.split(",")]
    stacks = [st.strip() for st in ns.stacks.split(",") if st.strip()]
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with (
        tempfile.TemporaryDirectory(prefix="bench-http-") as tmp,
        servers(rows, Path(tmp), stacks, ns.baseline) as targets,
    ):
        print(
            f"patchbay HTTP benchmark: {', '.join(t.label for t in targets)}; "
            f"connections {ns.connections}; {ns.duration:g} s per cell; {ns.rounds} rounds; "
            f"wrk -t{ns.threads}"
        )
        results = Rounds()
        for rnd in range(ns.rounds):
            for c in conns:  # every row at one connection count, then the next; the row order rotates
                for t in order(targets, rnd):
                    r = wrk(t, c, ns.duration, ns.threads)
                    results.add(
                        t.label,
                        rnd,
                        {
                            f"p50_ms@{c}": r["p50_us"] / 1000,
                            f"p99_ms@{c}": r["p99_us"] / 1000,
                            f"rps@{c}": r["rps"],
                            f"err@{c}": r["err"],
                            f"requests@{c}": r["requests"],
                            f"cpu_us@{c}": r["server_cpu_us_per_call"],
                            f"wrk_cpu_pct@{c}": r["wrk_cpu_pct"],
                        },
                    )
                    print(
                        f"  round {rnd + 1} {t.label:<20} c={c:<3} {r['rps']:7.0f} req/s  "
                        f"p50 {r['p50_us'] / 1000:6.2f} ms  p99 {r['p99_us'] / 1000:6.2f} ms  err {r['err']}",
                        flush=True,
                    )
        out = ns.json or str(RESULTS / f"http-{stamp}.json")
        finish([section(targets, results, conns, ns, stacks)], out)
        print(f"results: {out}")
        if ns.profile:
            profile(targets, ns.profile_connections, ns.profile_seconds, RESULTS)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
