"""Profiles: named views of the catalog (``profiles`` in the config), for clients that need fewer tools.

A profile selects tools by source (``servers``: server or agent names) and by glob patterns over exposed
names (``tools``; ``!`` excludes). The view is recomputed once per catalog version, never per call: the
call path asks only ``name in view.names(catalog)``, a version compare and a set lookup. Whether a name is
admitted depends only on the name and its source, so that decision is cached across versions too.

A profile with ``"discovery": "search"`` lists the two meta-tools of ``discovery.py`` instead of its tools
(``mcp_tools``, ``render`` and ``snapshot`` say what its clients see); ``names`` stays its tools, the ones
``call_tool`` may call and ``search_tools`` searches.

Resources and prompts follow ``servers`` (a profile without ``servers`` has all of them): tool patterns
name tools, and a profile restricted to some servers should not read the others' resources.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import mcp.types as types
from pydantic import Field

from patchbay import discovery
from patchbay.catalog import Catalog, Format
from patchbay.config import ProfileSpec
from patchbay.errors import ToolNotInProfileError, UnknownProfileError
from patchbay.events import Event


class ProfilesChangedEvent(Event):
    """The set of profiles (or one's definition) changed: a reload. ``/mcp/<profile>`` routes follow it."""

    type: Literal["profiles"] = "profiles"
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)


