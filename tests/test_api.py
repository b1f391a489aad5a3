"""The management API, health probes and metrics, over a real uvicorn server and real upstream processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from patchbay import Hub
from patchbay.server.api import build_api, install_error_handlers
from patchbay.server.health import build_health
from patchbay.server.metrics import build_metrics
from tests.conftest import bad, wait_for

SECRET = "s3cr3t-token-value"
HEADER_SECRET = "Bearer hdr-s3cr3t"


@dataclass
class Api:
    hub: Hub
    client: httpx2.AsyncClient
    base_url: str
    config: Path
    server: uvicorn.Server

    def file_bytes(self) -> bytes:
        return self.config.read_bytes()

    def saved(self) -> dict[str, Any]:
        servers: dict[str, Any] = json.loads(self.config.read_text())["mcpServers"]
        return servers


def _alpha() -> dict[str, Any]:
    return bad(
        "--echo-env",
        "API_KEY",
        env={"API_KEY": SECRET},
        headers={"Authorization": HEADER_SECRET},
        timeout=10,
    )


@contextlib.asynccontextmanager
async def serving(config: Path) -> AsyncIterator[Api]:
    hub = Hub.from_file(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with hub:
            yield

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(build_api(hub), prefix="/api")
    app.include_router(build_health(hub))
    app.include_router(build_metrics(hub))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=5)
    )
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), what="uvicorn start")
        assert server.started, task.exception() if task.done() else "not started"
        port = server.servers[0].sockets[0].getsockname()[1]
        base_url = f"http://127.0.0.1:{port}"
        async with httpx2.AsyncClient(base_url=base_url, timeout=20) as client:
            yield Api(hub, client, base_url, config, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    config = tmp_path / "servers.json"
    config.write_text(
        json.dumps(
            {"mcpServers": {"alpha": _alpha(), "beta": bad("--name", "beta", enabled=False)}}, indent=2
        )
    )
    async with serving(config) as api:
        yield api


def assert_no_secret(text: str) -> None:
    assert SECRET not in text
    assert "hdr-s3cr3t" not in text


# --- servers ----------------------------------------------------------------------------------------------


async def test_list_and_get_servers_redact_secrets(api: Api) -> None:
    r = await api.client.get("/api/servers")
    assert r.status_code == 200, r.text
    assert_no_secret(r.text)
    servers = {s["name"]: s for s in r.json()}
    assert list(servers) == ["alpha", "beta"]
    alpha = servers["alpha"]
    assert alpha["state"] == "ready" and alpha["enabled"] is True and alpha["pid"]
    assert alpha["tool_count"] > 5
    assert alpha["spec"]["env"] == {"API_KEY": "***"}
    assert alpha["spec"]["headers"] == {"Authorization": "***"}
    assert alpha["spec"]["args"][-2:] == ["--echo-env", "API_KEY"]
    assert alpha["spec"]["timeout"] == 10
    assert servers["beta"]["state"] == "disabled" and servers["beta"]["spec"]["enabled"] is False

    r = await api.client.get("/api/servers/alpha", params={"tail": 3})
    assert r.status_code == 200, r.text
    assert_no_secret(r.text)
    one = r.json()
    assert one["capabilities"]["tools"] == {"listChanged": True}
    assert one["protocol_version"] and one["server_info"]["name"] == "misbehaving"
    assert isinstance(one["stderr_tail"], list) and len(one["stderr_tail"]) <= 3
    assert one["spec"]["env"] == {"API_KEY": "***"}
    r = await api.client.get("/api/servers/alpha", params={"tail": 0})
    assert r.json()["stderr_tail"] == []

    r = await api.client.get("/api/servers/alpah")
    assert r.status_code == 404
    body = r.json()
    assert body["error"] == "unknown_server" and body["suggestions"] == ["alpha"]
    assert "unknown server 'alpah'" in body["detail"] and "alpha" in body["detail"]


async def test_a_proxy_password_is_masked_and_kept(api: Api) -> None:
    c = api.client
    spec = {"url": "http://127.0.0.1:9/mcp", "proxy": f"http://user:{SECRET}@127.0.0.1:9", "enabled": False}
    response = await c.post("/api/servers", json={"name": "behind", "spec": spec})
    assert response.status_code == 201, response.text
    assert_no_secret(response.text)
    shown = (await c.get("/api/servers/behind")).json()["spec"]
    assert shown["proxy"] == "http://user:***@127.0.0.1:9"
    # Sending back what the API showed keeps the stored proxy, password included.
    response = await c.put("/api/servers/behind", json=shown)
    assert response.status_code == 200, response.text
    assert api.saved()["behind"]["proxy"] == spec["proxy"]
    assert_no_secret((await c.get("/api/servers")).text)


async def test_add_server_saves_starts_and_redacts(api: Api) -> None:
    events = await api.client.get("/api/servers")  # warm connection
    assert events.status_code == 200
    spec = bad("--name", "gamma", env={"API_KEY": SECRET}, headers={"X-Token": HEADER_SECRET})
    r = await api.client.post("/api/servers", json={"name": "gamma", "spec": spec})
    assert r.status_code == 201, r.text
    assert_no_secret(r.text)
    assert r.headers["location"] == f"{api.base_url}/api/servers/gamma"
    body = r.json()
    assert body["name"] == "gamma" and body["state"] == "ready"
    assert body["server_info"]["name"] == "gamma"
    assert body["spec"] == {**spec, "env": {"API_KEY": "***"}, "headers": {"X-Token": "***"}}
    # saved with the real values, exactly as sent
    assert api.saved()["gamma"] == spec
    r = await api.client.get("/api/tools", params={"server": "gamma"})
    assert "gamma__echo" in [t["name"] for t in r.json()]
    # the list shows it, redacted
    r = await api.client.get("/api/servers")
    assert [s["name"] for s in r.json()] == ["alpha", "beta", "gamma"]
    assert_no_secret(r.text)


async def test_bad_requests_answer_clearly_and_change_nothing(api: Api) -> None:
    before = api.file_bytes()
    c = api.client

    async def expect(status: int, response: httpx2.Response, *fragments: str) -> dict[str, Any]:
        assert response.status_code == status, response.text
        for fragment in fragments:
            assert fragment in response.text, response.text
        assert_no_secret(response.text)
        data: dict[str, Any] = response.json()
        return data

    body = await expect(
        409, await c.post("/api/servers", json={"name": "alpha", "spec": bad()}), "already exists"
    )
    assert body["error"] == "duplicate_server" and body["server"] == "alpha"
    body = await expect(
        422, await c.post("/api/servers", json={"name": "bad name!", "spec": bad()}), "invalid server name"
    )
    assert body["error"] == "config"
    # body validation names the server and the field, in the one error shape
    body = await expect(
        422, await c.post("/api/servers", json={"name": "x", "spec": {"args": ["a"]}}), "needs 'command'"
    )
    assert body["error"] == "config" and body["server"] == "x"
    body = await expect(422, await c.post("/api/servers", json={"name": "x", "spec": bad(timeout=-1)}))
    assert (body["error"], body["field"]) == ("config", "timeout")
    assert body["detail"].startswith("server 'x': timeout: ")
    body = await expect(422, await c.post("/api/servers", json={"spec": bad()}))
    assert (body["error"], body["field"]) == ("invalid_request", "name")
    # values that cannot reach a process, and numbers strict JSON cannot hold
    body = await expect(
        422,
        await c.post("/api/servers", json={"name": "x", "spec": bad("a", "b\0")}),
        "server 'x': args[2]: contains a NUL byte",
    )
    assert body["field"] == "args[2]"
    await expect(
        422, await c.put("/api/servers/alpha", json=bad(env={"A=B": "v"})), "server 'alpha': env.A=B: "
    )
    await expect(422, await c.put("/api/servers/alpha", json=bad(cwd="/\0")), "server 'alpha': cwd: ")
    for literal in ("1e999", "NaN", "Infinity"):
        raw = '{"name": "x", "spec": {"command": "c", "timeout": ' + literal + "}}"
        body = await expect(
            422, await c.post("/api/servers", content=raw, headers={"content-type": "application/json"})
        )
        assert body["field"] == "timeout" and "finite" in body["detail"], body
    await expect(
        422,
        await c.post(
            "/api/servers", content=b'{"name": "x", "spec": {', headers={"content-type": "application/json"}
        ),
        "JSON",
    )
    # a redacted placeholder with no stored value behind it is refused, not saved as "***"
    body = await expect(
        422,
        await c.post("/api/servers", json={"name": "x", "spec": bad(env={"API_KEY": "***"})}),
        "env.API_KEY",
    )
    assert body["field"] == "env.API_KEY"

    body = await expect(404, await c.put("/api/servers/alpah", json=bad()), "unknown server 'alpah'")
    assert body["suggestions"] == ["alpha"]
    await expect(422, await c.put("/api/servers/alpha", json={"url": "http://x", "command": "y"}), "not both")
    await expect(422, await c.put("/api/servers/alpha", json=bad(maxRestarts="many")), "maxRestarts")
    await expect(422, await c.put("/api/servers/beta", json=bad(env={"NEW": "***"})), "env.NEW")
    await expect(404, await c.delete("/api/servers/nope"), "unknown server 'nope'")
    await expect(404, await c.post("/api/servers/nope/enable"), "unknown server")
    await expect(404, await c.post("/api/servers/nope/disable"), "unknown server")
    body = await expect(503, await c.post("/api/servers/beta/restart"), "disabled")
    assert body["error"] == "unavailable" and body["server"] == "beta"

    await expect(422, await c.get("/api/tools", params={"format": "xml"}), "format")
    await expect(404, await c.get("/api/tools", params={"server": "nope"}), "unknown server")
    body = await expect(
        404, await c.post("/api/tools/alpha__ech/call", json={}), "did you mean 'alpha__echo'"
    )
    assert body["error"] == "unknown_tool" and body["suggestions"][0] == "alpha__echo"
    await expect(422, await c.post("/api/tools/alpha__echo/call", json={"arguments": [1]}), "arguments")
    await expect(422, await c.post("/api/tools/alpha__echo/call", json={"timeout": 0}), "timeout")
    huge = b'{"timeout": 1e999}'
    body = await expect(
        422,
        await c.post(
            "/api/tools/alpha__echo/call", content=huge, headers={"content-type": "application/json"}
        ),
    )
    assert body["field"] == "timeout" and "finite" in body["detail"]
    await expect(422, await c.post("/api/tools/alpha__echo/call", json={"argz": {}}), "argz")

    assert api.file_bytes() == before
    assert api.hub.servers == ["alpha", "beta"]
    assert api.hub.server_status("alpha").state == "ready"
    assert api.hub.server_status("alpha").restarts == 0


async def test_update_keeps_redacted_secrets(api: Api) -> None:
    r = await api.client.get("/api/servers/alpha")
    spec = r.json()["spec"]
    spec["args"] += ["--name", "renamed"]
    spec["env"]["EXTRA"] = "plain"
    r = await api.client.put("/api/servers/alpha", json=spec)
    assert r.status_code == 200, r.text
    assert_no_secret(r.text)
    body = r.json()
    assert body["state"] == "ready" and body["server_info"]["name"] == "renamed"
    assert body["spec"]["env"] == {"API_KEY": "***", "EXTRA": "***"}
    saved = api.saved()["alpha"]
    assert saved["env"] == {"API_KEY": SECRET, "EXTRA": "plain"}
    assert saved["headers"] == {"Authorization": HEADER_SECRET}
    # the restarted process got the real secret, not the placeholder
    r = await api.client.post("/api/tools/alpha__whoami/call", json={})
    assert json.loads(r.json()["content"][0]["text"])["env"] == SECRET


async def test_enable_disable_restart_delete(api: Api) -> None:
    c = api.client
    r = await c.post("/api/servers/alpha/disable")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "disabled" and r.json()["enabled"] is False
    assert api.saved()["alpha"]["enabled"] is False
    r = await c.post("/api/tools/alpha__echo/call", json={"arguments": {"text": "hi"}})
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "unavailable" and "alpha" in r.json()["detail"]

    r = await c.post("/api/servers/alpha/enable")
    assert r.status_code == 200 and r.json()["state"] == "ready"
    assert api.saved()["alpha"]["enabled"] is True
    pid = r.json()["pid"]

    r = await c.post("/api/servers/alpha/restart")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "ready" and r.json()["restarts"] == 1 and r.json()["pid"] != pid
    assert_no_secret(r.text)

    r = await c.delete("/api/servers/alpha")
    assert r.status_code == 204 and r.content == b""
    assert "alpha" not in api.saved()
    assert (await c.get("/api/servers/alpha")).status_code == 404
    assert [s["name"] for s in (await c.get("/api/servers")).json()] == ["beta"]


# --- tools, resources, prompts ----------------------------------------------------------------------------


async def test_tools_and_calls(api: Api) -> None:
    c = api.client
    r = await c.get("/api/tools")
    assert r.status_code == 200
    tools = {t["name"]: t for t in r.json()}
    assert "alpha__echo" in tools and tools["alpha__echo"]["inputSchema"]["required"] == ["text"]
    openai = (await c.get("/api/tools", params={"format": "openai"})).json()
    assert {"type": "function", "function": openai[0]["function"]} == openai[0]
    anthropic = (await c.get("/api/tools", params={"format": "anthropic", "server": "alpha"})).json()
    assert {t["name"] for t in anthropic} == set(tools) and "input_schema" in anthropic[0]
    assert (await c.get("/api/tools", params={"server": "beta"})).json() == []

    r = await c.post("/api/tools/alpha__echo/call", json={"arguments": {"text": "hello"}})
    assert r.status_code == 200, r.text
    assert r.json()["content"] == [{"type": "text", "text": "hello"}]
    assert r.json()["isError"] is False
    r = await c.post("/api/tools/alpha__add/call", json={"arguments": {"a": 2, "b": 3}})
    assert r.json()["structuredContent"] == {"result": 5}
    r = await c.post("/api/tools/alpha__fail/call")  # no body at all: no arguments
    assert r.status_code == 200 and r.json()["isError"] is True

    r = await c.post("/api/tools/alpha__rpc_error/call", json={})
    assert r.status_code == 502, r.text
    assert r.json() == {
        "detail": "server 'alpha' returned error -32050: deliberate upstream error",
        "error": "upstream_error",
        "server": "alpha",
        "code": -32050,
    }
    r = await c.post("/api/tools/alpha__sleep/call", json={"arguments": {"seconds": 5}, "timeout": 0.2})
    assert r.status_code == 504, r.text
    assert r.json()["error"] == "timeout" and "within 0.2 s" in r.json()["detail"]

    resources = (await c.get("/api/resources")).json()
    assert [x["uri"] for x in resources] == ["test://hello"]
    templates = (await c.get("/api/resources/templates")).json()
    assert templates[0]["uriTemplate"] == "test://echo/{value}"
    prompts = (await c.get("/api/prompts")).json()
    assert prompts[0]["name"].endswith("greet") and prompts[0]["arguments"][0]["name"] == "name"


async def test_openapi_documents_the_api(api: Api) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200, r.text
    doc = r.json()
    for path in ("/api/servers", "/api/servers/{name}", "/api/tools/{name}/call", "/api/events", "/readyz"):
        assert path in doc["paths"], path
    add = doc["paths"]["/api/servers"]["post"]
    assert add["summary"] == "Add a server" and {"201", "409", "422"} <= set(add["responses"])
    assert "text/event-stream" in doc["paths"]["/api/events"]["get"]["responses"]["200"]["content"]
    assert (await api.client.get("/docs")).status_code == 200


# --- events -----------------------------------------------------------------------------------------------


async def read_events(response: httpx2.Response, until: Any) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    kind = ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            seen.append((kind, json.loads(line.removeprefix("data:").strip())))
            if until(seen[-1]):
                return seen
    raise AssertionError(f"stream ended before the expected event; got {seen}")


async def test_event_stream(api: Api) -> None:
    base = api.hub._bus.subscribers
    async with api.client.stream("GET", "/api/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert api.hub._bus.subscribers == base + 1  # subscribed before the first byte
        r = await api.client.post("/api/servers/alpha/disable")
        assert r.status_code == 200
        r = await api.client.post("/api/servers", json={"name": "gamma", "spec": _alpha()})
        assert r.status_code == 201
        async with asyncio.timeout(10):
            seen = await read_events(stream, lambda e: e[0] == "server_state" and e[1]["server"] == "gamma")
    kinds = [k for k, _ in seen]
    assert all(k == data["type"] for k, data in seen)
    assert ("config", "disabled") in [(k, d.get("action")) for k, d in seen]
    assert any(k == "server_state" and d["server"] == "alpha" and d["state"] == "disabled" for k, d in seen)
    assert "catalog" in kinds
    assert_no_secret(json.dumps(seen))
    # the client went away: the subscription is closed
    await wait_for(lambda: api.hub._bus.subscribers == base, what="unsubscribed")


async def test_event_stream_ends_on_shutdown(tmp_path: Path) -> None:
    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"mcpServers": {}}))
    async with serving(config) as api, api.client.stream("GET", "/api/events") as stream:
        assert api.hub._bus.subscribers == 1
        api.server.should_exit = True
        async with asyncio.timeout(5):
            async for _ in stream.aiter_lines():
                pass
        assert api.hub._bus.subscribers == 0


# --- health and metrics -----------------------------------------------------------------------------------


async def test_health_and_readiness(api: Api) -> None:
    c = api.client
    r = await c.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = await c.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"ready": True, "servers": {"alpha": "ready"}}  # disabled beta does not count

    r = await c.post(
        "/api/servers", json={"name": "broken", "spec": bad("--exit-at-start", "1", maxRestarts=0)}
    )
    assert r.status_code == 201 and r.json()["state"] == "failed"
    r = await c.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"ready": False, "servers": {"alpha": "ready", "broken": "failed"}}
    assert (await c.get("/healthz")).status_code == 200

    await c.post("/api/servers/broken/disable")
    assert (await c.get("/readyz")).status_code == 200


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def test_metrics(api: Api) -> None:
    c = api.client
    for _ in range(2):
        await c.post("/api/tools/alpha__echo/call", json={"arguments": {"text": "x"}})
    await c.post("/api/tools/alpha__fail/call", json={})
    r = await c.post("/api/tools/alpha__sleep/call", json={"arguments": {"seconds": 5}, "timeout": 0.2})
    assert r.status_code == 504
    await c.post("/api/tools/nope/call", json={})

    r = await c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    m = scrape(r.text)

    def calls(server: str, outcome: str) -> float:
        return m.get(("patchbay_tool_calls_total", (("outcome", outcome), ("server", server))), 0)

    assert calls("alpha", "ok") == 2
    assert calls("alpha", "tool_error") == 1
    assert calls("alpha", "timeout") == 1
    assert calls("", "unknown_tool") == 1
    assert m[("patchbay_tool_call_duration_seconds_count", (("server", "alpha"),))] == 4
    assert m[("patchbay_tool_call_duration_seconds_bucket", (("le", "0.0001"), ("server", "alpha")))] == 0
    assert m[("patchbay_tool_call_duration_seconds_bucket", (("le", "60.0"), ("server", "alpha")))] == 4
    assert m[("patchbay_servers", (("state", "ready"),))] == 1
    assert m[("patchbay_servers", (("state", "disabled"),))] == 1
    assert m[("patchbay_servers", (("state", "failed"),))] == 0
    assert m[("patchbay_server_restarts", (("server", "alpha"),))] == 0
    assert m[("patchbay_server_ready", (("server", "alpha"),))] == 1
    assert m[("patchbay_tools", ())] == len(api.hub.tools()) > 0

    await c.post("/api/servers/alpha/restart")
    m = scrape((await c.get("/metrics")).text)
    assert m[("patchbay_server_restarts", (("server", "alpha"),))] == 1

    r = await c.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")
