"""``"discovery": "search"`` profiles: two meta-tools instead of the tools, on the Hub API, REST and MCP.

The hub-level tests run real stdio servers in this process's hub; the end-to-end ones run a real
``patchbay serve`` with real third-party servers (memory, filesystem, time) and the SDK's clients in both
protocol eras.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mcp.types as types
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from patchbay import Hub
from patchbay.errors import ToolNotInProfileError
from tests import thirdparty
from tests.conftest import bad, wait_for
from tests.test_serve import Served, start_serve, stop_serve, text

META = ["search_tools", "call_tool"]


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    doc = {
        "mcpServers": {"gh": bad("--name", "gh"), "fs": bad("--name", "fs")},
        "profiles": {
            "lean": {"servers": ["gh"], "tools": ["!gh__crash"], "discovery": "search"},
            "full": {"servers": ["gh"]},
        },
        "pinning": "off",
    }
    async with Hub.from_dict(doc) as h:
        yield h


def found(result: types.CallToolResult) -> list[str]:
    assert not result.is_error, text(result)
    assert result.structured_content is not None
    return [t["name"] for t in result.structured_content["tools"]]


async def test_a_search_profile_lists_its_meta_tools_in_every_format(hub: Hub) -> None:
    mcp_tools = hub.tools(profile="lean")
    assert [t["name"] for t in mcp_tools] == META
    assert mcp_tools[0]["inputSchema"]["required"] == ["query"]
    assert mcp_tools[0]["annotations"]["readOnlyHint"] is True
    assert [t["function"]["name"] for t in hub.tools("openai", profile="lean")] == META
    anthropic = hub.tools("anthropic", profile="lean")
    assert [t["name"] for t in anthropic] == META and anthropic[1]["input_schema"]["required"] == ["name"]
    assert hub.tools(profile="lean", server="gh") == []  # no listed tool is a server's
    # A query asks for one turn's tools: the profile's own, never the meta-tools.
    turn = [t["name"] for t in hub.tools(profile="lean", query="echo the text back", limit=3)]
    assert turn[0] == "gh__echo" and not set(turn) & set(META)
    info = hub.profiles()["lean"]
    assert info.discovery == "search" and info.to_json()["discovery"] == "search"
    assert info.tool_count == len(hub.catalog.tools_of("gh")) - 1  # its tools, without gh__crash
    assert hub.profiles()["full"].discovery == "full"


async def test_search_tools_finds_the_profiles_tools_with_their_schemas(hub: Hub) -> None:
    result = await hub.call_tool("search_tools", {"query": "echo my text back"}, profile="lean")
    names = found(result)
    assert names[0] == "gh__echo" and all(n.startswith("gh__") for n in names)
    assert len(names) <= 8  # the default limit
    first = result.structured_content["tools"][0]  # type: ignore[index]
    assert first["description"] == "Echo the text back." and "text" in first["inputSchema"]["properties"]
    assert "gh__echo: Echo the text back." in text(result) and '"text"' in text(result)
    assert found(await hub.call_tool("search_tools", {"query": "crash the server"}, profile="lean"))[:1] != [
        "gh__crash"
    ]  # excluded by the profile's "!gh__crash"
    assert len(found(await hub.call_tool("search_tools", {"query": "tool", "limit": 2}, profile="lean"))) <= 2
    none = await hub.call_tool("search_tools", {"query": "zzyzx qwv"}, profile="lean")
    assert found(none) == [] and "No tool of profile 'lean' matches 'zzyzx qwv'" in text(none)


async def test_call_tool_runs_the_profiles_tools_and_refuses_the_others(hub: Hub) -> None:
    hi = {"name": "gh__echo", "arguments": {"text": "hi"}}
    echoed = await hub.call_tool("call_tool", hi, profile="lean")
    assert not echoed.is_error and text(echoed) == "hi"
    as_text = {"name": "gh__add", "arguments": '{"a": 2, "b": 3}'}  # arguments sent as JSON text
    assert (await hub.call_tool("call_tool", as_text, profile="lean")).structured_content == {"result": 5}
    other = {"name": "fs__echo", "arguments": {"text": "x"}}
    outside = await hub.call_tool("call_tool", other, profile="lean")
    assert outside.is_error and text(outside) == (
        "tool 'fs__echo' is not in profile 'lean'; did you mean 'gh__echo'?"
    )
    excluded = await hub.call_tool("call_tool", {"name": "gh__crash"}, profile="lean")
    assert excluded.is_error and "not in profile 'lean'" in text(excluded)
    unknown = await hub.call_tool("call_tool", {"name": "gh__ecko"}, profile="lean")
    assert unknown.is_error and "unknown tool 'gh__ecko' in profile 'lean'" in text(unknown)
    assert "'gh__echo'" in text(unknown)  # suggested
    # The tools search_tools returned may also be called by name, as models often do.
    assert text(await hub.call_tool("gh__echo", {"text": "direct"}, profile="lean")) == "direct"
    with pytest.raises(ToolNotInProfileError, match="tool 'fs__echo' is not in profile 'lean'"):
        await hub.call_tool("fs__echo", {"text": "x"}, profile="lean")
    # A profile listing its tools has no meta-tools, and /mcp none either.
    with pytest.raises(ToolNotInProfileError, match="unknown tool 'search_tools' in profile 'full'"):
        await hub.call_tool("search_tools", {"query": "echo"}, profile="full")


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("search_tools", {}, "search_tools needs 'query'"),
        ("search_tools", {"query": "  "}, "search_tools needs 'query'"),
        ("search_tools", {"query": 3}, "search_tools needs 'query'"),
        ("search_tools", {"query": "echo", "limit": 0}, "'limit' must be a whole number from 1 to 50, not 0"),
        ("search_tools", {"query": "echo", "limit": 51}, "'limit' must be a whole number from 1 to 50"),
        ("search_tools", {"query": "echo", "limit": "3"}, "not '3'"),
        ("search_tools", {"query": "echo", "limit": True}, "not True"),
        ("search_tools", {"query": "echo", "top": 3}, "takes 'query' and 'limit' only (got 'top')"),
        ("call_tool", {}, "call_tool needs 'name'"),
        ("call_tool", {"name": ""}, "call_tool needs 'name'"),
        ("call_tool", {"name": "gh__echo", "arguments": [1]}, "must be an object, not list"),
        ("call_tool", {"name": "gh__echo", "arguments": "{oops"}, "must be a JSON object, not text"),
        ("call_tool", {"name": "gh__echo", "text": "x"}, "the arguments of 'gh__echo' inside 'arguments'"),
        ("call_tool", {"name": "call_tool"}, "'call_tool' is one of the meta-tools"),
        ("call_tool", {"name": "search_tools"}, "'search_tools' is one of the meta-tools: call it directly"),
    ],
)
async def test_bad_meta_tool_arguments_are_error_results_naming_the_argument(
    hub: Hub, tool: str, arguments: dict[str, Any], message: str
) -> None:
    result = await hub.call_tool(tool, arguments, profile="lean")
    assert result.is_error and message in text(result)


async def test_the_llm_helpers_run_a_search_profiles_meta_tools(hub: Hub) -> None:
    search = {"name": "search_tools", "arguments": json.dumps({"query": "add two numbers", "limit": 1})}
    call = {"name": "call_tool", "arguments": json.dumps({"name": "gh__add", "arguments": {"a": 1, "b": 2}})}
    message = {
        "role": "assistant",
        "tool_calls": [
            {"id": "s", "type": "function", "function": search},
            {"id": "c", "type": "function", "function": call},
        ],
    }
    searched, called = await hub.run_openai_tool_calls(message, profile="lean")
    assert searched["tool_call_id"] == "s" and "gh__add" in searched["content"]
    assert called["tool_call_id"] == "c" and "3" in called["content"]
    blocks = await hub.run_anthropic_tool_uses(
        [{"type": "tool_use", "id": "u", "name": "call_tool", "input": {"name": "fs__echo"}}], profile="lean"
    )
    assert blocks[0]["is_error"] is True and "not in profile 'lean'" in blocks[0]["content"][0]["text"]


async def test_a_search_profiles_listing_does_not_change_with_its_tools(hub: Hub) -> None:
    view = hub.profile("lean")
    before = view.snapshot(hub.catalog)
    assert (await hub.call_tool("gh__set_tools", {"names": ["fresh"]})).is_error is False
    await wait_for(lambda: "gh__fresh" in hub.catalog.tools, what="gh re-listed")
    assert "gh__fresh" in view.names(hub.catalog)  # callable and searchable at once ...
    assert view.snapshot(hub.catalog) == before  # ... but what its clients list is the same
    assert found(await hub.call_tool("search_tools", {"query": "fresh"}, profile="lean"))[0] == "gh__fresh"
    full = hub.profile("full")
    assert "gh__fresh" in {t.name for t in full.mcp_tools(hub.catalog)}


async def test_discovery_is_saved_and_changed_at_runtime(tmp_path: Path) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"gh": bad("--name", "gh")}, "pinning": "off"}))
    async with Hub.from_file(config) as h:
        info = await h.set_profile("lean", {"servers": ["gh"], "discovery": "search"})
        assert info.discovery == "search"
        saved = json.loads(config.read_text())["profiles"]
        assert saved == {"lean": {"servers": ["gh"], "discovery": "search"}}
        assert [t["name"] for t in h.tools(profile="lean")] == META
        await h.set_profile("lean", {"servers": ["gh"]})
        assert "gh__echo" in [t["name"] for t in h.tools(profile="lean")]
        before = config.read_text()
        with pytest.raises(Exception, match="discovery: Input should be 'full' or 'search'"):
            await h.set_profile("lean", {"discovery": "lazy"})
        assert config.read_text() == before  # nothing half-applied


# --- end to end: patchbay serve, real third-party servers, the SDK's clients ------------------------------


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    thirdparty.require("memory", "filesystem", "time")
    files = tmp_path / "files"
    files.mkdir()
    (files / "notes.txt").write_text("patchbay")
    config = tmp_path / "patchbay.json"
    doc = {
        "mcpServers": {
            "memory": thirdparty.memory(tmp_path),
            "files": thirdparty.filesystem(files),
            "time": thirdparty.time(),
            "gh": bad("--name", "gh"),
        },
        "profiles": {
            "lean": {"servers": ["memory", "files", "gh"], "discovery": "search"},
            "ghonly": {"servers": ["gh"]},
        },
        "pinning": "off",
    }
    config.write_text(json.dumps(doc, indent=2))
    s = await start_serve(config)
    yield s
    await stop_serve(s)


async def test_a_handshake_era_client_searches_and_calls_real_servers(served: Served, tmp_path: Path) -> None:
    async with streamable_http_client(f"{served.base}/mcp/lean") as (r, w), ClientSession(r, w) as session:
        await session.initialize()
        listed = (await session.list_tools()).tools
        assert [t.name for t in listed] == META
        graph = await session.call_tool("search_tools", {"query": "read the whole knowledge graph"})
        assert found(graph)[0] == "memory__read_graph"
        folder = await session.call_tool("search_tools", {"query": "list the files in a folder", "limit": 3})
        assert "files__list_directory" in found(folder)
        read = await session.call_tool("call_tool", {"name": "memory__read_graph", "arguments": {}})
        assert not read.is_error and thirdparty.MEMORY_PROBE.expect in text(read)
        listing = await session.call_tool(
            "call_tool",
            {"name": "files__list_directory", "arguments": {"path": str((tmp_path / "files").absolute())}},
        )
        assert not listing.is_error and "[FILE] notes.txt" in text(listing)
        refused = await session.call_tool(
            "call_tool", {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}
        )
        assert refused.is_error and text(refused) == "tool 'time__get_current_time' is not in profile 'lean'"
        with pytest.raises(MCPError, match="tool 'time__get_current_time' is not in profile 'lean'"):
            await session.call_tool("time__get_current_time", {"timezone": "UTC"})
    async with Client(served.mcp) as whole:  # /mcp still lists everything, meta-tools nowhere
        names = {t.name for t in (await whole.list_tools()).tools}
        assert "time__get_current_time" in names and not names & set(META)


async def test_a_modern_client_the_fast_path_and_rest_see_the_meta_tools(served: Served) -> None:
    async with Client(f"{served.base}/mcp/lean") as client:  # 2026-07-28: calls take the fast path
        assert [t.name for t in (await client.list_tools()).tools] == META
        result = await client.call_tool("search_tools", {"query": "current time in a time zone"})
        assert not any(n.startswith("time__") for n in found(result))  # time is not in the profile
        read = await client.call_tool("call_tool", {"name": "memory__read_graph"})
        assert not read.is_error and '"entities"' in text(read)
        refused = await client.call_tool("call_tool", {"name": "time__get_current_time"})
        assert refused.is_error and "not in profile 'lean'" in text(refused)
    async with served.http() as http:
        tools = (await http.get("/api/tools", params={"profile": "lean", "format": "openai"})).json()
        assert [t["function"]["name"] for t in tools] == META
        info = (await http.get("/api/profiles/lean")).json()
        assert info["discovery"] == "search" and "memory__read_graph" in info["tool_names"]
        assert info["tool_count"] == len(info["tool_names"]) > 2
        query = {"q": "knowledge graph", "profile": "lean"}
        searched = (await http.get("/api/tools/search", params=query)).json()
        assert searched[0]["name"].startswith("memory__")


async def test_a_search_profile_is_told_of_changes_to_its_listing_only(served: Served) -> None:
    lean_seen: list[str] = []
    gh_seen: list[str] = []

    def recorder(into: list[str]) -> Any:
        async def on_message(msg: Any) -> None:
            if isinstance(msg, types.ToolListChangedNotification):
                into.append("tools")

        return on_message

    async with (
        streamable_http_client(f"{served.base}/mcp/lean") as (r, w),
        ClientSession(r, w, message_handler=recorder(lean_seen)) as lean,
        streamable_http_client(f"{served.base}/mcp/ghonly") as (r2, w2),
        ClientSession(r2, w2, message_handler=recorder(gh_seen)) as ghonly,
    ):
        await lean.initialize()
        await ghonly.initialize()
        assert [t.name for t in (await lean.list_tools()).tools] == META
        # gh is in both profiles: its new tool changes ghonly's listing, not lean's (the meta-tools).
        await ghonly.call_tool("gh__set_tools", {"names": ["fresh"]})
        await wait_for(lambda: bool(gh_seen), 10, "list_changed on /mcp/ghonly")
        found_fresh = await lean.call_tool("search_tools", {"query": "fresh"})
        assert found(found_fresh)[0] == "gh__fresh"  # searchable at once, without a re-list
        # Switching lean to listing its tools changes what its clients list: now they are told.
        async with served.http() as http:
            put = await http.put("/api/profiles/lean", json={"servers": ["memory", "files", "gh"]})
            assert put.status_code == 200 and put.json()["discovery"] == "full"
        await wait_for(lambda: bool(lean_seen), 10, "list_changed on /mcp/lean")
        names = {t.name for t in (await lean.list_tools()).tools}
        assert "gh__fresh" in names and "memory__read_graph" in names and not names & set(META)
        # One notification: the earlier change of gh (already fanned out elsewhere) sent lean none.
        assert lean_seen == ["tools"]


async def test_the_rest_call_route_goes_through_a_profile(served: Served) -> None:
    async with served.http() as http:
        ok = await http.post("/api/tools/memory__read_graph/call", params={"profile": "lean"}, json={})
        assert ok.status_code == 200 and '"entities"' in ok.json()["content"][0]["text"]
        outside = await http.post(
            "/api/tools/time__get_current_time/call",
            params={"profile": "lean"},
            json={"arguments": {"timezone": "UTC"}},
        )
        assert outside.status_code == 404
        assert outside.json()["error"] == "not_in_profile" and outside.json()["profile"] == "lean"
        assert outside.json()["detail"] == "tool 'time__get_current_time' is not in profile 'lean'"
        unknown = await http.post("/api/tools/memory__read_graph/call", params={"profile": "nope"})
        assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_profile"
        assert "known: lean, ghonly" in unknown.json()["detail"]
        meta = await http.post(
            "/api/tools/search_tools/call",
            params={"profile": "lean"},
            json={"arguments": {"query": "read the knowledge graph", "limit": 1}},
        )
        assert meta.status_code == 200
        assert meta.json()["structuredContent"]["tools"][0]["name"] == "memory__read_graph"
        whole = await http.post(
            "/api/tools/time__get_current_time/call", json={"arguments": {"timezone": "UTC"}}
        )
        assert whole.status_code == 200 and not whole.json().get("isError")  # no profile: the whole catalog
        assert (await http.post("/api/tools/search_tools/call", json={})).status_code == 404
