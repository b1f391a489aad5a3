"""The catalog: every upstream's tools, resources and prompts under one deterministic, collision-free name.

Names never depend on start-up order: each rebuild walks the sources in a fixed priority (local servers in
config order, then agents) and the first owner of a name keeps it. A collision is never silent: the loser
is left out and the conflict is recorded against its source with both owners named. Renderings (MCP,
OpenAI, Anthropic) are built once per catalog version and cached.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import mcp.types as types
from pydantic import ValidationError

from patchbay.errors import UnknownToolError

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
    name: str
    prefix: str
    rank: tuple[int, int, str]
    hidden: frozenset[str]
    listing: Listing


def _template_regex(template: str) -> re.Pattern[str]:
    """A regex matching URIs produced by a simple RFC 6570 template (``{var}`` expressions)."""
    parts = re.split(r"(\{[^}]*\})", template)
    rx = "".join("(.+?)" if p.startswith("{") and p.endswith("}") else re.escape(p) for p in parts)
    return re.compile(f"^{rx}$")


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

    # --- updates -----------------------------------------------------------------------------------

    def set_source(
        self,
        name: str,
        listing: Listing,
        *,
        prefix: str,
        rank: tuple[int, int, str],
        hidden: Iterable[str] = (),
    ) -> tuple[list[str], list[str]]:
        self._sources[name] = _Source(name, prefix, rank, frozenset(hidden), listing)
        return self.rebuild()

    def remove_source(self, name: str) -> tuple[list[str], list[str]]:
        if self._sources.pop(name, None) is None:
            return [], []
        return self.rebuild()

    def rerank(self, name: str, rank: tuple[int, int, str]) -> None:
        """Change a source's rank; takes effect at the next ``rebuild()``."""
        src = self._sources.get(name)
        if src is not None:
            src.rank = rank

    def has_source(self, name: str) -> bool:
        return name in self._sources

    def rebuild(self) -> tuple[list[str], list[str]]:
        """Recompute every name from scratch in priority order; returns (added, removed) tool names."""
        before = set(self.tools)
        tools: dict[str, ToolEntry] = {}
        prompts: dict[str, PromptEntry] = {}
        resources: dict[str, ResourceEntry] = {}
        templates: list[TemplateEntry] = []
        conflicts: dict[str, list[str]] = {}
        for src in sorted(self._sources.values(), key=lambda s: s.rank):
            notes: list[str] = []
            for tool in src.listing.tools:
                exposed = safe_name(src.prefix, tool.name)
                if tool.name in src.hidden or exposed in src.hidden:
                    continue
                owner = tools.get(exposed)
                if owner is not None:
                    notes.append(
                        f"tool {tool.name!r} is not exposed: the name {exposed!r} already belongs to "
                        f"{owner.source!r} (tool {owner.original!r})"
                    )
                    continue
                tools[exposed] = ToolEntry(exposed, src.name, tool.name, tool)
            for prompt in src.listing.prompts:
                exposed = safe_name(src.prefix, prompt.name)
                owner_p = prompts.get(exposed)
                if owner_p is not None:
                    notes.append(
                        f"prompt {prompt.name!r} is not exposed: the name {exposed!r} already belongs to "
                        f"{owner_p.source!r}"
                    )
                    continue
                prompts[exposed] = PromptEntry(exposed, src.name, prompt.name, prompt)
            for res in src.listing.resources:
                owner_r = resources.get(res.uri)
                if owner_r is not None:
                    notes.append(
                        f"resource {res.uri!r} is not exposed: the same URI is offered by {owner_r.source!r}"
                    )
                    continue
                resources[res.uri] = ResourceEntry(res.uri, safe_name(src.prefix, res.name), src.name, res)
            for tpl in src.listing.templates:
                owner_t = next((t for t in templates if t.template.uri_template == tpl.uri_template), None)
                if owner_t is not None:
                    notes.append(
                        f"resource template {tpl.uri_template!r} is not exposed: the same template is "
                        f"offered by {owner_t.source!r}"
                    )
                    continue
                templates.append(
                    TemplateEntry(
                        safe_name(src.prefix, tpl.name), src.name, tpl, _template_regex(tpl.uri_template)
                    )
                )
            if notes:
                conflicts[src.name] = notes
                known = set(self.conflicts.get(src.name, ()))
                for n in notes:
                    if n not in known:  # log each conflict once, not on every rebuild
                        log.warning("%s: %s", src.name, n)
        self.tools, self.prompts, self.resources, self.templates = tools, prompts, resources, templates
        self.conflicts = conflicts
        self.version += 1
        self._rendered = {}
        after = set(tools)
        return sorted(after - before), sorted(before - after)

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
        return [e for e in self.tools.values() if e.source == source]

    def render(self, fmt: Format = "mcp", source: str | None = None) -> list[dict[str, Any]]:
        """The tool list in one of the LLM formats; cached until the catalog changes."""
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        rendered = self._rendered.get(fmt)
        if rendered is None:
            rendered = self._rendered[fmt] = [_RENDER[fmt](e) for e in self.tools.values()]
        if source is None:
            return rendered
        return [r for r, e in zip(rendered, self.tools.values(), strict=True) if e.source == source]

    def mcp_tools(self) -> list[types.Tool]:
        return [e.tool.model_copy(update={"name": e.name}) for e in self.tools.values()]


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
