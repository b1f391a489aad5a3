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

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from patchbay.hub import Hub
from patchbay.identity import identity_of
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


class CallMetrics(Collector):
    """The call observer and its collector: per server and per tool, calls by outcome and latency histograms.

    Why not ``prometheus_client``'s ``Counter`` and ``Histogram``: their ``labels()``, ``inc()`` and
    ``observe()`` take a lock and a few Python calls each, ~8 µs per call for the four series a call feeds
    on this machine. Here a call costs a dict lookup, a ``bisect`` and a few increments of plain lists (the
    hub calls observers on its event loop, where ``/metrics`` is served too, so nothing races); the counts
    become Prometheus families at scrape time.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._bounds = DURATION_BUCKETS
        self._le = [repr(float(b)) for b in DURATION_BUCKETS] + ["+Inf"]  # "0.0001" … "60.0", "+Inf"
        self._calls: dict[tuple[str, str], list[int]] = {}  # (server, outcome) -> [count]
        self._durations: dict[str, list[float]] = {}  # server -> [per bucket ..., +Inf, sum]
        self._tool_calls: dict[tuple[str, str, str], list[int]] = {}  # (server, tool, outcome) -> [count]
        self._tool_durations: dict[tuple[str, str], list[float]] = {}  # (server, tool) -> histogram
        self._cells: dict[tuple[str, str, str], tuple[list[int], list[float], Any, Any]] = {}

    def observe(self, server: str | None, tool: str, outcome: str, seconds: float) -> None:
        if server is None:  # an unknown name: no server, and no tool label (callers choose the names)
            server, tool = NO_SERVER, ""
        cell = self._cells.get((server, tool, outcome))
        if cell is None:
            cell = self._cell(server, tool, outcome)
        calls, hist, tool_calls, tool_hist = cell
        i = bisect_left(self._bounds, seconds)  # the first bucket with seconds <= le (len(bounds): +Inf)
        calls[0] += 1
        hist[i] += 1
        hist[-1] += seconds
        if tool_calls is not None:
            tool_calls[0] += 1
            tool_hist[i] += 1
            tool_hist[-1] += seconds

    def _cell(self, server: str, tool: str, outcome: str) -> tuple[list[int], list[float], Any, Any]:
        width = len(self._bounds) + 2
        calls = self._calls.setdefault((server, outcome), [0])
        hist = self._durations.setdefault(server, [0.0] * width)
        tool_calls = tool_hist = None
        if tool:
            tool_calls = self._tool_calls.setdefault((server, tool, outcome), [0])
            tool_hist = self._tool_durations.setdefault((server, tool), [0.0] * width)
        cell = self._cells[(server, tool, outcome)] = (calls, hist, tool_calls, tool_hist)
        return cell

    def collect(self) -> Iterable[Metric]:
        calls = CounterMetricFamily(
            "patchbay_tool_calls",
            f"Tool calls by server and outcome ({OUTCOMES}).",
            labels=["server", "outcome"],
        )
        for (server, outcome), (n,) in self._calls.items():
            calls.add_metric([server, outcome], n)
        duration = HistogramMetricFamily(
            "patchbay_tool_call_duration_seconds",
            "Time from receiving a tool call to its answer, per server.",
            labels=["server"],
        )
        for server, hist in self._durations.items():
            duration.add_metric([server], self._buckets(hist), hist[-1])
        tool_calls = CounterMetricFamily(
            "patchbay_tool_calls_by_tool",
            f"Tool calls by server, tool (exposed name) and outcome ({OUTCOMES}).",
            labels=["server", "tool", "outcome"],
        )
        for (server, tool, outcome), (n,) in self._tool_calls.items():
            tool_calls.add_metric([server, tool, outcome], n)
        tool_duration = HistogramMetricFamily(
            "patchbay_tool_duration_seconds",
            "Time from receiving a tool call to its answer, per tool (exposed name).",
            labels=["server", "tool"],
        )
        for (server, tool), hist in self._tool_durations.items():
            tool_duration.add_metric([server, tool], self._buckets(hist), hist[-1])
        return [calls, duration, tool_calls, tool_duration]

    def _buckets(self, hist: list[float]) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, ``+Inf`` last, as the exposition format wants them."""
        out, total = [], 0.0
        for le, n in zip(self._le, hist, strict=False):  # hist ends with the sum: zip stops before it
            total += n
            out.append((le, total))
        return out

    def prune(self) -> None:
        """Drop the series of tools gone from the catalog of a running server, or of unconfigured sources.

        A server that is restarting has no tools in the catalog for a while: its series are kept.
        """
        if not self._cells:
            return
        catalog = self.hub.catalog
        configured = {*self.hub.servers, *self.hub.agents()}
        gone = {s for s in self._durations if s != NO_SERVER and s not in configured}
        left = {
            (server, tool)
            for server, tool in self._tool_durations
            if server not in gone
            and catalog.has_source(server)
            and getattr(catalog.tools.get(tool), "source", None) != server
        }
        if not gone and not left:
            return
        for key in [k for k in self._cells if k[0] in gone or (k[0], k[1]) in left]:
            del self._cells[key]
        for key3 in [k for k in self._tool_calls if k[0] in gone or (k[0], k[1]) in left]:
            del self._tool_calls[key3]
        for key2 in [k for k in self._tool_durations if k[0] in gone or k in left]:
            del self._tool_durations[key2]
        for pair in [k for k in self._calls if k[0] in gone]:
            del self._calls[pair]
        for server in gone:
            del self._durations[server]


def build_metrics(hub: Hub, registry: CollectorRegistry | None = None) -> APIRouter:
    """``GET /metrics`` (Prometheus text format, or OpenMetrics if asked) and the hub's call observer."""
    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    calls = CallMetrics(hub)
    registry.register(calls)
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
        bound = identity_of(request.scope).profile
        if bound is not None:  # a profile-bound token: only its profile's servers, agents and tools
            return Response(encoder(_ProfileMetrics(registry, hub, bound)), media_type=content_type)  # type: ignore[arg-type]
        return Response(encoder(registry), media_type=content_type)

    return router


class _ProfileMetrics:
    """The registry as a profile-bound token may read it: series labelled with a server, agent or tool
    outside the profile are left out, and so are the hub-wide totals (servers, tools, agents, sessions)."""

    HUB_WIDE = frozenset({"patchbay_servers", "patchbay_tools", "patchbay_agents", "patchbay_mcp_sessions"})

    def __init__(self, registry: CollectorRegistry, hub: Hub, profile: str) -> None:
        self.registry = registry
        view = hub.profile(profile)
        self.sources = {s.name for s in hub._sources if view.admits_source(s.name)}
        self.tools = view.names(hub.catalog)

    def _admits(self, labels: dict[str, str]) -> bool:
        if "tool" in labels:
            return labels["tool"] in self.tools
        for key in ("server", "agent"):
            if key in labels:
                return labels[key] in self.sources
        return True

    def collect(self) -> Iterable[Metric]:
        for family in self.registry.collect():
            if family.name in self.HUB_WIDE:
                continue
            family.samples = [s for s in family.samples if self._admits(s.labels)]
            yield family
