"""OpenTelemetry traces: a span per downstream request and per upstream call, W3C context passed through.

Off unless configured, by the standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_TRACES_EXPORTER=otlp``; ``OTEL_SDK_DISABLED=true`` and
``OTEL_TRACES_EXPORTER=none`` turn it off) or by the config's top-level ``telemetry`` key. When off,
``Hub.tracing`` is None: nothing here runs, the OpenTelemetry SDK is never imported, and the call path pays
one attribute check. When on, spans go over OTLP/HTTP (``pip install 'mcp-patchbay[otel]'``) through a
``BatchSpanProcessor``, flushed when the hub closes. The settings are read by
:mod:`patchbay.telemetry_settings`.

Spans follow the MCP semantic conventions (``mcp.method.name``, ``gen_ai.tool.name``, ``error.type``, ...)
plus ``patchbay.*`` attributes (server, exposed and original tool name, outcome, protocol):

- ``SERVER``: one per downstream request (``/mcp`` on both of its paths, the REST call route, an agent's
  calls from its hub). Its parent is the trace context in the request's ``params._meta``, else the HTTP
  ``traceparent``/``tracestate`` headers (linked when both are there, as the conventions say);
- ``CLIENT``: one per upstream request, its context injected into the upstream request's ``_meta`` (and,
  for streamable HTTP servers, into the HTTP headers, see ``trace_headers``).

The MCP SDK's low-level ``Server`` ships its own ``OpenTelemetryMiddleware`` (a ``SERVER`` span per message,
from the *global* tracer provider, parent from ``_meta`` only). Patchbay never installs a global provider:
its spans come from its own, and when tracing is on ``sdk_middleware`` swaps the SDK's middleware for
patchbay's, so a request has exactly one ``SERVER`` span whichever path serves it. When tracing is off the
SDK's middleware is left as it is (a no-op unless the embedding application set a global provider).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, StatusCode

from patchbay import __version__
from patchbay.config import redact_url
from patchbay.errors import ConfigError, PatchbayError, UnknownToolError
from patchbay.server.security import route_path
from patchbay.telemetry_settings import TelemetrySettings, exporter_url, settings_from

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from patchbay.catalog import Catalog
    from patchbay.hub import Hub
    from patchbay.sources import Source

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'mcp-patchbay[otel]'"
FLUSH_TIMEOUT_MS = 5000  # how long closing the hub waits for the last spans to be exported
CARRIER_KEYS = ("traceparent", "tracestate", "baggage")  # W3C keys, unprefixed in _meta (SEP-414)

_T = TypeVar("_T")
# The SERVER span of the downstream request being served, for the hub's call observer to complete.
_SERVED: ContextVar[Span | None] = ContextVar("patchbay_served_span", default=None)


def tracing_for(hub: Hub) -> Tracing | None:
    """The hub's tracing, or None when it is off; bad settings or a missing SDK raise ``ConfigError``."""
    settings = settings_from(hub.config)
    if settings is None:
        return None
    tracing = Tracing(settings, hub.catalog)
    hub.add_call_observer(tracing.observe)
    return tracing


# --- attributes --------------------------------------------------------------------------------------


def outcome_of(exc: BaseException) -> str:
    """The outcome named as the metrics and the REST API name it (``replies.ERROR_TABLE``)."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, UnknownToolError) and exc.kind != "tool":
        return f"unknown_{exc.kind}"
    if isinstance(exc, PatchbayError):
        from patchbay import replies

        return replies.error_kind(exc).name
    return "error"


def _source_attributes(source: Source) -> dict[str, Any]:
    """``patchbay.protocol`` (stdio, streamable-http, sse, agent) and the network attributes."""
    spec = getattr(source, "spec", None)
    transport = getattr(spec, "transport", None)
    if transport is None:
        return {
            "patchbay.protocol": "agent",
            "network.transport": "tcp",
            "network.protocol.name": "websocket",
        }
    if transport == "stdio":
        return {"patchbay.protocol": "stdio", "network.transport": "pipe"}
    attrs: dict[str, Any] = {
        "patchbay.protocol": "streamable-http" if transport == "http" else "sse",
        "network.transport": "tcp",
        "network.protocol.name": "http",
    }
    url = urlsplit(str(getattr(spec, "url", "") or ""))
    if url.hostname:
        attrs["server.address"] = url.hostname
        with contextlib.suppress(ValueError):
            attrs["server.port"] = url.port or (443 if url.scheme == "https" else 80)
    return attrs


def _target_attributes(method: str, params: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The span name (``{mcp.method.name} {target}``) and the attributes the request itself gives."""
    attrs: dict[str, Any] = {"mcp.method.name": method}
    params = params or {}
    name = params.get("name")
    if method == "tools/call":
        attrs["gen_ai.operation.name"] = "execute_tool"
        if isinstance(name, str):
            attrs["gen_ai.tool.name"] = name
            return f"{method} {name}", attrs
    elif method == "prompts/get" and isinstance(name, str):
        attrs["gen_ai.prompt.name"] = name
        return f"{method} {name}", attrs
    elif method.startswith("resources/") and isinstance(params.get("uri"), str):
        attrs["mcp.resource.uri"] = params["uri"]
    return method, attrs


