"""Roles and profile-bound tokens against a real ``patchbay serve`` (and real uvicorn) on 127.0.0.1.

The central test walks the app's OpenAPI document: every route, every role, and no token, each answer's
status class checked against the policy written out here by hand (not read back from the code), and no
500 anywhere. A route this file does not list is expected to be admin-only, so a route added later is
closed to users and viewers until someone decides otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from patchbay import Hub
from patchbay.access.roles import RoleTable
from patchbay.access.tokens import TokenTable, config_tokens, digest, parse_entries
from patchbay.config import parse_config
from patchbay.errors import ConfigError
from patchbay.identity import Identity
from patchbay.server.api import ErrorBody
from patchbay.server.app import ServeSettings, create_app, uvicorn_config
from patchbay.server.security import Guard
from tests.conftest import bad, wait_for
from tests.test_agents import start_agent
from tests.test_cli import clean_env, cli_many, in_process, one_error_line, write  # noqa: F401
from tests.test_serve import Served, start_serve, stop_serve

ADMIN = "roles-admin-token-0123456789"
USER = "roles-user-token-0123456789"
VIEWER = "roles-viewer-token-0123456789"
CODER = "roles-coder-token-0123456789"  # a user bound to profile "coding"
AGENT = "roles-agent-token-0123456789"
TOKENS = {"admin": ADMIN, "user": USER, "viewer": VIEWER}
UNKNOWN = "no-such-name"


def doc() -> dict[str, Any]:
    return {
        "mcpServers": {"gh": bad("--name", "gh"), "fs": bad("--name", "fs")},
        "profiles": {"coding": {"servers": ["gh"]}, "math": {"tools": ["*__add"]}},
        "pinning": "off",
        "agents": {"desk": {"token": AGENT}},
        "auth": {
            "tokens": [
                "${ROLES_ADMIN}",
                {"name": "dev", "token": "${ROLES_USER}", "role": "user"},
                {
                    "name": "wall",
                    "tokenSha256": hashlib.sha256(VIEWER.encode()).hexdigest(),
                    "role": "viewer",
                },
                {"name": "coder", "token": CODER, "role": "user", "profile": "coding"},
            ]
        },
    }


ENV = {"ROLES_ADMIN": ADMIN, "ROLES_USER": USER}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    config = write(tmp_path / "patchbay.json", doc())
    s = await start_serve(config, env=ENV, token=ADMIN)
    yield s
    await stop_serve(s)


def client(served: Served, token: str | None) -> httpx2.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.AsyncClient(base_url=served.base, headers=headers, timeout=20)


# --- the policy, written out by hand ---------------------------------------------------------------------

VIEWER_ROUTES = {
    ("GET", "/api/servers"),
    ("GET", "/api/servers/{name}"),
    ("GET", "/api/servers/{name}/auth"),
    ("GET", "/api/agents"),
    ("GET", "/api/tools"),
    ("GET", "/api/tools/search"),
    ("GET", "/api/tools/search/status"),
    ("GET", "/api/tools/changes"),
    ("GET", "/api/resources"),
    ("GET", "/api/resources/templates"),
    ("GET", "/api/prompts"),
    ("GET", "/api/profiles"),
    ("GET", "/api/profiles/{name}"),
    ("GET", "/api/events"),
    ("GET", "/api/whoami"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
}
USER_ROUTES = VIEWER_ROUTES | {
    ("POST", "/api/tools/{name}/call"),
    ("GET", "/api/resources/read"),
    ("POST", "/api/prompts/{name}/get"),
    # a per-user server's sign-in is the caller's own (test_per_user_signin.py)
    ("GET", "/api/servers/{name}/sign-in"),
    ("POST", "/api/servers/{name}/sign-in"),
    ("DELETE", "/api/servers/{name}/sign-in"),
}
OPEN_ROUTES = {("GET", "/healthz")}  # served without a token at all


def may(role: str, method: str, path: str) -> bool:
    if role == "admin":
        return True
    return (method, path) in (USER_ROUTES if role == "user" else VIEWER_ROUTES)


async def ask(c: httpx2.AsyncClient, method: str, path: str) -> httpx2.Response:
    """One harmless request: names that exist nowhere, an empty JSON body; an event stream is only opened."""
    url = path.replace("{name}", UNKNOWN)
    body = {"json": {}} if method in ("POST", "PUT") else {}
    if path == "/api/events":
        async with c.stream(method, url) as r:
            if r.status_code >= 400:
                await r.aread()
                return r
            return httpx2.Response(r.status_code, text="(an event stream)")
    return await c.request(method, url, **body)


async def test_every_route_for_every_role_and_no_token(served: Served) -> None:
    async with client(served, ADMIN) as admin:
        spec = (await admin.get("/openapi.json")).json()
    routes = [(m.upper(), p) for p, item in spec["paths"].items() for m in item]
    assert len(routes) > 30 and set(USER_ROUTES) <= set(routes)  # the hand-written lists name real routes
    assert ("POST", "/api/tokens") in routes and ("DELETE", "/api/tokens/{name}") in routes
    cells = 0
    async with contextlib.AsyncExitStack() as stack:
        clients = {r: await stack.enter_async_context(client(served, t)) for r, t in TOKENS.items()}
        clients["none"] = await stack.enter_async_context(client(served, None))
        for method, path in routes:
            for who, c in clients.items():
                r = await ask(c, method, path)
                where = f"{who}: {method} {path} -> {r.status_code} {r.text[:200]}"
                assert r.status_code != 500, where
                cells += 1
                if (method, path) in OPEN_ROUTES:
                    assert r.status_code < 400, where
                elif who == "none":
                    assert r.status_code == 401, where
                elif may(who, method, path):
                    assert r.status_code not in (401, 403), where  # its own answer (2xx, 4xx, 502)
                else:
                    assert r.status_code == 403, where
                    body = ErrorBody.model_validate(r.json())
                    assert body.error == "forbidden"
                    needed = "user" if (method, path) in USER_ROUTES else "admin"
                    assert f"needs the {needed!r} role" in body.detail, where
    assert cells == len(routes) * 4
    assert (await asyncio.to_thread(lambda: json.loads(served.config.read_text()))) == json.loads(
        json.dumps(doc())
    )  # nothing was changed by any of it


def test_a_route_not_in_the_table_needs_admin() -> None:
    table = RoleTable()
    assert table.needed("GET", "/api/servers") == "viewer"
    assert table.needed("POST", "/api/tools/gh__echo/call") == "user"
    assert table.needed("POST", "/api/tools/a/b/call") == "user"
    assert table.needed("POST", "/api/tools/x/approve") == "admin"
    assert table.needed("GET", "/api/anything-new") == "admin"
    assert table.needed("DELETE", "/api/servers/gh") == "admin"
    assert table.needed("GET", "/api/tools/x/call") == "admin"  # the right path, not the right method


@contextlib.asynccontextmanager
async def uvicorn_app(config: Path, **settings: Any) -> AsyncIterator[tuple[Any, str]]:
    hub = Hub.from_file(config)
    serve = ServeSettings(port=0, watch_config=False, **settings)
    app = create_app(hub, serve)
    server = uvicorn.Server(uvicorn_config(app, serve, log_level="warning", timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), 30, "uvicorn start")
        assert server.started, task.exception() if task.done() else "not started"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def test_a_route_added_later_is_admin_only_by_default(tmp_path: Path) -> None:
    config = write(tmp_path / "patchbay.json", {"mcpServers": {}})
    tokens = [(ADMIN, Identity("root")), (USER, Identity("u", "user")), (VIEWER, Identity("v", "viewer"))]
    async with uvicorn_app(config, tokens=tokens) as (app, base):

        @app.get("/api/added-later")  # type: ignore[misc]
        async def added_later() -> dict[str, str]:
            return {"ok": "yes"}

        async with httpx2.AsyncClient(base_url=base) as c:
            for token, status in ((ADMIN, 200), (USER, 403), (VIEWER, 403), ("wrong", 401)):
                r = await c.get("/api/added-later", headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == status, (token, r.text)
            r = await c.get("/api/added-later", headers={"Authorization": f"Bearer {VIEWER}"})
            assert r.json() == {
                "detail": "GET /api/added-later needs the 'admin' role; token 'v' has 'viewer'",
                "error": "forbidden",
            }


# --- /mcp with each role, through the official MCP client ---------------------------------------------------


def mcp_http(token: str | None) -> httpx2.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60))


async def mcp_tools(url: str, token: str) -> tuple[set[str], str]:
    async with (
        mcp_http(token) as http,
        streamable_http_client(url, http_client=http) as (r, w),
        ClientSession(r, w) as session,
    ):
        await session.initialize()
        names = {t.name for t in (await session.list_tools()).tools}
        result = await session.call_tool("gh__echo", {"text": "hi"})
        return names, result.content[0].text  # type: ignore[union-attr]


async def mcp_refused(url: str, token: str | None) -> int:
    """The HTTP status /mcp answers an initialize with (the SDK client only raises on it)."""
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {"accept": "application/json, text/event-stream"}
    async with mcp_http(token) as http:
        return (await http.post(url, json=init, headers=headers)).status_code


async def test_mcp_with_each_role(served: Served) -> None:
    admin, user, coder = await asyncio.gather(
        mcp_tools(served.mcp, ADMIN), mcp_tools(served.mcp, USER), mcp_tools(served.mcp, CODER)
    )
    assert admin[1] == user[1] == coder[1] == "hi"
    assert "fs__echo" in admin[0] and admin[0] == user[0]
    assert coder[0] and all(n.startswith("gh__") for n in coder[0])  # /mcp serves the token's profile
    assert await mcp_refused(served.mcp, VIEWER) == 403
    assert await mcp_refused(served.mcp, None) == 401
    assert await mcp_refused(f"{served.mcp}/math", CODER) == 403  # another profile's endpoint
    assert await mcp_refused(f"{served.mcp}/coding", VIEWER) == 403
    names, _ = await mcp_tools(f"{served.mcp}/coding", CODER)
    assert names == coder[0]
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    http = mcp_http(VIEWER)
    http.event_hooks["response"] = [record]
    with pytest.raises(ExceptionGroup) as refused:  # the SDK client's answer to a refused initialize
        async with (
            http,
            streamable_http_client(served.mcp, http_client=http) as (r, w),
            ClientSession(r, w) as s,
        ):
            await s.initialize()
    assert statuses == [403] and refused.group_contains(MCPError)


async def test_a_profile_bound_token_sees_and_calls_only_its_profile(served: Served) -> None:
    async with client(served, CODER) as c, client(served, ADMIN) as admin:
        tools = (await c.get("/api/tools")).json()
        assert tools and {t["name"].split("__")[0] for t in tools} == {"gh"}
        assert (await c.get("/api/tools", params={"profile": "coding"})).status_code == 200
        other = await c.get("/api/tools", params={"profile": "math"})
        assert other.status_code == 403 and "bound to profile 'coding', not 'math'" in other.json()["detail"]
        found = (await c.get("/api/tools/search", params={"q": "add numbers"})).json()
        assert found and all(m["name"].startswith("gh__") for m in found)
        call = await c.post("/api/tools/fs__echo/call", json={"arguments": {"text": "x"}})
        assert call.status_code == 404 and "not in profile 'coding'" in call.json()["detail"]
        assert (
            await c.post("/api/tools/gh__echo/call", json={"arguments": {"text": "x"}})
        ).status_code == 200
        assert [p["name"] for p in (await c.get("/api/profiles")).json()] == ["coding"]
        assert (await c.get("/api/profiles/math")).status_code == 404
        assert (await c.get("/api/agents")).json() == []  # the agent "desk" is not in "coding"
        assert [a["name"] for a in (await admin.get("/api/agents")).json()] == ["desk"]
        servers = (await c.get("/api/servers")).json()
        assert [s["name"] for s in servers] == ["gh"] and servers[0]["spec"] == {}
        assert servers[0]["stderr_tail"] == []
        assert (await c.get("/api/servers/fs")).status_code == 404
        assert (await admin.get("/api/servers/fs")).json()["spec"]["command"]  # the admin sees it all
        prompts = [p["name"] for p in (await c.get("/api/prompts")).json()]
        assert prompts == ["gh__greet"]
        got = await c.post("/api/prompts/gh__greet/get", json={"arguments": {"name": "Ada"}})
        assert got.status_code == 200 and "Ada" in json.dumps(got.json())
        refused = await c.post("/api/prompts/fs__greet/get", json={"arguments": {"name": "Ada"}})
        assert refused.status_code == 404 and "prompt in profile 'coding'" in refused.json()["detail"]
        # /metrics: only the profile's servers, agents and tools; no hub-wide totals
        await admin.post("/api/tools/fs__echo/call", json={"arguments": {"text": "x"}})
        mine, everything = (await c.get("/metrics")).text, (await admin.get("/metrics")).text
        assert 'server="gh"' in mine and 'tool="gh__echo"' in mine
        assert 'server="fs"' not in mine and "fs__" not in mine and 'agent="desk"' not in mine
        assert "patchbay_tools " not in mine and "patchbay_servers{" not in mine
        assert 'server="fs"' in everything and 'tool="fs__echo"' in everything
        assert "patchbay_tools " in everything
        assert (
            await admin.post("/api/prompts/fs__greet/get", json={"arguments": {"name": "A"}})
        ).status_code == 200
        resources = (await c.get("/api/resources")).json()
        assert resources and all(r["name"].startswith("gh") for r in resources)
        read = await c.get("/api/resources/read", params={"uri": resources[0]["uri"]})
        assert read.status_code == 200 and read.json()["contents"]


async def test_events_of_a_profile_bound_token_name_only_its_servers(served: Served) -> None:
    seen: list[dict[str, Any]] = []
    gh_ready = asyncio.Event()
    subscribed = asyncio.Event()

    async def follow() -> None:
        async with client(served, CODER) as c, c.stream("GET", "/api/events") as r:
            assert r.status_code == 200
            subscribed.set()  # the hub subscribed this stream before it sent the headers
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if seen[-1].get("server") == "gh" and seen[-1].get("state") == "ready":
                        gh_ready.set()
                        return

    reader = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(subscribed.wait(), 20)
        async with client(served, ADMIN) as admin:  # fs first: its events would come before gh's
            assert (await admin.post("/api/servers/fs/restart")).json()["state"] == "ready"
            assert (await admin.post("/api/servers/gh/restart")).json()["state"] == "ready"
        await asyncio.wait_for(gh_ready.wait(), 20)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    assert {e.get("server") for e in seen if "server" in e} == {"gh"}, seen
    assert all(n.startswith("gh__") for e in seen for n in e.get("added", []) + e.get("removed", []))


async def test_agents_websocket_is_unaffected(served: Served, tmp_path: Path) -> None:
    ws = served.base.replace("http://", "ws://") + "/agents"
    for token in (ADMIN, USER):  # hub tokens are not agent tokens
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(ws, additional_headers={"Authorization": f"Bearer {token}"}):
                pass
        assert refused.value.response.status_code == 403
    agent_config = write(tmp_path / "agent.json", {"mcpServers": {"mb": bad()}})
    agent = start_agent(None, agent_config, tmp_path / "agent.log", AGENT, url=ws)
    try:
        async with client(served, USER) as c:

            async def listed() -> bool:
                names = {t["name"] for t in (await c.get("/api/tools")).json()}
                return "desk__mb__echo" in names

            async with asyncio.timeout(60):
                while not await listed():
                    await asyncio.sleep(0.1)
            r = await c.post("/api/tools/desk__mb__echo/call", json={"arguments": {"text": "via agent"}})
            assert r.status_code == 200 and r.json()["content"][0]["text"] == "via agent"
    finally:
        agent.kill()


# --- tokens managed at runtime ---------------------------------------------------------------------------


async def test_tokens_created_listed_and_revoked_live(served: Served) -> None:
    async with client(served, ADMIN) as admin, client(served, USER) as user:
        listed = (await admin.get("/api/tokens")).json()
        assert [(t["name"], t["role"], t["profile"]) for t in listed] == [
            ("token-1", "admin", None),
            ("dev", "user", None),
            ("wall", "viewer", None),
            ("coder", "user", "coding"),
        ]
        text = json.dumps(listed)
        assert ADMIN not in text and CODER not in text and digest(VIEWER).hex() not in text
        assert (await user.post("/api/tokens", json={"name": "x", "role": "admin"})).status_code == 403
        created = await admin.post("/api/tokens", json={"name": "ci", "role": "user", "profile": "math"})
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        assert created.json() | {"token": "*"} == {
            "name": "ci",
            "role": "user",
            "profile": "math",
            "source": "config",
            "token": "*",
        }
        saved = served.config.read_text()
        assert token not in saved
        entry = json.loads(saved)["auth"]["tokens"][-1]
        assert entry == {
            "name": "ci",
            "tokenSha256": hashlib.sha256(token.encode()).hexdigest(),
            "role": "user",
            "profile": "math",
        }
        async with client(served, token) as ci:  # works at once, as a user bound to "math"
            names = {t["name"] for t in (await ci.get("/api/tools")).json()}
            assert names == {"gh__add", "fs__add"}
            assert (await ci.get("/api/servers/gh")).json()["spec"] == {}  # math: every server
            assert (await ci.delete("/api/tokens/ci")).status_code == 403
            dup = await admin.post("/api/tokens", json={"name": "ci", "role": "viewer"})
            assert dup.status_code == 409 and dup.json()["error"] == "duplicate_token"
            bad_role = await admin.post("/api/tokens", json={"name": "y", "role": "root"})
            assert bad_role.status_code == 422 and bad_role.json()["field"] == "role"
            bad_profile = await admin.post(
                "/api/tokens", json={"name": "y", "role": "user", "profile": "nope"}
            )
            assert bad_profile.status_code == 422
            assert "unknown profile 'nope' (known: coding, math)" in bad_profile.json()["detail"]
            bad_name = await admin.post("/api/tokens", json={"name": "a b", "role": "user"})
            assert bad_name.status_code == 422 and "name" in bad_name.json()["detail"]
            assert (await admin.delete("/api/tokens/ci")).status_code == 204
            assert (await ci.get("/api/tools")).status_code == 401  # revoked at once
        assert (await admin.delete("/api/tokens/ci")).status_code == 404
        plain = await admin.delete("/api/tokens/token-1")
        assert plain.status_code == 409 and "plain string in the config file" in plain.json()["detail"]
        saved = json.loads(served.config.read_text())["auth"]["tokens"]  # removed from the file, too
        assert not [t for t in saved if isinstance(t, dict) and t.get("name") == "ci"], saved
        assert (await admin.put("/api/profiles/coding", json={"servers": ["gh", "fs"]})).status_code == 200
        bound = await admin.delete("/api/profiles/coding")
        assert bound.status_code == 422 and "'coder' are bound to it" in bound.json()["detail"]


async def test_tokens_cli_through_a_hub_and_on_the_file(served: Served, tmp_path: Path) -> None:
    env = clean_env(PATCHBAY_URL=served.base, PATCHBAY_TOKEN=ADMIN)
    offline = write(tmp_path / "offline" / "patchbay.json", {"mcpServers": {}, "profiles": {"p": {}}})
    add, listed, add_file, refused = await asyncio.to_thread(
        cli_many,
        [
            (["tokens", "add", "cli-made", "--role", "viewer", "--json"], {"cwd": tmp_path, "env": env}),
            (["tokens", "list"], {"cwd": tmp_path, "env": env}),
            (
                [
                    "tokens",
                    "add",
                    "f",
                    "--role",
                    "user",
                    "--profile",
                    "p",
                    "--no-hub",
                    "--config",
                    str(offline),
                ],
                {"cwd": tmp_path},
            ),
            (
                [
                    "tokens",
                    "add",
                    "g",
                    "--role",
                    "user",
                    "--profile",
                    "nope",
                    "--no-hub",
                    "--config",
                    str(offline),
                ],
                {"cwd": tmp_path},
            ),
        ],
    )
    assert add.code == 0, add
    token = add.json()["token"]
    async with client(served, token) as viewer:
        assert (await viewer.get("/api/servers")).status_code == 200
        assert (await viewer.post("/api/servers/gh/restart")).status_code == 403
    assert listed.code == 0 and "coder" in listed.out and "coding" in listed.out and CODER not in listed.out
    assert add_file.code == 0, add_file
    printed = add_file.out.strip()
    entry = json.loads(offline.read_text())["auth"]["tokens"][0]
    assert entry == {
        "name": "f",
        "tokenSha256": hashlib.sha256(printed.encode()).hexdigest(),
        "role": "user",
        "profile": "p",
    }
    assert refused.code == 2 and "unknown profile 'nope' (known: p)" in one_error_line(refused)
    remove, gone, remove_file = await asyncio.to_thread(
        cli_many,
        [
            (["tokens", "remove", "cli-made"], {"cwd": tmp_path, "env": env}),
            (["tokens", "remove", "nope"], {"cwd": tmp_path, "env": env}),
            (["tokens", "remove", "f", "--no-hub", "--config", str(offline)], {"cwd": tmp_path}),
        ],
    )
    assert remove.code == 0, remove
    async with client(served, token) as viewer:
        assert (await viewer.get("/api/servers")).status_code == 401
    assert gone.code == 2 and "unknown token 'nope'" in one_error_line(gone)
    assert remove_file.code == 0 and json.loads(offline.read_text())["auth"]["tokens"] == []


async def next_reload(served: Served, change: Any) -> dict[str, Any]:
    """Apply ``change`` (a function) once the event stream is open; the ``config_reload`` event it causes."""
    async with client(served, ADMIN) as admin, admin.stream("GET", "/api/events") as r:
        assert r.status_code == 200  # subscribed before these headers were sent
        await asyncio.to_thread(change)
        async for line in r.aiter_lines():
            if line.startswith("data: ") and (event := json.loads(line[6:]))["type"] == "config_reload":
                return event  # type: ignore[no-any-return]
    raise AssertionError("the stream ended")


async def test_a_reload_follows_the_file_and_a_bad_one_keeps_the_tokens(served: Served) -> None:
    late_token = "roles-late-token-0123456789"
    new = doc()
    new["auth"]["tokens"].append({"name": "late", "token": late_token, "role": "viewer"})
    reload = await asyncio.wait_for(next_reload(served, lambda: write(served.config, new)), 30)
    assert reload["ok"], reload
    async with client(served, late_token) as late:
        assert (await late.get("/api/servers")).status_code == 200
        broken = json.loads(json.dumps(new))
        broken["auth"]["tokens"].append({"name": "x", "token": "t" * 20, "role": "user", "profile": "gone"})
        reload = await asyncio.wait_for(next_reload(served, lambda: write(served.config, broken)), 30)
        assert not reload["ok"] and "auth.tokens[5].profile: unknown profile 'gone'" in reload["error"]
        assert (await late.get("/api/servers")).status_code == 200  # the previous tokens stay in force
        async with client(served, "t" * 20) as x:
            assert (await x.get("/api/servers")).status_code == 401


# --- configuration -----------------------------------------------------------------------------------------


def bad_config(entry: Any) -> dict[str, Any]:
    d = doc()
    d["auth"]["tokens"] = ["plain-admin-token-000000", entry]
    return d


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"name": "a", "token": "x", "role": "root"},
            "auth.tokens[1].role: 'root' is not a role; use admin, user, viewer",
        ),
        ({"name": "a", "token": "x"}, "auth.tokens[1].role: required: one of admin, user, viewer"),
        (
            {"name": "a", "token": "x", "tokenSha256": "0" * 64, "role": "user"},
            "auth.tokens[1]: give exactly one of 'token' and 'tokenSha256'",
        ),
        ({"name": "a", "role": "user"}, "auth.tokens[1]: give exactly one of 'token' and 'tokenSha256'"),
        (
            {"name": "a", "tokenSha256": "xyz", "role": "user"},
            "auth.tokens[1].tokenSha256: must be the token's SHA-256 as 64 lower-case hex digits",
        ),
        (
            {"name": "a", "token": "x", "role": "user", "profile": "nope"},
            "auth.tokens[1].profile: unknown profile 'nope' (known: coding, math)",
        ),
        (
            {"name": "a b", "token": "x", "role": "user"},
            "auth.tokens[1].name: 'a b': use 1-64 letters, digits, '_', '-' or '.'",
        ),
        (
            {"name": "token-1", "token": "x", "role": "user"},
            "auth.tokens[1].name: 'token-1' is reserved for unnamed tokens",
        ),
        (
            {"name": "a", "token": "x", "role": "user", "rol": "admin"},
            "auth.tokens[1].rol: Extra inputs are not permitted",
        ),
        (5, "auth.tokens[1]: expected a token string or an object"),
    ],
)
def test_config_errors_name_the_field(
    entry: Any,
    message: str,
    tmp_path: Path,
    in_process: Any,  # noqa: F811
) -> None:
    write(tmp_path / "patchbay.json", bad_config(entry))
    report = in_process("config", "check", "patchbay.json", "--json", cwd=tmp_path)
    assert report.code == 1, report
    errors = report.json()["errors"]
    assert [e["message"] for e in errors if e["message"].startswith(message)], errors
    assert errors[-1]["field"].startswith("auth.tokens[1]")


def test_duplicate_names_and_a_valid_config(tmp_path: Path, in_process: Any) -> None:  # noqa: F811
    d = doc()
    d["auth"]["tokens"].append({"name": "dev", "token": "y", "role": "viewer"})
    write(tmp_path / "dup.json", d)
    report = in_process("config", "check", "dup.json", "--json", cwd=tmp_path)
    assert report.code == 1
    assert report.json()["errors"][-1]["message"] == (
        "auth.tokens[4].name: 'dev' is used by another token; names must be unique"
    )
    write(tmp_path / "ok.json", doc())
    report = in_process("config", "check", "ok.json", "--json", cwd=tmp_path, env=ENV)
    assert report.code == 0 and report.json()["valid"], report


async def test_serve_refuses_to_start_with_a_bad_token_entry(tmp_path: Path) -> None:
    config = write(tmp_path / "patchbay.json", bad_config({"name": "a", "token": "x", "role": "root"}))
    [r] = await asyncio.to_thread(
        cli_many, [(["serve", "--config", str(config), "--port", "0"], {"cwd": tmp_path})]
    )
    assert r.code == 2 and "auth.tokens[1].role: 'root' is not a role" in one_error_line(r)


def test_digest_entries_and_plain_strings_in_the_gate() -> None:
    config = parse_config(json.dumps(doc()))
    with pytest.raises(ConfigError) as unset:
        config_tokens(config)  # ${ROLES_ADMIN} is not set here
    assert unset.value.field == "auth.tokens[0]"
    entries = parse_entries(config)
    assert entries[0] == "${ROLES_ADMIN}" and not isinstance(entries[2], str) and entries[2].role == "viewer"
    guard = Guard(lambda *a: None, tokens=["first", ("second", Identity("two", "user"))])  # type: ignore[arg-type, return-value]
    assert guard.static_identity("first") == Identity("token-1")
    assert guard.static_identity("second") == Identity("two", "user")
    assert guard.static_identity("third") is None
    only_digest = parse_config(json.dumps({"auth": {"tokens": [doc()["auth"]["tokens"][2]]}}))
    current = [only_digest]
    table = TokenTable(["cli-token"], config=lambda: current[0])
    assert table.identify(VIEWER) == Identity("wall", "viewer")  # matched by its SHA-256 alone
    assert table.identify("cli-token") == Identity("token-1")
    assert [e.source for e in table.entries] == ["command line", "config"]
    current[0] = parse_config("{}")  # every config token removed: the next request sees it
    assert table.identify(VIEWER) is None and table.identify("cli-token") is not None
    emptied = TokenTable(config=lambda: current[0])
    assert not emptied.required  # never had a token: loopback without tokens, every request LOCAL
    current[0] = only_digest
    assert emptied.required
    current[0] = parse_config("{}")
    assert emptied.required and emptied.identify(VIEWER) is None  # stays closed once it had tokens
