"""Start-up of the commands that do not serve, in interleaved rounds: wall and CPU time of a whole process.

Why: ``patchbay --help``, ``config check``, ``import`` and ``servers list`` on a file are typed by hand and
run by scripts; they must finish in ≤ 0.3 s (issue 12), which they cannot if they import the MCP SDK
(1-2 s). Which modules they import is a test (tests/test_startup_imports.py); how long they take is measured
here. Each row runs its command ``--runs`` times per round as a fresh ``python -m patchbay`` process (no hub
running: ``servers list`` falls back to the file) and reports the median wall time and the median CPU time
(user + system, less sensitive to a busy machine). ``config check`` runs on a one-server file and on a
full config (every section it validates: servers with OAuth, agents, profiles, tokens, ``auth.oauth``,
tracing, rate limits, audit). Two reference rows: the interpreter alone
(``python -c pass``) and ``python -c "import mcp"``, the cost these commands no longer pay.

Run with ``python -m bench.startup [--rounds N] [--runs N]`` (``make bench-all`` runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.rounds import Column, Section, finish, run_sync

GOAL_S = 0.3
URL = "https://example.com/mcp"
# Every section config check validates: servers (stdio, remote with OAuth), agents, profiles, tokens with
# roles, auth.oauth (the resource server), tracing, rate limits, audit.
FULL_CONFIG = {
    "mcpServers": {
        "local": {"command": "echo", "args": ["x"], "env": {"HOME_DIR": "${HOME}"}},
        "gh": {"url": URL, "oauth": {"clientId": "c", "clientSecret": "s", "scopes": ["repo"]}},
        "machine": {
            "url": URL,
            "oauth": {"grant": "client_credentials", "clientId": "c", "clientSecret": "s"},
        },
    },
    "agents": {"laptop": {"token": "agent-token"}},
    "profiles": {"coding": {"servers": ["local", "gh"], "tools": ["local__*"]}},
    "auth": {
        "tokens": ["admin-token", {"name": "ci", "token": "ci-token", "role": "user", "profile": "coding"}],
        "oauth": {
            "issuer": "https://idp.example.com",
            "resource": "https://hub.example.com/mcp",
            "scopes": {"mcp": "user"},
        },
    },
    "telemetry": {"otlpEndpoint": "http://collector.example:4318"},
    "rateLimits": {"default": "100/min"},
    "audit": {"maxBytes": 10_000_000},
}


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """One process: (wall seconds, CPU seconds of it)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(ns: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        cwd = Path(tmp)
        (cwd / "cfg.json").write_text(json.dumps({"mcpServers": {"a": {"command": "echo", "args": ["x"]}}}))
        (cwd / "claude.json").write_text(json.dumps({"mcpServers": {"x": {"command": "echo"}}}))
        (cwd / "full.json").write_text(json.dumps(FULL_CONFIG))
        # PYTHONDONTWRITEBYTECODE would make every run compile patchbay's sources again (+0.1 s): an
        # installed package has its .pyc files, and the warm-up below writes them for a source tree
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PATCHBAY_", "OTEL_")) and k != "PYTHONDONTWRITEBYTECODE"
        }
        env["PATCHBAY_URL"] = f"http://127.0.0.1:{dead_port()}"  # no hub: commands use the file
        pb = [sys.executable, "-m", "patchbay"]
        py = sys.executable
        commands = {
            "python -c pass": [py, "-c", "pass"],
            'python -c "import mcp"': [py, "-c", "import mcp"],
            "patchbay --help": [*pb, "--help"],
            "patchbay config check": [*pb, "config", "check", "--config", "cfg.json"],
            "patchbay config check (full config)": [*pb, "config", "check", "--config", "full.json"],
            "patchbay servers list --config FILE": [*pb, "servers", "list", "--config", "cfg.json"],
            "patchbay import claude --dry-run": [
                *pb,
                "import",
                "claude",
                "claude.json",
                "--config",
                "out.json",
                "--dry-run",
            ],
        }
        envs = dict.fromkeys(commands, env)
        if ns.baseline:  # the same commands on another source tree, in the same rounds
            old = {**env, "PYTHONPATH": str(Path(ns.baseline).resolve())}
            for name in [n for n in commands if n.startswith("patchbay")]:
                commands[f"{name} (baseline)"] = commands[name]
                envs[f"{name} (baseline)"] = old
        for name, cmd in commands.items():  # warm the .pyc caches and the page cache
            run(cmd, cwd, envs[name])

        def row(name: str) -> Callable[[int], dict[str, float]]:
            def measure(rnd: int) -> dict[str, float]:
                runs = [run(commands[name], cwd, envs[name]) for _ in range(ns.runs)]
                walls, cpus = zip(*runs, strict=True)
                return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}

            return measure

        results = run_sync({k: row(k) for k in commands}, ns.rounds, verbose=ns.verbose)
    section = Section(
        name="startup",
        title="Start-up of commands that do not serve (a fresh process each)",
        command=f"python -m bench.startup --rounds {ns.rounds} --runs {ns.runs}"
        + (" --baseline OTHER/src" if ns.baseline else ""),
        rounds=ns.rounds,
        rows=list(commands),
        columns=[
            Column("wall_s", "wall", unit=" s", fmt="{:.3f}"),
            Column("cpu_s", "CPU", unit=" s", fmt="{:.3f}"),
        ],
        params=vars(ns),
        results=results,
    )
    for name in commands:
        if name.startswith("patchbay") and not name.endswith("(baseline)"):
            wall = results.stat(name, "wall_s").median
            section.goal(f"{name} (wall, s)", wall, f"≤ {GOAL_S:g}", wall <= GOAL_S)
    section.notes.append(f"load average at the end: {os.getloadavg()[0]:.2f} (wall time grows with it)")
    finish([section], ns.json)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--runs", type=int, default=5, help="processes per row and round (default 5)")
    parser.add_argument(
        "--baseline", help="also run the commands with PYTHONPATH=BASELINE (another checkout's src)"
    )
    parser.add_argument("--json", help="write the results here (bench/all.py does)")
    parser.add_argument("--verbose", action="store_true", help="print every round")
    main(parser.parse_args())
