"""What streamable HTTP and legacy SSE share: the owning task, the bounded outbox, the judging and the probe.

Each wire owns one asyncio task that enters the SDK context, pumps inbound messages to ``on_message`` and
forwards queued outbound ones, and leaves the context again (contexts must be exited in the task that entered
them). The SDK's own failure reporting is uneven, so the wire also watches the HTTP traffic (``watch``):

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
import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import httpx2
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp.types import JSONRPCRequest, jsonrpc_message_adapter
from pydantic import ValidationError

from patchbay.config import ResolvedSpec, redact_url
from patchbay.errors import ServerExitedError, StartError
from patchbay.telemetry import trace_headers
from patchbay.transports.base import MessageEncodeError, OutboxFullError, StderrTail
from patchbay.transports.http import limits
from patchbay.transports.http.errors import (
    check_url,
    describe_http_error,
    first_failure,
    is_connect_failure,
)
from patchbay.transports.http.proxy import choose_proxy
from patchbay.transports.http.watch import WatchedStream

if TYPE_CHECKING:
    from patchbay.oauth import OAuthClient

log = logging.getLogger("patchbay.transports.http")

CONNECTION_CLOSED = -32000  # the code of the SDK's synthetic "SSE stream ..." errors
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
_SDK_SESSION_GONE = ("session not found", "session terminated")


class WireState(enum.Enum):
    """Where a remote wire is in its life; it only moves on: NEW, OPENING, OPEN, then LOST or CLOSING, CLOSED.

    LOST: the connection broke and the owner was told; CLOSING: ``close()`` runs (the owner is told at its
    end, unless it already was).
    """

    NEW = "new"
    OPENING = "opening"
    OPEN = "open"
    LOST = "lost"
    CLOSING = "closing"
    CLOSED = "closed"


_LIVE = (WireState.OPENING, WireState.OPEN)
_TOLD = (WireState.LOST, WireState.CLOSED)


class RemoteWire:
    """A ``Wire`` to a remote MCP server; subclasses open the SDK transport and judge error statuses."""

    kind = "HTTP"

    def __init__(
        self,
        spec: ResolvedSpec,
        on_message: Callable[[Any], None],
        on_close: Callable[[str, int | None], None],
        *,
        probe_timeout: float | None = None,
        open_timeout: float | None = None,
        close_grace: float | None = None,
        outbox_limit: int | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.url = check_url(spec.name, spec.url)
        self.headers = dict(spec.headers)
        self.proxy = choose_proxy(spec.name, self.url, spec.proxy)
        self.oauth: OAuthClient | None = None  # set by the supervisor for a server that signs in with OAuth
        self._on_message = on_message
        self._on_close = on_close
        self._probe_timeout = limits.PROBE_TIMEOUT if probe_timeout is None else probe_timeout
        self._open_timeout = limits.OPEN_TIMEOUT if open_timeout is None else open_timeout
        self._close_grace = limits.CLOSE_GRACE if close_grace is None else close_grace
        self._outbox_limit = limits.OUTBOX_LIMIT if outbox_limit is None else outbox_limit
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[SessionMessage] = asyncio.Queue(self._outbox_limit)
        self._stop = asyncio.Event()
        self._probe_wanted = asyncio.Event()
        self._probes: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._probe_seq = 0
        self._held: list[dict[str, Any]] = []
        self._init_ids: set[int | str] = set()
        self.protocol_version: str | None = None
        self.state = WireState.NEW
        self._reason: str | None = None  # why the connection is gone; the first cause wins
        self._responses = 0  # HTTP responses seen, to tell "could not connect" from "lost the connection"

    @property
    def pid(self) -> int | None:
        return None

    @property
    def stderr(self) -> StderrTail | None:
        return None

    @property
    def where(self) -> str:
        """The URL, and the proxy if there is one: what messages about the connection name."""
        return f"{self.url} (through proxy {redact_url(self.proxy)})" if self.proxy else self.url

    # --- to be provided by each transport ------------------------------------------------------------

    def _open(self) -> contextlib.AbstractAsyncContextManager[tuple[Any, Any]]:
        raise NotImplementedError

    def stream_broke(self, request: httpx2.Request, exc: Exception) -> None:
        """A response body failed mid-way."""

    def stream_ended(self, request: httpx2.Request) -> None:
        """A response body ended cleanly."""

    def _judge_error(self, request: httpx2.Request, response: httpx2.Response, body: bytes) -> None:
        raise NotImplementedError

    def _eof_reason(self) -> str:
        return f"lost its {self.kind} connection to {self.where}"

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the connection task and wait (bounded) until the SDK's streams are open."""
        if self.state is not WireState.NEW:
            raise RuntimeError(f"{self.kind} transport for {self.name!r} was already started")
        self.state = WireState.OPENING
        self._task = asyncio.create_task(self._run(), name=f"patchbay-{self.kind.lower()}-{self.name}")
        await asyncio.wait(
            {self._opened, self._task}, timeout=self._open_timeout, return_when="FIRST_COMPLETED"
        )
        if self._opened.done():
            return
        if self._task.done():
            raise StartError(f"{self._reason or self._eof_reason()} during start-up")
        raise StartError(
            f"did not open its {self.kind} connection to {self.where} within {self._open_timeout:g} s"
        )

    async def close(self) -> None:
        """Leave the SDK context (ending the HTTP session), bounded; then cancel and await the task."""
        if self.state in _LIVE or self.state is WireState.NEW:
            self.state = WireState.CLOSING
        self._stop.set()
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=self._close_grace)
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            if not task.done():
                log.warning("%s: the %s connection task did not stop", self.name, self.kind)
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            log.error("%s: the %s connection task failed", self.name, self.kind, exc_info=task.exception())
        if self.state is WireState.CLOSING:
            self._tell("was stopped")
        self.state = WireState.CLOSED

    async def _run(self) -> None:
        reason = self._eof_reason()
        try:
            async with self._open() as (read, write):
                if not self._opened.done():
                    self._opened.set_result(None)
                if self.state is WireState.OPENING:
                    self.state = WireState.OPEN
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
            failure = first_failure(exc)
            log.debug("%s: %s connection ended with %r", self.name, self.kind, failure, exc_info=exc)
            reason = self._explain(failure)
        finally:
            self._lost(reason)  # a no-op if the cause was already reported

    def _explain(self, exc: BaseException) -> str:
        if isinstance(exc, httpx2.TransportError):
            return self._connection_reason(exc)
        if isinstance(exc, httpx2.HTTPStatusError):
            return f"answered HTTP {exc.response.status_code} at {self.where}"
        text = f": {exc}" if str(exc) else ""
        return f"{self.kind} connection to {self.where} failed: {type(exc).__name__}{text}"

    def _connection_reason(self, exc: BaseException) -> str:
        if self._responses == 0 and is_connect_failure(exc):
            return f"could not connect to {self.where}: {describe_http_error(exc)}"
        return f"lost its {self.kind} connection to {self.where}: {describe_http_error(exc)}"

    def _lost(self, reason: str) -> None:
        """The connection can no longer be used: remember why, wind the task down, tell the owner."""
        if self._reason is None:
            self._reason = reason
        self._stop.set()
        if self.state in _LIVE:
            self.state = WireState.LOST
            self._tell(self._reason)

    def _tell(self, reason: str) -> None:
        self._held.clear()
        try:
            self._on_close(reason, None)
        except Exception:
            log.exception("%s: close handler failed", self.name)

    # --- outbound ------------------------------------------------------------------------------------

    def send(self, msg: dict[str, Any]) -> None:
        """Queue one message for the connection task; never blocks.

        A wire that is not open raises ``ServerExitedError`` with the reason; a full outbox (the server or
        the network is not keeping up) raises ``OutboxFullError`` at once rather than queueing without
        bound: the caller learns now, instead of at its timeout.
        """
        if self.state not in _LIVE:
            raise ServerExitedError(self.name, self._reason or self._not_open())
        try:
            message = jsonrpc_message_adapter.validate_python(msg)
        except ValidationError as exc:
            raise MessageEncodeError(self.name, str(exc).splitlines()[0]) from None
        self._enqueue(message, trace_headers(msg))  # the W3C headers of a traced call, if any
        if isinstance(message, JSONRPCRequest) and message.method == "initialize":
            self._init_ids.add(message.id)

    def _not_open(self) -> str:
        if self.state is WireState.NEW:
            return f"is not connected yet ({self.where})"
        return "was stopped"

    def _message(self, message: Any, headers: dict[str, str] | None = None) -> SessionMessage:
        metadata = None
        if self.protocol_version is not None:
            # What ClientSession does: every message after the handshake carries MCP-Protocol-Version.
            headers = {**(headers or {}), MCP_PROTOCOL_VERSION_HEADER: self.protocol_version}
        if headers:  # the SDK's streamable HTTP client sets these on the POST that carries the message
            metadata = ClientMessageMetadata(headers=headers)
        return SessionMessage(message, metadata=metadata)

    def _enqueue(self, message: Any, headers: dict[str, str] | None = None) -> None:
        try:
            self._outbox.put_nowait(self._message(message, headers))
        except asyncio.QueueFull:
            raise OutboxFullError(self.name, self._outbox_limit, self.where) from None

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
            if self.state in _TOLD:
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
                        self._lost(f"dropped the {self.kind} connection to {self.where} mid-answer ({text})")
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
        if self.state in _TOLD:
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
        ping = jsonrpc_message_adapter.validate_python({"jsonrpc": "2.0", "id": pid, "method": "ping"})
        try:
            with anyio.fail_after(self._probe_timeout):
                await self._outbox.put(self._message(ping))  # the probe may wait for room; callers may not
                reply = await fut
        except TimeoutError:
            self._lost(
                f"stopped answering at {self.where} (no answer to a ping within {self._probe_timeout:g} s "
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

    # --- HTTP observations (the ``watch.Watcher`` side) ------------------------------------------------

    @property
    def session_gone(self) -> bool:
        return self._reason is not None

    def _watching(self) -> bool:
        return self.state in _LIVE and self._reason is None

    def request_failed(self, request: httpx2.Request, exc: httpx2.TransportError) -> None:
        if not self._watching():
            return
        if is_connect_failure(exc) or request.method != "GET":
            self._lost(self._connection_reason(exc))
        else:
            self.stream_broke(request, exc)

    async def response_seen(self, request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
        self._responses += 1
        if not self._watching():
            return response
        if response.status_code < 400:
            if request.method == "GET" and "text/event-stream" in response.headers.get("content-type", ""):
                assert isinstance(response.stream, httpx2.AsyncByteStream)
                response.stream = WatchedStream(response.stream, self, request)
            return response
        # Error statuses: read the (small) body to judge it, and hand the SDK an equivalent response.
        try:
            body = await response.aread()
        except httpx2.TransportError as exc:
            self.request_failed(request, exc)
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
