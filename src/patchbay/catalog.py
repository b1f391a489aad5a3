"""The catalog: every upstream's tools, resources and prompts under one deterministic, collision-free name.

Names never depend on start-up order: each rebuild merges the sources in a fixed priority (local servers in
config order, then agents) and the first owner of a name keeps it. A collision is never silent: the loser
is left out and the conflict is recorded against its source with both owners named. Each source's items are
named once, when it is set, so re-listing one server of a 10,000-tool catalog costs a couple of
milliseconds (bench/catalog.py). Renderings (MCP, OpenAI, Anthropic) are cached per catalog version, and
per tool across versions while its entry is unchanged.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import mcp.types as types
from pydantic import ValidationError

from patchbay.errors import UnknownToolError

if TYPE_CHECKING:
    from patchbay.config import ToolOverride

log = logging.getLogger(__name__)

Format = Literal["mcp", "openai", "anthropic"]
FORMATS: tuple[Format, ...] = ("mcp", "openai", "anthropic")
SEPARATOR = "__"
MAX_NAME = 64
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def safe_name(prefix: str, name: str) -> str:
    """``<prefix>__<name>`` made safe for LLM APIs (``^[a-zA-Z0-9_-]{1,64}$``).

    Unsafe characters become ``_``; a name too long is cut and given an 8-hex hash of the full name so
    it stays unique and stable. The original name is kept separately for dispatch.
    """
    full = f"{prefix}{SEPARATOR}{name}" if prefix else name
    cleaned = _UNSAFE.sub("_", full) or "_"
    if len(cleaned) > MAX_NAME:
        digest = hashlib.sha1(full.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        cleaned = f"{cleaned[: MAX_NAME - 9]}_{digest}"
    return cleaned


def normalize_schema(schema: Any) -> dict[str, Any]:
    """A valid JSON-Schema object from whatever a sloppy server sent (``{}``, no ``type``, not a dict)."""
    if not isinstance(schema, dict):
        return {"type": "object", "properties": {}}
    out = dict(schema)
    if out.get("type") != "object":
        if "type" in out:
            log.debug("tool input schema has type %r; exposing it as an object", out["type"])
        out["type"] = "object"
    if not isinstance(out.get("properties"), dict):
        out["properties"] = {}
    if "required" in out and not (
        isinstance(out["required"], list) and all(isinstance(r, str) for r in out["required"])
    ):
        del out["required"]
    return out


def parse_tools(raw: Iterable[Any], source: str) -> tuple[list[types.Tool], list[str]]:
    """Upstream ``tools/list`` entries as typed tools; a broken entry is skipped and reported, not fatal."""
    tools: list[types.Tool] = []
    problems: list[str] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            problems.append(f"skipped a tool without a valid name: {str(item)[:120]}")
            continue
        data = dict(item)
        data["inputSchema"] = normalize_schema(data.get("inputSchema"))
        if "outputSchema" in data and not isinstance(data["outputSchema"], dict):
            del data["outputSchema"]
        try:
            tools.append(types.Tool.model_validate(data))
        except ValidationError as exc:
            problems.append(f"skipped tool {item['name']!r}: {exc.errors()[0]['msg']}")
    for p in problems:
        log.warning("%s: %s", source, p)
    return tools, problems


_Item = TypeVar("_Item", types.Resource, types.ResourceTemplate, types.Prompt)
_T = TypeVar("_T")


def parse_items(raw: Iterable[Any], model: type[_Item], source: str) -> list[_Item]:
    out: list[_Item] = []
    for item in raw:
        try:
            out.append(model.model_validate(item))
        except ValidationError as exc:
            log.warning("%s: skipped a %s: %s", source, model.__name__, exc.errors()[0]["msg"])
    return out


@dataclass
class Listing:
    """What one upstream offers, as last listed."""

    tools: list[types.Tool] = field(default_factory=list)
    resources: list[types.Resource] = field(default_factory=list)
    templates: list[types.ResourceTemplate] = field(default_factory=list)
    prompts: list[types.Prompt] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ToolEntry:
    name: str
    source: str
    original: str
    tool: types.Tool


@dataclass(frozen=True, slots=True)
class PromptEntry:
    name: str
    source: str
    original: str
    prompt: types.Prompt


@dataclass(frozen=True, slots=True)
class ResourceEntry:
    uri: str
    name: str
    source: str
    resource: types.Resource


@dataclass(frozen=True, slots=True)
class TemplateEntry:
    name: str
    source: str
    template: types.ResourceTemplate
    pattern: re.Pattern[str]


@dataclass
class _Source:
    """One source and what it claims, derived once per ``set_source`` (it depends on this source alone)."""

    name: str
    prefix: str
    rank: tuple[int, int, str]
    hidden: frozenset[str]
    listing: Listing
    overrides: Mapping[str, ToolOverride] = field(default_factory=dict)  # by upstream tool name
    tools: list[ToolEntry] = field(default_factory=list)  # candidates in listing order, hidden ones out
    prompts: list[PromptEntry] = field(default_factory=list)
    resources: list[ResourceEntry] = field(default_factory=list)
    templates: list[TemplateEntry] = field(default_factory=list)
    tool_map: dict[str, ToolEntry] = field(default_factory=dict)
    prompt_map: dict[str, PromptEntry] = field(default_factory=dict)
    resource_map: dict[str, ResourceEntry] = field(default_factory=dict)
    template_map: dict[str, TemplateEntry] = field(default_factory=dict)
    clash: bool = False  # two of its own items want the same name (or URI): it takes the slow path

    def derive(self) -> None:
        name, prefix, hidden, overrides = self.name, self.prefix, self.hidden, self.overrides
        for tool in self.listing.tools:
            original = tool.name
            override = overrides.get(original) if overrides else None
            if override is not None:
                if override.hidden:
                    continue
                tool = apply_override(tool, override)
            exposed = safe_name(prefix, override.name if override is not None and override.name else original)
            if original in hidden or exposed in hidden:
                continue
            self.tools.append(ToolEntry(exposed, name, original, tool))
        for prompt in self.listing.prompts:
            self.prompts.append(PromptEntry(safe_name(prefix, prompt.name), name, prompt.name, prompt))
        for res in self.listing.resources:
            self.resources.append(ResourceEntry(res.uri, safe_name(prefix, res.name), name, res))
        for tpl in self.listing.templates:
            self.templates.append(
                TemplateEntry(safe_name(prefix, tpl.name), name, tpl, _template_regex(tpl.uri_template))
            )
        # Without a clash (the usual case) these maps are exactly what the slow path would add.
        self.tool_map = {e.name: e for e in self.tools}
        self.prompt_map = {e.name: e for e in self.prompts}
        self.resource_map = {e.uri: e for e in self.resources}
        self.template_map = {e.template.uri_template: e for e in self.templates}
        self.clash = (
            len(self.tool_map) != len(self.tools)
            or len(self.prompt_map) != len(self.prompts)
            or len(self.resource_map) != len(self.resources)
            or len(self.template_map) != len(self.templates)
        )


def apply_override(tool: types.Tool, override: ToolOverride) -> types.Tool:
    """The tool as the user re-described it: description replaced, annotations merged over the server's.

    The tool keeps its upstream name (dispatch uses it); the exposed name is the entry's.
    """
    update: dict[str, Any] = {}
    if override.description is not None:
        update["description"] = override.description
    if override.annotations is not None:
        base = tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else {}
        update["annotations"] = types.ToolAnnotations.model_validate({**base, **override.annotations})
    return tool.model_copy(update=update) if update else tool


def _template_regex(template: str) -> re.Pattern[str]:
    """A regex matching URIs produced by a simple RFC 6570 template (``{var}`` expressions)."""
    parts = re.split(r"(\{[^}]*\})", template)
    rx = "".join("(.+?)" if p.startswith("{") and p.endswith("}") else re.escape(p) for p in parts)
    return re.compile(f"^{rx}$")


def _merge_slowly(
    src: _Source,
    tools: dict[str, ToolEntry],
    prompts: dict[str, PromptEntry],
    resources: dict[str, ResourceEntry],
    templates: dict[str, TemplateEntry],
    by_source: dict[str, list[ToolEntry]],
) -> list[str]:
    """Add ``src``'s items one by one, first owner wins; returns the conflict notes, in listing order."""
    notes: list[str] = []
    mine: list[ToolEntry] = []
    for entry in src.tools:
        owner = tools.get(entry.name)
        if owner is not None:
            notes.append(
                f"tool {entry.original!r} is not exposed: the name {entry.name!r} already belongs to "
                f"{owner.source!r} (tool {owner.original!r})"
            )
            continue
        tools[entry.name] = entry
        mine.append(entry)
    by_source[src.name] = mine
    for p in src.prompts:
        owner_p = prompts.get(p.name)
        if owner_p is not None:
            notes.append(
                f"prompt {p.original!r} is not exposed: the name {p.name!r} already belongs to "
                f"{owner_p.source!r}"
            )
            continue
        prompts[p.name] = p
    for r in src.resources:
        owner_r = resources.get(r.uri)
        if owner_r is not None:
            notes.append(f"resource {r.uri!r} is not exposed: the same URI is offered by {owner_r.source!r}")
            continue
        resources[r.uri] = r
    for t in src.templates:
        key = t.template.uri_template
        owner_t = templates.get(key)
        if owner_t is not None:
            notes.append(
                f"resource template {key!r} is not exposed: the same template is offered by "
                f"{owner_t.source!r}"
            )
            continue
        templates[key] = t
    return notes


