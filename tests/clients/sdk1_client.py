"""A small client on the official MCP Python SDK 1.x (``mcp==1.30.0``), run by tests/test_clients.py.

It runs in its own venv (``tests/.venv-sdk1``, from ``tests/requirements-sdk1.txt``), never in patchbay's,
which is on SDK 2.x. It prints JSON lines on stdout; what it prints is the test's evidence.

    sdk1_client.py call URL [--token T]     initialize, list tools, call mb__add {"a": 1, "b": 2}, echo, fail;
                                            print one JSON object and exit
    sdk1_client.py watch URL [--token T]    initialize and list tools, print {"ready": ...}; then wait for
                                            notifications/tools/list_changed, list the tools again and print
                                            {"list_changed": ...}; exit (or exit 3 after --timeout seconds)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import warnings
from importlib.metadata import version
from typing import Any

import mcp.types as types
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

# 1.30 deprecates streamablehttp_client for streamable_http_client; the old one is what most 1.x clients
# in the wild call, so that is the one to exercise. Keep the warning off stderr.
warnings.filterwarnings("ignore", category=DeprecationWarning)


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def tool_names(session: ClientSession) -> list[str]:
    return sorted(t.name for t in (await session.list_tools()).tools)


async def call(url: str, headers: dict[str, str]) -> None:
    async with (
        streamablehttp_client(url, headers=headers) as (read, write, get_session_id),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        added = await session.call_tool("mb__add", {"a": 1, "b": 2})
        echoed = await session.call_tool("mb__echo", {"text": "from sdk1"})
        failed = await session.call_tool("mb__fail", {})
        emit(
            {
                "sdk": version("mcp"),
                "protocol_version": init.protocolVersion,
                "server_name": init.serverInfo.name,
                "list_changed": bool(init.capabilities.tools and init.capabilities.tools.listChanged),
                "session_id": get_session_id(),
                "tools": await tool_names(session),
                "add": {"text": text_of(added), "structured": added.structuredContent},
                "add_is_error": added.isError,
                "echo": text_of(echoed),
                "fail": {"text": text_of(failed), "is_error": failed.isError},
            }
        )


async def watch(url: str, headers: dict[str, str], timeout: float) -> None:
    changed = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ToolListChangedNotification
        ):
            changed.set()

    async with (
        streamablehttp_client(url, headers=headers) as (read, write, _),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        init = await session.initialize()
        emit({"ready": await tool_names(session), "protocol_version": init.protocolVersion})
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            emit({"timeout": timeout})
            sys.exit(3)
        emit({"list_changed": await tool_names(session)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["call", "watch"])
    parser.add_argument("url")
    parser.add_argument("--token")
    parser.add_argument("--timeout", type=float, default=15.0)
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    if args.mode == "call":
        asyncio.run(call(args.url, headers))
    else:
        asyncio.run(watch(args.url, headers, args.timeout))


if __name__ == "__main__":
    main()
