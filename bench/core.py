"""Benchmark of the core call path: patchbay's ``Hub.call_tool`` against the SDK client and the raw floor.

Every figure is measured in the same run on the same upstream processes, and reported as a ratio against
a baseline from that run (the machine is shared and noisy). Run with ``make bench`` or
``python -m bench.core [--calls N]``.

Rows:
- floor: hand-written JSON-RPC client ↔ hand-written stdio server (bench/floor_*.py)
- sdk: the official SDK ``ClientSession.call_tool`` (legacy handshake) against the same server
- patchbay: ``Hub.call_tool`` against the same server
Then the same SDK/patchbay pair against an SDK ``MCPServer`` (the bundled demo), 50 concurrent 1 s
calls, and the start-up of 10 servers against the slowest one alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters, stdio_client

from bench.floor_client import floor_latencies
from patchbay import Hub

ROOT = Path(__file__).resolve().parent.parent
FLOOR_SERVER = [sys.executable, str(ROOT / "bench" / "floor_server.py")]
DEMO_SERVER = [sys.executable, "-m", "patchbay.demo"]
SLEEPY_SERVER = [sys.executable, str(ROOT / "tests" / "servers" / "misbehaving_server.py")]


def summary(lat: list[float]) -> tuple[float, float]:
    s = sorted(lat)
    return statistics.median(s) * 1000, s[min(len(s) - 1, int(len(s) * 0.99))] * 1000


async def timed(n: int, call: Callable[[], Awaitable[Any]], warmup: int = 200) -> list[float]:
    for _ in range(warmup):
        await call()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t)
    return out


async def sdk_latencies(command: list[str], tool: str, args: dict[str, Any], n: int) -> list[float]:
    params = StdioServerParameters(command=command[0], args=command[1:])
    with open("/dev/null", "w") as devnull:
        async with stdio_client(params, errlog=devnull) as (r, w), ClientSession(r, w) as session:
            await session.initialize()
            await session.list_tools()  # so call_tool does not issue its hidden tools/list during timing
            return await timed(n, lambda: session.call_tool(tool, args))


async def hub_latencies(command: list[str], tool: str, args: dict[str, Any], n: int) -> list[float]:
    async with Hub.from_dict({"mcpServers": {"s": {"command": command[0], "args": command[1:]}}}) as hub:
        return await timed(n, lambda: hub.call_tool(f"s__{tool}", args))


async def concurrent_sleeps(n: int = 50) -> tuple[float, float]:
    async with Hub.from_dict(
        {"mcpServers": {"s": {"command": SLEEPY_SERVER[0], "args": SLEEPY_SERVER[1:]}}}
    ) as hub:
        t = time.perf_counter()
        await asyncio.gather(*(hub.call_tool("s__sleep", {"seconds": 1}) for _ in range(n)))
        hub_s = time.perf_counter() - t
    params = StdioServerParameters(command=SLEEPY_SERVER[0], args=SLEEPY_SERVER[1:])
    with open("/dev/null", "w") as devnull:
        async with stdio_client(params, errlog=devnull) as (r, w), ClientSession(r, w) as session:
            await session.initialize()
            await session.list_tools()
            t = time.perf_counter()
            await asyncio.gather(*(session.call_tool("sleep", {"seconds": 1}) for _ in range(n)))
            sdk_s = time.perf_counter() - t
    return hub_s, sdk_s


async def startup(n: int = 10) -> tuple[float, float]:
    """n servers whose handshakes take 0.1 … 1.0 s, started together, against the 1.0 s one alone."""

    def spec(delay: float) -> dict[str, Any]:
        return {"command": SLEEPY_SERVER[0], "args": [*SLEEPY_SERVER[1:], "--slow-start", f"{delay:.2f}"]}

    t = time.perf_counter()
    async with Hub.from_dict({"mcpServers": {"slowest": spec(1.0)}}):
        single = time.perf_counter() - t
    t = time.perf_counter()
    async with Hub.from_dict({"mcpServers": {f"s{i}": spec((i + 1) / n) for i in range(n)}}) as hub:
        together = time.perf_counter() - t
        assert all(s.state == "ready" for s in hub.status().values())
    return together, single


def row(label: str, lat: list[float], base: tuple[float, float] | None, base_name: str) -> str:
    med, p99 = summary(lat)
    ratio = f"{med / base[0]:5.2f}x {base_name}" if base else ""
    return f"  {label:<34} median {med:7.3f} ms   p99 {p99:7.3f} ms   {ratio}"


async def main(calls: int) -> None:
    print(f"patchbay core benchmark: {calls} sequential calls per row, same run, same servers\n")
    print("echo against the hand-written stdio server (bench/floor_server.py):")
    floor = await floor_latencies(FLOOR_SERVER, calls)
    sdk = await sdk_latencies(FLOOR_SERVER, "echo", {"text": "hi"}, calls)
    hub = await hub_latencies(FLOOR_SERVER, "echo", {"text": "hi"}, calls)
    f = summary(floor)
    print(row("floor (hand-written client)", floor, None, ""))
    print(row("SDK ClientSession.call_tool", sdk, f, "floor"))
    print(row("patchbay Hub.call_tool", hub, f, "floor"))
    print(f"  patchbay / SDK: {summary(hub)[0] / summary(sdk)[0]:.2f}   (goal ≤ 1.0)")
    print(f"  patchbay / floor: {summary(hub)[0] / f[0]:.2f}   (goal ≤ 2.0)\n")

    demo_calls = max(calls // 4, 200)
    print(f"add against the SDK MCPServer demo (python -m patchbay.demo), {demo_calls} calls:")
    sdk_d = await sdk_latencies(DEMO_SERVER, "add", {"a": 1, "b": 2}, demo_calls)
    hub_d = await hub_latencies(DEMO_SERVER, "add", {"a": 1, "b": 2}, demo_calls)
    print(row("SDK ClientSession.call_tool", sdk_d, None, ""))
    print(row("patchbay Hub.call_tool", hub_d, summary(sdk_d), "SDK"))
    print()

    hub_s, sdk_s = await concurrent_sleeps()
    print("50 concurrent calls of a 1 s tool (tests/servers/misbehaving_server.py sleep):")
    print(f"  patchbay {hub_s:.3f} s   SDK {sdk_s:.3f} s   (goal: patchbay < 1.2 s)\n")

    together, single = await startup()
    print("start-up (spawn + initialize + list), servers answering initialize after 0.1 … 1.0 s:")
    ratio = together / single
    print(f"  10 servers {together:.3f} s   slowest alone {single:.3f} s   ratio {ratio:.2f} (goal ≤ 1.3)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=5000)
    ns = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(ns.calls))
