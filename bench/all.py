"""Every benchmark in one run: one JSON (bench/results/all.json) and one Markdown file (bench/results/all.md).

Why: the README's figures come from one run of this, on one machine, with the command that reproduces each
table next to it. Each benchmark runs in a process of its own (its own event loop, heap and upstreams), one
after another, and writes its sections as JSON (``--json``); this script adds the machine's facts (CPU
count, load, Python, platform, date, commit) and renders everything.

Run with ``make bench-all`` or ``python -m bench.all [--rounds N] [--http-duration S] [--only core,http]``;
``--with-cluster`` adds bench/cluster.py (Redis, haproxy and four replicas).
On this 2-core machine the defaults take about 6 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.rounds import DASH, render

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCHES = ("core", "catalog", "lists", "startup", "sessions", "agents", "http")
OPTIONAL = ("cluster",)  # needs redis-server and haproxy: only with --with-cluster (or --only cluster)


def commands(ns: argparse.Namespace) -> dict[str, list[str]]:
    r = ns.rounds
    return {
        "core": ["--calls", str(ns.calls), "--rounds", str(r or 20), "--slow-rounds", str(ns.slow_rounds)],
        "catalog": ["--rounds", str(r or 10)],
        "lists": ["--rounds", str(r or 5)],
        "startup": ["--rounds", str(r or 5)],
        "sessions": ["--rounds", str(r or 5)],
        "agents": ["--calls", str(min(ns.calls, 500)), "--rounds", str(r or 10)],
        "http": ["--duration", f"{ns.http_duration:g}", "--rounds", str(ns.http_rounds)],
        "cluster": ["--calls", str(min(ns.calls, 300)), "--rounds", str(r or 8)],
    }


def machine() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }
    with contextlib.suppress(OSError, StopIteration):
        facts["cpu_model"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        facts["commit"] = commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return facts


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# patchbay benchmarks",
        "",
        f"{m['date']}, commit {m.get('commit', '?')}: {m['cpu_count']} CPUs ({m.get('cpu_model', '?')}), "
        f"Python {m['python']}, {m['platform']}; load average {m['load_average'][0]:.2f} at the start, "
        f"{report['load_average_end'][0]:.2f} at the end. Total {report['seconds']:.0f} s.",
        "",
        "Every row is measured in interleaved rounds (bench/rounds.py): a cell is the median of the row's "
        f"per-round values with the min{DASH}max of the rounds in brackets; a ratio is computed in each "
        "round and then summarised the same way.",
        "",
    ]
    for name, bench in report["benches"].items():
        if "error" in bench:
            lines += [f"### {name}: failed", "", "```", bench["error"][-2000:], "```", ""]
            continue
        for section in bench["sections"]:
            lines.append(render(section))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds of core, catalog, lists, startup, sessions, agents (default 20/10/5/5/5/10)",
    )
    parser.add_argument("--calls", type=int, default=500, help="calls per row and round (default 500)")
    parser.add_argument("--slow-rounds", type=int, default=3, help="rounds of core's concurrency/start-up")
    parser.add_argument("--http-duration", type=float, default=5.0, help="seconds per wrk cell (default 5)")
    parser.add_argument("--http-rounds", type=int, default=3, help="rounds of bench.http (default 3)")
    parser.add_argument(
        "--only", default=",".join(BENCHES), help=f"comma-separated subset of {BENCHES + OPTIONAL}"
    )
    parser.add_argument(
        "--with-cluster", action="store_true", help="also bench.cluster (redis-server, haproxy, 4 replicas)"
    )
    ns = parser.parse_args()
    only = [b.strip() for b in ns.only.split(",") if b.strip()]
    if ns.with_cluster and "cluster" not in only:
        only.append("cluster")
    unknown = [b for b in only if b not in BENCHES + OPTIONAL]
    if unknown:
        raise SystemExit(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHES + OPTIONAL)}")
    if "http" in only and shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk (make bench-all installs it)")
    RESULTS.mkdir(exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "benches": {}}
    started = time.monotonic()
    args = commands(ns)
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        for name in only:
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, "-m", f"bench.{name}", *args[name], "--json", str(out)]
            print(f"\n=== {shlex.join(['python', *cmd[1:-2]])}", flush=True)
            t = time.monotonic()
            proc = subprocess.run(cmd, cwd=ROOT, check=False)
            entry: dict[str, Any] = {"seconds": round(time.monotonic() - t, 1)}
            if proc.returncode != 0 or not out.exists():
                entry["error"] = f"exit status {proc.returncode}"
            else:
                entry.update(json.loads(out.read_text()))
            report["benches"][name] = entry
    report["seconds"] = round(time.monotonic() - started, 1)
    report["load_average_end"] = os.getloadavg()
    (RESULTS / "all.json").write_text(json.dumps(report, indent=1))
    (RESULTS / "all.md").write_text(markdown(report))
    print(f"\n{RESULTS / 'all.json'}\n{RESULTS / 'all.md'}  ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
