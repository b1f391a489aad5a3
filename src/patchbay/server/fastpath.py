"""The ``/mcp`` hot path: plain ``tools/call`` requests answered without the SDK's per-request machinery.

Why: profiled under load (``bench/http.py --profile``), a ``tools/call`` through the SDK's streamable-HTTP
stack costs ~3.6 ms of CPU in the handshake era. That is an SSE response with a task group per request,
memory streams, validation twice, and OpenTelemetry; patchbay's own routing is under 5% of it. The
streamable-HTTP spec lets a server answer a POST with plain JSON. So when a request needs nothing the
SDK adds, this middleware calls the hub and writes the JSON itself, for ~4x less CPU per call. That
means: a single ``tools/call``, no progress token, on a known initialized session whose client cannot be
asked anything back (no sampling or elicitation), or a stateless 2026-07-28 request. Everything else
(handshakes, lists, progress, sampling, batches, GET streams, anything unexpected) goes to the SDK
untouched, with the request body replayed. ``tools/list`` is answered here too, from the JSON the
endpoint encoded once per catalog version and page (``McpEndpoint.tools_list_json``: what the SDK's handler
would send, sieved by the session's protocol version), because serialising 10,000 tools on every request
took the SDK ~0.4 s (``bench/lists.py``). Invalid input is the SDK's to answer too: the fast path
parses and checks exactly as the SDK would and hands over anything it would refuse, so both paths agree
on every input and nothing invalid reaches an upstream.

It also answers ``initialize`` and keeps the session lean (``lean_sessions.py``: a compact record instead
of the SDK's ~32 KiB of per-session objects, and its GET stream held here) until a request needs the SDK,
which then opens the session from that record and takes the open stream over.

It relies on private SDK details (the manager's sessions, the transport's idle bookkeeping), all read
through ``sdk_adapter``; if they are missing (an SDK change), every request simply takes the SDK path.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import pydantic_core
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS
from mcp.types import SERVER_INFO_META_KEY
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from patchbay import replies
from patchbay.audit import ClientInfo
from patchbay.errors import PatchbayError
from patchbay.hub import Hub
from patchbay.identity import Identity, identity_of
from patchbay.server import sdk_adapter
from patchbay.server.lean_sessions import LeanSession, LeanSessions
from patchbay.server.paging import CursorError
from patchbay.server.security import headers_of, route_path

log = logging.getLogger(__name__)

MODERN = "2026-07-28"
MAX_BODY = 4 * 1024 * 1024  # the SDK's own request limit: larger bodies go to it and get its 413
_META_VERSION = "io.modelcontextprotocol/protocolVersion"
_META_CAPS = "io.modelcontextprotocol/clientCapabilities"
_META_CLIENT = "io.modelcontextprotocol/clientInfo"
# The members of a request the fast path understands; anything more and the SDK decides what it means.
_REQUEST_KEYS = frozenset({"jsonrpc", "id", "method", "params"})
_CALL_KEYS = frozenset({"name", "arguments", "_meta"})
_LIST_KEYS = frozenset({"cursor", "_meta"})
_INVALID_CONTENT_TYPE = replies.encode(
    replies.invalid_request("Invalid Content-Type header: POST /mcp takes application/json")
)
_INVALID_ID = replies.encode(
    replies.invalid_request("Invalid request: the id must be a string or an integer")
)


class FastSessions:
    """What the endpoint shares with its fast path: the handshake-era sessions whose calls it may serve
    (initialized, no back-channel needed), the sessions whose ``tools/list`` it may serve (initialized,
    with the negotiated protocol version), and the encoded ``tools/list`` pages."""

    def __init__(self) -> None:
        self.eligible: set[str] = set()
        self.listable: dict[str, str] = {}
        self.in_flight: dict[tuple[str, str | int], asyncio.Task[Any]] = {}
        self.clients: dict[str, ClientInfo] = {}  # session id -> its initialize's clientInfo (audit)
        self.lean: LeanSessions | None = None  # sessions held without the SDK (lean_sessions.py)
        # (protocol version, cursor) -> the encoded result; raises CursorError (the SDK then answers)
        self.tools_list: Callable[[str, str | None], bytes] | None = None

    def forget(self, session_id: str) -> None:
        """The session ended."""
        self.eligible.discard(session_id)
        self.listable.pop(session_id, None)
        self.clients.pop(session_id, None)


def _accepts(headers: dict[str, str]) -> bool:
    return _accepts_value(headers.get("accept", ""))


@functools.lru_cache(maxsize=64)  # clients repeat the same few header values: parse each once
def _accepts_value(accept: str) -> bool:
    """The SDK's own Accept rule (``check_accept_headers``): JSON and SSE, wildcards counted."""
    types_ = [t.split(";")[0].strip().lower() for t in accept.split(",")]
    if "*/*" in types_:
        return True
    return any(t in ("application/json", "application/*") for t in types_) and any(
        t in ("text/event-stream", "text/*") for t in types_
    )


