"""Search discovery: a profile with ``"discovery": "search"`` lists two meta-tools instead of its tools.

Why: a model chooses worse as its tool list grows, and some APIs cap it (OpenAI takes 128 tools). Such a
profile hands the client ``search_tools`` (the profile's best-matching tools for a request, with names,
descriptions and input schemas) and ``call_tool`` (call one of them by name). Both are answered by the hub
itself (``Hub.call_tool(name, args, profile=...)`` routes them here), so every surface that calls through a
profile (``/mcp/<profile>`` on both paths, REST, the LLM helpers) behaves the same. Their definitions never
depend on the catalog, so a client of such a profile never needs to re-list tools.

Failures the model can fix (a missing query, a tool outside the profile) come back as error results it
can read, never as protocol errors: the meta-tools are tools, and a tool that fails says so in its result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import mcp.types as types

from patchbay import replies
from patchbay.catalog import Format, ToolEntry, render_entry
from patchbay.errors import PatchbayError
from patchbay.search import DEFAULT_LIMIT, ToolMatch

if TYPE_CHECKING:
    from patchbay.hub import DownstreamClient
    from patchbay.jsonrpc import ProgressCallback

SEARCH_TOOLS = "search_tools"
CALL_TOOL = "call_tool"
META_NAMES = frozenset({SEARCH_TOOLS, CALL_TOOL})
MAX_LIMIT = 50  # more than this is the long list search discovery exists to avoid
SOURCE = "patchbay"  # the meta-tools' source in renderings

_SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {
            "type": "string",
            "description": "What you want to do, in plain words, e.g. 'create an issue on GitHub'.",
        },
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_LIMIT,
            "default": DEFAULT_LIMIT,
            "description": "How many tools to return, best first.",
        },
    },
    "required": ["query"],
}
_SEARCH_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tools": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "inputSchema": {"type": "object"},
                },
                "required": ["name", "description", "inputSchema"],
            },
        },
    },
    "required": ["tools"],
}
_CALL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "The tool's exact name, as search_tools returned it."},
        "arguments": {
            "type": "object",
            "description": "The tool's arguments, matching the input schema search_tools returned.",
            "additionalProperties": True,
        },
    },
    "required": ["name"],
}


def meta_tools(profile: str) -> list[types.Tool]:
    """The two tools a search profile lists (the same for the profile's whole life)."""
    return [
        types.Tool(
            name=SEARCH_TOOLS,
            title="Search tools",
            description=(
                f"Find the tools for a task among the tools of profile {profile!r}. Describe the task in "
                "plain words; you get the best-matching tools with their names, descriptions and input "
                f"schemas. Then run one with {CALL_TOOL}. Search again with other words if none fits."
            ),
            input_schema=_SEARCH_SCHEMA,
            output_schema=_SEARCH_OUTPUT,
            annotations=types.ToolAnnotations(
                title="Search tools", read_only_hint=True, idempotent_hint=True, open_world_hint=False
            ),
        ),
        types.Tool(
            name=CALL_TOOL,
            title="Call a tool",
            description=(
                f"Run one of the tools of profile {profile!r} that {SEARCH_TOOLS} found: its exact name, "
                "and its arguments as an object matching its input schema. Returns that tool's result."
            ),
            input_schema=_CALL_SCHEMA,
            annotations=types.ToolAnnotations(title="Call a tool"),
        ),
    ]


def render(profile: str, fmt: Format) -> list[dict[str, Any]]:
    """The meta-tools in one of the catalog's formats (``mcp``, ``openai``, ``anthropic``)."""
    return [render_entry(ToolEntry(t.name, SOURCE, t.name, t), fmt) for t in meta_tools(profile)]


class _Caller(Protocol):
    """What the meta-tools need of a hub (so this module does not import hub.py)."""

    async def wait_started(self) -> None: ...

    async def asearch_tools(
        self, query: str, limit: int = ..., *, profile: str | None = None
    ) -> list[ToolMatch]: ...

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
        client: DownstreamClient | None = None,
        profile: str | None = None,
    ) -> types.CallToolResult: ...


