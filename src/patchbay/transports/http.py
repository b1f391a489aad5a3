"""Remote upstreams: streamable HTTP (``HttpTransport``) and legacy HTTP+SSE (``SseTransport``).

Both wrap the SDK's client transports (``streamable_http_client`` / ``sse_client``) and only move JSON-RPC
messages; the handshake, correlation and listing happen above, exactly as for stdio.

Each wire owns one asyncio task that enters the SDK context, pumps inbound messages to ``on_message`` and
forwards queued outbound ones, and leaves the context again (contexts must be exited in the task that entered
them). The SDK's own failure reporting is uneven, so the wire also watches the HTTP traffic itself through a
wrapper around the httpx2 transport:

* a refused or failed connection tears the SDK context down (as an ExceptionGroup) for a request, but only
  retries silently for the GET stream, so an idle server's death would go unnoticed: the wire reports it;
* a broken response stream (the server died mid-answer, or the GET stream dropped) is answered by the SDK
  with a synthetic ``-32000 "SSE stream ..."`` error. The wire holds such errors and sends a ``ping`` probe:
  if the server still answers, the held errors are delivered; if not, the connection is reported lost, so
  the callers get ``ServerExitedError`` and the supervisor reconnects;
* "session not found" (HTTP 404, or a 400 whose JSON-RPC error talks about the session, as the TypeScript
  SDK's examples answer) means the server restarted or dropped the session, and the SDK never
  re-initializes by itself: the wire reports the connection lost so the supervisor opens a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp.types import JSONRPCRequest, jsonrpc_message_adapter

from patchbay.config import ResolvedSpec
from patchbay.errors import ConfigError, StartError
from patchbay.transports.base import StderrTail

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds to establish a TCP/TLS connection
WRITE_TIMEOUT = 30.0  # seconds to send a request (and to wait for a pooled connection)
READ_TIMEOUT = 300.0  # seconds of silence on a response stream before it counts as broken
KEEPALIVE_EXPIRY = 2.0  # below the usual 5 s server keep-alive, so a reused connection is rarely stale
MAX_SSE_EVENT_BYTES = 64 * 1024 * 1024  # one message; the SDK default (1 MiB) is too small for big results
OPEN_TIMEOUT = 30.0  # bound on start() (the SSE transport waits for the ``endpoint`` event)
PROBE_TIMEOUT = 10.0  # a live server answers ``ping`` at once
CLOSE_GRACE = 2.0  # time to leave the SDK context politely (DELETE of the session) before cancelling
CONNECTION_CLOSED = -32000  # the code of the SDK's synthetic "SSE stream ..." errors
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
SESSION_HEADER = "mcp-session-id"
_SDK_SESSION_GONE = ("session not found", "session terminated")


# --- describing failures --------------------------------------------------------------------------------


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and the leaves of any exception group, depth first."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if isinstance(e, BaseExceptionGroup):
            stack.extend(reversed(e.exceptions))
        for nxt in (e.__context__, e.__cause__):
            if nxt is not None:
                stack.append(nxt)


def describe_http_error(exc: BaseException) -> str:
    """A short human phrase for a connection-level failure: "connection refused", "timed out connecting"."""
    for e in _causes(exc):
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return f"cannot resolve the host name ({e.strerror or e})"
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed ({e.verify_message or e})"
        if isinstance(e, ssl.SSLError):
            return f"TLS error ({e.reason or e})"
        if isinstance(e, ConnectionResetError):
            return "connection reset by the server"
    if isinstance(exc, httpx2.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, httpx2.ReadTimeout):
        return f"no data for {READ_TIMEOUT:g} s"
    if isinstance(exc, httpx2.RemoteProtocolError):
        return "the server closed the connection mid-response"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _first_failure(exc: BaseException) -> BaseException:
    """The most telling leaf of a (nested) exception group: a transport error if there is one."""
    leaves = [e for e in _causes(exc) if not isinstance(e, BaseExceptionGroup | asyncio.CancelledError)]
    for e in leaves:
        if isinstance(e, httpx2.TransportError | httpx2.HTTPStatusError | httpx2.SSEError):
            return e
    return leaves[0] if leaves else exc


def _is_connect_failure(exc: BaseException) -> bool:
    return isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.UnsupportedProtocol)


def _jsonrpc_error_message(body: bytes) -> str | None:
    """The ``error.message`` of a JSON-RPC error body, if that is what ``body`` is."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    err = doc.get("error") if isinstance(doc, dict) else None
    msg = err.get("message") if isinstance(err, dict) else None
    return msg if isinstance(msg, str) else None


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode(errors="replace").strip().replace("\n", " ")
    return f": {text}" if text else ""


