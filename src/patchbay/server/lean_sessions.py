"""Handshake-era ``/mcp`` sessions (and their GET streams) kept as a compact record until they need the SDK.

Why: measured with ``bench/sessions.py --where``, an open handshake-era session cost ~40 KiB, ~32 KiB of it
the SDK's per-session objects (a transport with its memory streams and router task, a dispatcher, a
connection and its exit stack, a server task). A session that only lists and calls tools needs none of
them: the fast path answers those requests. So the fast path answers a valid ``initialize`` itself, as the
SDK's runner would (the same ``InitializeResult`` from the server's initialization options, sieved by the
same per-version schema, on the same SSE wire, under a ``uuid4().hex`` id), and keeps the session as the
record the cluster code stores to adopt a session on another replica (:func:`session_state`: path,
protocol version, client parameters, log level, subscriptions). Its GET stream is held here too (the SDK's
GET answer, ~60 KiB of SDK objects less): list_changed is all a session that never needed the SDK can be
sent, and the endpoint's fan-out writes it there. The first request the fast path does not answer (a
listing of resources or prompts, ``logging/setLevel``, a call with progress or from a client that may be
asked for sampling, a stream resumption, anything unexpected) *materialises* the session: the endpoint
opens the SDK session under the same id from that record, exactly as it adopts a dead replica's session
(``McpEndpoint.adopt`` → ``sdk_adapter.adopt_session``), an open GET stream becomes the SDK transport's
standalone stream (its messages carried onto the response held open here), then the request goes to the
SDK, which owns the session from then on (its idle timeout, DELETE, what it sends on the stream).

What the SDK does for a session, a lean one does the same way: unknown or ended ids get the SDK's 404 (the
request is simply handed to it), DELETE is answered as the SDK's transport answers it, the idle timeout
applies (one sweep for all of them, no timer per session; a request in flight holds the session), and the
session cap counts them; an open stream holds its session as a request in flight does, a second one is
refused with 409, and held streams end when uvicorn starts shutting down, as the SDK's SSE responses do.
Where this cannot answer as the SDK would (an ``initialize`` that does not validate, DNS-rebinding checks
configured on the SDK, no way to materialise because the SDK changed: ``sdk_adapter.missing()``), the
request goes to the SDK, which opens a full session as it always did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import uuid4

from mcp.types import Implementation, InitializeRequestParams, InitializeResult, JSONRPCError
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST, ErrorData
from mcp_types.methods import serialize_server_result, validate_client_request
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from starlette.types import Send

from patchbay.server import sdk_adapter

log = logging.getLogger(__name__)

# The SDK's answer at its session cap (``StreamableHTTPSessionManager``: 503, JSON-RPC -32603).
_TOO_MANY = (
    JSONRPCError(
        jsonrpc="2.0", id=None, error=ErrorData(code=INTERNAL_ERROR, message="Too many open sessions")
    )
    .model_dump_json(by_alias=True, exclude_unset=True)
    .encode()
)


_CONFLICT = (
    JSONRPCError(
        jsonrpc="2.0",
        id=None,
        error=ErrorData(code=INVALID_REQUEST, message="Conflict: Only one SSE stream is allowed per session"),
    )
    .model_dump_json(by_alias=True, exclude_unset=True)
    .encode()
)


def session_state(path: str, protocol_version: str, client_params: dict[str, Any]) -> dict[str, Any]:
    """A session's state as stored for adoption (``cluster/sessions.py``) and held for a lean session."""
    return {
        "path": path,
        "protocolVersion": protocol_version,
        "clientParams": client_params,
        "logLevel": None,
        "subscriptions": [],
    }


def negotiate(server: Any, params: Any) -> str | None:
    """The protocol version the SDK's runner negotiates for this ``initialize``
    (``ServerRunner._negotiate_initialize``); None for params it would refuse (it answers those itself)."""
    try:
        validate_client_request("initialize", LATEST_HANDSHAKE_VERSION, params)
        requested = InitializeRequestParams.model_validate(params or {}, by_name=False).protocol_version
    except Exception:  # whatever the SDK makes of these params, it says so itself
        log.debug("initialize left to the SDK", exc_info=True)
        return None
    if getattr(server, "cache_hints", {}).get("initialize") is not None:
        return None  # the SDK would add its cache hints: let it
    return requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION


