"""The HTTP surface of ``patchbay serve`` as a whole, on a real uvicorn server over real upstream processes:
one error shape for every answer the REST API can give, which paths need the token, and slow clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn

from patchbay import Hub
from patchbay.server.api import ErrorBody
from patchbay.server.app import ServeSettings, create_app, uvicorn_config
from tests.conftest import bad, wait_for

TOKEN = "surface-test-token-0123456789"


@dataclass
class Surface:
    hub: Hub
    base_url: str
    port: int
    server: uvicorn.Server

    def client(self, token: str | None = TOKEN) -> httpx2.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx2.AsyncClient(base_url=self.base_url, headers=headers, timeout=20)


@contextlib.asynccontextmanager
async def surface(config: Path, **settings: Any) -> AsyncIterator[Surface]:
    hub = Hub.from_file(config)
    serve = ServeSettings(port=0, tokens=[TOKEN], watch_config=False, **settings)
    app = create_app(hub, serve)
    server = uvicorn.Server(uvicorn_config(app, serve, log_level="warning", timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), what="uvicorn start")
        assert server.started, task.exception() if task.done() else "not started"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Surface(hub, f"http://127.0.0.1:{port}", port, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Surface]:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"mb": bad()}}, indent=2))
    async with surface(config) as s, s.client() as c:
        await wait_for(lambda: s.hub.server_status("mb").state == "ready", 30, "mb ready")
        assert (await c.get("/readyz")).status_code == 200
        yield s


# --- one error shape -------------------------------------------------------------------------------------

UNKNOWN = "no-such-name"
JSON = {"content-type": "application/json"}


def bad_requests(path: str, method: str, op: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Bad inputs for one operation: (label, request kwargs). Path parameters name nothing that exists, so
    no request can change anything."""
    url = path.replace("{name}", UNKNOWN)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("unknown name" if "{" in path else "plain", {}),
        ("query junk", {"params": {"tail": "x", "format": "xml", "server": "\x00"}}),
    ]
    for param in op.get("parameters", []):
        if param["in"] == "query":
            for value in ("not-valid", "-1", "1e999", "NaN", ""):
                cases.append((f"{param['name']}={value!r}", {"params": {param["name"]: value}}))
    if "requestBody" in op:
        cases += [
            ("malformed JSON", {"content": b'{"name": ', "headers": JSON}),
            ("not UTF-8", {"content": b'{"name": "\xff\xfe"}', "headers": JSON}),
            ("text/plain", {"content": b"name=x", "headers": {"content-type": "text/plain"}}),
            ("no content type", {"content": b'{"name": "x"}'}),
            ("a list", {"json": [1, 2]}),
            ("a string", {"json": "x"}),
            (
                "wrong types",
                {"json": {"name": 5, "spec": [], "arguments": [1], "timeout": "soon", "token": 1}},
            ),
            (
                "NaN",
                {
                    "content": b'{"name": "x", "timeout": NaN, "spec": {"command": "c", "timeout": NaN}}',
                    "headers": JSON,
                },
            ),
            ("empty object", {"json": {}}),
        ]
    return [(label, {"method": method, "url": url, **kw}) for label, kw in cases]


def check_error(response: httpx2.Response, declared: set[str], label: str) -> None:
    where = f"{response.request.method} {response.request.url} ({label}) -> {response.status_code}"
    assert response.status_code != 500, f"{where}: {response.text}"
    if response.status_code < 400:
        return
    assert response.headers["content-type"].startswith("application/json"), where
    ErrorBody.model_validate(response.json())  # raises if it is another shape
    assert response.json()["detail"], where
    assert str(response.status_code) in declared, f"{where} is not declared in the OpenAPI document"


async def test_every_error_of_every_route_is_one_documented_shape(
    served: Surface, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="patchbay.server.api")
    async with served.client() as c, served.client(token=None) as anonymous:
        r = await c.get("/openapi.json")
        doc = r.json()
        assert "HTTPValidationError" not in json.dumps(doc)
        assert "ErrorBody" in doc["components"]["schemas"]
        seen: set[int] = set()
        tried = 0
        for path, item in doc["paths"].items():
            for method, op in item.items():
                declared = set(op["responses"])
                assert {"401", "405", "500"} <= declared, (method, path)
                if path == "/api/events":  # an endless stream on success; only its refusals here
                    cases = [("no token", {"method": "GET", "url": path})]
                    client = anonymous
                else:
                    cases = bad_requests(path, method.upper(), op)
                    client = c
                for label, kw in cases:
                    response = await client.request(**kw)
                    check_error(response, declared, label)
                    seen.add(response.status_code)
                    tried += 1
                if path != "/healthz":
                    r = await anonymous.request(method.upper(), path.replace("{name}", UNKNOWN))
                    assert r.status_code == 401
                    check_error(r, declared, "no token")
                r = await c.request("PATCH", path.replace("{name}", UNKNOWN))
                assert r.status_code == 405 and "Allow" in r.headers, (path, r.text)
                check_error(r, declared, "PATCH")
                seen.add(r.status_code)
        for url in ("/api/nope", "/nope", "/api/servers/mb/nope"):
            r = await c.get(url)
            assert r.status_code == 404 and r.json()["error"] == "not_found", r.text
            ErrorBody.model_validate(r.json())
        r = await anonymous.get("/api/servers", headers={"host": "evil.example"})
        assert r.status_code == 421 and r.json()["error"] == "misdirected"
        r = await anonymous.get("/api/servers", headers={"origin": "http://evil.example"})
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert tried > 80
    assert {400, 401, 404, 405, 415, 422} <= seen, seen
    assert not [rec for rec in caplog.records if "failed" in rec.getMessage()], "the 500 handler was reached"
    assert served.hub.servers == ["mb"] and served.hub.server_status("mb").restarts == 0


