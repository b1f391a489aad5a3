"""Profiles on the REST API and the CLI: a real ``patchbay serve`` and real ``patchbay`` processes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import bad
from tests.test_cli import clean_env, cli, cli_many, in_process, one_error_line, write  # noqa: F401
from tests.test_serve import Served, start_serve, stop_serve

PROFILES = {"coding": {"servers": ["gh"], "tools": ["gh__*", "!gh__crash"]}, "math": {"tools": ["*__add"]}}


def doc() -> dict[str, Any]:
    return {
        "mcpServers": {"gh": bad("--name", "gh"), "fs": bad("--name", "fs")},
        "profiles": PROFILES,
        "pinning": "off",
    }


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    config = write(tmp_path / "patchbay.json", doc())
    s = await start_serve(config)
    yield s
    await stop_serve(s)


async def test_rest_lists_profiles_and_their_tools(served: Served) -> None:
    async with served.http() as http:
        tools = (await http.get("/api/tools", params={"profile": "coding"})).json()
        names = [t["name"] for t in tools]
        assert "gh__echo" in names and "gh__crash" not in names and all(n.startswith("gh__") for n in names)
        openai = (await http.get("/api/tools", params={"profile": "math", "format": "openai"})).json()
        assert [t["function"]["name"] for t in openai] == ["gh__add", "fs__add"]
        unknown = await http.get("/api/tools", params={"profile": "nope"})
        assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_profile"
        assert unknown.json()["detail"] == "unknown profile 'nope'; known: coding, math"
        profiles = (await http.get("/api/profiles")).json()
        assert [p["name"] for p in profiles] == ["coding", "math"]
        assert profiles[1] == {
            "name": "math",
            "servers": None,
            "tools": ["*__add"],
            "discovery": "full",
            "tool_count": 2,
            "unknown_servers": [],
        }
        one = (await http.get("/api/profiles/coding")).json()
        assert one["tool_names"] == names and one["tool_count"] == len(names)
        assert (await http.get("/api/profiles/nope")).status_code == 404
        found = (await http.get("/api/tools/search", params={"q": "add numbers", "profile": "coding"})).json()
        assert found[0]["name"] == "gh__add" and all(m["name"].startswith("gh__") for m in found)


async def test_cli_tools_profile_through_a_hub_and_without_one(served: Served, tmp_path: Path) -> None:
    env = clean_env(PATCHBAY_URL=served.base)
    local_dir = tmp_path / "local"
    write(local_dir / "patchbay.json", doc())
    through, refused, local, table = await asyncio.to_thread(
        cli_many,
        [
            (["tools", "--profile", "math", "--json"], {"cwd": tmp_path, "env": env}),
            (["tools", "--profile", "nope"], {"cwd": tmp_path, "env": env}),
            (["tools", "--profile", "math", "--json"], {"cwd": local_dir}),  # no hub: servers started here
            (["tools", "--profile", "coding"], {"cwd": local_dir}),
        ],
    )
    assert through.code == 0, through
    assert [t["name"] for t in through.json()] == ["gh__add", "fs__add"]
    assert refused.code == 2
    assert "unknown profile 'nope'; known: coding, math" in one_error_line(refused)
    assert local.code == 0, local
    assert "using patchbay.json directly" in local.err
    assert [t["name"] for t in local.json()] == ["gh__add", "fs__add"]
    assert table.code == 0 and "gh__echo" in table.out and "fs__echo" not in table.out


def test_config_check_warns_of_unknown_servers_and_refuses_bad_profiles(
    tmp_path: Path,
    in_process: Any,  # noqa: F811
) -> None:
    good = doc()
    good["profiles"] = {"typo": {"servers": ["gh", "gihub"]}}
    write(tmp_path / "patchbay.json", good)
    bad_doc = doc()
    bad_doc["profiles"] = {"coding": {"tools": "gh__*"}, "bad name": {}}
    write(tmp_path / "bad.json", bad_doc)
    report = in_process("config", "check", "patchbay.json", "--json", cwd=tmp_path)
    assert report.code == 0 and report.json()["valid"] is True
    assert [w["message"] for w in report.json()["warnings"]] == [
        "profile 'typo': servers: 'gihub' is not a configured server or agent"
    ]
    refused = in_process("config", "check", "bad.json", "--json", cwd=tmp_path)
    assert refused.code == 1
    messages = " | ".join(e["message"] for e in refused.json()["errors"])
    assert "profile 'coding': tools: Input should be a valid list" in messages
    assert "invalid profile name 'bad name'" in messages
    assert json.loads((tmp_path / "bad.json").read_text()) == bad_doc  # never rewritten


async def test_profiles_managed_at_runtime_through_rest(served: Served) -> None:
    before = served.config.read_text()
    async with served.http() as http:
        bad_put = await http.put("/api/profiles/files", json={"tools": "fs__*"})
        assert bad_put.status_code == 422 and bad_put.json()["error"] == "config"
        assert "profile 'files': tools: Input should be a valid list" in bad_put.json()["detail"]
        assert (await http.put("/api/profiles/bad name", json={})).status_code == 422
        assert served.config.read_text() == before  # nothing saved
        put = await http.put("/api/profiles/files", json={"servers": ["fs"]})
        assert put.status_code == 200 and put.json()["name"] == "files" and put.json()["tool_count"] > 0
        saved = json.loads(served.config.read_text())
        assert (
            saved["profiles"]["files"] == {"servers": ["fs"]}
            and saved["profiles"]["coding"] == PROFILES["coding"]
        )
        assert saved["mcpServers"]["gh"] == doc()["mcpServers"]["gh"]  # the rest kept as written

        async def status(path: str) -> int:
            ping = {"jsonrpc": "2.0", "id": 0, "method": "ping"}
            r = await http.post(path, json=ping, headers={"Accept": "application/json, text/event-stream"})
            return r.status_code

        async with asyncio.timeout(10):  # the endpoint is added as the profiles event is handled
            while await status("/mcp/files") == 404:
                await asyncio.sleep(0.05)
        tools = (await http.get("/api/tools", params={"profile": "files"})).json()
        assert tools and all(t["name"].startswith("fs__") for t in tools)
        assert (await http.delete("/api/profiles/files")).status_code == 204
        assert "files" not in json.loads(served.config.read_text())["profiles"]
        assert (await http.get("/api/tools", params={"profile": "files"})).status_code == 404
        async with asyncio.timeout(10):
            while await status("/mcp/files") != 404:
                await asyncio.sleep(0.05)
        gone = await http.delete("/api/profiles/files")
        assert gone.status_code == 404 and gone.json()["error"] == "unknown_profile"
