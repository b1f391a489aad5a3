"""``patchbay agent``: lend this machine's MCP servers to a hub it can reach, but that cannot reach it.

The agent is the same hub: a ``Hub`` supervising the servers of its own config, plus the same ``/mcp``
server (``McpEndpoint``), run over an outbound WebSocket instead of HTTP. Over that socket the agent is
the MCP server and the hub the client. When the agent's catalog changes, the endpoint's fan-out tells
the hub (``notifications/tools/list_changed``) and the hub re-lists. It reconnects forever, with
exponential backoff and jitter, and says clearly why it was refused.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp.types as types
from mcp.shared.message import SessionMessage
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.protocol import State

from patchbay import replies
from patchbay.errors import PatchbayError, UpstreamError
from patchbay.hub import Hub
from patchbay.jsonrpc import INTERNAL_ERROR, settle
from patchbay.server.mcp import McpEndpoint
from patchbay.transports.deflate import ClientDeflate
from patchbay.transports.websocket import CLOSE_REPLACED

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 10.0  # a connection that lasted this long resets the backoff
# Answers are written in batches, without waiting, while the socket takes them; past this many bytes
# waiting in the transport (the hub reads slower than we answer) each answer waits for room, as a send does.
OUTBOX_HIGH_WATER = 256 * 1024


class AgentConnection(ClientConnection):
    """The agent's socket: the frames ready at one time go out in one write (one syscall, one TCP segment
    where they fit) instead of one write each. Under load, that is most of the cost of a frame."""

    def send_data(self) -> None:
        pending: list[bytes] = []
        for data in self.protocol.data_to_send():
            if data:
                pending.append(data)
                continue
            if pending:
                self.transport.write(b"".join(pending))
                pending = []
            _half_close(self)  # SEND_EOF: half-close (or close) as the library does
        if pending:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))


def _half_close(conn: ClientConnection) -> None:
    """What ``Connection.send_data`` does with ``SEND_EOF``: half-close the TCP connection when possible."""
    if conn.transport.can_write_eof():
        try:
            conn.transport.write_eof()
        except Exception:  # uvloop may raise RuntimeError; the connection is closing anyway
            log.debug("could not half-close the connection to the hub", exc_info=True)
    else:
        conn.transport.close()


class AgentRefused(Exception):
    """The hub answered, but will not accept this agent (bad or revoked token): retrying may not help."""


async def serve_over_websocket(endpoint: McpEndpoint, ws: ClientConnection) -> None:
    """Run the agent's MCP server over one connected socket until it closes.

    Plain ``tools/call`` requests (no progress token, after the handshake) are answered directly through
    the hub, as ``/mcp``'s fast path does: the SDK server's per-request machinery costs ~1 ms of CPU a
    call here. Everything else (handshake, lists, progress, pings) goes to the SDK server.

    The answers of plain calls are encoded once (UTF-8 JSON, sent as text frames). The first answer of a
    turn of the event loop leaves at once; while other calls are in flight, the answers ready in the same
    turn after it (64 answers read from the server in one chunk) are written together when the turn ends.
    """
    read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](64)
    write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](64)
    calls: dict[Any, asyncio.Task[None]] = {}
    initialized = False
    hub_client = _HubAsClient(ws)
    outbox: list[bytes] = []
    coalescing = False
    loop = asyncio.get_running_loop()

    def write(batch: list[bytes]) -> None:
        if ws.protocol.state is not State.OPEN:  # closing: no answer can go out any more
            log.debug("the hub went away before %d answers", len(batch))
            return
        try:
            for data in batch:
                ws.protocol.send_text(data)
            ws.send_data()
        except Exception as exc:  # the socket broke under us: the reader sees the close and reports it
            log.debug("could not send %d answers to the hub: %s", len(batch), exc)

    def flush() -> None:
        nonlocal coalescing
        coalescing = False
        if outbox:
            batch = outbox.copy()
            outbox.clear()
            write(batch)

    async def reply(data: bytes) -> None:
        nonlocal coalescing
        if ws.transport.get_write_buffer_size() > OUTBOX_HIGH_WATER:  # the hub is not keeping up: wait
            await ws.send(data, text=True)  # the library's send, with its flow control
        elif coalescing:  # an answer already left in this turn: the rest go together at its end
            outbox.append(data)
        else:
            write([data])
            if calls:  # other calls in flight: their answers may be ready in this same turn
                coalescing = True
                loop.call_soon(flush)

    async def answer(rid: str | int, name: str, arguments: dict[str, Any], meta: Any) -> None:
        outcome: types.CallToolResult | Exception
        call = endpoint.hub.call_tool(name, arguments, client=hub_client)
        if endpoint.hub.tracing is not None:  # OpenTelemetry: in a SERVER span, parent from the hub's _meta
            call = endpoint.hub.tracing.served(
                call, "tools/call", {"name": name}, meta=meta, headers=None, protocol="agent", request_id=rid
            )
        try:
            outcome = await call
        except Exception as exc:  # answered as /mcp answers it (replies.py), never left unanswered
            if not isinstance(exc, PatchbayError):
                log.exception("tools/call %r failed", name)
            outcome = exc
        finally:
            calls.pop(rid, None)
        try:
            await reply(replies.encode(replies.call_reply(rid, outcome)))
        except ConnectionClosed:
            log.debug("the hub went away before the answer to %r", rid)

    async def from_hub() -> None:
        nonlocal initialized
        async with read_send:
            async for frame in ws:
                text = frame if isinstance(frame, str) else frame.decode()
                try:
                    payload = json.loads(text)
                except ValueError as exc:
                    await read_send.send(exc)
                    continue
                if type(payload) is dict and hub_client.settle(payload):
                    continue  # the hub's answer to what a server asked during a fast-path call
                if type(payload) is dict:
                    method = payload.get("method")
                    params = payload.get("params")
                    rid = payload.get("id")
                    if (
                        method == "tools/call"
                        and initialized
                        and replies.is_request_id(rid)
                        and _plain_call(params)
                    ):
                        assert isinstance(params, dict)
                        name, arguments = params["name"], params.get("arguments") or {}
                        task = asyncio.create_task(answer(rid, name, arguments, params.get("_meta")))
                        task.add_done_callback(_report_failure)
                        calls[rid] = task
                        continue
                    cancelled = params.get("requestId") if type(params) is dict else None
                    if method == "notifications/cancelled" and replies.is_request_id(cancelled):
                        pending = calls.pop(cancelled, None)
                        if pending is not None:  # one of ours: a cancelled request gets no answer
                            pending.cancel()
                            continue
                    if method == "notifications/initialized":
                        initialized = True
                try:
                    message = types.jsonrpc_message_adapter.validate_python(payload, by_name=False)
                except ValidationError as exc:
                    await read_send.send(exc)
                    continue
                await read_send.send(SessionMessage(message))

    async def to_hub() -> None:
        async with write_recv:
            async for item in write_recv:
                await ws.send(item.message.model_dump_json(by_alias=True, exclude_unset=True))

    server = endpoint.server
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(from_hub)
            tg.start_soon(to_hub)
            await server.run(read_recv, write_send, server.create_initialization_options())
            tg.cancel_scope.cancel()
    finally:
        pending = list(calls.values())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)  # nothing outlives the connection


class _HubAsClient:
    """The hub as the client of the calls answered on the fast path: what one of this agent's servers asks
    during such a call (sampling, elicitation, roots) is asked of the hub, which asks its own caller, as
    the SDK path does through its session. Its request ids are strings of its own, so an answer is told
    apart from the answers to the SDK server's (integer) requests."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Any]] = {}

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        rid = f"patchbay-agent-{next(self._ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        try:
            await self._ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
            return await future
        except ConnectionClosed:
            raise UpstreamError(
                "hub", INTERNAL_ERROR, f"{method}: the hub went away before it answered"
            ) from None
        finally:
            self._waiting.pop(rid, None)

    def settle(self, payload: dict[str, Any]) -> bool:
        """Take the hub's answer to one of these requests (True), or leave the message alone (False)."""
        rid = payload.get("id")
        if "method" in payload or not isinstance(rid, str):
            return False
        future = self._waiting.get(rid)
        if future is None:
            return False
        settle(future, "hub", payload)
        return True


