"""``patchbay serve``'s ``/mcp`` driven by real third-party MCP clients, each a separate process.

- The MCP Inspector CLI (``@modelcontextprotocol/inspector``, Node; pinned in ``tests/npm/package.json``):
  lists, calls, errors, resources, prompts, a bearer token and a small load test, in both protocol eras.
- The official Python SDK 1.x (``mcp==1.30.0``, ``tests/requirements-sdk1.txt``) in its own venv
  ``tests/.venv-sdk1``, through ``tests/clients/sdk1_client.py``: the handshake era as an older client speaks
  it, and ``notifications/tools/list_changed`` when a server is added through the management API.

``make test`` installs both. Two hubs (one open, one behind a bearer token) are served once for the whole
module; the test that adds a server removes it again, and no test relies on the exact tool list.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import bad
from tests.test_serve import Served, start_serve, stop_serve
from tests.thirdparty import HINT, NPM_BIN

pytestmark = pytest.mark.asyncio(loop_scope="module")

HERE = Path(__file__).resolve().parent
INSPECTOR = NPM_BIN / "mcp-inspector"
SDK1_PYTHON = HERE / ".venv-sdk1" / "bin" / "python"
SDK1_CLIENT = HERE / "clients" / "sdk1_client.py"
TOKEN = "client-tests-t0ken"
MB_TOOLS = {"mb__echo", "mb__add", "mb__sleep", "mb__fail", "mb__crash", "mb__set_tools"}
SERVER_INFO = "io.modelcontextprotocol/serverInfo"  # the stamp on every result of the modern era

needs_inspector = pytest.mark.skipif(
    not INSPECTOR.exists(), reason=f"MCP Inspector not installed ({INSPECTOR} missing): {HINT}"
)
needs_sdk1 = pytest.mark.skipif(
    not SDK1_PYTHON.exists(), reason=f"MCP Python SDK 1.x venv not installed ({SDK1_PYTHON} missing): {HINT}"
)


async def serve(tmp: Path, token: str) -> Served:
    config = tmp / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"mb": bad()}}, indent=2))
    # An empty PATCHBAY_TOKEN means no token, whatever the environment the tests run in has.
    return await start_serve(config, env={"PATCHBAY_TOKEN": token}, token=token or None)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def hubs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Served, Served]]:
    """An open hub and one behind a bearer token, started side by side."""
    started = await asyncio.gather(
        serve(tmp_path_factory.mktemp("open-hub"), ""),
        serve(tmp_path_factory.mktemp("token-hub"), TOKEN),
        return_exceptions=True,
    )
    try:
        open_hub, token_hub = started
        for s in started:
            if isinstance(s, BaseException):
                raise s
        yield open_hub, token_hub  # type: ignore[misc]
    finally:
        served = [s for s in started if isinstance(s, Served)]
        await asyncio.gather(*(stop_serve(s) for s in served))
    # Whatever the clients did, the hubs logged no crash.
    for s in served:
        stderr = (await s.proc.stderr.read()).decode()  # type: ignore[union-attr]
        assert "Traceback" not in stderr, stderr


@pytest.fixture(scope="module")
def hub(hubs: tuple[Served, Served]) -> Served:
    return hubs[0]


@pytest.fixture(scope="module")
def token_hub(hubs: tuple[Served, Served]) -> Served:
    return hubs[1]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The inspector writes ~/.mcp-inspector: give it a HOME of its own."""
    return tmp_path_factory.mktemp("inspector-home")


class Run:
    def __init__(self, rc: int, stdout: str, stderr: str) -> None:
        self.rc, self.stdout, self.stderr = rc, stdout, stderr

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error(self) -> dict[str, Any]:
        """The inspector's error envelope, which it writes to stderr as one JSON object."""
        return json.loads(self.stderr.strip().splitlines()[-1])["error"]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"rc={self.rc}\nstdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}"


