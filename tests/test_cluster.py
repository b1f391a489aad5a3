"""Cluster mode end to end: a real Redis, three real replicas (``patchbay serve --cluster``), a real
haproxy in front (round-robin, no stickiness), real agents (``patchbay agent``) and real clients.

haproxy has two frontends: ``all`` (replicas a, b, c) and ``bc`` (b and c only), so a test can call
"through B and C" an agent that is connected to A. Everything waits on conditions (polling an API with a
deadline), never on a fixed sleep. The destructive tests (kill -9, Redis restart) come last and leave
the cluster whole again.
"""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import mcp.types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from patchbay.errors import ConfigError
from patchbay.hub import Hub
from tests import thirdparty
from tests.cluster_parts import Haproxy, RedisProc, Replica
from tests.conftest import bad
from tests.test_agents import AgentProc, eventually, start_agent

AGENTS = ("laptop", "desk", "roamer", "steady", "sampler")


def token(name: str) -> str:
    return f"{name}-cluster-token-0123456789"


class Parts:
    def __init__(self, redis: RedisProc, replicas: dict[str, Replica], lb: Haproxy, workdir: Path) -> None:
        self.redis = redis
        self.replicas = replicas
        self.lb = lb
        self.workdir = workdir

    @property
    def a(self) -> Replica:
        return self.replicas["a"]

    @property
    def b(self) -> Replica:
        return self.replicas["b"]

    @property
    def c(self) -> Replica:
        return self.replicas["c"]

    async def ready(self) -> None:
        await asyncio.gather(*(r.ready() for r in self.replicas.values()))
        await self.lb.ready("all", 3)
        await self.lb.ready("bc", 2)

    def agent(self, name: str, url: str) -> AgentProc:
        return start_agent(
            None, self.workdir / "agent-mb.json", self.workdir / f"{name}.log", token(name), url=url
        )


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parts]:
    workdir = tmp_path_factory.mktemp("cluster")
    (workdir / "agent-mb.json").write_text(json.dumps({"mcpServers": {"mb": bad()}}))
    everything = {"mcpServers": {"everything": thirdparty.everything()}}
    (workdir / "agent-everything.json").write_text(json.dumps(everything))
    config = workdir / "seed.json"
    config.write_text(
        json.dumps({"mcpServers": {"mb": bad()}, "agents": {n: {"token": token(n)} for n in AGENTS}})
    )
    redis = RedisProc(workdir).start()
    replicas = {n: Replica(n, config, workdir, redis.url) for n in ("a", "b", "c")}
    lb = Haproxy(workdir, {"all": list(replicas.values()), "bc": [replicas["b"], replicas["c"]]})
    try:
        for r in replicas.values():
            r.start()
        lb.start()
        yield Parts(redis, replicas, lb, workdir)
    finally:
        lb.stop()
        for r in replicas.values():
            r.stop()
        redis.stop()


@pytest.fixture
async def cluster(parts: Parts) -> AsyncIterator[Parts]:
    await parts.ready()
    yield parts


def client(base: str) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=base, timeout=60, limits=httpx2.Limits(max_connections=200))


async def call(
    http: httpx2.AsyncClient, tool: str, arguments: dict[str, Any], **body: Any
) -> httpx2.Response:
    return await http.post(f"/api/tools/{tool}/call", json={"arguments": arguments, **body})


async def tools(replica: Replica) -> set[str]:
    async with replica.http() as http:
        return {t["name"] for t in (await http.get("/api/tools")).json()}


async def holder(replica: Replica, agent: str) -> str | None:
    """The id of the replica that holds ``agent``, as ``replica`` sees it."""
    async with replica.http() as http:
        found: str | None = (await http.get("/api/cluster")).json()["agents"].get(agent)
        return found


async def replica_id(replica: Replica) -> str:
    async with replica.http() as http:
        rid: str = (await http.get("/api/cluster")).json()["replica"]
        return rid


async def wait_agent_everywhere(parts: Parts, agent: str, on: list[Replica], timeout: float = 30) -> str:
    """Until every replica in ``on`` lists the agent's tools and agrees on its holder; returns the holder."""

    async def check() -> str | None:
        seen = {await holder(r, agent) for r in on}
        if len(seen) != 1 or None in seen:
            return None
        for r in on:
            if f"{agent}__mb__echo" not in await tools(r):
                return None
        return seen.pop()

    found: str = await eventually(check, timeout, f"agent {agent!r} on every replica")
    return found


def text(r: httpx2.Response) -> str:
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body.get("isError"), body
    return str(body["content"][0]["text"])


# --- outside cluster mode --------------------------------------------------------------------------------


