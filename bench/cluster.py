"""Benchmark of cluster mode: what Redis and forwarding add to a call, with real parts throughout.

One run starts a real Redis (``redis-server``), three cluster replicas (``patchbay serve --cluster``), one
plain replica (``patchbay serve``, no cluster) and a real haproxy (round-robin, no stickiness) with two
frontends: ``cluster`` over the three replicas, ``single`` over the plain one. A ``patchbay agent``
dials in to replica A directly. Every call is ``POST /api/tools/<tool>/call`` from one keep-alive client,
sequential; the tool is the hand-written stdio floor server's ``echo`` (bench/floor_server.py), run by
each replica (``floor__echo``) and by the agent (``bench__floor__echo``). Rows:

- single: the local tool through haproxy to the plain replica;
- cluster: the same call through haproxy to the cluster (any of three replicas);
- cluster, one replica: the same call through a haproxy frontend with only replica A (cluster mode's own
  cost, without the spread over three processes);
- three plain replicas: the same call through haproxy to three plain replicas (the spread alone);
- plain replica, direct / three plain replicas, client round robin: the same call without haproxy, to the
  plain replica, and over the three plain replicas in turn by the client itself (diagnostics: how much of
  the spread is haproxy's, how much is the processes');
- agent on A: the agent's tool called on A, the replica the agent is connected to;
- agent via B: the agent's tool called on B: B forwards it over Redis to A and back.

Rows are interleaved in rounds (bench/rounds.py). Goals (issue 13): cluster / single ≤ 1.2 (per round),
and agent via B - agent on A ≤ 1 ms (medians). This 2-core machine cannot show throughput scaling; see
docs/cluster.md for the capacity model.

Run with ``python -m bench.cluster [--calls N] [--rounds N]`` (needs redis-server and haproxy: ``make
test`` installs both); ``python -m bench.all --only cluster`` includes it in the report.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx2

from bench.core import FLOOR_SERVER, timed
from bench.rounds import Column, Section, finish, latency_metrics, run_async
from tests.cluster_parts import Haproxy, RedisProc, Replica, kill_tree

TOKEN = "bench-cluster-token-0123456789"
AGENT = "bench"
GOAL_RATIO = 1.2  # a local-tool call through the LB in cluster mode / to a single plain replica
GOAL_EXTRA_MS = 1.0  # an agent call forwarded across replicas - on the agent's own replica
ARGS = {"arguments": {"text": "hi"}}


def start_agent(replica: Replica, workdir: Path) -> subprocess.Popen[bytes]:
    """``patchbay agent`` lending the floor server, dialling in to ``replica`` directly."""
    with (workdir / "agent.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "patchbay", "agent", "--hub", f"ws://127.0.0.1:{replica.port}/agents",
             "--config", str(workdir / "agent.json"), "--token", TOKEN],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)
    print(f"  {what}", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300, help="calls per row and round (default 300)")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8)")
    parser.add_argument("--json", help="write the section as JSON here")
    parser.add_argument("--verbose", action="store_true")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        workdir = Path(tmp)
        floor = {"command": FLOOR_SERVER[0], "args": FLOOR_SERVER[1:]}
        seed = workdir / "seed.json"
        seed.write_text(json.dumps({"mcpServers": {"floor": floor}, "agents": {AGENT: {"token": TOKEN}}}))
        (workdir / "agent.json").write_text(json.dumps({"mcpServers": {"floor": floor}}))
        redis = RedisProc(workdir).start()
        replicas = {n: Replica(n, seed, workdir, redis.url) for n in ("a", "b", "c")}
        plain = Replica("single", seed, workdir, None)
        plains = [plain, Replica("plain2", seed, workdir, None), Replica("plain3", seed, workdir, None)]
        groups = {
            "cluster": list(replicas.values()),
            "single": [plain],
            "cluster1": [replicas["a"]],
            "plain3": plains,
        }
        lb = Haproxy(workdir, groups, check="inter 1s fall 5 rise 1")  # a busy machine is not a dead replica
        agent = None
        try:
            for r in [*replicas.values(), *plains]:
                r.start()
            lb.start()
            await asyncio.gather(*(r.ready() for r in [*replicas.values(), *plains]))
            await lb.ready("cluster", 3)
            await lb.ready("single", 1)
            await lb.ready("cluster1", 1)
            await lb.ready("plain3", 3)
            agent = start_agent(replicas["a"], workdir)
            tool = f"{AGENT}__floor__echo"
            limits = httpx2.Limits(max_keepalive_connections=1)
            async with (
                httpx2.AsyncClient(base_url=lb.url("single"), timeout=30, limits=limits) as single,
                httpx2.AsyncClient(base_url=lb.url("cluster"), timeout=30, limits=limits) as cluster,
                httpx2.AsyncClient(base_url=lb.url("cluster1"), timeout=30, limits=limits) as cluster1,
                httpx2.AsyncClient(base_url=lb.url("plain3"), timeout=30, limits=limits) as plain3,
                httpx2.AsyncClient(base_url=replicas["a"].base, timeout=30, limits=limits) as on_a,
                httpx2.AsyncClient(base_url=replicas["b"].base, timeout=30, limits=limits) as on_b,
                httpx2.AsyncClient(base_url=plains[0].base, timeout=30, limits=limits) as direct1,
                httpx2.AsyncClient(base_url=plains[1].base, timeout=30, limits=limits) as direct2,
                httpx2.AsyncClient(base_url=plains[2].base, timeout=30, limits=limits) as direct3,
            ):

                async def offered(http: httpx2.AsyncClient) -> bool:
                    names = {t["name"] for t in (await http.get("/api/tools")).json()}
                    return tool in names

                await wait_for(lambda: offered(on_a), "the agent is connected to replica A")
                await wait_for(lambda: offered(on_b), "replica B offers the agent's tools")

                def caller(http: httpx2.AsyncClient, name: str) -> Callable[[], Awaitable[None]]:
                    async def call() -> None:
                        r = await http.post(f"/api/tools/{name}/call", json=ARGS)
                        if r.status_code != 200:
                            raise RuntimeError(f"{name}: {r.status_code} {r.text}")

                    return call

                turns = itertools.cycle([direct1, direct2, direct3])

                def round_robin(name: str) -> Callable[[], Awaitable[None]]:
                    async def call() -> None:
                        await caller(next(turns), name)()

                    return call

                calls_of = {
                    "single": caller(single, "floor__echo"),
                    "cluster": caller(cluster, "floor__echo"),
                    "cluster, one replica": caller(cluster1, "floor__echo"),
                    "three plain replicas": caller(plain3, "floor__echo"),
                    "agent on A": caller(on_a, tool),
                    "agent via B": caller(on_b, tool),
                    "plain, direct": caller(direct1, "floor__echo"),
                    "three plain, client round robin": round_robin("floor__echo"),
                }

                def measure(
                    fn: Callable[[], Awaitable[None]],
                ) -> Callable[[int], Awaitable[dict[str, float]]]:
                    async def row(rnd: int) -> dict[str, float]:
                        return latency_metrics(await timed(ns.calls, fn, 100 if rnd == 0 else 20))

                    return row

                results = await run_async(
                    {k: measure(f) for k, f in calls_of.items()}, ns.rounds, verbose=ns.verbose
                )
        finally:
            if agent is not None:
                kill_tree(agent)
            lb.stop()
            for r in [*replicas.values(), *plains]:
                r.stop()
            redis.stop()
    section = Section(
        name="cluster",
        title="Cluster mode: a call through haproxy to three replicas on Redis, and an agent call forwarded",
        command=f"python -m bench.cluster --calls {ns.calls} --rounds {ns.rounds}",
        rounds=ns.rounds,
        rows=list(calls_of),
        columns=[Column("median_ms", "median", unit=" ms"), Column("p99_ms", "p99", unit=" ms")],
        vs={
            "cluster": "single",
            "cluster, one replica": "single",
            "three plain replicas": "single",
            "agent via B": "agent on A",
            "three plain, client round robin": "plain, direct",
        },
        vs_header="ratio (per round)",
        labels={
            "single": "local tool, haproxy → one plain replica (no cluster)",
            "cluster": "local tool, haproxy → three cluster replicas (Redis)",
            "cluster, one replica": "local tool, haproxy → one of the cluster replicas only",
            "three plain replicas": "local tool, haproxy → three plain replicas (control: the spread alone)",
            "agent on A": "agent's tool, called on the agent's own replica A",
            "agent via B": "agent's tool, called on B (forwarded over Redis to A)",
            "plain, direct": "local tool, straight to the plain replica (no haproxy)",
            "three plain, client round robin": "local tool, the client itself round-robins over the three "
            "plain replicas (no haproxy)",
        },
        params={"calls": ns.calls},
        results=results,
    )
    ratio = results.ratio("cluster", "single", "median_ms")
    section.goal(
        "cluster / single (local tool via haproxy)",
        ratio.median,
        f"≤ {GOAL_RATIO}",
        ratio.median <= GOAL_RATIO,
    )
    extra = results.stat("agent via B", "median_ms").median - results.stat("agent on A", "median_ms").median
    section.goal("agent via B - agent on A (ms)", extra, f"≤ {GOAL_EXTRA_MS} ms", extra <= GOAL_EXTRA_MS)
    section.notes.append(f"forwarding over Redis adds {extra * 1000:.0f} µs per call (medians)")
    spread = results.ratio("cluster", "three plain replicas", "median_ms").median
    section.notes.append(f"three cluster replicas / three plain replicas: {spread:.2f} (per round)")
    one = results.ratio("cluster, one replica", "single", "median_ms").median
    section.notes.append(
        f"one cluster replica / the plain replica: {one:.2f} (cluster mode itself; the rest of the first "
        "ratio is spreading sequential calls over three processes on this machine's cores)"
    )
    direct = results.ratio("three plain, client round robin", "plain, direct", "median_ms").median
    section.notes.append(
        f"without haproxy, a client round-robining over three plain replicas / one: {direct:.2f} (per round)"
    )
    finish([section], ns.json)


if __name__ == "__main__":
    asyncio.run(main())
