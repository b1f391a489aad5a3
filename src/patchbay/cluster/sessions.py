"""Handshake-era ``/mcp`` sessions through any replica: routed to the replica that holds them.

A session initialised through one replica lives there (its SDK session, its GET stream). The replica
records ``session id → replica`` in Redis when it hands out the id; a request carrying a session id that
another replica holds is proxied to that replica, streaming (so a GET stream opened through any replica
carries the session's list_changed, progress, logs, sampling and elicitation requests), and the answers
come back the same way. A session whose replica is gone is answered 404 ("session not found"), which tells
the client to initialise again, as the MCP spec asks. Stateless 2026-07-28 requests carry no session id and
are served wherever they land.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import httpx2
from redis.exceptions import RedisError

from patchbay.cluster.keys import PREFIX
from patchbay.server.security import route_path

if TYPE_CHECKING:
    from patchbay.cluster.node import Cluster

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FORWARDED = b"x-patchbay-forwarded"  # set on a proxied request: the receiving replica never proxies it again
HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te", b"trailer",
    b"content-length", b"host",
}  # fmt: skip
MAX_LOCAL = 100_000  # session ids remembered as this replica's own (oldest forgotten first)


def session_key(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def _is_mcp(path: str) -> bool:
    return path == "/mcp" or path.startswith("/mcp/")


class SessionRouter:
    """ASGI middleware in front of ``/mcp`` and ``/mcp/<profile>`` (inside the Guard: callers are
    authenticated before anything is proxied)."""

    def __init__(self, app: ASGIApp, *, cluster: Cluster, ttl: float) -> None:
        self.app = app
        self.cluster = cluster
        self.ttl = max(ttl, 60.0) * 2  # outlives the session's idle timeout; renewed while it is used
        self._local: dict[str, float] = {}  # session id -> when its key was last renewed
        self._http: httpx2.AsyncClient | None = None
        self._chores: set[asyncio.Task[None]] = set()
        cluster.on_close(self.close)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_mcp(route_path(scope)):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        session_id = headers.get(b"mcp-session-id", b"").decode("latin-1")
        if session_id and session_id in self._local:
            self._renew(session_id)
            await self.app(scope, receive, send)
            return
        if session_id and FORWARDED not in headers:
            owner = await self._owner(session_id)
            if owner is not None and owner[0] != self.cluster.id:
                await self._proxy(owner, scope, receive, send)
                return
        if scope["method"] != "POST" or session_id:
            await self.app(scope, receive, send)
            return

        async def record(message: Message) -> None:  # an initialize answer hands out a new session id
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", []):
                    if name.lower() == b"mcp-session-id":
                        await self._claim(value.decode("latin-1"))  # before the client can use it elsewhere
            await send(message)

        await self.app(scope, receive, record)

    # --- who holds a session -------------------------------------------------------------------------

    async def _claim(self, session_id: str) -> None:
        if session_id in self._local:
            return
        if len(self._local) >= MAX_LOCAL:
            self._local.pop(next(iter(self._local)))
        self._local[session_id] = time.monotonic()
        await self._set(session_id)

    def _renew(self, session_id: str) -> None:
        now = time.monotonic()
        if now - self._local.get(session_id, 0.0) < self.ttl / 4:
            return
        self._local[session_id] = now
        task = asyncio.ensure_future(self._set(session_id))
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _set(self, session_id: str) -> None:
        value = json.dumps({"replica": self.cluster.id, "address": self.cluster.address})
        try:
            await self.cluster.redis.set(session_key(session_id), value, px=int(self.ttl * 1000))
        except RedisError as exc:  # the session still works through this replica
            log.warning("cluster: could not record an /mcp session in Redis: %s", exc)

    async def _owner(self, session_id: str) -> tuple[str, str] | None:
        try:
            raw = await self.cluster.redis.get(session_key(session_id))
        except RedisError:
            return None  # then only this replica can answer: it says whether it knows the session
        if not raw:
            return None
        with contextlib.suppress(ValueError, TypeError, KeyError):
            data = json.loads(raw)
            return str(data["replica"]), str(data["address"])
        return None

    # --- proxying --------------------------------------------------------------------------------------

    async def _proxy(self, owner: tuple[str, str], scope: Scope, receive: Receive, send: Send) -> None:
        replica, address = owner
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        headers.append((b"host", dict(scope["headers"]).get(b"host", b"127.0.0.1")))
        headers.append((FORWARDED, self.cluster.id.encode()))
        query = scope.get("query_string", b"")
        url = f"http://{address}{scope['path']}" + (f"?{query.decode('latin-1')}" if query else "")
        http = self._client()
        request = http.build_request(scope["method"], url, headers=headers, content=body)
        try:
            upstream = await http.send(request, stream=True)
        except httpx2.HTTPError as exc:
            log.info("cluster: /mcp session of replica %s unreachable: %s", replica, exc)
            await _session_gone(send, replica)
            return
        watcher = asyncio.ensure_future(_disconnected(receive))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": upstream.status_code,
                    "headers": [
                        (k.encode("latin-1"), v.encode("latin-1"))
                        for k, v in upstream.headers.multi_items()
                        if k.lower().encode() not in HOP_BY_HOP
                    ],
                }
            )
            chunks = upstream.aiter_raw().__aiter__()
            while True:
                step = asyncio.ensure_future(chunks.__anext__())
                done, _ = await asyncio.wait({step, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if step not in done:  # the client went away: stop reading the replica's stream
                    step.cancel()
                    await asyncio.gather(step, return_exceptions=True)
                    return
                try:
                    chunk = step.result()
                except StopAsyncIteration:
                    break
                except httpx2.HTTPError as exc:  # the holding replica died mid-stream
                    log.info("cluster: the stream from replica %s broke: %s", replica, exc)
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await upstream.aclose()

    def _client(self) -> httpx2.AsyncClient:
        if self._http is None:
            limits = httpx2.Limits(max_connections=None, max_keepalive_connections=64)
            self._http = httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=None), limits=limits)
        return self._http

    async def close(self) -> None:
        for task in list(self._chores):
            task.cancel()
        await asyncio.gather(*self._chores, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _session_gone(send: Send, replica: str) -> None:
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": None,
            "error": {
                "code": -32600,
                "message": f"Session not found: its replica ({replica}) is gone; initialize a new session",
            },
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
