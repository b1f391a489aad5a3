"""One supervisor per upstream: start, watch, restart with backoff, stop. The lifecycle, not the wire.

States: ``starting`` → ``ready``; on a crash or a failed start → ``backoff`` (waiting to retry, with the
reason in ``last_error``) → ``starting`` …; after ``maxRestarts`` consecutive failures, or an error no
retry can fix (a missing variable, a command not found) → ``failed``. ``disabled`` and ``stopped`` are
where an operator put it. A minute of being ready resets the failure count. ``needs_auth``: a remote
server asked for OAuth tokens patchbay does not have (or that stopped working); no retries, the reason
and what to do in ``last_error``, and a start as soon as a sign-in stores tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from patchbay.catalog import Listing
from patchbay.config import ServerSpec, ToolOverride, resolve
from patchbay.errors import ConfigError, PatchbayError, ServerUnavailableError, StartError
from patchbay.sources import Source, SourceHooks, SourceKind
from patchbay.transports.base import Wire
from patchbay.transports.stdio import StdioTransport
from patchbay.upstream import Connection

if TYPE_CHECKING:
    from patchbay.identity import Identity
    from patchbay.oauth import OAuthClient, OAuthManager
    from patchbay.oauth.per_user import PerUserConnections

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0


class ServerState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"
    FAILED = "failed"
    DISABLED = "disabled"
    STOPPED = "stopped"
    NEEDS_AUTH = "needs_auth"


class ServerStatus(BaseModel):
    """What an operator wants to know about one upstream."""

    name: str
    state: ServerState
    transport: str
    enabled: bool
    pid: int | None = None
    protocol_version: str | None = None
    server_info: dict[str, Any] | None = None
    capabilities: dict[str, Any] = Field(default_factory=dict)
    instructions: str | None = None
    tool_count: int = 0
    resource_count: int = 0
    prompt_count: int = 0
    restarts: int = 0
    last_error: str | None = None
    ready_since: float | None = None
    retry_at: float | None = None
    calls_in_flight: int = 0
    conflicts: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    stderr_tail: list[str] = Field(default_factory=list)


def make_wire(
    spec: ServerSpec, name: str, base_dir: Path | None, oauth: OAuthClient | None = None
) -> Callable[..., Wire]:
    resolved = resolve(name, spec, base_dir)
    if resolved.transport == "stdio":
        return lambda on_message, on_close: StdioTransport(resolved, on_message, on_close)
    if resolved.transport in ("http", "sse"):
        # Imported here: the HTTP client stack (httpx2, the SDK's client transports) only when it is used.
        from patchbay.transports.http import HttpTransport, SseTransport, check_url

        check_url(name, resolved.url)  # a bad URL is a config error (failed), not something to retry
        wire_class = HttpTransport if resolved.transport == "http" else SseTransport

        def remote(on_message: Callable[[Any], None], on_close: Callable[[str, int | None], None]) -> Wire:
            wire = wire_class(resolved, on_message, on_close)
            wire.oauth = oauth
            return wire

        return remote
    raise ConfigError(
        f"server {name!r}: type: {resolved.transport!r} upstreams are not supported yet",
        server=name,
        field="type",
    )


class _Route(Source):
    """Names where a per-user connection's upstream requests go (the hub routes them by name)."""

    kind = SourceKind.SERVER


