"""A one-shot loopback listener for the authorization redirect (RFC 8252): 127.0.0.1, a random port.

Used by ``patchbay auth login`` and by a ``Hub`` that is not behind ``patchbay serve`` (which has its own
callback route). It answers only ``GET /oauth/callback`` and hands the query parameters to its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

CALLBACK_PATH = "/oauth/callback"
Handler = Callable[[dict[str, str]], Awaitable[str]]


def result_page(ok: bool, message: str) -> str:
    title = "Signed in" if ok else "Sign-in failed"
    return (
        f"<!doctype html><meta charset=utf-8><title>patchbay: {title}</title>"
        f"<h1>{title}</h1><p>{html.escape(message)}</p>" + ("<p>You can close this tab.</p>" if ok else "")
    )


class LoopbackCallback:
    """Listens until closed; each callback request is passed to ``handler`` (which returns a message)."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        self._handler = handler
        self._host = host
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def redirect_uri(self) -> str:
        return f"http://{self._host}:{self.port}{CALLBACK_PATH}"

    async def start(self) -> LoopbackCallback:
        self._server = await asyncio.start_server(self._serve, self._host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LoopbackCallback:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(30):
                line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers: nothing in them matters here
            method, _, rest = line.decode("latin-1").partition(" ")
            target = rest.rsplit(" ", 1)[0]
            parts = urlsplit(target)
            if method != "GET" or parts.path != CALLBACK_PATH:
                await self._reply(writer, 404, result_page(False, "not found"))
                return
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            try:
                message = await self._handler(params)
                await self._reply(writer, 200, result_page(True, message))
            except Exception as exc:
                await self._reply(writer, 400, result_page(False, str(exc)))
        except (TimeoutError, ConnectionError, UnicodeDecodeError) as exc:
            log.debug("loopback callback: dropped a request: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: int, body: str) -> None:
        data = body.encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()
