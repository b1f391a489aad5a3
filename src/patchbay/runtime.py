"""Runtime changes to a running hub: servers and agents added, changed, removed, enabled; reloads.

The rules, for every change:
- validated whole first, then saved, and only then applied: a failed save or a bad entry changes nothing;
- one change at a time (the hub's lock), but the lock is never held while a server starts: a slow or
  broken server can never freeze management;
- a source leaves the catalog (synchronously, as its connection closes) before it leaves the registry, so a
  call in between gets ``ServerUnavailableError``, never a ``KeyError``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from patchbay.access.tokens import (
    new_token,
    set_entries,
    token_entries,
    validate_auth_tokens,
    with_token,
    without_token,
)
from patchbay.config import (
    HubConfig,
    ProfileSpec,
    ServerSpec,
    parse_agent_spec,
    parse_profile_spec,
    parse_server_spec,
    save_config,
)
from patchbay.dialin import AgentStatus, DialInAgent, token_digest
from patchbay.errors import (
    ConfigError,
    DuplicateServerError,
    ServerUnavailableError,
    UnknownProfileError,
    UnknownServerError,
)
from patchbay.events import ConfigEvent
from patchbay.supervisor import ServerState, ServerStatus, ServerSupervisor, make_wire

if TYPE_CHECKING:
    from patchbay.hub import Hub

log = logging.getLogger(__name__)

MIN_AGENT_TOKEN = 16


class RuntimeChanges:
    """The hub's write side. Reads go straight to the hub; every change goes through here."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._lock = asyncio.Lock()

    # --- servers -----------------------------------------------------------------------------------

    async def add_server(self, name: str, spec: Mapping[str, Any] | ServerSpec) -> ServerStatus:
        hub = self._hub
        async with self._lock:
            parsed = parse_server_spec(name, spec if isinstance(spec, ServerSpec) else dict(spec))
            if name in hub._supervisors():
                raise DuplicateServerError(name)
            if name in hub._dialins():
                raise ConfigError(
                    f"server {name!r}: an agent has the same name; server and agent names must differ"
                )
            await self._commit(lambda cfg: cfg.servers.__setitem__(name, parsed))
            sup = hub._new_supervisor(name, parsed)
            hub._sources.add(sup)
            hub._bus.publish(ConfigEvent(action="added", server=name))
            started = self._start(sup)
        if started:
            await sup.wait_settled()
        return hub.server_status(name)

    async def update_server(self, name: str, spec: Mapping[str, Any] | ServerSpec) -> ServerStatus:
        hub = self._hub
        async with self._lock:
            old = hub._supervisor(name)
            parsed = parse_server_spec(name, spec if isinstance(spec, ServerSpec) else dict(spec))
            await self._commit(lambda cfg: cfg.servers.__setitem__(name, parsed))
            sup = await self._replace(old, parsed)
            hub._bus.publish(ConfigEvent(action="updated", server=name))
            started = self._start(sup)
        if started:
            await sup.wait_settled()
        return hub.server_status(name)

    async def remove_server(self, name: str) -> None:
        hub = self._hub
        async with self._lock:
            sup = hub._supervisor(name)
            await self._commit(lambda cfg: cfg.servers.pop(name))
            await sup.stop()  # withdraws its tools first: a call now gets "not running", not a KeyError
            hub._sources.remove(name)
            hub.catalog.remove_source(name)
            hub._bus.publish(ConfigEvent(action="removed", server=name))

    async def set_enabled(self, name: str, enabled: bool) -> ServerStatus:
        hub = self._hub
        async with self._lock:
            sup = hub._supervisor(name)
            new = sup.spec.with_enabled(enabled)
            await self._commit(lambda cfg: cfg.servers.__setitem__(name, new))
            sup.spec = new
            hub._bus.publish(ConfigEvent(action="enabled" if enabled else "disabled", server=name))
            started = False
            if not enabled:
                await sup.stop(disabled=True)
            elif sup.state in (ServerState.DISABLED, ServerState.STOPPED, ServerState.FAILED):
                started = self._start(sup)
        if started:
            await sup.wait_settled()
        return hub.server_status(name)

    async def restart_server(self, name: str) -> ServerStatus:
        hub = self._hub
        async with self._lock:
            sup = hub._supervisor(name)
            if not sup.spec.is_enabled:
                raise ServerUnavailableError(name, f"server {name!r} is disabled; enable it instead")
            await sup.stop()
            sup.restarts += 1
            sup.start()
        await sup.wait_settled()
        return hub.server_status(name)

    # --- reloads -----------------------------------------------------------------------------------

    async def apply_config(self, new: HubConfig) -> dict[str, list[str]]:
        """Adopt a config read from disk: start added servers, stop removed ones, restart changed ones.

        All or nothing: every added or changed entry is validated and expanded (placeholders, URLs, agent
        tokens) before anything is stopped; one bad entry refuses the whole reload and the running hub
        is left exactly as it was. Nothing is saved: the file already is what the user wants.
        """
        hub = self._hub
        async with self._lock:
            old = hub.config
            added = [n for n in new.servers if n not in old.servers]
            removed = [n for n in old.servers if n not in new.servers]
            changed = [
                n
                for n in new.servers
                if n in old.servers and new.servers[n].to_json() != old.servers[n].to_json()
            ]
            agents = self._prepare_agents(new)
            validate_auth_tokens(new)  # tokens naming a profile the new file lacks refuse the reload
            self._validate_servers(new, [*added, *changed])

            hub.config = new
            hub._set_profiles(new)
            for name in removed:
                sup = hub._supervisor(name)
                await sup.stop()
                hub._sources.remove(name)
                hub.catalog.remove_source(name)
                hub._bus.publish(ConfigEvent(action="removed", server=name))
            starting: list[ServerSupervisor] = []
            for name in changed:
                sup = await self._replace(hub._supervisor(name), new.servers[name])
                hub._bus.publish(ConfigEvent(action="updated", server=name))
                starting.append(sup)
            for name in added:
                sup = hub._new_supervisor(name, new.servers[name])
                hub._sources.add(sup)
                hub._bus.publish(ConfigEvent(action="added", server=name))
                starting.append(sup)
            await self._apply_agents(agents)
            hub._sources.reorder(list(new.servers), list(new.agents))
            hub._rerank()
            started = [sup for sup in starting if self._start(sup)]
        for name in removed:  # outside the lock: revoking is a network call
            if old.servers[name].transport in ("http", "sse"):
                await hub.oauth.forget(name)
        await asyncio.gather(*(s.wait_settled() for s in started))
        return {"added": added, "removed": removed, "changed": changed}

    def _validate_servers(self, new: HubConfig, names: list[str]) -> None:
        problems: list[str] = []
        for name in names:
            spec = new.servers[name]
            if not spec.is_enabled:
                continue
            try:
                make_wire(spec, name, new.base_dir)
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems))

    def _prepare_agents(self, new: HubConfig) -> dict[str, DialInAgent | None]:
        """For each agent of the new config: the link to keep (None: keep the current one) or a new one.

        Built before anything changes, so an agent whose token cannot be expanded refuses the reload.
        """
        hub = self._hub
        current = hub._dialins()
        plan: dict[str, DialInAgent | None] = {}
        problems: list[str] = []
        for name, spec in new.agents.items():
            link = current.get(name)
            if link is not None and link.spec.to_json() == spec.to_json():
                plan[name] = None
                continue
            try:
                plan[name] = DialInAgent(
                    name, spec, hub._hooks, new.base_dir, on_state=hub._hooks.agent_state_changed
                )
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems))
        return plan

    async def _apply_agents(self, plan: dict[str, DialInAgent | None]) -> None:
        hub = self._hub
        for name, link in list(hub._dialins().items()):
            if name not in plan or plan[name] is not None:
                await link.disconnect("the agent was removed or changed in the config")
                hub._sources.remove(name)
                hub.catalog.remove_source(name)
                hub._bus.publish(ConfigEvent(action="agent_revoked", server=name))
        for name, new_link in plan.items():
            if new_link is not None:
                hub._sources.add(new_link)
                hub._bus.publish(ConfigEvent(action="agent_added", server=name))

    # --- agents ------------------------------------------------------------------------------------

    async def add_agent(self, name: str, token: str, **settings: Any) -> AgentStatus:
        hub = self._hub
        async with self._lock:
            if name in hub._dialins():
                raise DuplicateServerError(name)
            if name in hub._supervisors():
                raise ConfigError(
                    f"agent {name!r}: a server has the same name; agent and server names must differ"
                )
            if len(token) < MIN_AGENT_TOKEN:
                raise ConfigError(
                    f"agent {name!r}: token: use at least {MIN_AGENT_TOKEN} characters",
                    server=name,
                    field="token",
                )
            spec = parse_agent_spec(name, {"tokenSha256": token_digest(token).hex(), **settings})
            link = hub._new_agent(name, spec)
            await self._commit(lambda cfg: cfg.agents.__setitem__(name, spec))
            hub._sources.add(link)
            hub._bus.publish(ConfigEvent(action="agent_added", server=name))
            return link.status()

    async def revoke_agent(self, name: str) -> None:
        hub = self._hub
        async with self._lock:
            link = hub._dialins().get(name)
            if link is None:
                raise UnknownServerError(name, list(hub._dialins()))
            await self._commit(lambda cfg: cfg.agents.pop(name, None))
            await link.disconnect("the agent's token was revoked")
            hub._sources.remove(name)
            hub.catalog.remove_source(name)
            hub._bus.publish(ConfigEvent(action="agent_revoked", server=name))

    # --- profiles ----------------------------------------------------------------------------------

    async def set_profile(self, name: str, spec: Mapping[str, Any] | ProfileSpec) -> None:
        """Add or replace a profile: validated, saved, then adopted (its ``/mcp/<name>`` follows)."""
        hub = self._hub
        parsed = parse_profile_spec(name, spec)
        async with self._lock:
            await self._commit(lambda cfg: cfg.profiles.__setitem__(name, parsed))
            hub._set_profiles(hub.config)

    async def remove_profile(self, name: str) -> None:
        hub = self._hub
        async with self._lock:
            if name not in hub.config.profiles:
                raise UnknownProfileError(name, list(hub.config.profiles))
            if bound := _bound_tokens(hub.config, name):
                raise ConfigError(
                    f"profile {name!r}: tokens {', '.join(map(repr, bound))} are bound to it; remove "
                    "them first",
                    field="profiles",
                )
            await self._commit(lambda cfg: cfg.profiles.pop(name, None))
            hub._set_profiles(hub.config)

    # --- tokens (``auth.tokens``) ---------------------------------------------------------------------

    async def add_token(self, name: str, role: str, profile: str | None = None) -> str:
        """Create a token: saved as its SHA-256 only; returns the token (shown once, never stored)."""
        hub = self._hub
        async with self._lock:
            token = new_token()
            entries = with_token(hub.config, name, role, profile, token)  # validated, or ConfigError
            await self._commit(lambda cfg: set_entries(cfg, entries))
            return token

    async def remove_token(self, name: str) -> None:
        """Forget a config token by name (saved); the gate's table follows ``hub.config``."""
        hub = self._hub
        async with self._lock:
            entries = without_token(hub.config, name)  # UnknownTokenError
            await self._commit(lambda cfg: set_entries(cfg, entries))

    # --- helpers -----------------------------------------------------------------------------------

    def _start(self, sup: ServerSupervisor) -> bool:
        """Start it if it should run now; the caller waits for it *after* releasing the lock."""
        if sup.spec.is_enabled and self._hub._started:
            sup.start()
            return True
        return False

    async def _replace(self, old: ServerSupervisor, spec: ServerSpec) -> ServerSupervisor:
        """Stop ``old`` and put a new supervisor for ``spec`` in its place (same rank, same count)."""
        hub = self._hub
        await old.stop()
        hub.catalog.remove_source(old.name)
        sup = hub._new_supervisor(old.name, spec)
        sup.restarts = old.restarts
        hub._sources.add(sup)  # in the old one's place: same rank
        return sup

    async def _commit(self, change: Callable[[HubConfig], Any]) -> None:
        """Apply ``change`` to a copy of the config, save it, and only then adopt it.

        In cluster mode it is saved to the cluster's config of record (Redis) instead of the file.
        """
        hub = self._hub
        candidate = copy.copy(hub.config)
        candidate.servers = dict(hub.config.servers)
        candidate.agents = dict(hub.config.agents)
        candidate.profiles = dict(hub.config.profiles)
        change(candidate)
        if hub.cluster is not None:
            await hub.cluster.save_config(candidate)
        else:
            save_config(candidate)
        hub.config = candidate


def _bound_tokens(config: HubConfig, profile: str) -> list[str]:
    return [
        str(e.get("name"))
        for e in token_entries(config)
        if isinstance(e, dict) and e.get("profile") == profile
    ]


def _differs(new: HubConfig, old: HubConfig, name: str) -> bool:
    return new.servers[name].to_json() != old.servers[name].to_json()