class Catalog:
    """The merged view. Read paths are dict lookups; all work happens in ``rebuild()`` on change."""

    def __init__(self) -> None:
        self._sources: dict[str, _Source] = {}
        self.tools: dict[str, ToolEntry] = {}
        self.prompts: dict[str, PromptEntry] = {}
        self.resources: dict[str, ResourceEntry] = {}
        self.templates: list[TemplateEntry] = []
        self.conflicts: dict[str, list[str]] = {}
        self.version = 0
        self._rendered: dict[Format, list[dict[str, Any]]] = {}
        self._by_source: dict[str, list[ToolEntry]] = {}  # exposed tools per source, in catalog order
        self._template_map: dict[str, TemplateEntry] = {}  # self.templates by URI template
        self._claims: dict[str, int] = {}  # exposed tool name -> how many sources want it
        self._reranked = False  # a rank changed since the last rebuild
        # Per-tool renderings and MCP copies, reused across versions while the entry is the same object.
        self._item_cache: dict[str, dict[str, tuple[ToolEntry, Any]]] = {}

    # --- updates -----------------------------------------------------------------------------------

    def set_source(
        self,
        name: str,
        listing: Listing,
        *,
        prefix: str,
        rank: tuple[int, int, str],
        hidden: Iterable[str] = (),
        overrides: Mapping[str, ToolOverride] | None = None,
    ) -> tuple[list[str], list[str]]:
        """Set (or replace) one source's listing; ``overrides`` (by upstream tool name) rename,
        re-describe, re-annotate or hide its tools before naming, so collisions see the new names."""
        src = _Source(name, prefix, rank, frozenset(hidden), listing, overrides or {})
        src.derive()  # the per-item work, for this source only
        previous = self._sources.get(name)
        self._sources[name] = src
        if previous is not None:
            self._unclaim(previous)
        for n in src.tool_map:
            self._claims[n] = self._claims.get(n, 0) + 1
        if previous is not None and self._same_names(previous, src):
            return self._replace(src)
        touched = src.tool_map.keys() | (previous.tool_map.keys() if previous is not None else set())
        return self._rebuild(touched)

    def remove_source(self, name: str) -> tuple[list[str], list[str]]:
        previous = self._sources.pop(name, None)
        if previous is None:
            return [], []
        self._unclaim(previous)
        return self._rebuild(set(previous.tool_map))

    def rerank(self, name: str, rank: tuple[int, int, str]) -> None:
        """Change a source's rank; takes effect at the next ``rebuild()``."""
        src = self._sources.get(name)
        if src is not None:
            src.rank = rank
            self._reranked = True

    def _unclaim(self, src: _Source) -> None:
        for n in src.tool_map:
            left = self._claims[n] - 1
            if left:
                self._claims[n] = left
            else:
                del self._claims[n]

    def _same_names(self, old: _Source, new: _Source) -> bool:
        """Whether ``new`` can simply take ``old``'s places: the usual re-list (same names, new details).

        It must be the same source in the same rank, exposing the same names in the same order, owning
        every one of them and claiming no name any other source claims (so nobody else's names, order or
        conflict notes can change).
        """
        return (
            not self._reranked
            and old.rank == new.rank
            and not old.clash
            and not new.clash
            and new.name not in self.conflicts
            and list(old.tool_map) == list(new.tool_map)
            and list(old.prompt_map) == list(new.prompt_map)
            and list(old.resource_map) == list(new.resource_map)
            and list(old.template_map) == list(new.template_map)
            and len(self._by_source.get(new.name, ())) == len(new.tools)
            and all(self._claims[n] == 1 for n in new.tool_map)
        )

    def _replace(self, src: _Source) -> tuple[list[str], list[str]]:
        """Put ``src``'s new entries in its old places (``_same_names``): a copy and a few assignments.

        The dicts are copied, not changed in place, so a reader holding the previous ones keeps a
        consistent snapshot; assigning an existing key keeps its position, so the order is the same.
        """
        tools = dict(self.tools)
        tools.update(src.tool_map)
        prompts = dict(self.prompts)
        prompts.update(src.prompt_map)
        resources = dict(self.resources)
        resources.update(src.resource_map)
        if src.template_map:
            self._template_map = {**self._template_map, **src.template_map}
            self.templates = list(self._template_map.values())
        self._by_source = {**self._by_source, src.name: src.tools}
        self.tools, self.prompts, self.resources = tools, prompts, resources
        self.version += 1
        self._rendered = {}
        return [], []

    def has_source(self, name: str) -> bool:
        return name in self._sources

    def rebuild(self) -> tuple[list[str], list[str]]:
        """Recompute every name in priority order; returns (added, removed) tool names.
        The result is what walking every item of every source in rank order gives (first owner keeps a
        name), whatever the order of arrival. Each source's items were named once, when it was set; a
        source that clashes with nobody is merged as a whole (C-speed dict operations), and only a source
        with a clash is walked item by item, so re-listing one server of a large catalog stays cheap.
        """
        return self._rebuild(None)

    def _rebuild(self, touched: Collection[str] | None) -> tuple[list[str], list[str]]:
        """``rebuild()``; ``touched``: the only names that can come or go (those one changed source claims
        or claimed: whether a name is in the catalog depends only on whether some source claims it)."""
        old = self.tools
        tools: dict[str, ToolEntry] = {}
        prompts: dict[str, PromptEntry] = {}
        resources: dict[str, ResourceEntry] = {}
        templates: dict[str, TemplateEntry] = {}
        conflicts: dict[str, list[str]] = {}
        by_source: dict[str, list[ToolEntry]] = {}
        for src in sorted(self._sources.values(), key=lambda s: s.rank):
            if not src.clash and (
                tools.keys().isdisjoint(src.tool_map.keys())
                and prompts.keys().isdisjoint(src.prompt_map.keys())
                and resources.keys().isdisjoint(src.resource_map.keys())
                and templates.keys().isdisjoint(src.template_map.keys())
            ):
                tools.update(src.tool_map)
                prompts.update(src.prompt_map)
                resources.update(src.resource_map)
                templates.update(src.template_map)
                by_source[src.name] = src.tools
                continue
            notes = _merge_slowly(src, tools, prompts, resources, templates, by_source)
            if notes:
                conflicts[src.name] = notes
                known = set(self.conflicts.get(src.name, ()))
                for n in notes:
                    if n not in known:  # log each conflict once, not on every rebuild
                        log.warning("%s: %s", src.name, n)
        self.tools, self.prompts, self.resources = tools, prompts, resources
        self.templates = list(templates.values())
        self._template_map = templates
        self._reranked = False
        self.conflicts = conflicts
        self._by_source = by_source
        self.version += 1
        self._rendered = {}
        if touched is None:
            return sorted(tools.keys() - old.keys()), sorted(old.keys() - tools.keys())
        added = sorted(n for n in touched if n in tools and n not in old)
        removed = sorted(n for n in touched if n in old and n not in tools)
        return added, removed

    # --- reads -------------------------------------------------------------------------------------

    def tool(self, name: str) -> ToolEntry:
        entry = self.tools.get(name)
        if entry is None:
            raise UnknownToolError(name, self.suggest(name, self.tools))
        return entry

    def prompt(self, name: str) -> PromptEntry:
        entry = self.prompts.get(name)
        if entry is None:
            raise UnknownToolError(name, self.suggest(name, self.prompts), kind="prompt")
        return entry

    def resource_owner(self, uri: str) -> str:
        entry = self.resources.get(uri)
        if entry is not None:
            return entry.source
        for tpl in self.templates:
            if tpl.pattern.match(uri):
                return tpl.source
        raise UnknownToolError(uri, self.suggest(uri, self.resources), kind="resource")

    @staticmethod
    def suggest(name: str, names: Iterable[str]) -> list[str]:
        pool = list(names)
        close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
        if not close:  # "add" should find "demo__add"
            close = [n for n in pool if n.endswith(f"{SEPARATOR}{name}")][:3]
        return close

    def tools_of(self, source: str) -> list[ToolEntry]:
        return list(self._by_source.get(source, ()))

    def tool_count(self, source: str) -> int:
        """How many tools ``source`` exposes, without walking the catalog."""
        return len(self._by_source.get(source, ()))

    def render(self, fmt: Format = "mcp", source: str | None = None) -> list[dict[str, Any]]:
        """The tool list in one of the LLM formats; cached until the catalog changes.

        After a change only the tools whose entry changed are rendered again.
        """
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        rendered = self._rendered.get(fmt)
        if rendered is None:
            rendered = self._rendered[fmt] = self._per_entry(fmt, _RENDER[fmt])
        if source is None:
            return rendered
        return [r for r, e in zip(rendered, self.tools.values(), strict=True) if e.source == source]

    def mcp_tools(self) -> list[types.Tool]:
        return self._per_entry("copy", lambda e: e.tool.model_copy(update={"name": e.name}))

    def _per_entry(self, kind: str, make: Callable[[ToolEntry], _T]) -> list[_T]:
        """``make(entry)`` for every tool, reusing what was made for the same entry object before."""
        old = self._item_cache.get(kind, {})
        new: dict[str, tuple[ToolEntry, Any]] = {}
        out: list[_T] = []
        for name, entry in self.tools.items():
            hit = old.get(name)
            item = hit[1] if hit is not None and hit[0] is entry else make(entry)
            new[name] = (entry, item)
            out.append(item)
        self._item_cache[kind] = new
        return out


def _description(e: ToolEntry) -> str:
    return e.tool.description or e.tool.title or ""


def _render_mcp(e: ToolEntry) -> dict[str, Any]:
    data = e.tool.model_dump(by_alias=True, exclude_none=True, mode="json")
    data["name"] = e.name
    return data


def _render_openai(e: ToolEntry) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": e.name, "description": _description(e), "parameters": e.tool.input_schema},
    }


def _render_anthropic(e: ToolEntry) -> dict[str, Any]:
    return {"name": e.name, "description": _description(e), "input_schema": e.tool.input_schema}


_RENDER = {"mcp": _render_mcp, "openai": _render_openai, "anthropic": _render_anthropic}


def render_entry(entry: ToolEntry, fmt: Format) -> dict[str, Any]:
    """One tool in one format, as ``Catalog.render`` renders it (for tools that are not in a catalog)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return _RENDER[fmt](entry)