def check_url(name: str, url: str | None) -> str:
    """The URL, or a ConfigError naming the server if it is not an http(s) URL."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"server {name!r}: url: {url!r} is not an http:// or https:// URL", server=name, field="url"
        )
    assert url is not None
    return url


# --- watching the HTTP traffic --------------------------------------------------------------------------


class _WatchedStream(httpx2.AsyncByteStream):
    """A response body that reports how it ended: broken (a transport error) or, for GET, cleanly."""

    def __init__(self, inner: httpx2.AsyncByteStream, wire: _RemoteWire, request: httpx2.Request) -> None:
        self._inner = inner
        self._wire = wire
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx2.TransportError as exc:
            self._wire._stream_broke(self._request, exc)
            raise
        self._wire._stream_ended(self._request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _WatchedTransport(httpx2.AsyncBaseTransport):
    """Wraps the real httpx2 transport so the wire sees every connection failure and error status."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, wire: _RemoteWire) -> None:
        self._inner = inner
        self._wire = wire

    async def __aenter__(self) -> _WatchedTransport:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc_value, traceback)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "DELETE" and self._wire._reason is not None:
            # The SDK ends a session with DELETE on the way out; no point when the session is already gone.
            return httpx2.Response(204, request=request)
        try:
            response = await self._inner.handle_async_request(request)
        except httpx2.TransportError as exc:
            self._wire._request_failed(request, exc)
            raise
        return await self._wire._response(request, response)

    async def aclose(self) -> None:
        await self._inner.aclose()


# --- the wires ------------------------------------------------------------------------------------------