async def test_without_cluster_mode_redis_is_never_imported() -> None:
    code = (
        "import sys\n"
        "from patchbay.cli.parser import build_parser\n"
        "from patchbay.hub import Hub\n"
        "from patchbay.server.app import create_app\n"
        "create_app(Hub.from_dict({'mcpServers': {}}))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'redis'], 'redis was imported'\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


async def test_serve_refuses_a_cluster_url_that_is_not_redis(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"mcpServers": {}, "cluster": {"redis": "${NOT_SET_ANYWHERE}"}}))
    for argv in (["--cluster", "http://127.0.0.1:1/"], []):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "patchbay", "serve", "--config", str(config), "--port", "1", *argv,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        assert proc.returncode == 2, err.decode()
        assert (b"not a Redis URL" if argv else b"NOT_SET_ANYWHERE") in err, err.decode()


# --- the load balancer ---------------------------------------------------------------------------------


async def test_haproxy_spreads_the_requests_of_one_connection(cluster: Parts) -> None:
    async with client(cluster.lb.url("all")) as http:
        seen = collections.Counter([(await http.get("/readyz")).headers["x-replica"] for _ in range(9)])
    assert set(seen) == {"a", "b", "c"}, seen  # no stickiness, even on one keep-alive connection


async def test_the_dashboard_shows_the_cluster(cluster: Parts) -> None:
    from playwright.async_api import async_playwright, expect

    from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(cluster.b.base + "/")
            await expect(page.locator("#cluster-stat")).to_be_visible(timeout=30_000)
            await expect(page.locator("#stat-cluster")).to_have_text("3 / 3", timeout=30_000)
            title = await page.locator("#cluster-stat").get_attribute("title") or ""
            assert await replica_id(cluster.a) in title and await replica_id(cluster.c) in title, title
        finally:
            await browser.close()


# --- the config of record --------------------------------------------------------------------------------


async def test_a_config_change_through_a_is_seen_on_c(cluster: Parts) -> None:
    async with cluster.a.http() as a:
        r = await a.post("/api/servers", json={"name": "extra", "spec": bad("--name", "extra")})
        assert r.status_code == 201, r.text

    async def on(replica: Replica, present: bool) -> bool:
        async with replica.http() as http:
            names = {s["name"]: s["state"] for s in (await http.get("/api/servers")).json()}
        return names.get("extra") == "ready" if present else "extra" not in names

    await eventually(lambda: on(cluster.c, True), 15, "the new server running on replica c")
    async with client(cluster.lb.url("bc")) as lb:  # any replica serves it
        assert text(await call(lb, "extra__echo", {"text": "x"})) == "x"
        r = await lb.delete("/api/servers/extra")
        assert r.status_code == 204, r.text
    for replica in cluster.replicas.values():
        await eventually(lambda replica=replica: on(replica, False), 15, f"extra gone from {replica.name}")

    async def agreed() -> bool:  # each replica's heartbeat says which version it runs
        async with cluster.a.http() as a:
            status = (await a.get("/api/cluster")).json()
        versions = {r["configVersion"] for r in status["replicas"]}
        return len(status["replicas"]) == 3 and versions == {status["configVersion"]}

    await eventually(agreed, 15, "every replica to report the same config version")


async def test_an_agent_added_through_one_replica_may_dial_in_to_another(cluster: Parts) -> None:
    secret = "late-agent-token-0123456789abcdef"
    async with cluster.b.http() as b:
        r = await b.post("/api/agents", json={"name": "late", "token": secret})
        assert r.status_code in (200, 201), r.text
        assert secret not in (await b.get("/api/agents")).text
    agent = start_agent(None, cluster.workdir / "agent-mb.json", cluster.workdir / "late.log", secret,
                        url=f"ws://127.0.0.1:{cluster.c.port}/agents")  # fmt: skip
    try:
        held = await wait_agent_everywhere(cluster, "late", list(cluster.replicas.values()))
        assert held == await replica_id(cluster.c)
        async with cluster.a.http() as a:
            assert text(await call(a, "late__mb__echo", {"text": "from a"})) == "from a"
            r = await a.delete("/api/agents/late")
            assert r.status_code == 204, r.text
        await agent.says("refused", timeout=30)  # the token no longer works anywhere
    finally:
        agent.kill()


async def test_config_export_writes_the_config_of_record(cluster: Parts, tmp_path: Path) -> None:
    out = tmp_path / "exported.json"
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchbay", "config", "export", "--cluster", cluster.redis.url, "-o", str(out),
        stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = await done.communicate()
    assert done.returncode == 0, err
    document = json.loads(out.read_text())
    assert "mb" in document["mcpServers"] and set(AGENTS) <= set(document["agents"])
    refused = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchbay", "config", "export", "--cluster", "http://nope",
        stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = await refused.communicate()
    assert refused.returncode == 2 and b"is not a Redis URL" in err