async def test_messages_name_the_field(served: Surface) -> None:
    async with served.client() as c:
        r = await c.post(
            "/api/servers", content=b'{"name": "x", "spec": {"command": "c", "args": ["\xff"]}}', headers=JSON
        )
        assert r.status_code == 400 and "UTF-8" in r.json()["detail"]
        r = await c.post("/api/servers", content=b'{"name": "x"', headers=JSON)
        assert (r.status_code, r.json()["error"]) == (422, "invalid_json")
        r = await c.post("/api/servers", content=b"x", headers={"content-type": "text/plain"})
        assert (r.status_code, r.json()["error"]) == (415, "unsupported_media_type")
        assert "application/json" in r.json()["detail"]
        r = await c.get("/api/servers/mb", params={"tail": "lots"})
        assert r.status_code == 422 and r.json()["field"] == "tail"
        assert r.json()["detail"].startswith("query parameter 'tail': ")
        r = await c.post("/api/tools/mb__echo/call", json={"arguments": [1]})
        assert r.status_code == 422 and r.json()["field"] == "arguments"
        r = await c.post("/api/servers", json={"name": "x", "spec": {"command": "c", "env": {"": "v"}}})
        body = r.json()
        assert (r.status_code, body["error"], body["server"], body["field"]) == (422, "config", "x", "env")


async def test_a_bug_answers_500_in_the_same_shape_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text('{"mcpServers": {}}')
    async with surface(config) as s:
        app = s.server.config.app

        @app.get("/api/boom")  # type: ignore[misc]
        async def boom() -> None:
            raise RuntimeError("a bug")

        async with s.client() as c:
            r = await c.get("/api/boom")
    assert r.status_code == 500
    assert ErrorBody.model_validate(r.json()).error == "internal_error"
    assert "a bug" not in r.text  # no internals in the answer, only in the log
    assert any(rec.exc_info and "a bug" in str(rec.exc_info[1]) for rec in caplog.records)


# --- slow clients ---------------------------------------------------------------------------------------


def _closed_before_headers(port: int, drip: bytes, every: float, deadline: float) -> tuple[bool, bytes]:
    """Send ``drip`` one byte per ``every`` seconds; (whether the server closed the connection before the
    last byte, whatever it answered)."""
    import socket
    import time

    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=deadline) as sock:
        sock.settimeout(every)
        end = time.monotonic() + deadline
        for byte in drip:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # reset: closed
                return True, answer
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue  # still open; the wait was the drip's pace
            except OSError:
                return True, answer
            if not chunk:
                return True, answer
            answer += chunk
            assert time.monotonic() < end, "not closed within the test's ceiling"
    return False, answer


def _silent_client_closed(port: int, deadline: float) -> bool:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=deadline) as sock:
        try:
            return sock.recv(1) == b""
        except ConnectionResetError:
            return True


@pytest.mark.parametrize("http", ["h11", "httptools"])  # each of uvicorn's parsers has its own guard
async def test_slow_request_headers_are_cut_off_and_normal_clients_are_not(tmp_path: Path, http: str) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"mb": bad()}}))
    async with surface(config, header_timeout=1.0, http=http) as s:
        from uvicorn.protocols.http.h11_impl import H11Protocol
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        parser = {"h11": H11Protocol, "httptools": HttpToolsProtocol}[http]
        assert isinstance(s.server.config.http, type) and issubclass(s.server.config.http, parser)
        # headers at 5 bytes a second: ~10 s to complete, far beyond the 1 s allowed
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 30 + b"\r\n\r\n"
        closed, answer = await asyncio.to_thread(_closed_before_headers, s.port, request, 0.2, 10.0)
        assert closed and answer == b"", answer  # closed, never answered
        # a client that connects and sends nothing is cut off too
        assert await asyncio.to_thread(_silent_client_closed, s.port, 10.0)
        async with s.client() as c:
            await wait_for(lambda: s.hub.server_status("mb").state == "ready", 30, "mb ready")
            # a call that outlasts the header deadline is not cut, nor the keep-alive connection after it
            r = await c.post("/api/tools/mb__sleep/call", json={"arguments": {"seconds": 1.5}})
            assert r.status_code == 200 and not r.json().get("isError"), r.text
            assert (await c.get("/healthz")).status_code == 200
            r = await c.post("/api/tools/mb__echo/call", json={"arguments": {"text": "x" * 100_000}})
            assert r.status_code == 200


