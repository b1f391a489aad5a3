"""Patchbay inside a host app: a FastAPI app written here, with routes of its own, patchbay mounted at
``/hub`` by ``patchbay.mount``, served by real uvicorn on 127.0.0.1.

Through the prefix: MCP SDK clients (both eras, a profile), the REST API, an agent (``patchbay agent``
subprocess) dialling in, the dashboard in headless Chromium, a sign-in whose redirect comes back to
``/hub/oauth/callback``; and the host's shutdown stops the hub's child processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import psutil
import pytest
import uvicorn
from fastapi import FastAPI, Request
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client

import patchbay
from patchbay import Hub
from patchbay.oauth import OAuthManager, TokenStore
from patchbay.server.embed import ServeSettings, asgi_app, lifespan
from tests.conftest import alive, bad, wait_for
from tests.oauth.harness import ProtectedServer, Provider, consent, provider_available
from tests.test_agents import kill_tree, start_agent
from tests.test_serve import free_port, text

try:
    from playwright.async_api import async_playwright, expect
except ImportError:  # pragma: no cover - `make test` installs it (the dev extras)
    async_playwright = None  # type: ignore[assignment]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
AGENT_TOKEN = "laptop-token-0123456789abcdef"
TOKEN = "embedded-hub-t0ken"
CALC_TOKEN = "calc-user-t0ken-0123456789"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "embed_fastapi.py"
needs_browser = pytest.mark.skipif(
    async_playwright is None or not Path(CHROMIUM).exists(),
    reason="playwright and Chromium are needed: run `make test`",
)


@dataclass
class Host:
    """The host app on a real port, its hub, and what its own lifespan code saw."""

    app: FastAPI
    hub: Hub
    port: int = 0
    seen: list[str] = field(default_factory=list)
    server: uvicorn.Server | None = None
    task: asyncio.Task[None] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def http(self, **headers: str) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url=self.base, headers=headers, timeout=30)

    async def start(self) -> Host:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.task = asyncio.create_task(self.server.serve(), name="host-app")
        async with asyncio.timeout(30):
            while not self.server.started:
                if self.task.done():
                    await self.task  # raises what stopped it
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.02)
        return self

    async def stop(self) -> None:
        """What SIGTERM does to the host: uvicorn stops, and its lifespan shutdown runs."""
        if self.server is not None and self.task is not None and not self.task.done():
            self.server.should_exit = True
            await self.task


def build_host(config: Path, **settings: Any) -> Host:
    """The app under test: its own lifespan and routes, patchbay mounted at /hub."""
    hub = Hub.from_file(config, oauth=OAuthManager(TokenStore(config.parent / "oauth", use_keyring=False)))
    host = Host(FastAPI(), hub)

    @contextlib.asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        host.seen.append("host started")
        yield {"greeting": "hello"}
        # The hub is still up during the host's own shutdown code: it can use it one last time.
        bye = await hub.call_tool("mb__echo", {"text": "bye"}) if "mb" in hub.servers else None
        host.seen.append(f"host stopping: {text(bye) if bye is not None else '-'}")

    app = FastAPI(title="host app", lifespan=own_lifespan)
    host.app = app

    @app.get("/hello")
    async def hello(request: Request) -> dict[str, Any]:
        return {"hello": request.state.greeting}

    @app.get("/api/own")  # the host's own /api: outside patchbay's guard, not shadowed by it
    async def own_api() -> dict[str, Any]:
        await hub.wait_started()
        return {"tools": len(hub.tools())}

    patchbay.mount(app, hub, prefix="/hub", settings=ServeSettings(**settings))
    return host


def write_config(tmp_path: Path, **extra: Any) -> Path:
    config = tmp_path / "patchbay.json"
    doc = {
        "mcpServers": {"mb": bad("--name", "mb")},
        "profiles": {"calc": {"tools": ["*__add"]}},
        "agents": {"laptop": {"token": AGENT_TOKEN}},
        "pinning": "off",
        **extra,
    }
    config.write_text(json.dumps(doc, indent=2))
    return config


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    h = await build_host(write_config(tmp_path)).start()
    try:
        yield h
    finally:
        await h.stop()


async def test_mcp_rest_and_the_hosts_own_routes_side_by_side(host: Host) -> None:
    async with host.http() as http:
        assert (await http.get("/hello")).json() == {"hello": "hello"}  # the host's lifespan state
        assert (await http.get("/hub/healthz")).status_code == 200
        async with asyncio.timeout(30):
            while (await http.get("/hub/readyz")).status_code != 200:
                await asyncio.sleep(0.05)
        own = (await http.get("/api/own")).json()
        servers = (await http.get("/hub/api/servers")).json()
        assert [s["name"] for s in servers] == ["mb"] and servers[0]["state"] == "ready"
        assert own["tools"] == servers[0]["tool_count"]
        r = await http.post("/hub/api/tools/mb__add/call", json={"arguments": {"a": 2, "b": 5}})
        assert r.status_code == 200 and r.json()["structuredContent"] == {"result": 7}
        calc = (await http.get("/hub/api/tools", params={"profile": "calc"})).json()
        assert [t["name"] for t in calc] == ["mb__add"]
        assert (await http.get("/hub/api/nope")).status_code == 404
        docs = await http.get("/hub/docs")
        assert docs.status_code == 200 and "/hub/openapi.json" in docs.text
        assert "/api/servers" in (await http.get("/hub/openapi.json")).json()["paths"]
        assert "/hub/mcp" not in (await http.get("/openapi.json")).json()["paths"]  # the host's own
        assert (await http.get("/hub/metrics")).status_code == 200
        r = await http.get("/hub/oauth/callback", params={"state": "forged", "code": "x"})
        assert r.status_code == 400 and "matches no pending sign-in" in r.text
        r = await http.get("/hub", follow_redirects=False)  # the dashboard needs its trailing slash
        assert r.status_code in (307, 308) and r.headers["location"].endswith("/hub/")
    async with streamable_http_client(f"{host.base}/hub/mcp") as (r, w), ClientSession(r, w) as session:
        await session.initialize()
        assert "mb__echo" in {t.name for t in (await session.list_tools()).tools}
        assert text(await session.call_tool("mb__echo", {"text": "handshake"})) == "handshake"
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        slept = await session.call_tool("mb__sleep", {"seconds": 0.2}, progress_callback=on_progress)
        assert not slept.is_error
        await wait_for(lambda: bool(seen), 10, "progress through the mount")
    async with Client(f"{host.base}/hub/mcp") as modern:  # 2026-07-28: calls take the fast path
        assert text(await modern.call_tool("mb__echo", {"text": "modern"})) == "modern"
    async with Client(f"{host.base}/hub/mcp/calc") as profiled:
        assert [t.name for t in (await profiled.list_tools()).tools] == ["mb__add"]
        assert (await profiled.call_tool("mb__add", {"a": 1, "b": 1})).structured_content == {"result": 2}


async def test_an_agent_dials_in_under_the_prefix(host: Host, tmp_path: Path) -> None:
    agent_config = tmp_path / "agent.json"
    agent_config.write_text(json.dumps({"mcpServers": {"mb": bad("--name", "laptop-mb")}}))
    agent = start_agent(
        None, agent_config, tmp_path / "agent.log", AGENT_TOKEN, url=f"ws://127.0.0.1:{host.port}/hub/agents"
    )
    try:
        async with host.http() as http:

            async def connected() -> bool:
                agents = (await http.get("/hub/api/agents")).json()
                return bool(agents) and agents[0]["state"] == "connected" and agents[0]["tool_count"] > 0

            async with asyncio.timeout(60):
                while not await connected():
                    assert agent.proc.poll() is None, (tmp_path / "agent.log").read_text()
                    await asyncio.sleep(0.05)
            names = {t["name"] for t in (await http.get("/hub/api/tools")).json()}
            echo = next(n for n in names if n.startswith("laptop__") and n.endswith("echo"))
        async with Client(f"{host.base}/hub/mcp") as client:
            assert text(await client.call_tool(echo, {"text": "from the laptop"})) == "from the laptop"
        async with host.http() as http:  # a wrong token is refused with the probe's answer, under /hub
            probe = await http.get("/hub/agents")
            assert probe.status_code == 426 and probe.json()["patchbay"] == "agents"
    finally:
        kill_tree(agent.proc)


async def test_the_hosts_shutdown_stops_the_hubs_children(tmp_path: Path) -> None:
    h = await build_host(write_config(tmp_path)).start()
    try:
        async with h.http() as http:
            async with asyncio.timeout(30):
                while (await http.get("/hub/readyz")).status_code != 200:
                    await asyncio.sleep(0.05)
            pid = (await http.get("/hub/api/servers/mb")).json()["pid"]
            # A grandchild in the server's process group: stopping the server kills the whole group.
            spawned = await http.post("/hub/api/tools/mb__spawn_child/call", json={"arguments": {}})
            assert spawned.status_code == 200, spawned.text
        child = psutil.Process(pid)
        family = [pid, *(p.pid for p in child.children(recursive=True))]
        assert all(alive(p) for p in family) and len(family) >= 2
        assert h.seen == ["host started"]
    finally:
        await h.stop()
    assert h.seen == ["host started", "host stopping: bye"]  # the hub outlived the host's shutdown code
    await wait_for(lambda: not any(alive(p) for p in family), 10, "the hub's children gone")


async def test_tokens_guard_patchbays_paths_and_not_the_hosts(tmp_path: Path) -> None:
    calc_user = {"name": "calc-user", "token": CALC_TOKEN, "role": "user", "profile": "calc"}
    h = await build_host(write_config(tmp_path, auth={"tokens": [calc_user]}), tokens=[TOKEN]).start()
    try:
        async with h.http() as http:
            assert (await http.get("/hello")).status_code == 200
            assert (await http.get("/api/own")).status_code == 200
            refused = await http.get("/hub/api/servers")
            assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
            assert (await http.post("/hub/mcp", json={})).status_code == 401
            assert (await http.get("/hub/")).status_code == 200  # the dashboard's shell holds no data
            assert (await http.get("/hub/dashboard/js/api.js")).status_code == 200
            assert (await http.get("/hub/healthz")).status_code == 200
            assert (await http.get("/hub/dashboard/../api/servers")).status_code in (401, 404)
            foreign = await http.get("/hub/api/servers", headers={"Host": "evil.example"})
            assert foreign.status_code == 421
        async with h.http(Authorization=f"Bearer {TOKEN}") as http:
            assert (await http.get("/hub/api/servers")).status_code == 200
        # A user token bound to a profile: roles and the profile hold under the prefix too.
        async with h.http(Authorization=f"Bearer {CALC_TOKEN}") as http:
            tools = (await http.get("/hub/api/tools")).json()
            assert [t["name"] for t in tools] == ["mb__add"]
            add = await http.post("/hub/api/servers", json={"name": "x", "spec": {"command": "true"}})
            assert add.status_code == 403 and "needs the 'admin' role" in add.json()["detail"]
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {CALC_TOKEN}"}, timeout=30) as authed,
            streamable_http_client(f"{h.base}/hub/mcp", http_client=authed) as (r, w),
            ClientSession(r, w) as session,
        ):
            await session.initialize()  # /hub/mcp serves the token's profile, as /mcp does
            assert [t.name for t in (await session.list_tools()).tools] == ["mb__add"]
            added = await session.call_tool("mb__add", {"a": 2, "b": 2})
            assert added.structured_content == {"result": 4}
    finally:
        await h.stop()


def test_bad_prefixes_are_refused_naming_the_prefix(tmp_path: Path) -> None:
    hub = Hub.from_dict({"mcpServers": {}})
    for prefix in ("hub", "/hub/", "/", "", "/a//b", "/a/../b", "/a b"):
        with pytest.raises(ValueError, match=f"prefix {prefix!r} must"):
            patchbay.mount(FastAPI(), hub, prefix=prefix)


async def test_asgi_app_and_lifespan_for_a_host_that_runs_its_own(tmp_path: Path) -> None:
    """Without ``mount``: the app and its lifespan, entered by the host's own lifespan."""
    hub = Hub.from_file(write_config(tmp_path))
    sub = asgi_app(hub)

    @contextlib.asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(sub):
            yield

    app = FastAPI(lifespan=own)
    app.mount("/tools-hub", sub)
    h = await Host(app, hub).start()
    try:
        async with Client(f"{h.base}/tools-hub/mcp") as client:
            assert text(await client.call_tool("mb__echo", {"text": "own lifespan"})) == "own lifespan"
        pid = hub.status()["mb"].pid
        assert alive(pid)
    finally:
        await h.stop()
    await wait_for(lambda: not alive(pid), 10, "the server stopped with the host")


