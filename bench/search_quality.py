"""Tool search quality and speed, offline, over the tool lists of real published MCP servers.

The catalog is ``bench/data/tool_lists.json`` (made by ``bench/capture_tool_lists.py``), built into a real
patchbay ``Catalog`` so exposed names are what users see. The requests (``bench/data/search_requests.json``)
are written the way people ask an assistant, each with the exposed tool name(s) that would serve it. They
are split in two by a hash of their text: ``dev`` (what ranking changes were judged on) and ``test``
(reported, never tuned on). Reported for each method: recall@1, recall@5 (some expected tool in the top 1
or 5) and MRR (mean reciprocal rank of the first expected tool; 0 past rank 50).

Methods, all in one run:
- ``bm25-plain``: classic BM25 (k1 1.2, b 0.75) over each tool's name words and description, lower-cased
  words, nothing else: the baseline;
- ``patchbay``: ``patchbay.search.SearchIndex`` as shipped;
- ablations of it: without synonyms, without the name-cover boost;
- ``patchbay hybrid``: ``"search": "hybrid"`` (``patchbay.semantic.HybridSearch``: BM25F fused with the
  all-MiniLM-L6-v2 sentence encoder), when the ``semantic`` extra and the model are installed (``make
  test`` installs both); with ``oracle`` the share of requests that BM25F or the encoder alone has in its
  top 5, the ceiling of any fusion of the two.

Then the latency of ``SearchIndex.search`` over 10,000 tools (the real catalog repeated under distinct
server names), and of an incremental update; and of the hybrid search over the same 10,000 tools (their
vectors copied from the real catalog's: a search's cost does not depend on their values), with the time
it took to embed the real catalog once.

    .venv/bin/python -m bench.search_quality [--misses] [--json] [--no-hybrid]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mcp.types as types

from patchbay.catalog import Catalog, Listing, parse_tools
from patchbay.search import SearchIndex, words

HERE = Path(__file__).resolve().parent
TOOLS = HERE / "data" / "tool_lists.json"
REQUESTS = HERE / "data" / "search_requests.json"
DEPTH = 50

Ranker = Callable[[str, int], list[str]]


def load_catalog() -> tuple[Catalog, dict[str, str]]:
    data = json.loads(TOOLS.read_text())
    catalog = Catalog()
    packages = {}
    for rank, (server, entry) in enumerate(sorted(data.items())):
        tools, _ = parse_tools(entry["tools"], server)
        catalog.set_source(server, Listing(tools=tools), prefix=server, rank=(0, rank, server))
        packages[server] = entry["package"]
    return catalog, packages


def split_of(query: str) -> str:
    """A stable, content-based split: about half the requests are dev, half test."""
    return "dev" if hashlib.sha256(query.encode()).digest()[0] % 2 == 0 else "test"


class PlainBM25:
    """The baseline: one bag of words per tool (name words + description), textbook BM25."""

    def __init__(self, catalog: Catalog, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs: dict[str, dict[str, int]] = {}
        self.lengths: dict[str, int] = {}
        df: dict[str, int] = {}
        for name, entry in catalog.tools.items():
            ws = words(name) + words(entry.tool.description or "")
            counts: dict[str, int] = {}
            for w in ws:
                counts[w] = counts.get(w, 0) + 1
            self.docs[name], self.lengths[name] = counts, len(ws)
            for w in counts:
                df[w] = df.get(w, 0) + 1
        n = len(self.docs)
        self.avg = sum(self.lengths.values()) / max(n, 1)
        self.idf = {w: math.log(1 + (n - d + 0.5) / (d + 0.5)) for w, d in df.items()}

    def rank(self, query: str, limit: int) -> list[str]:
        q = set(words(query))
        scores = {}
        for name, counts in self.docs.items():
            s = 0.0
            norm = self.k1 * (1 - self.b + self.b * self.lengths[name] / self.avg)
            for w in q:
                tf = counts.get(w)
                if tf:
                    s += self.idf[w] * tf * (self.k1 + 1) / (tf + norm)
            if s > 0:
                scores[name] = s
        return [n for n, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


def index_ranker(catalog: Catalog, **kwargs: Any) -> Ranker:
    index = SearchIndex(**kwargs)
    index.sync(catalog)
    return lambda q, k: [m.name for m in index.search(q, k)]


def evaluate(
    rank: Ranker, requests: Sequence[dict[str, Any]]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    r1 = r5 = rr = 0.0
    misses = []
    for req in requests:
        got = rank(req["q"], DEPTH)
        expected = set(req["expected"])
        pos = next((i for i, n in enumerate(got) if n in expected), None)
        if pos is not None:
            r1 += pos == 0
            r5 += pos < 5
            rr += 1.0 / (pos + 1)
        if pos is None or pos >= 5:
            misses.append({"q": req["q"], "expected": req["expected"], "rank": pos, "top": got[:3]})
    n = max(len(requests), 1)
    return {"recall@1": r1 / n, "recall@5": r5 / n, "mrr": rr / n, "n": len(requests)}, misses


def latency(catalog: Catalog, queries: Sequence[str], target: int = 10_000) -> dict[str, float]:
    """Median and p95 search time over ``target`` tools, and the cost of adding one server to it."""
    entries = list(catalog.tools.values())
    index = SearchIndex()
    copies = math.ceil(target / len(entries))
    t0 = time.perf_counter()
    items = [(f"c{c}{e.name}", f"c{c}{e.source}", e.tool) for c in range(copies) for e in entries]
    index.add_many(items[:target])
    build = time.perf_counter() - t0
    for q in queries[:20]:  # warm up
        index.search(q, 8)
    times, cpu, warm = [], [], []
    for _ in range(3):
        for q in queries:
            index._expansions.clear()  # cold: no query word's expansion cached
            t, c = time.perf_counter(), time.thread_time()
            index.search(q, 8)
            times.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
        for q in queries:  # warm: every word of this request seen before (repeats of the same set)
            t = time.perf_counter()
            index.search(q, 8)
            warm.append(time.perf_counter() - t)
    times.sort()
    server_tools: list[types.Tool] = [e.tool for e in entries if e.source == "github"]
    t = time.perf_counter()
    for tool in server_tools:
        index.add(f"new__{tool.name}", "new", tool)
    add = time.perf_counter() - t
    return {
        "tools": len(index) - len(server_tools),
        "median_ms": statistics.median(times) * 1000,
        "p95_ms": times[int(len(times) * 0.95)] * 1000,
        "median_cpu_ms": statistics.median(cpu) * 1000,
        "median_warm_ms": statistics.median(warm) * 1000,
        "build_s": build,
        "add_server_ms": add * 1000,
        "added_tools": len(server_tools),
    }


def hybrid_ranker(catalog: Catalog) -> tuple[Ranker, Ranker, float, Any]:
    """The hybrid search over the catalog (embedded once, timed), and the oracle's two rankings."""
    from patchbay.semantic import HybridSearch

    index = HybridSearch()
    index.sync(catalog)
    t0 = time.perf_counter()
    asyncio.run(index.embed_pending())
    embed_s = time.perf_counter() - t0
    if index.error is not None:
        sys.exit(f"hybrid search: {index.error}")
    return (lambda q, k: [m.name for m in index.search(q, k)]), index_ranker(catalog), embed_s, index


