"""``CorkedTransport`` (server/corking.py) on real TCP connections on 127.0.0.1: the writes of one turn of
the event loop reach the socket as one write, in order; closing writes what is pending first; aborting drops
it; and uvicorn with patchbay's protocols answers keep-alive, ``Connection: close`` and streamed responses
whole."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from patchbay.server.app import ServeSettings, http_protocol
from patchbay.server.corking import CorkedTransport
from tests.conftest import wait_for


class Writes:
    """The real transport underneath, with the writes that reach it recorded."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


@contextlib.asynccontextmanager
async def connection() -> AsyncIterator[tuple[Writes, CorkedTransport, asyncio.StreamReader]]:
    """A real server that hands us what it reads, and a client connection to it."""
    accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(reader)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    writes = Writes(transport)  # type: ignore[arg-type]
    try:
        yield writes, CorkedTransport(writes, loop), await accepted.get()  # type: ignore[arg-type]
    finally:
        transport.close()
        server.close()
        await server.wait_closed()


async def test_the_writes_of_one_turn_go_out_as_one_in_order() -> None:
    async with connection() as (writes, corked, peer):
        corked.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        corked.write(b"")  # nothing to write: nothing scheduled
        corked.write(b"hello")
        assert writes.writes == [] and corked.get_write_buffer_size() == 43  # still this turn
        await wait_for(lambda: bool(writes.writes), 10, "the flush at the end of the turn")
        assert writes.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
        assert await peer.readexactly(43) == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
        corked.write(b"next turn")
        await wait_for(lambda: len(writes.writes) == 2, 10, "the second flush")
        assert await peer.readexactly(9) == b"next turn"


async def test_closing_writes_what_is_pending_and_aborting_drops_it() -> None:
    async with connection() as (writes, corked, peer):
        corked.write(b"last words")
        corked.close()  # in the same turn: written before the connection closes
        assert writes.writes == [b"last words"]
        assert await peer.read() == b"last words"  # then EOF
    async with connection() as (writes, corked, peer):
        corked.write(b"never sent")
        corked.abort()
        assert writes.writes == [] and await peer.read() == b""
        corked.flush()  # the scheduled flush finds nothing to do
        assert writes.writes == []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Plain answers, and a streamed one whose parts are sent in separate turns."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    if scope["path"] == "/stream":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})
        return
    body = json.dumps({"path": scope["path"]}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def test_uvicorn_with_patchbays_protocols_answers_whole() -> None:
    for http in ("h11", "httptools"):
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, http=http_protocol(ServeSettings().header_timeout, http),
            lifespan="on", log_level="warning",
        )  # fmt: skip
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        try:
            await wait_for(lambda: server.started or task.done(), 30, "uvicorn start")  # noqa: B023
            port = server.servers[0].sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for path in ("/a", "/b"):  # keep-alive: two answers on one connection
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 "), (http, head)
                length = int(next(v for k, v in _headers(head) if k == "content-length"))
                assert json.loads(await reader.readexactly(length)) == {"path": path}
            writer.write(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            rest = await reader.read()  # Connection: close: everything, then EOF
            writer.close()
            head, _, chunked = rest.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and b"chunked" in head.lower(), (http, head)
            assert _unchunk(chunked) == b"one two three", (http, chunked)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 15)


def _headers(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [(k.strip().lower(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines if ln)]


def _unchunk(data: bytes) -> bytes:
    out = b""
    while True:
        size, _, data = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return out
        out, data = out + data[:n], data[n + 2 :]