class ServerSupervisor(Source):
    """The lifecycle of one configured server, local (stdio) or remote (HTTP, SSE)."""

    kind = SourceKind.SERVER

    def __init__(
        self,
        name: str,
        spec: ServerSpec,
        *,
        hooks: SourceHooks,
        base_dir: Path | None = None,
        oauth: Callable[[], OAuthManager] | None = None,
    ) -> None:
        super().__init__(name, hooks)
        self.spec = spec
        self.base_dir = base_dir
        self.oauth_manager = oauth
        self.oauth: OAuthClient | None = None  # the server's OAuth client, once it is known to be remote
        self.state = ServerState.STOPPED if spec.is_enabled else ServerState.DISABLED
        self.restarts = 0
        self.ready_since: float | None = None
        self.retry_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._last_wire: Wire | None = None
        self._stopping = False
        self._users: PerUserConnections | None = None  # credentials "perUser": a connection per caller

    # --- what the router needs ---------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self.spec.prefix if self.spec.prefix is not None else self.name

    @property
    def hidden_tools(self) -> tuple[str, ...]:
        return tuple(self.spec.disabled_tools)

    @property
    def tool_overrides(self) -> Mapping[str, ToolOverride]:
        return self.spec.tools

    @property
    def call_timeout(self) -> float | None:
        return self.spec.timeout

    @property
    def coming(self) -> bool:
        return self.state in (ServerState.STARTING, ServerState.BACKOFF) and not self._stopping

    @property
    def per_user(self) -> bool:
        return self.spec.credentials == "perUser"

    async def connection_for(self, caller: Identity) -> tuple[Connection, str]:
        """The caller's own connection (``LOCAL``, the process owner, uses the shared one). Raises
        ``SignInRequired`` (with the URL to open) when the caller has not signed in upstream."""
        if caller.kind == "local":
            if self.connection is None:
                raise self.unavailable()
            return self.connection, self.name
        from patchbay.oauth.per_user import user_key

        conn = await self._per_user_pool().acquire(caller)
        return conn, f"{self.name}~{user_key(caller)}"

    def _per_user_pool(self) -> PerUserConnections:
        if self._users is None:
            from patchbay.oauth.per_user import PerUserConnections

            if self.oauth_client() is None or self.oauth_manager is None:
                from patchbay.errors import NotOAuthServerError

                raise NotOAuthServerError(self.name)
            manager = self.oauth_manager()

            async def sign_in_url(identity: Identity) -> str:
                return await manager.sign_in_user(self.name, identity)

            self._users = PerUserConnections(
                self.name,
                client_for=lambda identity: manager.user_client(self.name, identity),
                connect=self._connect_user,
                sign_in_url=sign_in_url,
                start_timeout=self.spec.start_timeout,
            )
        return self._users

    def user_client(self, caller: Identity) -> OAuthClient:
        """The caller's own OAuth client for this per-user server."""
        self._per_user_pool()
        assert self.oauth_manager is not None
        return self.oauth_manager().user_client(self.name, caller)

    async def drop_user(self, caller: Identity) -> None:
        if self._users is not None:
            await self._users.drop(caller)

    def _connect_user(self, client: OAuthClient, key: str) -> Connection:
        """A connection carrying only ``client``'s tokens. Its listings and notifications are not the
        catalog's (the shared connection's are), and its upstream requests (elicitation, sampling) go to
        the downstream client of this user's call only."""
        route = _Route(f"{self.name}~{key}", self.hooks)
        pool = self._users
        assert pool is not None
        return Connection(
            self.name,
            make_wire(self.spec, self.name, self.base_dir, client),
            on_lost=lambda conn, reason: pool.lost(conn),
            on_request=lambda m, p: self.hooks.upstream_request(route, m, p),
        )

    def unavailable(self) -> ServerUnavailableError:
        why = f": {self.last_error}" if self.last_error and self.state != ServerState.DISABLED else ""
        return ServerUnavailableError(
            self.name, f"server {self.name!r} is not running (state: {self.state}){why}"
        )

    # --- control -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Begin supervising (idempotent). ``wait_settled()`` returns after the first attempt."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._settled = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"patchbay-supervisor-{self.name}")

    async def wait_settled(self) -> None:
        await self._settled.wait()

    async def stop(self, *, disabled: bool = False) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        users, self._users = self._users, None
        if users is not None:
            await users.close()
        self._settled.set()
        self.retry_at = None
        self._set_state(ServerState.DISABLED if disabled else ServerState.STOPPED)

    async def restart(self) -> None:
        await self.stop()
        self.restarts += 1
        self.start()
        await self.wait_settled()

    # --- the loop ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._supervise()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug or an unforeseen error: end in failed, never hang a caller
            log.exception("server %r: supervisor failed", self.name)
            self._set_state(ServerState.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._settled.set()

    async def _supervise(self) -> None:
        failures = 0
        conn: Connection | None = None
        try:
            while True:
                self._set_state(ServerState.STARTING)
                error: str
                try:
                    conn = self._connect()
                    self._last_wire = conn.wire
                    await conn.open(self.spec.start_timeout)
                except ConfigError as exc:
                    await self._discard(conn)
                    conn = None
                    self._set_state(ServerState.FAILED, str(exc))
                    return
                except (StartError, PatchbayError, OSError) as exc:
                    error = str(exc)
                    await self._discard(conn)
                    conn = None
                else:
                    self.connection = conn
                    self.last_error = None
                    self.ready_since = time.time()
                    ready_at = time.monotonic()
                    self.hooks.listing_changed(self, conn.listing)
                    self._set_state(ServerState.READY)
                    reason = await asyncio.shield(conn.closed)  # cancelling us must not cancel it
                    self._withdraw(conn, reason)
                    await self._discard(conn)
                    conn = None
                    error = f"{reason}{self._stderr_hint()}"
                    if time.monotonic() - ready_at >= STABLE_AFTER:
                        failures = 0
                if await self._wait_for_sign_in():
                    failures = 0
                    continue
                log.warning("server %r: %s", self.name, error)
                self.last_error = error
                failures += 1
                if failures > self.spec.max_restarts:
                    self._set_state(
                        ServerState.FAILED, f"{error} (gave up after {self.spec.max_restarts} restarts)"
                    )
                    return
                delay = min(BACKOFF_INITIAL * 2 ** (failures - 1), BACKOFF_MAX)
                self.retry_at = time.time() + delay
                if self.state != ServerState.BACKOFF:
                    self._set_state(ServerState.BACKOFF, error)
                await asyncio.sleep(delay)
                self.retry_at = None
                self.restarts += 1
        finally:
            if conn is not None:
                self._withdraw(conn, "was stopped")
                await asyncio.shield(self._discard(conn))

    def oauth_client(self) -> OAuthClient | None:
        """The server's OAuth client (made on first use): None for stdio, or with a static Authorization."""
        if self.oauth is None and self.oauth_manager is not None and self.spec.transport in ("http", "sse"):
            from patchbay.oauth import wants_oauth

            resolved = resolve(self.name, self.spec, self.base_dir)
            if resolved.url and wants_oauth(self.spec, resolved.headers):
                manager = self.oauth_manager()
                self.oauth = manager.client(self.name, resolved.url, self.spec, self.base_dir)
        return self.oauth

    async def _wait_for_sign_in(self) -> bool:
        """Wait in ``needs_auth`` for tokens (True) if the last failure was for want of them; else False."""
        client = self.oauth
        if client is None or client.needs_auth is None:
            return False
        log.warning("server %r: %s", self.name, client.needs_auth.advice)
        self._set_state(ServerState.NEEDS_AUTH, client.needs_auth.advice)
        await client.wait_signed_in()
        log.info("server %r: signed in; starting", self.name)
        return True

    def _connect(self) -> Connection:
        conn: Connection | None = None

        def listed(listing: Listing) -> None:
            # A re-listing (list_changed) counts only while this connection is the live one: one that
            # arrives during a start that then fails must leave no ghost tools behind.
            if conn is not None and self.connection is conn:
                self.hooks.listing_changed(self, listing)

        conn = Connection(
            self.name,
            make_wire(self.spec, self.name, self.base_dir, self.oauth_client()),
            on_listing=listed,
            on_notification=lambda m, p: self.hooks.notification(self, m, p),
            on_lost=self._withdraw,
            on_request=lambda m, p: self.hooks.upstream_request(self, m, p),
        )
        return conn

    def _withdraw(self, conn: Connection, reason: str) -> None:
        """The connection is gone: stop routing to it and take its tools out of the catalog, at once.

        Runs synchronously inside the transport's close callback, before waiting callers are failed, so
        nobody who sees the error can still find the tools or a ``ready`` state.
        """
        if self.connection is conn:
            self.connection = None
            self.ready_since = None
            self.hooks.listing_changed(self, None)
            if not self._stopping:
                self._set_state(ServerState.BACKOFF, f"{reason}{self._stderr_hint()}")

    def _stderr_hint(self) -> str:
        wire = self._last_wire
        tail = wire.stderr.tail(3) if wire is not None and wire.stderr is not None else []
        return f" (stderr: {' | '.join(tail)})" if tail else ""

    @staticmethod
    async def _discard(conn: Connection | None) -> None:
        if conn is not None:
            try:
                await conn.close()
            except Exception:
                log.exception("error while closing %s", conn.name)

    def _set_state(self, state: ServerState, error: str | None = None) -> None:
        previous = self.state
        if state in (ServerState.FAILED, ServerState.BACKOFF, ServerState.NEEDS_AUTH):
            self.last_error = error or self.last_error
        self.state = state
        if state in (ServerState.READY, ServerState.FAILED, ServerState.BACKOFF, ServerState.NEEDS_AUTH):
            self._settled.set()
        self._notify_changed()
        if previous != state or error:
            self.hooks.state_changed(self, state, previous, error)

    # --- status ------------------------------------------------------------------------------------

    def status(self, conflicts: list[str] | None = None, tail: int = 20) -> ServerStatus:
        conn = self.connection
        wire = conn.wire if conn is not None else self._last_wire
        listing = conn.listing if conn is not None else Listing()
        info = conn.server_info.model_dump(exclude_none=True) if conn and conn.server_info else None
        return ServerStatus(
            name=self.name,
            state=self.state,
            transport=self.spec.transport,
            enabled=self.spec.is_enabled,
            pid=wire.pid if conn is not None and wire is not None else None,
            protocol_version=conn.protocol_version if conn else None,
            server_info=info,
            capabilities=conn.capabilities if conn else {},
            instructions=conn.instructions if conn else None,
            tool_count=len(listing.tools),
            resource_count=len(listing.resources),
            prompt_count=len(listing.prompts),
            restarts=self.restarts,
            last_error=self.last_error,
            ready_since=self.ready_since,
            retry_at=self.retry_at,
            calls_in_flight=conn.peer.in_flight if conn else 0,
            conflicts=conflicts or [],
            problems=list(listing.problems),
            stderr_tail=wire.stderr.tail(tail) if wire is not None and wire.stderr is not None else [],
        )
