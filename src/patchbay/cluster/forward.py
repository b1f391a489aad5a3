"""Calls to an agent held by another replica, forwarded over Redis pub/sub.

The requesting side is a ``RemoteConnection``: what a ``DialInAgent`` holds on a replica the agent is not
connected to. It looks like the agent's own ``Connection`` to the hub (listing, capabilities, a peer
with ``request`` and ``in_flight``), so routing, limits and the catalog are unchanged; its peer publishes
each request on the holder's channel with a correlation id and waits for the answer on its own. A timeout
or a cancelled caller sends a cancellation, which the holder passes to the agent. When the holder or the
agent goes away, every call waiting on it fails at once with an error that says so.

The holding side is the ``Responder``: it runs each forwarded request on the agent's real connection and
publishes the outcome (or progress) back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import mcp.types as types
from redis.exceptions import RedisError

from patchbay.catalog import Listing
from patchbay.cluster.keys import rpc_channel
from patchbay.errors import (
    CallTimeoutError,
    PatchbayError,
    ServerUnavailableError,
    UpstreamError,
)
from patchbay.jsonrpc import INTERNAL_ERROR, METHOD_NOT_FOUND, ProgressCallback, settle
from patchbay.upstream import Connection

if TYPE_CHECKING:
    from patchbay.hub import DownstreamClient, Hub

log = logging.getLogger(__name__)

HOLDER_GRACE = 1.0  # the holder waits this much longer than the caller, so the caller's timeout decides

Publish = Callable[[str, str], Awaitable[int]]  # -> how many subscribers received it
Post = Callable[[str, str], Awaitable[None]]  # the same, without waiting for Redis' reply


class _Call:
    __slots__ = ("agent", "asks", "future", "holder", "peer", "progress", "timer")

    def __init__(
        self,
        future: asyncio.Future[Any],
        agent: str,
        holder: str,
        peer: ForwardingPeer,
        progress: ProgressCallback | None,
    ) -> None:
        self.future = future
        self.agent = agent
        self.holder = holder
        self.peer = peer
        self.progress = progress
        self.timer: asyncio.TimerHandle | None = None
        self.asks: set[asyncio.Task[Any]] = set()  # the holder's questions being put to the caller's client


class Forwarder:
    """This replica's calls waiting for answers from other replicas, by correlation id."""

    def __init__(
        self,
        replica: str,
        publish: Publish,
        clients: Callable[[str], Sequence[DownstreamClient]] | None = None,
    ) -> None:
        self.replica = replica
        self._publish = publish
        self._clients = clients or (lambda name: ())  # the downstream clients of this hub's calls to a name
        self._ids = itertools.count(1)
        self._pending: dict[str, _Call] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def request(
        self,
        peer: ForwardingPeer,
        method: str,
        params: dict[str, Any] | None,
        timeout: float,
        progress: ProgressCallback | None,
        target: str | None,
    ) -> Any:
        agent, holder, what = peer.name, peer.holder, peer.what
        cid = f"{self.replica}/{next(self._ids)}"
        loop = asyncio.get_running_loop()
        call = _Call(loop.create_future(), agent, holder, peer, progress)
        message = {
            "t": "call",
            "id": cid,
            "from": self.replica,
            "agent": agent,
            "method": method,
            "params": params,
            "timeout": timeout + HOLDER_GRACE,
            "progress": progress is not None,
            "target": target,
            "fence": peer.fence,
        }
        self._pending[cid] = call
        try:
            try:
                receivers = await self._publish(rpc_channel(holder), json.dumps(message))
            except RedisError as exc:
                raise ServerUnavailableError(
                    agent,
                    f"{what} {agent!r} is served by replica {holder}, and Redis, which carries the call "
                    f"there, is unreachable ({exc}); the call was not sent",
                ) from None
            if not receivers:
                raise ServerUnavailableError(
                    agent,
                    f"{what} {agent!r} was on replica {holder}, which has stopped; the call was not sent",
                )
            call.timer = loop.call_later(timeout, self._expire, cid, method, timeout, target)
            try:
                return await call.future
            except asyncio.CancelledError:
                if self._pending.pop(cid, None) is not None:
                    self._cancel(holder, cid, "cancelled by the caller")
                raise
        finally:
            self._pending.pop(cid, None)
            if call.timer is not None:
                call.timer.cancel()
            for task in call.asks:  # a question the call outlived gets no answer
                task.cancel()

    def _expire(self, cid: str, method: str, timeout: float, target: str | None) -> None:
        call = self._pending.pop(cid, None)
        if call is None or call.future.done():
            return
        call.future.set_exception(CallTimeoutError(call.agent, method, timeout, target))
        self._cancel(call.holder, cid, f"timed out after {timeout:g} s")

    def _cancel(self, holder: str, cid: str, reason: str) -> None:
        message = json.dumps({"t": "cancel", "id": cid, "reason": reason})
        task = asyncio.ensure_future(self._publish(rpc_channel(holder), message))
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the call has failed already
            log.debug("could not send a cancellation: %s", task.exception())

    def answer(self, message: dict[str, Any]) -> None:
        """An answer (or progress) from the holder, fed by the node's subscription."""
        cid = message.get("id")
        kind = message.get("t")
        if kind == "ask":
            self._ask(message)
            return
        if kind == "progress":
            call = self._pending.get(cid) if isinstance(cid, str) else None
            if call is not None and call.progress is not None:
                self._progress(call.progress, message)
            return
        call = self._pending.pop(cid, None) if isinstance(cid, str) else None
        if call is None or call.future.done():
            return
        if kind == "result":
            call.future.set_result(message.get("result"))
        else:
            call.future.set_exception(_error(call.agent, message))

    def _ask(self, message: dict[str, Any]) -> None:
        """The holder's upstream asks its client something during a call forwarded from here (sampling,
        elicitation, roots): this hub's client of the call answers, as it would for a local call."""
        cid, aid, holder = message.get("id"), message.get("aid"), message.get("from")
        if not (isinstance(cid, str) and isinstance(aid, str) and isinstance(holder, str)):
            return
        call = self._pending.get(cid)
        task = asyncio.ensure_future(self._tell(call, cid, aid, holder, message))
        self._tasks.add(task)
        task.add_done_callback(self._sent)
        if call is not None:
            call.asks.add(task)
            task.add_done_callback(call.asks.discard)

    async def _tell(
        self, call: _Call | None, cid: str, aid: str, holder: str, message: dict[str, Any]
    ) -> None:
        method = str(message.get("method"))
        params = message.get("params")
        reply: dict[str, Any] = {"t": "told", "id": cid, "aid": aid}
        try:
            if call is None:
                raise UpstreamError(
                    "client", METHOD_NOT_FOUND, f"{method}: the call it was asked in has ended"
                )
            clients = self._clients(call.agent)
            if not clients:
                raise UpstreamError(
                    call.agent,
                    METHOD_NOT_FOUND,
                    f"{method}: no client is connected through patchbay to answer it",
                )
            reply["result"] = await clients[-1].request(method, params if isinstance(params, dict) else {})
        except UpstreamError as exc:
            reply["error"] = {"code": exc.code, "message": exc.message, "data": exc.data}
        except PatchbayError as exc:
            reply["error"] = {"code": INTERNAL_ERROR, "message": str(exc)}
        await self._publish(rpc_channel(holder), json.dumps(reply))

    def _progress(self, callback: ProgressCallback, message: dict[str, Any]) -> None:
        try:
            out = callback(float(message.get("p") or 0), message.get("total"), message.get("m"))
        except Exception:
            log.exception("a progress callback failed")
            return
        if out is not None:
            task = asyncio.ensure_future(out)
            self._tasks.add(task)
            task.add_done_callback(self._sent)

    def fail(self, reason: str, *, holder: str | None = None, agent: str | None = None) -> int:
        """Fail the calls waiting on ``holder`` (a replica) or on ``agent``; how many."""
        failed = 0
        for cid, call in list(self._pending.items()):
            if (holder is not None and call.holder != holder) or (agent is not None and call.agent != agent):
                continue
            del self._pending[cid]
            if not call.future.done():
                call.future.set_exception(ServerUnavailableError(call.agent, reason))
                failed += 1
        return failed

    def of(self, peer: ForwardingPeer) -> int:
        return sum(1 for c in self._pending.values() if c.peer is peer)

    async def close(self) -> None:
        self.fail("this replica is shutting down; the call did not complete")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _error(agent: str, message: dict[str, Any]) -> PatchbayError:
    kind, text = message.get("kind"), str(message.get("message") or "the call failed")
    if kind == "unavailable":
        return ServerUnavailableError(agent, text)
    if kind == "timeout":
        return CallTimeoutError(agent, str(message.get("method")), float(message.get("timeout") or 0))
    code = message.get("code")
    return UpstreamError(agent, code if isinstance(code, int) else INTERNAL_ERROR, text, message.get("data"))