class _RemoteWire:
    """What both HTTP transports share: the owning task, the queues, the watching and the probe."""

    kind = "HTTP"

    def __init__(
        self,
        spec: ResolvedSpec,
        on_message: Callable[[Any], None],
        on_close: Callable[[str, int | None], None],
        *,
        probe_timeout: float = PROBE_TIMEOUT,
        open_timeout: float = OPEN_TIMEOUT,
        close_grace: float = CLOSE_GRACE,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.url = check_url(spec.name, spec.url)
        self.headers = dict(spec.headers)
        self._on_message = on_message
        self._on_close = on_close
        self._probe_timeout = probe_timeout
        self._open_timeout = open_timeout
        self._close_grace = close_grace
        loop = asyncio.get_running_loop()
        self._opened: asyncio.Future[None] = loop.create_future()
        self._task: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[SessionMessage] = asyncio.Queue()
        self._stop = asyncio.Event()
        self._probe_wanted = asyncio.Event()
        self._probes: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._probe_seq = 0
        self._held: list[dict[str, Any]] = []
        self._init_ids: set[int | str] = set()
        self.protocol_version: str | None = None
        self._reason: str | None = None  # why the connection is gone; the first cause wins
        self._closing = False
        self._finished = False
        self._responses = 0  # HTTP responses seen, to tell "could not connect" from "lost the connection"

    @property
    def pid(self) -> int | None:
        return None

    @property
    def stderr(self) -> StderrTail | None:
        return None

    # --- to be provided by each transport ------------------------------------------------------------

    def _open(self) -> contextlib.AbstractAsyncContextManager[tuple[Any, Any]]:
        raise NotImplementedError

    def _stream_broke(self, request: httpx2.Request, exc: Exception) -> None:
        """A response body failed mid-way."""

    def _stream_ended(self, request: httpx2.Request) -> None:
        """A response body ended cleanly."""

    def _eof_reason(self) -> str:
        return f"lost its {self.kind} connection to {self.url}"

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the connection task and wait (bounded) until the SDK's streams are open."""
        if self._task is not None:
            raise RuntimeError(f"{self.kind} transport for {self.name!r} was already started")
        self._task = asyncio.create_task(self._run(), name=f"patchbay-{self.kind.lower()}-{self.name}")
        await asyncio.wait(
            {self._opened, self._task}, timeout=self._open_timeout, return_when="FIRST_COMPLETED"
        )
        if self._opened.done():
            return
        if self._task.done():
            raise StartError(f"{self._reason or self._eof_reason()} during start-up")
        raise StartError(
            f"did not open its {self.kind} connection to {self.url} within {self._open_timeout:g} s"
        )

    async def close(self) -> None:
        """Leave the SDK context (ending the HTTP session), bounded; then cancel if it hangs."""
        self._closing = True
        self._stop.set()
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=self._close_grace)
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            if not task.done():
                log.warning("%s: the %s connection task did not stop", self.name, self.kind)
        self._finish("was stopped")

    async def _run(self) -> None:
        reason = self._eof_reason()
        try:
            async with self._open() as (read, write):
                if not self._opened.done():
                    self._opened.set_result(None)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._pump, read)
                    tg.start_soon(self._writer, write)
                    tg.start_soon(self._prober)
                    await self._stop.wait()
                    tg.cancel_scope.cancel()
        except asyncio.CancelledError:
            reason = "was stopped"
            raise
        except (Exception, BaseExceptionGroup) as exc:
            failure = _first_failure(exc)
            log.debug("%s: %s connection ended with %r", self.name, self.kind, failure, exc_info=exc)
            reason = self._explain(failure)
        finally:
            self._lost(reason)  # a no-op if the cause was already reported

    def _explain(self, exc: BaseException) -> str:
        if isinstance(exc, httpx2.TransportError):
            return self._connection_reason(exc)
        if isinstance(exc, httpx2.HTTPStatusError):
            return f"answered HTTP {exc.response.status_code} at {self.url}"
        text = str(exc)
        return (
            f"{self.kind} connection to {self.url} failed: {type(exc).__name__}{': ' + text if text else ''}"
        )

    def _connection_reason(self, exc: BaseException) -> str:
        if self._responses == 0 and _is_connect_failure(exc):
            return f"could not connect to {self.url}: {describe_http_error(exc)}"
        return f"lost its {self.kind} connection to {self.url}: {describe_http_error(exc)}"

    def _lost(self, reason: str) -> None:
        """The connection can no longer be used: remember why, wind the task down, tell the owner."""
        if self._reason is None:
            self._reason = reason
        self._stop.set()
        if not self._closing:
            self._finish(self._reason)

    def _finish(self, reason: str) -> None:
        if self._finished:
            return
        self._finished = True
        self._held.clear()
        try:
            self._on_close(reason, None)
        except Exception:
            log.exception("%s: close handler failed", self.name)

    # --- outbound ------------------------------------------------------------------------------------

    def send(self, msg: dict[str, Any]) -> None:
        """Queue one message for the connection task; never blocks. Raises if the connection is gone."""
        if self._task is None or self._finished or self._closing or self._reason is not None:
            raise ConnectionError(f"the {self.kind} connection to {self.url} is not open")
        message = jsonrpc_message_adapter.validate_python(msg)
        if isinstance(message, JSONRPCRequest) and message.method == "initialize":
            self._init_ids.add(message.id)
        self._enqueue(message)

    def _enqueue(self, message: Any) -> None:
        metadata = None
        if self.protocol_version is not None:
            # What ClientSession does: every message after the handshake carries MCP-Protocol-Version.
            metadata = ClientMessageMetadata(headers={MCP_PROTOCOL_VERSION_HEADER: self.protocol_version})
        self._outbox.put_nowait(SessionMessage(message, metadata=metadata))

    async def _writer(self, write: Any) -> None:
        while True:
            item = await self._outbox.get()
            try:
                await write.send(item)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._lost(self._reason or f"{self._eof_reason()} (it stopped taking messages)")
                return

    # --- inbound -------------------------------------------------------------------------------------

    async def _pump(self, read: Any) -> None:
        async for item in read:
            if self._finished:
                break
            if isinstance(item, Exception):
                self._inbound_error(item)
                continue
            try:
                msg = item.message.model_dump(by_alias=True, exclude_unset=True, mode="json")
            except Exception:
                log.warning("%s: skipped a message that could not be encoded", self.name, exc_info=True)
                continue
            self._inbound(msg)
        self._lost(self._eof_reason())

    def _inbound_error(self, exc: Exception) -> None:
        if isinstance(exc, httpx2.TransportError | httpx2.SSEError):
            self._transport_error_on_stream(exc)
        else:
            log.warning("%s: skipped an unreadable message from %s: %s", self.name, self.url, exc)

    def _transport_error_on_stream(self, exc: Exception) -> None:
        self._lost(self._connection_reason(exc))

    def _inbound(self, msg: dict[str, Any]) -> None:
        rid = msg.get("id")
        if "method" not in msg and rid is not None:  # a response
            if isinstance(rid, str) and rid in self._probes:
                fut = self._probes[rid]
                if not fut.done():
                    fut.set_result(msg)
                return
            err = msg.get("error")
            if isinstance(err, dict):
                code, text = err.get("code"), str(err.get("message", ""))
                if code == INVALID_REQUEST and text.lower() in _SDK_SESSION_GONE:
                    self._lost(self._session_gone(repr(text)))
                    return
                if code == CONNECTION_CLOSED and text.startswith("SSE stream"):  # made up by the SDK
                    if self.protocol_version is None:
                        self._lost(f"dropped the {self.kind} connection to {self.url} mid-answer ({text})")
                    else:
                        self._held.append(msg)
                        self._probe_wanted.set()
                    return
            elif rid in self._init_ids:
                result = msg.get("result")
                version = result.get("protocolVersion") if isinstance(result, dict) else None
                if isinstance(version, str):
                    self.protocol_version = version
        self._deliver(msg)

    def _deliver(self, msg: dict[str, Any]) -> None:
        if self._finished:
            return
        try:
            self._on_message(msg)
        except Exception:
            log.exception("%s: message handler failed", self.name)

    def _session_gone(self, what: str) -> str:
        return f"answered {what} at {self.url}: its session is gone (the server restarted or dropped it)"

    # --- liveness probe ------------------------------------------------------------------------------

    async def _prober(self) -> None:
        """On a broken stream: ping; deliver the held errors if the server answers, else report it lost."""
        while True:
            await self._probe_wanted.wait()
            self._probe_wanted.clear()
            if not await self._probe():
                return
            held, self._held = self._held, []
            for msg in held:
                self._deliver(msg)

    async def _probe(self) -> bool:
        self._probe_seq += 1
        pid = f"patchbay-probe-{self._probe_seq}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._probes[pid] = fut
        try:
            self._enqueue(
                jsonrpc_message_adapter.validate_python({"jsonrpc": "2.0", "id": pid, "method": "ping"})
            )
            with anyio.fail_after(self._probe_timeout):
                reply = await fut
        except TimeoutError:
            self._lost(
                f"stopped answering at {self.url} (no answer to a ping within {self._probe_timeout:g} s "
                "after a response stream broke)"
            )
            return False
        finally:
            self._probes.pop(pid, None)
        err = reply.get("error")
        if isinstance(err, dict) and err.get("code") != METHOD_NOT_FOUND:
            self._lost(f"answered a ping at {self.url} with error {err.get('code')}: {err.get('message')}")
            return False
        log.debug("%s: a response stream broke but %s still answers", self.name, self.url)
        return True

    # --- HTTP observations (called by _WatchedTransport / _WatchedStream) ----------------------------

    def _watching(self) -> bool:
        return not (self._finished or self._closing or self._reason is not None)

    def _request_failed(self, request: httpx2.Request, exc: httpx2.TransportError) -> None:
        if not self._watching():
            return
        if _is_connect_failure(exc) or request.method != "GET":
            self._lost(self._connection_reason(exc))
        else:
            self._stream_broke(request, exc)

    async def _response(self, request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
        self._responses += 1
        if not self._watching():
            return response
        if response.status_code < 400:
            if request.method == "GET" and "text/event-stream" in response.headers.get("content-type", ""):
                assert isinstance(response.stream, httpx2.AsyncByteStream)
                response.stream = _WatchedStream(response.stream, self, request)
            return response
        # Error statuses: read the (small) body to judge it, and hand the SDK an equivalent response.
        try:
            body = await response.aread()
        except httpx2.TransportError as exc:
            self._request_failed(request, exc)
            raise
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        self._judge_error(request, response, body)
        return httpx2.Response(
            response.status_code,
            headers=headers,
            content=body,
            request=request,
            extensions=response.extensions,
        )

    def _judge_error(self, request: httpx2.Request, response: httpx2.Response, body: bytes) -> None:
        raise NotImplementedError

    def _status(self, response: httpx2.Response) -> str:
        return f"HTTP {response.status_code} {response.reason_phrase}".rstrip()


class HttpTransport(_RemoteWire):
    """A streamable HTTP upstream (``"type": "http"``, or just ``"url"``)."""

    kind = "HTTP"

    def _client(self) -> httpx2.AsyncClient:
        return _watched_client(
            self, self.headers, httpx2.Timeout(WRITE_TIMEOUT, connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)
        )

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[tuple[Any, Any]]:
        async with (
            self._client() as http,
            streamable_http_client(
                self.url, http_client=http, max_sse_event_size=MAX_SSE_EVENT_BYTES
            ) as streams,
        ):
            yield streams

    def _stream_broke(self, request: httpx2.Request, exc: Exception) -> None:
        if not self._watching():
            return
        if self.protocol_version is None and request.method != "GET":
            self._lost(self._connection_reason(exc))
        else:
            log.debug("%s: a %s response stream from %s broke: %s", self.name, request.method, self.url, exc)
            self._probe_wanted.set()

    def _stream_ended(self, request: httpx2.Request) -> None:
        # The standalone GET stream ended: a server may do that on purpose, or it went away. Ask it.
        if request.method == "GET" and self._watching() and self.protocol_version is not None:
            self._probe_wanted.set()

    def _transport_error_on_stream(self, exc: Exception) -> None:
        if self.protocol_version is None:
            self._lost(self._connection_reason(exc))
        else:
            self._probe_wanted.set()

    def _judge_error(self, request: httpx2.Request, response: httpx2.Response, body: bytes) -> None:
        status = response.status_code
        had_session = SESSION_HEADER in request.headers
        rpc_message = (
            _jsonrpc_error_message(body) if "json" in response.headers.get("content-type", "") else None
        )
        session_gone = had_session and (
            status == 404 or (status == 400 and rpc_message is not None and "session" in rpc_message.lower())
        )
        if request.method == "GET":
            # The GET stream is optional (405) and some servers answer it oddly: a POST settles it.
            if session_gone or status in (401, 403):
                self._probe_wanted.set()
            return
        if session_gone:
            said = f" {rpc_message!r}" if rpc_message else ""
            self._lost(self._session_gone(f"{self._status(response)}{said}"))
        elif status in (401, 403):
            self._lost(
                f"answered {self._status(response)} at {self.url}{_snippet(body)} "
                "(check the credentials in its 'headers')"
            )
        elif self.protocol_version is None and request.method == "POST" and rpc_message is None:
            hint = " (check the url)" if status in (404, 405) else ""
            self._lost(f"answered {self._status(response)} at {self.url}{_snippet(body)}{hint}")


class SseTransport(_RemoteWire):
    """A legacy HTTP+SSE upstream (``"type": "sse"``): a GET event stream plus POSTs to its endpoint."""

    kind = "SSE"

    def _client(
        self,
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        return _watched_client(self, headers, timeout, auth)

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[tuple[Any, Any]]:
        # sse_client builds its own client through the factory; the SDK leaves it unannotated.
        opener = cast(Callable[..., contextlib.AbstractAsyncContextManager[tuple[Any, Any]]], sse_client)
        async with opener(
            self.url,
            headers=self.headers,
            timeout=CONNECT_TIMEOUT,
            sse_read_timeout=READ_TIMEOUT,
            httpx_client_factory=self._client,
        ) as streams:
            yield streams

    def _eof_reason(self) -> str:
        return f"closed its SSE stream ({self.url})"

    def _judge_error(self, request: httpx2.Request, response: httpx2.Response, body: bytes) -> None:
        # The SDK gives up on the whole connection after any failed POST, and cannot start after a failed GET.
        what = "the SSE stream" if request.method == "GET" else "a message POST"
        hint = " (check the credentials in its 'headers')" if response.status_code in (401, 403) else ""
        self._lost(f"answered {self._status(response)} to {what} at {request.url}{_snippet(body)}{hint}")


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """httpx2's default (certifi, SSL_CERT_FILE/DIR) built once: building it blocks the loop for ~0.1 s."""
    return httpx2.create_ssl_context()


def _watched_client(
    wire: _RemoteWire,
    headers: dict[str, str] | None,
    timeout: httpx2.Timeout | None,
    auth: httpx2.Auth | None = None,
) -> httpx2.AsyncClient:
    """An httpx2 client like the SDK's ``create_mcp_http_client``, every transport watched by ``wire``."""
    limits = httpx2.Limits(
        max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_EXPIRY
    )
    inner = httpx2.AsyncHTTPTransport(verify=_default_ssl_context(), limits=limits)
    client = httpx2.AsyncClient(
        headers=headers,
        timeout=timeout or httpx2.Timeout(WRITE_TIMEOUT, connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
        auth=auth,
        transport=_WatchedTransport(inner, wire),
    )
    # Proxies from the environment (HTTP_PROXY, ...) are mounted transports that bypass ``transport``.
    mounts = getattr(client, "_mounts", None)
    if isinstance(mounts, dict):
        for pattern, mounted in list(mounts.items()):
            if isinstance(mounted, httpx2.AsyncBaseTransport):
                mounts[pattern] = _WatchedTransport(mounted, wire)
    return client
