"""The aggregated MCP endpoint: the hub's catalog served to any MCP client over streamable HTTP (``/mcp``).

Built on the SDK's low-level ``Server`` and ``StreamableHTTPSessionManager`` (stateful, so handshake-era
clients get notifications and server→client requests on their GET stream). The handlers read the hub's
catalog on every request, so the tool set can change at any time. What the SDK does not do, done here:

- telling clients the catalog changed: a ``subscriptions/listen`` bus for 2026-07-28 clients, and
  ``notifications/*/list_changed`` to every open handshake-era session (tracked by a middleware,
  because the SDK has no broadcast API for them);
- forwarding progress, and routing an upstream's sampling/elicitation/roots requests to the client
  whose call is in progress;
- forwarding upstream log messages at the level each client asked for.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import mcp.types as types
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.session import ServerSession
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ToolsListChanged,
)
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from pydantic import TypeAdapter

from patchbay import __version__
from patchbay.errors import (
    CallTimeoutError,
    PatchbayError,
    ServerUnavailableError,
    UnknownToolError,
    UpstreamError,
)
from patchbay.events import CatalogEvent, Subscription
from patchbay.hub import Hub
from patchbay.server import sdk_adapter
from patchbay.server.fastpath import FastSessions

log = logging.getLogger(__name__)

RESOURCE_NOT_FOUND = -32002
INSTRUCTIONS = "Tools from every MCP server connected to this patchbay hub, named <server>__<tool>."
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
# What an upstream may ask of its client, and the result type the SDK validates the answer against.
CLIENT_REQUESTS: dict[str, tuple[Any, Any]] = {
    "sampling/createMessage": (types.CreateMessageRequest, types.CreateMessageResult),
    "elicitation/create": (types.ElicitRequest, types.ElicitResult),
    "roots/list": (types.ListRootsRequest, types.ListRootsResult),
    "ping": (types.PingRequest, types.EmptyResult),
}


class HubServer(Server[Any]):
    """A low-level server that always advertises ``listChanged`` (the session manager asks for none)."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: Any = None,
    ) -> Any:
        options = notification_options or NotificationOptions(
            tools_changed=True, resources_changed=True, prompts_changed=True
        )
        return super().create_initialization_options(options, experimental_capabilities, extensions)


class _CallingClient:
    """The downstream session of one call, answering the upstream's requests during that call."""

    def __init__(self, session: ServerSession, request_id: Any) -> None:
        self._session = session
        self._request_id = request_id

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        kinds = CLIENT_REQUESTS.get(method)
        if kinds is None:
            raise UpstreamError("client", -32601, f"method {method!r} cannot be forwarded to the client")
        request_type, result_type = kinds
        request = TypeAdapter(request_type).validate_python({"method": method, "params": params or None})
        try:
            result = await self._session.send_request(
                request,
                result_type,
                metadata=ServerMessageMetadata(related_request_id=self._request_id),
            )
        except MCPError as exc:
            raise UpstreamError("client", exc.code, exc.message, exc.data) from None
        return result.model_dump(by_alias=True, exclude_none=True, mode="json")


