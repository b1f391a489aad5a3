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

With ``profile``, the endpoint serves one profile's view (``/mcp/<profile>``, see ``profile_mcp.py``): its
listings and calls go through the view, and it tells its clients only about changes of that view.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable, Coroutine
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
    ResourceUpdated,
    ToolsListChanged,
)
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp.types import SERVER_INFO_META_KEY
from mcp.types.version import MODERN_PROTOCOL_VERSIONS
from mcp_types.methods import serialize_server_result
from pydantic import TypeAdapter

from patchbay import __version__, replies
from patchbay.audit import ClientInfo
from patchbay.config import ProfileSpec, list_page_size
from patchbay.errors import PatchbayError, UnknownProfileError, UnknownToolError, UpstreamError
from patchbay.events import CatalogEvent, Subscription
from patchbay.hub import Hub, UpstreamCapabilities
from patchbay.identity import Identity, identity_of
from patchbay.profiles import ProfilesChangedEvent, ProfileView
from patchbay.server import sdk_adapter
from patchbay.server.fastpath import FastSessions, client_info
from patchbay.server.lean_sessions import LeanSessions, session_state
from patchbay.server.paging import CursorError, Page, Pager

log = logging.getLogger(__name__)

RESOURCE_NOT_FOUND = replies.RESOURCE_NOT_FOUND
# Abandoned sessions cost memory until reaped (1-2 KiB lean, ~17 KiB with a GET stream, 40-100 KiB once
# the SDK holds them); the SDK's default keeps them for 30 minutes.
DEFAULT_SESSION_IDLE_TIMEOUT = 300.0
# A client whose notification stream stops draining must not stall the fan-out to everyone else.
NOTIFY_TIMEOUT = 5.0
INSTRUCTIONS = "Tools from every MCP server connected to this patchbay hub, named <server>__<tool>."
# The lists a client can be told changed, and the 2026-07-28 listen event for each.
LIST_KINDS: dict[str, Any] = {
    "tools": ToolsListChanged,
    "resources": ResourcesListChanged,
    "prompts": PromptsListChanged,
}
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
# What an upstream may ask of its client, and the result type the SDK validates the answer against.
CLIENT_REQUESTS: dict[str, tuple[Any, Any]] = {
    "sampling/createMessage": (types.CreateMessageRequest, types.CreateMessageResult),
    "elicitation/create": (types.ElicitRequest, types.ElicitResult),
    "roots/list": (types.ListRootsRequest, types.ListRootsResult),
    "ping": (types.PingRequest, types.EmptyResult),
}