async def test_a_replica_refuses_to_reload_a_local_file(cluster: Parts) -> None:
    from patchbay.cluster.node import Cluster

    hub = Hub.from_dict({"mcpServers": {}})
    hub.cluster = Cluster(cluster.redis.url, hub, address="test")
    try:
        with pytest.raises(ConfigError, match="config of record is in Redis"):
            await hub.apply_config(hub.config)
    finally:
        await hub.cluster.close()


async def test_a_change_made_on_a_stale_version_is_refused_whole(cluster: Parts) -> None:
    from patchbay.cluster.node import Cluster
    from patchbay.errors import ConfigConflictError
    from patchbay.replies import rest_error

    hub = Hub.from_dict({"mcpServers": {}})
    hub.cluster = Cluster(cluster.redis.url, hub, address="test")
    store = cluster.redis.client()
    try:
        before = store.get("patchbay:config:version"), store.get("patchbay:config:doc")
        hub.cluster.version = 0  # as if it had missed every change since the cluster began
        with pytest.raises(ConfigConflictError, match="changed on another replica") as caught:
            await hub.add_server("stale", bad())
        assert rest_error(caught.value)[1] == 409
        assert (store.get("patchbay:config:version"), store.get("patchbay:config:doc")) == before
        assert "stale" not in hub.servers  # nothing half-applied
    finally:
        store.close()
        await hub.cluster.close()


# --- /mcp sessions across replicas ----------------------------------------------------------------------


async def test_a_session_initialised_through_one_replica_continues_through_the_others(cluster: Parts) -> None:
    answered: list[str] = []
    seen: list[str] = []

    async def note(response: httpx2.Response) -> None:
        answered.append(response.headers.get("x-replica", "?"))

    async def on_message(message: Any) -> None:
        seen.append(type(message).__name__)

    http = httpx2.AsyncClient(event_hooks={"response": [note]}, timeout=30)
    async with (
        http,
        streamable_http_client(f"{cluster.lb.url('all')}/mcp", http_client=http) as (r, w),
        ClientSession(r, w, message_handler=on_message) as session,
    ):
        await session.initialize()
        for i in range(6):
            result = await session.call_tool("mb__echo", {"text": f"hop {i}"})
            assert not result.is_error and result.content[0].text == f"hop {i}"  # type: ignore[union-attr]
        assert "mb__echo" in {t.name for t in (await session.list_tools()).tools}
        # hub -> client messages reach the session's stream whichever replica carries it
        async with cluster.c.http() as c:
            r2 = await c.post("/api/servers", json={"name": "sess_extra", "spec": bad()})
            assert r2.status_code == 201, r2.text
        await eventually(lambda: "ToolListChangedNotification" in seen, 20, "list_changed on the session")
        assert "sess_extra__echo" in {t.name for t in (await session.list_tools()).tools}
        async with cluster.c.http() as c:
            assert (await c.delete("/api/servers/sess_extra")).status_code == 204
    assert {"a", "b", "c"} <= set(answered), answered  # the session's requests landed on every replica


PASSTHROUGH = Path(__file__).parent / "servers" / "passthrough_server.py"


async def _session_holder(cluster: Parts, session_id: str) -> str:
    """The replica name holding the session, from its record in Redis."""
    raw = cluster.redis.client().get(f"patchbay:session:{session_id}")
    assert raw, f"no holder recorded for session {session_id}"
    rid = json.loads(raw)["replica"]
    for name, replica in cluster.replicas.items():
        if replica.proc is not None and await replica_id(replica) == rid:
            return name
    return rid  # a replica that is gone


async def _restart(cluster: Parts, name: str) -> None:
    cluster.replicas[name].start()
    await cluster.ready()


