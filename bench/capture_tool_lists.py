"""Capture the tool lists of real published MCP servers into ``bench/data/tool_lists.json``.

The search benchmark (``bench/search_quality.py``) runs offline on that JSON; this script is how it was
made. It installs each server by pinned version into ``bench/.cache`` (npm packages into one folder,
each PyPI package into a venv of its own, since their pins conflict), launches it over stdio with dummy
credentials, and asks only ``initialize`` and ``tools/list``: no tool is ever called. Each launch is
bounded by a timeout; a server that fails is skipped and reported.

    .venv/bin/python bench/capture_tool_lists.py [--only NAME ...] [--jobs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import venv
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
NPM_DIR = CACHE / "npm"
OUT = HERE / "data" / "tool_lists.json"
TIMEOUT = 60.0

DUMMY = "dummy-not-a-real-credential"


@dataclass
class Server:
    name: str
    kind: str  # "npm" | "pypi"
    package: str
    version: str
    bin: str  # npm: the package's bin name (under node_modules/.bin); pypi: the console script
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


SERVERS = [
    Server(
        "everything", "npm", "@modelcontextprotocol/server-everything", "2026.8.31", "mcp-server-everything"
    ),
    Server(
        "filesystem",
        "npm",
        "@modelcontextprotocol/server-filesystem",
        "2026.8.31",
        "mcp-server-filesystem",
        ["{tmp}"],
    ),
    Server(
        "memory",
        "npm",
        "@modelcontextprotocol/server-memory",
        "2026.8.31",
        "mcp-server-memory",
        env={"MEMORY_FILE_PATH": "{tmp}/memory.json"},
    ),
    Server(
        "thinking",
        "npm",
        "@modelcontextprotocol/server-sequential-thinking",
        "2026.8.31",
        "mcp-server-sequential-thinking",
    ),
    Server("playwright", "npm", "@playwright/mcp", "0.0.83", "mcp-server-playwright"),
    Server(
        "notion",
        "npm",
        "@notionhq/notion-mcp-server",
        "2.5.2",
        "notion-mcp-server",
        env={"NOTION_TOKEN": DUMMY},
    ),
    Server(
        "github",
        "npm",
        "@modelcontextprotocol/server-github",
        "2025.4.8",
        "mcp-server-github",
        env={"GITHUB_PERSONAL_ACCESS_TOKEN": DUMMY},
    ),
    Server(
        "slack",
        "npm",
        "@modelcontextprotocol/server-slack",
        "2025.4.25",
        "mcp-server-slack",
        env={"SLACK_BOT_TOKEN": "xoxb-" + DUMMY, "SLACK_TEAM_ID": "T00000000"},
    ),
    Server(
        "postgres",
        "npm",
        "@modelcontextprotocol/server-postgres",
        "0.6.2",
        "mcp-server-postgres",
        ["postgresql://127.0.0.1:1/none"],
    ),
    Server(
        "brave",
        "npm",
        "@modelcontextprotocol/server-brave-search",
        "0.6.2",
        "mcp-server-brave-search",
        env={"BRAVE_API_KEY": DUMMY},
    ),
    Server("puppeteer", "npm", "@modelcontextprotocol/server-puppeteer", "2025.5.12", "mcp-server-puppeteer"),
    Server(
        "gitlab",
        "npm",
        "@modelcontextprotocol/server-gitlab",
        "2025.4.25",
        "mcp-server-gitlab",
        env={"GITLAB_PERSONAL_ACCESS_TOKEN": DUMMY, "GITLAB_API_URL": "http://127.0.0.1:1/api/v4"},
    ),
    Server(
        "maps",
        "npm",
        "@modelcontextprotocol/server-google-maps",
        "0.6.2",
        "mcp-server-google-maps",
        env={"GOOGLE_MAPS_API_KEY": DUMMY},
    ),
    Server(
        "redis",
        "npm",
        "@modelcontextprotocol/server-redis",
        "2025.4.25",
        "mcp-server-redis",
        ["redis://127.0.0.1:1"],
    ),
    Server("context7", "npm", "@upstash/context7-mcp", "4.1.1", "context7-mcp"),
    Server("firecrawl", "npm", "firecrawl-mcp", "3.26.0", "firecrawl-mcp", env={"FIRECRAWL_API_KEY": DUMMY}),
    Server("stripe", "npm", "@stripe/mcp", "0.3.3", "mcp", ["--tools=all", "--api-key=sk_test_" + DUMMY]),
    Server(
        "supabase",
        "npm",
        "@supabase/mcp-server-supabase",
        "0.13.0",
        "mcp-server-supabase",
        ["--access-token=" + DUMMY],
    ),
    Server("kubernetes", "npm", "mcp-server-kubernetes", "4.1.7", "mcp-server-kubernetes"),
    Server("sentry", "npm", "@sentry/mcp-server", "0.39.0", "sentry-mcp", ["--access-token=" + DUMMY]),
    Server(
        "heroku", "npm", "@heroku/mcp-server", "1.2.8", "heroku-mcp-server", env={"HEROKU_API_KEY": DUMMY}
    ),
    Server("exa", "npm", "exa-mcp-server", "3.4.1", "exa-mcp-server", env={"EXA_API_KEY": DUMMY}),
    Server("tavily", "npm", "tavily-mcp", "0.2.22", "tavily-mcp", env={"TAVILY_API_KEY": DUMMY}),
    Server(
        "gdrive",
        "npm",
        "@modelcontextprotocol/server-gdrive",
        "2025.1.14",
        "mcp-server-gdrive",
        env={"GDRIVE_CREDENTIALS_PATH": "{tmp}/none.json"},
    ),
    Server(
        "everart",
        "npm",
        "@modelcontextprotocol/server-everart",
        "0.6.2",
        "mcp-server-everart",
        env={"EVERART_API_KEY": DUMMY},
    ),
    Server(
        "awskb",
        "npm",
        "@modelcontextprotocol/server-aws-kb-retrieval",
        "0.6.2",
        "mcp-server-aws-kb-retrieval",
        env={"AWS_ACCESS_KEY_ID": DUMMY, "AWS_SECRET_ACCESS_KEY": DUMMY, "AWS_REGION": "us-east-1"},
    ),
    Server(
        "hubspot",
        "npm",
        "@hubspot/mcp-server",
        "0.4.0",
        "mcp-server-hubspot",
        env={"PRIVATE_APP_ACCESS_TOKEN": DUMMY},
    ),
    Server("desktop", "npm", "@wonderwhy-er/desktop-commander", "0.2.52", "desktop-commander"),
    Server(
        "airtable",
        "npm",
        "airtable-mcp-server",
        "1.14.0",
        "airtable-mcp-server",
        env={"AIRTABLE_API_KEY": DUMMY},
    ),
    Server("neon", "npm", "@neondatabase/mcp-server-neon", "0.6.5", "mcp-server-neon", ["start", DUMMY]),
    Server(
        "gitlab2",
        "npm",
        "@zereight/mcp-gitlab",
        "2.1.64",
        "mcp-gitlab",
        env={
            "GITLAB_PERSONAL_ACCESS_TOKEN": DUMMY,
            "GITLAB_API_URL": "http://127.0.0.1:1/api/v4",
            "USE_PIPELINE": "true",
            "USE_MILESTONE": "true",
            "USE_GITLAB_WIKI": "true",
        },
    ),
    Server(
        "mongodb",
        "npm",
        "mongodb-mcp-server",
        "3.0.4",
        "mongodb-mcp-server",
        env={
            "MDB_MCP_API_CLIENT_ID": DUMMY,
            "MDB_MCP_API_CLIENT_SECRET": DUMMY,
            "MDB_MCP_TELEMETRY": "disabled",
        },
    ),
    Server("devtools", "npm", "chrome-devtools-mcp", "1.11.0", "chrome-devtools-mcp"),
    Server(
        "upstash", "npm", "@upstash/mcp-server", "0.3.0", "mcp-server", ["run", "nobody@example.com", DUMMY]
    ),
    Server(
        "circleci",
        "npm",
        "@circleci/mcp-server-circleci",
        "0.20.0",
        "mcp-server-circleci",
        env={"CIRCLECI_TOKEN": DUMMY},
    ),
    Server(
        "gitops",
        "npm",
        "@cyanheads/git-mcp-server",
        "2.15.3",
        "git-mcp-server",
        env={"MCP_TRANSPORT_TYPE": "stdio", "MCP_LOG_LEVEL": "error"},
    ),
    Server("pwauto", "npm", "@executeautomation/playwright-mcp-server", "1.0.12", "mcp-server-playwright"),
    Server(
        "browserbase",
        "npm",
        "@browserbasehq/mcp-server-browserbase",
        "2.4.3",
        "mcp-server-browserbase",
        env={"BROWSERBASE_API_KEY": DUMMY, "BROWSERBASE_PROJECT_ID": DUMMY, "GEMINI_API_KEY": DUMMY},
    ),
    Server(
        "mapbox",
        "npm",
        "@mapbox/mcp-server",
        "0.14.0",
        "mcp-server",
        env={"MAPBOX_ACCESS_TOKEN": "pk." + DUMMY},
    ),
    Server("railway", "npm", "@railway/mcp-server", "0.1.12", "railway-mcp-server"),
    Server(
        "atlassian",
        "pypi",
        "mcp-atlassian",
        "0.23.1",
        "mcp-atlassian",
        env={
            "JIRA_URL": "http://127.0.0.1:1",
            "JIRA_USERNAME": "nobody",
            "JIRA_API_TOKEN": DUMMY,
            "CONFLUENCE_URL": "http://127.0.0.1:1/wiki",
            "CONFLUENCE_USERNAME": "nobody",
            "CONFLUENCE_API_TOKEN": DUMMY,
        },
    ),
    Server("docker", "pypi", "mcp-server-docker", "1.0.0", "mcp-server-docker"),
    Server("time", "pypi", "mcp-server-time", "2026.10.19", "mcp-server-time"),
    Server("git", "pypi", "mcp-server-git", "2026.10.19", "mcp-server-git"),
    Server("fetch", "pypi", "mcp-server-fetch", "2026.10.24", "mcp-server-fetch"),
    Server(
        "sqlite", "pypi", "mcp-server-sqlite", "2025.4.25", "mcp-server-sqlite", ["--db-path", "{tmp}/x.db"]
    ),
    Server(
        "awsdocs",
        "pypi",
        "awslabs.aws-documentation-mcp-server",
        "1.2.3",
        "awslabs.aws-documentation-mcp-server",
    ),
]


def install_npm(server: Server) -> Path:
    """Each npm server in a folder of its own (one broken dependency tree cannot sink the others);
    install scripts are skipped, so nothing downloads a browser."""
    folder = NPM_DIR / server.name
    exe = folder / "node_modules" / ".bin" / server.bin
    if not exe.exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "package.json").write_text(json.dumps({"name": f"bench-{server.name}", "private": True}))
        subprocess.run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--legacy-peer-deps",
                f"{server.package}@{server.version}",
            ],
            cwd=folder,
            check=True,
            capture_output=True,
            timeout=600,
            env={**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"},
        )
    if not exe.exists():  # the bin is not named as guessed: take the one the package declares
        meta = json.loads((folder / "node_modules" / server.package / "package.json").read_text())
        bins = meta.get("bin")
        name = server.package.split("/")[-1] if isinstance(bins, str) else next(iter(bins or {}), server.bin)
        exe = folder / "node_modules" / ".bin" / name
    return exe


def install_pypi(server: Server) -> Path:
    """Each PyPI server in a venv of its own: their pins conflict with each other and with patchbay's."""
    env_dir = CACHE / f"venv-{server.name}"
    exe = env_dir / "bin" / server.bin
    if not exe.exists():
        venv.create(env_dir, with_pip=True)
        subprocess.run(
            [str(env_dir / "bin" / "pip"), "install", "-q", f"{server.package}=={server.version}"],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return exe


def command_for(server: Server) -> list[str]:
    return [str(install_npm(server) if server.kind == "npm" else install_pypi(server))]


async def rpc(proc: asyncio.subprocess.Process, msg_id: int, method: str, params: dict[str, object]) -> dict:
    assert proc.stdin and proc.stdout
    proc.stdin.write(
        json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}).encode() + b"\n"
    )
    await proc.stdin.drain()
    while True:
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError("exited before answering")
        with contextlib.suppress(ValueError):
            msg = json.loads(line)
            if isinstance(msg, dict) and msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]  # type: ignore[no-any-return]


