"""``/mcp/<profile>`` end to end: a real ``patchbay serve``, real servers, the SDK's clients in both eras."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import mcp.types as types
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests import thirdparty
from tests.conftest import bad, wait_for
from tests.test_mcp_input import passthrough
from tests.test_passthrough import open_watched
from tests.test_serve import Served, start_serve, stop_serve, text

PROFILES = {"coding": {"servers": ["gh"], "tools": ["gh__*", "!gh__crash"]}}
ACCEPT = {"Accept": "application/json, text/event-stream"}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    config = tmp_path / "patchbay.json"
    doc = {
        "mcpServers": {"gh": bad("--name", "gh"), "fs": bad("--name", "fs")},
        "profiles": PROFILES,
        "pinning": "off",
    }
    config.write_text(json.dumps(doc, indent=2))
    s = await start_serve(config)
    yield s
    await stop_serve(s)


def coding(served: Served) -> str:
    return f"{served.base}/mcp/coding"


async def test_handshake_era_client_sees_and_calls_only_the_profile(served: Served) -> None:
    async with streamable_http_client(coding(served)) as (r, w), ClientSession(r, w) as session:
        init = await session.initialize()
        assert init.capabilities.tools is not None and init.capabilities.tools.list_changed
        names = {t.name for t in (await session.list_tools()).tools}
        assert "gh__echo" in names and "gh__crash" not in names
        assert all(n.startswith("gh__") for n in names)
        assert text(await session.call_tool("gh__echo", {"text": "in"})) == "in"
        with pytest.raises(MCPError, match="tool 'fs__echo' is not in profile 'coding'"):
            await session.call_tool("fs__echo", {"text": "out"})
        with pytest.raises(MCPError, match="tool 'gh__crash' is not in profile 'coding'"):
            await session.call_tool("gh__crash", {})
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        slept = await session.call_tool("gh__sleep", {"seconds": 0.3}, progress_callback=on_progress)
        assert not slept.is_error
        await wait_for(lambda: len(seen) >= 2, 5, "progress through the profile")
        assert [p.name for p in (await session.list_prompts()).prompts] == ["gh__greet"]
        resources = (await session.list_resources()).resources
        assert [str(x.uri) for x in resources] == ["test://hello"]  # gh's (fs's copy is a conflict)
        assert (await session.read_resource("test://hello")).contents[0].text == "hello"  # type: ignore[union-attr]
        prompt = await session.get_prompt("gh__greet", {"name": "Ada"})
        assert prompt.messages[0].content.text == "Hello, Ada!"  # type: ignore[union-attr]
        with pytest.raises(MCPError, match="prompt in profile 'coding'"):
            await session.get_prompt("fs__greet", {"name": "Ada"})
    async with Client(served.mcp) as whole:  # /mcp stays the whole catalog
        names = {t.name for t in (await whole.list_tools()).tools}
        assert {"fs__echo", "gh__crash", "gh__echo"} <= names


async def test_modern_client_and_the_fast_path_go_through_the_profile(served: Served) -> None:
    async with Client(coding(served)) as client:  # 2026-07-28, stateless: the fast path serves calls
        names = {t.name for t in (await client.list_tools()).tools}
        assert "gh__echo" in names and not any(n.startswith("fs__") for n in names)
        assert text(await client.call_tool("gh__echo", {"text": "modern"})) == "modern"
        with pytest.raises(MCPError, match="not in profile 'coding'"):
            await client.call_tool("fs__echo", {"text": "no"})
    async with served.http() as http:  # a plain handshake-era call: answered as JSON by the fast path
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        }
        r = await http.post("/mcp/coding", json=init, headers=ACCEPT)
        assert r.status_code == 200
        headers = {
            **ACCEPT,
            "Mcp-Session-Id": r.headers["mcp-session-id"],
            "MCP-Protocol-Version": "2025-11-25",
        }
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await http.post("/mcp/coding", json=note, headers=headers)).status_code == 202

        def call(rid: int, name: str) -> dict[str, Any]:
            params = {"name": name, "arguments": {"text": "raw"}}
            return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}

        ok = await http.post("/mcp/coding", json=call(1, "gh__echo"), headers=headers)
        assert ok.headers["content-type"].startswith("application/json")  # the fast path's answer
        assert ok.json()["result"]["content"][0]["text"] == "raw"
        refused = (await http.post("/mcp/coding", json=call(2, "fs__echo"), headers=headers)).json()
        assert refused["error"]["code"] == -32602
        assert "tool 'fs__echo' is not in profile 'coding'" in refused["error"]["message"]
        # A session of /mcp/coding is not a session of /mcp (separate session managers).
        other = await http.post("/mcp", json=call(3, "fs__echo"), headers=headers)
        assert other.status_code == 404
        unknown = await http.post("/mcp/nope", json=init, headers=ACCEPT)
        assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_profile"
        assert "known: coding" in unknown.json()["detail"]


async def test_list_changed_only_when_the_profile_view_changes(served: Served) -> None:
    profile_seen: list[str] = []
    whole_seen: list[str] = []

    def recorder(into: list[str]) -> Any:
        async def on_message(msg: Any) -> None:
            if isinstance(msg, types.ToolListChangedNotification):
                into.append("tools")

        return on_message

    async with (
        streamable_http_client(coding(served)) as (r, w),
        ClientSession(r, w, message_handler=recorder(profile_seen)) as session,
        streamable_http_client(served.mcp) as (r2, w2),
        ClientSession(r2, w2, message_handler=recorder(whole_seen)) as whole,
        Client(coding(served)) as modern,
    ):
        await session.initialize()
        await whole.initialize()
        modern_seen: list[Any] = []
        listening = asyncio.Event()

        async def listen() -> None:
            async with modern.listen(tools_list_changed=True) as sub:
                listening.set()
                async for event in sub:
                    modern_seen.append(event)

        listener = asyncio.create_task(listen())
        try:
            await listening.wait()
            # An unrelated change (fs is not in the profile): /mcp hears of it, /mcp/coding does not.
            await whole.call_tool("fs__set_tools", {"names": ["unrelated"]})
            await wait_for(lambda: bool(whole_seen), 10, "list_changed on /mcp")
            # A change of the profile's own view: both of its clients hear of it.
            await session.call_tool("gh__set_tools", {"names": ["fresh"]})
            await wait_for(
                lambda: bool(profile_seen) and bool(modern_seen), 10, "list_changed on /mcp/coding"
            )
            assert "gh__fresh" in {t.name for t in (await session.list_tools()).tools}
            assert "fs__unrelated" not in {t.name for t in (await session.list_tools()).tools}
            # Exactly one round: the unrelated change (earlier, and already fanned out on /mcp) sent none.
            assert profile_seen == ["tools"] and len(modern_seen) == 1
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)


async def test_cancellation_through_a_profile_reaches_the_upstream(served: Served) -> None:
    async with streamable_http_client(coding(served)) as (r, w), ClientSession(r, w) as session:
        await session.initialize()
        with pytest.raises(MCPError):
            await session.call_tool("gh__sleep", {"seconds": 10}, read_timeout_seconds=0.5)
    async with served.http() as http:

        async def cancelled() -> bool:
            tail = (await http.get("/api/servers/gh")).json()["stderr_tail"]
            return any(line.startswith("CANCELLED") for line in tail)

        async with asyncio.timeout(10):
            while not await cancelled():
                await asyncio.sleep(0.05)


async def test_profiles_added_and_removed_by_a_reload(served: Served) -> None:
    doc = json.loads(served.config.read_text())
    doc["profiles"] = {"files": {"servers": ["fs"]}}
    served.config.write_text(json.dumps(doc, indent=2))
    url = f"{served.base}/mcp/files"
    async with served.http() as http:

        async def status(path: str) -> int:
            r = await http.post(path, json={"jsonrpc": "2.0", "id": 0, "method": "ping"}, headers=ACCEPT)
            return r.status_code

        async with asyncio.timeout(15):  # the watcher polls the file once a second
            while await status("/mcp/files") == 404:
                await asyncio.sleep(0.1)
        assert await status("/mcp/coding") == 404
    async with Client(url) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names and all(n.startswith("fs__") for n in names)


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
async def test_sampling_completion_and_subscriptions_through_profiles(tmp_path: Path) -> None:
    thirdparty.require("everything")
    config = tmp_path / "patchbay.json"
    doc = {
        "mcpServers": {"everything": thirdparty.everything(), "pt": passthrough()},
        "profiles": {"ev": {"servers": ["everything"]}, "pt": {"servers": ["pt"]}},
    }
    config.write_text(json.dumps(doc))
    served = await start_serve(config)
    asked: list[Any] = []

    async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append(params)
        content = types.TextContent(type="text", text="sampled by the client")
        return types.CreateMessageResult(role="assistant", content=content, model="test")

    try:
        async with (
            streamable_http_client(f"{served.base}/mcp/ev") as (r, w),
            ClientSession(r, w, sampling_callback=sampling) as session,
        ):
            init = await session.initialize()
            assert init.capabilities.completions is not None
            result = await session.call_tool("everything__trigger-sampling-request", {"prompt": "hello"})
            assert not result.is_error and "sampled by the client" in json.dumps(
                result.model_dump(mode="json")
            )
            department = await session.complete(
                types.PromptReference(type="ref/prompt", name="everything__completable-prompt"),
                {"name": "department", "value": "E"},
            )
            assert department.completion.values == ["Engineering"]
            with pytest.raises(MCPError, match="prompt in profile 'ev'"):
                await session.complete(
                    types.PromptReference(type="ref/prompt", name="pt__pick"), {"name": "color", "value": "b"}
                )
            with pytest.raises(MCPError, match="resource in profile 'ev'"):
                await session.subscribe_resource("pt://a")
            assert not any(str(x.uri).startswith("pt://") for x in (await session.list_resources()).resources)
        async with AsyncExitStack() as stack:
            watched, seen = await open_watched(stack, f"{served.base}/mcp/pt")
            await watched.subscribe_resource("pt://a")
            await watched.call_tool("pt__touch", {"uri": "pt://a"})
            await seen.until("pt://a")
    finally:
        await stop_serve(served)
