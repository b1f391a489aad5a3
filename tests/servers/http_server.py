"""A small SDK ``MCPServer`` served over HTTP (streamable HTTP or legacy SSE) for the remote-upstream tests.

Usage: ``python http_server.py PORT [--transport streamable-http|sse] [--token T] [--name NAME] [--hold]``.
Listens on 127.0.0.1 only. With ``--token``, every HTTP request must carry ``Authorization: Bearer TOKEN``
or gets a 401. Tools: ``echo``, ``add``, ``sleep`` (reports progress), ``quiet_sleep`` (sends nothing
meanwhile), ``header`` (reads back a request header), ``pid``, ``forget_sessions`` (simulates a restart
that keeps the connections).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send


def build(name: str) -> MCPServer:
    mcp = MCPServer(name)

    @mcp.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool()
    async def sleep(seconds: float, ctx: Context) -> str:
        """Sleep, reporting progress about every 0.1 s."""
        steps = max(int(seconds / 0.1), 1)
        for i in range(steps):
            await ctx.report_progress(i, steps, f"step {i}")
            await asyncio.sleep(seconds / steps)
        return f"slept {seconds}"

    @mcp.tool()
    async def quiet_sleep(seconds: float) -> str:
        """Sleep without sending anything meanwhile."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @mcp.tool()
    def header(name: str, ctx: Context) -> str:
        """The value of an HTTP request header (empty if absent)."""
        return (ctx.headers or {}).get(name.lower(), "")

    @mcp.tool()
    def pid() -> int:
        """The server's process id."""
        return os.getpid()

    @mcp.tool()
    def forget_sessions() -> str:
        """Forget every streamable HTTP session without closing any connection, as a restarted instance
        behind a load balancer would: the next request of any client gets 404 "Session not found"."""
        manager = mcp.session_manager
        count = len(manager._server_instances)
        manager._server_instances.clear()
        manager._session_owners.clear()
        return f"forgot {count}"

    return mcp


class RequireBearer:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != self.expected:
            await send(
                {"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]}
            )
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    parser.add_argument("--token")
    parser.add_argument("--name", default="http-test")
    parser.add_argument("--hold", action="store_true", help="wait for a line on stdin before listening")
    args = parser.parse_args()
    mcp = build(args.name)
    app: ASGIApp = mcp.streamable_http_app() if args.transport == "streamable-http" else mcp.sse_app()
    if args.token:
        app = RequireBearer(app, args.token)
    if args.hold:  # lets a test have the slow imports done before it needs the server up
        sys.stdin.readline()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
