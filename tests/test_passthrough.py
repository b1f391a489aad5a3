"""Completion and resource subscriptions through ``/mcp``, to the server that owns the prompt or resource.

Real SDK clients against ``patchbay serve`` over server-everything and the passthrough test server (which
reports what it is subscribed to, and sends ``resources/updated`` on demand).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import mcp.types as types
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests import thirdparty
from tests.test_mcp_input import passthrough
from tests.test_serve import Served, start_serve, stop_serve


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    thirdparty.require("everything")
    config = tmp_path / "patchbay.json"
    config.write_text(
        json.dumps({"mcpServers": {"everything": thirdparty.everything(), "pt": passthrough()}})
    )
    s = await start_serve(config)
    yield s
    await stop_serve(s)


class Watcher:
    """A handshake-era client session that records the resource updates it receives."""

    def __init__(self) -> None:
        self.updated: list[str] = []
        self.arrived = asyncio.Condition()

    async def on_message(self, msg: Any) -> None:
        if isinstance(msg, types.ResourceUpdatedNotification):
            async with self.arrived:
                self.updated.append(str(msg.params.uri))
                self.arrived.notify_all()

    async def until(self, uri: str) -> None:
        async with asyncio.timeout(30), self.arrived:
            await self.arrived.wait_for(lambda: uri in self.updated)


async def open_watched(stack: AsyncExitStack, url: str) -> tuple[ClientSession, Watcher]:
    watcher = Watcher()
    r, w = await stack.enter_async_context(streamable_http_client(url))
    session = await stack.enter_async_context(ClientSession(r, w, message_handler=watcher.on_message))
    await session.initialize()
    return session, watcher


def text(result: types.CallToolResult) -> str:
    return result.content[0].text  # type: ignore[union-attr]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """A condition of the real system, polled with a bound: never a guessed sleep."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def test_completions_come_back_from_the_owning_server(served: Served) -> None:
    async with streamable_http_client(served.mcp) as (r, w), ClientSession(r, w) as session:
        init = await session.initialize()
        assert init.capabilities.completions is not None  # some upstream completes
        assert init.capabilities.resources is not None and init.capabilities.resources.subscribe
        prompts = {p.name for p in (await session.list_prompts()).prompts}
        assert {"everything__completable-prompt", "pt__pick"} <= prompts

        department = await session.complete(
            types.PromptReference(type="ref/prompt", name="everything__completable-prompt"),
            {"name": "department", "value": "E"},
        )
        assert department.completion.values == ["Engineering"]
        leader = await session.complete(
            types.PromptReference(type="ref/prompt", name="everything__completable-prompt"),
            {"name": "name", "value": ""},
            {"department": "Sales"},
        )
        assert leader.completion.values == ["David", "Eve", "Frank"]
        template = await session.complete(
            types.ResourceTemplateReference(
                type="ref/resource", uri="demo://resource/dynamic/text/{resourceId}"
            ),
            {"name": "resourceId", "value": "7"},
        )
        assert template.completion.values == ["7"]
        colours = await session.complete(
            types.PromptReference(type="ref/prompt", name="pt__pick"), {"name": "color", "value": "b"}
        )
        assert colours.completion.values == ["blue", "black"]
        items = await session.complete(
            types.ResourceTemplateReference(type="ref/resource", uri="pt://item/{id}"),
            {"name": "id", "value": "1"},
        )
        assert items.completion.values == ["1", "10"]
        with pytest.raises(Exception, match="unknown prompt"):
            await session.complete(
                types.PromptReference(type="ref/prompt", name="nobody__owns"), {"name": "x", "value": ""}
            )


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
async def test_resource_updates_reach_exactly_the_subscribed_sessions(served: Served) -> None:
    async with AsyncExitStack() as outer:
        c, _ = await open_watched(outer, served.mcp)

        async def upstream_subscribed() -> str:
            return text(await c.call_tool("pt__subscribed", {}))

        async with AsyncExitStack() as inner:
            a, seen_a = await open_watched(inner, served.mcp)
            b, seen_b = await open_watched(inner, served.mcp)
            await a.subscribe_resource("pt://a")
            await a.subscribe_resource("pt://a")  # twice from one session: still one subscription
            await b.subscribe_resource("pt://b")
            assert await upstream_subscribed() == "pt://a,pt://b"
            await a.call_tool("pt__touch", {"uri": "pt://a"})
            await a.call_tool("pt__touch", {"uri": "pt://b"})
            await seen_a.until("pt://a")
            await seen_b.until("pt://b")  # sent after pt://a's update: b would have had that one first
            assert seen_a.updated == ["pt://a"] and seen_b.updated == ["pt://b"]

            await b.unsubscribe_resource("pt://b")
            assert await upstream_subscribed() == "pt://a"  # the last subscriber left: the owner is told

            # server-everything: subscribe, then ask it for its simulated updates (it sends one at once).
            resources = (await a.list_resources()).resources
            resource = next(str(r.uri) for r in resources if str(r.uri).startswith("demo://"))
            await a.subscribe_resource(resource)
            await a.call_tool("everything__toggle-subscriber-updates", {})
            await seen_a.until(resource)
            assert resource not in seen_b.updated
            await c.subscribe_resource("pt://a")  # a second subscriber to pt://a

        # a's session ended: what it held is released, but pt://a stays subscribed for c.
        async def only_c_left() -> bool:
            return await upstream_subscribed() == "pt://a"

        await eventually(only_c_left)
    async with Client(served.mcp, mode="legacy") as probe:
        # c's session ended too: nothing is left subscribed upstream.
        async def released() -> bool:
            return text(await probe.call_tool("pt__subscribed", {})) == ""

        await eventually(released)


async def test_modern_listen_streams_get_the_updates_they_asked_for(served: Served) -> None:
    async with Client(served.mcp) as modern, Client(served.mcp, mode="legacy") as legacy:
        async with modern.listen(resource_subscriptions=["pt://a"]) as sub:

            async def held() -> bool:
                return text(await legacy.call_tool("pt__subscribed", {})) == "pt://a"

            await eventually(held)  # the listen stream holds the upstream subscription
            await legacy.call_tool("pt__touch", {"uri": "pt://a"})
            async with asyncio.timeout(30):
                event = await anext(aiter(sub))
            assert getattr(event, "uri", None) == "pt://a"

        async def released() -> bool:
            return text(await legacy.call_tool("pt__subscribed", {})) == ""

        await eventually(released)


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
async def test_capabilities_are_advertised_only_when_an_upstream_has_them(tmp_path: Path) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"pt": passthrough("--no-completions", "--no-subscribe")}}))
    served = await start_serve(config)
    try:
        async with streamable_http_client(served.mcp) as (r, w), ClientSession(r, w) as session:
            init = await session.initialize()
            assert init.capabilities.completions is None
            assert init.capabilities.resources is not None and not init.capabilities.resources.subscribe
            with pytest.raises(Exception, match="does not support resource subscriptions"):
                await session.subscribe_resource("pt://a")
    finally:
        await stop_serve(served)