async def run(*argv: str | Path, env: dict[str, str] | None = None, timeout: float = 30) -> Run:
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv),
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def inspector(url: str, home: Path, *args: str, era: str = "legacy", token: str | None = None) -> Run:
    auth = ["--header", f"Authorization: Bearer {token}"] if token else []
    # --stored-auth-only: on a 401 fail at once with auth_required, never start an interactive OAuth flow.
    return await run(
        INSPECTOR, "--cli", url, *args, *auth, "--protocol-era", era, "--format", "json", "-q",
        "--stored-auth-only",
        env={"HOME": str(home), "MCP_AUTO_OPEN_ENABLED": "false"},
    )  # fmt: skip


def add_args(a: int, b: int) -> list[str]:
    return [
        "--method",
        "tools/call",
        "--tool-name",
        "mb__add",
        "--tool-args-json",
        json.dumps({"a": a, "b": b}),
    ]


# --- MCP Inspector CLI --------------------------------------------------------------------------------------


@needs_inspector
async def test_inspector_lists_the_tools_in_both_eras(hub: Served, home: Path) -> None:
    runs = await asyncio.gather(
        *(inspector(hub.mcp, home, "--method", "tools/list", era=era) for era in ("legacy", "modern"))
    )
    for r in runs:
        assert r.rc == 0, r
        tools = {t["name"]: t for t in r.json()["result"]["tools"]}
        assert set(tools) >= MB_TOOLS, r
        assert tools["mb__add"]["description"] == "Add two numbers."
        assert tools["mb__add"]["inputSchema"]["required"] == ["a", "b"]
        assert tools["mb__add"]["outputSchema"]["properties"] == {"result": {"type": "number"}}


@needs_inspector
async def test_inspector_calls_a_tool_in_every_era(hub: Served, home: Path) -> None:
    eras = ("legacy", "auto", "modern")
    runs = await asyncio.gather(*(inspector(hub.mcp, home, *add_args(1, 2), era=era) for era in eras))
    for era, r in zip(eras, runs, strict=True):
        assert r.rc == 0, r
        result = r.json()["result"]
        assert result["content"] == [{"type": "text", "text": "3"}], r
        assert result["structuredContent"] == {"result": 3}
        assert result["isError"] is False
        # Only the modern era (2026-07-28, no handshake) stamps serverInfo on results: proof of the era.
        stamp = result.get("_meta", {}).get(SERVER_INFO)
        if era == "legacy":
            assert stamp is None, r
        else:
            assert stamp == {"name": "patchbay", "version": stamp["version"]}, r


@needs_inspector
async def test_inspector_sees_tool_errors_and_unknown_tools(hub: Served, home: Path) -> None:
    failed, unknown = await asyncio.gather(
        inspector(hub.mcp, home, "--method", "tools/call", "--tool-name", "mb__fail", era="modern"),
        inspector(hub.mcp, home, "--method", "tools/call", "--tool-name", "mb__nope", era="legacy"),
    )
    assert failed.rc == 5, failed
    assert failed.json()["result"]["isError"] is True
    assert failed.json()["result"]["content"] == [{"type": "text", "text": "tool failed on purpose"}]
    assert failed.error()["code"] == "tool_is_error"
    assert unknown.rc != 0, unknown
    assert unknown.error()["code"] == "tool_not_found", unknown


@needs_inspector
async def test_inspector_reads_resources_and_prompts(hub: Served, home: Path) -> None:
    listed, read, prompt = await asyncio.gather(
        inspector(hub.mcp, home, "--method", "resources/list"),
        inspector(hub.mcp, home, "--method", "resources/read", "--uri", "test://hello", era="modern"),
        inspector(
            hub.mcp,
            home,
            "--method",
            "prompts/get",
            "--prompt-name",
            "mb__greet",
            "--prompt-args",
            "name=Ada",
        ),
    )
    for r in (listed, read, prompt):
        assert r.rc == 0, r
    assert [x["uri"] for x in listed.json()["result"]["resources"]] == ["test://hello"]
    assert read.json()["result"]["contents"][0]["text"] == "hello"
    assert prompt.json()["result"]["messages"][0]["content"] == {"type": "text", "text": "Hello, Ada!"}