@functools.lru_cache(maxsize=64)
def _is_json(content_type: str) -> bool:
    """The SDK's Content-Type rules: the security check's prefix, then the transport's exact type."""
    if not content_type.lower().startswith("application/json"):
        return False
    return any(part.strip() == "application/json" for part in content_type.split(";")[0].split(","))


def _parse(body: bytes, modern: bool) -> Any:
    """The body parsed exactly as the SDK's leg for its era parses it, or None where the SDK refuses it.

    The handshake-era transport uses ``pydantic_core.from_json`` (strict UTF-8, nesting limited to 200,
    and faster than ``json``); the 2026-07-28 leg uses ``json.loads`` (where deep nesting raises
    RecursionError). Whatever the SDK refuses, it answers itself: the body is handed over. For the
    2026-07-28 leg ``from_json`` is tried first too, for speed: what it parses, ``json.loads`` parses to
    the same value (duplicate keys, big integers, NaN and infinities alike); what it refuses (lone
    surrogates, invalid UTF-8 or other encodings, deeper nesting) is given to ``json.loads``, as before."""
    try:
        return pydantic_core.from_json(body)
    except ValueError:
        if not modern:
            return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


class McpFastPath:
    """ASGI middleware in front of the SDK's ``/mcp`` app: answers plain ``tools/call`` itself.

    It answers only requests that are valid and that the SDK would execute; anything it is not sure of
    (malformed JSON-RPC, odd ids, wrong media types, extra members) is replayed to the SDK, so both paths
    give the same answer to every input and nothing invalid reaches an upstream."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hub: Hub,
        manager: Any,
        sessions: FastSessions,
        server_info: Callable[[], dict[str, Any]],
        path: str = "/mcp",
        profile: str | None = None,
    ) -> None:
        self.app = app
        self.hub = hub
        self.manager = manager
        self.sessions = sessions
        self.server_info = server_info  # modern-era results carry it in _meta, as the SDK's do
        self._server_info: dict[str, Any] | None = None  # its value, taken once (see _stamp)
        self.path = path
        self.profile = profile  # ``/mcp/<profile>``: calls go through that profile's view
        self.enabled = sdk_adapter.can_track_sessions(manager)
        if not self.enabled:
            log.warning("the MCP SDK changed; /mcp fast path disabled (everything goes through the SDK)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or route_path(scope) != self.path:
            await self.app(scope, receive, send)
            return
        lean = self.sessions.lean
        if scope["method"] != "POST":
            if lean is not None and len(lean):  # a lean session's DELETE, or its GET stream (the SDK's)
                session_id = _session_header(scope)
                if session_id is not None and session_id in lean:
                    if scope["method"] == "DELETE":
                        await lean.delete(session_id, send)
                        return
                    if scope["method"] == "GET":
                        if await lean.stream(session_id, headers_of(scope), receive, send):
                            return
                        await lean.materialise(session_id)
            await self.app(scope, receive, send)
            return
        body, more = await _read_body(receive)
        replay = _replaying(body, more, receive)
        headers = headers_of(scope)
        handled = not more and await self._try(headers, body, receive, send, identity_of(scope))
        if not handled:  # too large to inspect (the SDK answers 413), or anything else that is the SDK's
            session_id = headers.get("mcp-session-id")
            if lean is not None and session_id is not None and session_id in lean:
                await lean.materialise(session_id)
            await self.app(scope, replay, send)

    async def _try(
        self, headers: dict[str, str], body: bytes, receive: Receive, send: Send, caller: Identity
    ) -> bool:
        content_type = headers.get("content-type", "")
        if not content_type.lower().startswith("application/json"):
            # The SDK refuses these with a bare text/plain 400; the same status, as JSON-RPC.
            await _respond(send, 400, _INVALID_CONTENT_TYPE, None)
            return True
        if not _accepts(headers) or not _is_json(content_type):
            return False
        version = headers.get("mcp-protocol-version")
        legacy = version is None or version in HANDSHAKE_PROTOCOL_VERSIONS  # the manager's own routing
        msg = _parse(body, not legacy)
        if type(msg) is not dict:
            return False
        if legacy and "method" in msg and "id" in msg and not replies.is_request_id(msg["id"]):
            # The SDK's handshake-era transport takes such a request for a notification (202, dropped,
            # never answered); its 2026-07-28 leg refuses it with -32600. Both paths here do the latter.
            await _respond(send, 400, _INVALID_ID, headers.get("mcp-session-id"))
            return True
        if msg.get("jsonrpc") != "2.0" or not msg.keys() <= _REQUEST_KEYS:
            return False
        method = msg.get("method")
        session_id = headers.get("mcp-session-id")
        if method == "notifications/cancelled" and session_id and "id" not in msg:
            return await self._cancel(session_id, msg, send)
        lean = self.sessions.lean
        if lean is not None and legacy:
            if method == "initialize" and session_id is None and replies.is_request_id(msg.get("id")):
                return await self._initialize(lean, headers, msg, send)
            if (
                method == "notifications/initialized"
                and session_id in lean
                and "id" not in msg
                and type(msg.get("params", {})) is dict
            ):
                assert session_id is not None
                await lean.accepted(session_id, send)  # what the SDK answers, before it sets a flag
                return True
        if method == "tools/list" and replies.is_request_id(msg.get("id")):
            return await self._list(headers, msg, send)
        if method != "tools/call" or not replies.is_request_id(rid := msg.get("id")):
            return False
        params = msg.get("params")
        if type(params) is not dict or type(params.get("name")) is not str or not params.keys() <= _CALL_KEYS:
            return False
        meta = params.get("_meta")
        if meta is None:
            meta = {}
        elif type(meta) is not dict or "progressToken" in meta:
            return False
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        elif type(arguments) is not dict:
            return False
        if version == MODERN:
            if session_id or not self._modern_ok(headers, params, meta):
                return False
            await self._call(
                receive,
                send,
                rid,
                params["name"],
                arguments,
                None,
                caller,
                client_info(meta.get(_META_CLIENT)),
                modern=True,
                trace=(headers, meta),
            )
            return True
        if session_id is None or session_id not in self.sessions.eligible:
            return False
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return False
        transport = self._handle(session_id)
        if transport is None:
            self.sessions.eligible.discard(session_id)
            return False
        await self._call(
            receive,
            send,
            rid,
            params["name"],
            arguments,
            (session_id, transport),
            caller,
            self.sessions.clients.get(session_id),
            trace=(headers, meta),
        )
        return True

    async def _list(self, headers: dict[str, str], msg: dict[str, Any], send: Send) -> bool:
        """``tools/list`` from pre-encoded pages (``McpEndpoint.tools_list_json``), on a known session in
        its negotiated version or a stateless 2026-07-28 request; anything else (and a bad cursor) is the
        SDK's."""
        tools_list = self.sessions.tools_list
        params = msg.get("params")
        if params is None:
            params = {}
        if tools_list is None or type(params) is not dict or not params.keys() <= _LIST_KEYS:
            return False
        cursor = params.get("cursor")
        meta = params.get("_meta")
        if (cursor is not None and type(cursor) is not str) or (meta is not None and type(meta) is not dict):
            return False
        if meta is not None and "progressToken" in meta:
            return False
        version = headers.get("mcp-protocol-version")
        session_id = headers.get("mcp-session-id")
        transport = None
        if version == MODERN:
            if (
                session_id
                or meta is None
                or meta.get(_META_VERSION) != MODERN
                or type(meta.get(_META_CAPS)) is not dict
                or headers.get("mcp-method") != "tools/list"
                or any(k == "mcp-name" or k.startswith("mcp-param-") for k in headers)
            ):
                return False
            protocol = MODERN
        else:
            if session_id is None or session_id not in self.sessions.listable:
                return False
            protocol = self.sessions.listable[session_id]
            if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
                return False
            transport = self._handle(session_id)
            if transport is None:
                self.sessions.listable.pop(session_id, None)
                return False
        _hold(transport)
        try:
            await self.hub.wait_started()  # as the SDK handler does: a client never keeps a partial list
            try:
                result = tools_list(protocol, cursor)
            except CursorError:
                return False  # the SDK's handler refuses it with -32602
            head = b'{"jsonrpc":"2.0","id":' + json.dumps(msg["id"]).encode() + b',"result":'
            tracing = self.hub.tracing
            if tracing is None:
                await _respond(send, 200, head + result + b"}", session_id)
            else:  # a SERVER span, as for every downstream request (telemetry.py)
                with tracing.serving(
                    "tools/list",
                    None,
                    meta=meta,
                    headers=headers,
                    protocol="streamable-http",
                    request_id=msg["id"],
                    session_id=session_id,
                    protocol_version=headers.get("mcp-protocol-version") or protocol,
                ):
                    await _respond(send, 200, head + result + b"}", session_id)
        finally:
            _release(transport)
        return True

    def _handle(self, session_id: str) -> Any | None:
        """What holds the session while the fast path serves it: the SDK's transport, or the lean
        session; None when neither may be served (unknown, ending, the SDK's to answer)."""
        transport = sdk_adapter.live_transport(self.manager, session_id)
        if transport is None and self.sessions.lean is not None:
            return self.sessions.lean.get(session_id)
        return transport

    async def _initialize(
        self, lean: LeanSessions, headers: dict[str, str], msg: dict[str, Any], send: Send
    ) -> bool:
        """``initialize`` opening a lean session (``lean_sessions.py``); False hands it to the SDK."""
        params = msg.get("params")
        if type(params) is not dict:
            return False
        tracing = self.hub.tracing

        def traced(answer: Any) -> Any:
            if tracing is None:
                return answer
            return tracing.served(
                answer,
                "initialize",
                params,
                meta=params.get("_meta") if isinstance(params.get("_meta"), dict) else None,
                headers=headers,
                protocol="streamable-http",
                request_id=msg["id"],
                protocol_version=headers.get("mcp-protocol-version"),
            )

        return await lean.initialize(msg["id"], params, send, traced=traced)

    @staticmethod
    def _modern_ok(headers: dict[str, str], params: dict[str, Any], meta: dict[str, Any]) -> bool:
        return (
            meta.get(_META_VERSION) == MODERN
            and type(meta.get(_META_CAPS)) is dict
            and headers.get("mcp-method") == "tools/call"
            and headers.get("mcp-name") == params["name"]
            and not any(k.startswith("mcp-param-") for k in headers)
        )

    async def _call(
        self,
        receive: Receive,
        send: Send,
        rid: str | int,
        name: str,
        arguments: dict[str, Any],
        session: tuple[str, Any] | None,
        caller: Identity,
        client: ClientInfo | None,
        *,
        modern: bool = False,
        trace: tuple[dict[str, str], dict[str, Any]] = ({}, {}),
    ) -> None:
        call = self.hub.call_tool(name, arguments, profile=self.profile, caller=caller, client_info=client)
        session_id = session[0] if session else None
        if self.hub.tracing is not None:  # OpenTelemetry (telemetry.py): the call in a SERVER span
            call = self.hub.tracing.served(
                call,
                "tools/call",
                {"name": name},
                meta=trace[1],
                headers=trace[0],
                protocol="streamable-http",
                request_id=rid,
                session_id=session_id,
                protocol_version=trace[0].get("mcp-protocol-version"),
            )
        task = asyncio.get_running_loop().create_task(call)
        key = (session[0], rid) if session else None
        transport = session[1] if session else None
        if key is not None:
            self.sessions.in_flight[key] = task
        _hold(transport)
        watch = _DisconnectWatch(task, receive)
        try:
            if not await watch.wait():  # the client went away: cancelling sends notifications/cancelled
                task.cancel()
                await _settle(task)
                return
            try:
                outcome: Any = task.result()
            except asyncio.CancelledError:
                # The client sent notifications/cancelled: the spec says a cancelled request gets no answer.
                # An empty 202 is what clients treat as "nothing to deliver" (the SDK's own client crashes
                # if a JSON answer arrives for a request it has given up on).
                await _respond(send, 202, b"", session_id)
                return
            except PatchbayError as exc:
                outcome = exc
            except Exception as exc:  # a bug: answered as the SDK path answers it (-32603), never 500
                log.exception("tools/call %r failed", name)
                outcome = exc
            reply = replies.call_reply(rid, outcome)
            status = 200
            if modern:
                if "result" in reply:
                    reply["result"]["resultType"] = "complete"
                    self._stamp(reply["result"])
                else:  # the SDK's modern leg maps error codes to HTTP statuses
                    status = ERROR_CODE_HTTP_STATUS.get(reply["error"]["code"], 200)
            await _respond(send, status, replies.encode(reply), session_id)
        finally:
            await watch.stop()
            if key is not None:
                self.sessions.in_flight.pop(key, None)
            _release(transport)

    def _stamp(self, data: dict[str, Any]) -> None:
        """The server's identity in ``_meta``. The SDK's ``server_info_stamp`` is fixed when its server is
        made and deep-copies it on every read (~5 µs) so that callers may mutate it; this answer is only
        encoded, so one copy, taken at the first answer, serves them all."""
        info = self._server_info
        if info is None:
            info = self._server_info = self.server_info()
        meta = data.get("_meta")
        meta = dict(meta) if isinstance(meta, dict) else {}
        meta.setdefault(SERVER_INFO_META_KEY, info)
        data["_meta"] = meta

    async def _cancel(self, session_id: str, msg: dict[str, Any], send: Send) -> bool:
        params = msg.get("params")
        if type(params) is not dict or not replies.is_request_id(request_id := params.get("requestId")):
            return False
        task = self.sessions.in_flight.get((session_id, request_id))
        if task is None:
            lean = self.sessions.lean
            if lean is not None and session_id in lean:  # nothing of it is in flight at the SDK either
                await lean.accepted(session_id, send)
                return True
            return False  # not one of ours: the SDK handles it
        task.cancel()
        await _respond(send, 202, b"", session_id)
        return True