def initialize_result(server: Any, negotiated: str) -> dict[str, Any]:
    """The wire ``result`` the SDK's runner gives an ``initialize`` (``ServerRunner._handle_initialize``
    and ``_serialize``, from the same public pieces)."""
    opts = server.create_initialization_options()
    result = InitializeResult(
        protocol_version=negotiated,
        capabilities=opts.capabilities,
        server_info=Implementation(
            name=opts.server_name,
            title=opts.title,
            description=opts.description,
            version=opts.server_version,
            website_url=opts.website_url,
            icons=opts.icons,
        ),
        instructions=opts.instructions,
    )
    dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return serialize_server_result("initialize", LATEST_HANDSHAKE_VERSION, dumped)


class LeanStream:
    """A lean session's GET stream, held open by patchbay: list_changed is written to it directly, and
    once the session is the SDK's, whatever the SDK sends on its GET stream (``carrier``)."""

    __slots__ = ("carrier", "ended", "lock", "send")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.lock = asyncio.Lock()  # one writer at a time: the fan-out, the carrier, the end
        self.ended = False
        self.carrier: asyncio.Task[None] | None = None

    async def write(self, data: bytes) -> None:
        async with self.lock:
            if not self.ended:
                await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self) -> None:
        """End the response (the client's receive then reports a disconnect, and the GET returns)."""
        async with self.lock:
            if self.ended:
                return
            self.ended = True
            with contextlib.suppress(Exception):  # the client may be gone already
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})


class LeanSession:
    """One lean session: its state record, its idle bookkeeping, and its GET stream if one is open."""

    __slots__ = ("busy", "idle_since", "state", "stream", "transport")

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.stream: LeanStream | None = None
        self.busy = 0  # requests in flight on it (they hold it open, as the SDK's transport counts them)
        self.idle_since = time.monotonic()
        self.transport: Any = None  # the SDK's, once materialised: holds taken before move to it

    def hold(self) -> None:
        if self.transport is not None:
            sdk_adapter.hold(self.transport)
        else:
            self.busy += 1

    def release(self) -> None:
        if self.transport is not None:
            sdk_adapter.release(self.transport)
            return
        self.busy -= 1
        if not self.busy:
            self.idle_since = time.monotonic()


