"""The hub against five real third-party MCP servers (two Python, three Node), all in one hub.

Starting the servers is the slow part (the Python ones take ~1.4 s to answer ``initialize``), so the module
starts them once, in one hub, and every test shares it. The last test closes that hub and checks that no
server process survives it; it must stay last in the file (pytest runs a module's tests in file order).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from patchbay import result_text
from patchbay.events import CatalogEvent, Event, ServerStateEvent
from patchbay.hub import Hub
from patchbay.supervisor import ServerState
from tests import thirdparty as tp

# Every async test (and the shared fixture) runs in the module's event loop, where the hub lives.
pytestmark = pytest.mark.asyncio(loop_scope="module")

# What each pinned server's tools/list gives a client with ``capabilities: {}`` (everything: 12 before
# ``notifications/initialized`` and 13 after). Minimums, not exact counts, so a hub that later advertises
# more capabilities (everything then registers more tools) does not break this.
MIN_TOOLS = {"everything": 13, "memory": 9, "filesystem": 14, "time": 2, "git": 12}
# server-everything registers this one only after ``initialized``, then sends tools/list_changed.
LATE_TOOL = "everything__simulate-research-query"
NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
FILE_NAME = "hello-patchbay.txt"


@dataclass
class Servers:
    hub: Hub
    allowed_dir: Path
    repo: Path
    events: list[Event] = field(default_factory=list)
    # Every server process (and any descendant) seen while the hub ran, for the shutdown check.
    processes: dict[str, list[psutil.Process]] = field(default_factory=dict)

    def probes(self) -> dict[str, tp.Probe]:
        fs = tp.filesystem_probe(self.allowed_dir)
        return {
            "everything": tp.EVERYTHING_PROBE,
            "memory": tp.MEMORY_PROBE,
            # The probe's "[FILE]" holds for any file; check for the one this module put there.
            "filesystem": fs._replace(expect=f"[FILE] {FILE_NAME}"),
            "time": tp.TIME_PROBE,
            "git": tp.git_probe(self.repo),
        }


def make_git_repo(path: Path) -> None:
    """A real repository with one commit; identity via env so no global git config is needed or touched."""
    path.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "patchbay tests",
        "GIT_AUTHOR_EMAIL": "tests@patchbay.invalid",
        "GIT_COMMITTER_NAME": "patchbay tests",
        "GIT_COMMITTER_EMAIL": "tests@patchbay.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
    }

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(path), *args], check=True, env=env, capture_output=True)

    git("-c", "init.defaultBranch=main", "init", "-q")
    (path / "README.md").write_text("patchbay test repository\n")
    git("add", "README.md")
    git("commit", "-q", "-m", "initial commit")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Servers]:
    tp.require()
    base = tmp_path_factory.mktemp("thirdparty")
    allowed = base / "allowed"
    allowed.mkdir()
    (allowed / FILE_NAME).write_text("hello\n")
    repo = base / "repo"
    make_git_repo(repo)
    memory_dir = base / "memory"
    memory_dir.mkdir()

    hub = Hub.from_dict(
        {
            "mcpServers": {
                "everything": tp.everything(),
                "memory": tp.memory(memory_dir),
                "filesystem": tp.filesystem(allowed),
                "time": tp.time(),
                "git": tp.git(repo),
            }
        }
    )
    setup = Servers(hub, allowed, repo)

    # Subscribe before starting, so the catalog events of the start-up (and of any re-list) are all seen.
    subscription = hub.events()

    async def collect() -> None:
        async for event in subscription:
            setup.events.append(event)

    collector = asyncio.create_task(collect())
    try:
        async with hub:
            for name, status in hub.status().items():
                if status.pid is not None:
                    proc = psutil.Process(status.pid)
                    setup.processes[name] = [proc, *proc.children(recursive=True)]
            yield setup
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        subscription.close()


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def tool_names(hub: Hub) -> set[str]:
    return {t["name"] for t in hub.tools()}


async def test_all_five_ready_and_probes_answer(servers: Servers) -> None:
    hub = servers.hub
    # everything's 13th tool may come with the re-list that follows its list_changed.
    assert await eventually(lambda: LATE_TOOL in tool_names(hub)), sorted(tool_names(hub))

    status = hub.status()
    assert list(status) == list(MIN_TOOLS)
    for name, st in status.items():
        assert st.state == ServerState.READY, f"{name}: {st.state} ({st.last_error}) {st.stderr_tail}"
        assert st.pid is not None and psutil.pid_exists(st.pid), name
        assert st.protocol_version, name
        assert st.server_info and st.server_info.get("name"), name
        assert st.tool_count >= MIN_TOOLS[name], f"{name}: {st.tool_count} tools"
        assert st.tool_count == len(hub.tools(server=name)), name
        assert st.conflicts == [] and st.problems == [], (name, st.conflicts, st.problems)
        assert st.last_error is None, name

    # The names the servers themselves report (pinned versions).
    assert {name: (st.server_info or {}).get("name") for name, st in status.items()} == {
        "everything": "mcp-servers/everything",
        "memory": "memory-server",
        "filesystem": "secure-filesystem-server",
        "time": "mcp-time",
        "git": "mcp-git",
    }
    assert len({st.pid for st in status.values()}) == 5

    async def probe(server: str, p: tp.Probe) -> tuple[str, str, bool]:
        result = await hub.call_tool(f"{server}__{p.tool}", p.arguments, timeout=30)
        return server, result_text(result), bool(result.is_error)

    probes = servers.probes()
    for server, text, is_error in await asyncio.gather(*(probe(s, p) for s, p in probes.items())):
        assert not is_error, f"{server}: {text}"
        assert probes[server].expect in text, f"{server}: {text!r}"


async def test_everything_list_changed_relists(servers: Servers) -> None:
    hub = servers.hub
    assert await eventually(lambda: LATE_TOOL in tool_names(hub)), sorted(tool_names(hub))
    exposed = {t["name"] for t in hub.tools(server="everything")}
    assert {
        "everything__echo",
        "everything__get-sum",
        "everything__trigger-long-running-operation",
        LATE_TOOL,
    } <= exposed
    assert len(exposed) >= MIN_TOOLS["everything"]

    # The initial listing and the re-list after list_changed each update the catalog for "everything"
    # (the re-list may find nothing new if the first tools/list already saw the late tool).
    def everything_catalog_events() -> list[CatalogEvent]:
        return [e for e in servers.events if isinstance(e, CatalogEvent) and e.server == "everything"]

    assert await eventually(lambda: len(everything_catalog_events()) >= 2), everything_catalog_events()
    assert LATE_TOOL in {name for e in everything_catalog_events() for name in e.added}
    assert not any(e.removed for e in everything_catalog_events())
    states = [e.state for e in servers.events if isinstance(e, ServerStateEvent) and e.server == "everything"]
    assert states[:2] == ["starting", "ready"], states


async def test_everything_progress(servers: Servers) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    result = await servers.hub.call_tool(
        "everything__trigger-long-running-operation",
        {"duration": 1, "steps": 4},
        progress=on_progress,
        timeout=30,
    )
    assert not result.is_error, result_text(result)
    assert "Long running operation completed" in result_text(result)
    assert len(seen) >= 2, seen
    progresses = [p for p, _, _ in seen]
    assert progresses == sorted(progresses), seen
    assert all(total == 4 for _, total, _ in seen), seen


@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
async def test_llm_renderings_of_whole_catalog(servers: Servers, fmt: str) -> None:
    hub = servers.hub
    assert await eventually(lambda: LATE_TOOL in tool_names(hub))
    rendered = hub.tools(format=fmt)  # type: ignore[arg-type]
    assert len(rendered) >= sum(MIN_TOOLS.values())
    assert len(rendered) == len(hub.tools())
    names: list[str] = []
    for item in rendered:
        if fmt == "openai":
            assert item["type"] == "function", item
            fn = item["function"]
            name, schema = fn["name"], fn["parameters"]
            assert isinstance(fn["description"], str)
        else:
            name, schema = item["name"], item["input_schema"]
            assert isinstance(item["description"], str)
        assert NAME_RE.match(name), name
        assert isinstance(schema, dict) and schema.get("type") == "object", (name, schema)
        names.append(name)
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    for server in MIN_TOOLS:
        assert any(n.startswith(f"{server}__") for n in names), server


async def test_concurrent_echo_calls(servers: Servers) -> None:
    messages = [f"message {i} / {os.urandom(4).hex()}" for i in range(20)]
    results = await asyncio.gather(
        *(servers.hub.call_tool("everything__echo", {"message": m}, timeout=30) for m in messages)
    )
    for message, result in zip(messages, results, strict=True):
        assert not result.is_error, result_text(result)
        assert result_text(result) == f"Echo: {message}"
    assert servers.hub.server_status("everything").calls_in_flight == 0


# Keep last: it closes the shared hub.
async def test_no_server_process_outlives_the_hub(servers: Servers) -> None:
    procs = [p for ps in servers.processes.values() for p in ps]
    assert {name for name, ps in servers.processes.items() if ps} == set(MIN_TOOLS)
    assert all(p.is_running() for p in procs)

    await servers.hub.close()

    def gone(p: psutil.Process) -> bool:
        # is_running() also guards against pid reuse (it compares the creation time).
        try:
            return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    await eventually(lambda: all(gone(p) for p in procs), timeout=2.0)
    alive = {name: [p.pid for p in ps if not gone(p)] for name, ps in servers.processes.items()}
    assert not any(alive.values()), f"still running after the hub closed: {alive}"
    assert all(st.state == ServerState.STOPPED and st.pid is None for st in servers.hub.status().values())
