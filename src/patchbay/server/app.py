"""The ``patchbay serve`` application: one FastAPI app, one port, every surface.

``/mcp`` (aggregated MCP endpoint), ``/api`` (management, OpenAPI at ``/docs``), ``/healthz``,
``/readyz``, ``/metrics``. The app listens at once; the hub's servers start in the background and
``/readyz`` turns 200 when they are up. The config file is watched and changes are applied live.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11
import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from patchbay import __version__
from patchbay.access.authorization_server.mount import mount_authorization_server
from patchbay.access.resource_server import PRM_PATH, ResourceServer
from patchbay.access.roles import RoleGate
from patchbay.access.tokens import StaticToken, TokenTable
from patchbay.errors import PatchbayError
from patchbay.hub import Hub
from patchbay.identity import Identity
from patchbay.oauth.callback import CALLBACK_PATH, result_page
from patchbay.reload import ConfigWatcher
from patchbay.server import dashboard
from patchbay.server.api import build_api, document_errors, install_error_handlers
from patchbay.server.audit_api import AuditMiddleware, build_audit_api
from patchbay.server.cluster_api import build_cluster_api
from patchbay.server.dispatch import McpRoutes, PatchbayApp, mcp_chain
from patchbay.server.fastpath import McpFastPath
from patchbay.server.health import build_health
from patchbay.server.mcp import McpEndpoint
from patchbay.server.metrics import build_metrics
from patchbay.server.profile_mcp import ProfileEndpoints
from patchbay.server.profiles_api import build_profiles_api
from patchbay.server.search_api import build_search_api
from patchbay.server.security import LOOPBACK_NAMES, Guard, is_loopback
from patchbay.server.tokens_api import build_tokens_api

log = logging.getLogger(__name__)


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8765
    # admin tokens given outside the config (--token, PATCHBAY_TOKEN); the config's auth.tokens are read
    # from the hub's config by create_app (and followed when it changes)
    tokens: list[str | tuple[str, Identity] | StaticToken] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)  # extra Host names clients may use
    watch_config: bool = True
    header_timeout: float = 10.0  # seconds a client has to send a request's headers (slowloris)
    session_idle_timeout: float = 300.0  # seconds an /mcp session may stay unused before it is closed
    http: str = "auto"  # uvicorn's HTTP/1.1 parser: "h11", "httptools", or "auto" (httptools if installed)
    resource_server: ResourceServer | None = None  # auth.oauth: tokens from an identity provider

    def host_allowlist(self) -> list[str] | None:
        """Names accepted in Host/Origin headers; None (no check) when bound to every interface."""
        if self.host in ("0.0.0.0", "::", "") and not self.allowed_hosts:
            return None
        names = set(LOOPBACK_NAMES) | {h.lower() for h in self.allowed_hosts}
        names.add(self.host.lower())
        return sorted(names)


class InsecureBindError(ValueError):
    pass


def check_binding(settings: ServeSettings, tokens: TokenTable | None = None) -> None:
    """With no token configured, patchbay listens on loopback only."""
    required = tokens.required if tokens is not None else bool(settings.tokens)
    if not required and settings.resource_server is None and not is_loopback(settings.host):
        raise InsecureBindError(
            f"refusing to listen on {settings.host} without a bearer token: anyone who can reach it could "
            "run commands through the management API. Set PATCHBAY_TOKEN (or auth.tokens in the config), "
            "or listen on 127.0.0.1."
        )


def create_app(hub: Hub, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    tokens = TokenTable(settings.tokens, config=lambda: hub.config)  # ConfigError for a bad auth.tokens
    check_binding(settings, tokens)
    # Host/Origin checks are done once, for every path, by Guard; the SDK's own check is redundant.
    endpoint = McpEndpoint(
        hub, dns_rebinding_protection=False, session_idle_timeout=settings.session_idle_timeout
    )
    profiles = ProfileEndpoints(hub, session_idle_timeout=settings.session_idle_timeout)  # /mcp/<profile>
    path = hub.config.path if hub.cluster is None else None  # a replica's config of record is in Redis
    watcher = ConfigWatcher(hub, path) if settings.watch_config and path else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with endpoint.manager.run():
            endpoint.start()
            await profiles.start()
            starting = asyncio.create_task(_start(hub, app), name="patchbay-hub-start")
            starting.add_done_callback(_report_start_failure)
            try:
                # One turn of the loop: hub.start() begins, so listings asked from now on wait for it.
                await asyncio.sleep(0)
                if watcher is not None:
                    watcher.start()
                yield
            finally:
                if watcher is not None:
                    await watcher.stop()
                await endpoint.stop()
                await profiles.stop()
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)  # owned: awaited, never left behind
                if hub.cluster is not None:
                    await hub.cluster.close()
                await hub.close()
                if settings.resource_server is not None:
                    await settings.resource_server.close()

    app = PatchbayApp(  # a FastAPI app that serves /mcp in front of FastAPI's own layers (dispatch.py)
        title="patchbay",
        version=__version__,
        description="One hub for all your MCP servers. The aggregated MCP endpoint is at `/mcp`.",
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.mcp = endpoint
    app.state.profiles = profiles
    app.state.tokens = tokens
    install_error_handlers(app)

    def openapi() -> dict[str, Any]:
        """FastAPI's document, with every operation's error answers declared as ErrorBody."""
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.started = asyncio.Event()  # set once every enabled server has settled (ready or failed)
    # Route, not Mount: no /mcp → /mcp/ redirect, and the manager's run() is entered in our lifespan.
    sdk_mcp = StreamableHTTPASGIApp(endpoint.manager)
    app.router.routes.append(Route("/mcp", endpoint=sdk_mcp, methods=["GET", "POST", "DELETE"]))
    app.router.routes.append(Route("/mcp/{profile}", endpoint=profiles, methods=["GET", "POST", "DELETE"]))
    built_in_as = mount_authorization_server(app, hub, tokens)  # auth.server; nothing when off
    app.include_router(build_search_api(hub), prefix="/api")
    app.include_router(build_profiles_api(hub), prefix="/api")  # before build_api: /tools/search
    app.include_router(build_api(hub), prefix="/api")
    app.include_router(build_cluster_api(hub), prefix="/api")
    app.include_router(build_tokens_api(hub, tokens), prefix="/api")
    app.include_router(build_audit_api(hub), prefix="/api")
    app.include_router(build_health(hub))
    app.include_router(build_metrics(hub))
    dashboard.mount_dashboard(app)  # the web page at /, its assets at /dashboard/

    @app.get(CALLBACK_PATH, include_in_schema=False)
    async def oauth_callback(request: Request) -> HTMLResponse:
        """The authorization server's redirect after a sign-in started here (API or dashboard). Open
        without the hub's token (a browser brings none): the unguessable ``state`` and the PKCE verifier
        the code needs are what protect it."""
        try:
            server = await hub.oauth.complete(dict(request.query_params))
        except PatchbayError as exc:
            log.warning("sign-in refused: %s", exc)
            hub.audit.record("sign_in", upstream=getattr(exc, "server", None), outcome="refused")
            return HTMLResponse(result_page(False, str(exc)), status_code=400)
        hub.audit.record("sign_in", upstream=server, outcome="ok")
        return HTMLResponse(result_page(True, f"patchbay is signed in to {server!r}."))

    @app.get("/agents", include_in_schema=False, status_code=426)
    async def agents_probe() -> JSONResponse:
        """Plain HTTP here means a WebSocket was expected; an agent refused with 403 asks this to tell
        a refused token (this answer) from a wrong URL (anything else)."""
        return JSONResponse(
            {
                "detail": "patchbay agents connect here over WebSocket",
                "error": "upgrade_required",
                "patchbay": "agents",
            },
            status_code=426,
            headers={"Upgrade": "websocket"},
        )

    @app.websocket("/agents")
    async def agents(ws: WebSocket) -> None:
        """Remote agents dial in here; the bearer token names the agent (the agent never does)."""
        scheme, _, token = ws.headers.get("authorization", "").partition(" ")
        agent = hub.agent_for_token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if agent is None:
            client = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
            why = "unknown token" if token else "no bearer token"
            log.warning("refused an agent from %s: %s", client, why)
            hub.audit.record(
                "refused", method="WS", path="/agents", status=403, detail=f"agent: {why}",
                address=ws.client.host if ws.client else None,
            )  # fmt: skip
            await ws.close(code=1008)  # before accept: the upgrade is refused with HTTP 403
            return
        await ws.accept()
        await hub.attach_agent(agent, ws)

    prm_paths = _protected_resource_routes(app, settings.resource_server)
    # The layers every request passes, outermost first. /mcp and /mcp/<profile> (GET, POST, DELETE) take
    # them in front of FastAPI (dispatch.py), with the MCP-only ones; everything else inside FastAPI.
    guard: dict[str, Any] = {
        # Agents authenticate with their own tokens at /agents; everything else with the hub's.
        "tokens": tokens,
        "allowed_hosts": settings.host_allowlist(),
        "open_paths": {
            "/healthz",
            "/agents",
            CALLBACK_PATH,
            *dashboard.OPEN_PATHS,
            *prm_paths,
            *built_in_as.open_paths,
        },
        "open_prefixes": (*dashboard.OPEN_PREFIXES, *built_in_as.open_prefixes),
        "authenticators": [
            *built_in_as.authenticators,  # first: the resource server refuses tokens of other issuers
            *([settings.resource_server] if settings.resource_server is not None else []),
        ],
        "resource_metadata": (
            settings.resource_server.metadata_url
            if settings.resource_server is not None
            else built_in_as.resource_metadata
        ),
        "on_refused": hub.audit.refused,
    }
    mcp_layers: list[tuple[type[Any], dict[str, Any]]] = [
        (Guard, guard),
        (RoleGate, {}),  # each route's least role (access/roles.py), once the Guard has said who is asking
    ]
    if hub.cluster is not None:  # /mcp sessions held by another replica are routed there (inside the Guard)
        from patchbay.cluster.sessions import SessionRouter

        def endpoint_at(path: str) -> McpEndpoint | None:  # where a session another replica held reopens
            return endpoint if path == "/mcp" else profiles.endpoint(path.removeprefix("/mcp/"))

        router = {"cluster": hub.cluster, "ttl": settings.session_idle_timeout, "endpoints": endpoint_at}
        mcp_layers.append((SessionRouter, router))
    # Plain tools/call requests skip the SDK's per-request machinery (see fastpath.py); inside the Guard.
    fast = {
        "hub": hub,
        "manager": endpoint.manager,
        "sessions": endpoint.fast_sessions,
        "server_info": lambda: endpoint.server.server_info_stamp,
    }
    mcp_layers.append((McpFastPath, fast))
    # Management changes are recorded under the gate's identity (audit_api.py); inside the Guard.
    mcp_layers.append((AuditMiddleware, {"audit": hub.audit}))
    app.mcp = mcp_chain(McpRoutes(sdk_mcp, profiles), mcp_layers)
    # The same layers inside FastAPI, for every other request, less the MCP-only ones (the cluster's
    # session router, the fast path) and plus the REST calls' spans.
    app.add_middleware(AuditMiddleware, audit=hub.audit)
    if hub.tracing is not None:  # OpenTelemetry: a SERVER span per REST tool call (telemetry.py)
        app.add_middleware(hub.tracing.rest_middleware)
    app.add_middleware(RoleGate)
    app.add_middleware(Guard, **guard)
    return app


def _protected_resource_routes(app: FastAPI, resource_server: ResourceServer | None) -> set[str]:
    """RFC 9728 metadata at the root well-known path and the path-suffixed one clients try first; open
    (a client reads it before it has a token) and readable cross-origin (browser-based clients)."""
    if resource_server is None:
        return set()
    paths = {PRM_PATH, f"{PRM_PATH}/mcp", urlsplit(resource_server.metadata_url).path}

    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse(
            resource_server.metadata(),
            headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "max-age=300"},
        )

    for path in sorted(paths):
        app.router.routes.append(Route(path, endpoint=metadata, methods=["GET"], include_in_schema=False))
    return paths


class _HeaderDeadline:
    """A deadline for request headers, which uvicorn lacks: a client that connects and sends its headers
    too slowly (slowloris) or not at all is disconnected after ``header_timeout`` seconds, instead of
    holding a connection forever. The timer runs only while a request's headers are incomplete; a request
    whose headers arrive in one read (every normal client) never arms it. Idle keep-alive connections stay
    uvicorn's (``timeout_keep_alive``). Mixed into each of uvicorn's HTTP protocols, which say (with
    ``_awaiting_headers``) whether their parser is still waiting for (the rest of) a request's headers."""

    header_timeout = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    client: tuple[str, int] | None

    def _awaiting_headers(self) -> bool:
        raise NotImplementedError

    def _start_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _after_data(self) -> None:
        if self._awaiting_headers():
            if self._header_timer is None and not self.transport.is_closing():
                self._start_header_timer()
        elif self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._awaiting_headers() and not self.transport.is_closing():
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
            log.info(
                "closed the connection of %s: no complete request headers in %s s",
                client,
                self.header_timeout,
            )
            self.transport.close()


