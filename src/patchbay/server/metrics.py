"""Prometheus metrics: tool calls (counted by the hub's call observer) and server states (read at scrape).

Each :func:`build_metrics` call has its own ``CollectorRegistry``, so several apps (or tests) can live in one
process without "duplicated timeseries" errors.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

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


class HubCollector(Collector):
    """Gauges computed from ``hub.status()`` at scrape time, so they are never stale."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

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
        tools.add_metric([], len(self.hub.tools()))
        return [servers, restarts, ready, in_flight, tools]


def build_metrics(hub: Hub, registry: CollectorRegistry | None = None) -> APIRouter:
    """``GET /metrics`` (Prometheus text format, or OpenMetrics if asked) and the hub's call observer."""
    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    calls = Counter(
        "patchbay_tool_calls",
        "Tool calls by server and outcome (ok, tool_error, timeout, unavailable, upstream_error, "
        "unknown_tool, cancelled, error).",
        ["server", "outcome"],
        registry=registry,
    )
    duration = Histogram(
        "patchbay_tool_call_duration_seconds",
        "Time from receiving a tool call to its answer, per server.",
        ["server"],
        buckets=DURATION_BUCKETS,
        registry=registry,
    )
    registry.register(HubCollector(hub))

    def observe(server: str | None, tool: str, outcome: str, seconds: float) -> None:
        label = server if server is not None else NO_SERVER
        calls.labels(label, outcome).inc()
        duration.labels(label).observe(seconds)

    hub.add_call_observer(observe)

    router = APIRouter(tags=["operations"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        description="Tool call counts and durations, server states, restarts and tool count.",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus exposition format."}},
    )
    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    return router