@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
@pytest.mark.parametrize("end", ["kill -9", "SIGTERM"])
async def test_a_session_survives_the_end_of_its_replica(cluster: Parts, end: str) -> None:
    """The same ClientSession, never initialised again, goes on through another replica, which adopted
    the session from its state in Redis: tools, calls, its log level and its resource subscription.
    Killed (a rolling restart's SIGTERM too), the holder's sessions are not lost."""
    spec = {"command": sys.executable, "args": [str(PASSTHROUGH)]}
    async with cluster.c.http() as c:
        assert (await c.post("/api/servers", json={"name": "pt", "spec": spec})).status_code == 201, "pt"
    updated: list[str] = []
    initializes: list[str] = []
    ids: set[str] = set()
    streams: list[str] = []

    async def on_message(message: Any) -> None:
        root = getattr(message, "root", message)
        uri = getattr(getattr(root, "params", None), "uri", None)
        if type(root).__name__ == "ResourceUpdatedNotification" and uri is not None:
            updated.append(str(uri))

    async def on_request(request: httpx2.Request) -> None:
        if b'"initialize"' in request.content:
            initializes.append(request.method)

    async def on_response(response: httpx2.Response) -> None:
        if response.request.method == "GET" and response.status_code == 200:
            streams.append(response.headers.get("x-replica", "?"))  # the GET stream (re)opened
        if sid := response.headers.get("mcp-session-id"):
            ids.add(sid)

    try:
        for r in cluster.replicas.values():
            await eventually(lambda r=r: _has(r, "pt__touch"), 30, f"pt on replica {r.name}")  # type: ignore[misc]
        http = httpx2.AsyncClient(
            event_hooks={"request": [on_request], "response": [on_response]}, timeout=30
        )
        async with (
            http,
            streamable_http_client(f"{cluster.lb.url('all')}/mcp", http_client=http) as (r, w),
            ClientSession(r, w, message_handler=on_message) as session,
        ):
            await session.initialize()
            await session.set_logging_level("debug")
            await session.subscribe_resource("pt://a")
            (session_id,) = ids
            state = json.loads(cluster.redis.client().get(f"patchbay:session-state:{session_id}") or "{}")
            assert state["logLevel"] == "debug" and state["subscriptions"] == ["pt://a"], state
            assert state["protocolVersion"] and state["clientParams"]["clientInfo"]["name"], state
            await eventually(lambda: len(streams) == 1, 30, "the GET stream to open")
            victim = await _session_holder(cluster, session_id)
            if end == "kill -9":
                cluster.replicas[victim].kill()
            else:  # waits for the replica to exit; the client's loop goes on meanwhile
                await asyncio.to_thread(cluster.replicas[victim].stop)

            assert "mb__echo" in {t.name for t in (await session.list_tools()).tools}
            result = await session.call_tool("mb__echo", {"text": "after the kill"})
            assert not result.is_error and result.content[0].text == "after the kill"  # type: ignore[union-attr]
            adopter = await _session_holder(cluster, session_id)
            assert adopter != victim and adopter in cluster.replicas, adopter
            # its subscription is held again at the adopter's hub, and its updates reach the session
            subscribed = await session.call_tool("pt__subscribed", {})
            assert subscribed.content[0].text == "pt://a"  # type: ignore[union-attr]
            # the client's GET stream, broken by the kill, reconnects to the adopter (directly or proxied)
            await eventually(lambda: len(streams) == 2, 30, "the GET stream to reconnect")
            await session.call_tool("pt__touch", {"uri": "pt://a"})
            await eventually(lambda: "pt://a" in updated, 30, "resources/updated after the adoption")
            state = json.loads(cluster.redis.client().get(f"patchbay:session-state:{session_id}") or "{}")
            assert state["logLevel"] == "debug", state
        assert initializes == ["POST"], initializes  # one initialize, before the kill; none after
    finally:
        for name, replica in cluster.replicas.items():
            if replica.proc is None:
                await _restart(cluster, name)
        async with cluster.a.http() as a:
            assert (await a.delete("/api/servers/pt")).status_code == 204


@pytest.mark.timeout(300)
async def test_a_profile_session_is_adopted_into_the_same_profile(cluster: Parts) -> None:
    async with cluster.c.http() as c:
        put = await c.put("/api/profiles/mbonly", json={"servers": ["mb"]})
        assert put.status_code == 200, put.text
    ids: set[str] = set()

    async def on_response(response: httpx2.Response) -> None:
        if sid := response.headers.get("mcp-session-id"):
            ids.add(sid)

    async def profile_everywhere() -> bool:
        for r in cluster.replicas.values():
            async with r.http() as h:
                if (await h.get("/api/profiles/mbonly")).status_code != 200:
                    return False
        return True

    try:
        await eventually(profile_everywhere, 30, "the profile on every replica")
        http = httpx2.AsyncClient(event_hooks={"response": [on_response]}, timeout=30)
        async with (
            http,
            streamable_http_client(f"{cluster.lb.url('all')}/mcp/mbonly", http_client=http) as (r, w),
            ClientSession(r, w) as session,
        ):
            await session.initialize()
            (session_id,) = ids
            state = json.loads(cluster.redis.client().get(f"patchbay:session-state:{session_id}") or "{}")
            assert state["path"] == "/mcp/mbonly", state
            victim = await _session_holder(cluster, session_id)
            cluster.replicas[victim].kill()
            names = {t.name for t in (await session.list_tools()).tools}
            assert "mb__echo" in names and all(n.startswith("mb__") for n in names), names
            assert await _session_holder(cluster, session_id) != victim
    finally:
        for name, replica in cluster.replicas.items():
            if replica.proc is None:
                await _restart(cluster, name)
        async with cluster.a.http() as a:
            assert (await a.delete("/api/profiles/mbonly")).status_code in (200, 204)


