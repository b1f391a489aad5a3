"""Profiles: named views of the catalog, over real server processes (config, Hub API, reload)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from patchbay import Hub
from patchbay.config import parse_config, profile_warnings
from patchbay.errors import ConfigError, ToolNotInProfileError, UnknownProfileError, UnknownToolError
from patchbay.profiles import ProfilesChangedEvent

from .conftest import EventLog, bad, wait_for

PROFILES: dict[str, Any] = {
    "coding": {"servers": ["gh"], "tools": ["gh__*", "!gh__crash", "!gh__sleep"]},
    "math": {"tools": ["*__add"]},
    "everything": {},
}


def config_doc(**extra: Any) -> dict[str, Any]:
    return {
        "mcpServers": {"gh": bad("--name", "gh"), "fs": bad("--name", "fs")},
        "profiles": PROFILES,
        "pinning": "off",
        **extra,
    }


@pytest.fixture
async def hub() -> Any:
    async with Hub.from_dict(config_doc()) as h:
        yield h


def names(tools: list[dict[str, Any]]) -> list[str]:
    return [t["name"] if "name" in t else t["function"]["name"] for t in tools]


async def test_a_profile_lists_only_its_tools(hub: Hub) -> None:
    coding = names(hub.tools(profile="coding"))
    assert coding and all(n.startswith("gh__") for n in coding)
    assert "gh__echo" in coding and "gh__crash" not in coding and "gh__sleep" not in coding
    assert coding == [n for n in names(hub.tools()) if n in set(coding)]  # catalog order
    assert names(hub.tools(profile="math")) == ["gh__add", "fs__add"]
    assert names(hub.tools(profile="everything")) == names(hub.tools())
    assert names(hub.tools("openai", profile="math")) == ["gh__add", "fs__add"]
    assert names(hub.tools(profile="math", server="fs")) == ["fs__add"]
    found = [m.name for m in hub.search_tools("add two numbers", 5, profile="coding")]
    assert found[0] == "gh__add" and all(n.startswith("gh__") for n in found)
    assert set(names(hub.tools(query="add numbers", profile="math", limit=5))) == {"gh__add", "fs__add"}


async def test_calls_outside_a_profile_are_refused_saying_so(hub: Hub) -> None:
    result = await hub.call_tool("gh__echo", {"text": "in"}, profile="coding")
    assert result.content[0].text == "in"  # type: ignore[union-attr]
    with pytest.raises(ToolNotInProfileError, match="tool 'fs__echo' is not in profile 'coding'") as err:
        await hub.call_tool("fs__echo", {"text": "out"}, profile="coding")
    assert isinstance(err.value, UnknownToolError) and err.value.exists
    with pytest.raises(ToolNotInProfileError, match="'gh__crash' is not in profile 'coding'"):
        await hub.call_tool("gh__crash", {}, profile="coding")
    with pytest.raises(ToolNotInProfileError, match=r"unknown tool 'gh__ech' in profile 'coding'.*gh__echo"):
        await hub.call_tool("gh__ech", {}, profile="coding")
    assert (await hub.call_tool("fs__echo", {"text": "all"})).content[0].text == "all"  # type: ignore[union-attr]


async def test_unknown_profiles_name_the_known_ones(hub: Hub) -> None:
    for attempt in (
        lambda: hub.tools(profile="nope"),
        lambda: hub.search_tools("x", profile="nope"),
        lambda: hub.profile("nope"),
    ):
        with pytest.raises(
            UnknownProfileError, match="unknown profile 'nope'; known: coding, math, everything"
        ):
            attempt()
    with pytest.raises(UnknownProfileError):
        await hub.call_tool("gh__echo", {}, profile="nope")


async def test_profiles_listing(hub: Hub) -> None:
    infos = hub.profiles()
    assert list(infos) == ["coding", "math", "everything"]
    assert infos["math"].tool_count == 2 and infos["math"].servers is None
    assert infos["coding"].to_json()["servers"] == ["gh"] and not infos["coding"].unknown_servers


async def test_a_view_follows_the_catalog_and_is_computed_once_per_version(hub: Hub) -> None:
    view = hub.profile("coding")
    before = view.names(hub.catalog)
    assert view.names(hub.catalog) is before  # same version: the same set, nothing recomputed
    await hub.call_tool("gh__set_tools", {"names": ["new_one"]})
    await wait_for(lambda: "gh__new_one" in hub.catalog.tools, what="the new tool")
    assert "gh__new_one" in view.names(hub.catalog)
    await hub.call_tool("fs__set_tools", {"names": ["other"]})
    await wait_for(lambda: "fs__other" in hub.catalog.tools, what="fs's new tool")
    assert "fs__other" not in view.names(hub.catalog)


async def test_a_call_through_a_profile_waits_for_a_starting_server() -> None:
    """Not listed yet, but its owner is starting and the profile admits it: the call waits, as without."""
    doc = {"mcpServers": {"slow": bad("--slow-start", "0.3")}, "profiles": {"p": {"servers": ["slow"]}}}
    hub = Hub.from_dict(doc)
    starting = asyncio.create_task(hub.start())
    try:
        await wait_for(lambda: hub.status()["slow"].state == "starting", what="the server starting")
        assert "slow__echo" not in hub.catalog.tools
        result = await hub.call_tool("slow__echo", {"text": "waited"}, profile="p")
        assert result.content[0].text == "waited"  # type: ignore[union-attr]
        with pytest.raises(ToolNotInProfileError):
            await hub.call_tool("other__echo", {}, profile="p")
    finally:
        await starting
        await hub.close()


async def test_reload_adds_changes_and_removes_profiles(tmp_path: Path) -> None:
    path = tmp_path / "patchbay.json"
    path.write_text(json.dumps(config_doc()))
    async with Hub.from_file(path) as hub:
        events = EventLog(hub)
        try:
            doc = config_doc()
            doc["profiles"] = {"math": {"tools": ["fs__*"]}, "new": {"servers": ["fs"]}}
            await hub.apply_config(parse_config(json.dumps(doc), path=path))
            assert list(hub.profiles()) == ["math", "new"]
            assert names(hub.tools(profile="math")) == names(hub.tools(server="fs"))
            with pytest.raises(UnknownProfileError):
                hub.tools(profile="coding")
            await wait_for(lambda: bool(events.of("profiles")), what="the profiles event")
            (event,) = events.of("profiles")
            assert isinstance(event, ProfilesChangedEvent)
            assert (event.added, event.removed, event.changed) == (
                ["new"],
                ["coding", "everything"],
                ["math"],
            )
        finally:
            await events.close()


@pytest.mark.parametrize(
    ("profiles", "message"),
    [
        ({"coding": {"tool": ["x"]}}, "profile 'coding': tool: Extra inputs are not permitted"),
        ({"coding": {"tools": [1]}}, "profile 'coding': tools[0]: Input should be a valid string"),
        ({"coding": {"tools": "gh__*"}}, "profile 'coding': tools: Input should be a valid list"),
        ({"coding": {"servers": [None]}}, "profile 'coding': servers[0]: Input should be a valid string"),
        ({"coding": {"tools": ["!"]}}, "profile 'coding': tools: '!' is not a pattern"),
        ({"co ding": {}}, "invalid profile name 'co ding'"),
        ({"coding": []}, "profile 'coding': expected an object, got list"),
        ({"coding": {"discovery": "lazy"}}, "coding': discovery: Input should be 'full' or 'search'"),
        ([], "'profiles' must be an object"),
    ],
)
def test_bad_profiles_are_clear_errors(profiles: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(json.dumps({"mcpServers": {}, "profiles": profiles}))
    assert message in str(err.value)


def test_unknown_servers_are_warnings_and_profiles_are_saved_as_written() -> None:
    doc = {
        "mcpServers": {"gh": {"command": "x"}},
        "profiles": {"p": {"servers": ["gh", "gone"], "tools": ["*"]}},
    }
    config = parse_config(json.dumps(doc))
    assert profile_warnings(config) == ["profile 'p': servers: 'gone' is not a configured server or agent"]
    assert config.to_document()["profiles"] == doc["profiles"]


async def test_a_caller_bound_to_a_profile_is_held_to_it(hub: Hub) -> None:
    from patchbay.identity import Identity

    bound = Identity("ci", "user", profile="coding")
    result = await hub.call_tool("gh__echo", {"text": "in"}, caller=bound)
    assert not result.is_error
    with pytest.raises(ToolNotInProfileError, match="'fs__echo' is not in profile 'coding'"):
        await hub.call_tool("fs__echo", {"text": "out"}, caller=bound)
    with pytest.raises(ToolNotInProfileError):  # naming another profile does not widen the view
        await hub.call_tool("fs__echo", {"text": "out"}, profile="everything", caller=bound)
