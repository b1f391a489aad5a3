"""Supervision of real stdio processes: start, crash, restart, stderr, garbage, stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid

import psutil
import pytest

from patchbay import CallTimeoutError, Hub, ServerExitedError, ServerUnavailableError, UpstreamError
from tests.conftest import EventLog, HubFactory, alive, bad, wait_for


async def test_start_handshake_and_status(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad("--name", "mb-server")})
    st = hub.status()["mb"]
    assert st.state == "ready"
    assert st.protocol_version == "2025-11-25"
    assert st.server_info == {"name": "mb-server", "version": "1.0"}
    assert "tools" in st.capabilities
    assert alive(st.pid)
    assert st.tool_count == len(hub.tools(server="mb")) >= 10
    assert st.resource_count == 1 and st.prompt_count == 1
    result = await hub.call_tool("mb__add", {"a": 2, "b": 3})
    assert result.structured_content == {"result": 5}
    assert not result.is_error


async def test_servers_start_in_parallel_and_a_silent_one_delays_nobody() -> None:
    hub = Hub.from_dict(
        {
            "mcpServers": {
                "silent": bad("--never-initialize", startTimeout=2.5, maxRestarts=0),
                "slow1": bad("--slow-start", "1"),
                "slow2": bad("--slow-start", "1"),
                "fine": bad(),
            }
        }
    )
    events = hub.events()
    async with hub:
        status = hub.status()
        assert status["fine"].state == status["slow1"].state == status["slow2"].state == "ready"
        assert status["silent"].state == "failed"
        assert "did not initialize within 2.5 s" in (status["silent"].last_error or "")
        assert (await hub.call_tool("fine__echo", {"text": "x"})).content[0].text == "x"  # type: ignore[union-attr]
    order = []
    while not events.queue.empty():
        ev = events.queue.get_nowait()
        if ev.type == "server_state" and ev.state in ("ready", "failed"):  # type: ignore[attr-defined]
            order.append(ev.server)  # type: ignore[attr-defined]
    events.close()
    # Started one after another, the 2.5 s start timeout of "silent" would come before the others' 1 s
    # handshakes; in parallel, every other server is ready before "silent" is given up on.
    assert order[-1] == "silent" and set(order[:-1]) == {"fine", "slow1", "slow2"}


async def test_crash_during_call_fails_callers_fast_and_restarts(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    events = EventLog(hub)
    first_pid = hub.status()["mb"].pid
    slow = asyncio.create_task(hub.call_tool("mb__sleep", {"seconds": 30}))
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    with pytest.raises(ServerExitedError) as info:
        await hub.call_tool("mb__crash", {"code": 3})
    assert "'mb'" in str(info.value) and "exited with status 3" in str(info.value)
    assert info.value.returncode == 3
    with pytest.raises(ServerExitedError):
        await slow  # the other in-flight call fails too, not after 30 s
    assert time.monotonic() - t0 < 1.0
    assert "mb__echo" not in {t["name"] for t in hub.tools()}  # tools left the catalog
    await wait_for(lambda: hub.status()["mb"].state == "ready", 10)
    st = hub.status()["mb"]
    assert st.restarts == 1 and st.pid != first_pid
    assert "mb__echo" in {t["name"] for t in hub.tools()}  # and came back, re-listed
    states = [e.state for e in events.of("server_state", server="mb")]  # type: ignore[attr-defined]
    assert states[-3:] == ["backoff", "starting", "ready"]
    await events.close()


async def test_external_kill_is_noticed_at_once(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    pid = hub.status()["mb"].pid
    assert pid is not None
    call = asyncio.create_task(hub.call_tool("mb__sleep", {"seconds": 30}))
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ServerExitedError, match=r"killed by signal 9 \(SIGKILL\)"):
        await call
    assert time.monotonic() - t0 < 1.0
    # Its tools have left the catalog, but a call by name still says why, rather than "unknown tool".
    assert "mb__echo" not in hub.catalog.tools
    # A call with too short a budget to wait for the restart says why.
    with pytest.raises(
        ServerUnavailableError, match=r"server 'mb' is not running \(state: (backoff|starting)\)"
    ):
        await hub.call_tool("mb__echo", {"text": "x"}, timeout=0.01)
    # One with time to spare waits for the restart and succeeds.
    result = await hub.call_tool("mb__echo", {"text": "back"}, timeout=30)
    assert result.content[0].text == "back"  # type: ignore[union-attr]


async def test_backoff_then_give_up_after_max_restarts(make_hub: HubFactory) -> None:
    hub = await make_hub({"flaky": bad("--exit-after-init", "1", maxRestarts=2)})
    await wait_for(lambda: hub.status()["flaky"].state == "failed", 15)
    st = hub.status()["flaky"]
    assert st.restarts == 2
    assert "exited with status 1" in (st.last_error or "")
    assert "gave up after 2 restarts" in (st.last_error or "")


async def test_exit_at_start_reports_its_stderr(make_hub: HubFactory) -> None:
    hub = await make_hub({"dead": bad("--exit-at-start", "4", maxRestarts=0)})
    st = hub.status()["dead"]
    assert st.state == "failed"
    assert "exited with status 4" in (st.last_error or "")
    assert "fatal: exiting at start" in (st.last_error or "")
    assert "fatal: exiting at start" in st.stderr_tail


async def test_restart_server_revives_a_failed_server(make_hub: HubFactory) -> None:
    hub = await make_hub({"dead": bad("--exit-at-start", "4", maxRestarts=0)})
    assert hub.status()["dead"].state == "failed"
    st = await hub.restart_server("dead")
    assert st.state == "failed" and st.restarts == 1


async def test_command_not_found_is_a_clear_permanent_failure(make_hub: HubFactory) -> None:
    hub = await make_hub({"nope": {"command": "no-such-command-xyz"}, "ok": bad()})
    st = hub.status()["nope"]
    assert st.state == "failed"
    assert "'no-such-command-xyz' was not found" in (st.last_error or "")
    assert hub.status()["ok"].state == "ready"


async def test_missing_placeholder_fails_only_that_server(make_hub: HubFactory) -> None:
    os.environ.pop("PATCHBAY_TEST_UNSET", None)
    hub = await make_hub({"needs": bad(env={"KEY": "${PATCHBAY_TEST_UNSET}"}), "ok": bad()})
    st = hub.status()["needs"]
    assert st.state == "failed"
    assert "server 'needs': env.KEY: environment variable 'PATCHBAY_TEST_UNSET' is not set" in (
        st.last_error or ""
    )
    assert hub.status()["ok"].state == "ready"


async def test_placeholders_reach_the_process(make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHBAY_TEST_SECRET", "s3cret")
    hub = await make_hub({"mb": bad("--echo-env", "KEY", env={"KEY": "pre-${env:PATCHBAY_TEST_SECRET}"})})
    who = json.loads((await hub.call_tool("mb__whoami")).content[0].text)  # type: ignore[union-attr]
    assert who["env"] == "pre-s3cret"
    assert who["pid"] == hub.status()["mb"].pid


async def test_stderr_flood_never_blocks_and_tail_is_bounded(make_hub: HubFactory) -> None:
    hub = await make_hub({"loud": bad("--flood-stderr", str(4 * 1024 * 1024))})
    for _ in range(5):
        result = await hub.call_tool("loud__stderr", {"bytes": 1024 * 1024}, timeout=20)
        assert result.content[0].text == "ok"  # type: ignore[union-attr]
    st = hub.status()["loud"]
    assert st.state == "ready"
    assert 0 < len(st.stderr_tail) <= 200


async def test_garbage_and_log_notifications_do_not_disturb_matching(make_hub: HubFactory) -> None:
    hub = await make_hub({"noisy": bad("--garbage-stdout", "--log-before-response")})
    texts = [f"msg-{i}" for i in range(50)]
    results = await asyncio.gather(*(hub.call_tool("noisy__echo", {"text": t}) for t in texts))
    assert [r.content[0].text for r in results] == texts  # type: ignore[union-attr]
    assert hub.status()["noisy"].state == "ready"


async def test_8_mib_result(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    result = await hub.call_tool("mb__big", {"bytes": 8 * 1024 * 1024}, timeout=30)
    assert len(result.content[0].text) == 8 * 1024 * 1024  # type: ignore[union-attr]
    assert (await hub.call_tool("mb__echo", {"text": "after"})).content[0].text == "after"  # type: ignore[union-attr]


async def test_fifty_concurrent_calls_each_get_their_own_answer(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    t0 = time.monotonic()
    results = await asyncio.gather(*(hub.call_tool("mb__sleep", {"seconds": 1}) for _ in range(50)))
    assert all(r.content[0].text == "slept 1" for r in results)  # type: ignore[union-attr]
    assert time.monotonic() - t0 < 3.0  # they ran concurrently, not one after another (50 s)
    echoes = await asyncio.gather(*(hub.call_tool("mb__echo", {"text": str(i)}) for i in range(200)))
    assert [r.content[0].text for r in echoes] == [str(i) for i in range(200)]  # type: ignore[union-attr]


async def test_timeout_raises_and_cancels_upstream(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    with pytest.raises(CallTimeoutError, match=r"'mb' did not answer tools/call 'sleep' within 0.3 s"):
        await hub.call_tool("mb__sleep", {"seconds": 10}, timeout=0.3)
    await wait_for(lambda: any(line.startswith("CANCELLED") for line in hub.status()["mb"].stderr_tail), 5)


async def test_per_server_timeout_applies(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad(timeout=0.3)})
    with pytest.raises(CallTimeoutError, match=r"within 0\.3 s"):
        await hub.call_tool("mb__sleep", {"seconds": 10})


async def test_caller_cancellation_reaches_upstream(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    task = asyncio.create_task(hub.call_tool("mb__sleep", {"seconds": 10}))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: any(line.startswith("CANCELLED") for line in hub.status()["mb"].stderr_tail), 5)
    assert hub.status()["mb"].calls_in_flight == 0


async def test_progress_reaches_the_callback(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    result = await hub.call_tool("mb__sleep", {"seconds": 0.6}, progress=on_progress)
    assert not result.is_error
    await wait_for(lambda: len(seen) >= 3, 2)
    assert all(total == 0.6 for _, total in seen)


async def test_error_kinds_are_distinct(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad(), "off": bad(enabled=False)})
    failed = await hub.call_tool("mb__fail")
    assert failed.is_error and "on purpose" in failed.content[0].text  # type: ignore[union-attr]
    with pytest.raises(UpstreamError) as up:
        await hub.call_tool("mb__rpc_error")
    assert (
        up.value.code == -32050 and "deliberate upstream error" in str(up.value) and "'mb'" in str(up.value)
    )
    assert hub.status()["off"].state == "disabled"
    assert "off__echo" not in hub.catalog.tools


async def test_list_changed_updates_the_catalog(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    events = EventLog(hub)
    await hub.call_tool("mb__set_tools", {"names": ["alpha", "beta"]})
    await wait_for(lambda: {"mb__alpha", "mb__beta"} <= set(hub.catalog.tools), 5)
    assert (await hub.call_tool("mb__alpha", {"text": "a"})).content[0].text == "a"  # type: ignore[union-attr]
    await hub.call_tool("mb__set_tools", {"names": ["beta"]})
    await wait_for(lambda: "mb__alpha" not in hub.catalog.tools, 5)
    await wait_for(lambda: any("mb__alpha" in e.removed for e in events.of("catalog")), 2)  # type: ignore[attr-defined]
    await events.close()


async def test_pagination_and_sloppy_schemas(make_hub: HubFactory) -> None:
    hub = await make_hub(
        {"paged": bad("--tools", "25", "--page-size", "7"), "sloppy": bad("--sloppy-schemas")}
    )
    names = set(hub.catalog.tools)
    assert {f"paged__t{i:02d}" for i in range(25)} <= names
    sloppy = {t["function"]["name"]: t for t in hub.tools("openai", server="sloppy")}
    for name in ("sloppy__echo", "sloppy__add", "sloppy__weird"):
        params = sloppy[name]["function"]["parameters"]
        assert params["type"] == "object" and isinstance(params["properties"], dict)


async def test_unsupported_protocol_version_is_refused(make_hub: HubFactory) -> None:
    hub = await make_hub({"old": bad("--protocol-version", "1999-01-01", maxRestarts=0)})
    st = hub.status()["old"]
    assert st.state == "failed"
    assert "protocol version '1999-01-01'" in (st.last_error or "")


async def test_stop_kills_the_whole_process_group(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad(), "stubborn": bad("--ignore-sigterm", "--ignore-eof")})
    grandchild = int((await hub.call_tool("mb__spawn_child")).content[0].text)  # type: ignore[union-attr]
    stubborn_child = int((await hub.call_tool("stubborn__spawn_child")).content[0].text)  # type: ignore[union-attr]
    pids = [hub.status()[n].pid for n in ("mb", "stubborn")]
    assert all(alive(p) for p in [*pids, grandchild, stubborn_child])
    await hub.close()
    for pid in [*pids, grandchild, stubborn_child]:
        await wait_for(lambda pid=pid: not alive(pid), 3, f"pid {pid} to exit")  # type: ignore[misc]


async def test_no_orphans_after_the_hub_exits(make_hub: HubFactory) -> None:
    marker = f"orphan-check-{uuid.uuid4().hex[:8]}"  # only our processes, whatever else runs here
    hub = await make_hub({f"s{i}": bad("--name", marker) for i in range(4)})
    for i in range(4):
        await hub.call_tool(f"s{i}__spawn_child")
    tree = psutil.Process().children(recursive=True)  # servers and their grandchildren
    assert len(tree) >= 8
    await hub.close()
    await wait_for(lambda: not any(alive(p.pid) for p in tree), 3)
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
    assert [p for p in leftovers if alive(p.pid)] == []


async def test_resources_and_prompts_are_routed(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    assert [r.uri for r in hub.resources()] == ["test://hello"]
    assert hub.resources()[0].name.startswith("mb__")
    read = await hub.read_resource("test://hello")
    assert read.contents[0].text == "hello"  # type: ignore[union-attr]
    templated = await hub.read_resource("test://echo/42")
    assert templated.contents[0].text == "42"  # type: ignore[union-attr]
    prompt = await hub.get_prompt("mb__greet", {"name": "Ada"})
    assert prompt.messages[0].content.text == "Hello, Ada!"  # type: ignore[union-attr]