async def _open_sessions(replica: Replica) -> int:
    async with replica.http() as http:
        text = (await http.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("patchbay_mcp_sessions"))
    return int(float(line.split()[-1]))


async def _has(replica: Replica, tool: str) -> bool:
    return tool in await tools(replica)


@pytest.mark.timeout(300)
async def test_a_lean_session_is_adopted_after_its_replica_dies(cluster: Parts) -> None:
    """A session that never needed the SDK (initialize and calls, no GET stream) is held lean by its
    replica; the state that replica stored before answering its initialize is what another adopts."""
    accept = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "lean", "version": "1"},
        },
    }

    def echo(rid: int, text: str) -> dict[str, Any]:
        params = {"name": "mb__echo", "arguments": {"text": text}}
        return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}

    try:
        async with cluster.a.http() as a:
            opened = await a.post("/mcp", json=init, headers=accept)
            assert opened.status_code == 200, opened.text
            session_id = opened.headers["mcp-session-id"]
            headers = {**accept, "mcp-session-id": session_id, "mcp-protocol-version": "2025-06-18"}
            done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            assert (await a.post("/mcp", json=done, headers=headers)).status_code == 202
            before = await a.post("/mcp", json=echo(1, "before"), headers=headers)
            assert before.json()["result"]["content"][0]["text"] == "before"
        state = json.loads(cluster.redis.client().get(f"patchbay:session-state:{session_id}") or "{}")
        assert state["path"] == "/mcp" and state["protocolVersion"] == "2025-06-18", state
        assert state["clientParams"]["clientInfo"]["name"] == "lean", state
        assert await _session_holder(cluster, session_id) == "a"
        cluster.a.kill()
        async with cluster.b.http() as b:
            after = await b.post("/mcp", json=echo(2, "after"), headers=headers)
            assert after.status_code == 200, after.text
            assert after.json()["result"]["content"][0]["text"] == "after"
        assert await _session_holder(cluster, session_id) == "b"
    finally:
        for name, replica in cluster.replicas.items():
            if replica.proc is None:
                await _restart(cluster, name)


@pytest.mark.timeout(300)
async def test_two_replicas_racing_to_adopt_a_session_one_wins_the_other_proxies(cluster: Parts) -> None:
    ids: set[str] = set()

    async def on_response(response: httpx2.Response) -> None:
        if sid := response.headers.get("mcp-session-id"):
            ids.add(sid)

    http = httpx2.AsyncClient(event_hooks={"response": [on_response]}, timeout=30)
    try:
        async with (
            http,
            streamable_http_client(f"{cluster.lb.url('all')}/mcp", http_client=http) as (r, w),
            ClientSession(r, w) as session,
        ):
            init = await session.initialize()
            (session_id,) = ids
            victim = await _session_holder(cluster, session_id)
            survivors = [rep for name, rep in cluster.replicas.items() if name != victim]
            before = {rep.name: await _open_sessions(rep) for rep in survivors}
            cluster.replicas[victim].kill()
            headers = {
                "mcp-session-id": session_id,
                "mcp-protocol-version": init.protocol_version,
                "accept": "application/json, text/event-stream",
            }
            body = {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}

            async def ask(replica: Replica) -> httpx2.Response:
                async with replica.http() as h:
                    return await h.post("/mcp", json=body, headers=headers)

            answers = await asyncio.gather(*(ask(rep) for rep in survivors))
            for answer in answers:
                assert answer.status_code == 200, answer.text
                assert "mb__echo" in answer.text, answer.text
            winner = await _session_holder(cluster, session_id)
            assert winner in {rep.name for rep in survivors}, winner
            # the session was opened on the winner only; the other replica proxied to it
            gained = {rep.name: await _open_sessions(rep) - before[rep.name] for rep in survivors}
            assert gained == {rep.name: int(rep.name == winner) for rep in survivors}, (gained, winner)
    finally:
        for name, replica in cluster.replicas.items():
            if replica.proc is None:
                await _restart(cluster, name)


# --- agents across replicas ------------------------------------------------------------------------------