async def call_meta(
    hub: _Caller,
    profile: str,
    name: str,
    arguments: Mapping[str, Any] | None,
    *,
    timeout: float | None = None,
    progress: ProgressCallback | None = None,
    client: DownstreamClient | None = None,
) -> types.CallToolResult:
    """Answer ``search_tools`` or ``call_tool`` for a search profile (``name`` is one of ``META_NAMES``)."""
    args = dict(arguments or {})
    if name == SEARCH_TOOLS:
        return await _search(hub, profile, args)
    target = args.get("name")
    if not isinstance(target, str) or not target:
        return _error(f"{CALL_TOOL} needs 'name': the exact name of a tool {SEARCH_TOOLS} returned")
    if target in META_NAMES:
        return _error(f"{target!r} is one of the meta-tools: call it directly, not through {CALL_TOOL}")
    inner = args.get("arguments")
    if isinstance(inner, str):  # models sometimes send the arguments as JSON text
        try:
            inner = json.loads(inner) if inner.strip() else {}
        except ValueError:
            return _error(f"{CALL_TOOL}: 'arguments' for {target!r} must be a JSON object, not text")
    if inner is None:
        inner = {}
    if not isinstance(inner, Mapping):
        kind = type(inner).__name__
        return _error(f"{CALL_TOOL}: 'arguments' for {target!r} must be an object, not {kind}")
    unknown = sorted(set(args) - {"name", "arguments"})
    if unknown:
        return _error(
            f"{CALL_TOOL} takes 'name' and 'arguments' only (got {', '.join(map(repr, unknown))}); put "
            f"the arguments of {target!r} inside 'arguments'"
        )
    try:
        return await hub.call_tool(
            target, inner, timeout=timeout, progress=progress, client=client, profile=profile
        )
    except PatchbayError as exc:  # a tool outside the profile, a server down: for the model to read
        return replies.tool_error_result(exc)


async def _search(hub: _Caller, profile: str, args: dict[str, Any]) -> types.CallToolResult:
    query = args.get("query")
    if not isinstance(query, str) or not query.strip():
        return _error(f"{SEARCH_TOOLS} needs 'query': what you want to do, in plain words")
    limit = args.get("limit", DEFAULT_LIMIT)
    if limit is None:
        limit = DEFAULT_LIMIT
    if isinstance(limit, float) and limit.is_integer():
        limit = int(limit)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        return _error(f"{SEARCH_TOOLS}: 'limit' must be a whole number from 1 to {MAX_LIMIT}, not {limit!r}")
    unknown = sorted(set(args) - {"query", "limit"})
    if unknown:
        return _error(f"{SEARCH_TOOLS} takes 'query' and 'limit' only (got {', '.join(map(repr, unknown))})")
    await hub.wait_started()  # a search during start-up would miss the servers still starting
    matches = await hub.asearch_tools(query, limit, profile=profile)
    found = [
        {
            "name": m.name,
            "description": m.tool.description or m.tool.title or "",
            "inputSchema": m.tool.input_schema,
        }
        for m in matches
    ]
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=_text(profile, query, found))],
        structured_content={"tools": found},
    )


def _text(profile: str, query: str, found: list[dict[str, Any]]) -> str:
    """The matches for a model that reads only text content: name, description, arguments' schema."""
    if not found:
        return (
            f"No tool of profile {profile!r} matches {query!r}. Try other words: what the tool does, "
            "or the service it works with."
        )
    lines = [f"{len(found)} tools of profile {profile!r} for {query!r}, best first:"]
    for t in found:
        lines.append("")
        lines.append(f"{t['name']}: {t['description']}".rstrip(": "))
        lines.append(f"  input schema: {json.dumps(t['inputSchema'], separators=(',', ':'))}")
    lines.append("")
    lines.append(f'Run one with {CALL_TOOL} {{"name": "<name>", "arguments": {{...}}}}.')
    return "\n".join(lines)


def _error(message: str) -> types.CallToolResult:
    return replies.tool_error_result(message)
