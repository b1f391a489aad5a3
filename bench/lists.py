"""Benchmark of ``tools/list`` through ``/mcp`` on a large catalog: 100 servers x 100 tools (10,000 tools).

Why: a client lists the tools once per session (and again on every ``list_changed``); with 10,000 tools that
list is megabytes of JSON. Two real ``patchbay serve`` processes, each in front of the same 100 floor servers
(bench/floor_server.py ``--tools 98``): one without pagination (the default, every tool in one answer), one
with ``"listPageSize"`` set (``--page-size``, default 1000). Rows, interleaved in rounds (bench/rounds.py),
each a run of sequential requests on one keep-alive connection, timed from the request until its whole body
has arrived (not parsed):

- the whole list in one answer, handshake era (a session) and 2026-07-28 (no session);
- the first page at ``--page-size``, handshake era (goal: p50 ≤ 30 ms);
- every page, following ``nextCursor`` from the first to the last (the time of the whole walk, the client
  parsing each page to find its cursor);
- in process, on the same listings: ``McpEndpoint.tools_list_json`` (what the fast path sends) of the whole
  list right after one server re-listed (``Catalog.set_source``): only that server's tools are encoded again.

Each row's answers are checked once before timing (every tool exactly once across the pages).

Run with ``python -m bench.lists [--rounds N] [--requests N] [--page-size N] [--servers N]``
(``make bench-all`` runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2

from bench.catalog import listing, server_name
from bench.http import ACCEPT, LEGACY, MODERN, Server, body_messages, free_port, start, wait_until
from bench.rounds import TIMES, Column, Section, finish, latency_metrics, run_sync
from patchbay import Hub
from patchbay.server.mcp import McpEndpoint

ROOT = Path(__file__).resolve().parent.parent
FLOOR = [sys.executable, str(ROOT / "bench" / "floor_server.py")]
GOAL_PAGE_MS = 30.0


def config(servers: int, per_server: int, page_size: int | None) -> dict[str, Any]:
    spec = {"command": FLOOR[0], "args": [*FLOOR[1:], "--tools", str(per_server - 2)]}
    doc: dict[str, Any] = {"mcpServers": {f"s{i:03d}": spec for i in range(servers)}}
    if page_size:
        doc["listPageSize"] = page_size
    return doc


@contextlib.contextmanager
def hubs(ns: argparse.Namespace, logdir: Path) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for name, size in (("unpaged", None), ("paged", ns.page_size)):
            path = logdir / f"{name}.json"
            path.write_text(json.dumps(config(ns.servers, ns.tools, size)))
            port = free_port()
            exe = Path(sys.executable).parent / "patchbay"
            cmd = [str(exe), "serve", "--config", str(path), "--port", str(port), "--no-reload"]
            started[name] = start(f"patchbay {name}", cmd, port, "/mcp", logdir)
        with httpx2.Client(timeout=60) as client:
            for server in started.values():
                base = server.url.removesuffix("/mcp")
                wait_until(server, lambda b=base: client.get(f"{b}/readyz").status_code == 200, 300)
        yield started
    finally:
        for server in started.values():
            server.stop()


class Lister:
    """One client of one endpoint: a keep-alive connection, and a session in the handshake era."""

    def __init__(self, server: Server, modern: bool) -> None:
        self.url = server.url
        self.modern = modern
        self.client = httpx2.Client(timeout=60)
        self.headers = {**ACCEPT, "MCP-Protocol-Version": MODERN if modern else LEGACY}
        self.ids = 0
        if modern:
            self.headers["Mcp-Method"] = "tools/list"
        else:
            self._initialize()

    def _initialize(self) -> None:
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": {"name": "bench-lists", "version": "1"},
            },
        }
        r = self.client.post(self.url, json=init, headers=ACCEPT)
        r.raise_for_status()
        self.headers["Mcp-Session-Id"] = r.headers["mcp-session-id"]
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        self.client.post(self.url, json=note, headers=self.headers).raise_for_status()

    def request(self, cursor: str | None) -> httpx2.Response:
        self.ids += 1
        params: dict[str, Any] = {}
        if cursor is not None:
            params["cursor"] = cursor
        if self.modern:
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
            }
        body = {"jsonrpc": "2.0", "id": self.ids, "method": "tools/list", "params": params}
        return self.client.post(self.url, content=json.dumps(body).encode(), headers=self.headers)

    def page(self, cursor: str | None) -> tuple[list[str], str | None]:
        r = self.request(cursor)
        (reply,) = [m for m in body_messages(r) if m.get("id") == self.ids]
        if "result" not in reply:
            raise RuntimeError(f"tools/list answered {r.status_code}: {str(reply)[:300]}")
        return [t["name"] for t in reply["result"]["tools"]], reply["result"].get("nextCursor")

    def walk(self) -> tuple[list[str], int]:
        """Every page, checked: the names in order and the number of pages."""
        names, cursor = self.page(None)
        pages = 1
        while cursor is not None:
            more, cursor = self.page(cursor)
            names += more
            pages += 1
        return names, pages

    def close(self) -> None:
        self.client.close()


def timed(requests: int, call: Callable[[], Any]) -> dict[str, float]:
    lat = []
    for _ in range(requests):
        t = time.perf_counter()
        call()
        lat.append(time.perf_counter() - t)
    return latency_metrics(lat)


class Encoder:
    """The fast path's encoding in process: a hub's catalog of the same listings, one endpoint."""

    def __init__(self, servers: int, per_server: int) -> None:
        self.hub = Hub.from_dict({"mcpServers": {}})
        for i in range(servers):
            self.relist(i, per_server)
        self.endpoint = McpEndpoint(self.hub)
        self.victim, self.per = servers // 2, per_server
        self.endpoint.tools_list_json(LEGACY, None)

    def relist(self, i: int, per_server: int) -> None:
        name = server_name(i)
        self.hub.catalog.set_source(name, listing(per_server - 2), prefix=name, rank=(0, i, name))

    def after_relist(self, requests: int) -> dict[str, float]:
        lat = []
        for _ in range(requests):
            self.relist(self.victim, self.per)
            t = time.perf_counter()
            self.endpoint.tools_list_json(LEGACY, None)
            lat.append(time.perf_counter() - t)
        return latency_metrics(lat)


def main(ns: argparse.Namespace) -> None:
    total = ns.servers * ns.tools
    with tempfile.TemporaryDirectory(prefix="bench-lists-") as tmp, hubs(ns, Path(tmp)) as servers:
        unpaged_legacy = Lister(servers["unpaged"], modern=False)
        unpaged_modern = Lister(servers["unpaged"], modern=True)
        paged = Lister(servers["paged"], modern=False)
        for lister in (unpaged_legacy, unpaged_modern, paged):
            names, pages = lister.walk()
            if sorted(names) != sorted(set(names)) or len(names) != total:
                distinct = len(set(names))
                raise RuntimeError(f"{lister.url}: {len(names)} names ({distinct} distinct), not {total}")
            era = "modern" if lister.modern else "legacy"
            print(f"  {lister.url} {era}: {total} tools in {pages} page(s)")
        _, paged_pages = paged.walk()
        encoder = Encoder(ns.servers, ns.tools)

        def walk_row() -> dict[str, float]:
            return timed(max(1, ns.requests // max(paged_pages, 1)), paged.walk)

        rows: dict[str, Callable[[int], dict[str, float]]] = {
            "one page, handshake era": lambda rnd: timed(ns.requests, lambda: unpaged_legacy.request(None)),
            "one page, 2026-07-28": lambda rnd: timed(ns.requests, lambda: unpaged_modern.request(None)),
            "first page, handshake era": lambda rnd: timed(ns.requests, lambda: paged.request(None)),
            "every page": lambda rnd: walk_row(),
            "after a re-list": lambda rnd: encoder.after_relist(ns.requests),
        }
        results = run_sync(rows, ns.rounds, verbose=ns.verbose)
        for lister in (unpaged_legacy, unpaged_modern, paged):
            lister.close()

    one_legacy, one_modern, first, walk, relisted = rows
    section = Section(
        name="lists",
        title=f"tools/list through /mcp: {ns.servers} servers {TIMES} {ns.tools} tools",
        command=(
            f"python -m bench.lists --rounds {ns.rounds} --requests {ns.requests} --page-size {ns.page_size}"
        ),
        rounds=ns.rounds,
        rows=list(rows),
        columns=[
            Column("median_ms", "median", unit=" ms", fmt="{:.1f}"),
            Column("p99_ms", "p99", unit=" ms", fmt="{:.1f}"),
        ],
        labels={
            one_legacy: f"all {total} tools in one answer (no `listPageSize`), handshake era",
            one_modern: f"all {total} tools in one answer, 2026-07-28",
            first: f"first page (`listPageSize` {ns.page_size}), handshake era",
            walk: f"every page ({paged_pages}), following `nextCursor`",
            relisted: f"in process: the encoded list of {total} tools after one server re-listed",
        },
        params=vars(ns),
        results=results,
    )
    p50 = results.stat(first, "median_ms").median
    what = f"tools/list p50, a page of {ns.page_size} in {total} tools (ms)"
    section.goal(what, p50, f"≤ {GOAL_PAGE_MS:g}", p50 <= GOAL_PAGE_MS)
    finish([section], ns.json)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--requests", type=int, default=20, help="requests per row and round (default 20)")
    parser.add_argument(
        "--page-size", type=int, default=1000, help="listPageSize of the paged hub (default 1000)"
    )
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--tools", type=int, default=100, help="tools per server (default 100)")
    parser.add_argument("--json", help="write the results here (bench/all.py does)")
    parser.add_argument("--verbose", action="store_true", help="print every round")
    with contextlib.suppress(KeyboardInterrupt):
        main(parser.parse_args())
