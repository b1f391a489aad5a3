"""The Hub: config → supervisors → catalog → router, behind one small async API.

Everything else (the CLI, ``/mcp``, the REST API) is a thin surface over this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import mcp.types as types
from pydantic import ValidationError

from patchbay.agents import AgentLink, AgentStatus, token_digest
from patchbay.catalog import Catalog, Format, Listing
from patchbay.config import (
    HubConfig,
    ServerSpec,
    load_config,
    parse_agent_spec,
    parse_config,
    parse_server_spec,
    save_config,
)
from patchbay.errors import (
    CallTimeoutError,
    ConfigError,
    DuplicateServerError,
    ServerUnavailableError,
    UnknownServerError,
    UnknownToolError,
    UpstreamError,
)
from patchbay.events import (
    AgentEvent,
    CatalogEvent,
    ConfigEvent,
    Event,
    EventBus,
    ServerStateEvent,
    Subscription,
)
from patchbay.jsonrpc import METHOD_NOT_FOUND, ProgressCallback
from patchbay.supervisor import ServerState, ServerStatus, ServerSupervisor, SupervisorHooks
from patchbay.transports.websocket import WebSocketWire

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
CallObserver = Callable[[str | None, str, str, float], None]
NotificationObserver = Callable[[str, str, dict[str, Any]], None]


class DownstreamClient(Protocol):
    """Whoever made a call, able to answer the upstream's requests during it (sampling, elicitation)."""

    async def request(self, method: str, params: dict[str, Any]) -> Any: ...


_R = TypeVar("_R", bound=types.Result)