class McpEndpoint:
    """Owns the downstream server, its session manager and the notification fan-out."""

    def __init__(
        self,
        hub: Hub,
        *,
        allowed_hosts: list[str] | None = None,
        allowed_origins: list[str] | None = None,
        dns_rebinding_protection: bool = True,
    ) -> None:
        self.hub = hub
        self.bus = InMemorySubscriptionBus()
        self._legacy: dict[int, ServerSession] = {}
        self._log_levels: dict[int, int] = {}
        self._tools_cache: tuple[int, types.ListToolsResult] | None = None
        self._events: Subscription | None = None
        self.fast_sessions = FastSessions()
        self._fanout: asyncio.Task[None] | None = None
        with warnings.catch_warnings():  # logging is deprecated in 2026-07-28, still used by older clients
            warnings.simplefilter("ignore")
            self.server = HubServer(
                "patchbay",
                version=__version__,
                instructions=INSTRUCTIONS,
                on_list_tools=self._list_tools,
                on_call_tool=self._call_tool,
                on_list_resources=self._list_resources,
                on_list_resource_templates=self._list_templates,
                on_read_resource=self._read_resource,
                on_list_prompts=self._list_prompts,
                on_get_prompt=self._get_prompt,
                on_set_logging_level=self._set_level,
                on_subscriptions_listen=ListenHandler(self.bus),
                # Without this the SDK lists every tool on each modern-era call to check Mcp-Param headers.
                get_tool_input_schema=self._input_schema,
            )
        self.server.middleware.append(self._track_sessions)
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=dns_rebinding_protection,
            allowed_hosts=allowed_hosts or [],
            allowed_origins=allowed_origins or [],
        )
        self.manager = StreamableHTTPSessionManager(
            app=self.server, stateless=False, security_settings=security
        )
        hub.add_notification_observer(self._upstream_notification)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._events = self.hub.events()
        self._fanout = asyncio.create_task(self._fan_out_catalog_changes(), name="patchbay-mcp-fanout")

    async def stop(self) -> None:
        if self._fanout is not None:
            self._fanout.cancel()
        if self._events is not None:
            self._events.close()

    async def _fan_out_catalog_changes(self) -> None:
        assert self._events is not None
        async for event in self._events:
            if not isinstance(event, CatalogEvent):
                continue
            await asyncio.sleep(0.05)  # coalesce a burst (a restart removes, then re-adds)
            await self.notify_catalog_changed()

    async def notify_catalog_changed(self) -> None:
        """Tell every client: modern ones through their listen streams, handshake-era ones directly."""
        for event in (ToolsListChanged(), ResourcesListChanged(), PromptsListChanged()):
            await self.bus.publish(event)
        for session in list(self._legacy.values()):
            try:
                await session.send_tool_list_changed()
                await session.send_resource_list_changed()
                await session.send_prompt_list_changed()
            except Exception:
                log.debug("could not notify a client session", exc_info=True)

    async def _track_sessions(self, ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        """Remember each handshake-era session (the SDK keeps no list) and forget it when it ends."""
        result = await call_next(ctx)
        if ctx.method == "initialize":
            self._allow_fast_path(ctx)
        elif ctx.method == "notifications/initialized":
            conn = sdk_adapter.connection_of(ctx.session)
            if conn is not None and sdk_adapter.on_connection_close(conn, self._forget, id(conn)):
                self._legacy[id(conn)] = ctx.session
        return result

    def _allow_fast_path(self, ctx: Any) -> None:
        """From a successful ``initialize`` on, the SDK serves the session's requests, and so may the fast
        path, unless the client can be asked things back (sampling, elicitation: the SDK routes those)."""
        conn = sdk_adapter.connection_of(ctx.session)
        session_id = getattr(conn, "session_id", None)
        caps = (ctx.params or {}).get("capabilities")
        asks_back = not isinstance(caps, dict) or any(
            caps.get(k) is not None for k in ("sampling", "elicitation")
        )
        if (
            session_id
            and not asks_back
            and sdk_adapter.on_connection_close(conn, self.fast_sessions.eligible.discard, session_id)
        ):
            self.fast_sessions.eligible.add(session_id)

    def _forget(self, key: int) -> None:
        self._legacy.pop(key, None)
        self._log_levels.pop(key, None)

    @property
    def sessions(self) -> int:
        return len(self._legacy)

    # --- handlers ----------------------------------------------------------------------------------

    def _input_schema(self, name: str) -> dict[str, Any] | None:
        entry = self.hub.catalog.tools.get(name)
        return entry.tool.input_schema if entry is not None else None

    async def _list_tools(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        version = self.hub.catalog.version
        cached = self._tools_cache
        if cached is None or cached[0] != version:
            cached = self._tools_cache = (version, types.ListToolsResult(tools=self.hub.catalog.mcp_tools()))
        return cached[1]

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        progress = None
        meta = ctx.meta or {}
        if meta.get("progress_token", meta.get("progressToken")) is not None:  # the SDK hands it snake_case
            session = ctx.session

            async def progress(p: float, total: float | None, message: str | None) -> None:
                await session.report_progress(p, total, message)

        try:
            return await self.hub.call_tool(
                params.name,
                params.arguments,
                progress=progress,
                client=_CallingClient(ctx.session, ctx.request_id),
            )
        except UnknownToolError as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        except (ServerUnavailableError, CallTimeoutError, UpstreamError) as exc:
            # The model should read these, so they come back as tool errors naming the server.
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=str(exc))], is_error=True
            )

    async def _list_resources(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=self.hub.resources())

    async def _list_templates(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=self.hub.resource_templates())

    async def _read_resource(
        self, ctx: Any, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        try:
            return await self.hub.read_resource(str(params.uri))
        except UnknownToolError as exc:
            raise MCPError(RESOURCE_NOT_FOUND, str(exc)) from None
        except PatchbayError as exc:
            raise _mcp_error(exc) from None

    async def _list_prompts(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=self.hub.prompts())

    async def _get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        try:
            return await self.hub.get_prompt(params.name, params.arguments)
        except UnknownToolError as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        except PatchbayError as exc:
            raise _mcp_error(exc) from None

    async def _set_level(self, ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        conn = sdk_adapter.connection_of(ctx.session)
        if conn is not None:
            self._log_levels[id(conn)] = LEVELS.index(params.level)
        return types.EmptyResult()

    # --- upstream → downstream notifications -------------------------------------------------------

    def _upstream_notification(self, server: str, method: str, params: dict[str, Any]) -> None:
        if method != "notifications/message" or not self._log_levels:
            return
        level = str(params.get("level", "info"))
        rank = LEVELS.index(level) if level in LEVELS else 1
        logger = params.get("logger")
        for key, wanted in list(self._log_levels.items()):
            session = self._legacy.get(key)
            if session is not None and rank >= wanted:
                with warnings.catch_warnings():  # deprecated in 2026-07-28; these clients asked for it
                    warnings.simplefilter("ignore")
                    coro = session.send_log_message(
                        level=level,  # type: ignore[arg-type]
                        data=params.get("data"),
                        logger=f"{server}/{logger}" if logger else server,
                    )
                task = asyncio.ensure_future(coro)
                task.add_done_callback(_quiet)


def tool_error_result(exc: PatchbayError) -> types.CallToolResult:
    """Routing failures as tool errors naming the server: the model should read them."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=str(exc))], is_error=True)


def tool_error_json(exc: PatchbayError) -> dict[str, Any]:
    return tool_error_result(exc).model_dump(
        by_alias=True, exclude_none=True, mode="json", exclude={"result_type"}
    )


def _quiet(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("could not forward a log message: %s", task.exception())


def _mcp_error(exc: PatchbayError) -> MCPError:
    if isinstance(exc, UpstreamError):
        return MCPError(exc.code, str(exc), exc.data)
    if isinstance(exc, CallTimeoutError):
        return MCPError(types.REQUEST_TIMEOUT, str(exc))
    return MCPError(types.INTERNAL_ERROR, str(exc))