class ForwardingPeer:
    """The ``JsonRpcPeer`` face of an agent held by another replica (what the hub's router calls)."""

    def __init__(self, name: str, holder: str, forwarder: Forwarder, fence: int | None = None) -> None:
        self.name = name
        self.holder = holder
        self.fence = fence  # a leased server's fencing token: the holder refuses a call meant for another
        self.what = "agent" if fence is None else "server"
        self._forwarder = forwarder

    @property
    def in_flight(self) -> int:
        return self._forwarder.of(self)

    @property
    def closed(self) -> bool:
        return False

    def expects(self, rid: Any) -> bool:
        return False

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None,
        *,
        timeout: float,
        progress: ProgressCallback | None = None,
        target: str | None = None,
    ) -> Any:
        return await self._forwarder.request(self, method, params, timeout, progress, target)


class RemoteConnection:
    """An agent's connection as seen from a replica it is not connected to."""

    def __init__(
        self,
        name: str,
        holder: str,
        serial: int,
        lv: int,
        record: dict[str, Any],
        listing: Listing,
        forwarder: Forwarder,
        *,
        fenced: bool = False,
    ) -> None:
        self.name = name
        self.holder = holder
        self.serial = serial
        self.lv = lv
        self.peer = ForwardingPeer(name, holder, forwarder, serial if fenced else None)
        self.wire = None  # no process or socket here (status shows no pid)
        self.listing = listing
        self.address: str = str(record.get("address") or "?")
        self.since = float(record.get("since") or 0)
        self.protocol_version: str | None = record.get("protocolVersion")
        self.server_info: types.Implementation | None = None
        info = record.get("serverInfo")
        if isinstance(info, dict):
            try:
                self.server_info = types.Implementation.model_validate(info)
            except ValueError:
                log.debug("agent %r: unreadable server info from replica %s", name, holder)
        caps = record.get("capabilities")
        self.capabilities: dict[str, Any] = caps if isinstance(caps, dict) else {}
        self.instructions: str | None = None