# --- first listings are complete -------------------------------------------------------------------------


async def test_first_listings_wait_for_the_first_start_and_probes_do_not(tmp_path: Path) -> None:
    """A real ``patchbay serve`` whose server takes seconds to start: REST listings and the CLI's ``tools``
    asked meanwhile answer with its tools; /healthz and /readyz answer at once."""
    from tests.test_cli import clean_env, cli
    from tests.test_serve import start_serve, stop_serve

    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"slow": bad("--slow-start", "4", startTimeout=30)}}))
    served = await start_serve(config, ready=False)  # returns at the first /readyz answer
    try:
        async with served.http() as http:
            listings = {
                path: asyncio.create_task(http.get(path))
                for path in ("/api/tools", "/api/resources", "/api/resources/templates", "/api/prompts")
            }
            cli_tools = asyncio.create_task(
                asyncio.to_thread(
                    cli, "tools", "--json", cwd=tmp_path, env=clean_env(PATCHBAY_URL=served.base)
                )
            )
            ready = await http.get("/readyz")
            health = await http.get("/healthz")
            assert health.status_code == 200
            if ready.status_code == 503:  # the start is still in progress: the listings must be waiting
                assert ready.json()["servers"] == {"slow": "starting"}
                assert not any(t.done() for t in listings.values())
            tools = (await listings["/api/tools"]).json()
            assert {"slow__echo", "slow__add"} <= {t["name"] for t in tools}
            assert [r["uri"] for r in (await listings["/api/resources"]).json()] == ["test://hello"]
            assert (await listings["/api/resources/templates"]).json()
            assert (await listings["/api/prompts"]).json()
            result = await cli_tools
            assert result.code == 0, result
            assert "via hub at" in result.err and "slow__echo" in {t["name"] for t in result.json()}
            assert (await http.get("/readyz")).status_code == 200
    finally:
        await stop_serve(served)


# --- which paths need the token ---------------------------------------------------------------------------


async def test_the_dashboard_shell_is_open_and_holds_no_data_every_data_route_needs_the_token(
    tmp_path: Path,
) -> None:
    """The rule: only /healthz, /agents (its own tokens) and the dashboard's static shell (/ and
    /dashboard/…) answer without the hub's token. The shell is the same bytes for everyone, holds no data
    and asks for the token; everything with data is refused without it."""
    from patchbay.server.dashboard import STATIC_DIR

    secret_env = "zq-secret-env-value"
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"zqprivate": bad(env={"K": secret_env})}}))
    async with surface(config) as s, s.client() as c, s.client(token=None) as anonymous:
        await wait_for(lambda: s.hub.server_status("zqprivate").state == "ready", 30, "ready")
        private = ["zqprivate", secret_env, TOKEN, str(tmp_path), "misbehaving"]
        # the shell: every static file, anonymously, same bytes as with the token, nothing private in it
        files = [p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()]
        assert "index.html" in files
        for url in ["/", *(f"/dashboard/{f}" for f in files)]:
            r = await anonymous.get(url)
            assert r.status_code == 200, url
            assert r.content == (await c.get(url)).content, url
            for word in private:
                assert word not in r.text, (url, word)
        assert "token" in (await anonymous.get("/")).text.lower()  # the page asks for the token
        assert (await anonymous.get("/dashboard/../index.html")).status_code in (401, 404)
        # every other route refuses an anonymous request: all of the OpenAPI document and the rest
        doc = (await c.get("/openapi.json")).json()
        routes = [(m.upper(), p) for p, item in doc["paths"].items() for m in item]
        routes += [("GET", "/mcp"), ("POST", "/mcp"), ("DELETE", "/mcp"), ("GET", "/openapi.json")]
        routes += [("GET", "/docs"), ("GET", "/redoc"), ("GET", "/api/nope"), ("GET", "/dashboardx")]
        assert len(routes) > 20
        for method, path in routes:
            if path == "/healthz":
                continue
            url = path.replace("{name}", "zqprivate")
            r = await anonymous.request(method, url)
            assert r.status_code == 401, (method, url, r.status_code)
            assert r.json()["error"] == "unauthorized"
            assert not [word for word in private if word in r.text], (method, url)


# --- tasks with owners ----------------------------------------------------------------------------------


async def test_stopping_while_servers_start_leaves_no_task_and_no_process(tmp_path: Path) -> None:
    """The background start is cancelled and awaited on shutdown (conftest fails the test on any
    "exception was never retrieved"); its half-started server is stopped."""
    import psutil

    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"slow": bad("--slow-start", "60", startTimeout=120)}}))
    async with surface(config) as s:
        await wait_for(lambda: s.hub.server_status("slow").state == "starting", 30, "starting")
        await wait_for(lambda: bool(psutil.Process().children()), 30, "server spawned")
        children = psutil.Process().children(recursive=True)
    assert not psutil.wait_procs(children, timeout=10)[1]
    assert s.hub.server_status("slow").state in ("stopped", "disabled")
