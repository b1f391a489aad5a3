"""The wires on their own and under a hub, against real processes: typed errors, environments, ownership."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import pytest

from patchbay import Hub, PatchbayError, ServerExitedError
from patchbay.config import ResolvedSpec
from patchbay.transports.base import MessageEncodeError
from patchbay.transports.stdio import SECRET_ENV_VARS, StdioTransport
from tests.conftest import HubFactory, alive, bad, wait_for


def stdio_spec(code: str, name: str = "child") -> ResolvedSpec:
    return ResolvedSpec(name, "stdio", sys.executable, ("-c", code), {}, None, None, {})


def whoami_env(result: Any) -> str | None:
    value = json.loads(result.content[0].text)["env"]
    return value if value is None else str(value)


# --- 6: patchbay's secrets stay out of children's environments --------------------------------------------


async def test_children_do_not_inherit_patchbay_secrets(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {"PATCHBAY_TOKEN", "PATCHBAY_AGENT_TOKEN"} <= SECRET_ENV_VARS
    monkeypatch.setenv("PATCHBAY_TOKEN", "hub-secret")
    monkeypatch.setenv("PATCHBAY_AGENT_TOKEN", "agent-secret")
    monkeypatch.setenv("PB_TEST_VISIBLE", "ordinary")
    hub = await make_hub(
        {
            "tok": bad("--echo-env", "PATCHBAY_TOKEN"),
            "agent": bad("--echo-env", "PATCHBAY_AGENT_TOKEN"),
            "plain": bad("--echo-env", "PB_TEST_VISIBLE"),
            # listed explicitly in the server's env: the user asked for it, so it gets it
            "asked": bad("--echo-env", "PATCHBAY_TOKEN", env={"PATCHBAY_TOKEN": "${PATCHBAY_TOKEN}"}),
        }
    )
    assert whoami_env(await hub.call_tool("tok__whoami", {})) is None
    assert whoami_env(await hub.call_tool("agent__whoami", {})) is None
    assert whoami_env(await hub.call_tool("plain__whoami", {})) == "ordinary"
    assert whoami_env(await hub.call_tool("asked__whoami", {})) == "hub-secret"


# --- 5: a dying wire answers send() with patchbay errors only ---------------------------------------------


async def test_send_to_a_child_that_closed_its_stdin_is_a_typed_error() -> None:
    closed: list[tuple[str, int | None]] = []
    got: list[Any] = []
    code = "import os, time; os.close(0); print('{\"closed\": true}', flush=True); time.sleep(60)"
    wire = StdioTransport(stdio_spec(code), got.append, lambda r, c: closed.append((r, c)))
    await wire.start()
    try:
        await wait_for(lambda: got == [{"closed": True}], 10)
        assert wire._stdin is not None
        await wait_for(wire._stdin.is_closing, 5)  # asyncio noticed the read end went away
        with pytest.raises(ServerExitedError) as info:
            wire.send({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert "'child'" in str(info.value) and not isinstance(info.value, OSError)
        # the child lingers without stdin: it counts as broken, is reported once and is stopped
        await wait_for(lambda: bool(closed), 5)
        assert closed == [("closed its stdin", None)]
        with pytest.raises(ServerExitedError, match="closed its stdin"):
            wire.send({"jsonrpc": "2.0", "id": 2, "method": "ping"})
    finally:
        await wire.close()
    assert not alive(wire.pid)
    assert len(closed) == 1


async def test_unencodable_message_is_a_typed_error() -> None:
    wire = StdioTransport(stdio_spec("import sys; sys.stdin.read()"), lambda m: None, lambda r, c: None)
    await wire.start()
    try:
        with pytest.raises(MessageEncodeError) as info:
            wire.send({"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"v": object()}})
        assert isinstance(info.value, PatchbayError) and "'child'" in str(info.value)
    finally:
        await wire.close()


async def test_send_before_start_and_after_close_is_a_typed_error() -> None:
    wire = StdioTransport(stdio_spec("import sys; sys.stdin.read()"), lambda m: None, lambda r, c: None)
    with pytest.raises(ServerExitedError, match="not running yet"):
        wire.send({"jsonrpc": "2.0", "method": "x"})
    await wire.start()
    await wire.close()
    await wire.close()  # a second close waits for the same stop, and is quiet
    with pytest.raises(ServerExitedError, match="'child' exited with status 0"):
        wire.send({"jsonrpc": "2.0", "method": "x"})


async def test_killed_server_under_a_flood_of_calls_fails_every_call_with_a_patchbay_error(
    make_hub: HubFactory,
) -> None:
    hub: Hub = await make_hub({"mb": bad(maxRestarts=0)})
    pid = hub.status()["mb"].pid
    assert pid is not None
    outcomes: list[BaseException | None] = []
    sent = asyncio.Event()

    async def one(i: int) -> None:
        try:
            await hub.call_tool("mb__echo", {"text": f"m{i}" * 50}, timeout=30)
            outcomes.append(None)
        except BaseException as exc:
            outcomes.append(exc)

    async def flood() -> None:
        tasks: list[asyncio.Task[None]] = []
        # Keep sending until the hub itself says the server is gone: some calls meet the live server,
        # some a closing stdin, some the closed connection.
        for i in range(100_000):
            tasks.append(asyncio.create_task(one(i)))
            if i == 200:
                sent.set()
            if i % 20 == 0:
                await asyncio.sleep(0)
            if hub.status()["mb"].state != "ready" and i > 400:
                break
        await asyncio.gather(*tasks)

    flooding = asyncio.create_task(flood())
    await sent.wait()
    os.killpg(pid, signal.SIGKILL)
    await asyncio.wait_for(flooding, 60)
    failures = [e for e in outcomes if e is not None]
    assert failures, "the kill should have failed some calls"
    assert all(isinstance(e, PatchbayError) for e in failures), {type(e).__name__ for e in failures}