def _globs(patterns: list[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@dataclass(frozen=True)
class ProfileInfo:
    """What ``hub.profiles()`` and ``GET /api/profiles`` show of one profile."""

    name: str
    servers: list[str] | None
    tools: list[str] | None
    tool_count: int
    unknown_servers: list[str]
    discovery: str = "full"  # "search": its clients list the meta-tools search_tools and call_tool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "servers": self.servers,
            "tools": self.tools,
            "discovery": self.discovery,
            "tool_count": self.tool_count,
            "unknown_servers": self.unknown_servers,
        }


class ProfileView:
    """One profile over one catalog: its tool names, renderings and MCP tools, cached per catalog version."""

    def __init__(self, name: str, spec: ProfileSpec) -> None:
        self.name = name
        self.spec = spec
        self.searching = spec.discovery == "search"  # clients list the meta-tools, not the tools
        self._meta = discovery.meta_tools(name) if self.searching else []
        self._servers = frozenset(spec.servers) if spec.servers is not None else None
        patterns = spec.tools or []
        self._include = _globs([p for p in patterns if not p.startswith("!")])
        self._exclude = _globs([p[1:] for p in patterns if p.startswith("!")])
        self._admitted: dict[tuple[str, str], bool] = {}  # (source, exposed name) -> in the profile
        self._catalog: Catalog | None = None
        self._version = -1
        self._names: frozenset[str] = frozenset()
        self._cache: dict[str, Any] = {}  # per version: renderings, MCP tools

    def admits(self, source: str, name: str) -> bool:
        """Whether a tool of ``source`` exposed as ``name`` belongs to this profile."""
        key = (source, name)
        hit = self._admitted.get(key)
        if hit is None:
            hit = (
                (self._servers is None or source in self._servers)
                and (self._include is None or self._include.match(name) is not None)
                and (self._exclude is None or self._exclude.match(name) is None)
            )
            if len(self._admitted) > 100_000:  # names come and go; never grow without bound
                self._admitted.clear()
            self._admitted[key] = hit
        return hit

    def admits_source(self, source: str) -> bool:
        """For resources and prompts: only the profile's servers' (all, without ``servers``)."""
        return self._servers is None or source in self._servers

    def names(self, catalog: Catalog) -> frozenset[str]:
        """The exposed names of the profile's tools now (the hot path: usually just a version compare)."""
        if catalog.version != self._version or catalog is not self._catalog:
            self._refresh(catalog)
        return self._names

    def _refresh(self, catalog: Catalog) -> None:
        admits = self.admits
        self._names = frozenset(n for n, e in catalog.tools.items() if admits(e.source, n))
        self._catalog, self._version = catalog, catalog.version
        self._cache = {}

    def render(
        self, catalog: Catalog, fmt: Format = "mcp", source: str | None = None
    ) -> list[dict[str, Any]]:
        """What the profile's clients list, in one format: its tools in catalog order (cached per version;
        ``source`` filters), or for a search profile the meta-tools (none of them is a source's)."""
        if self.searching:
            return discovery.render(self.name, fmt) if source is None else []
        names = self.names(catalog)
        if source is not None:
            pairs = zip(catalog.render(fmt), catalog.tools.values(), strict=True)
            return [r for r, e in pairs if e.source == source and e.name in names]
        key = f"render:{fmt}"
        out = self._cache.get(key)
        if out is None:
            out = self._cache[key] = [
                r for r, n in zip(catalog.render(fmt), catalog.tools, strict=True) if n in names
            ]
        return out  # type: ignore[no-any-return]

    def mcp_tools(self, catalog: Catalog) -> list[types.Tool]:
        """What ``tools/list`` answers on ``/mcp/<profile>``."""
        if self.searching:
            return self._meta
        names = self.names(catalog)
        out = self._cache.get("mcp_tools")
        if out is None:
            out = self._cache["mcp_tools"] = [t for t in catalog.mcp_tools() if t.name in names]
        return out  # type: ignore[no-any-return]

    def snapshot(self, catalog: Catalog) -> tuple[Any, ...]:
        """What a client of this profile can list, comparable by value: a change means ``list_changed``."""
        if self.searching:  # the meta-tools never change: nothing to tell about tools
            tools = {t.name: t for t in self._meta}
        else:
            tools = {n: catalog.tools[n].tool for n in self.names(catalog)}
        resources = {u: e.resource for u, e in catalog.resources.items() if self.admits_source(e.source)}
        templates = [(t.name, t.template) for t in catalog.templates if self.admits_source(t.source)]
        prompts = {n: e.prompt for n, e in catalog.prompts.items() if self.admits_source(e.source)}
        return tools, resources, templates, prompts

    def input_schema(self, catalog: Catalog, name: str) -> dict[str, Any] | None:
        """The input schema of a tool callable through this profile (a meta-tool too); None if none is."""
        if self.searching and name in discovery.META_NAMES:
            return next(t.input_schema for t in self._meta if t.name == name)
        entry = catalog.tools.get(name)
        return entry.tool.input_schema if entry is not None and name in self.names(catalog) else None

    def refuse(self, catalog: Catalog, name: str) -> ToolNotInProfileError:
        """The error for a call of ``name`` through this profile that is not in it."""
        names = self.names(catalog)
        return ToolNotInProfileError(
            name, self.name, Catalog.suggest(name, sorted(names)), exists=name in catalog.tools
        )

    def info(self, catalog: Catalog, known_sources: set[str]) -> ProfileInfo:
        servers = self.spec.servers
        return ProfileInfo(
            name=self.name,
            servers=list(servers) if servers is not None else None,
            tools=list(self.spec.tools) if self.spec.tools is not None else None,
            tool_count=len(self.names(catalog)),
            unknown_servers=[s for s in servers or () if s not in known_sources],
            discovery="search" if self.searching else "full",
        )


class Profiles:
    """The hub's profiles by name; replaced whole on reload (a view keeps no state worth keeping)."""

    def __init__(self, specs: Mapping[str, ProfileSpec]) -> None:
        self.views: dict[str, ProfileView] = {n: ProfileView(n, s) for n, s in specs.items()}

    def get(self, name: str) -> ProfileView:
        view = self.views.get(name)
        if view is None:
            raise UnknownProfileError(name, list(self.views))
        return view

    def update(self, specs: Mapping[str, ProfileSpec]) -> ProfilesChangedEvent | None:
        """Adopt a reloaded config's profiles; the event says what changed (None: nothing did)."""
        old = self.views
        added = [n for n in specs if n not in old]
        removed = [n for n in old if n not in specs]
        changed = [n for n in specs if n in old and old[n].spec.to_json() != specs[n].to_json()]
        self.views = {
            n: old[n] if n in old and n not in changed else ProfileView(n, s) for n, s in specs.items()
        }
        if not (added or removed or changed):
            return None
        return ProfilesChangedEvent(added=added, removed=removed, changed=changed)
