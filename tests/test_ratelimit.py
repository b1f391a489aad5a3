"""Rate limits (``rateLimits``): parsing with errors naming the field, token buckets per identity and per
identity and tool, refusals that never reach the upstream (a real stdio server counts what arrives), the
JSON-RPC error on ``/mcp`` and HTTP 429 with ``Retry-After`` on REST from a real ``patchbay serve``, and
reloads."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import mcp.types as types
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from patchbay import ConfigError, Hub
from patchbay.config import load_config
from patchbay.identity import LOCAL, Identity
from patchbay.ratelimit import RateLimitedError, RateLimiter, parse_rate, parse_rate_limits
from patchbay.replies import RATE_LIMITED
from tests.conftest import bad
from tests.test_serve import Served, start_serve, stop_serve

# A real stdio MCP server (the SDK's MCPServer) that counts the calls that reach it.
COUNTER = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("counter")
calls = {"bump": 0}


@server.tool()
def bump() -> int:
    """Count one call."""
    calls["bump"] += 1
    return calls["bump"]


@server.tool()
def count() -> int:
    """How many bump calls arrived."""
    return calls["bump"]


server.run("stdio")
'''

CI = Identity("ci", "user")
BOB = Identity("bob", "user")


class Clock:
    """A hand-driven monotonic clock, so bucket arithmetic is tested exactly, without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(raw: dict[str, Any], clock: Clock) -> RateLimiter:
    settings = parse_rate_limits({"rateLimits": raw})
    assert settings is not None
    return RateLimiter(settings, clock)


def counter_spec(tmp_path: Path) -> dict[str, Any]:
    script = tmp_path / "counter.py"
    script.write_text(COUNTER)
    return {"command": sys.executable, "args": [str(script)]}


# --- parsing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [("10/min", 10, 60), ("5/s", 5, 1), ("1000/h", 1000, 3600), ("3 / second", 3, 1), ("2/hours", 2, 3600)],
)
def test_rates_parse(text: str, count: int, period: float) -> None:
    rate = parse_rate(text, "rateLimits.default")
    assert rate is not None and (rate.count, rate.period) == (count, period)


def test_unlimited_and_null_mean_no_limit() -> None:
    assert parse_rate("unlimited", "f") is None
    assert parse_rate(None, "f") is None


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"default": "10/minn"}, "rateLimits.default", "is not a rate"),
        ({"default": "ten/min"}, "rateLimits.default", "COUNT/UNIT"),
        ({"default": 10}, "rateLimits.default", "expected a rate string"),
        ({"default": "0/s"}, "rateLimits.default", "at least 1"),
        ({"identities": {"ci": "5/day"}}, "rateLimits.identities.ci", "is not a rate"),
        ({"tools": {"github__create_issue": "x"}}, "rateLimits.tools.github__create_issue", "is not a rate"),
        ({"tools": ["a"]}, "rateLimits.tools", "expected an object"),
        ({"defualt": "1/s"}, "rateLimits.defualt", "unknown key"),
    ],
)
def test_bad_rates_are_refused_naming_the_field(raw: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_rate_limits({"rateLimits": raw})
    assert err.value.field == field
    assert words in str(err.value) and field in str(err.value)


def test_a_hub_with_bad_rate_limits_does_not_start() -> None:
    with pytest.raises(ConfigError, match=r"rateLimits\.default"):
        Hub.from_dict({"mcpServers": {}, "rateLimits": {"default": "fast"}})


# --- buckets --------------------------------------------------------------------------------------------


def test_identity_buckets_refill_evenly_and_say_when_to_retry() -> None:
    clock = Clock()
    limits = limiter({"default": "2/min", "identities": {"ci": "4/min"}}, clock)
    for _ in range(2):
        limits.check(BOB, "t")
    with pytest.raises(RateLimitedError) as err:
        limits.check(BOB, "t")
    assert err.value.scope == "identity" and err.value.limit == "2/min"
    assert err.value.retry_after == pytest.approx(30.0)  # one token per 30 s
    assert err.value.retry_after_header == "30"
    for _ in range(4):  # ci has its own, larger bucket
        limits.check(CI, "t")
    clock.now += 30.0
    limits.check(BOB, "t")  # refilled one
    with pytest.raises(RateLimitedError):
        limits.check(BOB, "t")


def test_tool_limits_are_per_identity_and_a_refusal_costs_nothing() -> None:
    clock = Clock()
    limits = limiter({"default": "3/min", "tools": {"gh__create_issue": "1/min"}}, clock)
    limits.check(CI, "gh__create_issue")
    with pytest.raises(RateLimitedError) as err:
        limits.check(CI, "gh__create_issue")
    assert err.value.scope == "tool" and "gh__create_issue" in str(err.value)
    limits.check(BOB, "gh__create_issue")  # bob's allowance is his own
    # the refused call took nothing from ci's identity bucket: two of three are left
    limits.check(CI, "other")
    limits.check(CI, "other")
    with pytest.raises(RateLimitedError) as err:
        limits.check(CI, "other")
    assert err.value.scope == "identity"


def test_the_process_owner_is_held_only_to_a_limit_named_for_local() -> None:
    clock = Clock()
    limits = limiter({"default": "1/min", "tools": {"t": "1/min"}}, clock)
    for _ in range(5):
        limits.check(LOCAL, "t")
        limits.check(None, "t")
    named = limiter({"default": "1/min", "identities": {"local": "2/min"}}, clock)
    named.check(LOCAL, "t")
    named.check(None, "t")
    with pytest.raises(RateLimitedError):
        named.check(LOCAL, "t")


def test_an_exempt_identity_is_never_limited() -> None:
    limits = limiter({"default": "1/min", "identities": {"ci": "unlimited"}}, Clock())
    for _ in range(10):
        limits.check(CI, "t")


# --- through the hub: refused calls never reach the upstream --------------------------------------------


async def test_refused_calls_never_reach_the_upstream(tmp_path: Path) -> None:
    config = {"mcpServers": {"c": counter_spec(tmp_path)}, "rateLimits": {"tools": {"c__bump": "2/h"}}}
    async with Hub.from_dict(config) as hub:
        assert hub.status()["c"].state == "ready"
        for _ in range(2):
            assert not (await hub.call_tool("c__bump", caller=CI)).is_error
        for _ in range(3):
            with pytest.raises(RateLimitedError) as err:
                await hub.call_tool("c__bump", caller=CI)
            assert err.value.retry_after > 0
        result = await hub.call_tool("c__count", caller=CI)
        assert result.structured_content == {"result": 2}  # the upstream saw two bump calls, not five


async def test_limits_follow_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "patchbay.json"
    path.write_text(
        json.dumps({"mcpServers": {"mb": bad()}, "rateLimits": {"default": "1/h"}, "audit": False})
    )
    async with Hub.from_file(path) as hub:
        await hub.call_tool("mb__echo", {"text": "a"}, caller=CI)
        with pytest.raises(RateLimitedError):
            await hub.call_tool("mb__echo", {"text": "a"}, caller=CI)
        path.write_text(json.dumps({"mcpServers": {"mb": bad()}, "rateLimits": {"default": "oops"}}))
        with pytest.raises(ConfigError, match=r"rateLimits\.default"):
            await hub.apply_config(load_config(path))  # a bad edit changes nothing
        with pytest.raises(RateLimitedError):
            await hub.call_tool("mb__echo", {"text": "a"}, caller=CI)
        path.write_text(json.dumps({"mcpServers": {"mb": bad()}, "audit": False}))
        await hub.apply_config(load_config(path))
        for _ in range(3):
            await hub.call_tool("mb__echo", {"text": "a"}, caller=CI)


# --- through patchbay serve: /mcp and REST --------------------------------------------------------------

TOKEN = "ratelimit-t0ken-for-tests"


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Served]:
    config = tmp_path / "patchbay.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {"c": counter_spec(tmp_path)},
                "rateLimits": {"default": "100/min", "tools": {"c__bump": "2/h"}},
            }
        )
    )
    served = await start_serve(config, env={"PATCHBAY_TOKEN": TOKEN}, token=TOKEN)
    yield served
    await stop_serve(served)
    stderr = (await served.proc.stderr.read()).decode()  # type: ignore[union-attr]
    assert "Traceback" not in stderr and TOKEN not in stderr


