"""``patchbay profiles list|show|set|remove``: real ``patchbay`` processes, on the config file and through a
real ``patchbay serve``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.conftest import bad
from tests.test_cli import clean_env, cli, cli_many, one_error_line, write
from tests.test_serve import Served, start_serve, stop_serve


def doc() -> dict[str, Any]:
    return {
        "mcpServers": {"gh": bad("--name", "gh"), "fs": bad("--name", "fs")},
        "profiles": {"math": {"tools": ["*__add"]}},
        "pinning": "off",
    }


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    s = await start_serve(write(tmp_path / "hub" / "patchbay.json", doc()))
    yield s
    await stop_serve(s)


def test_profiles_on_the_config_file(tmp_path: Path) -> None:
    config = write(tmp_path / "patchbay.json", doc())
    before = config.read_text()
    set_ = cli(
        "profiles", "set", "coding", "--server", "gh,ghost", "--tool", "gh__*", "--tool", "!gh__crash",
        cwd=tmp_path,
    )  # fmt: skip
    assert set_.code == 0, set_
    assert "using patchbay.json directly" in set_.err  # no hub answers at the test's dead URL
    assert "set profile coding in" in set_.out and "/mcp/coding" in set_.out
    assert "servers: 'ghost' is not a configured server or agent" in set_.err
    saved = json.loads(config.read_text())
    assert saved["profiles"] == {
        "math": {"tools": ["*__add"]},
        "coding": {"servers": ["gh", "ghost"], "tools": ["gh__*", "!gh__crash"]},
    }
    assert saved["mcpServers"] == doc()["mcpServers"]  # the rest kept as written
    listed, shown, table = cli_many(  # readers only, in parallel
        [
            (["profiles", "list", "--json"], {"cwd": tmp_path}),
            (["profiles", "show", "coding", "--json"], {"cwd": tmp_path}),
            (["profiles", "list"], {"cwd": tmp_path}),
        ]
    )
    search = cli("profiles", "set", "big", "--discovery", "search", "--json", cwd=tmp_path)
    assert listed.code == 0 and [p["name"] for p in listed.json()] == ["math", "coding"]
    assert listed.json()[1]["unknown_servers"] == ["ghost"] and listed.json()[1]["tool_count"] is None
    assert shown.code == 0 and shown.json()["tools"] == ["gh__*", "!gh__crash"]
    assert search.code == 0 and search.json()["discovery"] == "search"
    assert table.code == 0 and table.out.splitlines()[0].split() == [
        "PROFILE", "DISCOVERY", "TOOLS", "SERVERS", "PATTERNS"
    ]  # fmt: skip
    assert json.loads(config.read_text())["profiles"]["big"] == {"discovery": "search"}
    replaced = cli("profiles", "set", "coding", "--tool", "fs__*", cwd=tmp_path)  # replaced whole
    assert replaced.code == 0 and json.loads(config.read_text())["profiles"]["coding"] == {"tools": ["fs__*"]}
    removed = cli("profiles", "remove", "coding", cwd=tmp_path)
    assert removed.code == 0 and "removed profile coding from" in removed.out
    assert "coding" not in json.loads(config.read_text())["profiles"]
    assert before != config.read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["profiles", "set", "bad name"], "invalid profile name 'bad name'"),
        (["profiles", "set", "p", "--tool", "!"], "profile 'p': tools: '!' is not a pattern"),
        (["profiles", "set", "p", "--spec", '{"tool": ["x"]}'], "profile 'p': tool: Extra inputs are not"),
        (["profiles", "set", "p", "--spec", "[1]"], "--spec must be a JSON object"),
        (["profiles", "set", "p", "--spec", "{oops"], "--spec is not valid JSON"),
        (["profiles", "set", "p", "--discovery", "lazy"], "invalid choice: 'lazy'"),
        (["profiles", "show", "nope"], "unknown profile 'nope'; known: math"),
        (["profiles", "remove", "nope"], "unknown profile 'nope'; known: math"),
    ],
)
def test_bad_profile_commands_are_one_clear_error_and_change_nothing(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    config = write(tmp_path / "patchbay.json", doc())
    before = config.read_text()
    r = cli(*argv, cwd=tmp_path)
    assert r.code == 2, r
    assert message in one_error_line(r)
    assert config.read_text() == before


async def test_profiles_through_a_running_hub(served: Served, tmp_path: Path) -> None:
    env = clean_env(PATCHBAY_URL=served.base)
    set_ = await asyncio.to_thread(
        cli, "profiles", "set", "lean", "--server", "gh", "--discovery", "search", cwd=tmp_path, env=env
    )
    assert set_.code == 0, set_
    assert "via hub at" in set_.err and "set profile lean on the hub" in set_.out and "tools" in set_.out
    assert json.loads(served.config.read_text())["profiles"]["lean"] == {
        "servers": ["gh"],
        "discovery": "search",
    }  # the hub saved it to its own file
    async with served.http() as http, asyncio.timeout(15):  # its endpoint appears as the hub handles it
        ping = {"jsonrpc": "2.0", "id": 0, "method": "ping"}
        accept = {"Accept": "application/json, text/event-stream"}
        while (await http.post("/mcp/lean", json=ping, headers=accept)).status_code == 404:
            await asyncio.sleep(0.05)
    async with Client(f"{served.base}/mcp/lean") as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["search_tools", "call_tool"]
    listed_json, shown, table, refused = await asyncio.to_thread(
        cli_many,
        [
            (["profiles", "list", "--json"], {"cwd": tmp_path, "env": env}),
            (["profiles", "show", "lean"], {"cwd": tmp_path, "env": env}),
            (["profiles", "list"], {"cwd": tmp_path, "env": env}),
            (["profiles", "set", "x", "--spec", '{"servers": "gh"}'], {"cwd": tmp_path, "env": env}),
        ],
    )
    assert listed_json.code == 0, listed_json
    lean = next(p for p in listed_json.json() if p["name"] == "lean")
    assert lean["discovery"] == "search" and lean["tool_count"] > 2  # its tools, not the meta-tools
    assert shown.code == 0 and "gh__echo" in shown.out and "fs__echo" not in shown.out
    assert "search_tools and call_tool" in shown.out
    assert table.code == 0 and "lean" in table.out and "search" in table.out
    assert refused.code == 2 and "servers: Input should be a valid list" in one_error_line(refused)
    removed = await asyncio.to_thread(cli, "profiles", "remove", "lean", cwd=tmp_path, env=env)
    assert removed.code == 0 and "from the hub" in removed.out
    assert "lean" not in json.loads(served.config.read_text())["profiles"]
    gone = await asyncio.to_thread(cli, "profiles", "show", "lean", cwd=tmp_path, env=env)
    assert gone.code == 2 and "unknown profile 'lean'" in one_error_line(gone)
