"""``patchbay serve`` end to end: a real process on a real port, driven by the official SDK clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import mcp.types as types
import psutil
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests import thirdparty
from tests.conftest import bad, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    base: str
    config: Path
    token: str | None = None

    @property
    def mcp(self) -> str:
        return f"{self.base}/mcp"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url=self.base, headers=self.headers(), timeout=10)


async def start_serve(
    config: Path, *extra: str, env: dict[str, str] | None = None, token: str | None = None, ready: bool = True
) -> Served:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchbay", "serve", "--config", str(config), "--port", str(port), *extra,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    served = Served(proc, f"http://127.0.0.1:{port}", config, token)
    async with served.http() as http:
        for _ in range(300):
            if proc.returncode is not None:
                raise RuntimeError(f"patchbay serve exited: {(await proc.stderr.read()).decode()}")  # type: ignore[union-attr]
            try:
                r = await http.get("/readyz")
                if r.status_code == 200 or (not ready and r.status_code == 503):
                    return served
            except httpx2.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("patchbay serve did not become ready")


async def stop_serve(served: Served) -> int:
    if served.proc.returncode is None:
        served.proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(served.proc.wait(), 15)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"mb": bad("--log-before-response")}}, indent=2))
    s = await start_serve(config)
    yield s
    await stop_serve(s)


def text(result: types.CallToolResult) -> str:
    return result.content[0].text  # type: ignore[union-attr]


async def test_handshake_era_client_lists_calls_and_gets_progress(served: Served) -> None:
    async with streamable_http_client(served.mcp) as (r, w), ClientSession(r, w) as session:
        init = await session.initialize()
        assert init.protocol_version == "2025-11-25"
        assert init.server_info.name == "patchbay"
        assert init.capabilities.tools is not None and init.capabilities.tools.list_changed
        names = {t.name for t in (await session.list_tools()).tools}
        assert {"mb__echo", "mb__add", "mb__sleep"} <= names
        assert (await session.call_tool("mb__add", {"a": 2, "b": 3})).structured_content == {"result": 5}
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        result = await session.call_tool("mb__sleep", {"seconds": 0.5}, progress_callback=on_progress)
        assert not result.is_error
        await wait_for(lambda: len(seen) >= 2, 2)
        results = await asyncio.gather(*(session.call_tool("mb__echo", {"text": str(i)}) for i in range(30)))
        assert [text(x) for x in results] == [str(i) for i in range(30)]
        resources = await session.list_resources()
        assert [str(x.uri) for x in resources.resources] == ["test://hello"]
        assert (await session.read_resource("test://hello")).contents[0].text == "hello"  # type: ignore[union-attr]
        prompt = await session.get_prompt("mb__greet", {"name": "Ada"})
        assert prompt.messages[0].content.text == "Hello, Ada!"  # type: ignore[union-attr]


async def test_modern_client_lists_and_calls(served: Served) -> None:
    async with Client(served.mcp) as client:  # mode="auto": server/discover → 2026-07-28, no handshake
        names = {t.name for t in (await client.list_tools()).tools}
        assert "mb__echo" in names
        assert text(await client.call_tool("mb__echo", {"text": "modern"})) == "modern"


async def test_errors_reach_the_client_with_the_server_named(served: Served) -> None:
    async with streamable_http_client(served.mcp) as (r, w), ClientSession(r, w) as session:
        await session.initialize()
        with pytest.raises(MCPError, match="unknown tool 'mb__ech'; did you mean 'mb__echo'"):
            await session.call_tool("mb__ech", {})
        failed = await session.call_tool("mb__fail", {})
        assert failed.is_error and "on purpose" in text(failed)
        upstream = await session.call_tool("mb__rpc_error", {})
        assert upstream.is_error and "server 'mb' returned error -32050" in text(upstream)
        crashed = await session.call_tool("mb__crash", {"code": 5})
        assert crashed.is_error and "server 'mb' exited with status 5" in text(crashed)
        # the session survives all of it
        for _ in range(100):
            if "mb__echo" in {t.name for t in (await session.list_tools()).tools}:
                break
            await asyncio.sleep(0.1)
        assert text(await session.call_tool("mb__echo", {"text": "still here"})) == "still here"


async def test_client_cancellation_reaches_the_upstream(served: Served) -> None:
    async with streamable_http_client(served.mcp) as (r, w), ClientSession(r, w) as session:
        await session.initialize()
        with pytest.raises(MCPError):
            await session.call_tool("mb__sleep", {"seconds": 10}, read_timeout_seconds=0.5)
    async with served.http() as http:

        async def cancelled() -> bool:
            tail = (await http.get("/api/servers/mb")).json()["stderr_tail"]
            return any(line.startswith("CANCELLED") for line in tail)

        for _ in range(50):
            if await cancelled():
                break
            await asyncio.sleep(0.1)
        assert await cancelled()


async def test_catalog_changes_reach_both_kinds_of_client(served: Served) -> None:
    legacy_seen: list[str] = []

    async def on_message(msg: Any) -> None:
        legacy_seen.append(type(msg).__name__)

    async with (
        streamable_http_client(served.mcp) as (r, w),
        ClientSession(r, w, message_handler=on_message) as session,
        Client(served.mcp) as modern,
    ):
        await session.initialize()
        modern_seen: list[Any] = []

        async def listen() -> None:
            async with modern.listen(tools_list_changed=True) as sub:
                async for event in sub:
                    modern_seen.append(event)

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.3)
        # Edit the config file by hand, as a user would: the hub reloads it and starts the new server.
        doc = json.loads(served.config.read_text())
        doc["mcpServers"]["two"] = bad()
        served.config.write_text(json.dumps(doc, indent=2))
        await wait_for(lambda: "ToolListChangedNotification" in legacy_seen and bool(modern_seen), 10)
        names = {t.name for t in (await session.list_tools()).tools}
        assert "two__echo" in names
        assert text(await session.call_tool("two__echo", {"text": "new"})) == "new"
        listener.cancel()


async def test_an_invalid_config_edit_is_ignored_and_the_file_kept(served: Served) -> None:
    served.config.write_text('{"mcpServers": {"mb": {"command": }}}')
    await asyncio.sleep(2.5)  # the watcher polls once a second
    assert served.config.read_text() == '{"mcpServers": {"mb": {"command": }}}'
    async with Client(served.mcp) as client:
        assert text(await client.call_tool("mb__echo", {"text": "alive"})) == "alive"


async def test_log_messages_reach_clients_at_their_level(served: Served) -> None:
    logs: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with (
        streamable_http_client(served.mcp) as (r, w),
        ClientSession(r, w, logging_callback=on_log) as session,
    ):
        await session.initialize()
        await session.call_tool("mb__echo", {"text": "before"})
        await asyncio.sleep(0.3)
        assert logs == []  # nothing until the client asks
        with pytest.warns(Warning):
            await session.set_logging_level("info")
        await session.call_tool("mb__echo", {"text": "x"})
        await wait_for(lambda: bool(logs), 3)
        assert logs[0].logger == "mb/misbehaving" and "about to answer" in str(logs[0].data)
        with pytest.warns(Warning):
            await session.set_logging_level("error")
        count = len(logs)
        await session.call_tool("mb__echo", {"text": "y"})
        await asyncio.sleep(0.3)
        assert len(logs) == count  # info is below error


async def test_sampling_request_is_routed_to_the_calling_client(tmp_path: Path) -> None:
    thirdparty.require("everything")
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"everything": thirdparty.everything()}}))
    served = await start_serve(config)
    asked: list[Any] = []

    async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled by the client"),
            model="test",
        )

    try:
        async with (
            streamable_http_client(served.mcp) as (r, w),
            ClientSession(r, w, sampling_callback=sampling) as session,
        ):
            await session.initialize()
            result = await session.call_tool("everything__trigger-sampling-request", {"prompt": "hello"})
            assert not result.is_error, result
            assert "sampled by the client" in json.dumps(result.model_dump(mode="json"))
            assert "hello" in str(asked[0].messages[0].content)
    finally:
        await stop_serve(served)


async def test_host_and_origin_are_checked(served: Served) -> None:
    async with served.http() as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        evil = await http.post("/mcp", json=body, headers={"Host": "evil.example:8765"})
        assert evil.status_code == 421
        api = await http.post(
            "/api/servers", json={"name": "x", "spec": bad()}, headers={"Host": "evil.example"}
        )
        assert api.status_code == 421  # the management API too: it can start commands
        origin = await http.get("/api/servers", headers={"Origin": "http://evil.example"})
        assert origin.status_code == 403
        ok = await http.get("/api/servers", headers={"Origin": served.base})
        assert ok.status_code == 200


async def test_bearer_token_protects_everything_but_healthz(tmp_path: Path) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"mb": bad()}, "auth": {"tokens": ["${PB_TEST_TOKEN}"]}}))
    served = await start_serve(config, env={"PB_TEST_TOKEN": "t0ken-from-config"}, token="t0ken-from-config")
    try:
        async with httpx2.AsyncClient(base_url=served.base, timeout=10) as anon:
            assert (await anon.get("/healthz")).status_code == 200
            for path in ("/api/servers", "/readyz", "/metrics"):
                r = await anon.get(path)
                assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            wrong = await anon.get("/api/servers", headers={"Authorization": "Bearer wrong"})
            assert wrong.status_code == 401
            assert wrong.json() == {"detail": "invalid bearer token", "error": "unauthorized"}
            unauth = await anon.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert unauth.status_code == 401
        http = httpx2.AsyncClient(headers=served.headers(), timeout=30)
        async with streamable_http_client(served.mcp, http_client=http) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            assert text(await s.call_tool("mb__echo", {"text": "authorised"})) == "authorised"
        await http.aclose()
    finally:
        await stop_serve(served)
    stderr = (await served.proc.stderr.read()).decode()  # type: ignore[union-attr]
    assert "t0ken-from-config" not in stderr


async def test_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {}}))
    env = {k: v for k, v in os.environ.items() if k != "PATCHBAY_TOKEN"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchbay", "serve", "--config", str(config), "--host", "0.0.0.0",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a bearer token" in err.decode()


async def test_sigterm_stops_everything_cleanly(served: Served) -> None:
    children = psutil.Process(served.proc.pid).children(recursive=True)
    assert children
    # uvicorn shuts down gracefully, then re-raises SIGTERM: "terminated by SIGTERM" is the convention
    assert await stop_serve(served) in (0, -signal.SIGTERM)
    await wait_for(
        lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children), 5
    )
    stderr = (await served.proc.stderr.read()).decode()  # type: ignore[union-attr]
    assert "Traceback" not in stderr
