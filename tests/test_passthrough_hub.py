"""Completion and resource subscriptions routed through the hub to the owning server (server-everything)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from patchbay import Hub, UnknownToolError, UpstreamError
from tests import thirdparty as tp
from tests.conftest import HubFactory, bad

pytestmark = pytest.mark.skipif(not tp.available("everything"), reason=tp.HINT)

DOC = "demo://resource/static/document/architecture.md"


async def everything_hub(make_hub: HubFactory) -> Hub:
    hub = await make_hub({"ev": tp.everything(), "mb": bad()})
    assert hub.status()["ev"].state == "ready"
    return hub


async def test_completion_reaches_the_owner_of_the_prompt(make_hub: HubFactory) -> None:
    hub = await everything_hub(make_hub)
    assert hub.upstream_capabilities().completions
    result = await hub.complete(
        {"type": "ref/prompt", "name": "ev__completable-prompt"}, {"name": "department", "value": "E"}
    )
    assert result.completion.values == ["Engineering"]
    # Context reaches the upstream too: the team members of the chosen department.
    result = await hub.complete(
        {"type": "ref/prompt", "name": "ev__completable-prompt"},
        {"name": "name", "value": ""},
        {"arguments": {"department": "Sales"}},
    )
    assert result.completion.values == ["David", "Eve", "Frank"]
    with pytest.raises(UnknownToolError):
        await hub.complete({"type": "ref/prompt", "name": "nope"}, {"name": "x", "value": ""})
    with pytest.raises(UpstreamError, match="not supported"):
        await hub.complete({"type": "ref/elsewhere"}, {"name": "x", "value": ""})


async def test_subscriptions_are_counted_and_updates_pass_through(make_hub: HubFactory) -> None:
    hub = await everything_hub(make_hub)
    assert hub.upstream_capabilities().resource_subscribe
    updates: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    hub.add_notification_observer(
        lambda server, method, params: (
            updates.put_nowait((server, params)) if method == "notifications/resources/updated" else None
        )
    )
    await hub.subscribe_resource(DOC)
    await hub.subscribe_resource(DOC)  # a second subscriber: the owner is not asked again
    assert hub._subscriptions[DOC] == 2
    await hub.call_tool("ev__toggle-subscriber-updates", {})  # it sends an update for each subscription
    server, params = await asyncio.wait_for(updates.get(), 30)
    assert (server, params["uri"]) == ("ev", DOC)
    await hub.unsubscribe_resource(DOC)
    assert hub._subscriptions[DOC] == 1
    await hub.unsubscribe_resource(DOC)
    assert DOC not in hub._subscriptions
    with pytest.raises(UnknownToolError):
        await hub.subscribe_resource("demo://nobody/has/this")


async def test_a_server_without_subscriptions_is_refused_clearly(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    uri = hub.resources()[0].uri
    with pytest.raises(UpstreamError, match="does not support resource subscriptions"):
        await hub.subscribe_resource(uri)


async def test_subscriptions_are_renewed_when_the_owner_comes_back(make_hub: HubFactory) -> None:
    import os
    import signal

    hub = await everything_hub(make_hub)
    renewed = asyncio.Event()

    def observe(server: str, method: str, params: dict[str, Any]) -> None:
        if method == "notifications/message" and f"Subscribe Resource request for URI: {DOC}" in str(
            params.get("data")
        ):
            renewed.set()

    hub.add_notification_observer(observe)
    await hub.subscribe_resource(DOC)
    await asyncio.wait_for(renewed.wait(), 30)
    renewed.clear()
    pid = hub.status()["ev"].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(renewed.wait(), 60)  # the new process was asked again, by the hub itself
