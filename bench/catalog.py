"""Benchmark of large catalogs: 100 servers x 100 tools against one server, interleaved in rounds.

Why: a hub in front of many servers must not get slower per call, and one server re-listing (its
``tools/list_changed``) must not cost a rebuild of everything. Rows:

- catalog re-list: ``Catalog.set_source`` of one 100-tool source, in a catalog of 100 such sources (10,000
  tools) and alone (100 tools). The listings are what bench/floor_server.py ``--tools 98`` sends, parsed by
  ``parse_tools`` as the hub does, so this is the real ``Catalog`` API on real listings (goal ≤ 5 ms).
- hub re-list: end to end through real hubs and real processes: the ``relist`` tool of one floor server sends
  ``notifications/tools/list_changed``; timed from the call until the hub publishes the ``CatalogEvent`` of
  that server (the notification, ``tools/list`` over stdio, parsing 100 tools, the catalog, the event), in
  a hub of 100 servers and in a hub of that one server.
- call: ``Hub.call_tool`` of ``echo`` on a hub of 100 servers x 100 tools (10,000 tools) and on a hub of one
  server with 10 tools (goal: within 5%).

Run with ``python -m bench.catalog [--rounds N] [--calls N] [--servers N]`` (``make bench-all`` runs it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.floor_server import RELIST, TOOLS, extra_tools
from bench.rounds import TIMES, Column, Section, finish, latency_metrics, run_async
from patchbay import Hub
from patchbay.catalog import Catalog, Listing, parse_tools
from patchbay.events import CatalogEvent

ROOT = Path(__file__).resolve().parent.parent
FLOOR = [sys.executable, str(ROOT / "bench" / "floor_server.py")]
ARGS = {"text": "hi"}


def listing(n_extra: int) -> Listing:
    """A listing as the hub parses it from ``floor_server.py --tools n_extra`` (echo + relist + n_extra)."""
    raw = json.loads(json.dumps([*TOOLS, RELIST, *extra_tools(n_extra)]))  # fresh dicts, as off the wire
    tools, _ = parse_tools(raw, "bench")
    return Listing(tools=tools)


def server_name(i: int) -> str:
    return f"s{i:03d}"


def filled_catalog(servers: int, per_server: int) -> Catalog:
    cat = Catalog()
    for i in range(servers):
        name = server_name(i)
        cat.set_source(name, listing(per_server - 2), prefix=name, rank=(0, i, name))
    return cat


def hub_config(servers: int, n_extra: int) -> dict[str, Any]:
    spec = {"command": FLOOR[0], "args": [*FLOOR[1:], "--tools", str(n_extra)]}
    return {"mcpServers": {server_name(i): spec for i in range(servers)}}


class Relister:
    """Times one server's re-list end to end: its relist tool call until the hub's CatalogEvent for it."""

    def __init__(self, hub: Hub, server: str) -> None:
        self.hub = hub
        self.server = server
        self.events = hub.events()

    async def once(self) -> float:
        t = time.perf_counter()
        await self.hub.call_tool(f"{self.server}__relist", {})
        async for event in self.events:
            if isinstance(event, CatalogEvent) and event.server == self.server:
                return time.perf_counter() - t
        raise RuntimeError("the event stream ended")

    async def many(self, n: int) -> list[float]:
        return [await self.once() for _ in range(n)]


async def timed(n: int, call: Any, warmup: int) -> list[float]:
    for _ in range(warmup):
        await call()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t)
    return out


async def main(ns: argparse.Namespace) -> None:
    servers, per = ns.servers, ns.tools
    total = servers * per
    print(f"large catalog benchmark: {servers} servers x {per} tools = {total} tools, {ns.rounds} rounds\n")

    # --- the catalog alone, on real listings ----------------------------------------------------------
    big, small, small2 = filled_catalog(servers, per), filled_catalog(1, per), filled_catalog(1, per)
    victim, other = server_name(servers // 2), server_name(servers // 2 + 1)
    fresh = [listing(per - 2) for _ in range(ns.relists)]  # new Tool objects each time, as after a re-list
    # the same server alternately one tool short: names come and go, so the whole catalog is merged again
    changing = [listing(per - 2 - (i % 2)) for i in range(ns.relists)]

    def relist_in(cat: Catalog, name: str, rank: int, listings: list[Listing]) -> Any:
        async def row(rnd: int) -> dict[str, float]:
            lat = []
            for lst in listings:
                t = time.perf_counter()
                cat.set_source(name, lst, prefix=name, rank=(0, rank, name))
                lat.append(time.perf_counter() - t)
            return latency_metrics(lat)

        return row

    catalog_rows = {
        f"catalog {total}": relist_in(big, victim, servers // 2, fresh),
        f"catalog {per}": relist_in(small, server_name(0), 0, fresh),
        f"catalog {total}, names change": relist_in(big, other, servers // 2 + 1, changing),
        f"catalog {per}, names change": relist_in(small2, server_name(0), 0, changing),
    }
    assert len(big.tools) == total, len(big.tools)

    # --- real hubs, real processes --------------------------------------------------------------------
    t = time.perf_counter()
    async with (
        Hub.from_dict(hub_config(servers, per - 2)) as large,
        Hub.from_dict(hub_config(1, per - 2)) as one,
        Hub.from_dict(hub_config(1, 8)) as tiny,
    ):
        started = time.perf_counter() - t
        if len(large.catalog.tools) != total or len(tiny.catalog.tools) != 10:
            raise RuntimeError(f"catalog sizes {len(large.catalog.tools)} / {len(tiny.catalog.tools)}")
        print(f"  {servers + 2} servers started in {started:.2f} s")
        big_relist, one_relist = Relister(large, victim), Relister(one, server_name(0))
        await big_relist.many(5)
        await one_relist.many(5)

        def relist_row(r: Relister) -> Any:
            async def row(rnd: int) -> dict[str, float]:
                return latency_metrics(await r.many(ns.relists))

            return row

        def call_row(hub: Hub, tool: str) -> Any:
            async def row(rnd: int) -> dict[str, float]:
                fn = lambda: hub.call_tool(tool, ARGS)  # noqa: E731
                return latency_metrics(await timed(ns.calls, fn, 200 if rnd == 0 else 20))

            return row

        hub_rows = {
            **catalog_rows,  # in the same rounds as the rest, so the same noise falls on them
            f"hub re-list {total}": relist_row(big_relist),
            f"hub re-list {per}": relist_row(one_relist),
            f"call {total}": call_row(large, f"{victim}__echo"),
            "call 10": call_row(tiny, f"{server_name(0)}__echo"),
        }
        results = await run_async(hub_rows, ns.rounds, verbose=ns.verbose)
        big_relist.events.close()
        one_relist.events.close()

    command = f"python -m bench.catalog --rounds {ns.rounds} --calls {ns.calls} --relists {ns.relists}"
    relist_big, relist_small, change_big, change_small = list(catalog_rows)
    hub_big, hub_small, call_big, call_small = list(hub_rows)[4:]
    section = Section(
        name="catalog",
        title=f"Large catalogs: {servers} servers {TIMES} {per} tools",
        command=command,
        rounds=ns.rounds,
        rows=[relist_big, relist_small, change_big, change_small, hub_big, hub_small, call_big, call_small],
        columns=[Column("median_ms", "median", unit=" ms"), Column("p99_ms", "p99", unit=" ms")],
        vs={relist_big: relist_small, change_big: change_small, hub_big: hub_small, call_big: call_small},
        vs_header="vs the small catalog (per round)",
        labels={
            relist_big: f"`Catalog.set_source` of one server, same names, {total} tools",
            relist_small: f"`Catalog.set_source` of one server, same names, {per} tools",
            change_big: f"`Catalog.set_source`, a tool added or removed, {total} tools",
            change_small: f"`Catalog.set_source`, a tool added or removed, {per} tools",
            hub_big: f"hub re-list (list_changed → CatalogEvent), {total} tools",
            hub_small: f"hub re-list, {per} tools",
            call_big: f"`Hub.call_tool`, {total} tools",
            call_small: "`Hub.call_tool`, 10 tools",
        },
        params=vars(ns),
        results=results,
    )
    for row, what in ((relist_big, "same names"), (change_big, "a tool added or removed")):
        cost = results.stat(row, "median_ms").median
        section.goal(f"one server re-listing in {total} tools, {what} (catalog, ms)", cost, "≤ 5", cost <= 5)
    hub_cost = results.stat(hub_big, "median_ms").median
    section.goal(
        f"one server re-listing in {total} tools, end to end (hub, ms)", hub_cost, "≤ 5", hub_cost <= 5
    )
    call_ratio = results.ratio(call_big, call_small, "median_ms").median
    section.goal(f"call with {total} tools / with 10", call_ratio, "≤ 1.05", call_ratio <= 1.05)
    section.notes.append(f"{servers + 2} upstream processes started in {started:.2f} s")
    finish([section], ns.json)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument("--calls", type=int, default=300, help="calls per row and round (default 300)")
    parser.add_argument("--relists", type=int, default=20, help="re-lists per row and round (default 20)")
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--tools", type=int, default=100, help="tools per server (default 100)")
    parser.add_argument("--json", help="write the results here (bench/all.py does)")
    parser.add_argument("--verbose", action="store_true", help="print every round")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
