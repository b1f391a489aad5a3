"""The bundled demo server (``python -m patchbay.demo``), driven over real stdio with the SDK client."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import importlib.resources
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import mcp.types as types
import pytest
import pytest_asyncio
from mcp import ClientSession, StdioServerParameters, stdio_client

EXPECTED_TOOLS = {
    "now",
    "convert_time",
    "add",
    "calculate",
    "word_count",
    "change_case",
    "slugify",
    "hash_text",
    "uuid",
    "random_number",
}


# All async tests share the module-scoped event loop, and with it the one demo server.
in_module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def session() -> AsyncIterator[ClientSession]:
    """One demo server for the whole module.

    The stdio transport's cancel scopes must be entered and exited in the same task, and pytest-asyncio
    may run fixture setup and teardown in different tasks, so a dedicated owner task holds the
    connection open until the module is done. ClientSession calls can come from any task.
    """
    params = StdioServerParameters(command=sys.executable, args=["-m", "patchbay.demo"])
    ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def own() -> None:
        try:
            async with (
                stdio_client(params, errlog=sys.stderr) as (read, write),
                ClientSession(
                    read,
                    write,
                    read_timeout_seconds=30,
                    client_info=types.Implementation(name="patchbay-tests", version="0"),
                ) as session,
            ):
                await session.initialize()
                ready.set_result(session)
                await done.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    owner = asyncio.create_task(own())
    try:
        yield await asyncio.wait_for(ready, timeout=60)
    finally:
        done.set()
        await asyncio.wait_for(owner, timeout=30)


async def call_ok(session: ClientSession, name: str, args: dict[str, Any]) -> Any:
    result = await session.call_tool(name, args)
    assert not result.is_error, f"{name}({args}) failed: {_text(result)}"
    assert result.structured_content is not None
    return result.structured_content


async def call_err(session: ClientSession, name: str, args: dict[str, Any], *fragments: str) -> str:
    result = await session.call_tool(name, args)
    text = _text(result)
    assert result.is_error, f"{name}({args}) should fail but returned {text!r}"
    for fragment in fragments:
        assert fragment.lower() in text.lower(), f"{fragment!r} not in error message {text!r}"
    return text


def _text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


@in_module_loop
async def test_lists_and_metadata(session: ClientSession) -> None:
    info = session.server_info
    assert info is not None
    assert info.name == "patchbay-demo"
    assert info.version == importlib.metadata.version("mcp-patchbay")

    tools = (await session.list_tools()).tools
    assert {t.name for t in tools} == EXPECTED_TOOLS
    for tool in tools:
        assert tool.description, tool.name
        assert tool.input_schema.get("type") == "object"
        assert tool.output_schema is not None, tool.name
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
        for prop, schema in tool.input_schema.get("properties", {}).items():
            assert schema.get("description"), f"{tool.name}.{prop} has no description"
    by_name = {t.name: t for t in tools}
    assert by_name["change_case"].input_schema["properties"]["case"]["enum"] == [
        "upper",
        "lower",
        "title",
        "snake",
        "camel",
        "kebab",
    ]
    assert by_name["uuid"].input_schema["properties"]["count"]["maximum"] == 100

    resources = (await session.list_resources()).resources
    assert [str(r.uri) for r in resources] == ["demo://about"]
    about = (await session.read_resource("demo://about")).contents[0]
    assert isinstance(about, types.TextResourceContents)
    assert "patchbay-demo" in about.text
    assert all(f"`{name}`" in about.text for name in EXPECTED_TOOLS)

    prompts = (await session.list_prompts()).prompts
    assert [p.name for p in prompts] == ["summarize"]
    prompt = await session.get_prompt("summarize", {"text": "The cat sat on the mat."})
    assert prompt.messages[0].role == "user"
    content = prompt.messages[0].content
    assert isinstance(content, types.TextContent)
    assert "Summarize" in content.text and "The cat sat on the mat." in content.text


@in_module_loop
async def test_time_tools(session: ClientSession) -> None:
    utc = await call_ok(session, "now", {})
    assert utc["timezone"] == "UTC" and utc["utc_offset"] == "+00:00"
    parsed = datetime.fromisoformat(utc["datetime"])
    assert parsed.strftime("%A") == utc["weekday"]

    tokyo = await call_ok(session, "now", {"timezone": "Asia/Tokyo"})
    assert tokyo["utc_offset"] == "+09:00" and tokyo["is_dst"] is False
    # Case-insensitive match of an otherwise exact name.
    assert (await call_ok(session, "now", {"timezone": "europe/berlin"}))["timezone"] == "Europe/Berlin"

    conv = await call_ok(
        session,
        "convert_time",
        {"time": "2025-01-15T09:00", "from_timezone": "Europe/Berlin", "to_timezone": "Asia/Kolkata"},
    )
    assert conv["source"]["datetime"] == "2025-01-15T09:00:00+01:00"
    assert conv["target"]["datetime"] == "2025-01-15T13:30:00+05:30"
    assert conv["time_difference"] == "+4.5h"

    summer = await call_ok(
        session,
        "convert_time",
        {"time": "2025-07-01T12:00", "from_timezone": "America/New_York", "to_timezone": "UTC"},
    )
    assert summer["source"]["is_dst"] is True
    assert summer["target"]["datetime"] == "2025-07-01T16:00:00+00:00"

    hhmm = await call_ok(
        session, "convert_time", {"time": "23:30", "from_timezone": "UTC", "to_timezone": "Asia/Tokyo"}
    )
    assert hhmm["target"]["datetime"].endswith("T08:30:00+09:00")

    # An explicit offset wins over from_timezone.
    explicit = await call_ok(
        session,
        "convert_time",
        {"time": "2025-01-15T09:00+00:00", "from_timezone": "Europe/Paris", "to_timezone": "UTC"},
    )
    assert explicit["target"]["datetime"] == "2025-01-15T09:00:00+00:00"

    # Bad arguments.
    await call_err(session, "now", {"timezone": "Mars/Olympus"}, "unknown time zone", "IANA")
    await call_err(session, "now", {"timezone": "Europe/Berln"}, "did you mean", "Europe/Berlin")
    await call_err(session, "now", {"timezone": "../../etc/passwd"}, "unknown time zone")
    await call_err(session, "now", {"timezone": 42}, "timezone")
    await call_err(
        session,
        "convert_time",
        {"time": "25:00", "from_timezone": "UTC", "to_timezone": "UTC"},
        "hours must be 0-23",
    )
    await call_err(
        session,
        "convert_time",
        {"time": "tomorrow", "from_timezone": "UTC", "to_timezone": "UTC"},
        "could not parse",
        "HH:MM",
    )
    await call_err(
        session,
        "convert_time",
        {"time": "10:00", "from_timezone": "UTC", "to_timezone": "PST8PDTX"},
        "unknown time zone",
    )
    await call_err(session, "convert_time", {"time": "10:00", "from_timezone": "UTC"}, "to_timezone")


@in_module_loop
async def test_arithmetic_tools(session: ClientSession) -> None:
    assert (await call_ok(session, "add", {"a": 2, "b": 3}))["result"] == 5
    assert (await call_ok(session, "add", {"a": 0.1, "b": 0.2}))["result"] == pytest.approx(0.3)
    assert (await call_ok(session, "add", {"a": -7, "b": 2.5}))["result"] == -4.5

    cases = {
        "(2 + 3) * 4": 20,
        "2 ** 10": 1024,
        "7 // 2 + 7 % 2": 4,
        "10 / 4": 2.5,
        "-3 ** 2": -9,
        "sqrt(16) + abs(-2)": 6,
        "round(pi * 3 ** 2, 2)": 28.27,
        "log(e)": 1,
        "log(8, 2)": 3,
        "max(1, 5, 3) - min(4, 2)": 3,
        "factorial(5)": 120,
        "2 ** 100": 2**100,
    }
    for expression, expected in cases.items():
        out = await call_ok(session, "calculate", {"expression": expression})
        assert out["result"] == pytest.approx(expected), expression

    await call_err(session, "add", {"a": "two", "b": 3}, "a", "valid number")
    await call_err(session, "add", {"a": 1}, "b", "required")
    await call_err(session, "calculate", {"expression": "1 / 0"}, "division by zero")
    await call_err(session, "calculate", {"expression": "9 ** 9 ** 9"}, "too large")
    await call_err(session, "calculate", {"expression": "10.0 ** 400"}, "too large")
    await call_err(session, "calculate", {"expression": "factorial(100000)"}, "factorial")
    await call_err(session, "calculate", {"expression": "2 ^ 3"}, "use ** for powers")
    await call_err(session, "calculate", {"expression": "sqrt(-1)"}, "math error")
    await call_err(session, "calculate", {"expression": "(-8) ** (1/3)"}, "complex")
    await call_err(session, "calculate", {"expression": "__import__('os').system('true')"}, "allowed")
    await call_err(session, "calculate", {"expression": "x + 1"}, "unknown name 'x'")
    await call_err(session, "calculate", {"expression": "open('f')"}, "unknown function 'open'")
    await call_err(session, "calculate", {"expression": "'a' * 3"}, "only numbers")
    await call_err(session, "calculate", {"expression": "1 < 2"}, "comparisons")
    await call_err(session, "calculate", {"expression": "(1 + "}, "could not parse")
    await call_err(session, "calculate", {"expression": "sqrt(1, 2)"}, "arguments for sqrt")
    await call_err(session, "calculate", {"expression": ""}, "expression")
    await call_err(session, "calculate", {"expression": "1+" * 600 + "1"}, "expression")


@in_module_loop
async def test_text_and_random_tools(session: ClientSession) -> None:
    stats = await call_ok(session, "word_count", {"text": "Hello brave\nnew world\n"})
    assert stats == {"words": 4, "characters": 22, "characters_excluding_whitespace": 18, "lines": 2}
    assert (await call_ok(session, "word_count", {"text": ""}))["lines"] == 0

    text = "parseHTTPResponse now, please"
    expected = {
        "upper": "PARSEHTTPRESPONSE NOW, PLEASE",
        "lower": "parsehttpresponse now, please",
        "title": "Parsehttpresponse Now, Please",
        "snake": "parse_http_response_now_please",
        "camel": "parseHttpResponseNowPlease",
        "kebab": "parse-http-response-now-please",
    }
    for case, want in expected.items():
        assert (await call_ok(session, "change_case", {"text": text, "case": case}))["result"] == want

    slug = await call_ok(session, "slugify", {"text": "  Héllo, Wörld! Ça va?  2025 "})
    assert slug["result"] == "hello-world-ca-va-2025"
    short = await call_ok(session, "slugify", {"text": "one two three", "max_length": 7})
    assert short["result"] == "one-two"

    for algorithm in ("sha256", "sha1", "md5"):
        digest = await call_ok(session, "hash_text", {"text": "héllo", "algorithm": algorithm})
        assert digest["result"] == hashlib.new(algorithm, "héllo".encode()).hexdigest()
    default = await call_ok(session, "hash_text", {"text": "abc"})
    assert default["result"] == hashlib.sha256(b"abc").hexdigest()

    one = await call_ok(session, "uuid", {})
    assert len(one["uuids"]) == 1 and uuid.UUID(one["uuids"][0]).version == 4
    many = await call_ok(session, "uuid", {"count": 100})
    assert len(set(many["uuids"])) == 100

    for _ in range(5):
        n = (await call_ok(session, "random_number", {"minimum": -3, "maximum": 3}))["result"]
        assert -3 <= n <= 3
    assert (await call_ok(session, "random_number", {"minimum": 7, "maximum": 7}))["result"] == 7

    await call_err(session, "word_count", {}, "text", "required")
    await call_err(session, "change_case", {"text": "x", "case": "shout"}, "case", "'snake'")
    await call_err(session, "slugify", {"text": "!!! ???"}, "no letters or digits")
    await call_err(session, "slugify", {"text": "a", "max_length": 0}, "max_length")
    await call_err(session, "hash_text", {"text": "x", "algorithm": "sha512"}, "algorithm", "'sha256'")
    await call_err(session, "uuid", {"count": 101}, "count", "100")
    await call_err(session, "uuid", {"count": 0}, "count")
    await call_err(session, "random_number", {"minimum": 5, "maximum": 1}, "must not be greater")
    await call_err(session, "random_number", {"minimum": 1.5, "maximum": 3}, "minimum")
    await call_err(session, "no_such_tool", {}, "unknown tool")

    # The session survives all of the above.
    assert (await call_ok(session, "add", {"a": 1, "b": 1}))["result"] == 2


def test_default_config_starts_the_demo() -> None:
    # Read it as package data (not via patchbay.demo: importing the server configures logging).
    config = json.loads(importlib.resources.files("patchbay").joinpath("default_config.json").read_text())
    assert config == {
        "mcpServers": {"demo": {"command": "${PATCHBAY_PYTHON}", "args": ["-m", "patchbay.demo"]}}
    }
