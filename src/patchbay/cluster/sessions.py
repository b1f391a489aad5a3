"""Handshake-era ``/mcp`` sessions through any replica: routed to the replica that holds them, adopted
by another when that replica dies.

A session initialised through one replica lives there (its SDK session, its GET stream). The replica
records ``session id → replica`` in Redis when it hands out the id, and the session's state (negotiated
version, client capabilities and info, log level, resource subscriptions: :class:`SessionStates`) beside
it; a request carrying a session id that another replica holds is proxied to that replica, streaming (so a
GET stream opened through any replica carries the session's list_changed, progress, logs, sampling and
elicitation requests), and the answers come back the same way. When the holder is gone (its heartbeat key
expired, or nothing listens at its address), the replica the request reached **adopts** the session: it
takes the record over with a compare-and-set (of replicas racing, exactly one wins; the others proxy to
it), re-opens the session under the same id from the stored state and serves the request; the client's
GET stream reconnects and lands on it. Only a session with no stored state is answered 404. Stateless
2026-07-28 requests carry no session id and are served wherever they land.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

import httpx2
from redis.exceptions import RedisError

from patchbay.cluster.keys import PREFIX, replica_key
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


# Replace a session's holder record only if it still names the holder that was found dead.
TAKE_OVER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('pexpire', KEYS[2], ARGV[3])
  return 1
end
return 0
"""


