"""Adding, removing, enabling and disabling servers while the hub runs: processes, catalog, file, events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchbay import DuplicateServerError, Hub, ServerUnavailableError, UnknownServerError, UnknownToolError
from tests.conftest import EventLog, alive, bad, wait_for


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {"servers": {"mb": bad(), "two": bad(disabled=True)}, "inputs": [{"id": "keep-me"}]}, indent=2
        )
    )
    return path


def on_disk(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text())


async def test_disable_enable_add_remove_with_live_processes(config_file: Path) -> None:
    async with Hub.from_file(config_file) as hub:
        events = EventLog(hub)
        assert hub.status()["two"].state == "disabled"
        pid = hub.status()["mb"].pid

        st = await hub.set_enabled("mb", False)
        assert st.state == "disabled" and st.pid is None
        await wait_for(lambda: not alive(pid), 3)
        assert not hub.tools(server="mb")
        assert on_disk(config_file)["servers"]["mb"]["enabled"] is False
        with pytest.raises(ServerUnavailableError, match=r"server 'mb' is not running \(state: disabled\)"):
            await hub.call_tool("mb__echo", {"text": "x"})

        st = await hub.set_enabled("mb", True)
        assert st.state == "ready" and alive(st.pid)
        assert on_disk(config_file)["servers"]["mb"]["enabled"] is True

        st = await hub.set_enabled("two", True)  # the user wrote "disabled": keep their style
        assert st.state == "ready"
        assert on_disk(config_file)["servers"]["two"]["disabled"] is False

        st = await hub.add_server("three", bad())
        assert st.state == "ready" and st.tool_count > 0
        assert (await hub.call_tool("three__echo", {"text": "hi"})).content[0].text == "hi"  # type: ignore[union-attr]
        doc = on_disk(config_file)
        assert list(doc["servers"]) == ["mb", "two", "three"]
        assert doc["inputs"] == [{"id": "keep-me"}] and "mcpServers" not in doc

        with pytest.raises(DuplicateServerError):
            await hub.add_server("three", bad())

        three_pid = st.pid
        await hub.remove_server("three")
        await wait_for(lambda: not alive(three_pid), 3)
        assert "three" not in hub.status() and "three" not in on_disk(config_file)["servers"]
        with pytest.raises(UnknownToolError):
            await hub.call_tool("three__echo", {"text": "hi"})
        with pytest.raises(UnknownServerError):
            await hub.remove_server("three")

        await wait_for(lambda: len(events.of("config")) == 5, 2)
        actions = [(e.action, e.server) for e in events.of("config")]  # type: ignore[attr-defined]
        assert actions == [
            ("disabled", "mb"),
            ("enabled", "mb"),
            ("enabled", "two"),
            ("added", "three"),
            ("removed", "three"),
        ]
        await events.close()


async def test_update_server_restarts_it_with_new_settings(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Hub.from_file(config_file) as hub:
        old_pid = hub.status()["mb"].pid
        st = await hub.update_server("mb", bad("--name", "renamed", prefix="m"))
        assert st.state == "ready" and st.pid != old_pid
        assert st.server_info == {"name": "renamed", "version": "1.0"}
        assert "m__echo" in hub.catalog.tools and "mb__echo" not in hub.catalog.tools
        assert on_disk(config_file)["servers"]["mb"]["prefix"] == "m"


async def test_invalid_change_is_refused_and_nothing_is_saved(config_file: Path) -> None:
    before = config_file.read_bytes()
    async with Hub.from_file(config_file) as hub:
        from patchbay import ConfigError

        with pytest.raises(ConfigError, match=r"server 'bad': args"):
            await hub.add_server("bad", {"command": "x", "args": "not-a-list"})
        with pytest.raises(ConfigError, match="invalid server name"):
            await hub.add_server("no/slash", bad())
        assert "bad" not in hub.status()
    assert config_file.read_bytes() == before


async def test_events_report_state_and_catalog_changes(config_file: Path) -> None:
    async with Hub.from_file(config_file) as hub:
        events = EventLog(hub)
        await hub.restart_server("mb")
        await wait_for(lambda: len(events.of("server_state", server="mb", state="ready")) == 1, 5)
        states = [e.state for e in events.of("server_state", server="mb")]  # type: ignore[attr-defined]
        assert states == ["stopped", "starting", "ready"]
        catalog = events.of("catalog", server="mb")
        assert catalog[0].removed and catalog[-1].added  # type: ignore[attr-defined]
        await events.close()