@needs_browser
async def test_the_dashboard_loads_and_goes_live_under_the_prefix(host: Host) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{host.base}/hub")  # redirected to /hub/
            assert page.url == f"{host.base}/hub/"
            mb = page.get_by_role("article", name="mb", exact=True)
            await expect(mb.locator(".badge")).to_have_text("ready", timeout=30_000)
            await expect(page.locator("#connection")).to_have_text("Live")  # /hub/api/events
            await expect(page.locator("details.tool[data-tool='mb__echo']")).to_have_count(1)
            # A change made elsewhere arrives over the event stream, under the prefix.
            async with host.http() as http:
                r = await http.post("/hub/api/servers/mb/disable")
                assert r.status_code == 200, r.text
            await expect(mb.locator(".badge")).to_have_text("disabled", timeout=30_000)
            assert errors == []
        finally:
            await browser.close()


@needs_browser
@pytest.mark.skipif(not provider_available(), reason="oidc-provider is not installed: run `make test`")
async def test_a_sign_in_comes_back_to_the_prefixed_callback(tmp_path: Path) -> None:
    provider = Provider().start()
    protected = await ProtectedServer(provider.issuer).start()
    config = write_config(tmp_path)
    doc = json.loads(config.read_text())
    doc["mcpServers"] = {"linear": {"url": protected.url}}
    config.write_text(json.dumps(doc))
    h = await build_host(config).start()
    try:
        async with h.http() as http:
            async with asyncio.timeout(30):
                while (await http.get("/hub/api/servers/linear")).json()["state"] != "needs_auth":
                    await asyncio.sleep(0.05)
            r = await http.post("/hub/api/servers/linear/auth")
            assert r.status_code == 200, r.text
            url = r.json()["url"]
            assert f"redirect_uri=http%3A%2F%2F127.0.0.1%3A{h.port}%2Fhub%2Foauth%2Fcallback" in url
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    await consent(browser, url)  # the provider redirects to /hub/oauth/callback
                finally:
                    await browser.close()
            async with asyncio.timeout(30):
                while (await http.get("/hub/api/servers/linear")).json()["state"] != "ready":
                    await asyncio.sleep(0.05)
            r = await http.post("/hub/api/tools/linear__echo/call", json={"arguments": {"text": "signed in"}})
            assert r.status_code == 200 and "signed in" in r.text
    finally:
        await h.stop()
        await protected.stop()
        provider.stop()


async def test_the_example_app_serves_its_routes_and_patchbays(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "example.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLE), "--port", str(port),
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            stdout=asyncio.subprocess.DEVNULL, stderr=out, start_new_session=True,
        )  # fmt: skip
    try:
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            async with asyncio.timeout(60):
                while True:
                    assert proc.returncode is None, log.read_text()
                    with contextlib.suppress(httpx2.TransportError):
                        if (await http.get("/hub/readyz")).status_code == 200:
                            break
                    await asyncio.sleep(0.05)
            assert (await http.get("/")).json()["mcp"] == "/hub/mcp"
            turn = (await http.get("/tools", params={"q": "what time is it in Tokyo", "limit": 3})).json()
            assert turn and all(t["function"]["name"].startswith("demo__") for t in turn)
            pid = (await http.get("/hub/api/servers/demo")).json()["pid"]
        async with Client(f"http://127.0.0.1:{port}/hub/mcp") as client:
            result = await client.call_tool("demo__add", {"a": 1, "b": 2})
            assert not result.is_error and "3" in text(result)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert await asyncio.wait_for(proc.wait(), 30) == 0, log.read_text()
        assert not alive(pid)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
