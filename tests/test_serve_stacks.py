"""``patchbay serve --http/--loop``: every HTTP implementation and event loop serves /mcp end to end, with a
real SDK client against a real process, and a missing or unknown one is a clear usage error."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import mcp.types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import bad
from tests.test_serve import start_serve, stop_serve


def text(result: types.CallToolResult) -> str:
    return result.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("http", "loop"), [("h11", "asyncio"), ("httptools", "asyncio"), ("httptools", "uvloop")]
)
async def test_each_stack_lists_calls_and_sees_a_server_die(tmp_path: Path, http: str, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"mb": bad()}}))
    served = await start_serve(config, "--no-reload", "--http", http, "--loop", loop)
    try:
        async with streamable_http_client(served.mcp) as (r, w), ClientSession(r, w) as session:
            await session.initialize()
            names = {t.name for t in (await session.list_tools()).tools}
            assert {"mb__echo", "mb__crash"} <= names
            assert text(await session.call_tool("mb__echo", {"text": "stack"})) == "stack"
            crashed = await session.call_tool("mb__crash", {"code": 5})  # the stdio server's exit is seen
            assert crashed.is_error and "server 'mb' exited with status 5" in text(crashed)
    finally:
        await stop_serve(served)


async def test_an_unknown_http_implementation_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {}}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchbay", "serve", "--config", str(config), "--http", "nghttp2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"--http" in err and b"nghttp2" in err
