"""One test per flaw of the prototype (../shared/seed/README.md): patchbay must do the right thing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from patchbay import ConfigError, Hub, ServerExitedError
from patchbay.catalog import Catalog, Listing
from tests.conftest import HubFactory, bad, wait_for


async def test_50_concurrent_calls_each_get_their_own_answer(make_hub: HubFactory) -> None:
    """Prototype: 1 of 50 callers got its own answer; the rest got 'Empty response.' or another's."""
    hub = await make_hub({"mb": bad()})
    texts = [f"caller-{i}" for i in range(50)]
    results = await asyncio.gather(*(hub.call_tool("mb__echo", {"text": t}) for t in texts))
    assert [r.content[0].text for r in results] == texts  # type: ignore[union-attr]


async def test_1_mib_of_stderr_per_call_does_not_deadlock(make_hub: HubFactory) -> None:
    """Prototype: stderr was piped and never read, so the whole process deadlocked."""
    hub = await make_hub({"mb": bad()})
    for _ in range(8):
        result = await hub.call_tool("mb__stderr", {"bytes": 1024 * 1024}, timeout=20)
        assert result.content[0].text == "ok"  # type: ignore[union-attr]


async def test_crash_during_call_is_an_error_and_the_server_comes_back(make_hub: HubFactory) -> None:
    """Prototype: 'Empty response.', the server stays dead, no restart, no error."""
    hub = await make_hub({"mb": bad()})
    with pytest.raises(ServerExitedError, match="server 'mb' exited with status 7"):
        await hub.call_tool("mb__crash", {"code": 7})
    await wait_for(lambda: hub.status()["mb"].state == "ready", 10)
    assert (await hub.call_tool("mb__echo", {"text": "back"})).content[0].text == "back"  # type: ignore[union-attr]


async def test_server_that_never_answers_initialize_does_not_block_the_others(make_hub: HubFactory) -> None:
    """Prototype: start_all blocked forever, so every server after it never started."""
    hub = await make_hub({"silent": bad("--never-initialize", startTimeout=1, maxRestarts=0), "after": bad()})
    assert hub.status()["silent"].state == "failed"
    assert "did not initialize within 1 s" in (hub.status()["silent"].last_error or "")
    assert hub.status()["after"].state == "ready"


async def test_log_notification_before_response_is_not_taken_for_it(make_hub: HubFactory) -> None:
    """Prototype: the notification was taken as the response; later answers were misattributed."""
    hub = await make_hub({"mb": bad("--log-before-response")})
    for i in range(20):
        result = await hub.call_tool("mb__add", {"a": i, "b": 1})
        assert result.structured_content == {"result": i + 1}


async def test_8_mib_result_arrives_whole(make_hub: HubFactory) -> None:
    """Prototype: hang (line reader limit)."""
    hub = await make_hub({"mb": bad()})
    result = await hub.call_tool("mb__big", {"bytes": 8 * 1024 * 1024}, timeout=30)
    assert result.content[0].text == "x" * (8 * 1024 * 1024)  # type: ignore[union-attr]


async def test_unreadable_config_is_an_error_and_the_file_is_never_touched(tmp_path: Path) -> None:
    """Prototype: silently replaced with an empty config, which the next save wrote over the user's file."""
    path = tmp_path / "patchbay.json"
    original = b'{\n  "mcpServers": {\n    "a": {"command": "x",}\n  }\n}\n'
    path.write_bytes(original)
    before = path.stat().st_mtime_ns
    with pytest.raises(ConfigError, match=r"patchbay.json:3:26: not valid JSON"):
        Hub.from_file(path)
    assert path.read_bytes() == original
    assert path.stat().st_mtime_ns == before
    assert [p.name for p in tmp_path.iterdir()] == ["patchbay.json"]


async def test_a_later_source_cannot_hijack_an_existing_tool_name(
    make_hub: HubFactory, tmp_path: Path
) -> None:
    """Prototype: a remote agent's tool named like a local one was called instead.

    The catalog gives each name to the highest-priority owner whatever the arrival order: a source that
    arrives later (a runtime-added server here; dial-in agents rank below every local server) is refused
    and the conflict is reported.
    """
    hub = await make_hub({"mb": bad()})
    await hub.add_server("intruder", bad(prefix="mb"))
    assert hub.catalog.tools["mb__echo"].source == "mb"
    assert any("already belongs to 'mb'" in c for c in hub.status()["intruder"].conflicts)
    who = json.loads((await hub.call_tool("mb__whoami")).content[0].text)  # type: ignore[union-attr]
    assert who["pid"] == hub.status()["mb"].pid

    catalog = Catalog()  # and a dial-in agent (rank 1) never outranks a local server (rank 0)
    import mcp.types as types

    listing = Listing(tools=[types.Tool(name="echo", input_schema={"type": "object"})])
    catalog.set_source("agent", listing, prefix="mb", rank=(1, 0, "agent"))
    assert catalog.tools["mb__echo"].source == "agent"
    catalog.set_source("mb", listing, prefix="mb", rank=(0, 0, "mb"))
    assert catalog.tools["mb__echo"].source == "mb"
    assert "agent" in catalog.conflicts
