"""The LLM tool-calling loop: the real ``openai`` client, a scripted OpenAI-compatible server, a real hub."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from openai import AsyncOpenAI

from patchbay import Hub
from tests.conftest import HubFactory, bad, wait_for
from tests.test_serve import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
from openai_chat import chat  # noqa: E402


def completion(message: dict[str, Any]) -> dict[str, Any]:
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", **message}}],
    }


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


class ScriptedModel:
    """An OpenAI-compatible ``/v1/chat/completions`` that answers from a script and records requests.

    There is no real model here: the script plays the model's part, so the client, the helpers and
    the hub are all real.
    """

    def __init__(self, script: list[dict[str, Any]]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.app = FastAPI()

        @self.app.post("/v1/chat/completions")
        async def completions(request: Request) -> dict[str, Any]:
            body = await request.json()
            self.requests.append(body)
            return completion(self.script.pop(0))


@pytest.fixture
async def model_server() -> AsyncIterator[tuple[ScriptedModel, str]]:
    model = ScriptedModel([])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(model.app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started, 10)
    yield model, f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    await task


async def test_openai_loop_runs_every_call_and_keeps_going_on_bad_input(
    make_hub: HubFactory, model_server: tuple[ScriptedModel, str]
) -> None:
    model, base_url = model_server
    model.script = [
        {
            "content": None,
            "tool_calls": [
                tool_call("c1", "mb__add", '{"a": 2, "b": 40}'),
                tool_call("c2", "mb__add", '{"a": 2,'),  # invalid JSON from the model
                tool_call("c3", "mb__no_such_tool", "{}"),
                tool_call("c4", "mb__fail", "{}"),
            ],
        },
        {"content": "The sum is 42."},
    ]
    hub = await make_hub({"mb": bad()})
    client = AsyncOpenAI(base_url=base_url, api_key="test")
    messages: list[dict[str, Any]] = [{"role": "user", "content": "add 2 and 40"}]
    answer = await chat(hub, client, "scripted", messages)
    assert answer == "The sum is 42."

    first, second = model.requests
    names = {t["function"]["name"] for t in first["tools"]}
    assert {"mb__add", "mb__echo"} <= names  # the hub's catalog in OpenAI format reached the model
    tool_messages = {m["tool_call_id"]: m for m in second["messages"] if m["role"] == "tool"}
    assert tool_messages["c1"]["content"] == "42"
    assert tool_messages["c2"]["content"].startswith("Error: the arguments for 'mb__add' are not valid JSON")
    assert tool_messages["c3"]["content"].startswith("Error: unknown tool 'mb__no_such_tool'")
    assert tool_messages["c4"]["content"] == "Error: tool failed on purpose"
    assistant = next(m for m in second["messages"] if m["role"] == "assistant")
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2", "c3", "c4"]


async def test_openai_calls_of_one_turn_run_concurrently(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    message = {"tool_calls": [tool_call(f"c{i}", "mb__sleep", '{"seconds": 1}') for i in range(5)]}
    task = asyncio.create_task(hub.run_openai_tool_calls(message))
    await wait_for(lambda: hub.status()["mb"].calls_in_flight == 5, 2)  # all five at once
    results = await task
    assert [r["tool_call_id"] for r in results] == [f"c{i}" for i in range(5)]
    assert all(r["content"] == "slept 1" for r in results)


async def test_openai_sdk_objects_are_accepted(make_hub: HubFactory) -> None:
    from openai.types.chat import ChatCompletionMessage

    hub = await make_hub({"mb": bad()})
    message = ChatCompletionMessage.model_validate(
        {"role": "assistant", "tool_calls": [tool_call("x", "mb__echo", '{"text": "hi"}')]}
    )
    assert await hub.run_openai_tool_calls(message) == [
        {"role": "tool", "tool_call_id": "x", "content": "hi"}
    ]
    assert await hub.run_openai_tool_calls(message.tool_calls) == [
        {"role": "tool", "tool_call_id": "x", "content": "hi"}
    ]


async def test_anthropic_tool_use_blocks(make_hub: HubFactory) -> None:
    hub = await make_hub({"mb": bad()})
    content = [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "t1", "name": "mb__echo", "input": {"text": "hello"}},
        {"type": "tool_use", "id": "t2", "name": "mb__fail", "input": {}},
        {"type": "tool_use", "id": "t3", "name": "nope", "input": {}},
        {"type": "tool_use", "id": "t4", "name": "mb__echo", "input": "not an object"},
        {"type": "tool_use", "id": "t5", "name": "mb__add", "input": {"a": 1, "b": 2}},
    ]
    results = await hub.run_anthropic_tool_uses({"role": "assistant", "content": content})
    by_id = {r["tool_use_id"]: r for r in results}
    assert [r["tool_use_id"] for r in results] == ["t1", "t2", "t3", "t4", "t5"]
    assert by_id["t1"] == {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": [{"type": "text", "text": "hello"}],
    }
    assert by_id["t2"]["is_error"] is True and "on purpose" in by_id["t2"]["content"][0]["text"]
    assert by_id["t3"]["is_error"] is True and "unknown tool 'nope'" in by_id["t3"]["content"][0]["text"]
    assert by_id["t4"]["is_error"] is True and "JSON object" in by_id["t4"]["content"][0]["text"]
    assert by_id["t5"]["content"] == [{"type": "text", "text": "3"}] and "is_error" not in by_id["t5"]


async def test_the_example_runs_end_to_end(tmp_path: Path, model_server: tuple[ScriptedModel, str]) -> None:
    model, base_url = model_server
    model.script = [
        {"content": None, "tool_calls": [tool_call("c1", "mb__echo", '{"text": "from the example"}')]},
        {"content": "done: from the example"},
    ]
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"mb": bad()}}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "openai_chat.py"), "--config", str(config), "echo something",
        env={**os.environ, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "test", "OPENAI_MODEL": "scripted"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "done: from the example"
    tool_messages = [m for m in model.requests[1]["messages"] if m["role"] == "tool"]
    assert tool_messages == [{"role": "tool", "tool_call_id": "c1", "content": "from the example"}]


async def test_tools_in_every_format_are_consistent(make_hub: HubFactory) -> None:
    from patchbay.llm import tool_names

    hub: Hub = await make_hub({"mb": bad()})
    assert (
        tool_names(hub.tools("mcp")) == tool_names(hub.tools("openai")) == tool_names(hub.tools("anthropic"))
    )