def _hold(handle: Any) -> None:
    if isinstance(handle, LeanSession):
        handle.hold()
    else:
        sdk_adapter.hold(handle)


def _release(handle: Any) -> None:
    if isinstance(handle, LeanSession):
        handle.release()
    else:
        sdk_adapter.release(handle)


def _session_header(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"mcp-session-id":
            return str(value.decode("latin-1"))
    return None


def client_info(info: Any) -> ClientInfo:
    """An MCP ``clientInfo`` object (as JSON) as the audit log's client; anything malformed is unnamed."""
    if not isinstance(info, dict):
        return ClientInfo(surface="mcp")
    name, version = info.get("name"), info.get("version")
    return ClientInfo(
        name if isinstance(name, str) else None, version if isinstance(version, str) else None, "mcp"
    )


async def _settle(task: asyncio.Future[Any]) -> None:
    """Wait for a task we cancelled; its outcome is moot, but it is retrieved (never "never retrieved")."""
    task.add_done_callback(_retrieve)
    if not task.done():
        await asyncio.wait({task})


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("abandoned /mcp call ended with %r", task.exception())


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body"):
            return b"".join(chunks), False
        if size > MAX_BODY:
            return b"".join(chunks), True


def _replaying(body: bytes, more: bool, receive: Receive) -> Receive:
    """A receive() that first gives back the body already read."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _DisconnectWatch:
    """Waits for a call, and for its client going away, without a task and ``asyncio.wait`` per call.

    Watching for a disconnect means a task reading ``receive()``; with ``asyncio.wait`` over the two that
    was ~15% of the fast path's CPU (``bench/http.py --profile``), for calls that are nearly all over in
    well under a millisecond. So the call's own completion wakes the request (a done-callback), and the
    watcher task starts only for a call still running after ``WATCH_AFTER`` seconds. A client that goes
    away earlier is noticed when it starts (``receive()`` then answers ``http.disconnect`` at once): the
    call is still cancelled, at most ``WATCH_AFTER`` later."""

    __slots__ = ("_receive", "_task", "_timer", "_watcher", "_woken")

    WATCH_AFTER = 0.05

    def __init__(self, task: asyncio.Task[Any], receive: Receive) -> None:
        loop = asyncio.get_running_loop()
        self._receive = receive
        self._task = task
        self._woken: asyncio.Future[bool] = loop.create_future()  # True: the call ended; False: client gone
        self._watcher: asyncio.Task[None] | None = None
        task.add_done_callback(self._ended)
        self._timer: asyncio.TimerHandle | None = loop.call_later(self.WATCH_AFTER, self._start)

    def _ended(self, _task: asyncio.Task[Any]) -> None:
        if not self._woken.done():
            self._woken.set_result(True)

    def _start(self) -> None:
        self._timer = None
        if not self._woken.done():  # owned: cancelled and awaited by stop()
            self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        await _until_disconnect(self._receive)
        if not self._woken.done():
            self._woken.set_result(False)

    async def wait(self) -> bool:
        """True once the call has ended; False if the client went away first."""
        return await self._woken

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._task.remove_done_callback(self._ended)
        if self._watcher is not None:
            self._watcher.cancel()
            await _settle(self._watcher)


async def _respond(send: Send, status: int, body: bytes, session_id: str | None) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    if session_id:
        headers.append((b"mcp-session-id", session_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
