"""Prometheus metrics of a real ``patchbay serve``: scraped from ``/metrics`` after real calls.

Per-server and per-tool call counts by outcome and latency histograms, ``/mcp`` sessions, agents and
restarts; tool labels only for tools in the catalog, and dropped when a tool or its server goes away.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import bad
from tests.test_agents import eventually, kill_tree, start_agent, token, tool_names
from tests.test_serve import Served, start_serve, stop_serve

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def metrics(http: httpx2.AsyncClient) -> Samples:
    r = await http.get("/metrics")
    assert r.status_code == 200, r.text
    return scrape(r.text)


def by_tool(m: Samples, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0)


def series_with(m: Samples, label: str, value: str) -> list[str]:
    return [n for n, labels in m if (label, value) in labels]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    config = tmp_path / "patchbay.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {"alpha": bad(), "beta": bad("--tools", "2")},
                "agents": {"desk": {"token": token("desk")}},
            }
        )
    )
    s = await start_serve(config, "--no-reload")
    try:
        yield s
    finally:
        await stop_serve(s)


async def call(http: httpx2.AsyncClient, tool: str, **body: object) -> httpx2.Response:
    return await http.post(f"/api/tools/{tool}/call", json=body)


async def test_calls_are_counted_per_server_and_per_tool(served: Served) -> None:
    async with served.http() as http:
        for _ in range(2):
            assert (await call(http, "alpha__echo", arguments={"text": "x"})).status_code == 200
        await call(http, "alpha__fail")
        r = await call(http, "alpha__sleep", arguments={"seconds": 5}, timeout=0.2)
        assert r.status_code == 504
        await call(http, "beta__t00", arguments={"text": "y"})
        for name in ("nope", "made_up_name_1", "made_up_name_2"):
            await call(http, name)
        m = await metrics(http)

    total = "patchbay_tool_calls_total"
    tool_total = "patchbay_tool_calls_by_tool_total"
    assert by_tool(m, total, server="alpha", outcome="ok") == 2
    assert by_tool(m, total, server="alpha", outcome="tool_error") == 1
    assert by_tool(m, total, server="alpha", outcome="timeout") == 1
    assert by_tool(m, total, server="", outcome="unknown_tool") == 3
    assert by_tool(m, tool_total, server="alpha", tool="alpha__echo", outcome="ok") == 2
    assert by_tool(m, tool_total, server="alpha", tool="alpha__fail", outcome="tool_error") == 1
    assert by_tool(m, tool_total, server="alpha", tool="alpha__sleep", outcome="timeout") == 1
    assert by_tool(m, tool_total, server="beta", tool="beta__t00", outcome="ok") == 1

    hist = "patchbay_tool_duration_seconds"
    assert by_tool(m, f"{hist}_count", server="alpha", tool="alpha__echo") == 2
    assert by_tool(m, f"{hist}_bucket", server="alpha", tool="alpha__echo", le="60.0") == 2
    assert by_tool(m, f"{hist}_bucket", server="alpha", tool="alpha__sleep", le="0.1") == 0
    assert by_tool(m, f"{hist}_bucket", server="alpha", tool="alpha__sleep", le="10.0") == 1
    # the 0.2 s timeout, as the call measured it: the loop's timer and perf_counter are different clocks,
    # and the timer may fire a fraction of a millisecond before perf_counter says 0.2 s have passed
    assert by_tool(m, f"{hist}_sum", server="alpha", tool="alpha__sleep") >= 0.19
    assert by_tool(m, "patchbay_tool_call_duration_seconds_count", server="alpha") == 4

    # names that are not in the catalog never become label values
    for name in ("nope", "made_up_name_1", "made_up_name_2"):
        assert series_with(m, "tool", name) == []
    assert {v for (_, labels) in m for k, v in labels if k == "tool"} == {
        "alpha__echo",
        "alpha__fail",
        "alpha__sleep",
        "beta__t00",
    }


async def test_sessions_agents_and_restarts(served: Served, tmp_path: Path) -> None:
    async with served.http() as http:
        m = await metrics(http)
        assert by_tool(m, "patchbay_mcp_sessions") == 0
        assert by_tool(m, "patchbay_agents", state="disconnected") == 1
        assert by_tool(m, "patchbay_agents", state="connected") == 0
        assert by_tool(m, "patchbay_agent_connected", agent="desk") == 0
        assert by_tool(m, "patchbay_server_restarts", server="alpha") == 0

        async with streamable_http_client(served.mcp) as (r, w), ClientSession(r, w) as session:
            await session.initialize()
            await session.call_tool("alpha__echo", {"text": "over /mcp"})
            m = await metrics(http)
            assert by_tool(m, "patchbay_mcp_sessions") == 1
            labels = {"server": "alpha", "tool": "alpha__echo", "outcome": "ok"}
            assert by_tool(m, "patchbay_tool_calls_by_tool_total", **labels) == 1

        agent_config = tmp_path / "agent.json"
        agent_config.write_text(json.dumps({"mcpServers": {"mb": bad()}}))
        ws = served.base.replace("http://", "ws://") + "/agents"
        agent = start_agent(None, agent_config, tmp_path / "agent.log", token("desk"), url=ws)
        try:
            await eventually(lambda: _has_tool(http, "desk__mb__echo"), what="the agent's tools", timeout=30)
            m = await metrics(http)
            assert by_tool(m, "patchbay_agent_connected", agent="desk") == 1
            assert by_tool(m, "patchbay_agents", state="connected") == 1
            r = await call(http, "desk__mb__echo", arguments={"text": "via agent"})
            assert r.status_code == 200, r.text
            m = await metrics(http)
            assert by_tool(m, "patchbay_tool_calls_total", server="desk", outcome="ok") == 1
            count = "patchbay_tool_duration_seconds_count"
            assert by_tool(m, count, server="desk", tool="desk__mb__echo") == 1
        finally:
            kill_tree(agent.proc)

        assert (await http.post("/api/servers/alpha/restart")).status_code == 200
        m = await metrics(http)
        assert by_tool(m, "patchbay_server_restarts", server="alpha") == 1
        # a restart is no reason to forget a tool's history
        assert by_tool(m, "patchbay_tool_duration_seconds_count", server="alpha", tool="alpha__echo") == 1


async def test_series_of_tools_that_leave_are_dropped(served: Served) -> None:
    async with served.http() as http:
        await call(http, "alpha__echo", arguments={"text": "x"})
        await call(http, "alpha__fail")
        await call(http, "beta__t00", arguments={"text": "y"})
        m = await metrics(http)
        assert series_with(m, "tool", "alpha__fail") and series_with(m, "tool", "beta__t00")

        # alpha keeps running without `fail`: its series go, the others stay
        spec = {**bad(), "disabledTools": ["fail"]}
        r = await http.put("/api/servers/alpha", json=spec)
        assert r.status_code == 200 and r.json()["state"] == "ready", r.text
        m = await metrics(http)
        assert series_with(m, "tool", "alpha__fail") == []
        assert by_tool(m, "patchbay_tool_duration_seconds_count", server="alpha", tool="alpha__echo") == 1

        # beta is removed: every series of it goes
        assert (await http.delete("/api/servers/beta")).status_code == 204
        m = await metrics(http)
        assert series_with(m, "server", "beta") == []
        assert series_with(m, "tool", "beta__t00") == []
        assert by_tool(m, "patchbay_tool_calls_total", server="alpha", outcome="ok") == 1


async def _has_tool(http: httpx2.AsyncClient, name: str) -> bool:
    return name in await tool_names(http)