@pytest.mark.timeout(300)  # several processes die and come back on a shared machine
async def test_an_agent_on_a_serves_100_concurrent_calls_made_through_b_and_c(cluster: Parts) -> None:
    agent = cluster.agent("laptop", f"ws://127.0.0.1:{cluster.a.port}/agents")
    try:
        held = await wait_agent_everywhere(cluster, "laptop", list(cluster.replicas.values()))
        assert held == await replica_id(cluster.a)
        async with client(cluster.lb.url("bc")) as lb:
            answers = await asyncio.gather(
                *(call(lb, "laptop__mb__echo", {"text": f"call {i}"}) for i in range(100))
            )
        assert [text(r) for r in answers] == [f"call {i}" for i in range(100)]
        assert {r.headers["x-replica"] for r in answers} == {"b", "c"}

        # a timeout through B is the agent's timeout error, and the cancellation reaches the agent
        async with cluster.b.http() as b:
            r = await call(b, "laptop__mb__sleep", {"seconds": 30}, timeout=0.5)
        assert r.status_code == 504, r.text
        assert r.json()["error"] == "timeout" and "laptop" in r.json()["detail"]

        async def settled() -> bool:
            async with cluster.a.http() as a:
                got = {x["name"]: x for x in (await a.get("/api/agents")).json()}
            return bool(got["laptop"]["calls_in_flight"] == 0)

        await eventually(settled, 15, "the cancelled call to leave the agent")
    finally:
        agent.kill()
    for replica in (cluster.b, cluster.c):  # the agent's tools leave every replica with it
        await eventually(
            lambda replica=replica: _without(replica, "laptop__mb__echo"),
            15,
            f"laptop gone from {replica.name}",
        )


async def _without(replica: Replica, tool: str) -> bool:
    return tool not in await tools(replica)


async def test_sampling_asked_during_a_forwarded_call_reaches_the_caller_s_client(cluster: Parts) -> None:
    """server-everything behind an agent on A asks for sampling during a call made through B: the question
    goes A → B over Redis, to the /mcp client that made the call, and its answer back to the server."""
    thirdparty.require("everything")
    agent = start_agent(
        None, cluster.workdir / "agent-everything.json", cluster.workdir / "sampler.log", token("sampler"),
        url=f"ws://127.0.0.1:{cluster.a.port}/agents",
    )  # fmt: skip
    tool = "sampler__everything__trigger-sampling-request"
    asked: list[types.CreateMessageRequestParams] = []

    async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append(params)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled on B's client"), model="t"
        )

    try:
        await eventually(lambda: _has(cluster.b, tool), 60, "the agent's tools on B")
        async with (
            streamable_http_client(f"{cluster.b.base}/mcp") as (r, w),
            ClientSession(r, w, sampling_callback=sampling) as session,
        ):
            await session.initialize()
            result = await session.call_tool(tool, {"prompt": "asked on A"})
            assert not result.is_error, result
            assert "sampled on B's client" in json.dumps(result.model_dump(mode="json"))
            assert "asked on A" in str(asked[0].messages[0].content)
        async with cluster.b.http() as b:  # a caller that cannot sample gets the refusal, nothing hangs
            refused = await call(b, tool, {"prompt": "x"})
        assert refused.status_code == 200 and "no client is connected" in refused.text, refused.text
    finally:
        agent.kill()


async def test_progress_of_a_forwarded_call_reaches_the_caller(cluster: Parts) -> None:
    agent = cluster.agent("desk", f"ws://127.0.0.1:{cluster.a.port}/agents")
    progress: list[float] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    try:
        await wait_agent_everywhere(cluster, "desk", list(cluster.replicas.values()))
        async with (
            streamable_http_client(f"{cluster.b.base}/mcp") as (r, w),
            ClientSession(r, w) as session,
        ):
            await session.initialize()
            result = await session.call_tool(
                "desk__mb__sleep", {"seconds": 0.5}, progress_callback=on_progress
            )
        assert not result.is_error, result
        assert progress, "no progress came back from the agent on replica a"
    finally:
        agent.kill()
    await eventually(lambda: _without(cluster.b, "desk__mb__echo"), 15, "desk gone from b")


async def test_calls_waiting_on_an_agent_that_leaves_fail_at_once(cluster: Parts) -> None:
    agent = cluster.agent("desk", f"ws://127.0.0.1:{cluster.a.port}/agents")
    try:
        await wait_agent_everywhere(cluster, "desk", list(cluster.replicas.values()))
        async with cluster.b.http() as b:
            waiting = asyncio.ensure_future(call(b, "desk__mb__sleep", {"seconds": 600}, timeout=600))

            async def in_flight() -> bool:
                async with cluster.a.http() as a:
                    got = {x["name"]: x for x in (await a.get("/api/agents")).json()}
                return bool(got["desk"]["calls_in_flight"] == 1)

            await eventually(in_flight, 15, "the forwarded call to reach the agent")
            agent.kill()
            r = await waiting  # long before its 600 s
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "unavailable" and "desk" in r.json()["detail"]
    finally:
        agent.kill()


