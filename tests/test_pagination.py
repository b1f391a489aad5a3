"""``listPageSize``: /mcp listings in pages with ``nextCursor``, followed by real SDK clients against a real
``patchbay serve``: every item exactly once, and a -32602 (never a 500) for a cursor that cannot go on."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import mcp.types as types
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from patchbay.config import parse_config
from patchbay.errors import ConfigError
from tests.conftest import bad, wait_for
from tests.test_serve import Served, start_serve, stop_serve

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
PAGE = 128
EXTRA = 1200  # tools of the big server, beside its own dozen: well over 1000 in all


async def serve(tmp_path: Path, doc: dict[str, Any]) -> Served:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps(doc))
    return await start_serve(config, "--no-reload")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    doc = {
        "listPageSize": PAGE,
        "mcpServers": {"big": bad("--tools", str(EXTRA)), "small": bad("--tools", "5")},
        "profiles": {"smallonly": {"servers": ["small"]}},
    }
    s = await serve(tmp_path, doc)
    yield s
    await stop_serve(s)


async def catalog_names(served: Served) -> list[str]:
    async with served.http() as http:
        r = await http.get("/api/tools")
        assert r.status_code == 200
        return [t["name"] for t in r.json()]


async def walk(session: ClientSession) -> tuple[list[str], list[int]]:
    names: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        names += [t.name for t in page.tools]
        sizes.append(len(page.tools))
        if (cursor := page.next_cursor) is None:
            return names, sizes


async def test_sdk_clients_following_cursors_get_every_tool_exactly_once(served: Served) -> None:
    expected = await catalog_names(served)
    assert len(expected) > 1000
    async with streamable_http_client(served.mcp) as (r, w), ClientSession(r, w) as session:
        await session.initialize()
        names, sizes = await walk(session)
    assert names == expected  # every tool, once, in catalog order
    assert len(sizes) == -(-len(expected) // PAGE) and max(sizes) == PAGE
    async with Client(served.mcp) as client:  # 2026-07-28, no session
        modern: list[str] = []
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor)
            modern += [t.name for t in page.tools]
            if (cursor := page.next_cursor) is None:
                break
    assert modern == expected


def messages(r: httpx2.Response) -> list[dict[str, Any]]:
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        lines = [ln[5:] for ln in r.text.splitlines() if ln.startswith("data:") and ln[5:].strip()]
        return [json.loads(ln) for ln in lines]
    return [r.json()]


async def open_session(http: httpx2.AsyncClient, path: str, capabilities: dict[str, Any]) -> dict[str, str]:
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": capabilities,
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    r = await http.post(path, json=init, headers=ACCEPT)
    assert r.status_code == 200
    headers = {**ACCEPT, "Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(path, json=note, headers=headers)).status_code == 202
    return headers


async def list_raw(
    http: httpx2.AsyncClient,
    headers: dict[str, str],
    params: Any,
    method: str = "tools/list",
    path: str = "/mcp",
) -> tuple[httpx2.Response, dict[str, Any]]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 9, "method": method}
    if params is not None:
        body["params"] = params
    r = await http.post(path, json=body, headers=headers)
    (reply,) = [m for m in messages(r) if m.get("id") == 9]
    return r, reply


MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}
MODERN_HEADERS = {**ACCEPT, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}


async def test_the_fast_path_pages_are_the_sdks(served: Served) -> None:
    """tools/list is answered from pre-encoded pages; one with a progress token goes through the SDK's
    handler. Both give the same pages, and each other's cursors work."""
    async with served.http() as http:
        session = await open_session(http, "/mcp", {"sampling": {}})
        cursor = None
        pages = 0
        while True:
            params = {"cursor": cursor} if cursor else {}
            r_fast, a = await list_raw(http, session, params)
            r_sdk, b = await list_raw(http, session, {**params, "_meta": {"progressToken": "p"}})
            assert r_fast.headers["content-type"].startswith("application/json")
            assert r_sdk.headers["content-type"].startswith("text/event-stream")
            assert a == b
            pages += 1
            cursor = a["result"].get("nextCursor")
            if cursor is None:
                break
        assert pages > 1
        # 2026-07-28: the fast path's answer is the SDK's (a progress token sends it to the SDK)
        r_fast, a = await list_raw(http, MODERN_HEADERS, {"_meta": MODERN_META})
        r_sdk, b = await list_raw(http, MODERN_HEADERS, {"_meta": {**MODERN_META, "progressToken": "p"}})
        assert a["result"]["resultType"] == "complete" and a["result"]["nextCursor"]
        assert a["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "patchbay"
        assert a == b


async def test_bad_cursors_are_refused_with_invalid_params(served: Served) -> None:
    async with served.http() as http:
        fast = await open_session(http, "/mcp", {})
        _, first = await list_raw(http, fast, None)
        good = first["result"]["nextCursor"]
        _, prompts = await list_raw(http, fast, None, "prompts/list")
        assert "nextCursor" not in prompts["result"]  # 2 prompts: one page
        _, profile_page = await list_raw(
            http, await open_session(http, "/mcp/smallonly", {}), None, path="/mcp/smallonly"
        )
        assert "nextCursor" not in profile_page["result"]  # 17 tools in the profile
        forged = base64.urlsafe_b64encode(b"tools:00000000:0:128").decode().rstrip("=")
        raw = base64.urlsafe_b64decode(good + "==")
        other_kind = base64.urlsafe_b64encode(raw.replace(b"tools", b"prompts"))
        bad_cursors: list[Any] = [
            "garbage!",
            "",
            "x" * 5000,
            forged,  # another run of the hub
            other_kind.decode().rstrip("="),  # another list
            good[:-2],
            5,
        ]
        sdk: dict[str, Any] = {"progressToken": "p"}  # takes the SDK's path
        cases = [(fast, {}), (fast, {"_meta": sdk}), (MODERN_HEADERS, {"_meta": MODERN_META})]
        cases.append((MODERN_HEADERS, {"_meta": {**MODERN_META, **sdk}}))
        for headers, extra in cases:
            for cursor in bad_cursors:
                params: dict[str, Any] = {"cursor": cursor, **extra}
                r, reply = await list_raw(http, headers, params)
                assert r.status_code < 500, (cursor, r.status_code, r.text[:200])
                assert reply["error"]["code"] == -32602, (cursor, reply)
            _, ok = await list_raw(http, headers, {"cursor": good, **extra})
            assert len(ok["result"]["tools"]) == PAGE


async def test_a_cursor_survives_a_relist_with_the_same_names_and_goes_stale_when_they_change(
    served: Served,
) -> None:
    changed: list[Any] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.append(message)

    async with (
        streamable_http_client(served.mcp) as (r, w),
        ClientSession(r, w, message_handler=on_message) as session,
    ):
        await session.initialize()
        expected = await catalog_names(served)
        first = await session.list_tools()
        assert first.next_cursor
        # the same names listed again (new catalog version, same list): the walk goes on
        await session.call_tool("small__set_tools", {"names": []})
        await wait_for(lambda: bool(changed), 15, "list_changed after a same-names re-list")
        names = [t.name for t in first.tools]
        cursor: str | None = first.next_cursor
        second = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
        names += [t.name for t in second.tools]
        # now names change: the cursor in hand is stale, and a new walk sees the new list once
        await session.call_tool("small__set_tools", {"names": ["brand_new"]})
        async with asyncio.timeout(15):  # until the hub has re-listed the server
            while "small__brand_new" not in await catalog_names(served):
                await asyncio.sleep(0.05)
        with pytest.raises(MCPError) as err:
            await session.list_tools(params=types.PaginatedRequestParams(cursor=second.next_cursor))
        assert err.value.code == -32602 and "stale cursor" in err.value.message
        walked, _ = await walk(session)
        now = await catalog_names(served)
        assert walked == now and "small__brand_new" in now and len(set(walked)) == len(walked)
        assert len(now) == len(expected) + 1


@pytest.mark.parametrize("value", [-1, "10", True, 1.5, [3]])
def test_list_page_size_must_be_a_whole_number(value: Any) -> None:
    with pytest.raises(ConfigError, match="listPageSize"):
        parse_config(json.dumps({"listPageSize": value, "mcpServers": {}}))


@pytest.mark.parametrize("value", [0, 1, 500, None])
def test_list_page_size_accepts_zero_and_counts(value: Any) -> None:
    doc: dict[str, Any] = {"mcpServers": {}}
    if value is not None:
        doc["listPageSize"] = value
    config = parse_config(json.dumps(doc))
    assert config.to_document().get("listPageSize") == value  # kept as written


async def test_without_list_page_size_every_item_comes_in_one_answer(tmp_path: Path) -> None:
    s = await serve(tmp_path, {"mcpServers": {"big": bad("--tools", "300")}})
    try:
        async with streamable_http_client(s.mcp) as (r, w), ClientSession(r, w) as session:
            await session.initialize()
            page = await session.list_tools()
            assert page.next_cursor is None and len(page.tools) == len(await catalog_names(s)) > 300
            prompts = await session.list_prompts()
            assert prompts.next_cursor is None and [p.name for p in prompts.prompts] == ["big__greet"]
    finally:
        await stop_serve(s)


async def test_other_listings_paginate_too(tmp_path: Path) -> None:
    s = await serve(tmp_path, {"listPageSize": 1, "mcpServers": {"a": bad(), "b": bad()}})
    try:
        async with streamable_http_client(s.mcp) as (r, w), ClientSession(r, w) as session:
            await session.initialize()
            first = await session.list_prompts()
            assert [p.name for p in first.prompts] == ["a__greet"] and first.next_cursor
            second = await session.list_prompts(params=types.PaginatedRequestParams(cursor=first.next_cursor))
            assert [p.name for p in second.prompts] == ["b__greet"] and second.next_cursor is None
            resources = await session.list_resources()  # the same URI twice: one is exposed
            assert len(resources.resources) == 1 and resources.next_cursor is None
            with pytest.raises(MCPError) as err:  # a prompts cursor is no tools cursor
                await session.list_tools(params=types.PaginatedRequestParams(cursor=first.next_cursor))
            assert err.value.code == -32602
    finally:
        await stop_serve(s)
