"""The audit log: settings with errors naming the field, what each record holds (calls, reads, prompts,
changes, API requests, refusals), digests instead of arguments, secrets never written, rotation, and
reading it back through ``GET /api/audit`` (admin only) and ``patchbay audit tail`` (file and hub, with
``-f``). Against real upstream processes, a real uvicorn socket, real SDK clients and real CLI processes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import mcp.types as types
import pytest
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from patchbay import ConfigError, Hub
from patchbay.audit import (
    ACTING,
    AuditLog,
    AuditQuery,
    AuditSettings,
    audit_files,
    digest,
    parse_audit,
    read_records,
)
from patchbay.identity import Identity
from patchbay.server.app import ServeSettings, create_app
from tests.conftest import bad, wait_for
from tests.test_serve import start_serve, stop_serve

ADMIN_TOKEN = "audit-admin-t0ken-for-tests"
VIEWER_TOKEN = "audit-viewer-t0ken-for-tests"
SECRET_ARG = "sk-live-argument-secret-123"
CI = Identity("ci", "user", kind="token")


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- settings -------------------------------------------------------------------------------------------


def test_the_log_is_on_by_default_beside_the_config(tmp_path: Path) -> None:
    settings = parse_audit({}, tmp_path / "hub.json")
    assert settings == AuditSettings(tmp_path / "hub.audit.jsonl", 10 * 1024 * 1024, 5, False)
    assert parse_audit({"audit": False}, tmp_path / "hub.json") is None
    assert parse_audit({"audit": {"enabled": False}}, tmp_path / "hub.json") is None
    assert parse_audit({}, None) is None  # Hub.from_dict: only with a path
    custom = parse_audit(
        {"audit": {"path": "logs/a.jsonl", "maxBytes": 5000, "backups": 2}}, tmp_path / "x.json"
    )
    assert custom == AuditSettings(tmp_path / "logs" / "a.jsonl", 5000, 2, False)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("yes", "audit"),
        ({"maxBytes": 10}, "audit.maxBytes"),
        ({"maxBytes": "big"}, "audit.maxBytes"),
        ({"backups": -1}, "audit.backups"),
        ({"arguments": "yes"}, "audit.arguments"),
        ({"path": ""}, "audit.path"),
        ({"rotate": True}, "audit.rotate"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, raw: Any, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_audit({"audit": raw}, tmp_path / "p.json")
    assert err.value.field == field and field in str(err.value)


def test_config_check_reports_bad_audit_and_rate_limit_settings(tmp_path: Path) -> None:
    from patchbay.cli.check import check_config

    path = tmp_path / "p.json"
    path.write_text(json.dumps({"mcpServers": {}, "audit": {"maxBytes": 1}, "rateLimits": {"default": "x"}}))
    report = check_config(path)
    assert not report["valid"]
    assert {e["field"] for e in report["errors"]} == {"audit.maxBytes", "rateLimits.default"}


# --- what is recorded -----------------------------------------------------------------------------------


async def test_calls_reads_prompts_and_changes_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "patchbay.json"
    path.write_text(json.dumps({"mcpServers": {"mb": bad()}}))
    args = {"text": "hi", "token": SECRET_ARG}
    async with Hub.from_file(path) as hub:
        assert hub.audit.active
        await hub.call_tool("mb__echo", args, caller=CI)
        await hub.call_tool("mb__fail", {}, caller=CI)
        with pytest.raises(Exception, match="unknown tool"):
            await hub.call_tool("mb__nope", {})
        await hub.read_resource("test://hello", caller=CI)
        await hub.get_prompt("mb__greet", {"name": "Ada"}, caller=CI)
        admin = Identity("ops", "admin")
        reset = ACTING.set(admin)
        try:
            await hub.set_enabled("mb", False)
        finally:
            ACTING.reset(reset)
        assert await hub.audit.aflush()
        log = records(tmp_path / "patchbay.audit.jsonl")
    echo, fail, unknown, read, prompt, change = log
    assert echo["event"] == "tool_call" and echo["tool"] == "mb__echo" and echo["server"] == "mb"
    assert (echo["identity"], echo["role"], echo["kind"]) == ("ci", "user", "token")
    assert echo["outcome"] == "ok" and echo["duration_ms"] > 0 and echo["surface"] == "python"
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":")).encode()
    assert echo["arguments_sha256"] == hashlib.sha256(canonical).hexdigest() == digest(args)
    assert "arguments" not in echo
    assert fail["outcome"] == "tool_error"
    assert (
        unknown["outcome"] == "unknown_tool" and unknown["identity"] == "local" and unknown["server"] is None
    )
    assert read["event"] == "resource_read" and read["target"] == "test://hello" and read["outcome"] == "ok"
    assert prompt["event"] == "prompt_get" and prompt["target"] == "mb__greet" and prompt["server"] == "mb"
    assert change["event"] == "change" and change["action"] == "server.set_enabled"
    assert (change["identity"], change["target"], change["enabled"], change["outcome"]) == (
        "ops",
        "mb",
        False,
        "ok",
    )
    assert [r["seq"] for r in log] == list(range(1, 7))
    text = (tmp_path / "patchbay.audit.jsonl").read_text()
    assert SECRET_ARG not in text  # only digested
    assert (tmp_path / "patchbay.audit.jsonl").stat().st_mode & 0o777 == 0o600


async def test_arguments_are_written_only_when_asked_and_secrets_never(tmp_path: Path) -> None:
    path = tmp_path / "patchbay.json"
    path.write_text(json.dumps({"mcpServers": {"mb": bad()}, "audit": {"arguments": True}}))
    async with Hub.from_file(path) as hub:
        await hub.call_tool("mb__echo", {"text": "hi", "apiKey": SECRET_ARG, "nested": [{"password": "p"}]})
        await hub.audit.aflush()
    (record,) = records(tmp_path / "patchbay.audit.jsonl")
    assert record["arguments"] == {"text": "hi", "apiKey": "***", "nested": [{"password": "***"}]}
    assert SECRET_ARG not in (tmp_path / "patchbay.audit.jsonl").read_text()


async def test_a_failed_change_is_recorded_with_its_kind(tmp_path: Path) -> None:
    path = tmp_path / "patchbay.json"
    path.write_text(json.dumps({"mcpServers": {}}))
    async with Hub.from_file(path) as hub:
        with pytest.raises(ConfigError):
            await hub.add_server("bad name!", {"command": "x"})
        await hub.add_agent("laptop", "a-long-agent-token-1234")
        await hub.audit.aflush()
    failed, agent = records(tmp_path / "patchbay.audit.jsonl")
    assert (failed["action"], failed["outcome"]) == ("server.add", "config")
    assert (agent["action"], agent["target"], agent["outcome"]) == ("agent.add", "laptop", "ok")
    assert "a-long-agent-token-1234" not in (tmp_path / "patchbay.audit.jsonl").read_text()


async def test_settings_follow_a_reload_and_a_restarted_hub_keeps_logging(tmp_path: Path) -> None:
    from patchbay.config import load_config

    path = tmp_path / "patchbay.json"
    log = tmp_path / "patchbay.audit.jsonl"
    path.write_text(json.dumps({"mcpServers": {"mb": bad()}}))
    hub = Hub.from_file(path)
    async with hub:
        await hub.call_tool("mb__echo", {"text": "one"})
        path.write_text(json.dumps({"mcpServers": {"mb": bad()}, "audit": {"arguments": True}}))
        await hub.apply_config(load_config(path))
        await hub.call_tool("mb__echo", {"text": "two"})
        path.write_text(json.dumps({"mcpServers": {"mb": bad()}, "audit": {"maxBytes": 0}}))
        with pytest.raises(ConfigError, match=r"audit\.maxBytes"):
            await hub.apply_config(load_config(path))  # refused whole: the log keeps going
        await hub.call_tool("mb__echo", {"text": "three"})
    async with hub:  # started again after close
        await hub.call_tool("mb__echo", {"text": "four"})
        path.write_text(json.dumps({"mcpServers": {"mb": bad()}, "audit": False}))
        await hub.apply_config(load_config(path))
        await hub.call_tool("mb__echo", {"text": "not logged"})
    calls = [r for r in records(log) if r["event"] == "tool_call"]
    assert [r.get("arguments") for r in calls] == [None, {"text": "two"}, {"text": "three"}, {"text": "four"}]
    reloads = [(r["action"], r["outcome"]) for r in records(log) if r["event"] == "change"]
    assert reloads == [("config.reload", "ok"), ("config.reload", "config"), ("config.reload", "ok")]


async def test_the_log_rotates_by_size_and_reads_across_the_files(tmp_path: Path) -> None:
    settings = AuditSettings(tmp_path / "a.jsonl", max_bytes=4096, backups=2)
    log = AuditLog(settings)
    try:
        for i in range(120):  # ~330 bytes each: several rotations
            log.call("tool_call", CI, None, f"s__t{i}", "s", 1_764_000_000.0 + i, 0.001, "ok", {"i": i})
            if i % 10 == 9:
                assert log.flush()
    finally:
        log.close()
    files = audit_files(settings)
    assert all(f.exists() for f in files) and not (tmp_path / "a.jsonl.3").exists()
    assert all(f.stat().st_size <= 4096 for f in files)
    kept = read_records(files, AuditQuery(limit=10_000))
    tools = [r["tool"] for r in kept]
    assert tools == [f"s__t{i}" for i in range(120 - len(tools), 120)]  # the newest, in order, no gaps
    assert read_records(files, AuditQuery(tool="s__t119"))[0]["arguments_sha256"] == digest({"i": 119})
    since = read_records(files, AuditQuery(since=1_764_000_000.0 + 115.5))  # records carry their end
    assert [r["tool"] for r in since] == [f"s__t{i}" for i in range(116, 120)]
    assert [r["tool"] for r in read_records(files, AuditQuery(limit=2))] == ["s__t118", "s__t119"]


async def test_an_unwritable_log_never_fails_a_call(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = {"mcpServers": {"mb": bad()}, "audit": {"path": str(blocker / "sub" / "a.jsonl")}}
    async with Hub.from_dict(config) as hub:
        assert not (await hub.call_tool("mb__echo", {"text": "x"})).is_error
        assert await hub.audit.aflush()
    assert "audit: cannot write" in caplog.text


# --- over HTTP: /mcp, REST, refusals, GET /api/audit ----------------------------------------------------


@dataclass
class App:
    hub: Hub
    base: str
    log: Path

    def client(self, token: str | None = ADMIN_TOKEN, **kwargs: Any) -> httpx2.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx2.AsyncClient(base_url=self.base, headers=headers, timeout=20, **kwargs)


@contextlib.asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[App]:
    path = tmp_path / "patchbay.json"
    path.write_text(json.dumps({"mcpServers": {"mb": bad()}}))
    hub = Hub.from_file(path)
    tokens: list[Any] = [ADMIN_TOKEN, (VIEWER_TOKEN, Identity("watcher", "viewer"))]
    app = create_app(hub, ServeSettings(tokens=tokens, watch_config=False))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), what="uvicorn start")
        assert server.started, task.exception() if task.done() else "not started"
        port = server.servers[0].sockets[0].getsockname()[1]
        served = App(hub, f"http://127.0.0.1:{port}", tmp_path / "patchbay.audit.jsonl")
        async with served.client() as http:
            await wait_for_ready(http)
        yield served
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def wait_for_ready(http: httpx2.AsyncClient) -> None:
    async with asyncio.timeout(30):
        while (await http.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.05)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with serving(tmp_path) as served:
        yield served


async def test_mcp_and_rest_calls_name_the_client_and_tokens_never_appear(app: App) -> None:
    async with app.client() as http:
        async with (
            streamable_http_client(f"{app.base}/mcp", http_client=http) as (r, w),
            ClientSession(
                r, w, client_info=types.Implementation(name="audit-probe", version="4.2")
            ) as session,
        ):
            await session.initialize()
            assert not (await session.call_tool("mb__echo", {"text": SECRET_ARG})).is_error  # fast path
            assert (await session.read_resource("test://hello")).contents  # the SDK path
        r = await http.post(
            "/api/tools/mb__add/call",
            json={"arguments": {"a": 1, "b": 2}},
            headers={"User-Agent": "curl/8.5"},
        )
        assert r.status_code == 200
        r = await http.get("/api/audit", params={"event": "tool_call"})
        assert r.status_code == 200
        mcp_call, rest_call = r.json()
    assert mcp_call["client"] == {"name": "audit-probe", "version": "4.2"} and mcp_call["surface"] == "mcp"
    assert (mcp_call["identity"], mcp_call["role"]) == ("token-1", "admin")
    assert rest_call["client"] == {"name": "curl", "version": "8.5"} and rest_call["surface"] == "rest"
    assert rest_call["tool"] == "mb__add" and rest_call["outcome"] == "ok"
    await app.hub.audit.aflush()
    read = [x for x in records(app.log) if x["event"] == "resource_read"]
    assert read[0]["client"] == {"name": "audit-probe", "version": "4.2"}
    text = app.log.read_text()
    assert ADMIN_TOKEN not in text and SECRET_ARG not in text


async def test_refusals_and_changes_are_recorded_under_the_gates_identity(app: App) -> None:
    async with app.client(token="wrong-token") as bad_client:
        assert (await bad_client.get("/api/servers")).status_code == 401
    async with app.client(token=None) as anonymous:
        assert (await anonymous.post("/api/servers", json={})).status_code == 401
    async with app.client() as http:
        r = await http.post("/api/servers/mb/disable")
        assert r.status_code == 200
        r = await http.post("/api/servers", json={"name": "bad name!", "spec": {"command": "x"}})
        assert r.status_code == 422
        r = await http.get("/api/audit", params={"limit": "1000"})
    log = r.json()
    refused = [x for x in log if x["event"] == "refused"]
    assert [(x["method"], x["path"], x["status"]) for x in refused] == [
        ("GET", "/api/servers", 401),
        ("POST", "/api/servers", 401),
    ]
    assert refused[0]["detail"] == "invalid bearer token" and refused[0]["address"] == "127.0.0.1"
    changes = [(x["action"], x["target"], x["identity"], x["outcome"]) for x in log if x["event"] == "change"]
    assert changes == [
        ("server.set_enabled", "mb", "token-1", "ok"),
        ("server.add", "bad name!", "token-1", "config"),
    ]
    api = [(x["method"], x["path"], x["status"], x["identity"]) for x in log if x["event"] == "api"]
    assert api == [
        ("POST", "/api/servers/mb/disable", 200, "token-1"),
        ("POST", "/api/servers", 422, "token-1"),
    ]
    text = app.log.read_text()
    assert "wrong-token" not in text and ADMIN_TOKEN not in text


async def test_get_audit_filters_and_is_for_admins_only(app: App) -> None:
    async with app.client() as http:
        for text in ("a", "b"):
            await http.post("/api/tools/mb__echo/call", json={"arguments": {"text": text}})
        await http.post("/api/tools/mb__fail/call", json={})
        await http.post("/api/tools/mb__nope/call", json={})
        r = await http.get("/api/audit", params={"tool": "mb__echo"})
        assert [x["tool"] for x in r.json()] == ["mb__echo", "mb__echo"]
        r = await http.get("/api/audit", params={"outcome": "tool_error"})
        assert [x["tool"] for x in r.json()] == ["mb__fail"]
        r = await http.get("/api/audit", params={"outcome": "unknown_tool", "identity": "token-1"})
        assert [x["tool"] for x in r.json()] == ["mb__nope"]
        r = await http.get("/api/audit", params={"event": "tool_call", "limit": "1"})
        assert [x["tool"] for x in r.json()] == ["mb__nope"]
        r = await http.get(
            "/api/audit", params={"event": "tool_call", "since": "1h", "until": "2999-01-01T00:00:00Z"}
        )
        assert len(r.json()) == 4
        assert (await http.get("/api/audit", params={"since": "2999-01-01"})).json() == []
        r = await http.get("/api/audit", params={"since": "yesterday"})
        assert r.status_code == 422 and "since" in r.json()["detail"] and r.json()["field"] == "since"
        r = await http.get("/api/audit", params={"limit": "0"})
        assert r.status_code == 422
    async with app.client(token=VIEWER_TOKEN) as viewer:
        r = await viewer.get("/api/audit")
        assert r.status_code == 403 and "admin" in r.json()["detail"]
    async with app.client(token=None) as anonymous:
        assert (await anonymous.get("/api/audit")).status_code == 401
    async with app.client() as http:
        refused = (await http.get("/api/audit", params={"event": "refused"})).json()
    assert [(x.get("identity"), x["status"]) for x in refused] == [("watcher", 403), (None, 401)]


async def test_a_refused_agent_is_recorded(app: App) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    ws_url = app.base.replace("http://", "ws://") + "/agents"
    with pytest.raises(InvalidStatus):
        await connect(ws_url, additional_headers={"Authorization": "Bearer not-an-agent-token-at-all"})
    async with app.client() as http:
        (record,) = (await http.get("/api/audit", params={"event": "refused"})).json()
    assert (record["path"], record["status"], record["detail"]) == ("/agents", 403, "agent: unknown token")
    assert "not-an-agent-token-at-all" not in app.log.read_text()


async def test_call_events_stream_only_to_those_who_ask(app: App) -> None:
    async with app.client() as http, http.stream("GET", "/api/events", params={"calls": "true"}) as stream:
        assert stream.status_code == 200
        assert app.hub._bus.wants_calls
        lines = stream.aiter_lines()
        await http.post("/api/tools/mb__fail/call", json={})
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            async for line in lines:
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    if event["type"].startswith("call_"):
                        seen.append(event)
                if len(seen) == 2:
                    break
    started, finished = seen
    assert started["type"] == "call_started" and finished["type"] == "call_finished"
    assert started["id"] == finished["id"] and finished["tool"] == "mb__fail" and finished["server"] == "mb"
    assert finished["outcome"] == "tool_error" and finished["identity"] == "token-1"
    assert "arguments" not in finished


# --- patchbay audit tail --------------------------------------------------------------------------------


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchbay", *args,
        env={**os.environ, "PATCHBAY_URL": "http://127.0.0.1:9", **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_tail_reads_the_file_and_follows_it(tmp_path: Path) -> None:
    path = tmp_path / "patchbay.json"
    path.write_text(json.dumps({"mcpServers": {"mb": bad()}}))
    async with Hub.from_file(path) as hub:
        await hub.call_tool("mb__echo", {"text": "a"}, caller=CI)
        await hub.call_tool("mb__fail", {})
        await hub.audit.aflush()
        code, out, err = await cli("audit", "tail", "--no-hub", "--config", str(path))
        assert code == 0, err
        lines = out.splitlines()
        assert len(lines) == 2 and "ci (user)" in lines[0] and "mb__echo" in lines[0] and "ok" in lines[0]
        assert "tool_error" in lines[1]
        code, out, _ = await cli(
            "audit", "tail", "--no-hub", "--config", str(path), "--identity", "ci", "--json"
        )
        assert [json.loads(x)["tool"] for x in out.splitlines()] == ["mb__echo"]

        follower = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "patchbay", "audit", "tail", "-f", "-n", "1", "--json", "--no-hub",
            "--config", str(path), "--tool", "mb__add",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert follower.stdout is not None and follower.stderr is not None
            await asyncio.wait_for(follower.stderr.readline(), 30)  # "using … directly": it is reading
            await hub.call_tool("mb__echo", {"text": "not shown"})
            await hub.call_tool("mb__add", {"a": 1, "b": 2})
            line = await asyncio.wait_for(follower.stdout.readline(), 30)
            assert json.loads(line)["tool"] == "mb__add"
        finally:
            follower.terminate()
            await follower.wait()


async def test_tail_through_a_running_hub_needs_its_token(tmp_path: Path) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"mb": bad()}}))
    served = await start_serve(config, env={"PATCHBAY_TOKEN": ADMIN_TOKEN}, token=ADMIN_TOKEN)
    try:
        async with served.http() as http:
            await http.post("/api/tools/mb__echo/call", json={"arguments": {"text": "x"}})
        code, out, err = await cli("audit", "tail", "--url", served.base, env={"PATCHBAY_TOKEN": ADMIN_TOKEN})
        assert code == 0, err
        assert "via hub" in err and "token-1 (admin)" in out and "mb__echo" in out
        code, _, err = await cli("audit", "tail", "--url", served.base, env={"PATCHBAY_TOKEN": ""})
        assert code == 2 and "token" in err
    finally:
        await stop_serve(served)
    assert ADMIN_TOKEN not in (tmp_path / "patchbay.audit.jsonl").read_text()


async def test_a_refused_upstream_sign_in_is_recorded(app: App) -> None:
    async with app.client(token=None) as browser:  # the redirect comes from a browser: no token
        r = await browser.get("/oauth/callback", params={"state": "forged-state", "code": "stolen-code"})
        assert r.status_code == 400
    async with app.client() as http:
        (record,) = (await http.get("/api/audit", params={"event": "sign_in"})).json()
    assert record["outcome"] == "refused"
    assert "stolen-code" not in app.log.read_text() and "forged-state" not in app.log.read_text()


@pytest.mark.parametrize(
    "ts",
    [0.0, 5e-7, 1.5e-6, 1.9999995, 1_700_000_000.0, 1_700_000_000.0000005, 1_700_000_000.9999995,
     1_700_000_000.9999996, 1_764_633_599.9999999, 4_102_444_800.123456],
)  # fmt: skip
def test_record_times_read_as_datetime_writes_them(ts: float) -> None:
    """The writer formats the date once per second; the text is still exactly ``datetime``'s (UTC,
    microseconds rounded half to even, carried into the next second), in any order of calls."""
    import datetime as dt

    from patchbay.audit import iso

    expected = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert iso(ts) == expected
    assert iso(ts + 1) != expected and iso(ts) == expected  # the per-second cache follows the clock
