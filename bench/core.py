"""Benchmark of the core call path: patchbay's ``Hub.call_tool`` against the SDK client and the raw floor.

Every row keeps its connection open and is measured in interleaved rounds (bench/rounds.py): each round
times every row once, in a rotated order, so the shared machine's noise falls on all rows alike. A row's
figure is the median of its per-round medians (with the min-max of the rounds), and ratios are computed
round by round. Run with ``make bench`` or ``python -m bench.core [--calls N] [--rounds N]``.

Rows, against the hand-written stdio server (bench/floor_server.py):
- floor: hand-written JSON-RPC client (bench/floor_client.py)
- sdk: the official SDK ``ClientSession.call_tool`` (handshake era)
- patchbay: ``Hub.call_tool``, no call observer (the library as embedded)
- patchbay + metrics: ``Hub.call_tool`` on a hub with the Prometheus observer of ``patchbay serve``
  (server/metrics.py): what metrics cost on the call path
- patchbay + metrics + otel: the same with OpenTelemetry on (telemetry.py), exporting over OTLP/HTTP to a
  sink in another process (bench/otlp_sink.py), each call made as ``/mcp`` makes it: inside a SERVER span
  whose parent comes from a ``traceparent`` header, with a CLIENT span and ``_meta`` injection upstream
Then the same SDK/patchbay pair against an SDK ``MCPServer`` (the bundled demo), and, in a few rounds of
their own, 50 concurrent 1 s calls and the start-up of 10 servers against the slowest one alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters, stdio_client

from bench.floor_client import FloorSession
from bench.rounds import Column, Section, finish, latency_metrics, median_ms, p99_ms, run_async
from patchbay import Hub

ROOT = Path(__file__).resolve().parent.parent
FLOOR_SERVER = [sys.executable, str(ROOT / "bench" / "floor_server.py")]
DEMO_SERVER = [sys.executable, "-m", "patchbay.demo"]
SLEEPY_SERVER = [sys.executable, str(ROOT / "tests" / "servers" / "misbehaving_server.py")]
ECHO = {"text": "hi"}
GOAL_FLOOR = 1.5  # Hub.call_tool ≤ 1.5x the floor (issue 12)


def summary(lat: list[float]) -> tuple[float, float]:
    """(median, p99) in ms."""
    return median_ms(lat), p99_ms(lat)


async def timed(n: int, call: Callable[[], Awaitable[Any]], warmup: int = 200) -> list[float]:
    for _ in range(warmup):
        await call()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t)
    return out


def row(label: str, lat: list[float], base: tuple[float, float] | None, base_name: str) -> str:
    med, p99 = summary(lat)
    ratio = f"{med / base[0]:5.2f}x {base_name}" if base else ""
    return f"  {label:<34} median {med:7.3f} ms   p99 {p99:7.3f} ms   {ratio}"


async def sdk_session(stack: AsyncExitStack, command: list[str]) -> ClientSession:
    params = StdioServerParameters(command=command[0], args=command[1:])
    devnull = stack.enter_context(open("/dev/null", "w"))  # noqa: SIM115 (closed by the stack)
    r, w = await stack.enter_async_context(stdio_client(params, errlog=devnull))
    session = await stack.enter_async_context(ClientSession(r, w))
    await session.initialize()
    await session.list_tools()  # so call_tool does not issue its hidden tools/list during timing
    return session


async def hub_for(
    stack: AsyncExitStack, command: list[str], *, metrics: bool = False, otlp: str | None = None
) -> Hub:
    config: dict[str, Any] = {"mcpServers": {"s": {"command": command[0], "args": command[1:]}}}
    if otlp is not None:
        config["telemetry"] = {"otlpEndpoint": otlp}
    hub = Hub.from_dict(config)
    await stack.enter_async_context(hub)
    if metrics:
        from patchbay.server.metrics import build_metrics

        build_metrics(hub)  # registers the call observer `patchbay serve` runs with
    return hub


def otlp_sink(stack: AsyncExitStack) -> str:
    """A collector stand-in in a process of its own; its OTLP/HTTP base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "bench.otlp_sink", str(port)], cwd=ROOT)
    stack.callback(proc.wait)
    stack.callback(proc.kill)
    deadline = time.monotonic() + 30
    while True:  # bench set-up, not a test: wait until it listens
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the OTLP sink did not start") from None
            time.sleep(0.02)


