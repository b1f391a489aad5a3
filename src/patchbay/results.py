"""Turning a ``CallToolResult`` into text an LLM can read."""

from __future__ import annotations

import json

import mcp.types as types


def result_text(result: types.CallToolResult) -> str:
    """All content blocks as text; binary blocks are described, not dumped. Errors are marked as such."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.ImageContent):
            parts.append(f"[image: {block.mime_type}, {len(block.data) * 3 // 4} bytes]")
        elif isinstance(block, types.AudioContent):
            parts.append(f"[audio: {block.mime_type}, {len(block.data) * 3 // 4} bytes]")
        elif isinstance(block, types.ResourceLink):
            parts.append(f"[resource: {block.uri}{f' ({block.name})' if block.name else ''}]")
        elif isinstance(block, types.EmbeddedResource):
            res = block.resource
            if isinstance(res, types.TextResourceContents):
                parts.append(res.text)
            else:
                parts.append(f"[binary resource: {res.uri}{f', {res.mime_type}' if res.mime_type else ''}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    return f"Error: {text}" if result.is_error else text