@pytest.mark.timeout(300)  # several processes die and come back on a shared machine
async def test_kill_9_of_a_replica_under_load(cluster: Parts) -> None:
    """The agent dials in through haproxy; its replica is killed while calls run through every replica:
    only the calls in flight on (or forwarded to) that replica fail, each with a clear error; the agent
    reconnects through haproxy to another replica and keeps its name and tools."""
    agent = cluster.agent("roamer", cluster.lb.ws("all"))
    try:
        first = await wait_agent_everywhere(cluster, "roamer", list(cluster.replicas.values()))
        ids = {n: await replica_id(r) for n, r in cluster.replicas.items()}
        victim_name = next(n for n, rid in ids.items() if rid == first)
        victim = cluster.replicas[victim_name]
        survivors = [r for n, r in cluster.replicas.items() if n != victim_name]
        stop = asyncio.Event()
        outcomes: list[tuple[str, int, str]] = []

        async def load(tool: str) -> None:
            async with client(cluster.lb.url("all")) as lb:
                while not stop.is_set():
                    try:
                        r = await call(lb, tool, {"text": "ping"})
                        outcomes.append((tool, r.status_code, r.text))
                    except httpx2.TransportError as exc:  # haproxy closed on us: never silent
                        outcomes.append((tool, 0, repr(exc)))

        workers = [asyncio.ensure_future(load(t)) for t in ("mb__echo", "roamer__mb__echo") for _ in range(4)]
        await eventually(lambda: len(outcomes) > 40, 30, "load to run")
        victim.kill()
        moved = await eventually(
            lambda: _moved(survivors, "roamer", first),
            60,
            f"the agent to reconnect to another replica than {victim_name} ({first}; {ids})",
        )
        assert moved != first
        before = len(outcomes)
        await eventually(lambda: len(outcomes) > before + 40, 30, "load to continue after the kill")
        stop.set()
        await asyncio.gather(*workers)
        failed = [o for o in outcomes if o[1] != 200]
        for tool, status, body in failed:  # a clear error: haproxy's 502/503, or patchbay's own
            assert status in (0, 502, 503), (tool, status, body)
            if status == 503 and body.startswith("{"):
                assert "roamer" in body and ("replica" in body or "not connected" in body), body
        assert len(failed) < len(outcomes) / 2, failed[:5]
        last = [o for o in outcomes[-16:]]  # after the move, everything works again
        assert all(o[1] == 200 for o in last), last
        victim.start()
        await cluster.ready()
        await wait_agent_everywhere(cluster, "roamer", list(cluster.replicas.values()))
    finally:
        agent.kill()


async def _moved(survivors: list[Replica], agent: str, old: str) -> str | None:
    seen = {await holder(r, agent) for r in survivors}
    if len(seen) == 1 and None not in seen and old not in seen:
        for r in survivors:
            if f"{agent}__mb__echo" not in await tools(r):
                return None
        return seen.pop()
    return None


