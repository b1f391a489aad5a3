"""OpenTelemetry traces, end to end: a real ``patchbay serve`` exporting over OTLP/HTTP to a real receiver.

The receiver is written here: an HTTP server on 127.0.0.1 decoding the protobuf ``ExportTraceServiceRequest``
bodies (``opentelemetry-proto``). The upstreams are real processes: a hand-written stdio server that answers
with the ``_meta`` it received (tests/servers/trace_server.py) and the SDK's ``MCPServer`` over streamable
HTTP, whose ``header`` tool reads back the ``traceparent`` header it got. Spans are exported by the
``BatchSpanProcessor`` with a schedule delay far longer than any test, so the only export is the flush when
patchbay shuts down: once the process has exited, every span is in the receiver (nothing is waited for).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import mcp.types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from patchbay import Hub
from patchbay.errors import ConfigError
from patchbay.telemetry import settings_from
from tests.test_http_upstream import ServerProcess, free_port
from tests.test_serve import start_serve, stop_serve

TRACE_SERVER = Path(__file__).parent / "servers" / "trace_server.py"
OTEL_VARS = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
)
KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
Span = dict[str, Any]


# --- the receiver ------------------------------------------------------------------------------------


class OtlpReceiver:
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` with a protobuf body, spans kept as plain dicts."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self.headers: list[dict[str, str]] = []  # of each export request
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                ok = self.path == "/v1/traces" and "protobuf" in self.headers.get("content-type", "")
                if ok:
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    receiver.add(request, {k.lower(): v for k, v in self.headers.items()})
                self.send_response(200 if ok else 404)
                answer = ExportTraceServiceResponse().SerializeToString() if ok else b""
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, request: ExportTraceServiceRequest, headers: dict[str, str]) -> None:
        spans = []
        for rs in request.resource_spans:
            resource = _attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(
                        {
                            "name": s.name,
                            "kind": KINDS.get(s.kind, s.kind),
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent": s.parent_span_id.hex() or None,
                            "attributes": _attributes(s.attributes),
                            "status": s.status.code,  # 0 unset, 1 ok, 2 error
                            "links": [(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                            "resource": resource,
                            "scope": ss.scope.name,
                        }
                    )
        with self.changed:
            self.requests += 1
            self.headers.append(headers)
            self.spans.extend(spans)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[list[Span]], bool], timeout: float = 60.0) -> list[Span]:
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self.spans), timeout), self.spans
            return list(self.spans)


def _attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in OTEL_VARS:
        monkeypatch.delenv(var, raising=False)


# --- helpers -----------------------------------------------------------------------------------------


def traceparent() -> tuple[str, str, str]:
    """A fresh W3C traceparent and its trace and span ids."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def parse(tp: str) -> tuple[str, str]:
    _, trace_id, span_id, _ = tp.split("-")
    return trace_id, span_id


def text(result: types.CallToolResult | types.ReadResourceResult | types.GetPromptResult) -> str:
    if isinstance(result, types.CallToolResult):
        block = result.content[0]
    elif isinstance(result, types.ReadResourceResult):
        block = result.contents[0]
    else:
        block = result.messages[0].content
    return str(block.text)  # type: ignore[union-attr]


def upstream_meta(result: Any) -> dict[str, Any]:
    """What the trace server says its request's ``_meta`` was."""
    meta: dict[str, Any] = json.loads(text(result))
    return meta


