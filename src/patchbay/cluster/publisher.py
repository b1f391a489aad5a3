"""PUBLISH on a connection of its own, pipelined: the hot path of forwarded calls.

redis-py's pooled ``Redis.publish`` takes a connection from the pool and first checks it for unread data
under a zero timeout (with hiredis, a turn of the event loop), writes from a task of its own when a socket
timeout is set (a turn of the loop), and reads the reply through its retry wrappers: each forwarded call
publishes twice, so this was a good part of what forwarding added to a call. Here every PUBLISH is written
at once on one connection (a redis-py ``Connection``: its connect, auth, TLS and parser), and the replies,
which Redis sends in order, are handed to the callers in that order by one reader task. A failure or a
reply later than ``timeout`` fails every caller waiting on the connection with a ``RedisError``; the next
publish reconnects.

With ``replies=False`` the connection is told not to reply at all (``CLIENT REPLY OFF``) and ``post``
only writes: for the answers a holder sends back, whose receiver count nobody needs. That spares the
holder a wake-up per call at the very moment the caller's replica has to wake for the answer. Its reader
then only watches for the connection's end, so the next post reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Publisher:
    """``publish(channel, message)`` -> how many subscribers received it, like ``Redis.publish``; or,
    with ``replies=False``, ``post(channel, message)``, which does not wait for anything."""

    def __init__(
        self, make: Callable[[], AbstractConnection], timeout: float, *, replies: bool = True
    ) -> None:
        self._make = make  # a new, unconnected connection (no socket timeout: the reader waits)
        self._timeout = timeout
        self._replies = replies
        self._conn: AbstractConnection | None = None
        self._waiting: deque[asyncio.Future[int]] = deque()
        self._lock = asyncio.Lock()  # a reply is matched by order: queueing and writing go together
        self._readers: set[asyncio.Task[None]] = set()
        self._closed = False

    async def publish(self, channel: str, message: str) -> int:
        assert self._replies, "a publisher without replies only posts"
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        return await self._bounded(self._publish(channel, message, waiter))

    async def post(self, channel: str, message: str) -> None:
        """PUBLISH without waiting for (or getting) Redis' reply; a write error raises ``RedisError``."""
        assert not self._replies, "a publisher with replies publishes"
        await self._bounded(self._send(channel, message, None))

    async def _bounded(self, work: Coroutine[Any, Any, T]) -> T:
        """``work`` within the timeout: a Redis that takes longer is taken for gone (the next reconnects)."""
        try:
            async with asyncio.timeout(self._timeout):
                return await work
        except TimeoutError:
            failure = RedisTimeoutError(f"Redis did not take or answer a PUBLISH within {self._timeout:g} s")
            if self._conn is not None:
                await self._reset(self._conn, failure)
            raise failure from None

    async def _publish(self, channel: str, message: str, waiter: asyncio.Future[int]) -> int:
        await self._send(channel, message, waiter)
        return await waiter

    async def _send(self, channel: str, message: str, waiter: asyncio.Future[int] | None) -> None:
        async with self._lock:
            conn = await self._connected()
            if waiter is not None:
                self._waiting.append(waiter)
            try:
                packed = conn.pack_command("PUBLISH", channel, message)
                await conn.send_packed_command(packed, check_health=False)
            except BaseException as exc:
                if waiter is not None:
                    _forget(waiter)  # failed here: nobody awaits it
                failure = exc if isinstance(exc, RedisError) else RedisConnectionError(str(exc))
                await self._reset(conn, failure)
                raise

    async def _connected(self) -> AbstractConnection:
        if self._conn is None:
            if self._closed:
                raise RedisConnectionError("the replica is leaving the cluster")
            conn = self._make()
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                if not self._replies:  # no reply to this command either
                    await conn.send_command("CLIENT", "REPLY", "OFF", check_health=False)
            except BaseException:
                with contextlib.suppress(RedisError, OSError):
                    await conn.disconnect(nowait=True)
                raise
            self._conn = conn
            reader = asyncio.create_task(self._read(conn), name="patchbay-cluster-publisher")
            self._readers.add(reader)
            reader.add_done_callback(self._reader_done)
        return self._conn

    async def _read(self, conn: AbstractConnection) -> None:
        try:
            while True:
                reply: Any
                try:
                    reply = await conn.read_response()
                except ResponseError as exc:  # an error reply: the connection is still in step
                    reply = exc
                if not self._waiting:  # (with replies off, anything at all)
                    raise RedisConnectionError("Redis sent a reply to no command")
                waiter = self._waiting.popleft()
                if waiter.done():  # its caller gave up (cancelled or timed out)
                    continue
                if isinstance(reply, Exception):
                    waiter.set_exception(reply)
                else:
                    waiter.set_result(int(reply))
        except (RedisError, OSError, ValueError) as exc:
            failure = exc if isinstance(exc, RedisError) else RedisConnectionError(str(exc))
            await self._reset(conn, failure)

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        self._readers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cluster: the publisher's reader failed", exc_info=task.exception())

    async def _reset(self, conn: AbstractConnection, failure: RedisError) -> None:
        """Drop ``conn`` (if still current), failing every caller waiting on it."""
        if self._conn is not conn:
            return
        self._conn = None
        waiting, self._waiting = self._waiting, deque()
        for waiter in waiting:
            if not waiter.done():
                waiter.set_exception(failure)
        current = asyncio.current_task()
        for reader in list(self._readers):
            if reader is not current:
                reader.cancel()
        with contextlib.suppress(RedisError, OSError):
            await conn.disconnect(nowait=True)

    async def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            await self._reset(self._conn, RedisConnectionError("the replica is leaving the cluster"))
        readers = list(self._readers)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


def _forget(waiter: asyncio.Future[int]) -> None:
    """Settle a waiter nobody will await, so asyncio does not report an unretrieved exception."""
    if not waiter.done():
        waiter.cancel()
    elif not waiter.cancelled():
        waiter.exception()