@pytest.mark.timeout(300)  # several processes die and come back on a shared machine
async def test_a_replicas_one_server_runs_on_one_replica_and_moves_when_it_dies(cluster: Parts) -> None:
    """``"replicas": "one"``: one process in the whole cluster, every replica's calls reach it; when its
    replica is killed, another takes the lease over and starts it."""

    async def pids() -> dict[str, int | None]:
        out = {}
        for name, replica in cluster.replicas.items():
            if replica.proc is None:
                continue
            async with replica.http() as http:
                r = await http.get("/api/servers/solo")
                out[name] = r.json()["pid"] if r.status_code == 200 and r.json()["state"] == "ready" else -1
        return out

    async def one_process() -> str | None:
        got = await pids()
        running = [n for n, pid in got.items() if pid not in (None, -1)]
        if len(running) == 1 and -1 not in got.values():
            return running[0]
        return None

    async with cluster.a.http() as a:
        r = await a.post("/api/servers", json={"name": "solo", "spec": bad(replicas="one")})
        assert r.status_code == 201, r.text
        bad_value = await a.post("/api/servers", json={"name": "solo2", "spec": bad(replicas="two")})
        assert bad_value.status_code == 422 and "replicas" in bad_value.text, bad_value.text
    try:
        holder = await eventually(one_process, 30, "solo to run on exactly one replica")

        async def whoami_everywhere() -> set[str]:
            answers = set()
            for replica in cluster.replicas.values():
                if replica.proc is not None:
                    async with replica.http() as http:
                        answers.add(text(await call(http, "solo__whoami", {})))
            return answers

        assert len(await whoami_everywhere()) == 1  # one process answers every replica
        async with cluster.c.http() as c:
            runs = (await c.get("/api/cluster")).json()["servers"]["solo"]
        assert runs == await replica_id(cluster.replicas[holder])
        before = await whoami_everywhere()
        cluster.replicas[holder].kill()
        new_holder = await eventually(one_process, 60, "another replica to take solo over")
        assert new_holder != holder

        async def one_new_process() -> bool:  # each survivor notices the move within its next check
            try:
                answers = await whoami_everywhere()
            except AssertionError:  # a survivor still forwarding to the dead holder: a clear 503
                return False
            return len(answers) == 1 and answers != before

        await eventually(one_new_process, 30, "every survivor to call the new solo process")
        cluster.replicas[holder].start()
        await cluster.ready()
        assert await eventually(one_process, 30, "still one solo process") == new_holder
        await _fenced_call_is_refused(cluster, cluster.replicas[new_holder])
    finally:
        async with cluster.b.http() as b:
            assert (await b.delete("/api/servers/solo")).status_code == 204


async def _fenced_call_is_refused(cluster: Parts, holder: Replica) -> None:
    """A call meant for another holder of the lease (an old fencing token) is refused, not run."""
    import redis.asyncio as aioredis

    target = await replica_id(holder)
    client = aioredis.Redis(port=cluster.redis.port, decode_responses=True)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe("patchbay:rpc:test-caller")
        call_message = {
            "t": "call", "id": "test-caller/1", "from": "test-caller", "agent": "solo",
            "method": "tools/call", "params": {"name": "whoami", "arguments": {}}, "timeout": 10,
            "progress": False, "fence": 0,
        }  # fmt: skip
        assert await client.publish(f"patchbay:rpc:{target}", json.dumps(call_message)) == 1
        async with asyncio.timeout(15):
            while (message := await pubsub.get_message(timeout=1.0)) is None:
                pass
        answer = json.loads(message["data"])
        assert answer["t"] == "error" and "no longer holds its lease" in answer["message"], answer
    finally:
        await pubsub.aclose()
        await client.aclose()


@pytest.mark.timeout(300)  # several processes die and come back on a shared machine
async def test_redis_restarted_under_load(cluster: Parts) -> None:
    """Redis goes away (and comes back empty): replicas keep serving local and forwarded calls they can,
    refuse config changes with a clear 503 naming Redis, and resynchronise when it returns."""
    agent = cluster.agent("steady", f"ws://127.0.0.1:{cluster.a.port}/agents")
    try:
        await wait_agent_everywhere(cluster, "steady", list(cluster.replicas.values()))
        stop = asyncio.Event()
        local: list[int] = []

        async def load() -> None:
            async with client(cluster.lb.url("all")) as lb:
                while not stop.is_set():
                    local.append((await call(lb, "mb__echo", {"text": "x"})).status_code)

        workers = [asyncio.ensure_future(load()) for _ in range(4)]
        await eventually(lambda: len(local) > 20, 30, "load to run")
        cluster.redis.stop()
        async with cluster.b.http() as b:
            r = await b.post("/api/servers", json={"name": "while_down", "spec": bad()})
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "cluster_unavailable" and "Redis" in r.json()["detail"]
            r = await call(b, "steady__mb__echo", {"text": "x"})
            assert r.status_code == 503 and "Redis" in r.json()["detail"], r.text
            assert (await b.get("/readyz")).json()["cluster"]["redis"] is False
            status = await b.get("/api/cluster")
            assert status.status_code == 200 and status.json()["redis"]["ok"] is False, status.text
        before = len(local)
        await eventually(lambda: len(local) > before + 20, 30, "local calls to go on without Redis")
        cluster.redis.start()
        await wait_agent_everywhere(cluster, "steady", list(cluster.replicas.values()))
        async with cluster.b.http() as b:
            assert text(await call(b, "steady__mb__echo", {"text": "back"})) == "back"

            async def changed() -> bool:
                r = await b.post("/api/servers", json={"name": "after", "spec": bad()})
                return r.status_code == 201

            await eventually(changed, 15, "config changes to be accepted again")
            assert (await b.delete("/api/servers/after")).status_code == 204
        stop.set()
        await asyncio.gather(*workers)
        assert set(local) == {200}, collections.Counter(local)
    finally:
        agent.kill()