def session_key(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def state_key(session_id: str) -> str:
    """What a replica needs to adopt the session (JSON, see :meth:`SessionStates.save`)."""
    return f"{PREFIX}session-state:{session_id}"


def record_ttl(idle_timeout: float | None) -> float:
    """How long a session's records outlive its last use (seconds): past its idle timeout."""
    return max(idle_timeout or 0.0, 60.0) * 2


class Adopter(Protocol):
    """What a replica's ``/mcp`` endpoints offer the router: reopening a session from its stored state."""

    async def adopt(self, session_id: str, state: dict[str, Any]) -> bool: ...


class SessionStates:
    """Writes each handshake-era session's state to Redis, so that any replica can adopt it."""

    def __init__(self, cluster: Cluster, idle_timeout: float | None) -> None:
        self.cluster = cluster
        self.ttl_ms = int(record_ttl(idle_timeout) * 1000)

    async def save(self, session_id: str, state: dict[str, Any]) -> None:
        """Awaited before the answer that changed the state goes out (initialize, setLevel, subscribe)."""
        try:
            await self.cluster.redis.set(state_key(session_id), json.dumps(state), px=self.ttl_ms)
        except RedisError as exc:  # the session still works here; it cannot move if this replica dies
            log.warning("cluster: could not store an /mcp session's state in Redis: %s", exc)


def _is_mcp(path: str) -> bool:
    return path == "/mcp" or path.startswith("/mcp/")


class SessionRouter:
    """ASGI middleware in front of ``/mcp`` and ``/mcp/<profile>`` (inside the Guard: callers are
    authenticated before anything is proxied)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        cluster: Cluster,
        ttl: float | None,
        endpoints: Callable[[str], Adopter | None] = lambda path: None,
    ) -> None:
        self.app = app
        self.cluster = cluster
        self.ttl = record_ttl(ttl)  # outlives the session's idle timeout; renewed while it is used
        self.endpoints = endpoints  # the endpoint serving a path (/mcp, /mcp/<profile>), to adopt into
        self._local: dict[str, float] = {}  # session id -> when its key was last renewed
        self._adopting: dict[str, asyncio.Future[bool]] = {}  # adoptions under way on this replica
        self._http: httpx2.AsyncClient | None = None
        self._chores: set[asyncio.Task[None]] = set()
        cluster.on_close(self.close)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_mcp(route_path(scope)):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        session_id = headers.get(b"mcp-session-id", b"").decode("latin-1")
        if session_id and session_id in self._adopting:  # a request racing this replica's adoption
            await asyncio.shield(self._adopting[session_id])
        if session_id and session_id in self._local:
            self._renew(session_id)
            await self.app(scope, receive, send)
            return
        if session_id and FORWARDED not in headers:
            await self._route(session_id, scope, receive, send)
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

    async def _route(self, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        """A session this replica does not hold: proxied to its holder, or adopted here if that is dead
        (its heartbeat expired, or nothing listens at its address); of replicas racing, one adopts and
        the others proxy to it."""
        body: bytes | None = None  # the request's body, once read for a proxy attempt that found nobody
        unreachable: set[str] = set()
        owner: tuple[str, str] | None = None
        for _ in range(3):
            found = await self._holder(session_id)
            if found is None or found[0][0] == self.cluster.id:
                break  # unknown to Redis, or this replica's: it answers for itself
            owner, raw = found
            if owner[0] in unreachable or not await self._alive(owner[0]):
                if await self._take_over(session_id, raw, scope):
                    break
                continue  # another replica took it over: go there
            body = await self._proxy(
                owner, scope, receive if body is None else _replaying(body, receive), send
            )
            if body is None:
                return
            unreachable.add(owner[0])
        else:
            await _session_gone(send, owner[0] if owner is not None else "?")
            return
        await self.app(scope, receive if body is None else _replaying(body, receive), send)

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
            async with self.cluster.redis.pipeline(transaction=False) as pipe:
                pipe.set(session_key(session_id), value, px=int(self.ttl * 1000))
                pipe.pexpire(state_key(session_id), int(self.ttl * 1000))
                await pipe.execute()
        except RedisError as exc:  # the session still works through this replica
            log.warning("cluster: could not record an /mcp session in Redis: %s", exc)

    async def _holder(self, session_id: str) -> tuple[tuple[str, str], bytes | str] | None:
        """The session's holder (replica id, address) and its record as stored (for compare-and-set)."""
        try:
            raw = await self.cluster.redis.get(session_key(session_id))
        except RedisError:
            return None  # then only this replica can answer: it says whether it knows the session
        if not raw:
            return None
        with contextlib.suppress(ValueError, TypeError, KeyError):
            data = json.loads(raw)
            return (str(data["replica"]), str(data["address"])), raw
        return None

    async def _alive(self, replica: str) -> bool:
        try:
            return bool(await self.cluster.redis.exists(replica_key(replica)))
        except RedisError:
            return True  # cannot tell: leave the session where it is

    # --- adoption ---------------------------------------------------------------------------------------

    async def _take_over(self, session_id: str, raw: bytes | str, scope: Scope) -> bool:
        """Adopt the session if its record still names the dead holder; False if another replica won,
        or there is nothing to adopt it from (no stored state, no endpoint for its path)."""
        pending = self._adopting.get(session_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._adopting[session_id] = future  # before the record names this replica: see __call__
        adopted = False
        try:
            adopted = await self._adopt(session_id, raw, scope)
        finally:
            future.set_result(adopted)
            del self._adopting[session_id]
        return adopted

    async def _adopt(self, session_id: str, raw: bytes | str, scope: Scope) -> bool:
        redis = self.cluster.redis
        try:
            stored = await redis.get(state_key(session_id))
            if not stored:
                return False
            state = json.loads(stored)
            endpoint = self.endpoints(str(state.get("path", "/mcp")))
            if endpoint is None or state.get("path") != route_path(scope):
                return False
            value = json.dumps({"replica": self.cluster.id, "address": self.cluster.address})
            keys = [session_key(session_id), state_key(session_id)]
            won = await redis.eval(TAKE_OVER, 2, *keys, raw, value, int(self.ttl * 1000))  # type: ignore[misc]
        except (RedisError, ValueError) as exc:
            log.warning("cluster: could not adopt /mcp session: %s", exc)
            return False
        if not won:
            return False
        if not await endpoint.adopt(session_id, state):
            return False
        if len(self._local) >= MAX_LOCAL:
            self._local.pop(next(iter(self._local)))
        self._local[session_id] = time.monotonic()
        log.info("cluster: adopted /mcp session of replica %s", json.loads(raw).get("replica"))
        return True

    # --- proxying --------------------------------------------------------------------------------------

    async def _proxy(
        self, owner: tuple[str, str], scope: Scope, receive: Receive, send: Send
    ) -> bytes | None:
        """Stream the request to the holder and its answer back. The request's body when nothing could
        connect to the holder (nothing was answered yet); None otherwise."""
        replica, address = owner
        body: bytes = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += bytes(message.get("body", b""))
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
        except httpx2.ConnectError as exc:
            log.info("cluster: /mcp session of replica %s unreachable: %s", replica, exc)
            return body
        except httpx2.HTTPError as exc:
            log.info("cluster: /mcp session of replica %s unreachable: %s", replica, exc)
            await _session_gone(send, replica)
            return None
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
                    return None
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
        return None

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


def _replaying(body: bytes, receive: Receive) -> Receive:
    """The request's body again (already read for a proxy attempt), then the client's own messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


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