class HubServer(Server[Any]):
    """A low-level server whose capabilities follow the hub's upstreams.

    ``listChanged`` is always advertised (the session manager asks for none). ``completions`` and
    ``resources.subscribe`` are advertised only when some upstream has them, so a client never relies on a
    feature nobody behind the hub offers. ``get_capabilities`` serves both ``initialize`` and the 2026-07-28
    ``server/discover``."""

    upstream_capabilities: Callable[[], UpstreamCapabilities] = UpstreamCapabilities

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

    def get_capabilities(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
        *,
        protocol_version: str | None = None,
    ) -> types.ServerCapabilities:
        caps = super().get_capabilities(
            notification_options, experimental_capabilities, extensions, protocol_version=protocol_version
        )
        upstream = self.upstream_capabilities()
        update: dict[str, Any] = {}
        if not upstream.completions:
            update["completions"] = None
        if caps.resources is not None:
            update["resources"] = caps.resources.model_copy(update={"subscribe": upstream.resource_subscribe})
        return caps.model_copy(update=update) if update else caps


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
    """Owns the downstream server, its session manager and the notification fan-out.

    ``session_idle_timeout`` (seconds, None for never) is how long a handshake-era session may go with no
    request in flight (fast-path calls and open GET streams count) before it is reaped."""

    def __init__(
        self,
        hub: Hub,
        *,
        allowed_hosts: list[str] | None = None,
        allowed_origins: list[str] | None = None,
        dns_rebinding_protection: bool = True,
        session_idle_timeout: float | None = DEFAULT_SESSION_IDLE_TIMEOUT,
        profile: str | None = None,
    ) -> None:
        self.hub = hub
        self.profile = profile  # None: the whole catalog
        self._seen: Any = None  # a profile endpoint: the view its clients were last told about
        self.bus = InMemorySubscriptionBus()
        self._listen = ListenHandler(self.bus)
        self._legacy: dict[int, ServerSession] = {}
        self._log_levels: dict[int, int] = {}
        # Resource subscriptions per handshake-era session, and who subscribed to each URI.
        self._subscriptions: dict[int, set[str]] = {}
        self._subscribers: dict[str, set[int]] = {}
        self._pager = Pager()
        # tools/list answers as sent by the fast path, per (page, protocol version), for the current list
        self._encoded: dict[tuple[Any, str], bytes] = {}
        self._encoded_for: Any = None
        self._tool_json: dict[str, dict[int, tuple[types.Tool, bytes]]] = {}  # per version, by tool object
        self._events: Subscription | None = None
        self.fast_sessions = FastSessions()
        self.fast_sessions.tools_list = self.tools_list_json
        self._fanout: asyncio.Task[None] | None = None
        self._notifier: asyncio.Task[None] | None = None
        self._catalog_changed = asyncio.Event()
        self._kinds: set[str] = set()  # a profile endpoint: the lists the pending round is about
        self._fanout_idle = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()  # short-lived sends and releases, owned here
        self._stopped = False
        self.notify_rounds = 0  # how many list_changed rounds went out (tests, metrics)
        # Cluster mode: each handshake-era session's state, kept in Redis so another replica can adopt it.
        self.path = "/mcp" if profile is None else f"/mcp/{profile}"
        self._states: dict[str, dict[str, Any]] = {}
        self._store: Any = None
        if hub.cluster is not None:
            from patchbay.cluster.sessions import SessionStates

            self._store = SessionStates(hub.cluster, session_idle_timeout)
        with warnings.catch_warnings():  # logging and subscribe are deprecated in 2026-07-28, still used
            warnings.simplefilter("ignore")
            self.server = HubServer(
                "patchbay",
                version=__version__,
                instructions=INSTRUCTIONS if profile is None else f"{INSTRUCTIONS} Profile: {profile}.",
                on_list_tools=self._list_tools,
                on_call_tool=self._call_tool,
                on_list_resources=self._list_resources,
                on_list_resource_templates=self._list_templates,
                on_read_resource=self._read_resource,
                on_subscribe_resource=self._subscribe,
                on_unsubscribe_resource=self._unsubscribe,
                on_list_prompts=self._list_prompts,
                on_get_prompt=self._get_prompt,
                on_completion=self._complete,
                on_set_logging_level=self._set_level,
                on_subscriptions_listen=self._listen_with_resources,
                # Without this the SDK lists every tool on each modern-era call to check Mcp-Param headers.
                get_tool_input_schema=self._input_schema,
            )
        self.server.upstream_capabilities = hub.upstream_capabilities  # type: ignore[method-assign]
        self.server.middleware.append(self._track_sessions)
        if hub.tracing is not None:  # one SERVER span per request: patchbay's, instead of the SDK's
            self.server.middleware = hub.tracing.sdk_middleware(self.server.middleware)
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=dns_rebinding_protection,
            allowed_hosts=allowed_hosts or [],
            allowed_origins=allowed_origins or [],
        )
        self.manager = StreamableHTTPSessionManager(
            app=self.server,
            stateless=False,
            security_settings=security,
            session_idle_timeout=session_idle_timeout,
        )
        hub.add_notification_observer(self._upstream_notification)
        # Handshake-era sessions the fast path holds without the SDK until they need it (lean_sessions.py).
        self.lean: LeanSessions | None = None
        if sdk_adapter.can_materialise():
            self.lean = self.fast_sessions.lean = LeanSessions(
                manager=self.manager,
                server=self.server,
                path=self.path,
                idle_timeout=session_idle_timeout,
                wait_started=hub.wait_started,
                open_sdk=self.adopt,
                opened=self._lean_opened,
                ended=self._lean_ended,
            )

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._stopped = False
        self._events = self.hub.events()
        self._seen = self._snapshot()
        self._fanout = asyncio.create_task(self._watch_catalog(), name="patchbay-mcp-catalog-watch")
        self._notifier = asyncio.create_task(self._notify_catalog_changes(), name="patchbay-mcp-fanout")
        if self.lean is not None:
            self.lean.start()

    async def stop(self) -> None:
        """End the listen streams, then cancel and await every task this endpoint started."""
        self._stopped = True
        self.hub.remove_notification_observer(self._upstream_notification)
        if self.lean is not None:
            await self.lean.stop()
        self._listen.close()
        if self._events is not None:
            self._events.close()
        tasks = [t for t in (self._fanout, self._notifier, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """Run a short job owned by this endpoint: kept until done, its failure logged, cancelled on stop."""
        if self._stopped:  # nobody would await it
            coro.close()
            return
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.debug("could not %s: %r", what, t.exception())

        task.add_done_callback(done)

    async def _watch_catalog(self) -> None:
        assert self._events is not None
        async for event in self._events:
            if self.profile is not None:
                if isinstance(event, CatalogEvent | ProfilesChangedEvent):
                    changed = self._view_changed()
                    if changed:
                        self._kinds |= changed
                        self._catalog_changed.set()
                continue
            if not isinstance(event, CatalogEvent):
                continue
            if event.server is None and not event.added and not event.removed:
                continue  # a re-ranking (config reload) that changed no name: clients have nothing to re-list
            self._catalog_changed.set()

    # --- the profile's view (``profile`` set) ------------------------------------------------------

    def _view(self) -> ProfileView | None:
        """The profile's current view (looked up each time: a reload replaces it); None for ``/mcp``."""
        if self.profile is None:
            return None
        try:
            return self.hub.profile(self.profile)
        except UnknownProfileError:  # removed by a reload; the route is going away
            return _EMPTY_VIEW

    def _snapshot(self) -> Any:
        view = self._view()
        return view.snapshot(self.hub.catalog) if view is not None else None

    def _view_changed(self) -> set[str]:
        """Which lists this profile's clients can see differ from what they were last told about (a
        search profile's tools, its meta-tools, never do)."""
        now = self._snapshot()
        if now == self._seen:
            return set()
        tools, resources, templates, prompts = now
        seen_tools, seen_resources, seen_templates, seen_prompts = self._seen
        changed = {"tools"} if tools != seen_tools else set()
        if resources != seen_resources or templates != seen_templates:
            changed.add("resources")
        if prompts != seen_prompts:
            changed.add("prompts")
        self._seen = now
        return changed

    def _admits_source(self, source: str) -> bool:
        view = self._view()
        return view is None or view.admits_source(source)

    def _check_owner(self, owner: str, what: str, kind: str) -> None:
        """Resources, templates and prompts of servers outside the profile are not there for its clients."""
        if not self._admits_source(owner):
            raise UnknownToolError(what, [], kind=f"{kind} in profile {self.profile!r}")

    async def _notify_catalog_changes(self) -> None:
        """One round at a time, one pending: a burst of N catalog changes costs O(1) rounds."""
        while True:
            self._fanout_idle.set()
            await self._catalog_changed.wait()
            self._fanout_idle.clear()
            self._catalog_changed.clear()
            kinds, self._kinds = self._kinds, set()
            await self.notify_catalog_changed(kinds if self.profile is not None else None)

    async def fanout_settled(self) -> None:
        """Return once no catalog notification round is pending or in flight."""
        while self._catalog_changed.is_set() or not self._fanout_idle.is_set():
            await self._fanout_idle.wait()
            await asyncio.sleep(0)  # let a round that was just triggered start

    async def notify_catalog_changed(self, kinds: set[str] | None = None) -> None:
        """Tell every client: modern ones through their listen streams, handshake-era ones directly.

        ``kinds`` (``tools``, ``resources``, ``prompts``) limits which lists are said to have changed."""
        kinds = set(LIST_KINDS) if kinds is None else kinds & set(LIST_KINDS)
        if not kinds:
            return
        self.notify_rounds += 1
        for kind in LIST_KINDS:
            if kind in kinds:
                await self.bus.publish(LIST_KINDS[kind]())
        lean = self.lean.streams() if self.lean is not None else []
        await asyncio.gather(
            *(self._notify_session(s, kinds) for s in list(self._legacy.values())),
            *(_notify_stream(stream, kinds) for stream in lean),
        )

    @staticmethod
    async def _notify_session(session: ServerSession, kinds: set[str]) -> None:
        """One session's list_changed notifications; a session that does not drain its stream is skipped."""
        try:
            async with asyncio.timeout(NOTIFY_TIMEOUT):
                if "tools" in kinds:
                    await session.send_tool_list_changed()
                if "resources" in kinds:
                    await session.send_resource_list_changed()
                if "prompts" in kinds:
                    await session.send_prompt_list_changed()
        except Exception:
            log.debug("could not notify a client session", exc_info=True)

    async def _track_sessions(self, ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        """Remember each handshake-era session (the SDK keeps no list) and forget it when it ends.

        ``initialize`` and ``server/discover`` wait for the hub's first start, so the capabilities they
        advertise (completions, subscriptions) reflect every upstream."""
        if ctx.method in ("initialize", "server/discover"):
            await self.hub.wait_started()
        result = await call_next(ctx)
        if ctx.method == "initialize":
            self._allow_fast_path(ctx, result)
            await self._save_initialized(ctx, result)
        elif ctx.method == "notifications/initialized":
            self._track(ctx.session)
        return result

    def _track(self, session: Any) -> int | None:
        """Track the session's connection until it ends (idempotent); its key, None if the SDK gives none.

        Also called by requests that need it (subscribe, setLevel): the SDK may run them before it has
        processed the client's ``notifications/initialized``."""
        conn = sdk_adapter.connection_of(session)
        if conn is None:
            return None
        key = id(conn)
        if key not in self._legacy:
            if not sdk_adapter.on_connection_close(conn, self._forget, key):
                return None
            self._legacy[key] = session
        return key

    def _allow_fast_path(self, ctx: Any, result: Any) -> None:
        """From a successful ``initialize`` on, the SDK serves the session's requests, and so may the fast
        path: its ``tools/list`` always (in the negotiated version), its calls unless the client can be
        asked things back (sampling, elicitation: the SDK routes those)."""
        conn = sdk_adapter.connection_of(ctx.session)
        session_id = getattr(conn, "session_id", None)
        negotiated = getattr(result, "protocol_version", None)
        if isinstance(result, dict):
            negotiated = result.get("protocolVersion")
        caps = (ctx.params or {}).get("capabilities")
        asks_back = not isinstance(caps, dict) or any(
            caps.get(k) is not None for k in ("sampling", "elicitation")
        )
        if (
            session_id
            and isinstance(negotiated, str)
            # one callback for both (each costs ~0.45 KiB per session, and sessions are many)
            and sdk_adapter.on_connection_close(conn, self.fast_sessions.forget, session_id)
        ):
            self.fast_sessions.listable[session_id] = negotiated
            self.fast_sessions.clients[session_id] = client_info((ctx.params or {}).get("clientInfo"))
            if not asks_back:
                self.fast_sessions.eligible.add(session_id)

    # --- session state in Redis (cluster mode): another replica adopts the session if this one dies -----

    async def _save_initialized(self, ctx: Any, result: Any) -> None:
        """Before the ``initialize`` answer goes out, so the client can never reach a replica without it."""
        conn = sdk_adapter.connection_of(ctx.session)
        session_id = getattr(conn, "session_id", None)
        negotiated = result.get("protocolVersion") if isinstance(result, dict) else None
        negotiated = negotiated or getattr(result, "protocol_version", None)
        if self._store is None or not session_id or not isinstance(negotiated, str):
            return
        if not sdk_adapter.on_connection_close(conn, self._states.pop, session_id, None):
            return
        self._states[session_id] = session_state(self.path, negotiated, dict(ctx.params or {}))
        await self._store.save(session_id, self._states[session_id])

    async def _lean_opened(self, session_id: str, state: dict[str, Any]) -> None:
        """A lean session starts (before its ``initialize`` is answered): what ``_allow_fast_path`` and
        ``_save_initialized`` do for a session the SDK opened."""
        params = state["clientParams"]
        caps = params.get("capabilities")
        self.fast_sessions.listable[session_id] = state["protocolVersion"]
        self.fast_sessions.clients[session_id] = client_info(params.get("clientInfo"))
        if isinstance(caps, dict) and not any(caps.get(k) is not None for k in ("sampling", "elicitation")):
            self.fast_sessions.eligible.add(session_id)
        if self._store is not None:
            self._states[session_id] = state
            await self._store.save(session_id, state)

    def _lean_ended(self, session_id: str) -> None:
        """A lean session ended without ever needing the SDK (idle timeout, DELETE)."""
        self.fast_sessions.forget(session_id)
        self._states.pop(session_id, None)

    async def _save_change(self, session: Any, **change: Any) -> None:
        """A setLevel or (un)subscribe: stored before its answer goes out."""
        session_id = getattr(sdk_adapter.connection_of(session), "session_id", None)
        state = self._states.get(session_id) if session_id else None
        if state is None or self._store is None:
            return
        state.update(change)
        await self._store.save(session_id, state)

    async def adopt(self, session_id: str, state: dict[str, Any]) -> bool:
        """Reopen a session another replica initialised (it died) from its stored ``state``: same id,
        same negotiated version and client, its log level, its resource subscriptions held again. Also
        how a lean session gets its SDK session when it first needs one (``lean_sessions.py``)."""
        version, params = state.get("protocolVersion"), state.get("clientParams")
        if not isinstance(version, str) or not isinstance(params, dict):
            return False
        level = state.get("logLevel")
        wanted = [u for u in state.get("subscriptions") or [] if isinstance(u, str)]
        keys: list[int] = []

        def ready(connection: Any, session: ServerSession) -> None:
            key = self._track(session)
            if key is None:
                return
            keys.append(key)
            if level in LEVELS:
                self._log_levels[key] = LEVELS.index(level)
            caps = params.get("capabilities")
            if sdk_adapter.on_connection_close(connection, self.fast_sessions.forget, session_id):
                self.fast_sessions.listable[session_id] = version
                self.fast_sessions.clients[session_id] = client_info(params.get("clientInfo"))
                if isinstance(caps, dict) and not any(
                    caps.get(k) is not None for k in ("sampling", "elicitation")
                ):
                    self.fast_sessions.eligible.add(session_id)
            if self._store is not None and sdk_adapter.on_connection_close(
                connection, self._states.pop, session_id, None
            ):
                self._states[session_id] = {**state, "subscriptions": []}

        if not await sdk_adapter.adopt_session(
            self.manager, session_id, protocol_version=version, client_params=params, ready=ready
        ):
            return False
        if keys:
            held: list[str] = []
            for uri in wanted:  # held at this replica's hub from now on
                try:
                    await self.hub.subscribe_resource(uri)
                except PatchbayError as exc:
                    log.info("adopted session: cannot subscribe to %s again: %s", uri, exc)
                    continue
                held.append(uri)
                self._subscriptions.setdefault(keys[0], set()).add(uri)
                self._subscribers.setdefault(uri, set()).add(keys[0])
            if session_id in self._states:
                self._states[session_id]["subscriptions"] = held
        return True

    def _forget(self, key: int) -> None:
        self._legacy.pop(key, None)
        self._log_levels.pop(key, None)
        uris = self._subscriptions.pop(key, set())
        for uri in uris:
            self._drop_subscriber(uri, key)
        if uris:  # the session ended: release what it held at the hub
            self._spawn(self._release(sorted(uris)), "release resource subscriptions")

    def _drop_subscriber(self, uri: str, key: int) -> None:
        keys = self._subscribers.get(uri)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._subscribers[uri]

    async def _release(self, uris: list[str]) -> None:
        for uri in uris:
            await self.hub.unsubscribe_resource(uri)

    @property
    def sessions(self) -> int:
        """Open handshake-era sessions: the SDK's (once initialized) and the lean ones."""
        return len(self._legacy) + (len(self.lean) if self.lean is not None else 0)

    @property
    def notifiable(self) -> int:
        """The sessions a list_changed round goes to: the SDK's (tracked since their
        ``notifications/initialized``, or since they were adopted or materialised; the SDK sends on their
        GET stream if one is open) and the lean ones whose GET stream is open here."""
        return len(self._legacy) + (len(self.lean.streams()) if self.lean is not None else 0)

    # --- handlers ----------------------------------------------------------------------------------

    def _input_schema(self, name: str) -> dict[str, Any] | None:
        view = self._view()
        if view is not None:
            return view.input_schema(self.hub.catalog, name)
        entry = self.hub.catalog.tools.get(name)
        return entry.tool.input_schema if entry is not None else None

    # --- listings, in pages of ``listPageSize`` (paging.py) ----------------------------------------

    def _page(self, kind: str, cursor: str | None) -> Page[Any]:
        """One page of a listing, from the catalog's current version as this endpoint's clients see it
        (``CursorError`` for a cursor it cannot continue from)."""
        catalog = self.hub.catalog
        view = self._view()  # a reload may replace it without a new catalog version
        build: Callable[[], list[Any]]
        if kind == "tools":
            build = lambda: catalog.mcp_tools() if view is None else view.mcp_tools(catalog)  # noqa: E731
        elif kind == "resources":
            build = lambda: [  # noqa: E731
                e.resource.model_copy(update={"name": e.name})
                for e in catalog.resources.values()
                if view is None or view.admits_source(e.source)
            ]
        elif kind == "templates":
            build = lambda: [  # noqa: E731
                t.template.model_copy(update={"name": t.name})
                for t in catalog.templates
                if view is None or view.admits_source(t.source)
            ]
        else:
            build = lambda: [  # noqa: E731
                e.prompt.model_copy(update={"name": e.name})
                for e in catalog.prompts.values()
                if view is None or view.admits_source(e.source)
            ]
        size = list_page_size(self.hub.config.document)
        return self._pager.page(kind, (catalog.version, view), build, _identity[kind], cursor, size)

    def _sdk_page(self, kind: str, params: types.PaginatedRequestParams | None) -> Page[Any]:
        try:
            return self._page(kind, params.cursor if params is not None else None)
        except CursorError as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None

    def tools_list_json(self, protocol_version: str, cursor: str | None) -> bytes:
        """A ``tools/list`` result as the SDK would put it on the wire for ``protocol_version``, encoded
        once per page and version (the fast path sends it; 10,000 tools are megabytes of JSON).

        Each tool is sieved and encoded once per protocol version while the catalog keeps its object, so
        after one server re-lists only its tools are encoded again (the whole list: ~0.5 s for 10,000).
        Raises ``CursorError``; the caller hands such a request to the SDK, which answers -32602."""
        page = self._page("tools", cursor)
        if page.key[0] != self._encoded_for:  # a new list: keep the JSON of the tools still in it
            self._encoded.clear()
            self._encoded_for = page.key[0]
            current = {id(t) for t in self._pager.items("tools")}
            for version, cache in self._tool_json.items():
                self._tool_json[version] = {k: v for k, v in cache.items() if k in current}
        key = (page.key, protocol_version)
        hit = self._encoded.get(key)
        if hit is None:
            if len(self._encoded) >= 64:
                self._encoded.clear()
            hit = self._encoded[key] = self._encode_tools_page(protocol_version, page)
        return hit

    def _encode_tools_page(self, protocol_version: str, page: Page[Any]) -> bytes:
        cache = self._tool_json.setdefault(protocol_version, {})
        missing = [t for t in page.items if (hit := cache.get(id(t))) is None or hit[0] is not t]
        if missing:
            dump: dict[str, Any] = {"by_alias": True, "mode": "json", "exclude_none": True}
            batch = types.ListToolsResult(tools=[]).model_dump(**dump)  # the version may need its fields
            batch["tools"] = [t.model_dump(**dump) for t in missing]
            sieved = serialize_server_result("tools/list", protocol_version, batch)["tools"]
            for tool, data in zip(missing, sieved, strict=True):
                cache[id(tool)] = (tool, replies.encode(data))
        parts = b",".join(cache[id(t)][1] for t in page.items)
        envelope = self._wire_result(
            "tools/list", protocol_version, types.ListToolsResult(tools=[], next_cursor=page.next_cursor)
        )
        envelope.pop("tools", None)
        rest = replies.encode(envelope)  # b"{...}": its members follow the tools
        return b'{"tools":[' + parts + b"]" + (b"," + rest[1:] if envelope else b"}")

    def _wire_result(self, method: str, protocol_version: str, result: Any) -> dict[str, Any]:
        """What the SDK's runner does to a handler's result (``ServerRunner._serialize``): dumped, sieved
        by the version's schema and, in the 2026-07-28 era, typed and stamped with the server's info."""
        dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        dumped = serialize_server_result(method, protocol_version, dumped)
        if protocol_version in MODERN_PROTOCOL_VERSIONS:
            dumped.setdefault("resultType", "complete")
            meta = dumped.get("_meta")
            dumped["_meta"] = {**(meta or {}), SERVER_INFO_META_KEY: self.server.server_info_stamp}
        return dumped

    async def _list_tools(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        await self.hub.wait_started()  # a client that connects during start-up must see every tool
        page = self._sdk_page("tools", params)
        return types.ListToolsResult(tools=list(page.items), next_cursor=page.next_cursor)

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        progress = None
        meta = ctx.meta or {}
        if meta.get("progress_token", meta.get("progressToken")) is not None:  # the SDK hands it snake_case
            session = ctx.session

            async def progress(p: float, total: float | None, message: str | None) -> None:
                await session.report_progress(p, total, message)

        try:
            result = await self.hub.call_tool(
                params.name,
                params.arguments,
                progress=progress,
                client=_CallingClient(ctx.session, ctx.request_id),
                profile=self.profile,
                caller=_caller(ctx),
                client_info=_client(ctx),
            )
        except Exception as exc:
            if not isinstance(exc, PatchbayError):
                log.exception("tools/call %r failed", params.name)
            answer = replies.call_outcome(exc)
            if isinstance(answer, MCPError):
                raise answer from None
            return answer
        return result

    async def _list_resources(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        await self.hub.wait_started()
        page = self._sdk_page("resources", params)
        return types.ListResourcesResult(resources=list(page.items), next_cursor=page.next_cursor)

    async def _list_templates(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        await self.hub.wait_started()
        page = self._sdk_page("templates", params)
        return types.ListResourceTemplatesResult(
            resource_templates=list(page.items), next_cursor=page.next_cursor
        )

    async def _read_resource(
        self, ctx: Any, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        try:
            if self.profile is not None:
                uri = str(params.uri)
                self._check_owner(self.hub.catalog.resource_owner(uri), uri, "resource")
            return await self.hub.read_resource(
                str(params.uri), caller=_caller(ctx), client_info=_client(ctx)
            )
        except PatchbayError as exc:
            raise replies.mcp_error(exc) from None

    async def _list_prompts(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        await self.hub.wait_started()
        page = self._sdk_page("prompts", params)
        return types.ListPromptsResult(prompts=list(page.items), next_cursor=page.next_cursor)

    async def _get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        try:
            if self.profile is not None:
                self._check_owner(self.hub.catalog.prompt(params.name).source, params.name, "prompt")
            return await self.hub.get_prompt(
                params.name, params.arguments, caller=_caller(ctx), client_info=_client(ctx)
            )
        except PatchbayError as exc:
            raise replies.mcp_error(exc) from None

    async def _complete(self, ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
        """``completion/complete``, answered by the server owning the prompt or resource template."""
        dump: dict[str, Any] = {"by_alias": True, "exclude_none": True, "mode": "json"}
        context = params.context.model_dump(**dump) if params.context is not None else None
        try:
            if self.profile is not None:
                self._check_ref(params.ref.model_dump(**dump))
            return await self.hub.complete(
                params.ref.model_dump(**dump), params.argument.model_dump(**dump), context
            )
        except PatchbayError as exc:
            raise replies.mcp_error(exc) from None

    def _check_ref(self, ref: dict[str, Any]) -> None:
        """A completion's prompt or resource template must be the profile's too."""
        catalog = self.hub.catalog
        if ref.get("type") == "ref/prompt":
            name = str(ref.get("name"))
            self._check_owner(catalog.prompt(name).source, name, "prompt")
        elif ref.get("type") == "ref/resource":
            uri = str(ref.get("uri"))
            tpl = next((t for t in catalog.templates if t.template.uri_template == uri), None)
            self._check_owner(tpl.source if tpl is not None else catalog.resource_owner(uri), uri, "resource")

    async def _subscribe(self, ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        """``resources/subscribe`` from a handshake-era session: held at the hub until it unsubscribes
        or the session ends."""
        uri = str(params.uri)
        key = self._track(ctx.session)
        if key is None:
            raise MCPError(types.INTERNAL_ERROR, "resources/subscribe: this session cannot be tracked")
        held = self._subscriptions.setdefault(key, set())
        if uri in held:
            return types.EmptyResult()
        try:
            if self.profile is not None:
                self._check_owner(self.hub.catalog.resource_owner(uri), uri, "resource")
            await self.hub.subscribe_resource(uri)
        except PatchbayError as exc:
            raise replies.mcp_error(exc) from None
        if key not in self._legacy:  # the session ended while the upstream answered
            self._spawn(self._release([uri]), "release a resource subscription")
            return types.EmptyResult()
        self._subscriptions.setdefault(key, set()).add(uri)
        self._subscribers.setdefault(uri, set()).add(key)
        await self._save_change(ctx.session, subscriptions=sorted(self._subscriptions[key]))
        return types.EmptyResult()

    async def _unsubscribe(self, ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        uri = str(params.uri)
        key = id(sdk_adapter.connection_of(ctx.session))
        held = self._subscriptions.get(key)
        if held is None or uri not in held:
            return types.EmptyResult()
        held.discard(uri)
        self._drop_subscriber(uri, key)
        await self._save_change(ctx.session, subscriptions=sorted(held))
        try:
            await self.hub.unsubscribe_resource(uri)
        except PatchbayError as exc:
            raise replies.mcp_error(exc) from None
        return types.EmptyResult()

    async def _listen_with_resources(self, ctx: Any, params: Any) -> Any:
        """``subscriptions/listen`` (2026-07-28): the SDK's handler, plus holding the upstream
        subscriptions for the stream's ``resourceSubscriptions`` while it is open."""
        notifications = getattr(params, "notifications", None)
        wanted = list(dict.fromkeys(getattr(notifications, "resource_subscriptions", None) or ()))
        held: list[str] = []
        try:
            for uri in wanted:
                try:
                    if self.profile is not None:
                        self._check_owner(self.hub.catalog.resource_owner(uri), uri, "resource")
                    await self.hub.subscribe_resource(uri)
                    held.append(uri)
                except PatchbayError as exc:
                    log.info("listen stream: cannot subscribe to %s: %s", uri, exc)
            return await self._listen(ctx, params)
        finally:
            if held:
                self._spawn(self._release(held), "release resource subscriptions")

    async def _set_level(self, ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        key = self._track(ctx.session)
        if key is not None:
            self._log_levels[key] = LEVELS.index(params.level)
            await self._save_change(ctx.session, logLevel=params.level)
        return types.EmptyResult()

    # --- upstream → downstream notifications -------------------------------------------------------

    def _upstream_notification(self, server: str, method: str, params: dict[str, Any]) -> None:
        if self.profile is not None and not self._admits_source(server):
            return  # a server outside the profile: its clients never see it
        if method == "notifications/resources/updated":
            self._resource_updated(params)
            return
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
                self._spawn(coro, "forward a log message")

    def _resource_updated(self, params: dict[str, Any]) -> None:
        """To exactly the sessions that subscribed to the URI, and to listen streams that asked for it."""
        uri = params.get("uri") if isinstance(params, dict) else None
        if not isinstance(uri, str):
            return
        self._spawn(self.bus.publish(ResourceUpdated(uri=uri)), "publish a resource update")
        for key in list(self._subscribers.get(uri, ())):
            session = self._legacy.get(key)
            if session is not None:
                self._spawn(session.send_resource_updated(uri), "forward a resource update")


async def _notify_stream(stream: Any, kinds: set[str]) -> None:
    """A lean session's list_changed, on the GET stream patchbay holds for it (as the SDK would send it)."""
    try:
        async with asyncio.timeout(NOTIFY_TIMEOUT):
            for kind in LIST_KINDS:
                if kind in kinds:
                    await stream.write(_LIST_CHANGED[kind])
    except Exception:
        log.debug("could not notify a lean client session", exc_info=True)


_LIST_CHANGED = {
    kind: b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/'
    + kind.encode()
    + b'/list_changed"}\r\n\r\n'
    for kind in LIST_KINDS
}
_EMPTY_VIEW = ProfileView("", ProfileSpec(servers=[]))  # a removed profile: nothing is in it
# What identifies an item of each listing (its epoch moves when these change, in order).
_identity: dict[str, Callable[[Any], str]] = {
    "tools": lambda t: str(t.name),
    "resources": lambda r: str(r.uri),
    "templates": lambda t: str(t.uri_template),
    "prompts": lambda p: str(p.name),
}


def tool_error_result(exc: PatchbayError) -> types.CallToolResult:
    """Kept for callers; the one builder is ``replies.tool_error_result``."""
    return replies.tool_error_result(exc)


def tool_error_json(exc: PatchbayError) -> dict[str, Any]:
    """Kept for callers (``app.py`` passes it to the fast path, which no longer uses it)."""
    return replies.call_result_json(replies.tool_error_result(exc))


def _client(ctx: Any) -> ClientInfo:
    """The client's name and version from its ``initialize`` (or a 2026-07-28 request's envelope)."""
    params = getattr(getattr(ctx, "session", None), "client_params", None)
    info = getattr(params, "client_info", None)
    if info is None:
        return ClientInfo(surface="mcp")
    return ClientInfo(getattr(info, "name", None), getattr(info, "version", None), "mcp")


def _caller(ctx: Any) -> Identity:
    """The identity the HTTP gate attached to the request this message came in on."""
    request = getattr(ctx, "request", None)
    return identity_of(getattr(request, "scope", None))
