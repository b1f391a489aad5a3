"""The core is trustworthy at every moment: starts, restarts, removals, reloads and crashes never leave a
caller waiting forever, an untyped error, a frozen lock, ghost tools or a half-applied change."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
from pathlib import Path

import pytest

from patchbay import ConfigError, Hub, PatchbayError, ServerUnavailableError
from patchbay.config import ServerSpec
from patchbay.reload import ConfigWatcher
from tests.conftest import EventLog, HubFactory, bad, wait_for


def text(result: object) -> str:
    return result.content[0].text  # type: ignore[attr-defined,no-any-return]


async def test_listings_and_calls_wait_for_the_initial_start() -> None:
    hub = Hub.from_dict({"mcpServers": {"slow": bad("--slow-start", "1.5"), "fast": bad()}})
    start = asyncio.create_task(hub.start())
    try:
        await asyncio.sleep(0)  # the start has begun: servers are launching
        call = asyncio.create_task(hub.call_tool("slow__echo", {"text": "waited"}))
        await hub.wait_started()
        assert {"slow__echo", "fast__echo"} <= set(hub.catalog.tools)  # complete once started
        assert text(await call) == "waited"
        await start
    finally:
        await hub.close()


async def test_a_call_during_a_restart_waits_for_it(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    pid = hub.status()["mb"].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: hub.status()["mb"].state != "ready", what="the crash to be noticed")
    assert text(await hub.call_tool("mb__echo", {"text": "after"}, timeout=30)) == "after"
    # A server that is not coming back is reported at once, whatever the budget.
    await hub.set_enabled("mb", False)
    with pytest.raises(ServerUnavailableError, match="disabled"):
        await hub.call_tool("mb__echo", {"text": "x"}, timeout=30)


async def test_an_unforeseen_error_in_a_supervisor_ends_in_failed(make_hub: HubFactory) -> None:
    hub = await make_hub({})
    # Validation refuses a NUL byte; bypass it to prove the supervisor itself survives what slips through.
    spec = ServerSpec.model_construct(**ServerSpec.model_validate(bad()).__dict__)
    spec.args = [*spec.args, "nul\x00byte"]
    status = await asyncio.wait_for(hub.add_server("broken", spec), 30)
    assert status.state == "failed" and status.last_error
    # Management is not frozen: the next change goes through.
    assert (await asyncio.wait_for(hub.add_server("next", bad()), 30)).state == "ready"


async def test_the_lock_is_not_held_while_a_server_starts(make_hub: HubFactory) -> None:
    hub = await make_hub({"other": bad()})
    slow = asyncio.create_task(hub.add_server("slow", bad("--slow-start", "60", startTimeout=120)))
    await wait_for(lambda: "slow" in hub.servers and hub.status()["slow"].state == "starting")
    # While it starts, every other change proceeds.
    assert (await asyncio.wait_for(hub.add_server("quick", bad()), 30)).state == "ready"
    await asyncio.wait_for(hub.set_enabled("other", False), 30)
    await asyncio.wait_for(hub.remove_server("slow"), 30)  # and even removing the one that starts
    await asyncio.wait_for(slow, 30)
    assert "slow" not in hub.servers


async def test_calls_racing_a_removal_get_typed_errors(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    calls = [asyncio.create_task(hub.call_tool("mb__sleep", {"seconds": 5})) for _ in range(10)]
    await wait_for(lambda: hub.status()["mb"].calls_in_flight == 10)
    removal = asyncio.create_task(hub.remove_server("mb"))
    late = [asyncio.create_task(hub.call_tool("mb__echo", {"text": "x"}, timeout=5)) for _ in range(10)]
    await removal
    outcomes = await asyncio.gather(*calls, *late, return_exceptions=True)
    for outcome in outcomes[:10]:  # in flight when the server was stopped
        assert isinstance(outcome, ServerUnavailableError), repr(outcome)
    for outcome in outcomes[10:]:  # raced the removal: answered, or told the server is gone; never a KeyError
        assert isinstance(outcome, PatchbayError) or text(outcome) == "x", repr(outcome)


async def test_a_list_changed_during_a_failed_start_leaves_no_ghost_tools(make_hub: HubFactory) -> None:
    hub = await make_hub({"ghost": bad("--list-changed-at-init", "--fail-first-list", maxRestarts=0)})
    assert hub.status()["ghost"].state == "failed"
    assert hub.catalog.tools_of("ghost") == []
    assert not hub.catalog.has_source("ghost")


async def test_every_waiter_gets_its_own_error(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    calls = [asyncio.create_task(hub.call_tool("mb__sleep", {"seconds": 30})) for _ in range(3)]
    await wait_for(lambda: hub.status()["mb"].calls_in_flight == 3)
    pid = hub.status()["mb"].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    errors = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(e, ServerUnavailableError) for e in errors)
    assert len({id(e) for e in errors}) == 3  # tracebacks never pile up on one shared instance


async def test_an_abandoned_event_subscription_is_collected(make_hub: HubFactory) -> None:
    hub = await make_hub({})
    before = hub._bus.subscribers
    sub = hub.events()
    assert hub._bus.subscribers == before + 1
    del sub
    gc.collect()
    assert hub._bus.subscribers == before


async def test_a_reload_that_fails_validation_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "patchbay.json"
    path.write_text(json.dumps({"mcpServers": {"keep": bad(), "change": bad()}}))
    async with Hub.from_file(path) as hub:
        pids = {n: s.pid for n, s in hub.status().items()}
        events = EventLog(hub)
        watcher = ConfigWatcher(hub, path, interval=0.05)
        watcher.start()
        path.write_text(
            json.dumps(
                {
                    "mcpServers": {"keep": bad(), "change": bad("--name", "changed")},
                    "agents": {"laptop": {"token": "${PATCHBAY_TEST_SURELY_UNSET}"}},
                }
            )
        )
        await wait_for(lambda: bool(events.of("config_reload")), what="the reload to be reported")
        event = events.of("config_reload")[0]
        assert event.ok is False  # type: ignore[attr-defined]
        assert "agent 'laptop'" in (event.error or "") and "PATCHBAY_TEST_SURELY_UNSET" in (event.error or "")  # type: ignore[attr-defined]
        status = hub.status()
        assert {n: s.pid for n, s in status.items()} == pids  # nothing was stopped
        assert all(s.state == "ready" and s.tool_count for s in status.values())
        assert "laptop" not in hub.agents()
        # The watcher is still alive: a good file later is applied.
        path.write_text(json.dumps({"mcpServers": {"keep": bad()}}))
        await wait_for(lambda: "change" not in hub.servers, what="the next reload")
        await watcher.stop()
        await events.close()


async def test_a_missing_variable_of_a_server_refuses_the_whole_reload(tmp_path: Path) -> None:
    path = tmp_path / "patchbay.json"
    path.write_text(json.dumps({"mcpServers": {"keep": bad()}}))
    async with Hub.from_file(path) as hub:
        new = json.dumps(
            {"mcpServers": {"added": {"command": "${PATCHBAY_TEST_SURELY_UNSET}"}}, "agents": {}}
        )
        path.write_text(new)
        from patchbay.config import load_config

        with pytest.raises(ConfigError, match=r"server 'added'.*PATCHBAY_TEST_SURELY_UNSET"):
            await hub.apply_config(load_config(path))
        assert hub.servers == ["keep"] and hub.status()["keep"].state == "ready"


async def test_a_reload_that_reorders_servers_renames_at_once(tmp_path: Path) -> None:
    path = tmp_path / "patchbay.json"
    one, two = bad("--name", "one", prefix="x"), bad("--name", "two", prefix="x")
    path.write_text(json.dumps({"mcpServers": {"one": one, "two": two}}))
    async with Hub.from_file(path) as hub:
        assert hub.catalog.tools["x__echo"].source == "one"  # the first in the file wins the name
        path.write_text(json.dumps({"mcpServers": {"two": two, "one": one}}))
        from patchbay.config import load_config

        await hub.apply_config(load_config(path))
        assert hub.catalog.tools["x__echo"].source == "two"  # no re-listing needed
        assert hub.status()["one"].conflicts


async def test_arguments_that_are_not_json_never_reach_the_upstream(make_hub: HubFactory) -> None:
    from patchbay.transports.base import MessageEncodeError

    hub = await make_hub({"mb": bad()})
    for value in (float("inf"), float("nan"), object()):
        with pytest.raises(MessageEncodeError, match=r"server 'mb'.*not valid JSON-RPC"):
            await hub.call_tool("mb__echo", {"text": value})
    assert text(await hub.call_tool("mb__echo", {"text": "still fine"})) == "still fine"