class LeanSessions:
    """An endpoint's lean sessions.

    ``wait_started`` is awaited before an ``initialize`` is answered; ``open_sdk`` opens the SDK session
    under a lean session's id from its state (True once it is open); ``opened`` runs when a lean session
    starts (awaited before its ``initialize`` is answered: the cluster stores its state there); ``ended``
    when one ends without being materialised (expired, deleted)."""

    def __init__(
        self,
        *,
        manager: Any,
        server: Any,
        path: str,
        idle_timeout: float | None,
        wait_started: Callable[[], Awaitable[None]],
        open_sdk: Callable[[str, dict[str, Any]], Awaitable[bool]],
        opened: Callable[[str, dict[str, Any]], Awaitable[None]],
        ended: Callable[[str], None],
    ) -> None:
        self.manager = manager
        self.server = server
        self.path = path
        self.idle_timeout = idle_timeout
        self._wait_started = wait_started
        self._open_sdk = open_sdk
        self._opened = opened
        self._ended = ended
        self.sessions: dict[str, LeanSession] = {}
        self._materialising: dict[str, asyncio.Future[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # streams' carriers and ends, owned here
        self._exit_watch: asyncio.Task[None] | None = None
        self._open: set[LeanStream] = set()  # every GET stream held here, handed over or not
        self.materialised = 0  # how many went to the SDK (tests, diagnostics)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self.sessions

    def __len__(self) -> int:
        return len(self.sessions)

    def get(self, session_id: str) -> LeanSession | None:
        return self.sessions.get(session_id)

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.idle_timeout is not None and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(self.idle_timeout), name="patchbay-lean-sweep")

    async def stop(self) -> None:
        """Stop sweeping and forget every lean session (the endpoint is going away)."""
        for task in (self._sweeper, self._exit_watch):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._sweeper = self._exit_watch = None
        for session_id in list(self.sessions):
            self._end(session_id)
        tasks = list(self._tasks)
        for task in tasks:
            if task.get_name() == "patchbay-lean-carrier":
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _sweep(self, timeout: float) -> None:
        """End the sessions that had no request in flight for ``timeout`` (checked every quarter of it,
        so a session ends between 1 and 1.25 timeouts after its last request, at most 30 s late)."""
        period = min(max(timeout / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for session_id, session in list(self.sessions.items()):
                if (
                    not session.busy
                    and now - session.idle_since >= timeout
                    and session_id not in self._materialising
                ):
                    log.info("session %s idle timeout", session_id)
                    try:
                        self._end(session_id)
                    except Exception:  # one session's cleanup must not end the sweeps
                        log.exception("could not end idle session %s", session_id)

    def _end(self, session_id: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            self._ended(session_id)
            if session.stream is not None:  # its GET ends too (DELETE, shutdown)
                self._own(session.stream.end(), "patchbay-lean-end")

    def _own(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("a lean session's stream task failed: %r", task.exception())

    # --- GET streams -----------------------------------------------------------------------------------

    async def stream(self, session_id: str, headers: dict[str, str], receive: Any, send: Send) -> bool:
        """Serve a lean session's GET stream (the SDK's GET handler's answer, without the SDK's session);
        False to hand the GET over (a second stream, resumption, an Accept the SDK refuses...)."""
        session = self.sessions.get(session_id)
        version = headers.get("mcp-protocol-version")
        accept = [t.split(";")[0].strip().lower() for t in headers.get("accept", "").split(",")]
        if session is not None and session.stream is not None and not session.stream.ended:
            await _respond(send, 409, _CONFLICT, "application/json", session_id)  # as the SDK refuses it
            return True
        if (
            session is None
            or (self._exit_watch is not None and self._exit_watch.done())  # shutting down: the SDK's
            or session_id in self._materialising
            or "last-event-id" in headers
            or (version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS)
            or not any(t in ("*/*", "text/event-stream", "text/*") for t in accept)
        ):
            return False
        stream = session.stream = LeanStream(send)
        self._open.add(stream)
        session.hold()
        if self._exit_watch is None:
            self._exit_watch = asyncio.create_task(self._end_streams_on_exit(), name="patchbay-lean-exit")
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"cache-control", b"no-cache, no-transform"),
                        (b"connection", b"keep-alive"),
                        (b"content-type", b"text/event-stream"),
                        (b"mcp-session-id", session_id.encode()),
                    ],
                }
            )
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            stream.ended = True
            self._open.discard(stream)
            if session.stream is stream:
                session.stream = None
            if stream.carrier is not None:  # the SDK's session: unregister the stream there
                stream.carrier.cancel()
                await asyncio.gather(stream.carrier, return_exceptions=True)
            session.release()
        return True

    async def _end_streams_on_exit(self) -> None:
        """End the GET streams held here once the server starts shutting down, as the SDK's end: its
        SSE responses (sse-starlette) watch ``AppStatus.should_exit``, which that library sets from
        uvicorn's exit handler. Without this, a shutdown would wait for every client to hang up."""
        try:
            from sse_starlette.sse import AppStatus
        except ImportError:  # the SDK no longer uses it: streams end when their clients go
            return
        while not AppStatus.should_exit:
            await asyncio.sleep(0.5)
        for stream in list(self._open):
            await stream.end()

    def streams(self) -> list[LeanStream]:
        """The open GET streams of sessions still lean (the SDK's sessions are notified by the SDK)."""
        return [s.stream for s in self.sessions.values() if s.stream is not None and not s.stream.ended]

    # --- what the fast path hands over -----------------------------------------------------------------

    def can_open(self) -> bool:
        """Whether ``initialize`` may open lean sessions here (else the SDK opens them, as always)."""
        settings = getattr(self.manager, "security_settings", None)
        return (
            not getattr(settings, "enable_dns_rebinding_protection", False)  # that check is the SDK's
            and sdk_adapter.can_track_sessions(self.manager)
            and sdk_adapter.is_running(self.manager)
        )

    async def initialize(
        self, rid: str | int, params: Any, send: Send, *, traced: Callable[[Awaitable[Any]], Awaitable[Any]]
    ) -> bool:
        """Answer an ``initialize`` (no session id) by opening a lean session; False to hand it over."""
        if not self.can_open():
            return False
        cap = getattr(self.manager, "max_sessions", None)
        if cap is not None and len(self.sessions) + sdk_adapter.open_sessions(self.manager) >= cap:
            log.warning("Refusing to open a new session: %d sessions are already open", cap)
            await _respond(send, 503, _TOO_MANY, "application/json", None)
            return True

        negotiated = negotiate(self.server, params)
        if negotiated is None:
            return False

        async def answer() -> tuple[str, bytes]:
            await self._wait_started()  # as the SDK path does: the capabilities reflect every upstream
            result = initialize_result(self.server, negotiated)
            session_id = uuid4().hex
            state = session_state(self.path, negotiated, dict(params))
            self.sessions[session_id] = LeanSession(state)
            try:
                await self._opened(session_id, state)
            except BaseException:
                self._end(session_id)
                raise
            reply = {"jsonrpc": "2.0", "id": rid, "result": result}
            return session_id, json.dumps(reply, separators=(",", ":")).encode()  # as compact as the SDK's

        session_id, body = await traced(answer())
        await _respond(send, 200, b"event: message\r\ndata: " + body + b"\r\n\r\n", "sse", session_id)
        return True

    async def delete(self, session_id: str, send: Send) -> None:
        """DELETE of a lean session, answered as the SDK's transport answers it."""
        self._end(session_id)
        await _respond(send, 200, b"", "application/json", session_id)

    async def accepted(self, session_id: str, send: Send) -> None:
        """A notification the SDK would take and drop (``notifications/initialized``): 202, as it answers.
        Like any request, it restarts the session's idle countdown."""
        session = self.sessions.get(session_id)
        if session is not None and not session.busy:
            session.idle_since = time.monotonic()
        await _respond(send, 202, b"", "application/json", session_id)

    async def materialise(self, session_id: str) -> None:
        """Open the SDK's session for this lean one (once, whoever asks first); the request that needed
        it then goes to the SDK. If that fails, the session ends (the SDK then answers 404)."""
        pending = self._materialising.get(session_id)
        if pending is not None:
            await asyncio.shield(pending)
            return
        session = self.sessions.get(session_id)
        if session is None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._materialising[session_id] = future
        try:
            try:
                opened = await self._open_sdk(session_id, session.state)
            except Exception:
                log.exception("opening the SDK session of lean session %s failed", session_id)
                opened = False
            transport = sdk_adapter.live_transport(self.manager, session_id) if opened else None
            if transport is None:
                log.warning("could not open the SDK session of lean session %s; it ends", session_id)
                self._end(session_id)
                return
            for _ in range(session.busy):  # calls in flight (and the stream) hold the SDK's session now
                sdk_adapter.hold(transport)
            session.transport = transport
            stream = session.stream
            if stream is not None and not stream.ended:  # the SDK's GET stream is the one held open here
                messages = sdk_adapter.take_standalone_stream(transport)
                if messages is not None:
                    stream.carrier = self._own(_carry(transport, messages, stream), "patchbay-lean-carrier")
            self.sessions.pop(session_id, None)  # the SDK's now: its close forgets it (no ``ended``)
            self.materialised += 1
        finally:
            future.set_result(None)
            del self._materialising[session_id]


async def _carry(transport: Any, messages: Any, stream: LeanStream) -> None:
    """The SDK's GET-stream messages onto the stream held here; when the session ends, the GET ends."""
    try:
        await sdk_adapter.carry_standalone_stream(transport, messages, stream.write)
    finally:
        await stream.end()


async def _respond(send: Send, status: int, body: bytes, kind: str, session_id: str | None) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if kind == "sse":
        headers += [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache, no-transform"),
            (b"x-accel-buffering", b"no"),
        ]
    else:
        headers.append((b"content-type", kind.encode()))
    if session_id:
        headers.append((b"mcp-session-id", session_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