class HeaderTimeoutProtocol(_HeaderDeadline, H11Protocol):
    """uvicorn's h11 protocol with the header deadline: waiting while h11 is still ``IDLE``."""

    def _awaiting_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._after_data()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)


def _httptools_protocol() -> type[Any] | None:
    """uvicorn's httptools protocol with the header deadline, or None when httptools is not installed."""
    if importlib.util.find_spec("httptools") is None:
        return None
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsHeaderTimeoutProtocol(_HeaderDeadline, HttpToolsProtocol):
        """Waiting from the connection (or the end of a request's headers) until the next request's
        headers are complete: before the first request's headers, and between ``on_message_begin`` and
        ``on_headers_complete`` (an idle keep-alive connection is between the two, uvicorn's to time)."""

        _in_headers = True  # no request yet: a silent client is cut off too

        def _awaiting_headers(self) -> bool:
            return self._in_headers and self.parser is not None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_header_timer()

        def on_message_begin(self) -> None:
            self._in_headers = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._in_headers = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._after_data()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

    return HttpToolsHeaderTimeoutProtocol


HTTP_IMPLEMENTATIONS = ("auto", "h11", "httptools")


def http_protocol(header_timeout: float, http: str = "h11") -> type[Any]:
    """The HTTP protocol class for uvicorn (``uvicorn.Config(http=…)``) with this header deadline.

    ``http``: ``h11``, ``httptools``, or ``auto``: httptools when installed (a dependency; h11 where it
    cannot be), which costs ~30% less CPU per ``/mcp`` call than h11 (``bench/http.py --stacks``)."""
    if http not in HTTP_IMPLEMENTATIONS:
        known = ", ".join(HTTP_IMPLEMENTATIONS)
        raise ValueError(f"unknown HTTP implementation {http!r}; use one of {known}")
    fast = _httptools_protocol() if http != "h11" else None
    if fast is None and http == "httptools":
        raise ValueError("--http httptools: httptools is not installed (pip install httptools)")
    base: type[Any] = fast if fast is not None else HeaderTimeoutProtocol
    return type(base.__name__, (base,), {"header_timeout": header_timeout})


def uvicorn_config(app: FastAPI, settings: ServeSettings, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration ``patchbay serve`` runs ``app`` with (tests use the same)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=http_protocol(settings.header_timeout, settings.http),
        lifespan="on",
        **options,
    )


async def _start(hub: Hub, app: FastAPI) -> None:
    if hub.cluster is not None:  # the config of record first, so servers start once, from it
        await hub.cluster.join()
    await hub.start()
    status = hub.status().values()
    ready = sum(1 for s in status if s.state == "ready")
    enabled = sum(1 for s in status if s.enabled)
    log.info("%d/%d servers ready, %d tools", ready, enabled, len(hub.catalog.tools))
    app.state.started.set()


def _report_start_failure(task: asyncio.Task[None]) -> None:
    """Log (and so retrieve) an exception of the background start at once, not at shutdown."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("starting the servers failed", exc_info=exc)


def env_tokens() -> list[str]:
    raw = os.environ.get("PATCHBAY_TOKEN", "")
    return [t.strip() for t in raw.split(",") if t.strip()]
