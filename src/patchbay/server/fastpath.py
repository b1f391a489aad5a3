"""The ``/mcp`` hot path: plain ``tools/call`` requests answered without the SDK's per-request machinery.

Why: profiled under load (``bench/http.py --profile``), a ``tools/call`` through the SDK's streamable-HTTP
stack costs ~3.6 ms of CPU in the handshake era. That is an SSE response with a task group per request,
memory streams, validation twice, and OpenTelemetry; patchbay's own routing is under 5% of it. The
streamable-HTTP spec lets a server answer a POST with plain JSON. So when a request needs nothing the
SDK adds, this middleware calls the hub and writes the JSON itself, for ~4x less CPU per call. That
means: a single ``tools/call``, no progress token, on a known initialized session whose client cannot be
asked anything back (no sampling or elicitation), or a stateless 2026-07-28 request. Everything else
(handshakes, lists, progress, sampling, batches, GET streams, anything unexpected) goes to the SDK
untouched, with the request body replayed.

It relies on two private SDK details, deliberately: ``StreamableHTTPSessionManager._server_instances``
to know the session exists, and the transport's idle bookkeeping (``_requests_in_flight``,
``idle_scope``) so that fast-path traffic keeps a session alive exactly as SDK traffic does. If either
is missing (an SDK change), every request simply takes the SDK path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import anyio
from mcp.types import SERVER_INFO_META_KEY
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from patchbay.errors import PatchbayError, UnknownToolError
from patchbay.hub import Hub

log = logging.getLogger(__name__)

MODERN = "2026-07-28"
MAX_BODY = 4 * 1024 * 1024  # the SDK's own request limit: larger bodies go to it and get its 413
_META_VERSION = "io.modelcontextprotocol/protocolVersion"
_META_CAPS = "io.modelcontextprotocol/clientCapabilities"


class FastSessions:
    """Handshake-era sessions the fast path may serve: initialized, and no back-channel needed."""

    def __init__(self) -> None:
        self.eligible: set[str] = set()
        self.in_flight: dict[tuple[str, Any], asyncio.Task[Any]] = {}


class McpFastPath:
    def __init__(
        self,
        app: ASGIApp,
        *,
        hub: Hub,
        manager: Any,
        sessions: FastSessions,
        tool_error: Callable[[PatchbayError], dict[str, Any]],
        server_info: Callable[[], dict[str, Any]],
        path: str = "/mcp",
    ) -> None:
        self.app = app
        self.hub = hub
        self.manager = manager
        self.sessions = sessions
        self.tool_error = tool_error
        self.server_info = server_info  # modern-era results carry it in _meta, as the SDK's do
        self.path = path
        self.enabled = hasattr(manager, "_server_instances")
        if not self.enabled:
            log.warning("the MCP SDK changed; /mcp fast path disabled (everything goes through the SDK)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.enabled
            or scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] != self.path
        ):
            await self.app(scope, receive, send)
            return
        body, more = await _read_body(receive)
        replay = _replaying(body, more, receive)
        if more:  # too large to inspect: the SDK answers it (413)
            await self.app(scope, replay, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        handled = await self._try(scope, headers, body, receive, send)
        if not handled:
            await self.app(scope, replay, send)

    async def _try(
        self, scope: Scope, headers: dict[str, str], body: bytes, receive: Receive, send: Send
    ) -> bool:
        if "application/json" not in headers.get("accept", "") and "*/*" not in headers.get("accept", ""):
            return False
        try:
            msg = json.loads(body)
        except ValueError:
            return False
        if type(msg) is not dict or msg.get("jsonrpc") != "2.0":
            return False
        method = msg.get("method")
        version = headers.get("mcp-protocol-version")
        session_id = headers.get("mcp-session-id")
        if method == "notifications/cancelled" and session_id:
            return await self._cancel(session_id, msg, send)
        if method != "tools/call" or "id" not in msg:
            return False
        params = msg.get("params")
        if type(params) is not dict or not isinstance(params.get("name"), str):
            return False
        meta = params.get("_meta") or {}
        if type(meta) is not dict or "progressToken" in meta:
            return False
        arguments = params.get("arguments") or {}
        if type(arguments) is not dict:
            return False
        if version == MODERN:
            if session_id or not self._modern_ok(headers, params, meta):
                return False
            await self._call(scope, receive, send, msg["id"], params["name"], arguments, None, modern=True)
            return True
        if session_id is None or session_id not in self.sessions.eligible:
            return False
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return False
        transport = self.manager._server_instances.get(session_id)
        owners = getattr(self.manager, "_session_owners", {})
        if (
            transport is None
            or owners.get(session_id) is not None
            or getattr(transport, "is_terminated", True)
        ):
            self.sessions.eligible.discard(session_id)
            return False
        await self._call(scope, receive, send, msg["id"], params["name"], arguments, (session_id, transport))
        return True

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
        scope: Scope,
        receive: Receive,
        send: Send,
        rid: Any,
        name: str,
        arguments: dict[str, Any],
        session: tuple[str, Any] | None,
        *,
        modern: bool = False,
    ) -> None:
        task = asyncio.ensure_future(self.hub.call_tool(name, arguments))
        key = (session[0], rid) if session else None
        transport = session[1] if session else None
        if key is not None:
            self.sessions.in_flight[key] = task
        _hold(transport)
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():  # the client went away: cancelling sends notifications/cancelled upstream
                task.cancel()
                return
            reply: dict[str, Any]
            try:
                result = task.result()
                data = result.model_dump(by_alias=True, exclude_none=True, mode="json")
                if modern:
                    self._stamp(data)
                else:
                    data.pop("resultType", None)
                reply = {"jsonrpc": "2.0", "id": rid, "result": data}
            except asyncio.CancelledError:
                # The client sent notifications/cancelled: the spec says a cancelled request gets no answer.
                # An empty 202 is what clients treat as "nothing to deliver" (the SDK's own client crashes
                # if a JSON answer arrives for a request it has given up on).
                await _respond(send, 202, b"", session[0] if session else None)
                return
            except UnknownToolError as exc:
                reply = {"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": str(exc)}}
            except PatchbayError as exc:
                data = self.tool_error(exc)
                if modern:
                    data["resultType"] = "complete"
                    self._stamp(data)
                reply = {"jsonrpc": "2.0", "id": rid, "result": data}
            await _respond(
                send, 200, json.dumps(reply, ensure_ascii=False).encode(), session[0] if session else None
            )
        finally:
            watcher.cancel()
            if key is not None:
                self.sessions.in_flight.pop(key, None)
            _release(transport)

    def _stamp(self, data: dict[str, Any]) -> None:
        meta = data.get("_meta")
        meta = dict(meta) if isinstance(meta, dict) else {}
        meta.setdefault(SERVER_INFO_META_KEY, self.server_info())
        data["_meta"] = meta

    async def _cancel(self, session_id: str, msg: dict[str, Any], send: Send) -> bool:
        params = msg.get("params") or {}
        task = self.sessions.in_flight.get((session_id, params.get("requestId")))
        if task is None:
            return False  # not one of ours: the SDK handles it
        task.cancel()
        await _respond(send, 202, b"", session_id)
        return True


def _hold(transport: Any) -> None:
    """Count the call as in flight on the SDK transport, as its own handle_request does."""
    if transport is None or getattr(transport, "idle_scope", None) is None:
        return
    transport._requests_in_flight += 1
    transport.idle_scope.deadline = math.inf


def _release(transport: Any) -> None:
    if transport is None or getattr(transport, "idle_scope", None) is None:
        return
    transport._requests_in_flight -= 1
    if not transport._requests_in_flight and transport._idle_timeout is not None:
        transport.idle_scope.deadline = anyio.current_time() + transport._idle_timeout


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


async def _respond(send: Send, status: int, body: bytes, session_id: str | None) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    if session_id:
        headers.append((b"mcp-session-id", session_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