async def test_mcp_answers_a_json_rpc_error_with_retry_after_and_rest_a_429(limited: Served) -> None:
    async with httpx2.AsyncClient(headers=limited.headers(), timeout=30) as http:
        async with (
            streamable_http_client(limited.mcp, http_client=http) as (r, w),
            ClientSession(r, w) as session,
        ):
            await session.initialize()
            for _ in range(2):
                assert not (await session.call_tool("c__bump", {})).is_error
            with pytest.raises(MCPError) as err:  # the fast path (no sampling or elicitation)
                await session.call_tool("c__bump", {})
            assert err.value.code == RATE_LIMITED
            assert isinstance(err.value.data, dict) and err.value.data["retryAfter"] > 0
            assert err.value.data["limit"] == "2/h" and err.value.data["scope"] == "tool"
            assert "retry in" in err.value.message

        async def elicit(ctx: Any, params: Any) -> types.ElicitResult:  # makes the SDK serve the session
            return types.ElicitResult(action="decline")

        async with (
            streamable_http_client(limited.mcp, http_client=http) as (r, w),
            ClientSession(r, w, elicitation_callback=elicit) as session,
        ):
            await session.initialize()
            with pytest.raises(MCPError) as err:
                await session.call_tool("c__bump", {})
            assert err.value.code == RATE_LIMITED and err.value.data["retryAfter"] > 0

        r = await http.post(f"{limited.base}/api/tools/c__bump/call", json={})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        body = r.json()
        assert body["error"] == "rate_limited" and body["data"]["retryAfter"] > 0
        r = await http.post(f"{limited.base}/api/tools/c__count/call", json={})
        assert r.status_code == 200 and r.json()["structuredContent"] == {"result": 2}


async def test_a_limit_named_for_local_holds_modern_clients_of_a_hub_without_tokens(tmp_path: Path) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(
        json.dumps(
            {"mcpServers": {"c": counter_spec(tmp_path)}, "rateLimits": {"identities": {"local": "3/h"}}}
        )
    )
    served = await start_serve(config, env={"PATCHBAY_TOKEN": ""})
    try:
        probe = types.Implementation(name="modern-probe", version="9.9")
        async with Client(served.mcp, client_info=probe) as client:  # 2026-07-28: no session
            for _ in range(3):
                assert not (await client.call_tool("c__bump", {})).is_error
            with pytest.raises(MCPError) as err:
                await client.call_tool("c__bump", {})
            assert err.value.code == RATE_LIMITED and err.value.data["scope"] == "identity"
            assert err.value.data["limit"] == "3/h"
        async with served.http() as http:
            calls = (await http.get("/api/audit", params={"tool": "c__bump"})).json()
        assert [c["outcome"] for c in calls] == ["ok", "ok", "ok", "rate_limited"]
        assert {(c["identity"], c["surface"]) for c in calls} == {("local", "mcp")}
        assert calls[0]["client"] == {"name": "modern-probe", "version": "9.9"}
    finally:
        await stop_serve(served)