@needs_inspector
async def test_inspector_load_test_has_no_errors(hub: Served, home: Path) -> None:
    # The inspector's own load generator: 60 calls, 5 at a time, in each era (two runs at once).
    calls = 60
    load = ["--method", "tools/call", "--tool-name", "mb__echo", "--tool-args-json", '{"text": "load"}']
    load += ["--load", "--load-requests", str(calls), "--load-concurrency", "5"]
    runs = await asyncio.gather(*(inspector(hub.mcp, home, *load, era=era) for era in ("legacy", "modern")))
    for r in runs:
        assert r.rc == 0, r
        summary = r.json()["result"]
        counts = (summary["requests"], summary["ok"], summary["errors"], summary["toolErrors"])
        assert counts == (calls, calls, 0, 0), r
        assert summary["errorMessages"] == []


@needs_inspector
async def test_inspector_with_a_bearer_token(token_hub: Served, home: Path) -> None:
    legacy, modern, *refused = await asyncio.gather(
        inspector(token_hub.mcp, home, *add_args(20, 22), era="legacy", token=TOKEN),
        inspector(token_hub.mcp, home, *add_args(20, 22), era="modern", token=TOKEN),
        inspector(token_hub.mcp, home, "--method", "tools/list"),
        inspector(token_hub.mcp, home, "--method", "tools/list", token="wrong"),
        inspector(token_hub.mcp, home, "--method", "tools/list", era="modern", token="wrong"),
    )
    for r in (legacy, modern):
        assert r.rc == 0, r
        assert r.json()["result"]["structuredContent"] == {"result": 42}
    # The legacy era shows patchbay's own 401 body; the modern one only the status.
    for r, detail in zip(refused, ("missing bearer token", "invalid bearer token", "HTTP 401"), strict=True):
        assert r.rc != 0 and r.stdout == "", r
        assert r.error()["code"] == "auth_required", r
        assert detail in r.error()["message"], r


# --- official Python SDK 1.x --------------------------------------------------------------------------------


async def sdk1(*args: str) -> Run:
    return await run(SDK1_PYTHON, SDK1_CLIENT, *args)


@needs_sdk1
async def test_sdk1_client_initializes_lists_and_calls(hub: Served, token_hub: Served) -> None:
    plain, with_token, without_token = await asyncio.gather(
        sdk1("call", hub.mcp), sdk1("call", token_hub.mcp, "--token", TOKEN), sdk1("call", token_hub.mcp)
    )
    for r in (plain, with_token):
        assert r.rc == 0, r
        out = r.json()
        assert out["sdk"] == "1.30.0"
        assert out["protocol_version"] == "2025-11-25"  # the newest handshake version SDK 1.x knows
        assert out["server_name"] == "patchbay"
        assert out["list_changed"] is True
        assert out["session_id"], "a stateful streamable-HTTP session"
        assert set(out["tools"]) >= MB_TOOLS
        assert out["add"] == {"text": "3", "structured": {"result": 3}} and out["add_is_error"] is False
        assert out["echo"] == "from sdk1"
        assert out["fail"] == {"text": "tool failed on purpose", "is_error": True}
    assert without_token.rc != 0 and "401 Unauthorized" in without_token.stderr, without_token


@needs_sdk1
async def test_sdk1_client_is_told_when_a_server_is_added(hub: Served) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(SDK1_PYTHON), str(SDK1_CLIENT), "watch", hub.mcp, "--timeout", "15",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20) or b"null")
        assert ready is not None, (await proc.stderr.read()).decode()
        assert set(ready["ready"]) >= MB_TOOLS and not any(n.startswith("added__") for n in ready["ready"])
        # The SDK opens its GET stream (where server notifications arrive) in the background after initialize.
        await asyncio.sleep(0.3)
        async with hub.http() as http:
            r = await http.post("/api/servers", json={"name": "added", "spec": bad()})
            assert r.status_code == 201 and r.json()["state"] == "ready", r.text
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), 20)
                changed = json.loads(line or b"null")
                assert changed is not None and "list_changed" in changed, (
                    line,
                    (await proc.stderr.read()).decode(),
                )
                assert {"added__echo", "added__add", "mb__echo"} <= set(changed["list_changed"])
                assert await asyncio.wait_for(proc.wait(), 10) == 0
            finally:
                assert (await http.delete("/api/servers/added")).status_code == 204
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