def _extract(carrier: Mapping[str, Any] | None) -> Context | None:
    """The trace context a carrier (``_meta`` or HTTP headers) holds, or None (absent or malformed)."""
    if not carrier or "traceparent" not in carrier:
        return None
    try:
        ctx = propagate.extract(carrier)
    except (TypeError, ValueError):
        return None
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def _fail(span: Span, error_type: str, message: str | None = None) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(StatusCode.ERROR, message)


def trace_headers(msg: Mapping[str, Any]) -> dict[str, str] | None:
    """The W3C headers for an outgoing HTTP request: copied from the JSON-RPC request's ``_meta``.

    Only patchbay's own CLIENT span puts a ``traceparent`` there (the hub builds upstream params itself),
    so a remote server sees the same context in its headers as in the message. None when there is none.
    """
    params = msg.get("params")
    meta = params.get("_meta") if type(params) is dict else None
    if type(meta) is not dict or "traceparent" not in meta:
        return None
    return {k: meta[k] for k in CARRIER_KEYS if type(meta.get(k)) is str}


# --- the tracer --------------------------------------------------------------------------------------


class Tracing:
    """Patchbay's tracer provider and the spans of both sides of the hub."""

    def __init__(self, settings: TelemetrySettings, catalog: Catalog) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise ConfigError(
                f"tracing is on ({settings.why} is set) but the OpenTelemetry SDK is missing ({exc.name}): "
                f"{INSTALL_HINT}, or turn tracing off",
                field="telemetry",
            ) from None
        self.settings = settings
        self.catalog = catalog
        resource = Resource.create({})  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if settings.service_name:
            resource = resource.merge(Resource({"service.name": settings.service_name}))
        elif str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "patchbay"}))
        resource = resource.merge(Resource({"service.version": __version__}))
        exporter = OTLPSpanExporter(endpoint=settings.endpoint, headers=settings.headers or None)
        self.provider: TracerProvider = TracerProvider(resource=resource, shutdown_on_exit=True)
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("patchbay", __version__)
        self._closed = False
        log.info(
            "tracing on (%s): spans go over OTLP/HTTP to %s", settings.why, redact_url(exporter_url(settings))
        )

    async def close(self) -> None:
        """Export what is left (bounded), then stop the exporter thread; off the event loop, as it blocks."""
        if self._closed:
            return
        self._closed = True

        def shutdown() -> None:
            self.provider.force_flush(FLUSH_TIMEOUT_MS)
            self.provider.shutdown()

        await asyncio.to_thread(shutdown)

    # --- downstream (SERVER spans) -----------------------------------------------------------------

    @contextlib.contextmanager
    def serving(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        meta: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        protocol: str,
        request_id: str | int | None = None,
        session_id: str | None = None,
        protocol_version: str | None = None,
    ) -> Iterator[Span]:
        """A SERVER span for one downstream request, current while it is served."""
        parent = _extract(meta)
        transport = _extract(headers)
        links: list[Link] = []
        if parent is None:
            parent = transport
        elif transport is not None:  # the MCP context is the parent; the HTTP one is linked
            links.append(Link(trace.get_current_span(transport).get_span_context()))
        name, attrs = _target_attributes(method, params)
        if attrs.get("gen_ai.tool.name") is not None:
            attrs["patchbay.tool"] = attrs["gen_ai.tool.name"]
        attrs["patchbay.protocol"] = protocol
        if protocol != "agent":
            attrs["network.transport"] = "tcp"
            attrs["network.protocol.name"] = "http"
        if request_id is not None:
            attrs["jsonrpc.request.id"] = str(request_id)
        if session_id:
            attrs["mcp.session.id"] = session_id
        if protocol_version:
            attrs["mcp.protocol.version"] = protocol_version
        with self.tracer.start_as_current_span(
            name,
            context=parent or Context(),  # never the ambient context: each request is its own
            kind=SpanKind.SERVER,
            attributes=attrs,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            token = _SERVED.set(span)
            try:
                yield span
            except BaseException as exc:
                if method != "tools/call":  # the call observer names a tool call's outcome
                    self._outcome(span, outcome_of(_cause(exc)), exc)
                raise
            else:
                if method != "tools/call":
                    span.set_attribute("patchbay.outcome", "ok")
            finally:
                _SERVED.reset(token)

    async def served(
        self,
        call: Awaitable[_T],
        method: str,
        params: Mapping[str, Any] | None,
        *,
        meta: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        protocol: str,
        request_id: str | int | None = None,
        session_id: str | None = None,
        protocol_version: str | None = None,
    ) -> _T:
        """``call`` (a hub call made for a downstream request) awaited inside its SERVER span."""
        with self.serving(
            method,
            params,
            meta=meta,
            headers=headers,
            protocol=protocol,
            request_id=request_id,
            session_id=session_id,
            protocol_version=protocol_version,
        ):
            return await call

    def observe(self, server: str | None, tool: str, outcome: str, seconds: float) -> None:
        """The hub's call observer: completes the SERVER span of the request that made the call."""
        span = _SERVED.get()
        if span is None or not span.is_recording():
            return
        entry = self.catalog.tools.get(tool)
        attrs: dict[str, Any] = {"patchbay.tool": tool, "patchbay.outcome": outcome}
        if server is not None:
            attrs["patchbay.server"] = server
        if entry is not None:
            attrs["patchbay.tool.original"] = entry.original
        span.set_attributes(attrs)
        if outcome != "ok":
            _fail(span, outcome)

    def sdk_middleware(self, middleware: list[Any]) -> list[Any]:
        """The SDK server's middleware list with its OpenTelemetry middleware replaced by patchbay's."""
        try:
            from mcp.server._otel import OpenTelemetryMiddleware
        except ImportError:  # an SDK that moved it: nothing to replace, patchbay's goes first
            return [self._sdk_span, *middleware]
        mine = [self._sdk_span if isinstance(m, OpenTelemetryMiddleware) else m for m in middleware]
        return mine if self._sdk_span in mine else [self._sdk_span, *mine]

    async def _sdk_span(self, ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        """A SERVER span per request the SDK serves (notifications get none)."""
        if ctx.request_id is None:
            return await call_next(ctx)
        request = getattr(ctx, "request", None)
        headers = getattr(request, "headers", None)
        with self.serving(
            ctx.method,
            ctx.params,
            meta=ctx.meta,
            headers=headers,
            protocol="streamable-http" if request is not None else "agent",
            request_id=ctx.request_id,
            session_id=headers.get("mcp-session-id") if headers is not None else None,
            protocol_version=ctx.protocol_version,
        ):
            return await call_next(ctx)  # a tool call's outcome comes from the hub's call observer

    def rest_middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware: a SERVER span per REST tool call (``POST /api/.../tools/<name>/call``)."""
        return _RestCalls(app, self)

    # --- upstream (CLIENT spans) -------------------------------------------------------------------

    async def upstream(
        self,
        request: Awaitable[Any],
        source: Source,
        method: str,
        params: dict[str, Any],
        exposed: str | None = None,
    ) -> Any:
        """Await an upstream ``request`` (not yet started) in a CLIENT span whose context it carries.

        ``params`` is the request's own dict: the span's context goes into its ``_meta`` before the
        request is sent, which is when ``request`` first runs."""
        name, attrs = _target_attributes(method, params)
        attrs.update(_source_attributes(source))
        attrs["patchbay.server"] = source.name
        if exposed is not None:
            attrs["patchbay.tool"] = exposed
            attrs["patchbay.tool.original"] = params.get("name")
        conn = source.connection
        version = getattr(conn, "protocol_version", None)
        if isinstance(version, str):
            attrs["mcp.protocol.version"] = version
        try:
            with self.tracer.start_as_current_span(
                name,
                kind=SpanKind.CLIENT,
                attributes=attrs,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                meta = dict(params.get("_meta") or {})
                propagate.inject(meta)
                params["_meta"] = meta
                try:
                    raw = await request
                except BaseException as exc:
                    self._outcome(span, outcome_of(exc), exc)
                    raise
                if method == "tools/call" and isinstance(raw, dict) and raw.get("isError") is True:
                    span.set_attribute("patchbay.outcome", "tool_error")
                    _fail(span, "tool_error")
                else:
                    span.set_attribute("patchbay.outcome", "ok")
                return raw
        finally:
            if inspect.iscoroutine(request) and inspect.getcoroutinestate(request) == inspect.CORO_CREATED:
                request.close()  # never started (the span could not be made): no "never awaited"

    @staticmethod
    def _outcome(span: Span, outcome: str, exc: BaseException) -> None:
        span.set_attribute("patchbay.outcome", outcome)
        code = getattr(exc, "code", None)
        if isinstance(code, int):
            span.set_attribute("rpc.response.status_code", str(code))
        _fail(span, str(code) if isinstance(code, int) and outcome == "upstream_error" else outcome, str(exc))


def _cause(exc: BaseException) -> BaseException:
    """The patchbay error behind an ``MCPError`` an SDK handler raised ``from None`` (kept as context)."""
    context = exc.__context__
    return context if isinstance(context, PatchbayError) else exc


class _RestCalls:
    """Pure ASGI (no task per request): ``POST /api/tools/<name>/call`` and the profile routes' calls."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" else ""  # less a host app's mount prefix
        if scope.get("method") != "POST" or not path.startswith("/api/") or not path.endswith("/call"):
            await self.app(scope, receive, send)
            return
        _, sep, rest = path[: -len("/call")].partition("/tools/")
        if not sep or not rest:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        status: list[int] = []

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        with self.tracing.serving(
            "tools/call", {"name": rest}, meta=None, headers=headers, protocol="rest"
        ) as span:
            span.set_attribute("http.request.method", "POST")
            span.set_attribute("url.path", path)
            await self.app(scope, receive, sending)
            if status:
                span.set_attribute("http.response.status_code", status[0])