class Responder:
    """Runs the calls other replicas forward to the agents connected here."""

    def __init__(
        self, hub: Hub, replica: str, post: Post, fence: Callable[[str], int | None] | None = None
    ) -> None:
        self._hub = hub
        self._replica = replica
        self._post = post
        self._fence = fence or (lambda name: None)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._questions: dict[str, asyncio.Future[Any]] = {}  # asked of a caller's client, by question id
        self._question_ids = itertools.count(1)

    def handle(self, message: dict[str, Any]) -> None:
        cid = message.get("id")
        if not isinstance(cid, str):
            return
        if message.get("t") == "cancel":
            task = self._running.get(cid)
            if task is not None:
                task.cancel()
            return
        if message.get("t") == "told":
            self._told(message)
            return
        reply_to = message.get("from")
        if not isinstance(reply_to, str):
            return
        task = asyncio.ensure_future(self._run(cid, reply_to, message))
        self._running[cid] = task
        task.add_done_callback(lambda t: self._done(cid, t))

    def _done(self, cid: str, task: asyncio.Task[None]) -> None:
        self._running.pop(cid, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("a forwarded call failed in patchbay", exc_info=task.exception())

    async def _run(self, cid: str, reply_to: str, message: dict[str, Any]) -> None:
        name = str(message.get("agent"))
        channel = rpc_channel(reply_to)
        source = self._hub._sources.get(name)
        conn = source.connection if source is not None else None
        reply: dict[str, Any]
        fence = message.get("fence")
        if fence is not None and self._fence(name) != fence:  # meant for a holder this replica no longer is
            reply = {
                "t": "error",
                "id": cid,
                "kind": "unavailable",
                "message": f"server {name!r}: replica {self._replica} no longer holds its lease "
                f"(fencing token {fence}); the call was not run",
            }
            await self._send(channel, reply)
            return
        if not isinstance(conn, Connection):
            reply = {
                "t": "error",
                "id": cid,
                "kind": "unavailable",
                "message": f"{'server' if fence is not None else 'agent'} {name!r} is no longer served by "
                f"replica {self._replica}",
            }
            await self._send(channel, reply)
            return

        async def progress(p: float, total: float | None, text: str | None) -> None:
            await self._send(channel, {"t": "progress", "id": cid, "p": p, "total": total, "m": text})

        params = message.get("params")
        caller = _CallerClient(self, cid, channel)  # what the upstream asks meanwhile goes to the caller
        clients = self._hub._clients.setdefault(name, [])
        clients.append(caller)
        try:
            result = await conn.peer.request(
                str(message.get("method")),
                params if isinstance(params, dict) else None,
                timeout=float(message.get("timeout") or 60.0),
                progress=progress if message.get("progress") else None,
                target=message.get("target"),
            )
            reply = {"t": "result", "id": cid, "result": result}
        except asyncio.CancelledError:  # the caller gave up: the peer has told the agent
            raise
        except CallTimeoutError as exc:
            reply = {"t": "error", "id": cid, "kind": "timeout", "message": str(exc), "method": exc.method,
                     "timeout": exc.timeout}  # fmt: skip
        except ServerUnavailableError as exc:
            reply = {"t": "error", "id": cid, "kind": "unavailable", "message": str(exc)}
        except UpstreamError as exc:
            reply = {"t": "error", "id": cid, "kind": "upstream", "code": exc.code, "message": exc.message,
                     "data": exc.data}  # fmt: skip
        except PatchbayError as exc:
            reply = {"t": "error", "id": cid, "kind": "error", "message": str(exc)}
        finally:
            clients.remove(caller)
        await self._send(channel, reply)

    async def ask(self, cid: str, channel: str, method: str, params: dict[str, Any]) -> Any:
        """Put an upstream's question to the client of the forwarded call ``cid``, on its replica."""
        aid = f"{cid}#{next(self._question_ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._questions[aid] = future
        message = {
            "t": "ask",
            "id": cid,
            "aid": aid,
            "from": self._replica,
            "method": method,
            "params": params,
        }
        try:
            try:
                await self._post(channel, json.dumps(message))
            except RedisError as exc:
                raise UpstreamError(
                    "client",
                    INTERNAL_ERROR,
                    f"{method}: Redis, which carries it to the caller, is unreachable ({exc})",
                ) from None
            return await future
        finally:
            self._questions.pop(aid, None)

    def _told(self, message: dict[str, Any]) -> None:
        future = self._questions.get(str(message.get("aid")))
        if future is not None:
            settle(future, "client", message)

    async def _send(self, channel: str, reply: dict[str, Any]) -> None:
        try:
            await self._post(channel, json.dumps(reply))
        except RedisError as exc:  # the caller's own timeout (or Redis coming back) ends its wait
            log.warning("could not answer a forwarded call: Redis is unreachable (%s)", exc)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)


class _CallerClient:
    """The client of a call forwarded here, on the replica it came from (a ``DownstreamClient``)."""

    __slots__ = ("_channel", "_cid", "_responder")

    def __init__(self, responder: Responder, cid: str, channel: str) -> None:
        self._responder = responder
        self._cid = cid
        self._channel = channel

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        return await self._responder.ask(self._cid, self._channel, method, params)
