"""``/mcp`` served in front of FastAPI (``server/dispatch.py``), on real uvicorn over a real upstream process:
every gate still applies there (Host, Origin, tokens, roles, the SDK's body limit), a bug is a clean
``ErrorBody`` 500, a client that hangs up early still cancels its call upstream, other methods and paths
still take the FastAPI app, and a host app that mounts patchbay gets the same."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from patchbay import Hub
from patchbay.identity import Identity
from patchbay.server.api import ErrorBody
from patchbay.server.app import ServeSettings, create_app, uvicorn_config
from patchbay.server.dispatch import PatchbayApp, is_mcp_path
from patchbay.server.fastpath import _DisconnectWatch
from tests.conftest import bad, wait_for
from tests.test_embed import build_host, write_config

ADMIN = "dispatch-admin-token-0123456789"
VIEWER = "dispatch-viewer-token-0123456789"
MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "dispatch-test", "version": "1"},
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def modern_call(rid: int, name: str, arguments: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    body = {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments, "_meta": META},
    }
    headers = {**ACCEPT, "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": name}
    return body, headers


@dataclass
class Seen:
    """Which requests reached the ``/mcp`` chain in front of FastAPI (the real chain, only recorded)."""

    requests: list[tuple[str, str]] = field(default_factory=list)

    def wrap(self, app: PatchbayApp) -> None:
        inner = app.mcp
        assert inner is not None

        async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
            self.requests.append((scope["method"], scope["path"]))
            await inner(scope, receive, send)

        app.mcp = recorded


@dataclass
class Served:
    hub: Hub
    app: PatchbayApp
    base: str
    seen: Seen

    def http(self, token: str | None = ADMIN, **headers: str) -> httpx2.AsyncClient:
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx2.AsyncClient(base_url=self.base, headers=headers, timeout=30)


@contextlib.asynccontextmanager
async def serve(tmp_path: Path) -> AsyncIterator[Served]:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"mb": bad()}, "profiles": {"calc": {"tools": ["*__add"]}}}))
    hub = Hub.from_file(config)
    settings = ServeSettings(port=0, tokens=[ADMIN, (VIEWER, Identity("v", "viewer"))], watch_config=False)
    app = create_app(hub, settings)
    assert isinstance(app, PatchbayApp)
    seen = Seen()
    seen.wrap(app)
    server = uvicorn.Server(uvicorn_config(app, settings, log_level="warning", timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), 30, "uvicorn start")
        assert server.started, task.exception() if task.done() else "not started"
        port = server.servers[0].sockets[0].getsockname()[1]
        served = Served(hub, app, f"http://127.0.0.1:{port}", seen)
        await wait_for(lambda: hub.server_status("mb").state == "ready", 30, "mb ready")
        yield served
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve(tmp_path) as s:
        yield s


def refused(r: httpx2.Response, status: int, error: str) -> None:
    assert r.status_code == status, r.text
    assert ErrorBody.model_validate(r.json()).error == error


def raw_post(port: int, host: str, body: bytes) -> bytes:
    """One POST /mcp with a Host header no HTTP client library would send, over a plain socket."""
    request = (
        f"POST /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ADMIN}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_the_paths_taken_in_front_are_exactly_the_mcp_routes() -> None:
    for path in ("/mcp", "/mcp/calc", "/mcp/a.b-c"):
        assert is_mcp_path(path), path
    for path in ("/mcp/", "/mcp/a/b", "/mcpx", "/api/mcp", "/", "/mcp//"):
        assert not is_mcp_path(path), path


async def test_every_gate_still_applies_to_mcp_in_front_of_fastapi(served: Served) -> None:
    body, headers = modern_call(1, "mb__echo", {"text": "through the gates"})
    async with served.http() as admin:
        r = await admin.post("/mcp", json=body, headers=headers)
        assert r.status_code == 200 and r.json()["result"]["content"][0]["text"] == "through the gates"
        refused(
            await admin.post("/mcp", json=body, headers={**headers, "Host": "evil.example"}),
            421,
            "misdirected",
        )
        origin = {**headers, "Origin": "http://evil.example"}
        refused(await admin.post("/mcp", json=body, headers=origin), 403, "forbidden")
        ok_origin = {**headers, "Origin": "http://localhost:3000"}
        assert (await admin.post("/mcp", json=body, headers=ok_origin)).status_code == 200
        # Larger than the SDK takes: it answers 413 itself, after the Guard and the fast path let it by.
        huge = (
            b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"mb__echo","arguments":{"text":"'
        )
        huge += b"x" * (4 * 1024 * 1024 + 1) + b'"}}}'
        r = await admin.post("/mcp", content=huge, headers=headers)
        assert r.status_code == 413, r.text
        # A profile that does not exist, and a method the MCP routes do not take (FastAPI's 405).
        r = await admin.post("/mcp/nope", json=body, headers=headers)
        assert r.status_code == 404 and r.json()["error"] == "unknown_profile"
        refused(await admin.put("/mcp", json=body, headers=headers), 405, "method_not_allowed")
    async with served.http(token=None) as anonymous:
        r = await anonymous.post("/mcp", json=body, headers=headers)
        refused(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith('Bearer realm="patchbay"')
        r = await anonymous.post("/mcp", json=body, headers={**headers, "Authorization": "Bearer wrong"})
        refused(r, 401, "unauthorized")
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
    async with served.http(token=VIEWER) as viewer:
        r = await viewer.post("/mcp", json=body, headers=headers)
        refused(r, 403, "forbidden")
        assert "needs the 'user' role" in r.json()["detail"]
    # A Host header that is no host at all is refused, not a 500.
    port = int(served.base.rsplit(":", 1)[1])
    answer = await asyncio.to_thread(raw_post, port, "[::1", json.dumps(body).encode())
    assert answer.startswith(b"HTTP/1.1 421 "), answer[:200]
    posts = [p for m, p in served.seen.requests if m == "POST"]
    assert posts.count("/mcp") == 9 and posts.count("/mcp/nope") == 1  # all in front of FastAPI
    assert ("PUT", "/mcp") not in served.seen.requests  # that one went to FastAPI


async def test_a_bug_in_the_fast_path_is_a_clean_500_and_logged(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(protocol: str, cursor: str | None) -> bytes:
        raise RuntimeError("a bug in the pages")

    fast = served.app.state.mcp.fast_sessions
    pages, fast.tools_list = fast.tools_list, broken
    body = {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": META}}
    headers = {**ACCEPT, "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"}
    async with served.http() as http:
        with caplog.at_level(logging.ERROR, logger="patchbay.server.dispatch"):
            r = await http.post("/mcp", json=body, headers=headers)
        refused(r, 500, "internal_error")
        assert "a bug" not in r.text and "Traceback" not in r.text
        assert any(rec.exc_info and "a bug in the pages" in str(rec.exc_info[1]) for rec in caplog.records)
        fast.tools_list = pages  # and the endpoint goes on serving
        r = await http.post("/mcp", json=body, headers=headers)
        assert r.status_code == 200 and "mb__echo" in {t["name"] for t in r.json()["result"]["tools"]}


async def test_a_client_gone_before_the_watch_starts_still_cancels_upstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The watch for a disconnect starts late (here 0.5 s): the client hangs up before it, and the call is
    # still cancelled upstream once it starts (receive() then says the client is gone).
    monkeypatch.setattr(_DisconnectWatch, "WATCH_AFTER", 0.5)
    async with serve(tmp_path) as served, served.http() as http:
        body, headers = modern_call(4, "mb__sleep", {"seconds": 30})
        source = served.hub._sources.get("mb")
        assert source is not None and source.connection is not None
        peer = source.connection.peer
        async with served.http() as impatient:
            hanging = asyncio.create_task(impatient.post("/mcp", json=body, headers=headers))
            await wait_for(lambda: peer.in_flight == 1, 30, "the call to reach the upstream")
            hanging.cancel()  # the client hangs up mid-call: its connection is closed
            with pytest.raises(asyncio.CancelledError):
                await hanging

        async def cancelled() -> bool:
            tail = (await http.get("/api/servers/mb")).json()["stderr_tail"]
            return any(line.startswith("CANCELLED") for line in tail)

        async with asyncio.timeout(30):
            while not await cancelled():
                await asyncio.sleep(0.02)
        assert peer.in_flight == 0
        body, headers = modern_call(5, "mb__echo", {"text": "after"})
        assert (await http.post("/mcp", json=body, headers=headers)).json()["result"]["content"][0][
            "text"
        ] == "after"


async def test_a_host_app_mounting_patchbay_serves_its_mcp_in_front_too(tmp_path: Path) -> None:
    host = build_host(write_config(tmp_path), tokens=[ADMIN])
    (mounted,) = [r.app for r in host.app.routes if getattr(r, "name", None) == "patchbay"]  # type: ignore[attr-defined]
    assert isinstance(mounted, PatchbayApp)
    seen = Seen()
    seen.wrap(mounted)
    await host.start()
    try:
        body, headers = modern_call(6, "mb__echo", {"text": "mounted"})
        async with host.http(Authorization=f"Bearer {ADMIN}") as http:
            async with asyncio.timeout(30):
                while (await http.get("/hub/readyz")).status_code != 200:
                    await asyncio.sleep(0.05)
            r = await http.post("/hub/mcp", json=body, headers=headers)
            assert r.status_code == 200 and r.json()["result"]["content"][0]["text"] == "mounted"
            add, add_headers = modern_call(7, "mb__add", {"a": 2, "b": 3})
            r = await http.post("/hub/mcp/calc", json=add, headers=add_headers)
            assert r.status_code == 200 and r.json()["result"]["structuredContent"] == {"result": 5}
            assert (await http.get("/hello")).status_code == 200  # the host's own route, not patchbay's
        async with host.http() as anonymous:
            refused(await anonymous.post("/hub/mcp", json=body, headers=headers), 401, "unauthorized")
        assert seen.requests == [("POST", "/hub/mcp"), ("POST", "/hub/mcp/calc"), ("POST", "/hub/mcp")]
    finally:
        await host.stop()
