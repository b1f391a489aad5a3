"""The Hub: config → sources → catalog → router, behind one small async API.

Everything else (the CLI, ``/mcp``, the REST API) is a thin surface over this class. Runtime changes
(add, update, remove, enable, agents, reloads) live in ``runtime.py``; the sources in ``sources.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

import mcp.types as types
from pydantic import ValidationError

from patchbay.audit import AuditLog, ClientInfo, parse_audit
from patchbay.catalog import Catalog, Format, Listing
from patchbay.config import HubConfig, ServerSpec, load_config, parse_config
from patchbay.dialin import AgentStatus, DialInAgent, token_digest
from patchbay.discovery import META_NAMES, call_meta
from patchbay.errors import (
    CallTimeoutError,
    ConfigError,
    NotOAuthServerError,
    PatchbayError,
    ServerUnavailableError,
    UnknownServerError,
    UnknownToolError,
    UpstreamError,
)
from patchbay.events import (
    AgentEvent,
    CallFeed,
    CatalogEvent,
    Event,
    EventBus,
    ServerStateEvent,
    Subscription,
)
from patchbay.identity import Identity
from patchbay.jsonrpc import METHOD_NOT_FOUND, ProgressCallback
from patchbay.llm import run_anthropic_tool_uses, run_openai_tool_calls
from patchbay.pinning import Pinning, ToolApprovedEvent, ToolChange, ToolChangedEvent, pinning_mode, pins_path
from patchbay.profiles import ProfileInfo, Profiles, ProfileView
from patchbay.ratelimit import RateLimitedError, RateLimiter, rate_limiter
from patchbay.runtime import RuntimeChanges
from patchbay.search import DEFAULT_LIMIT, SearchIndex, ToolMatch
from patchbay.semantic import HybridSearch, search_mode
from patchbay.sources import Source, SourceRegistry
from patchbay.supervisor import ServerStatus, ServerSupervisor
from patchbay.telemetry import tracing_for
from patchbay.transports.websocket import WebSocketWire

if TYPE_CHECKING:
    from patchbay.cluster.node import Cluster
    from patchbay.oauth import OAuthClient, OAuthManager

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
CallObserver = Callable[[str | None, str, str, float], None]
NotificationObserver = Callable[[str, str, dict[str, Any]], None]


class DownstreamClient(Protocol):
    """Whoever made a call, able to answer the upstream's requests during it (sampling, elicitation)."""

    async def request(self, method: str, params: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class UpstreamCapabilities:
    """What at least one ready upstream can do: what the hub may advertise downstream."""

    completions: bool = False
    resource_subscribe: bool = False


_R = TypeVar("_R", bound=types.Result)
_T = TypeVar("_T")


class _Hooks:
    """What sources report, turned into catalog changes and events. Kept off the Hub's public API."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def state_changed(self, source: Source, state: str, previous: str | None, error: str | None) -> None:
        log.info("server %r: %s%s", source.name, state, f" ({error})" if error else "")
        self._hub._bus.publish(
            ServerStateEvent(server=source.name, state=state, previous=previous, error=error)
        )

    def listing_changed(self, source: Source, listing: Listing | None) -> None:
        self._hub._listing_changed(source, listing)

    def notification(self, source: Source, method: str, params: dict[str, Any]) -> None:
        for observe in self._hub._notification_observers:
            try:
                observe(source.name, method, params)
            except Exception:
                log.exception("notification observer failed")

    async def upstream_request(self, source: Source, method: str, params: dict[str, Any]) -> Any:
        """An upstream asks its client something (sampling, elicitation, roots) during a call.

        It goes to the downstream client of the most recent call in flight to that server; stdio gives
        no way to tell which of several concurrent calls a request belongs to.
        """
        clients = self._hub._clients.get(source.name)
        if not clients:
            raise UpstreamError(
                source.name,
                METHOD_NOT_FOUND,
                f"{method}: no client is connected through patchbay to answer it",
            )
        return await clients[-1].request(method, params)

    def agent_state_changed(
        self, agent: DialInAgent, state: str, address: str | None, error: str | None
    ) -> None:
        self._hub._bus.publish(AgentEvent(agent=agent.name, state=state, address=address, error=error))


class Hub:
    """Supervises the configured MCP servers and dial-in agents, and routes calls to them.

    Use it as an async context manager: entering starts every enabled server in parallel and returns
    once each has either become ready or failed its first attempt; leaving stops them all.
    """

    def __init__(
        self,
        config: HubConfig | None = None,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        oauth: OAuthManager | None = None,
    ) -> None:
        self.config = config or HubConfig()
        self.default_timeout = default_timeout
        self._oauth = oauth
        self.catalog = Catalog()
        self._bus = EventBus()
        self._hooks = _Hooks(self)
        self._sources = SourceRegistry()
        self._started = False
        self._initial_start: asyncio.Future[None] | None = None
        self._call_observers: list[CallObserver] = []
        self._notification_observers: list[NotificationObserver] = []
        self._clients: dict[str, list[DownstreamClient]] = {}
        self._subscriptions: dict[str, int] = {}  # resource URI -> downstream subscribers
        self._subscribed_on: dict[str, Any] = {}  # source name -> the connection that has them
        self._background: set[asyncio.Task[Any]] = set()
        self._runtime = RuntimeChanges(self)
        self._pinning = Pinning(pinning_mode(self.config.document), pins_path(self.config.path))
        self._search: SearchIndex | HybridSearch | None = None  # built on the first search
        self._search_mode = search_mode(self.config.document)  # "lexical" or "hybrid" (semantic.py)
        self._embedding: asyncio.Task[None] | None = None  # embedding tools for hybrid search
        self._profiles = Profiles(self.config.profiles)
        self.cluster: Cluster | None = None  # cluster mode (``patchbay serve --cluster``): see cluster/
        # who did what (audit.py) and how often they may (ratelimit.py); both from the config's top level
        self.audit = AuditLog(parse_audit(self.config.document, self.config.path))
        self._limits = rate_limiter(self.config.document)
        self._call_ids = itertools.count(1)
        self._call_feed = CallFeed(self._bus)  # call events, for subscribers that want them
        for name, spec in self.config.servers.items():
            self._sources.add(self._new_supervisor(name, spec))
        for name, agent in self.config.agents.items():
            self._sources.add(self._new_agent(name, agent))
        self.tracing = tracing_for(self)  # OpenTelemetry (telemetry.py): None unless configured

    # --- construction ------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> Self:
        """A hub over a config file; runtime changes are saved back to it atomically."""
        return cls(load_config(path), **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **kwargs: Any) -> Self:
        """A hub over an in-memory config (nothing is saved)."""
        import json

        return cls(parse_config(json.dumps(data), source="<dict>"), **kwargs)

    def _new_supervisor(self, name: str, spec: ServerSpec) -> ServerSupervisor:
        leased = self.cluster.supervisor(name, spec) if self.cluster is not None else None
        if leased is not None:  # "replicas": "one" in cluster mode
            return leased
        return ServerSupervisor(
            name, spec, hooks=self._hooks, base_dir=self.config.base_dir, oauth=lambda: self.oauth
        )

    def _new_agent(self, name: str, spec: Any) -> DialInAgent:
        return DialInAgent(
            name, spec, self._hooks, self.config.base_dir, on_state=self._hooks.agent_state_changed
        )

    # --- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start every enabled server in parallel; return when each has settled (ready or failed)."""
        self._started = True
        self.audit.open()  # a no-op unless the hub was closed before
        initial = self._initial_start = asyncio.get_running_loop().create_future()
        try:
            sups = [s for s in self._supervisors().values() if s.spec.is_enabled]
            for s in sups:
                s.start()
            await asyncio.gather(*(s.wait_settled() for s in sups))
        finally:
            if not initial.done():
                initial.set_result(None)
        if self._search_mode == "hybrid":
            self._search_index()  # load the model and embed the catalog now, not on the first search

    async def wait_started(self) -> None:
        """Return once every enabled server has settled its first start (ready or failed).

        Listings ask this first, so a client that connects while servers start sees every tool, not an
        empty list it may keep. Returns at once when no initial start is in progress.
        """
        initial = self._initial_start
        if initial is not None and not initial.done():
            await asyncio.shield(initial)

    async def close(self) -> None:
        """Stop every server (their whole process groups) and drop every agent, in parallel."""
        self._started = False
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(
            *(s.stop() for s in self._supervisors().values()),
            *(a.disconnect("the hub is shutting down") for a in self._dialins().values()),
            *self._background,
            return_exceptions=True,
        )
        if self._oauth is not None:
            await self._oauth.close()
        if self.tracing is not None:
            await self.tracing.close()  # the last spans are exported before the hub is gone
        await self.audit.aclose()

    # --- status and catalog ------------------------------------------------------------------------

    def status(self) -> dict[str, ServerStatus]:
        """Per server, in config order: state, pid, protocol version, tools, restarts, errors, stderr tail."""
        return {name: self.server_status(name) for name in self._supervisors()}

    def server_status(self, name: str, *, tail: int = 20) -> ServerStatus:
        """One server's status; ``tail`` is how many stderr lines to include (at most 200 are kept)."""
        status = self._supervisor(name).status(self.catalog.conflicts.get(name), tail=tail)
        status.tool_count = self.catalog.tool_count(name)
        status.problems += self._pinning.problems(name)
        return status

    @property
    def servers(self) -> list[str]:
        return list(self._supervisors())

    def server_spec(self, name: str) -> ServerSpec:
        return self._supervisor(name).spec

    def tools(
        self,
        format: Format = "mcp",
        *,
        server: str | None = None,
        query: str | None = None,
        limit: int | None = None,
        profile: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every exposed tool as JSON-ready dicts: ``mcp`` Tool objects, ``openai`` or ``anthropic``.

        With ``query``, only the ``limit`` (default 20) tools that best match it, best first: the tools
        for one turn of a conversation (see ``search_tools``). With ``profile``, only that profile's;
        without ``query``, a ``"discovery": "search"`` profile gives its meta-tools ``search_tools`` and
        ``call_tool``, what its MCP clients list (``call_tool(..., profile=)`` answers them).
        """
        if server is not None:
            self._supervisor(server)
        view = self.profile(profile) if profile is not None else None
        if query is None:
            if limit is not None:
                raise ValueError("limit applies to a query; pass query= too")
            if view is None:
                return self.catalog.render(format, server)
            return view.render(self.catalog, format, server)
        allowed = self._allowed(server, view)
        matches = self._search_index().search(query, limit if limit is not None else 20, allowed=allowed)
        rendered = dict(zip(self.catalog.tools, self.catalog.render(format), strict=True))
        return [rendered[m.name] for m in matches]

    # --- tool search and pinning (search.py, pinning.py) -------------------------------------------

    def search_tools(
        self, query: str, limit: int = DEFAULT_LIMIT, *, profile: str | None = None
    ) -> list[ToolMatch]:
        """The tools that best match a request in the user's words, best first (offline BM25F); with
        ``profile``, only among that profile's tools."""
        view = self.profile(profile) if profile is not None else None
        return self._search_index().search(query, limit, allowed=self._allowed(None, view))

    async def asearch_tools(
        self, query: str, limit: int = DEFAULT_LIMIT, *, profile: str | None = None
    ) -> list[ToolMatch]:
        """``search_tools`` for async code: with ``"search": "hybrid"`` the request is embedded on a worker
        thread (about 10 ms of CPU), so the event loop keeps serving calls meanwhile."""
        view = self.profile(profile) if profile is not None else None
        index = self._search_index()
        if not isinstance(index, HybridSearch):
            return index.search(query, limit, allowed=self._allowed(None, view))
        vector = await asyncio.to_thread(index.encode_query, query)
        return index.search(query, limit, allowed=self._allowed(None, view), query_vector=vector)

    def search_status(self) -> dict[str, Any]:
        """The search mode, and for ``hybrid`` whether every tool is embedded yet (until then, or if the
        model could not be loaded, the tools without a vector are ranked lexically)."""
        index = self._search
        if self._search_mode != "hybrid":
            return {"mode": "lexical"}
        if not isinstance(index, HybridSearch):
            return {"mode": "hybrid", "ready": False, "pending": len(self.catalog.tools), "error": None}
        return {"mode": "hybrid", "ready": index.ready, "pending": len(index.pending()), "error": index.error}

    def _allowed(self, server: str | None, view: ProfileView | None) -> set[str] | frozenset[str] | None:
        allowed: set[str] | frozenset[str] | None = None
        if server is not None:
            allowed = {e.name for e in self.catalog.tools_of(server)}
        if view is not None:
            names = view.names(self.catalog)
            allowed = names if allowed is None else allowed & names
        return allowed

    # --- profiles (profiles.py) --------------------------------------------------------------------

    def profiles(self) -> dict[str, ProfileInfo]:
        """Every configured profile: its selection and how many tools it has now."""
        known = {s.name for s in self._sources}
        return {n: v.info(self.catalog, known) for n, v in self._profiles.views.items()}

    def profile(self, name: str) -> ProfileView:
        """One profile's view of the catalog; ``UnknownProfileError`` names the known ones."""
        return self._profiles.get(name)

    async def set_profile(self, name: str, spec: Mapping[str, Any]) -> ProfileInfo:
        """Add or replace a profile; saved to the config file first (atomically), like a server."""
        await self._runtime.set_profile(name, spec)
        return self.profiles()[name]

    async def remove_profile(self, name: str) -> None:
        """Forget a profile (saved); its ``/mcp/<name>`` endpoint closes its sessions."""
        await self._runtime.remove_profile(name)

    def _set_profiles(self, config: HubConfig) -> None:
        """A reload: adopt the new file's profiles, telling ``/mcp/<profile>`` routes what changed."""
        event = self._profiles.update(config.profiles)
        if event is not None:
            self._bus.publish(event)

    def _search_index(self) -> SearchIndex | HybridSearch:
        if self._search is None:
            self._search = HybridSearch() if self._search_mode == "hybrid" else SearchIndex()
        index = self._search
        index.sync(self.catalog)  # incremental: only tools that changed since the last search
        busy = self._embedding is not None and not self._embedding.done()
        if isinstance(index, HybridSearch) and not busy and index.error is None and index.pending():
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # no loop (a sync script before start): lexical until one runs
                return index
            self._embedding = self._own(index.embed_pending())
        return index

    async def prepare_search(self) -> None:
        """Return once search is as good as it gets: with ``"search": "hybrid"``, the model loaded and
        every current tool embedded (a one-off command waits for this; a server need not)."""
        await self.wait_started()
        self._search_index()
        while self._embedding is not None and not self._embedding.done():
            await asyncio.shield(self._embedding)
            self._search_index()  # tools that arrived meanwhile

    @property
    def pinning(self) -> str:
        """The pinning mode: ``off``, ``warn`` or ``block``."""
        return self._pinning.mode

    def tool_changes(self, server: str | None = None) -> list[ToolChange]:
        """Tools whose definition differs from its pin, awaiting approval (each has ``diff()``)."""
        return self._pinning.changes(server)

    def approve_tool(self, name: str) -> ToolChange:
        """Pin a changed tool's current definition; in ``block`` mode it rejoins listings and calls."""
        change = self._pinning.approve(name)
        self._bus.publish(ToolApprovedEvent(server=change.server, tool=change.name, original=change.original))
        source = self._sources.get(change.server)
        conn = source.connection if source is not None else None
        if change.blocked and source is not None and conn is not None:
            self._listing_changed(source, conn.listing)
        return change

    def share_pins(self, url: str) -> None:
        """Cluster mode: pins of record in Redis (cluster/pins.py), this replica's own file's joining them."""
        if self._pinning.mode == "off":
            return
        from patchbay.cluster.pins import SharedPinStore

        shared = SharedPinStore(url)
        shared.adopt(self._pinning.store)
        self._pinning.store = shared

    def rescreen(self) -> None:
        """Screen every listing again (a tool was approved on another replica: it may rejoin here)."""
        for source in list(self._sources):
            conn = source.connection
            if conn is not None and conn.listing is not None and self._sources.get(source.name) is source:
                self._listing_changed(source, conn.listing)

    def resources(self) -> list[types.Resource]:
        return [e.resource.model_copy(update={"name": e.name}) for e in self.catalog.resources.values()]

    def resource_templates(self) -> list[types.ResourceTemplate]:
        return [e.template.model_copy(update={"name": e.name}) for e in self.catalog.templates]

    def prompts(self) -> list[types.Prompt]:
        return [e.prompt.model_copy(update={"name": e.name}) for e in self.catalog.prompts.values()]

    def upstream_capabilities(self) -> UpstreamCapabilities:
        """What some ready upstream can do (completions, resource subscriptions)."""
        caps = [s.capabilities() for s in self._sources if s.connection is not None]
        return UpstreamCapabilities(
            completions=any("completions" in c for c in caps),
            resource_subscribe=any(
                isinstance(c.get("resources"), dict) and bool(c["resources"].get("subscribe")) for c in caps
            ),
        )

    # --- routing (the hot path) --------------------------------------------------------------------

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
        client: DownstreamClient | None = None,
        profile: str | None = None,
        caller: Identity | None = None,
        client_info: ClientInfo | None = None,
    ) -> types.CallToolResult:
        """Call an exposed tool; returns the upstream's full ``CallToolResult``.

        With ``profile``, a tool outside that profile is refused (``ToolNotInProfileError``); a search
        profile also answers its meta-tools ``search_tools`` and ``call_tool`` (see ``discovery.py``).
        ``caller`` is who asks (the surfaces pass the identity their gate found; ``None`` is the
        process owner): a caller bound to a profile is held to it.

        Raises ``UnknownToolError`` (with close matches), ``ServerUnavailableError`` (not running, or it
        died during the call), ``CallTimeoutError`` (a cancellation was sent upstream) or
        ``UpstreamError`` (a JSON-RPC error). A tool that fails on its own reports ``isError`` instead.
        A tool whose server is starting, restarting or in backoff is waited for, within the timeout.
        ``client``, if given, answers the requests the upstream makes during the call (sampling,
        elicitation, roots): ``/mcp`` passes the downstream session that made the call.
        ``client_info`` (the client's name and version, for the audit log) comes from the surface.
        A call over its rate limit raises ``RateLimitedError`` before anything reaches the upstream.
        """
        if caller is not None and caller.profile is not None:
            profile = caller.profile
        audit, limits, events = self.audit.active, self._limits, self._bus.wants_calls
        if not (self._call_observers or audit or limits or events):
            return await self._call_tool(name, arguments, timeout, progress, client, profile, caller)
        started = time.perf_counter()
        server, outcome, call_id = None, "error", 0
        wall = time.time() if audit else 0.0
        try:
            entry = self.catalog.tools.get(name)
            server = entry.source if entry else None
            if events:
                call_id = next(self._call_ids)
                who = caller.name if caller is not None else "local"
                client_name = client_info.name if client_info is not None else None
                self._call_feed.started(call_id, name, server, who, client_name)
            if limits is not None:
                if limits.shared:  # cluster mode: the buckets are in Redis (cluster/ratelimits.py)
                    await limits.acheck(caller, name)
                else:
                    limits.check(caller, name)
            result = await self._call_tool(name, arguments, timeout, progress, client, profile, caller)
            outcome = "tool_error" if result.is_error else "ok"
            return result
        except RateLimitedError:
            outcome = "rate_limited"
            raise
        except CallTimeoutError:
            outcome = "timeout"
            raise
        except ServerUnavailableError:
            outcome = "unavailable"
            raise
        except UpstreamError:
            outcome = "upstream_error"
            raise
        except UnknownToolError:
            outcome = "unknown_tool"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            elapsed = time.perf_counter() - started
            if audit:
                self.audit.call(
                    "tool_call", caller, client_info, name, server, wall, elapsed, outcome, arguments
                )
            if call_id:
                who = caller.name if caller is not None else "local"
                client_name = client_info.name if client_info is not None else None
                self._call_feed.finished(call_id, name, server, who, client_name, elapsed, outcome)
            for observe in self._call_observers:
                try:
                    observe(server, name, outcome, elapsed)
                except Exception:
                    log.exception("call observer failed")

    def add_call_observer(self, observer: CallObserver) -> None:
        """``observer(server, tool, outcome, seconds)`` after every call (metrics); keep it cheap."""
        self._call_observers.append(observer)

    async def _call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None,
        timeout: float | None,
        progress: ProgressCallback | None,
        client: DownstreamClient | None,
        profile: str | None = None,
        caller: Identity | None = None,
    ) -> types.CallToolResult:
        view = None
        if profile is not None:
            view = self._profiles.get(profile)
            if view.searching and name in META_NAMES:  # search_tools / call_tool (discovery.py)
                return await call_meta(
                    self, profile, name, arguments, timeout=timeout, progress=progress, client=client
                )
            if name not in view.names(self.catalog):  # a set lookup; the view is rebuilt once per version
                self._outside_profile(view, name)
        entry = self.catalog.tools.get(name)
        source = self._sources.get(entry.source) if entry is not None else None
        conn = source.connection if source is not None else None
        if conn is None:  # not the hot path: find out who owns the name, and wait for it if it is coming
            try:
                source, conn, timeout = await self._await_owner(name, timeout)
                entry = self.catalog.tool(name)
            except UnknownToolError as exc:
                if view is not None and type(exc) is UnknownToolError:  # suggest the profile's names only
                    raise view.refuse(self.catalog, name) from None
                raise
            if view is not None and name not in view.names(self.catalog):
                raise view.refuse(self.catalog, name)
        assert entry is not None and source is not None
        route = source.name
        if source.per_user and caller is not None:  # the caller's own upstream sign-in, never another's
            from patchbay.oauth.per_user import SignInRequired

            try:
                conn, route = await source.connection_for(caller)
            except SignInRequired as exc:
                text = types.TextContent(type="text", text=str(exc))
                return types.CallToolResult(content=[text], is_error=True)
        limit = source.max_in_flight
        if limit is not None and conn.peer.in_flight >= limit:
            raise ServerUnavailableError(
                source.name, f"agent {source.name!r} already has {limit} calls in flight (maxInFlight)"
            )
        params = {"name": entry.original, "arguments": dict(arguments) if arguments else {}}
        request = conn.peer.request(
            "tools/call",
            params,
            timeout=timeout or source.call_timeout or self.default_timeout,
            progress=progress,
            target=entry.original,
        )
        if self.tracing is not None:  # a CLIENT span; its context goes upstream in params._meta
            request = self.tracing.upstream(request, source, "tools/call", params, name)
        if client is None:
            raw = await request
        else:
            clients = self._clients.setdefault(route, [])
            clients.append(client)
            try:
                raw = await request
            finally:
                clients.remove(client)
        return self._validate(types.CallToolResult, raw, source.name, f"tool {entry.original!r}")

    def _outside_profile(self, view: ProfileView, name: str) -> None:
        """Refuse a name outside the profile, unless it is not listed yet and would belong to it once its
        owner (starting, restarting) lists it: then the call waits for it like any other."""
        owner = None if name in self.catalog.tools else self._sources.owner_of_name(name)
        if owner is None or not view.admits(owner.name, name):
            raise view.refuse(self.catalog, name)

    async def _await_owner(self, name: str, timeout: float | None) -> tuple[Source, Any, float | None]:
        """The source that owns ``name`` and its connection, waiting while the hub or it starts.

        Returns what is left of ``timeout``, so waiting and calling share one budget.
        """
        self._pinning.check_callable(name)
        loop = asyncio.get_running_loop()
        started = loop.time()
        initial = self._initial_start
        if initial is not None and not initial.done():
            with contextlib.suppress(TimeoutError):  # then answer with whatever is known now
                await asyncio.wait_for(asyncio.shield(initial), timeout or self.default_timeout)
        entry = self.catalog.tools.get(name)
        source = self._sources.get(entry.source) if entry is not None else self._sources.owner_of_name(name)
        if source is None:
            if entry is not None:  # its source was just removed
                raise ServerUnavailableError(entry.source, f"server {entry.source!r} was removed")
            raise UnknownToolError(name, Catalog.suggest(name, self.catalog.tools))
        budget = timeout or source.call_timeout or self.default_timeout
        conn = source.connection
        if conn is None:
            conn = await source.wait_connection(budget - (loop.time() - started))
        if name not in self.catalog.tools:
            raise UnknownToolError(name, Catalog.suggest(name, self.catalog.tools))
        left = budget - (loop.time() - started)
        if left <= 0:
            raise CallTimeoutError(source.name, name, budget)
        return source, conn, left

    async def read_resource(
        self,
        uri: str,
        *,
        timeout: float | None = None,
        caller: Identity | None = None,
        client_info: ClientInfo | None = None,
    ) -> types.ReadResourceResult:
        async def read() -> tuple[str, types.ReadResourceResult]:
            await self.wait_started()
            owner = self.catalog.resource_owner(uri)
            self._hold_to_profile(caller, owner, uri, "resource")
            source = self._owner(owner)
            raw = await self._request(source, "resources/read", {"uri": uri}, timeout, uri, caller)
            return source.name, self._validate(
                types.ReadResourceResult, raw, source.name, f"resource {uri!r}"
            )

        return await self._audited("resource_read", uri, None, caller, client_info, read())

    async def get_prompt(
        self,
        name: str,
        arguments: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
        caller: Identity | None = None,
        client_info: ClientInfo | None = None,
    ) -> types.GetPromptResult:
        async def get() -> tuple[str, types.GetPromptResult]:
            await self.wait_started()
            entry = self.catalog.prompt(name)
            self._hold_to_profile(caller, entry.source, name, "prompt")
            source = self._owner(entry.source)
            params: dict[str, Any] = {"name": entry.original}
            if arguments:
                params["arguments"] = dict(arguments)
            raw = await self._request(source, "prompts/get", params, timeout, entry.original, caller)
            return source.name, self._validate(
                types.GetPromptResult, raw, source.name, f"prompt {entry.original!r}"
            )

        return await self._audited("prompt_get", name, arguments, caller, client_info, get())

    async def _audited(
        self,
        event: str,
        target: str,
        arguments: Any,
        caller: Identity | None,
        client_info: ClientInfo | None,
        work: Coroutine[Any, Any, tuple[str, _T]],
    ) -> _T:
        """A resource read or prompt get, recorded in the audit log (not the hot path: one try more)."""
        if not self.audit.active:
            return (await work)[1]
        wall, started = time.time(), time.perf_counter()
        server, outcome = None, "error"
        try:
            server, result = await work
            outcome = "ok"
            return result
        except PatchbayError as exc:
            from patchbay.replies import error_kind

            outcome = error_kind(exc).name
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.audit.call(event, caller, client_info, target, server, wall, elapsed, outcome, arguments)

    def _hold_to_profile(self, caller: Identity | None, owner: str, what: str, kind: str) -> None:
        """A profile-bound caller reads resources and gets prompts of its profile's servers only."""
        if (
            caller is not None
            and caller.profile is not None
            and not self.profile(caller.profile).admits_source(owner)
        ):
            raise UnknownToolError(what, [], kind=f"{kind} in profile {caller.profile!r}")

    async def complete(
        self,
        ref: Mapping[str, Any],
        argument: Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> types.CompleteResult:
        """``completion/complete`` for an exposed prompt or a resource template, from its owner."""
        await self.wait_started()
        kind = ref.get("type")
        upstream_ref = dict(ref)
        if kind == "ref/prompt":
            entry = self.catalog.prompt(str(ref.get("name")))
            owner, upstream_ref["name"] = entry.source, entry.original
        elif kind == "ref/resource":
            uri = str(ref.get("uri"))
            template = next((t for t in self.catalog.templates if t.template.uri_template == uri), None)
            owner = template.source if template is not None else self.catalog.resource_owner(uri)
        else:
            raise UpstreamError("patchbay", -32602, f"completion ref type {kind!r} is not supported")
        source = self._owner(owner)
        params: dict[str, Any] = {"ref": upstream_ref, "argument": dict(argument)}
        if context:
            params["context"] = dict(context)
        raw = await self._request(source, "completion/complete", params, timeout, f"complete {kind}")
        return self._validate(types.CompleteResult, raw, source.name, "completion")

    async def subscribe_resource(self, uri: str) -> None:
        """Subscribe to a resource's updates; the owner is asked once, however many clients subscribe."""
        await self.wait_started()
        source = self._owner(self.catalog.resource_owner(uri))
        count = self._subscriptions.get(uri, 0)
        if count == 0:
            self._require_subscribe(source)
            await self._request(source, "resources/subscribe", {"uri": uri}, None, uri)
            self._subscribed_on[source.name] = source.connection
        self._subscriptions[uri] = count + 1

    async def unsubscribe_resource(self, uri: str) -> None:
        """Drop one subscription; the owner is told when the last subscriber is gone."""
        count = self._subscriptions.get(uri, 0)
        if count <= 0:
            return
        if count > 1:
            self._subscriptions[uri] = count - 1
            return
        del self._subscriptions[uri]
        try:
            source = self._owner(self.catalog.resource_owner(uri))
            await self._request(source, "resources/unsubscribe", {"uri": uri}, None, uri)
        except PatchbayError as exc:  # the owner is gone or forgot: nothing is left to release
            log.debug("unsubscribe %s: %s", uri, exc)

    @staticmethod
    def _require_subscribe(source: Source) -> None:
        res = source.capabilities().get("resources")
        if not (isinstance(res, dict) and res.get("subscribe")):
            raise UpstreamError(
                source.name, METHOD_NOT_FOUND, f"{source.name!r} does not support resource subscriptions"
            )

    async def _resubscribe(self, source: Source) -> None:
        """A source came (back) up: renew the subscriptions it owns (a new connection has none)."""
        conn = source.connection
        if conn is None or self._subscribed_on.get(source.name) is conn:
            return
        self._subscribed_on[source.name] = conn
        for uri in list(self._subscriptions):
            try:
                if self.catalog.resource_owner(uri) == source.name:
                    await self._request(source, "resources/subscribe", {"uri": uri}, None, uri)
            except PatchbayError as exc:
                log.warning("%s: could not renew the subscription to %s: %s", source.name, uri, exc)

    def _owner(self, name: str) -> Source:
        source = self._sources.get(name)
        if source is None:
            raise ServerUnavailableError(name, f"server {name!r} was removed")
        return source

    async def _request(
        self,
        source: Source,
        method: str,
        params: dict[str, Any],
        timeout: float | None,
        target: str,
        caller: Identity | None = None,
    ) -> Any:
        budget = timeout or source.call_timeout or self.default_timeout
        conn = source.connection or await source.wait_connection(budget)
        if source.per_user and caller is not None:
            conn, _ = await source.connection_for(caller)
        request = conn.peer.request(method, params, timeout=budget, target=target)
        if self.tracing is not None:  # a CLIENT span; its context goes upstream in params._meta
            request = self.tracing.upstream(request, source, method, params)
        return await request

    @staticmethod
    def _validate(model: type[_R], raw: Any, server: str, what: str) -> _R:
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            raise UpstreamError(
                server, -32603, f"{what} returned an invalid result: {exc.errors()[0]['msg']}"
            ) from None

    # --- runtime changes (saved at once; see runtime.py) -------------------------------------------

    async def add_server(self, name: str, spec: Mapping[str, Any] | ServerSpec) -> ServerStatus:
        """Validate, save to the config file, then start (if enabled) and wait for it to settle."""
        return await self._runtime.add_server(name, spec)

    async def update_server(self, name: str, spec: Mapping[str, Any] | ServerSpec) -> ServerStatus:
        """Replace a server's settings; it is restarted if it was running."""
        return await self._runtime.update_server(name, spec)

    async def remove_server(self, name: str) -> None:
        """Stop a server (its tools leave first) and forget it, and its OAuth tokens (revoked if possible)."""
        source = self._sources.get(name)
        remote = isinstance(source, ServerSupervisor) and source.spec.transport in ("http", "sse")
        await self._runtime.remove_server(name)
        if remote:
            await self.oauth.forget(name)

    # --- signing in (OAuth) ------------------------------------------------------------------------

    @property
    def oauth(self) -> OAuthManager:
        """Sign-in to remote servers (tokens in the user's data dir); made on first use, as the HTTP
        client stack it needs is only imported then."""
        if self._oauth is None:
            from patchbay.oauth import OAuthManager

            self._oauth = OAuthManager()
        return self._oauth

    def _oauth_client(self, name: str) -> OAuthClient:
        client = self._supervisor(name).oauth_client()
        if client is None:
            raise NotOAuthServerError(name)
        return client

    async def sign_in(self, name: str, *, redirect_uri: str | None = None) -> str:
        """The authorization URL to open for ``name``; when the redirect brings tokens, the server starts.

        The redirect goes to ``self.oauth.callback_url`` (``patchbay serve`` sets it to its own route), else
        to a loopback listener the hub runs until then. A ``client_credentials`` server gets its token at
        once and '' is returned.
        """
        self._oauth_client(name)
        return await self.oauth.sign_in(name, redirect_uri=redirect_uri)

    async def sign_out(self, name: str) -> bool:
        """Revoke and forget ``name``'s tokens; a running server then waits in ``needs_auth``."""
        self._oauth_client(name)
        held = await self.oauth.logout(name)
        sup = self._supervisor(name)
        if sup.connection is not None:
            await self.restart_server(name)
        return held

    def auth_status(self, name: str) -> dict[str, Any]:
        """What is known about ``name``'s sign-in (never a token)."""
        return self._oauth_client(name).status()

    def _per_user(self, name: str) -> ServerSupervisor:
        sup = self._supervisor(name)
        if not sup.per_user:
            from patchbay.oauth.per_user import NotPerUserError

            raise NotPerUserError(name)
        return sup

    async def sign_in_user(self, name: str, caller: Identity, *, redirect_uri: str | None = None) -> str:
        """The authorization URL for ``caller``'s own sign-in to a ``perUser`` server."""
        self._per_user(name).user_client(caller)
        return await self.oauth.sign_in_user(name, caller, redirect_uri=redirect_uri)

    async def sign_out_user(self, name: str, caller: Identity) -> bool:
        """Revoke and forget ``caller``'s own tokens for a ``perUser`` server, and close its connection."""
        sup = self._per_user(name)
        held = await sup.user_client(caller).logout()
        await sup.drop_user(caller)
        return held

    def user_auth_status(self, name: str, caller: Identity) -> dict[str, Any]:
        """``caller``'s own sign-in to a ``perUser`` server (never a token)."""
        status = self._per_user(name).user_client(caller).status()
        return {**status, "server": name, "identity": caller.name}

    async def set_enabled(self, name: str, enabled: bool) -> ServerStatus:
        return await self._runtime.set_enabled(name, enabled)

    async def restart_server(self, name: str) -> ServerStatus:
        """Stop and start again now, with the failure count reset (also revives a ``failed`` server)."""
        return await self._runtime.restart_server(name)

    async def apply_config(self, new: HubConfig) -> dict[str, list[str]]:
        """Adopt a config read from disk (a reload), all or nothing: see ``RuntimeChanges.apply_config``.
        The audit and rate-limit settings are validated first and adopted with the rest."""
        if self.cluster is not None:
            raise ConfigError(
                "this hub is a cluster replica: its config of record is in Redis, so a local file is not "
                "reloaded; change the config through the API or CLI of any replica (export it with "
                "`patchbay config export`)"
            )
        settings: list[Any] = []

        async def apply() -> dict[str, list[str]]:
            settings.extend(
                (
                    parse_audit(new.document, new.path),
                    self._rate_limiter(new.document),
                    pinning_mode(new.document),
                    search_mode(new.document),
                )
            )
            return await self._runtime.apply_config(new)

        changes = await self.audit.change("config.reload", None, apply())  # recorded, failed or not
        audit, limits, pin_mode, search = settings
        await asyncio.to_thread(self.audit.configure, audit)  # joins the old writer: off the loop
        self._limits = limits
        if pin_mode != self._pinning.mode:  # e.g. warn → block: changed tools are withheld at once
            self._pinning = Pinning(pin_mode, pins_path(new.path))
            self.rescreen()
        if search != self._search_mode:
            self._search_mode, self._search = search, None
            if search == "hybrid":
                self._search_index()  # start embedding now
        return changes

    def _rate_limiter(self, document: Mapping[str, Any]) -> RateLimiter | None:
        """The limiter a config asks for: in cluster mode, with its buckets shared in Redis."""
        limiter = rate_limiter(document)
        if limiter is None or self.cluster is None:
            return limiter
        from patchbay.cluster.ratelimits import SharedRateLimiter

        return SharedRateLimiter(limiter.settings, self.cluster.redis)

    def adopt_limits(self) -> None:
        """Rate limits from the config now in force (the cluster's config of record, once adopted)."""
        self._limits = self._rate_limiter(self.config.document)

    # --- LLM tool-calling loop ----------------------------------------------------------------------

    async def run_openai_tool_calls(
        self, message: Any, *, timeout: float | None = None, profile: str | None = None
    ) -> list[dict[str, Any]]:
        """Run an OpenAI assistant message's ``tool_calls`` concurrently; returns ``role: tool`` messages.

        Bad arguments, unknown tools and failures become error results the model can read (see llm.py).
        ``profile``: through that profile, as ``tools(format, profile=...)`` listed them.
        """
        return await run_openai_tool_calls(self, message, timeout=timeout, profile=profile)

    async def run_anthropic_tool_uses(
        self, content: Any, *, timeout: float | None = None, profile: str | None = None
    ) -> list[dict[str, Any]]:
        """Run Anthropic ``tool_use`` blocks concurrently; returns ``tool_result`` blocks."""
        return await run_anthropic_tool_uses(self, content, timeout=timeout, profile=profile)

    # --- agents ------------------------------------------------------------------------------------

    def agents(self) -> dict[str, AgentStatus]:
        """Every configured agent: connected or not, address, since, protocol, tools, calls in flight."""
        return {n: a.status(self.catalog.conflicts.get(n)) for n, a in self._dialins().items()}

    def agent_for_token(self, token: str) -> DialInAgent | None:
        """The agent this token belongs to; every agent is compared, in constant time each."""
        digest = token_digest(token)
        found = None
        for agent in self._dialins().values():
            if agent.matches(digest):
                found = agent
        return found

    async def attach_agent(self, agent: DialInAgent, ws: Any) -> None:
        """Serve one accepted WebSocket of ``agent`` until it closes (used by the ``/agents`` endpoint)."""
        await agent.serve(ws, WebSocketWire)

    async def add_agent(self, name: str, token: str, **settings: Any) -> AgentStatus:
        """Accept a new agent; only the token's SHA-256 is saved, so it is never shown back."""
        return await self._runtime.add_agent(name, token, **settings)

    async def revoke_agent(self, name: str) -> None:
        """Forget an agent: its token stops working and a live connection is closed at once."""
        await self._runtime.revoke_agent(name)

    # --- tokens (``auth.tokens``; the gate's table follows ``hub.config``) ---------------------------

    async def add_token(self, name: str, role: str, profile: str | None = None) -> str:
        """Create a bearer token for ``name``; only its SHA-256 is saved. Returns the token, once."""
        return await self._runtime.add_token(name, role, profile)

    async def remove_token(self, name: str) -> None:
        """Forget a token of the config (saved)."""
        await self._runtime.remove_token(name)

    # --- events ------------------------------------------------------------------------------------

    def events(self, *, calls: bool = False) -> Subscription:
        """Server state, catalog and config changes, from this call on: ``async for event in hub.events()``.

        Each subscription has its own bounded queue (a slow reader loses its oldest events and gets an
        ``events_dropped`` event); call ``close()`` on it, or let it be collected, to unsubscribe.
        With ``calls``, also ``call_started`` and ``call_finished`` for every tool call (built only while
        such a subscriber exists, so calls pay nothing for them otherwise).
        """
        return self._bus.subscribe(calls)

    def publish(self, event: Event) -> None:
        """Put an event on the hub's stream (used by surfaces such as the config watcher)."""
        self._bus.publish(event)

    def add_notification_observer(self, observer: NotificationObserver) -> None:
        """``observer(server, method, params)`` for every notification an upstream sends (e.g. logs)."""
        self._notification_observers.append(observer)

    def remove_notification_observer(self, observer: NotificationObserver) -> None:
        """Stop calling ``observer`` (an endpoint that stops, such as a removed profile's)."""
        with contextlib.suppress(ValueError):
            self._notification_observers.remove(observer)

    # --- internals ---------------------------------------------------------------------------------

    def _supervisors(self) -> dict[str, ServerSupervisor]:
        return self._sources.servers()  # type: ignore[return-value]

    def _dialins(self) -> dict[str, DialInAgent]:
        return self._sources.agents()  # type: ignore[return-value]

    def _supervisor(self, name: str) -> ServerSupervisor:
        sup = self._supervisors().get(name)
        if sup is None:
            raise UnknownServerError(name, list(self._supervisors()))
        return sup

    def _listing_changed(self, source: Source, listing: Listing | None) -> None:
        if listing is None or self._sources.get(source.name) is not source:
            added, removed = self.catalog.remove_source(source.name)
        else:
            overrides = source.tool_overrides
            listing, changed = self._pinning.screen(source.name, source.prefix, listing, overrides)
            for c in changed:
                self._bus.publish(
                    ToolChangedEvent(
                        server=c.server, tool=c.name, original=c.original, blocked=c.blocked, diff=c.diff()
                    )
                )
            added, removed = self.catalog.set_source(
                source.name,
                listing,
                prefix=source.prefix,
                rank=self._sources.rank(source),
                hidden=source.hidden_tools,
                overrides=overrides,
            )
            if self._subscriptions and self._subscribed_on.get(source.name) is not source.connection:
                self._own(self._resubscribe(source))
        self._bus.publish(
            CatalogEvent(version=self.catalog.version, server=source.name, added=added, removed=removed)
        )
        if self._search_mode == "hybrid" and self._started and (added or removed or listing is not None):
            self._search_index()  # embed the new tools now, not on the next search

    def _rerank(self) -> None:
        """The config order changed (a reload): recompute every rank, then every name, at once."""
        owners = {name: entry.source for name, entry in self.catalog.tools.items()}
        for source in self._sources:
            self.catalog.rerank(source.name, self._sources.rank(source))
        added, removed = self.catalog.rebuild()
        if owners != {name: entry.source for name, entry in self.catalog.tools.items()}:  # else: no news
            self._bus.publish(CatalogEvent(version=self.catalog.version, added=added, removed=removed))

    def _own(self, coro: Any) -> asyncio.Task[Any]:
        """Run a background job of the hub's; failures are logged, never lost."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub background job failed", exc_info=task.exception())
