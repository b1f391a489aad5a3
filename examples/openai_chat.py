"""A chat loop with every tool of a patchbay hub, against any OpenAI-compatible endpoint.

    OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_MODEL=llama3.1 OPENAI_API_KEY=unused \\
        .venv/bin/python examples/openai_chat.py [--config patchbay.json] "What is 17% of 2350?"

Without a question it reads questions from stdin, one per line. Uses the official ``openai`` package.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from patchbay import Hub
from patchbay.cli import default_config_path

SYSTEM = "You are a helpful assistant. Use the tools when they help; say which tool you used."


async def chat(
    hub: Hub, client: AsyncOpenAI, model: str, messages: list[dict[str, Any]], max_turns: int = 8
) -> str:
    """Ask the model, run the tool calls it makes through the hub, repeat until it answers in text."""
    tools = hub.tools(format="openai")
    for _ in range(max_turns):
        response = await client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            tools=tools,  # type: ignore[arg-type]
        )
        message = response.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            return message.content or ""
        # Every call of this turn runs concurrently; failures come back as error messages, not exceptions.
        messages.extend(await hub.run_openai_tool_calls(message))
    return "(stopped after too many tool-calling turns)"


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("question", nargs="?", help="one question (default: read lines from stdin)")
    parser.add_argument("--config", type=Path, default=default_config_path())
    args = parser.parse_args()
    model = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
    client = AsyncOpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY come from the environment
    async with Hub.from_file(args.config) as hub:
        print(f"{len(hub.tools())} tools from {len(hub.servers)} server(s); model {model}", file=sys.stderr)
        questions = [args.question] if args.question else (line.strip() for line in sys.stdin)
        messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
        for question in questions:
            if not question:
                continue
            messages.append({"role": "user", "content": question})
            print(await chat(hub, client, model, messages), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
