"""Many concurrent ``/mcp`` sessions: memory per session, and a call's latency beside them.

Why: a hub in front of a team's clients holds a handshake-era session per client (the 2026-07-28 era has
none). Two real ``patchbay serve`` processes in front of the floor server (bench/floor_server.py): one with
a single session open, one with ``--sessions`` (default 1000) sessions opened by ``initialize`` +
``notifications/initialized``, and with ``--streams`` also each session's GET stream (what the SDK's
``ClientSession`` opens, for notifications). Reported:

- memory per session: the RSS of the second process after opening the sessions, less its RSS before, over
  the number of sessions (goal ≤ 20 KiB);
- a ``tools/call`` on one session of each process, in interleaved rounds: p50 and p99 with the sessions open
  beside it, against the process with one session (goal: within 10%).

Run with ``python -m bench.sessions [--sessions N] [--streams] [--rounds N] [--calls N]``
(``make bench-all`` runs it). ``--where N`` instead serves the hub in this process under ``tracemalloc``,
opens N sessions from a client process, and says who holds the memory they added (by the innermost frame
of a known package in each allocation's traceback); with ``--streams`` their GET streams are held open
too, and ``--top N`` lists the N source lines that allocated most.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import tempfile
import time
from asyncio.subprocess import PIPE
from collections.abc import Iterator
from pathlib import Path

import httpx2
import psutil

from bench.http import ACCEPT, LEGACY, Server, free_port, start, wait_until
from bench.rounds import Column, Section, finish, latency_metrics, run_async

ROOT = Path(__file__).resolve().parent.parent
FLOOR = [sys.executable, str(ROOT / "bench" / "floor_server.py")]
GOAL_KIB = 20.0
GOAL_RATIO = 1.10


@contextlib.contextmanager
def hubs(logdir: Path) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    config = logdir / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"floor": {"command": FLOOR[0], "args": FLOOR[1:]}}}))
    try:
        for name in ("one", "many"):
            port = free_port()
            exe = Path(sys.executable).parent / "patchbay"
            cmd = [str(exe), "serve", "--config", str(config), "--port", str(port), "--no-reload"]
            started[name] = start(f"patchbay {name}", cmd, port, "/mcp", logdir)
        with httpx2.Client(timeout=30) as client:
            for server in started.values():
                base = server.url.removesuffix("/mcp")
                wait_until(server, lambda b=base: client.get(f"{b}/readyz").status_code == 200)
        yield started
    finally:
        for server in started.values():
            server.stop()


async def open_session(http: httpx2.AsyncClient, url: str) -> dict[str, str]:
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "bench-sessions", "version": "1"},
        },
    }
    r = await http.post(url, json=init, headers=ACCEPT)
    r.raise_for_status()
    headers = {**ACCEPT, "Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": LEGACY}
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    (await http.post(url, json=note, headers=headers)).raise_for_status()
    return headers


async def open_stream(url: str, session: str) -> asyncio.StreamWriter:
    """The session's GET stream on a connection of its own, left open (read by nobody: it stays quiet)."""
    host, _, rest = url.removeprefix("http://").partition("/")
    name, _, port = host.partition(":")
    reader, writer = await asyncio.open_connection(name, int(port))
    writer.write(
        f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
        f"Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: {LEGACY}\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"GET stream refused: {status!r}")
    return writer


def rss(server: Server) -> int:
    return int(psutil.Process(server.proc.pid).memory_info().rss)


async def settle(server: Server) -> int:
    """RSS once it stops moving (the hub finished whatever the last requests started)."""
    last = rss(server)
    for _ in range(50):
        await asyncio.sleep(0.2)
        now = rss(server)
        if abs(now - last) < 64 * 1024:
            return now
        last = now
    return last


class Caller:
    def __init__(self, http: httpx2.AsyncClient, url: str, headers: dict[str, str]) -> None:
        self.http, self.url, self.headers, self.ids = http, url, headers, 0

    async def call(self) -> None:
        self.ids += 1
        body = {
            "jsonrpc": "2.0",
            "id": self.ids,
            "method": "tools/call",
            "params": {"name": "floor__echo", "arguments": {"text": "hi"}},
        }
        r = await self.http.post(self.url, json=body, headers=self.headers)
        if r.status_code != 200 or "result" not in r.json():
            raise RuntimeError(f"tools/call answered {r.status_code}: {r.text[:200]}")

    async def timed(self, n: int, warmup: int) -> dict[str, float]:
        for _ in range(warmup):
            await self.call()
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            await self.call()
            lat.append(time.perf_counter() - t)
        return latency_metrics(lat)


# The client of --where: N handshake-era sessions, one after another, from a process of its own; with
# "streams", each session's GET stream too, held open until stdin closes (the parent measures meanwhile).
CLIENT = """
import socket, sys, httpx2
url, n, streams = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "streams"
host, _, rest = url.removeprefix("http://").partition("/")
accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "where", "version": "1"}}}
held = []
with httpx2.Client(timeout=30) as c:
    for _ in range(n):
        r = c.post(url, json=init, headers=accept)
        h = {**accept, "Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
        done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        c.post(url, json=done, headers=h).raise_for_status()
        if streams:
            s = socket.create_connection((host.partition(":")[0], int(host.partition(":")[2])))
            sid = h["Mcp-Session-Id"]
            s.sendall((f"GET /{rest} HTTP/1.1\\r\\nHost: {host}\\r\\nAccept: text/event-stream\\r\\n"
                       f"Mcp-Session-Id: {sid}\\r\\nMCP-Protocol-Version: 2025-11-25\\r\\n\\r\\n").encode())
            if b" 200 " not in s.recv(4096).split(b"\\r\\n")[0]:
                sys.exit("GET stream refused")
            held.append(s)
print("ready", flush=True)
sys.stdin.read()
"""
OWNERS = (
    ("/patchbay/", "patchbay"),
    ("site-packages/mcp/", "MCP SDK"),
    ("site-packages/mcp_types", "MCP SDK"),
    ("site-packages/uvicorn", "uvicorn"),
    ("site-packages/starlette", "starlette/fastapi"),
    ("site-packages/fastapi", "starlette/fastapi"),
)


async def where(n: int, streams: bool = False, top: int = 0) -> None:
    import gc
    import tracemalloc

    import uvicorn

    from patchbay import Hub
    from patchbay.server.app import ServeSettings, create_app, uvicorn_config

    hub = Hub.from_dict({"mcpServers": {}})
    settings = ServeSettings(port=0, watch_config=False)
    server = uvicorn.Server(uvicorn_config(create_app(hub, settings), settings, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/mcp"

    async def sessions(count: int) -> asyncio.subprocess.Process:
        """Open ``count`` sessions from a client process; returned once they are open (and held)."""
        kind = "streams" if streams else "plain"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, url, str(count), kind, stdin=PIPE, stdout=PIPE
        )
        assert proc.stdout is not None
        if (await proc.stdout.readline()).strip() != b"ready":
            raise RuntimeError("the client failed")
        return proc

    async def done(proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None
        proc.stdin.close()
        if await proc.wait() != 0:
            raise RuntimeError("the client failed")

    await done(await sessions(20))  # warm: first-use caches are not the sessions' memory
    gc.collect()
    tracemalloc.start(25)
    before = tracemalloc.take_snapshot()
    client = await sessions(n)
    await asyncio.sleep(1)
    gc.collect()
    after = tracemalloc.take_snapshot()
    owners: dict[str, int] = {}
    for stat in after.compare_to(before, "traceback"):
        owner = next(
            (name for frame in reversed(stat.traceback) for key, name in OWNERS if key in frame.filename),
            "other (stdlib, anyio, pydantic called from outside these)",
        )
        owners[owner] = owners.get(owner, 0) + stat.size_diff
    total = sum(owners.values())
    kind = " with GET streams" if streams else ""
    print(f"{n} sessions{kind}: {total / n / 1024:.1f} KiB per session (tracemalloc), held by:")
    for owner, size in sorted(owners.items(), key=lambda kv: -kv[1]):
        print(f"  {size / n / 1024:6.1f} KiB  {owner}")
    if top:
        print(f"the {top} lines that allocated most (innermost frame):")
        lines = after.compare_to(before, "lineno")[:top]
        for stat in lines:
            frame = stat.traceback[0]
            where_ = frame.filename.rsplit("site-packages/", 1)[-1].rsplit("/src/", 1)[-1]
            print(f"  {stat.size_diff / n:8.0f} B  {where_}:{frame.lineno}")
    await done(client)
    server.should_exit = True
    await task


async def main(ns: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = (ns.where or ns.sessions) * 2 + 256
    if soft < want:  # the hub (a child) inherits it: one socket per GET stream on each side
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    if ns.where:
        await where(ns.where, ns.streams, ns.top)
        return
    limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
    streams: list[asyncio.StreamWriter] = []
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp, hubs(Path(tmp)) as servers:
        async with httpx2.AsyncClient(timeout=60, limits=limits) as http:
            one, many = servers["one"], servers["many"]
            caller_one = Caller(http, one.url, await open_session(http, one.url))
            caller_many = Caller(http, many.url, await open_session(http, many.url))
            await caller_one.timed(200, 0)
            await caller_many.timed(200, 0)
            before = await settle(many)
            t = time.perf_counter()
            opened: list[dict[str, str]] = []
            for start_at in range(0, ns.sessions, 50):
                batch = range(start_at, min(start_at + 50, ns.sessions))
                opened += await asyncio.gather(*(open_session(http, many.url) for _ in batch))
            if ns.streams:
                for start_at in range(0, len(opened), 50):
                    batch_h = opened[start_at : start_at + 50]
                    streams += await asyncio.gather(
                        *(open_stream(many.url, h["Mcp-Session-Id"]) for h in batch_h)
                    )
            took = time.perf_counter() - t
            after = await settle(many)
            per_session = (after - before) / ns.sessions / 1024
            kind = " with GET streams" if ns.streams else ""
            print(
                f"  {ns.sessions} sessions{kind} opened in {took:.1f} s; "
                f"RSS {before / 2**20:.1f} → {after / 2**20:.1f} MiB: {per_session:.1f} KiB per session"
            )
            rows = {
                "one session": lambda rnd: caller_one.timed(ns.calls, 20),
                f"{ns.sessions} sessions": lambda rnd: caller_many.timed(ns.calls, 20),
            }
            results = await run_async(rows, ns.rounds, verbose=ns.verbose)
            check = await http.post(
                many.url,
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers=opened[-1],
            )
            if check.status_code != 200:
                raise RuntimeError(f"the last session is gone: {check.status_code} {check.text[:200]}")
        for w in streams:
            w.close()
    first, beside = rows
    what = f"{ns.sessions} sessions{' and their GET streams' if ns.streams else ''}"
    section = Section(
        name="sessions",
        title=f"{what} on /mcp",
        command=f"python -m bench.sessions --sessions {ns.sessions} --rounds {ns.rounds} --calls {ns.calls}"
        + (" --streams" if ns.streams else ""),
        rounds=ns.rounds,
        rows=[first, beside],
        columns=[Column("median_ms", "median", unit=" ms"), Column("p99_ms", "p99", unit=" ms")],
        vs={beside: first},
        vs_header="vs one session (per round)",
        labels={first: "`tools/call` with one session open", beside: f"`tools/call` beside {what}"},
        params={**vars(ns), "rss_before": before, "rss_after": after, "open_seconds": took},
        results=results,
    )
    section.goal("memory per session (KiB)", per_session, f"≤ {GOAL_KIB:g}", per_session <= GOAL_KIB)
    ratio = results.ratio(beside, first, "median_ms").median
    section.goal(f"call beside {what} / with one", ratio, f"≤ {GOAL_RATIO:g}", ratio <= GOAL_RATIO)
    section.notes.append(
        f"RSS of the hub {before / 2**20:.1f} MiB before, {after / 2**20:.1f} MiB after opening them "
        f"({took:.1f} s)"
    )
    finish([section], ns.json)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=1000, help="sessions to open (default 1000)")
    parser.add_argument("--streams", action="store_true", help="open each session's GET stream too")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--calls", type=int, default=200, help="calls per row and round (default 200)")
    parser.add_argument("--where", type=int, metavar="N", help="who holds N sessions' memory (tracemalloc)")
    parser.add_argument("--top", type=int, default=0, help="with --where: the N lines that allocated most")
    parser.add_argument("--json", help="write the results here (bench/all.py does)")
    parser.add_argument("--verbose", action="store_true", help="print every round")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
