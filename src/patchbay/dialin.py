"""Dial-in agents, the hub's end: who may connect, and the live connection of each.

An agent's identity comes from its token, never from anything the agent says. Over the socket the hub is
the MCP client: the same ``Connection`` (handshake, paginated listing, list_changed, correlation,
timeouts, cancellation, progress) as for a local server, over a ``WebSocketWire``. Agents rank after
every local server in the catalog, so an agent can never shadow a local tool.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel
from starlette.websockets import WebSocket

from patchbay.catalog import Listing
from patchbay.config import AgentSpec, expand, placeholder_env
from patchbay.errors import ConfigError, ServerUnavailableError
from patchbay.sources import Source, SourceHooks, SourceKind
from patchbay.transports.websocket import CLOSE_POLICY, CLOSE_REPLACED, WebSocketWire
from patchbay.upstream import Connection

log = logging.getLogger(__name__)

AGENT_START_TIMEOUT = 30.0


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AgentStatus(BaseModel):
    name: str
    state: str  # "connected" | "disconnected"
    address: str | None = None
    connected_since: float | None = None
    protocol_version: str | None = None
    server_info: dict[str, Any] | None = None
    tool_count: int = 0
    calls_in_flight: int = 0
    connections: int = 0
    last_error: str | None = None
    conflicts: list[str] = []


class AgentStateHook(Protocol):
    def __call__(self, agent: DialInAgent, state: str, address: str | None, error: str | None) -> None: ...


class DialInAgent(Source):
    """One configured agent. ``connection`` is set while it is connected and initialized."""

    kind = SourceKind.AGENT

    def __init__(
        self,
        name: str,
        spec: AgentSpec,
        hooks: SourceHooks,
        base_dir: Path | None = None,
        *,
        on_state: AgentStateHook | None = None,
    ) -> None:
        super().__init__(name, hooks)
        self.spec = spec
        self.digest = self._digest(spec, base_dir)
        self.state = "disconnected"
        self.address: str | None = None
        self.connected_since: float | None = None
        self.connections = 0
        self._on_state = on_state
        self._wire: WebSocketWire | None = None
        self._lock = asyncio.Lock()

    def unavailable(self) -> ServerUnavailableError:
        why = f" (last: {self.last_error})" if self.last_error else ""
        return ServerUnavailableError(self.name, f"agent {self.name!r} is not connected{why}")

    def _report(self, state: str, address: str | None, error: str | None) -> None:
        self._notify_changed()
        if self._on_state is not None:
            self._on_state(self, state, address, error)

    def _digest(self, spec: AgentSpec, base_dir: Path | None) -> bytes:
        if spec.token_sha256:
            return bytes.fromhex(spec.token_sha256)
        assert spec.token is not None
        try:
            token = expand(spec.token, placeholder_env(base_dir), server=self.name, field="token")
        except ConfigError as exc:  # expand() speaks of servers; this is an agent
            message = str(exc).replace(f"server {self.name!r}", f"agent {self.name!r}", 1)
            raise ConfigError(message, server=self.name, field="token") from None
        if not token:
            raise ConfigError(f"agent {self.name!r}: token: is empty", server=self.name, field="token")
        return token_digest(token)

    @property
    def call_timeout(self) -> float | None:
        return self.spec.timeout

    @property
    def max_in_flight(self) -> int | None:
        return self.spec.max_in_flight

    def matches(self, digest: bytes) -> bool:
        return hmac.compare_digest(self.digest, digest)

    async def serve(self, ws: WebSocket, make_wire: Callable[..., WebSocketWire]) -> None:
        """Hold one accepted connection for its lifetime. A newer connection replaces this one."""
        async with self._lock:  # one handover at a time
            if self._wire is not None:
                await self._wire.close(CLOSE_REPLACED, "replaced by a new connection of the same agent")
            wires: list[WebSocketWire] = []

            conns: list[Connection] = []

            def expects(rid: Any) -> bool:
                return bool(conns) and conns[0].peer.expects(rid)

            def factory(
                on_message: Callable[[Any], None], on_close: Callable[[str, int | None], None]
            ) -> Any:
                wire = make_wire(ws, self.name, on_message, on_close, expects=expects)
                wires.append(wire)
                return wire

            def listed(listing: Listing) -> None:
                if conns and self.connection is conns[0]:  # only the live connection's re-listings
                    self.hooks.listing_changed(self, listing)

            conn = Connection(
                self.name,
                factory,
                on_listing=listed,
                on_notification=lambda m, p: self.hooks.notification(self, m, p),
                on_request=lambda m, p: self.hooks.upstream_request(self, m, p),
                on_lost=self._withdraw,
            )
            conns.append(conn)
            self._wire = wires[0]
            client = ws.client
            address = f"{client.host}:{client.port}" if client else None
        try:
            await conn.open(AGENT_START_TIMEOUT)
        except Exception as exc:  # a bad agent must never take the endpoint down with it
            self.last_error = f"failed to initialize: {exc}"
            log.warning("agent %r %s", self.name, self.last_error)
            await conn.close()
            return
        self.connection = conn
        self.address = address
        self.connected_since = time.time()
        self.connections += 1
        self.last_error = None
        self.state = "connected"
        self.hooks.listing_changed(self, conn.listing)
        self._report("connected", address, None)
        log.info("agent %r connected from %s with %d tools", self.name, address, len(conn.listing.tools))
        await asyncio.shield(conn.closed)  # cancelling us must not cancel it
        await conn.close()

    def _withdraw(self, conn: Any, reason: str) -> None:
        """Synchronously, before waiting callers are failed (as for servers)."""
        if self.connection is not conn:
            return
        self.connection = None
        self._wire = None
        self.state = "disconnected"
        self.connected_since = None
        self.last_error = reason
        self.hooks.listing_changed(self, None)
        self._report("disconnected", self.address, reason)
        log.warning("agent %r %s", self.name, reason)

    def adopt(self, conn: Any, address: str, since: float | None) -> None:
        """Cluster mode: take the agent's connection to another replica (calls are forwarded there)."""
        self.connection = conn
        self.address = address
        self.connected_since = since
        self.last_error = None
        self.state = "connected"
        self.hooks.listing_changed(self, conn.listing)
        self._report("connected", address, None)

    def release(self, conn: Any, reason: str) -> None:
        """Cluster mode: an adopted connection is gone (the agent left, or its replica did)."""
        self._withdraw(conn, reason)

    async def disconnect(self, reason: str, *, replaced: bool = False) -> None:
        """Close the live connection; ``replaced``: a newer one took over (the agent then backs off)."""
        wire = self._wire
        if wire is not None:
            await wire.close(CLOSE_REPLACED if replaced else CLOSE_POLICY, reason)

    def status(self, conflicts: list[str] | None = None) -> AgentStatus:
        conn = self.connection
        return AgentStatus(
            name=self.name,
            state=self.state,
            address=self.address if conn else None,
            connected_since=self.connected_since,
            protocol_version=conn.protocol_version if conn else None,
            server_info=conn.server_info.model_dump(exclude_none=True) if conn and conn.server_info else None,
            tool_count=len(conn.listing.tools) if conn else 0,
            calls_in_flight=conn.peer.in_flight if conn else 0,
            connections=self.connections,
            last_error=self.last_error,
            conflicts=conflicts or [],
        )