async def list_tools(server: Server, tmp: Path) -> list[dict]:
    cmd = command_for(server) + [a.replace("{tmp}", str(tmp)) for a in server.args]
    env = {**os.environ, **{k: v.replace("{tmp}", str(tmp)) for k, v in server.env.items()}}
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        cwd=tmp,
        limit=64 * 1024 * 1024,
        start_new_session=True,
    )
    try:
        await rpc(
            proc,
            1,
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "patchbay-bench-capture", "version": "0"},
            },
        )
        assert proc.stdin
        proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        tools: list[dict] = []
        cursor = None
        for i in range(2, 50):
            result = await rpc(proc, i, "tools/list", {"cursor": cursor} if cursor else {})
            tools += result.get("tools", [])
            cursor = result.get("nextCursor")
            if not cursor:
                break
        return tools
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()


async def capture(servers: list[Server], jobs: int) -> dict[str, dict]:
    sem = asyncio.Semaphore(jobs)
    out: dict[str, dict] = {}

    async def one(s: Server) -> None:
        async with sem:
            tmp = CACHE / "tmp" / s.name
            tmp.mkdir(parents=True, exist_ok=True)
            try:
                await asyncio.to_thread(command_for, s)  # install (cached)
                tools = await asyncio.wait_for(list_tools(s, tmp), TIMEOUT)
            except Exception as exc:
                detail = (
                    exc.stderr.decode(errors="replace")[-300:]
                    if isinstance(exc, subprocess.CalledProcessError) and exc.stderr
                    else exc
                )
                print(
                    f"SKIP {s.name} ({s.package}@{s.version}): {type(exc).__name__}: {detail}",
                    file=sys.stderr,
                    flush=True,
                )
                return
            print(
                f"ok   {s.name:12} {len(tools):4} tools  {s.package}@{s.version}", file=sys.stderr, flush=True
            )
            out[s.name] = {"package": f"{s.kind}:{s.package}@{s.version}", "tools": tools}

    await asyncio.gather(*(one(s) for s in servers))
    return {n: out[n] for n in sorted(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="capture only these servers (merged into the existing JSON)")
    ap.add_argument("--jobs", type=int, default=3)
    opts = ap.parse_args()
    servers = [s for s in SERVERS if not opts.only or s.name in opts.only]
    captured = asyncio.run(capture(servers, opts.jobs))
    data = json.loads(OUT.read_text()) if opts.only and OUT.exists() else {}
    data.update(captured)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(dict(sorted(data.items())), indent=1, sort_keys=False) + "\n")
    total = sum(len(v["tools"]) for v in data.values())
    print(f"{len(data)} servers, {total} tools -> {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
