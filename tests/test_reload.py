"""Config reload: the watcher applies the file's difference and leaves the rest running."""

from __future__ import annotations

import json
from pathlib import Path

from patchbay import Hub
from patchbay.reload import ConfigWatcher
from tests.conftest import EventLog, alive, bad, wait_for


async def test_reload_applies_only_the_difference(tmp_path: Path) -> None:
    path = tmp_path / "patchbay.json"
    path.write_text(json.dumps({"mcpServers": {"keep": bad(), "change": bad(), "drop": bad()}}))
    async with Hub.from_file(path) as hub:
        events = EventLog(hub)
        watcher = ConfigWatcher(hub, path, interval=0.05)
        watcher.start()
        pids = {name: st.pid for name, st in hub.status().items()}
        path.write_text(
            json.dumps({"mcpServers": {"new": bad(), "keep": bad(), "change": bad("--name", "changed")}})
        )
        await wait_for(lambda: "new" in hub.status() and hub.status()["new"].state == "ready", 10)
        await wait_for(lambda: hub.status()["change"].state == "ready", 10)
        status = hub.status()
        assert list(status) == ["new", "keep", "change"]  # the file's order
        assert status["keep"].pid == pids["keep"]  # untouched: not restarted
        assert status["change"].pid != pids["change"] and status["change"].server_info["name"] == "changed"  # type: ignore[index]
        await wait_for(lambda: not alive(pids["drop"]), 3)
        assert "drop__echo" not in hub.catalog.tools and "new__echo" in hub.catalog.tools
        await wait_for(lambda: bool(events.of("config_reload")), 2)
        reload = events.of("config_reload")[0]
        assert (reload.added, reload.removed, reload.changed) == (["new"], ["drop"], ["change"])  # type: ignore[attr-defined]
        await watcher.stop()
        await events.close()


async def test_invalid_file_is_reported_and_the_running_set_kept(tmp_path: Path) -> None:
    path = tmp_path / "patchbay.json"
    path.write_text(json.dumps({"mcpServers": {"keep": bad()}}))
    async with Hub.from_file(path) as hub:
        events = EventLog(hub)
        watcher = ConfigWatcher(hub, path, interval=0.05)
        watcher.start()
        pid = hub.status()["keep"].pid
        path.write_text('{"mcpServers": {"keep": ')
        await wait_for(lambda: bool(events.of("config_reload")), 3)
        event = events.of("config_reload")[0]
        assert event.ok is False and "not valid JSON" in (event.error or "")  # type: ignore[attr-defined]
        assert hub.status()["keep"].pid == pid and hub.status()["keep"].state == "ready"
        assert path.read_text() == '{"mcpServers": {"keep": '  # never rewritten
        await watcher.stop()
        await events.close()


async def test_the_hubs_own_saves_do_not_trigger_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "patchbay.json"
    path.write_text(json.dumps({"mcpServers": {"keep": bad()}}))
    async with Hub.from_file(path) as hub:
        events = EventLog(hub)
        watcher = ConfigWatcher(hub, path, interval=0.05)
        watcher.start()
        await hub.add_server("added", bad())
        await hub.set_enabled("added", False)
        await watcher.check()
        assert events.of("config_reload") == []
        await watcher.stop()
        await events.close()