class Hub(SupervisorHooks):
    """Supervises the configured MCP servers and routes calls to them.

    Use it as an async context manager: entering starts every enabled server in parallel and returns
    once each has either become ready or failed its first attempt; leaving stops them all.
    """

    def __init__(self, config: HubConfig | None = None, *, default_timeout: float = DEFAULT_TIMEOUT) -> None:
        self.config = config or HubConfig()
        self.default_timeout = default_timeout
        self.catalog = Catalog()
        self._bus = EventBus()
        self._supervisors: dict[str, ServerSupervisor] = {}
        self._order: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._started = False
        self._call_observers: list[CallObserver] = []
        self._notification_observers: list[NotificationObserver] = []
        self._clients: dict[str, list[DownstreamClient]] = {}
        self._agents: dict[str, AgentLink] = {}
        for name, spec in self.config.servers.items():
            self._add_supervisor(name, spec)
        for name, agent in self.config.agents.items():
            self._agents[name] = AgentLink(name, agent, self, self.config.base_dir)

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

    def _add_supervisor(self, name: str, spec: ServerSpec) -> ServerSupervisor:
        sup = ServerSupervisor(name, spec, hooks=self, base_dir=self.config.base_dir)
        self._supervisors[name] = sup
        self._order.setdefault(name, len(self._order))
        return sup

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
        sups = [s for s in self._supervisors.values() if s.spec.is_enabled]
        for s in sups:
            s.start()
        await asyncio.gather(*(s.wait_settled() for s in sups))

    async def close(self) -> None:
        """Stop every server (their whole process groups), in parallel."""
        self._started = False
        await asyncio.gather(
            *(s.stop() for s in self._supervisors.values()),
            *(a.disconnect("the hub is shutting down") for a in self._agents.values()),
            return_exceptions=True,
        )

    # --- status and catalog ------------------------------------------------------------------------

    def status(self) -> dict[str, ServerStatus]:
        """Per server, in config order: state, pid, protocol version, tools, restarts, errors, stderr tail."""
        return {name: self.server_status(name) for name in self._supervisors}

    def server_status(self, name: str, *, tail: int = 20) -> ServerStatus:
        """One server's status; ``tail`` is how many stderr lines to include (at most 200 are kept)."""
        status = self._get(name).status(self.catalog.conflicts.get(name), tail=tail)
        status.tool_count = sum(1 for e in self.catalog.tools.values() if e.source == name)
        return status

    @property
    def servers(self) -> list[str]:
        return list(self._supervisors)

    def server_spec(self, name: str) -> ServerSpec:
        return self._get(name).spec

    def tools(self, format: Format = "mcp", *, server: str | None = None) -> list[dict[str, Any]]:
        """Every exposed tool as JSON-ready dicts: ``mcp`` Tool objects, ``openai`` or ``anthropic``."""
        if server is not None:
            self._get(server)
        return self.catalog.render(format, server)

    def resources(self) -> list[types.Resource]:
        return [e.resource.model_copy(update={"name": e.name}) for e in self.catalog.resources.values()]

    def resource_templates(self) -> list[types.ResourceTemplate]:
        return [e.template.model_copy(update={"name": e.name}) for e in self.catalog.templates]

    def prompts(self) -> list[types.Prompt]:
        return [e.prompt.model_copy(update={"name": e.name}) for e in self.catalog.prompts.values()]

    # --- routing (the hot path) --------------------------------------------------------------------

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
        client: DownstreamClient | None = None,
    ) -> types.CallToolResult:
        """Call an exposed tool; returns the upstream's full ``CallToolResult``.

        Raises ``UnknownToolError`` (with close matches), ``ServerUnavailableError`` (not running, or it
        died during the call), ``CallTimeoutError`` (a cancellation was sent upstream) or
        ``UpstreamError`` (a JSON-RPC error). A tool that fails on its own reports ``isError`` instead.
        ``client``, if given, answers the requests the upstream makes during the call (sampling,
        elicitation, roots): ``/mcp`` passes the downstream session that made the call.
        """
        if not self._call_observers:
            return await self._call_tool(name, arguments, timeout, progress, client)
        started = time.perf_counter()
        server, outcome = None, "error"
        try:
            entry = self.catalog.tools.get(name)
            server = entry.source if entry else None
            result = await self._call_tool(name, arguments, timeout, progress, client)
            outcome = "tool_error" if result.is_error else "ok"
            return result
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
    ) -> types.CallToolResult:
        entry = self.catalog.tools.get(name)
        if entry is None:
            raise self._not_found(name)
        sup = self._supervisors.get(entry.source) or self._agents[entry.source]
        conn = sup.connection
        if conn is None:
            raise self._unavailable(sup)
        if sup.max_in_flight is not None and conn.peer.in_flight >= sup.max_in_flight:
            raise ServerUnavailableError(
                sup.name, f"agent {sup.name!r} already has {sup.max_in_flight} calls in flight (maxInFlight)"
            )
        request = conn.peer.request(
            "tools/call",
            {"name": entry.original, "arguments": dict(arguments) if arguments else {}},
            timeout=timeout or sup.call_timeout or self.default_timeout,
            progress=progress,
            target=entry.original,
        )
        if client is None:
            raw = await request
        else:
            clients = self._clients.setdefault(entry.source, [])
            clients.append(client)
            try:
                raw = await request
            finally:
                clients.remove(client)
        return self._validate(types.CallToolResult, raw, entry.source, f"tool {entry.original!r}")

    async def read_resource(self, uri: str, *, timeout: float | None = None) -> types.ReadResourceResult:
        owner = self.catalog.resource_owner(uri)
        sup = self._supervisors.get(owner) or self._agents[owner]
        raw = await self._request(sup, "resources/read", {"uri": uri}, timeout, uri)
        return self._validate(types.ReadResourceResult, raw, sup.name, f"resource {uri!r}")

    async def get_prompt(
        self, name: str, arguments: Mapping[str, str] | None = None, *, timeout: float | None = None
    ) -> types.GetPromptResult:
        entry = self.catalog.prompt(name)
        sup = self._supervisors.get(entry.source) or self._agents[entry.source]
        params: dict[str, Any] = {"name": entry.original}
        if arguments:
            params["arguments"] = dict(arguments)
        raw = await self._request(sup, "prompts/get", params, timeout, entry.original)
        return self._validate(types.GetPromptResult, raw, sup.name, f"prompt {entry.original!r}")

    async def _request(
        self,
        sup: ServerSupervisor | AgentLink,
        method: str,
        params: dict[str, Any],
        timeout: float | None,
        target: str,
    ) -> Any:
        conn = sup.connection
        if conn is None:
            raise self._unavailable(sup)
        return await conn.peer.request(
            method, params, timeout=timeout or sup.call_timeout or self.default_timeout, target=target
        )

    @staticmethod
    def _validate(model: type[_R], raw: Any, server: str, what: str) -> _R:
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            raise UpstreamError(
                server, -32603, f"{what} returned an invalid result: {exc.errors()[0]['msg']}"
            ) from None

    def _not_found(self, name: str) -> Exception:
        """Unknown name, unless it is the tool of a server that is down: then say that instead."""
        for sup in self._supervisors.values():
            prefix = sup.spec.prefix if sup.spec.prefix is not None else sup.name
            if prefix and name.startswith(f"{prefix}__") and sup.connection is None:
                return self._unavailable(sup)
        for agent in self._agents.values():
            if name.startswith(f"{agent.name}__") and agent.connection is None:
                return self._unavailable(agent)
        return UnknownToolError(name, Catalog.suggest(name, self.catalog.tools))

    @staticmethod
    def _unavailable(sup: ServerSupervisor | AgentLink) -> ServerUnavailableError:
        if isinstance(sup, AgentLink):
            why = f" (last: {sup.last_error})" if sup.last_error else ""
            return ServerUnavailableError(sup.name, f"agent {sup.name!r} is not connected{why}")
        why = f": {sup.last_error}" if sup.last_error and sup.state != ServerState.DISABLED else ""
        return ServerUnavailableError(
            sup.name, f"server {sup.name!r} is not running (state: {sup.state}){why}"
        )

    # --- runtime changes (saved at once) -----------------------------------------------------------

    async def add_server(self, name: str, spec: Mapping[str, Any] | ServerSpec) -> ServerStatus:
        """Validate, save to the config file, then start (if enabled)."""
        async with self._lock:
            parsed = parse_server_spec(name, spec if isinstance(spec, ServerSpec) else dict(spec))
            if name in self._supervisors:
                raise DuplicateServerError(name)
            if name in self._agents:
                raise ConfigError(
                    f"server {name!r}: an agent has the same name; server and agent names must differ"
                )
            self._commit(lambda cfg: cfg.servers.__setitem__(name, parsed))
            sup = self._add_supervisor(name, parsed)
            self._bus.publish(ConfigEvent(action="added", server=name))
            if parsed.is_enabled and self._started:
                sup.start()
                await sup.wait_settled()
            return self.server_status(name)

    async def update_server(self, name: str, spec: Mapping[str, Any] | ServerSpec) -> ServerStatus:
        """Replace a server's settings; it is restarted if it was running."""
        async with self._lock:
            old = self._get(name)
            parsed = parse_server_spec(name, spec if isinstance(spec, ServerSpec) else dict(spec))
            self._commit(lambda cfg: cfg.servers.__setitem__(name, parsed))
            await old.stop()
            self.catalog.remove_source(name)
            sup = self._add_supervisor(name, parsed)
            sup.restarts = old.restarts
            self._bus.publish(ConfigEvent(action="updated", server=name))
            if parsed.is_enabled and self._started:
                sup.start()
                await sup.wait_settled()
            return self.server_status(name)

    async def remove_server(self, name: str) -> None:
        async with self._lock:
            sup = self._get(name)
            self._commit(lambda cfg: cfg.servers.pop(name))
            del self._supervisors[name]
            await sup.stop()
            self._order.pop(name, None)
            self._bus.publish(ConfigEvent(action="removed", server=name))

    async def set_enabled(self, name: str, enabled: bool) -> ServerStatus:
        async with self._lock:
            sup = self._get(name)
            new = sup.spec.with_enabled(enabled)
            self._commit(lambda cfg: cfg.servers.__setitem__(name, new))
            sup.spec = new
            self._bus.publish(ConfigEvent(action="enabled" if enabled else "disabled", server=name))
            if enabled:
                if self._started and sup.state in (
                    ServerState.DISABLED,
                    ServerState.STOPPED,
                    ServerState.FAILED,
                ):
                    sup.start()
                    await sup.wait_settled()
            else:
                await sup.stop(disabled=True)
            return self.server_status(name)

    async def restart_server(self, name: str) -> ServerStatus:
        """Stop and start again now, with the failure count reset (also revives a ``failed`` server)."""
        async with self._lock:
            sup = self._get(name)
            if not sup.spec.is_enabled:
                raise ServerUnavailableError(name, f"server {name!r} is disabled; enable it instead")
            await sup.restart()
            return self.server_status(name)

    async def apply_config(self, new: HubConfig) -> dict[str, list[str]]:
        """Adopt a config read from disk (a reload): start added servers, stop removed ones, restart
        changed ones, leave the rest running. Nothing is saved: the file is already what the user wants.
        """
        async with self._lock:
            old = self.config.servers
            added = [n for n in new.servers if n not in old]
            removed = [n for n in old if n not in new.servers]
            changed = [n for n in new.servers if n in old and new.servers[n].to_json() != old[n].to_json()]
            self.config = new
            for name in removed:
                sup = self._supervisors.pop(name)
                await sup.stop()
                self._bus.publish(ConfigEvent(action="removed", server=name))
            self._order = {name: i for i, name in enumerate(new.servers)}
            starting: list[ServerSupervisor] = []
            for name in changed:
                previous = self._supervisors[name]
                await previous.stop()
                self.catalog.remove_source(name)
                sup = self._add_supervisor(name, new.servers[name])
                sup.restarts = previous.restarts
                self._bus.publish(ConfigEvent(action="updated", server=name))
                if sup.spec.is_enabled:
                    starting.append(sup)
            for name in added:
                sup = self._add_supervisor(name, new.servers[name])
                self._bus.publish(ConfigEvent(action="added", server=name))
                if sup.spec.is_enabled:
                    starting.append(sup)
            self._supervisors = {n: self._supervisors[n] for n in new.servers}
            await self._apply_agents(new)
            if self._started:
                for sup in starting:
                    sup.start()
                await asyncio.gather(*(s.wait_settled() for s in starting))
            return {"added": added, "removed": removed, "changed": changed}

    # --- LLM tool-calling loop ----------------------------------------------------------------------

    async def run_openai_tool_calls(
        self, message: Any, *, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Run an OpenAI assistant message's ``tool_calls`` concurrently; returns ``role: tool`` messages.

        Bad arguments, unknown tools and failures become error results the model can read (see llm.py).
        """
        from patchbay.llm import run_openai_tool_calls

        return await run_openai_tool_calls(self, message, timeout=timeout)

    async def run_anthropic_tool_uses(
        self, content: Any, *, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Run Anthropic ``tool_use`` blocks concurrently; returns ``tool_result`` blocks."""
        from patchbay.llm import run_anthropic_tool_uses

        return await run_anthropic_tool_uses(self, content, timeout=timeout)

    # --- agents ------------------------------------------------------------------------------------

    def agents(self) -> dict[str, AgentStatus]:
        """Every configured agent: connected or not, address, since, protocol, tools, calls in flight."""
        return {n: a.status(self.catalog.conflicts.get(n)) for n, a in self._agents.items()}

    def agent_for_token(self, token: str) -> AgentLink | None:
        """The agent this token belongs to; every agent is compared, in constant time each."""
        digest = token_digest(token)
        found = None
        for agent in self._agents.values():
            if agent.matches(digest):
                found = agent
        return found

    async def attach_agent(self, agent: AgentLink, ws: Any) -> None:
        """Serve one accepted WebSocket of ``agent`` until it closes (used by the ``/agents`` endpoint)."""
        await agent.serve(ws, WebSocketWire)

    async def add_agent(self, name: str, token: str, **settings: Any) -> AgentStatus:
        """Accept a new agent; only the token's SHA-256 is saved, so it is never shown back."""
        async with self._lock:
            if name in self._agents:
                raise DuplicateServerError(name)
            if name in self._supervisors:
                raise ConfigError(
                    f"agent {name!r}: a server has the same name; agent and server names must differ"
                )
            if len(token) < 16:
                raise ConfigError(
                    f"agent {name!r}: token: use at least 16 characters", server=name, field="token"
                )
            spec = parse_agent_spec(name, {"tokenSha256": token_digest(token).hex(), **settings})
            self._commit(lambda cfg: cfg.agents.__setitem__(name, spec))
            self._agents[name] = AgentLink(name, spec, self, self.config.base_dir)
            self._bus.publish(ConfigEvent(action="agent_added", server=name))
            return self._agents[name].status()

    async def revoke_agent(self, name: str) -> None:
        """Forget an agent: its token stops working and a live connection is closed at once."""
        async with self._lock:
            agent = self._agents.get(name)
            if agent is None:
                raise UnknownServerError(name, list(self._agents))
            self._commit(lambda cfg: cfg.agents.pop(name, None))
            del self._agents[name]
            await agent.disconnect("the agent's token was revoked")
            self.catalog.remove_source(name)
            self._bus.publish(ConfigEvent(action="agent_revoked", server=name))

    def agent_state_changed(self, name: str, state: str, address: str | None, error: str | None) -> None:
        self._bus.publish(AgentEvent(agent=name, state=state, address=address, error=error))

    async def _apply_agents(self, new: HubConfig) -> None:
        """Reload: drop agents no longer configured (or whose token changed), accept new ones."""
        for name, link in list(self._agents.items()):
            spec = new.agents.get(name)
            if spec is None or spec.to_json() != link.spec.to_json():
                del self._agents[name]
                await link.disconnect("the agent was removed or changed in the config")
                self.catalog.remove_source(name)
                self._bus.publish(ConfigEvent(action="agent_revoked", server=name))
        for name, spec in new.agents.items():
            if name not in self._agents:
                self._agents[name] = AgentLink(name, spec, self, new.base_dir)
                self._bus.publish(ConfigEvent(action="agent_added", server=name))
        self._agents = {n: self._agents[n] for n in new.agents if n in self._agents}

    def _commit(self, change: Any) -> None:
        """Apply ``change`` to a copy of the config, save it, and only then adopt it."""
        candidate = copy.copy(self.config)
        candidate.servers = dict(self.config.servers)
        candidate.agents = dict(self.config.agents)
        change(candidate)
        save_config(candidate)
        self.config = candidate

    def _get(self, name: str) -> ServerSupervisor:
        sup = self._supervisors.get(name)
        if sup is None:
            raise UnknownServerError(name, list(self._supervisors))
        return sup

    # --- events ------------------------------------------------------------------------------------

    def events(self) -> Subscription:
        """Server state, catalog and config changes, from this call on: ``async for event in hub.events()``.

        Each subscription has its own bounded queue (a slow reader loses its oldest events and gets an
        ``events_dropped`` event); call ``close()`` on it, or let it be collected, to unsubscribe.
        """
        return self._bus.subscribe()

    def publish(self, event: Event) -> None:
        """Put an event on the hub's stream (used by surfaces such as the config watcher)."""
        self._bus.publish(event)

    # SupervisorHooks: called by supervisors.
    def state_changed(
        self, name: str, state: ServerState, previous: ServerState | None, error: str | None
    ) -> None:
        log.info("server %r: %s%s", name, state, f" ({error})" if error else "")
        self._bus.publish(ServerStateEvent(server=name, state=state, previous=previous, error=error))

    def add_notification_observer(self, observer: NotificationObserver) -> None:
        """``observer(server, method, params)`` for every notification an upstream sends (e.g. logs)."""
        self._notification_observers.append(observer)

    def notification(self, name: str, method: str, params: dict[str, Any]) -> None:
        for observe in self._notification_observers:
            try:
                observe(name, method, params)
            except Exception:
                log.exception("notification observer failed")

    async def upstream_request(self, name: str, method: str, params: dict[str, Any]) -> Any:
        """An upstream asks its client something (sampling, elicitation, roots) during a call.

        It goes to the downstream client of the most recent call in flight to that server; stdio gives
        no way to tell which of several concurrent calls a request belongs to.
        """
        clients = self._clients.get(name)
        if not clients:
            raise UpstreamError(
                name, METHOD_NOT_FOUND, f"{method}: no client is connected through patchbay to answer it"
            )
        return await clients[-1].request(method, params)

    def listing_changed(self, name: str, listing: Listing | None) -> None:
        sup = self._supervisors.get(name)
        agent = self._agents.get(name)
        if listing is not None and agent is not None and sup is None:
            # agents rank after every local server: an agent can never take a local tool's name
            added, removed = self.catalog.set_source(
                name, listing, prefix=name, rank=(1, list(self._agents).index(name), name)
            )
        elif listing is None or sup is None:
            added, removed = self.catalog.remove_source(name)
        else:
            added, removed = self.catalog.set_source(
                name,
                listing,
                prefix=sup.spec.prefix if sup.spec.prefix is not None else name,
                rank=(0, self._order.get(name, len(self._order)), name),
                hidden=sup.spec.disabled_tools,
            )
        with contextlib.suppress(Exception):
            self._bus.publish(
                CatalogEvent(version=self.catalog.version, server=name, added=added, removed=removed)
            )
