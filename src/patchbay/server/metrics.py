"""Prometheus metrics: tool calls (counted by the hub's call observer) and hub state (read at scrape).

Counted on the call path, per server and per tool: calls by outcome and a latency histogram. Read at scrape
time, so never stale: servers per state, readiness, restarts, calls in flight, tools, ``/mcp`` sessions and
dial-in agents.

Label cardinality stays bounded. A ``tool`` label is only given to a tool that was in the catalog when it
was called (an unknown name is counted under the server ``""`` and no tool), and at each scrape the series of
tools that left the catalog of a running server, or whose server is no longer configured, are dropped.

Each :func:`build_metrics` call has its own ``CollectorRegistry``, so several apps (or tests) can live in one
process without "duplicated timeseries" errors.
"""

from __future__ import annotations

import contextlib
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from patchbay.hub import Hub
from patchbay.supervisor import ServerState

# 0.1 ms (an in-process echo) … 60 s (the default call timeout).
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
NO_SERVER = ""  # label value when the tool was not found, so no server was involved
OUTCOMES = "ok, tool_error, timeout, unavailable, upstream_error, unknown_tool, cancelled, error"


class HubCollector(Collector):
    """Gauges computed from the hub (and the ``/mcp`` endpoint) at scrape time, so they are never stale."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sessions: Callable[[], int] | None = None  # set by the /metrics route from the app's endpoint

    def collect(self) -> Iterable[Metric]:
        statuses = self.hub.status()
        restarts = GaugeMetricFamily(
            "patchbay_server_restarts", "Restarts of each server since the hub started.", labels=["server"]
        )
        ready = GaugeMetricFamily(
            "patchbay_server_ready", "1 if the server is ready, else 0.", labels=["server"]
        )
        in_flight = GaugeMetricFamily(
            "patchbay_tool_calls_in_flight", "Calls waiting for an answer, per server.", labels=["server"]
        )
        for name, status in statuses.items():
            restarts.add_metric([name], status.restarts)
            ready.add_metric([name], 1 if status.state == ServerState.READY else 0)
            in_flight.add_metric([name], status.calls_in_flight)
        by_state = Tally(status.state for status in statuses.values())
        servers = GaugeMetricFamily("patchbay_servers", "Configured servers per state.", labels=["state"])
        for state in ServerState:
            servers.add_metric([state.value], by_state.get(state, 0))
        tools = GaugeMetricFamily("patchbay_tools", "Tools exposed by the hub.")
        tools.add_metric([], len(self.hub.catalog.tools))
        out: list[Metric] = [servers, restarts, ready, in_flight, tools]

        agents = self.hub.agents()
        agent_states = GaugeMetricFamily(
            "patchbay_agents", "Configured dial-in agents per state.", labels=["state"]
        )
        counts = Tally(a.state for a in agents.values())
        for agent_state in ("connected", "disconnected"):
            agent_states.add_metric([agent_state], counts.get(agent_state, 0))
        connected = GaugeMetricFamily(
            "patchbay_agent_connected", "1 if the agent is connected, else 0.", labels=["agent"]
        )
        agent_in_flight = GaugeMetricFamily(
            "patchbay_agent_calls_in_flight", "Calls waiting for an answer, per agent.", labels=["agent"]
        )
        for name, agent in agents.items():
            connected.add_metric([name], 1 if agent.state == "connected" else 0)
            agent_in_flight.add_metric([name], agent.calls_in_flight)
        out += [agent_states, connected, agent_in_flight]

        if self.sessions is not None:
            sessions = GaugeMetricFamily(
                "patchbay_mcp_sessions", "Open handshake-era /mcp sessions (stateless requests have none)."
            )
            sessions.add_metric([], self.sessions())
            out.append(sessions)
        return out


class CallMetrics:
    """The call observer: per server and per tool, calls by outcome and latency histograms.

    Why the cache: ``labels()`` costs microseconds (validation, a lock, a tuple); the observer runs after
    every call, so each (server, tool, outcome) resolves its children once and then only increments.
    """

    def __init__(self, hub: Hub, registry: CollectorRegistry) -> None:
        self.hub = hub
        self.calls = Counter(
            "patchbay_tool_calls",
            f"Tool calls by server and outcome ({OUTCOMES}).",
            ["server", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "patchbay_tool_call_duration_seconds",
            "Time from receiving a tool call to its answer, per server.",
            ["server"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.tool_calls = Counter(
            "patchbay_tool_calls_by_tool",
            f"Tool calls by server, tool (exposed name) and outcome ({OUTCOMES}).",
            ["server", "tool", "outcome"],
            registry=registry,
        )
        self.tool_duration = Histogram(
            "patchbay_tool_duration_seconds",
            "Time from receiving a tool call to its answer, per tool (exposed name).",
            ["server", "tool"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any, Any]] = {}

    def observe(self, server: str | None, tool: str, outcome: str, seconds: float) -> None:
        if server is None:  # an unknown name: no server, and no tool label (callers choose the names)
            server, tool = NO_SERVER, ""
        key = (server, tool, outcome)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = self._resolve(server, tool, outcome)
        calls, duration, tool_calls, tool_duration = children
        calls.inc()
        duration.observe(seconds)
        if tool_calls is not None:
            tool_calls.inc()
            tool_duration.observe(seconds)

    def _resolve(self, server: str, tool: str, outcome: str) -> tuple[Any, Any, Any, Any]:
        per_server = (self.calls.labels(server, outcome), self.duration.labels(server))
        if not tool:
            return (*per_server, None, None)
        return (
            *per_server,
            self.tool_calls.labels(server, tool, outcome),
            self.tool_duration.labels(server, tool),
        )

    def prune(self) -> None:
        """Drop the series of tools gone from the catalog of a running server, or of unconfigured sources.

        A server that is restarting has no tools in the catalog for a while: its series are kept.
        """
        if not self._children:
            return
        catalog = self.hub.catalog
        configured = {*self.hub.servers, *self.hub.agents()}
        stale_tools: set[tuple[str, str]] = set()
        stale_servers: set[str] = set()
        for server, tool, _ in self._children:
            if server == NO_SERVER:
                continue
            if server not in configured:
                stale_servers.add(server)
            elif tool and catalog.has_source(server):
                entry = catalog.tools.get(tool)
                if entry is None or entry.source != server:
                    stale_tools.add((server, tool))
        if not stale_tools and not stale_servers:
            return
        for key in [k for k in self._children if (k[0], k[1]) in stale_tools or k[0] in stale_servers]:
            server, tool, outcome = key
            del self._children[key]
            if tool:
                _remove(self.tool_calls, server, tool, outcome)
                _remove(self.tool_duration, server, tool)
            if server in stale_servers:
                _remove(self.calls, server, outcome)
                _remove(self.duration, server)


def _remove(metric: Counter | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # already gone (several outcomes share the histogram)
        metric.remove(*labels)


def build_metrics(hub: Hub, registry: CollectorRegistry | None = None) -> APIRouter:
    """``GET /metrics`` (Prometheus text format, or OpenMetrics if asked) and the hub's call observer."""
    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    calls = CallMetrics(hub, registry)
    collector = HubCollector(hub)
    registry.register(collector)
    hub.add_call_observer(calls.observe)

    router = APIRouter(tags=["operations"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        description="Tool call counts and durations (per server and per tool), server states, restarts, "
        "tools, /mcp sessions and agents.",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus exposition format."}},
    )
    async def metrics(request: Request) -> Response:
        endpoint = getattr(request.app.state, "mcp", None)  # the McpEndpoint of `patchbay serve`, if any
        if endpoint is not None and collector.sessions is None:
            collector.sessions = lambda: int(endpoint.sessions)
        calls.prune()
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    return router