def oracle(index: Any, lexical: Ranker, requests: Sequence[dict[str, Any]]) -> float:
    """Share of requests that BM25F alone or the encoder alone has in its top 5."""
    hits = 0
    for req in requests:
        expected = set(req["expected"])
        semantic = index._semantic(index.encode_query(req["q"]), None)[:5]
        hits += bool(expected & set(lexical(req["q"], 5))) or bool(expected & set(semantic))
    return hits / max(len(requests), 1)


def hybrid_latency(
    catalog: Catalog, index: Any, queries: Sequence[str], target: int = 10_000
) -> dict[str, float]:
    from patchbay.semantic import HybridSearch

    entries = list(catalog.tools.values())
    copies = math.ceil(target / len(entries))
    big = Catalog()
    for rank, server in enumerate(sorted({e.source for e in entries})):
        for c in range(copies):
            tools = [e.tool.model_copy(update={"name": e.name}) for e in entries if e.source == server]
            big.set_source(
                f"c{c}{server}", Listing(tools=tools), prefix=f"c{c}", rank=(0, rank, f"c{c}{server}")
            )
    hybrid = HybridSearch(load=lambda: index._encoder)
    hybrid.sync(big)
    for name in hybrid.pending():  # the copies' vectors: the originals' (same text but for the prefix)
        hybrid._vectors[name] = (hybrid._texts[name][0], index._vectors[name.split("__", 1)[1]][1])
    hybrid._encoder = index._encoder
    for q in queries[:20]:
        hybrid.search(q, 8)
    times, encode = [], []
    for q in queries:
        t = time.perf_counter()
        hybrid.encode_query(q)
        encode.append(time.perf_counter() - t)
        t = time.perf_counter()
        hybrid.search(q, 8)
        times.append(time.perf_counter() - t)
    times.sort()
    return {
        "tools": len(hybrid),
        "median_ms": statistics.median(times) * 1000,
        "p95_ms": times[int(len(times) * 0.95)] * 1000,
        "median_encode_ms": statistics.median(encode) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--misses", action="store_true", help="print the dev requests patchbay misses at 5")
    ap.add_argument("--json", action="store_true", help="the figures as JSON")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--no-hybrid", action="store_true", help="skip the hybrid (semantic extra) rows")
    opts = ap.parse_args()
    catalog, packages = load_catalog()
    requests = json.loads(REQUESTS.read_text())["requests"]
    unknown = sorted({n for r in requests for n in r["expected"] if n not in catalog.tools})
    if unknown:
        sys.exit(f"expected tools missing from the catalog: {unknown}")
    splits = {s: [r for r in requests if split_of(r["q"]) == s] for s in ("dev", "test")}
    splits["all"] = requests
    methods: dict[str, Ranker] = {
        "bm25-plain": PlainBM25(catalog).rank,
        "patchbay": index_ranker(catalog),
        "patchbay, no synonyms": index_ranker(catalog, expand=False),
        "patchbay, no name boost": index_ranker(catalog, boost=False),
    }
    results: dict[str, Any] = {
        "servers": len(packages),
        "tools": len(catalog.tools),
        "requests": {s: len(v) for s, v in splits.items()},
        "methods": {},
    }
    hybrid = None
    if not opts.no_hybrid:
        from patchbay.semantic import NEEDS

        missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
        if missing:
            print(f"(no hybrid rows: {', '.join(missing)} not installed)", file=sys.stderr)
        else:
            rank, lexical, embed_s, hybrid = hybrid_ranker(catalog)
            methods["patchbay hybrid"] = rank
            results["embed_s"] = embed_s
    misses_dev: list[dict[str, Any]] = []
    for name, rank in methods.items():
        results["methods"][name] = {}
        for split, reqs in splits.items():
            figures, misses = evaluate(rank, reqs)
            results["methods"][name][split] = figures
            if name == "patchbay" and split == "dev":
                misses_dev = misses
    if hybrid is not None:
        results["oracle_recall@5"] = {s: oracle(hybrid, lexical, v) for s, v in splits.items()}
    if not opts.no_latency:
        results["latency"] = latency(catalog, [r["q"] for r in requests])
        if hybrid is not None:
            results["hybrid_latency"] = hybrid_latency(catalog, hybrid, [r["q"] for r in requests])
    if opts.json:
        print(json.dumps(results, indent=2))
        return
    print(f"catalog: {results['servers']} servers, {results['tools']} tools; requests: {results['requests']}")
    print(f"{'method':26} {'split':5} {'R@1':>6} {'R@5':>6} {'MRR':>6}")
    for name, per in results["methods"].items():
        for split in ("dev", "test", "all"):
            f = per[split]
            print(f"{name:26} {split:5} {f['recall@1']:6.3f} {f['recall@5']:6.3f} {f['mrr']:6.3f}")
    if "latency" in results:
        lat = results["latency"]
        print(
            f"search over {lat['tools']} tools: median {lat['median_ms']:.2f} ms "
            f"(CPU {lat['median_cpu_ms']:.2f} ms), "
            f"p95 {lat['p95_ms']:.2f} ms, median with cached word expansions {lat['median_warm_ms']:.2f} ms "
            f"(index built in {lat['build_s']:.1f} s); adding a server of {lat['added_tools']} tools: "
            f"{lat['add_server_ms']:.1f} ms"
        )
    if "oracle_recall@5" in results:
        o = results["oracle_recall@5"]
        print(
            f"oracle R@5 (BM25F or the encoder alone in its top 5): dev {o['dev']:.3f} test {o['test']:.3f}"
        )
        print(f"embedding the {results['tools']} tools once: {results['embed_s']:.1f} s")
    if "hybrid_latency" in results:
        h = results["hybrid_latency"]
        print(
            f"hybrid search over {h['tools']} tools: median {h['median_ms']:.2f} ms, "
            f"p95 {h['p95_ms']:.2f} ms (of which embedding the request: {h['median_encode_ms']:.2f} ms)"
        )
    if opts.misses:
        for m in misses_dev:
            print(f"  miss: {m['q']!r} expected {m['expected'][:3]} at {m['rank']}; top {m['top']}")


if __name__ == "__main__":
    main()