def one(spans: list[Span], **match: Any) -> Span:
    found = [s for s in spans if all(s.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, spans)
    return found[0]


def serve_config(tmp_path: Path, servers: dict[str, Any], **top: Any) -> Path:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": servers, **top}, indent=2))
    return config


TRACE = {"command": sys.executable, "args": [str(TRACE_SERVER)]}


def otel_env(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "600000",  # no timed export: only the flush at shutdown sends spans
        "OTEL_SERVICE_NAME": "patchbay-under-test",
    }


# --- end to end ----------------------------------------------------------------------------------------


async def test_a_call_is_traced_from_the_downstream_request_to_the_upstream_and_back(
    tmp_path: Path, receiver: OtlpReceiver, no_otel_env: None
) -> None:
    remote = await ServerProcess(free_port(), "--name", "remote").astart()
    try:
        config = serve_config(tmp_path, {"trace": TRACE, "remote": {"url": remote.url}})
        collector_auth = {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer collector-s3cret"}
        served = await start_serve(config, env={**otel_env(receiver), **collector_auth})
        try:
            header_tp, header_trace, header_span = traceparent()
            _, meta_trace, meta_span = traceparent()
            http = create_mcp_http_client(headers={"traceparent": header_tp, "tracestate": "pb=1"})
            async with (
                http,
                streamable_http_client(served.mcp, http_client=http) as (r, w),
                ClientSession(r, w) as session,
            ):
                await session.initialize()
                listed = await session.list_tools()  # answered by the fast path from encoded pages
                # The fast path (a plain call): the HTTP traceparent is the parent.
                fast = await session.call_tool("trace__meta", {})
                # The SDK path (a progress token), from a client whose own span goes in _meta: that one
                # is the parent, and the HTTP context is linked.
                remote_parent = SpanContext(int(meta_trace, 16), int(meta_span, 16), True, TraceFlags(1))
                with trace.use_span(NonRecordingSpan(remote_parent)):

                    async def progress(p: float, total: float | None, message: str | None) -> None:
                        pass

                    sdk = await session.call_tool("trace__meta", {}, progress_callback=progress)
                failed = await session.call_tool("trace__fail", {})
                with pytest.raises(MCPError, match="unknown tool 'trace__nope'"):
                    await session.call_tool("trace__nope", {})
                resource = await session.read_resource("trace://meta")
                prompt = await session.get_prompt("trace__meta")
                header = await session.call_tool("remote__header", {"name": "traceparent"})
                child_env = await session.call_tool("trace__env", {"name": "OTEL_EXPORTER_OTLP_HEADERS"})
            rest_tp, rest_trace, rest_span = traceparent()
            async with httpx2.AsyncClient(base_url=served.base, timeout=30) as client:
                reply = await client.post(
                    "/api/tools/trace__meta/call", json={"arguments": {}}, headers={"traceparent": rest_tp}
                )
                assert reply.status_code == 200
                rest = types.CallToolResult.model_validate(reply.json())
        finally:
            assert await stop_serve(served) in (0, -signal.SIGTERM)  # uvicorn re-raises it
    finally:
        remote.kill()

    spans = receiver.spans  # the process has exited: its last act was to flush every span
    # The collector's credentials reach the collector, and no child process.
    assert {h.get("authorization") for h in receiver.headers} == {"Bearer collector-s3cret"}
    assert text(child_env) == ""
    assert {s["resource"]["service.name"] for s in spans} == {"patchbay-under-test"}
    assert {s["scope"] for s in spans} == {"patchbay"}  # the SDK's own middleware made none

    # Fast path: SERVER span under the client's HTTP traceparent; CLIENT span under it; the upstream got
    # the CLIENT span's context in _meta.
    up_trace, up_span = parse(upstream_meta(fast)["traceparent"])
    assert up_trace == header_trace
    client_span = one(spans, span_id=up_span)
    server_span = one(spans, span_id=client_span["parent"])
    assert server_span["parent"] == header_span and server_span["trace_id"] == header_trace
    assert server_span["kind"] == "server" and client_span["kind"] == "client"
    assert server_span["name"] == "tools/call trace__meta" and client_span["name"] == "tools/call meta"
    assert upstream_meta(fast)["tracestate"] == "pb=1"
    for key, value in {
        "mcp.method.name": "tools/call",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "trace__meta",
        "patchbay.server": "trace",
        "patchbay.tool": "trace__meta",
        "patchbay.tool.original": "meta",
        "patchbay.outcome": "ok",
        "patchbay.protocol": "streamable-http",
        "network.protocol.name": "http",
    }.items():
        assert server_span["attributes"][key] == value, key
    assert "mcp.session.id" in server_span["attributes"] and "jsonrpc.request.id" in server_span["attributes"]
    for key, value in {
        "mcp.method.name": "tools/call",
        "gen_ai.tool.name": "meta",
        "patchbay.server": "trace",
        "patchbay.tool": "trace__meta",
        "patchbay.tool.original": "meta",
        "patchbay.outcome": "ok",
        "patchbay.protocol": "stdio",
        "network.transport": "pipe",
        "mcp.protocol.version": "2025-11-25",
    }.items():
        assert client_span["attributes"][key] == value, key

    # tools/list (the fast path's pre-encoded answer) has its SERVER span too, under the HTTP traceparent.
    assert any(t.name == "trace__meta" for t in listed.tools)
    lists = [s for s in spans if s["name"] == "tools/list" and s["kind"] == "server"]
    assert lists and all(s["trace_id"] == header_trace and s["parent"] == header_span for s in lists)
    assert lists[0]["attributes"]["mcp.method.name"] == "tools/list"
    assert lists[0]["attributes"]["patchbay.outcome"] == "ok"
    assert lists[0]["attributes"]["mcp.protocol.version"] == "2025-11-25"

    # SDK path: the _meta context is the parent, the HTTP one a link; one SERVER span, patchbay's.
    up_trace, up_span = parse(upstream_meta(sdk)["traceparent"])
    assert up_trace == meta_trace
    sdk_client = one(spans, span_id=up_span)
    sdk_server = one(spans, span_id=sdk_client["parent"])
    assert sdk_server["parent"] == meta_span and sdk_server["links"] == [(header_trace, header_span)]
    assert sdk_server["attributes"]["patchbay.outcome"] == "ok"
    assert sdk_server["attributes"]["patchbay.tool.original"] == "meta"
    assert len([s for s in spans if s["trace_id"] == meta_trace]) == 2

    # Outcomes: a tool error on both sides; an unknown tool never reaches an upstream.
    assert failed.is_error
    fails = [s for s in spans if s["attributes"].get("patchbay.tool") == "trace__fail"]
    assert {s["kind"] for s in fails} == {"server", "client"}
    for s in fails:
        assert s["attributes"]["patchbay.outcome"] == "tool_error"
        assert s["attributes"]["error.type"] == "tool_error" and s["status"] == 2
    nope = [s for s in spans if s["attributes"].get("gen_ai.tool.name") == "trace__nope"]
    assert [s["kind"] for s in nope] == ["server"]
    assert nope[0]["attributes"]["patchbay.outcome"] == "unknown_tool" and nope[0]["status"] == 2

    # resources/read and prompts/get: a span on each side, the context upstream in _meta.
    for result, method, name in (
        (resource, "resources/read", "resources/read"),
        (prompt, "prompts/get", "prompts/get meta"),
    ):
        up_trace, up_span = parse(upstream_meta(result)["traceparent"])
        assert up_trace == header_trace
        c = one(spans, span_id=up_span)
        s = one(spans, span_id=c["parent"])
        assert c["name"] == name and c["attributes"]["mcp.method.name"] == method
        assert s["attributes"]["mcp.method.name"] == method and s["attributes"]["patchbay.outcome"] == "ok"
        assert s["parent"] == header_span
    assert (
        one(spans, name="resources/read", kind="client")["attributes"]["mcp.resource.uri"] == "trace://meta"
    )

    # A remote streamable-HTTP server gets the CLIENT span's context as HTTP headers too.
    got_trace, got_span = parse(text(header))
    assert got_trace == header_trace
    remote_client = one(spans, span_id=got_span)
    assert remote_client["kind"] == "client" and remote_client["name"] == "tools/call header"
    assert remote_client["attributes"]["patchbay.protocol"] == "streamable-http"
    assert remote_client["attributes"]["server.address"] == "127.0.0.1"

    # REST: the route's SERVER span under the request's traceparent.
    up_trace, up_span = parse(upstream_meta(rest)["traceparent"])
    assert up_trace == rest_trace
    rest_server = one(spans, span_id=one(spans, span_id=up_span)["parent"])
    assert rest_server["parent"] == rest_span
    assert rest_server["attributes"]["patchbay.protocol"] == "rest"
    assert rest_server["attributes"]["http.response.status_code"] == 200
    assert rest_server["attributes"]["patchbay.outcome"] == "ok"


async def test_off_means_no_spans_and_nothing_upstream(
    tmp_path: Path, receiver: OtlpReceiver, no_otel_env: None
) -> None:
    """The variables point at the receiver, but the config turns tracing off: nothing is exported, and
    an upstream gets no trace context, not even the one the client sent."""
    config = serve_config(tmp_path, {"trace": TRACE}, telemetry={"enabled": False})
    served = await start_serve(config, env=otel_env(receiver))
    try:
        tp, _, _ = traceparent()
        async with httpx2.AsyncClient(base_url=served.base, timeout=30) as client:
            reply = await client.post("/api/tools/trace__meta/call", json={}, headers={"traceparent": tp})
        http = create_mcp_http_client(headers={"traceparent": tp})
        async with (
            http,
            streamable_http_client(served.mcp, http_client=http) as (r, w),
            ClientSession(r, w) as session,
        ):
            await session.initialize()
            fast = await session.call_tool("trace__meta", {})
    finally:
        assert await stop_serve(served) in (0, -signal.SIGTERM)  # uvicorn re-raises it
    assert upstream_meta(types.CallToolResult.model_validate(reply.json())) == {}
    assert upstream_meta(fast) == {}
    assert receiver.requests == 0 and receiver.spans == []


async def test_off_by_default_in_process(no_otel_env: None) -> None:
    async with Hub.from_dict({"mcpServers": {"trace": TRACE}}) as hub:
        assert hub.tracing is None
        result = await hub.call_tool("trace__meta", {})
        assert upstream_meta(result) == {}
        assert not [t for t in threading.enumerate() if t.name.startswith("OtelBatch")]


async def test_the_python_api_traces_upstream_calls_and_flushes_on_close(
    receiver: OtlpReceiver, no_otel_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    monkeypatch.setenv("PB_TEST_COLLECTOR", receiver.url)
    config = {
        "mcpServers": {"trace": TRACE},
        "telemetry": {"otlpEndpoint": "${PB_TEST_COLLECTOR}", "serviceName": "embedded"},
    }
    async with Hub.from_dict(config) as hub:
        assert hub.tracing is not None
        result = await hub.call_tool("trace__meta", {})
    up_trace, up_span = parse(upstream_meta(result)["traceparent"])
    span = one(receiver.spans, span_id=up_span)  # closing the hub flushed it
    assert span["trace_id"] == up_trace and span["parent"] is None and span["kind"] == "client"
    assert span["resource"]["service.name"] == "embedded"
    assert not [t for t in threading.enumerate() if t.name.startswith("OtelBatch") and t.is_alive()]


# --- bad settings ------------------------------------------------------------------------------------


async def test_bad_settings_stop_serve_at_start_with_a_clear_error(tmp_path: Path, no_otel_env: None) -> None:
    config = serve_config(tmp_path, {"trace": TRACE}, telemetry={"otlpEndpoint": "ftp://collector:4318"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchbay", "serve", "--config", str(config), "--port", str(free_port()),
        env={k: v for k, v in os.environ.items() if k not in OTEL_VARS},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    said = "telemetry.otlpEndpoint: 'ftp://collector:4318' is not an http:// or https:// URL"
    assert said in stderr.decode()


@pytest.mark.parametrize(
    ("document", "env", "message"),
    [
        ({"telemetry": "on"}, {}, "telemetry must be an object"),
        ({"telemetry": {"endpoint": "http://x"}}, {}, "telemetry.endpoint: unknown key"),
        ({"telemetry": {"enabled": "yes"}}, {}, "telemetry.enabled must be true or false"),
        ({"telemetry": {"otlpEndpoint": "${PB_UNSET_VAR}"}}, {}, "'PB_UNSET_VAR' is not set"),
        ({"telemetry": {"otlpEndpoint": "http://x", "headers": {"a": 1}}}, {}, "telemetry.headers must map"),
        ({}, {"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin': patchbay exports"),
        ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT: 'localhost:"),
        (
            {},
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='grpc': patchbay exports traces over OTLP/HTTP",
        ),
    ],
)
def test_bad_settings_are_named(document: dict[str, Any], env: dict[str, str], message: str) -> None:
    from patchbay.config import parse_config

    config = parse_config(json.dumps({"mcpServers": {}, **document}))
    with pytest.raises(ConfigError) as err:
        settings_from(config, env)
    assert message in str(err.value)


def test_which_settings_turn_tracing_on() -> None:
    from patchbay.config import parse_config

    plain = parse_config("{}")
    assert settings_from(plain, {}) is None
    off = {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}
    assert settings_from(plain, off) is None
    assert settings_from(plain, {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) is None
    on = settings_from(plain, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert on is not None and on.endpoint is None and on.why == "OTEL_EXPORTER_OTLP_ENDPOINT"
    on = settings_from(plain, {"OTEL_TRACES_EXPORTER": "otlp"})
    assert on is not None and on.why == "OTEL_TRACES_EXPORTER"
    keyed = parse_config(json.dumps({"telemetry": {"otlpEndpoint": "https://c:4318/"}}))
    on = settings_from(keyed, {"OTEL_TRACES_EXPORTER": "none"})
    assert on is not None and on.endpoint == "https://c:4318/v1/traces"


def test_a_missing_sdk_is_a_clear_error_at_start(monkeypatch: pytest.MonkeyPatch, no_otel_env: None) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if the extra were not installed
    with pytest.raises(ConfigError) as err:
        Hub.from_dict({"mcpServers": {}, "telemetry": {"otlpEndpoint": "http://127.0.0.1:4318"}})
    assert "pip install 'mcp-patchbay[otel]'" in str(err.value)
    assert "telemetry.otlpEndpoint is set" in str(err.value)


async def test_a_trace_crosses_a_dial_in_agent(
    tmp_path: Path, receiver: OtlpReceiver, no_otel_env: None
) -> None:
    """REST → hub → agent (over its WebSocket) → stdio server: one trace, each hop the child of the last."""
    from tests.test_agents import HubProc, call, start_agent, token, wait_connected

    hub_config = serve_config(tmp_path, {}, agents={"laptop": {"token": token("laptop")}})
    agent_config = tmp_path / "agent.json"
    agent_config.write_text(json.dumps({"mcpServers": {"trace": TRACE}}))
    env = otel_env(receiver)
    hub = HubProc(hub_config, tmp_path / "hub.log", env={**env, "OTEL_SERVICE_NAME": "hub"}).start()
    agent = None
    try:
        await hub.ready()
        agent_env = {**env, "OTEL_SERVICE_NAME": "agent"}
        agent = start_agent(hub, agent_config, tmp_path / "agent.log", token("laptop"), env=agent_env)
        tp, trace_id, span_id = traceparent()
        async with hub.http() as http:
            await wait_connected(http, "laptop", "laptop__trace__meta")
            http.headers["traceparent"] = tp
            reply = await call(http, "laptop__trace__meta")
            assert reply.status_code == 200, reply.text
    finally:
        if agent is not None:  # Ctrl-C: the agent stops its hub, which flushes its spans
            agent.proc.send_signal(signal.SIGINT)
            await asyncio.to_thread(agent.proc.wait, 30)
        hub.stop()
    up_trace, up_span = parse(upstream_meta(types.CallToolResult.model_validate(reply.json()))["traceparent"])
    assert up_trace == trace_id
    spans = [s for s in receiver.spans if s["trace_id"] == trace_id and s["name"].startswith("tools/call")]
    chain = [one(spans, span_id=up_span)]
    while chain[-1]["parent"] != span_id:
        chain.append(one(spans, span_id=chain[-1]["parent"]))
    described = [
        (s["resource"]["service.name"], s["kind"], s["attributes"]["patchbay.protocol"]) for s in chain
    ]
    assert described == [
        ("agent", "client", "stdio"),
        ("agent", "server", "agent"),
        ("hub", "client", "agent"),
        ("hub", "server", "rest"),
    ]
    assert chain[2]["attributes"]["patchbay.server"] == "laptop"
    assert chain[2]["attributes"]["gen_ai.tool.name"] == "trace__meta"
    assert chain[0]["attributes"]["patchbay.tool"] == "trace__meta"
    assert all(s["attributes"]["patchbay.outcome"] == "ok" for s in chain)


async def test_the_sdk_middleware_is_replaced_only_when_tracing_is_on(
    receiver: OtlpReceiver, no_otel_env: None
) -> None:
    """On, the /mcp server's SDK OpenTelemetryMiddleware (spans from the global provider) gives way to
    patchbay's, so an embedding application with a global provider still gets one SERVER span per request;
    off, the SDK's is left alone."""
    from mcp.server._otel import OpenTelemetryMiddleware

    from patchbay.server.mcp import McpEndpoint

    off = McpEndpoint(Hub.from_dict({"mcpServers": {}}))
    assert any(isinstance(m, OpenTelemetryMiddleware) for m in off.server.middleware)
    hub = Hub.from_dict({"mcpServers": {}, "telemetry": {"otlpEndpoint": receiver.url}})
    try:
        assert hub.tracing is not None
        on = McpEndpoint(hub)
        assert not any(isinstance(m, OpenTelemetryMiddleware) for m in on.server.middleware)
        assert on.server.middleware[0] == hub.tracing._sdk_span  # first, where the SDK's was
        assert len(on.server.middleware) == len(off.server.middleware)
    finally:
        await hub.close()


def test_config_check_reports_bad_tracing_settings(tmp_path: Path, no_otel_env: None) -> None:
    from patchbay.cli.check import check_config

    config = serve_config(tmp_path, {}, telemetry={"otlpEndpoint": "collector:4318"})
    report = check_config(config)
    assert report["valid"]  # the file is usable; starting with it would fail, which is a warning here
    (warning,) = report["warnings"]
    assert (
        warning["field"] == "telemetry.otlpEndpoint"
        and "is not an http:// or https:// URL" in warning["message"]
    )