def served_call(hub: Hub, name: str, arguments: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
    """A call as ``/mcp``'s fast path makes it with tracing on: in a SERVER span, parent from the headers."""
    tracing = hub.tracing
    assert tracing is not None
    headers = {"traceparent": f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"}

    def call() -> Awaitable[Any]:
        return tracing.served(
            hub.call_tool(name, arguments),
            "tools/call",
            {"name": name},
            meta={},
            headers=headers,
            protocol="streamable-http",
        )

    return call


def latency_row(n: int, call: Callable[[], Awaitable[Any]]) -> Callable[[int], Awaitable[dict[str, float]]]:
    async def measure(rnd: int) -> dict[str, float]:
        return latency_metrics(await timed(n, call, 200 if rnd == 0 else 20))

    return measure


def observer_cost(n: int = 100_000) -> float:
    """µs per call of the metrics observer alone (no call around it): the floor of its cost."""
    from patchbay.server.metrics import build_metrics

    hub = Hub.from_dict({"mcpServers": {}})
    build_metrics(hub)
    (observe,) = hub._call_observers  # the one build_metrics added
    t = time.perf_counter()
    for _ in range(n):
        observe("s", "s__echo", "ok", 0.0001)
    return (time.perf_counter() - t) / n * 1e6


async def concurrent_sleeps(n: int = 50) -> tuple[float, float]:
    async with Hub.from_dict(
        {"mcpServers": {"s": {"command": SLEEPY_SERVER[0], "args": SLEEPY_SERVER[1:]}}}
    ) as hub:
        t = time.perf_counter()
        await asyncio.gather(*(hub.call_tool("s__sleep", {"seconds": 1}) for _ in range(n)))
        hub_s = time.perf_counter() - t
    async with AsyncExitStack() as stack:
        session = await sdk_session(stack, SLEEPY_SERVER)
        t = time.perf_counter()
        await asyncio.gather(*(session.call_tool("sleep", {"seconds": 1}) for _ in range(n)))
        sdk_s = time.perf_counter() - t
    return hub_s, sdk_s


def _spec(delay: float) -> dict[str, Any]:
    return {"command": SLEEPY_SERVER[0], "args": [*SLEEPY_SERVER[1:], "--slow-start", f"{delay:.2f}"]}


async def startup_alone() -> float:
    t = time.perf_counter()
    async with Hub.from_dict({"mcpServers": {"slowest": _spec(1.0)}}):
        return time.perf_counter() - t


async def startup_together(n: int = 10) -> float:
    """n servers whose handshakes take 0.1 … 1.0 s, started together."""
    t = time.perf_counter()
    async with Hub.from_dict({"mcpServers": {f"s{i}": _spec((i + 1) / n) for i in range(n)}}) as hub:
        elapsed = time.perf_counter() - t
        assert all(s.state == "ready" for s in hub.status().values())
        return elapsed


async def main(ns: argparse.Namespace) -> None:
    calls, rounds = ns.calls, ns.rounds
    print(f"patchbay core benchmark: {rounds} interleaved rounds of {calls} sequential calls per row\n")
    async with AsyncExitStack() as stack:
        floor = await stack.enter_async_context(FloorSession(FLOOR_SERVER))
        sdk = await sdk_session(stack, FLOOR_SERVER)
        hub = await hub_for(stack, FLOOR_SERVER)
        hub_m = await hub_for(stack, FLOOR_SERVER, metrics=True)
        hub_otel = await hub_for(stack, FLOOR_SERVER, metrics=True, otlp=otlp_sink(stack))
        sdk_demo = await sdk_session(stack, DEMO_SERVER)
        hub_demo = await hub_for(stack, DEMO_SERVER)
        demo_calls = max(calls // 4, 50)
        rows = {
            "floor": latency_row(calls, floor.call),
            "sdk": latency_row(calls, lambda: sdk.call_tool("echo", ECHO)),
            "patchbay": latency_row(calls, lambda: hub.call_tool("s__echo", ECHO)),
            "patchbay+metrics": latency_row(calls, lambda: hub_m.call_tool("s__echo", ECHO)),
            "patchbay+metrics+otel": latency_row(calls, served_call(hub_otel, "s__echo", ECHO)),
            "demo sdk": latency_row(demo_calls, lambda: sdk_demo.call_tool("add", {"a": 1, "b": 2})),
            "demo patchbay": latency_row(demo_calls, lambda: hub_demo.call_tool("s__add", {"a": 1, "b": 2})),
        }
        results = await run_async(rows, rounds, verbose=ns.verbose)

    section = Section(
        name="core",
        title="In-process call: Hub.call_tool against the SDK client and the floor",
        command=f"python -m bench.core --calls {calls} --rounds {rounds} --slow-rounds {ns.slow_rounds}",
        rounds=rounds,
        rows=list(rows),
        columns=[Column("median_ms", "median", unit=" ms"), Column("p99_ms", "p99", unit=" ms")],
        vs={
            "sdk": "floor",
            "patchbay": "floor",
            "patchbay+metrics": "patchbay",
            "patchbay+metrics+otel": "patchbay+metrics",
            "demo patchbay": "demo sdk",
        },
        vs_header="ratio (per round)",
        labels={
            "floor": "floor: hand-written client ↔ hand-written server",
            "sdk": "SDK `ClientSession.call_tool`, same server",
            "patchbay": "patchbay `Hub.call_tool`, same server",
            "patchbay+metrics": "patchbay `Hub.call_tool` + Prometheus observer",
            "patchbay+metrics+otel": "… + OpenTelemetry on (SERVER and CLIENT span, OTLP/HTTP export)",
            "demo sdk": "SDK against an SDK `MCPServer` (the demo)",
            "demo patchbay": "patchbay against the demo",
        },
        params={"calls": calls, "demo_calls": demo_calls, "slow_rounds": ns.slow_rounds},
        results=results,
    )
    vs_floor = results.ratio("patchbay", "floor", "median_ms").median
    section.goal("patchbay / floor", vs_floor, f"≤ {GOAL_FLOOR}", vs_floor <= GOAL_FLOOR)
    vs_sdk = results.ratio("patchbay", "sdk", "median_ms").median
    section.goal("patchbay / SDK", vs_sdk, "≤ 1", vs_sdk <= 1)
    overhead = results.stat("patchbay", "median_ms").median - results.stat("floor", "median_ms").median
    section.notes.append(f"patchbay - floor: {overhead * 1000:.0f} µs per call (medians)")
    metrics_cost = results.ratio("patchbay+metrics", "patchbay", "median_ms")
    section.notes.append(
        f"metrics on / off: {metrics_cost.median:.3f} per round (rounds {metrics_cost.min:.3f}-"
        f"{metrics_cost.max:.3f}); the observer alone costs {observer_cost():.2f} µs per call"
    )

    otel_cost = results.ratio("patchbay+metrics+otel", "patchbay+metrics", "median_ms")
    otel_us = (
        results.stat("patchbay+metrics+otel", "median_ms").median
        - results.stat("patchbay+metrics", "median_ms").median
    ) * 1000
    section.notes.append(
        f"tracing on / off: {otel_cost.median:.3f} per round (rounds {otel_cost.min:.3f}-"
        f"{otel_cost.max:.3f}), {otel_us:.0f} µs per call for two spans and their export; off, the call "
        "path has one attribute check (`self.tracing is not None`)"
    )

    sections = [section]
    if ns.slow_rounds > 0:
        cache: dict[int, tuple[float, float]] = {}

        async def conc_hub(rnd: int) -> dict[str, float]:
            cache[rnd] = await concurrent_sleeps()
            return {"seconds": cache[rnd][0]}

        async def conc_sdk(rnd: int) -> dict[str, float]:
            return {"seconds": cache.pop(rnd)[1]}  # measured by conc_hub, right after patchbay's

        async def together(rnd: int) -> dict[str, float]:
            return {"seconds": await startup_together()}

        async def alone(rnd: int) -> dict[str, float]:
            return {"seconds": await startup_alone()}

        slow = await run_async(
            {"startup together": together, "startup alone": alone}, ns.slow_rounds, verbose=ns.verbose
        )
        for rnd in range(ns.slow_rounds):
            slow.add("concurrent patchbay", rnd, await conc_hub(rnd))
            slow.add("concurrent sdk", rnd, await conc_sdk(rnd))
        slow_section = Section(
            name="core-slow",
            title="Concurrency and start-up",
            command=section.command,
            rounds=ns.slow_rounds,
            rows=["concurrent patchbay", "concurrent sdk", "startup together", "startup alone"],
            columns=[Column("seconds", "seconds", unit=" s")],
            vs={"concurrent patchbay": "concurrent sdk", "startup together": "startup alone"},
            vs_header="ratio (per round)",
            labels={
                "concurrent patchbay": "50 concurrent 1 s calls, patchbay",
                "concurrent sdk": "50 concurrent 1 s calls, SDK",
                "startup together": "10 servers (0.1 … 1.0 s handshakes) started together",
                "startup alone": "the slowest one alone",
            },
            results=slow,
        )
        conc = slow.stat("concurrent patchbay", "seconds").median
        slow_section.goal("50 concurrent 1 s calls through patchbay (s)", conc, "< 1.2", conc < 1.2)
        start_ratio = slow.ratio("startup together", "startup alone", "seconds").median
        slow_section.goal("10 servers together / slowest alone", start_ratio, "≤ 1.3", start_ratio <= 1.3)
        sections.append(slow_section)
    finish(sections, ns.json)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=500, help="calls per row and round (default 500)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument(
        "--slow-rounds", type=int, default=3, help="rounds of the concurrency and start-up rows (default 3)"
    )
    parser.add_argument("--json", help="write the results here (bench/all.py does)")
    parser.add_argument("--verbose", action="store_true", help="print every round")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