def _report_failure(task: asyncio.Task[None]) -> None:
    """An answer that could not be sent (the socket closed under it) is logged, never lost."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("could not answer a call from the hub: %s", task.exception())


def _plain_call(params: Any) -> bool:
    """A tools/call the fast path can answer: a name, object arguments, no progress token."""
    if type(params) is not dict or not isinstance(params.get("name"), str):
        return False
    meta = params.get("_meta")
    arguments = params.get("arguments")
    return (meta is None or (type(meta) is dict and "progressToken" not in meta)) and (
        arguments is None or type(arguments) is dict
    )


class Agent:
    def __init__(
        self,
        hub: Hub,
        url: str,
        token: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        on_state: Callable[[str, str], None] | None = None,
    ) -> None:
        self.hub = hub
        self.url = url
        self.token = token
        self.ssl_context = ssl_context
        self.on_state = on_state or (lambda state, detail: None)
        self.connected = asyncio.Event()
        self.attempts = 0

    async def run(self) -> None:
        """Connect, serve, and on any loss reconnect with backoff; runs until cancelled."""
        endpoint = McpEndpoint(self.hub, dns_rebinding_protection=False)
        endpoint.start()
        failures = 0
        try:
            while True:
                self.attempts += 1
                connected_at: float | None = None
                ws: ClientConnection | None = None
                try:
                    async with connect(
                        self.url,
                        create_connection=AgentConnection,
                        extensions=[ClientDeflate()],  # short messages go uncompressed
                        additional_headers={"Authorization": f"Bearer {self.token}"},
                        max_size=None,
                        ping_interval=10,
                        ping_timeout=20,
                        open_timeout=10,
                        ssl=self.ssl_context if self.url.startswith("wss://") else None,
                    ) as ws:
                        connected_at = time.monotonic()
                        self.connected.set()
                        self.on_state("connected", self.url)
                        await serve_over_websocket(endpoint, ws)
                    reason = "the hub closed the connection"
                except InvalidStatus as exc:
                    reason = await self._refusal(exc.response.status_code)
                except (ConnectionClosed, BaseExceptionGroup) as exc:
                    reason = f"the connection to the hub was lost ({_describe(exc)})"
                except InvalidURI as exc:
                    raise AgentRefused(f"invalid hub URL {self.url!r}: {exc}") from None
                except (OSError, TimeoutError) as exc:
                    reason = f"the hub at {self.url} is unreachable ({_describe(exc)})"
                self.connected.clear()
                if ws is not None and ws.close_code == CLOSE_REPLACED:
                    # Another agent with this token took over: do not fight it every half second.
                    reason = "another agent with the same token connected and replaced this one"
                    failures = max(failures, 6)
                elif ws is not None and ws.close_code is not None and ws.close_code >= 1002:
                    why = ws.close_reason or {1012: "restarting"}.get(ws.close_code, "no reason given")
                    reason = f"the connection to the hub was lost (closed by the hub: {ws.close_code} {why})"
                if connected_at is not None and time.monotonic() - connected_at >= STABLE_AFTER:
                    failures = 0  # it was up for a while: this is a new problem, start the backoff over
                failures += 1
                delay = min(BACKOFF_INITIAL * 2 ** (failures - 1), BACKOFF_MAX) * random.uniform(0.5, 1.0)
                log.warning("%s; retrying in %.1f s", reason, delay)
                self.on_state("disconnected", f"{reason}; retrying in {delay:.1f} s")
                await asyncio.sleep(delay)
        finally:
            await endpoint.stop()

    async def _refusal(self, status: int) -> str:
        """Why the upgrade was refused. 403 is also what a server says for a path with no WebSocket route,
        so ask the URL over plain HTTP: the hub's /agents answers 426 there."""
        if status == 401:
            return f"the hub refused this agent's token (HTTP {status}): check --token"
        if status == 403:
            probe_url = "http" + self.url[2:]  # ws://… → http://…, wss://… → https://…
            try:
                async with httpx2.AsyncClient(timeout=5, verify=self.ssl_context or True) as http:
                    probe = await http.get(probe_url)
                if probe.status_code == 426:
                    return f"the hub refused this agent's token (HTTP {status}): check --token"
                return f"{self.url} is not a patchbay agent endpoint (HTTP {status}): check --hub (…/agents)"
            except httpx2.HTTPError:
                return f"the hub refused the connection (HTTP {status}): check --token and --hub"
        return f"the hub answered HTTP {status} instead of accepting a WebSocket: check --hub"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return str(exc) or type(exc).__name__


async def run_agent(
    config: Path, url: str, token: str, on_state: Callable[[str, str], None] | None = None
) -> None:
    async with Hub.from_file(config) as hub:
        await Agent(hub, url, token, ssl_context=ssl.create_default_context(), on_state=on_state).run()
