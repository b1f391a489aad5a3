"""Running an LLM's tool calls through the hub: OpenAI ``tool_calls`` and Anthropic ``tool_use`` blocks.

The loop an application writes is: hand ``hub.tools(format=...)`` to the model, run the calls it asks
for, give it the results, repeat. These helpers do the middle step. Every call of one turn runs
concurrently. Nothing the model sends can break the loop: invalid JSON arguments, an unknown tool, a
server that is down, or a timeout each become an error result the model can read, marked as an error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import mcp.types as types

from patchbay import replies
from patchbay.errors import PatchbayError
from patchbay.results import result_text


class ToolCaller(Protocol):
    """What these helpers need of a hub: just ``call_tool`` (so llm.py does not depend on hub.py)."""

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        profile: str | None = None,
    ) -> types.CallToolResult: ...


def _plain(obj: Any) -> Any:
    """SDK objects (openai/anthropic pydantic models) as plain dicts; dicts unchanged."""
    dump = getattr(obj, "model_dump", None)
    return dump() if callable(dump) else obj


async def _run(
    hub: ToolCaller, name: str, arguments: Any, timeout: float | None, profile: str | None = None
) -> tuple[types.CallToolResult, bool]:
    """One call; (result, is_error). Never raises for anything the model can cause."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            return _error(f"the arguments for {name!r} are not valid JSON ({exc}); send a JSON object"), True
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        return _error(
            f"the arguments for {name!r} must be a JSON object, not {type(arguments).__name__}"
        ), True
    try:
        result = await hub.call_tool(name, arguments, timeout=timeout, profile=profile)
    except PatchbayError as exc:  # every hub error is for the model to read, an unknown tool included
        return replies.tool_error_result(exc), True
    return result, bool(result.is_error)


def _error(message: str) -> types.CallToolResult:
    return replies.tool_error_result(message)


async def run_openai_tool_calls(
    hub: ToolCaller, message: Any, *, timeout: float | None = None, profile: str | None = None
) -> list[dict[str, Any]]:
    """Run an OpenAI assistant message's ``tool_calls`` (or the list itself) concurrently.

    With ``profile``, through that profile (tools outside it are refused; a search profile's meta-tools
    are answered), the pair of ``hub.tools(format, profile=...)``.

    Returns one ``{"role": "tool", "tool_call_id", "content"}`` message per call, in order, ready to append
    to the conversation. Errors are returned as content starting with ``Error:``.
    """
    data = _plain(message)
    calls = data.get("tool_calls") if isinstance(data, Mapping) else data
    calls = [_plain(c) for c in (calls or [])]

    async def one(call: Mapping[str, Any]) -> dict[str, Any]:
        fn = _plain(call.get("function")) or {}
        name = str(fn.get("name", ""))
        result, is_error = await _run(hub, name, fn.get("arguments"), timeout, profile)
        text = result_text(result)
        if is_error and not text.startswith("Error:"):
            text = f"Error: {text}"
        return {"role": "tool", "tool_call_id": call.get("id", ""), "content": text}

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def run_anthropic_tool_uses(
    hub: ToolCaller, content: Any, *, timeout: float | None = None, profile: str | None = None
) -> list[dict[str, Any]]:
    """Run the ``tool_use`` blocks of an Anthropic assistant message (its ``content``, or the message).

    Returns ``tool_result`` blocks, in order, with ``is_error`` set when the call failed; put them in the
    next user message. Text, images and structured results are carried over.
    """
    data = _plain(content)
    if isinstance(data, Mapping):
        data = data.get("content", [])
    blocks = [
        b for b in (_plain(x) for x in (data or [])) if isinstance(b, Mapping) and b.get("type") == "tool_use"
    ]

    async def one(block: Mapping[str, Any]) -> dict[str, Any]:
        result, is_error = await _run(hub, str(block.get("name", "")), block.get("input"), timeout, profile)
        out: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": block.get("id", ""),
            "content": _anthropic_content(result),
        }
        if is_error:
            out["is_error"] = True
        return out

    return list(await asyncio.gather(*(one(b) for b in blocks)))


def _anthropic_content(result: types.CallToolResult) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in result.content:
        if isinstance(block, types.ImageContent):
            parts.append(
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": block.mime_type, "data": block.data},
                }
            )
        else:
            one = types.CallToolResult(content=[block])
            text = result_text(one)
            if text:
                parts.append({"type": "text", "text": text})
    if not parts:
        text = result_text(types.CallToolResult(content=[], structured_content=result.structured_content))
        parts.append({"type": "text", "text": text or "(no output)"})
    return parts


def tool_names(tools: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names from any rendering (MCP, OpenAI or Anthropic)."""
    return [t["function"]["name"] if "function" in t else t["name"] for t in tools]
