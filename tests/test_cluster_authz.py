"""The built-in authorization server (``auth.server``) on a cluster: one sign-in crosses every replica.

A real Redis, three real ``patchbay serve --cluster`` replicas with the same ``PATCHBAY_SECRET_KEY`` and
``auth.server`` issuing for the load balancer's URL, and a real haproxy, round-robin, no stickiness. The
MCP SDK's own OAuth client signs in through haproxy (its consent form posted as a browser would, the GET
and the POST landing on different replicas); the raw protocol is then driven replica by replica, so each
step of one sign-in is known to land on another replica than the step before.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from cryptography.fernet import Fernet
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

from tests.cluster_parts import Haproxy, RedisProc, Replica, free_port
from tests.conftest import bad
from tests.test_agents import eventually
from tests.test_authorization_server import (
    ADMIN,
    CALLBACK,
    MemoryStorage,
    consent_over_http,
    mcp_status,
    pkce,
    refresh,
    register,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY = Fernet.generate_key().decode()


class Parts:
    def __init__(self, redis: RedisProc, replicas: dict[str, Replica], lb: Haproxy) -> None:
        self.redis, self.replicas, self.lb = redis, replicas, lb

    @property
    def issuer(self) -> str:
        return self.lb.url("all")

    def direct(self, name: str) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url=self.replicas[name].base, timeout=30)

    def admin(self, name: str) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            base_url=self.replicas[name].base, timeout=30, headers={"Authorization": f"Bearer {ADMIN}"}
        )


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parts]:
    workdir = tmp_path_factory.mktemp("cluster-authz")
    redis = RedisProc(workdir).start()
    replicas = {
        name: Replica(
            name, workdir / name / "patchbay.json", workdir, redis.url, env={"PATCHBAY_SECRET_KEY": KEY}
        )
        for name in ("a", "b", "c")
    }
    lb = Haproxy(workdir, {"all": list(replicas.values())})
    doc = {
        "mcpServers": {"gh": bad("--name", "gh")},
        "pinning": "off",
        "auth": {"tokens": [ADMIN], "server": {"enabled": True, "issuer": lb.url("all")}},
    }
    for replica in replicas.values():
        replica.config.parent.mkdir()
        replica.config.write_text(json.dumps(doc))
    try:
        for replica in replicas.values():
            replica.start()
        lb.start()
        yield Parts(redis, replicas, lb)
    finally:
        lb.stop()
        for replica in replicas.values():
            replica.stop()
        redis.stop()


@pytest.fixture
async def cluster(parts: Parts) -> AsyncIterator[Parts]:
    """Every replica ready (readiness needs the admin token here), and each reached through haproxy."""
    for replica in parts.replicas.values():
        await replica.ready(token=ADMIN)
    await parts.lb.ready("all", 3, token=ADMIN)
    yield parts


def local(url: str) -> str:
    """A URL of the issuer (the balancer) as a path and query, to send to one replica."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


async def sign_in_across(cluster: Parts, *, replay: bool = False) -> dict[str, Any]:
    """register on a, authorize on b, the consent page's GET on c and POST on a, the code's exchange on b."""
    redirect = CALLBACK.format(port=free_port())
    async with cluster.direct("a") as a, cluster.direct("b") as b, cluster.direct("c") as c:
        client_id = await register(a, redirect)
        verifier, challenge = pkce()
        r = await b.get(
            "/authorize",
            params={
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": redirect,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "state": "st4te",
                "resource": f"{cluster.issuer}/mcp",
            },
        )
        assert r.status_code == 302, r.text
        page = await c.get(local(r.headers["location"]))
        assert page.status_code == 200 and "raw client" in page.text, page.text
        done = await consent_over_http(a, local(r.headers["location"]))
        assert done.status_code == 303, done.text
        query = parse_qs(urlsplit(done.headers["location"]).query)
        assert query["state"] == ["st4te"] and query["iss"] == [cluster.issuer]
        data = {
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": redirect,
            "client_id": client_id,
            "code_verifier": verifier,
        }
        r = await b.post("/token", data=data)
        assert r.status_code == 200, r.text
        if replay:  # a code is spent once, on whichever replica; its replay ends the grant it gave
            again = await c.post("/token", data=data)
            assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text
        return {"client_id": client_id, **r.json()}


async def test_the_sdk_client_signs_in_through_the_balancer_and_calls_tools(cluster: Parts) -> None:
    redirect = CALLBACK.format(port=free_port())
    urls: asyncio.Queue[str] = asyncio.Queue()
    answered_by: set[str] = set()

    async def redirect_handler(url: str) -> None:
        await urls.put(url)

    async def callback_handler() -> AuthorizationCodeResult:
        async with httpx2.AsyncClient(base_url=cluster.issuer, timeout=30) as browser:
            browser.event_hooks["response"] = [lambda r: _note(r, answered_by)]
            sent = await browser.get(await urls.get())  # /authorize, on one replica ...
            assert sent.status_code == 302, sent.text
            done = await consent_over_http(
                browser, sent.headers["location"]
            )  # ... the consent page on others
        assert done.status_code == 303, done.text
        query = {k: v[0] for k, v in parse_qs(urlsplit(done.headers["location"]).query).items()}
        return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))

    storage = MemoryStorage()
    auth = OAuthClientProvider(
        server_url=f"{cluster.issuer}/mcp",
        client_metadata=OAuthClientMetadata(
            client_name="sdk cluster client", redirect_uris=[redirect], token_endpoint_auth_method="none"
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    async with (
        httpx2.AsyncClient(
            auth=auth, timeout=30, event_hooks={"response": [lambda r: _note(r, answered_by)]}
        ) as http,
        streamable_http_client(f"{cluster.issuer}/mcp", http_client=http) as (r, w),
        ClientSession(r, w) as session,
    ):
        await session.initialize()
        for n in range(6):  # round-robin: every replica takes some of these
            result = await session.call_tool("gh__add", {"a": n, "b": 1})
            assert result.structured_content == {"result": n + 1}
    assert answered_by == {"a", "b", "c"}
    assert storage.tokens is not None and storage.tokens.access_token.startswith("pbat_")
    for name in ("a", "b", "c"):  # the one client and its grant, listed by every replica
        async with cluster.admin(name) as admin:
            clients = (await admin.get("/api/oauth/clients")).json()
            assert [c["grants"] for c in clients if c["client_name"] == "sdk cluster client"] == [1]


async def _note(response: httpx2.Response, seen: set[str]) -> None:
    if "x-replica" in response.headers:
        seen.add(response.headers["x-replica"])


async def test_one_sign_in_step_per_replica_and_the_tokens_work_on_every_one(cluster: Parts) -> None:
    tokens = await sign_in_across(cluster)
    for replica in cluster.replicas.values():  # issued on b a moment ago: known at once everywhere
        assert await mcp_status(f"{replica.base}/mcp", tokens["access_token"]) == 200
    async with cluster.direct("c") as c:  # the refresh token rotates on c ...
        r = await refresh(c, tokens["client_id"], tokens["refresh_token"])
        assert r.status_code == 200, r.text
        fresh = r.json()
    for replica in cluster.replicas.values():
        assert await mcp_status(f"{replica.base}/mcp", fresh["access_token"]) == 200
    async with cluster.direct("a") as a:  # ... and the rotated-out one, replayed on a, ends the grant
        r = await refresh(a, tokens["client_id"], tokens["refresh_token"])
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    for replica in cluster.replicas.values():

        async def refused(base: str = replica.base) -> bool:
            return await mcp_status(f"{base}/mcp", fresh["access_token"]) == 401

        await eventually(refused, 30, f"the ended grant refused on {replica.name}")


async def test_a_code_replayed_on_another_replica_is_refused_and_ends_its_grant(cluster: Parts) -> None:
    tokens = await sign_in_across(cluster, replay=True)
    for replica in cluster.replicas.values():

        async def refused(base: str = replica.base) -> bool:
            return await mcp_status(f"{base}/mcp", tokens["access_token"]) == 401

        await eventually(refused, 30, f"the replayed code's grant refused on {replica.name}")


async def test_two_replicas_spending_one_refresh_token_at_once_only_one_wins(cluster: Parts) -> None:
    tokens = await sign_in_across(cluster)
    async with cluster.direct("a") as a, cluster.direct("b") as b:
        answers = await asyncio.gather(
            refresh(a, tokens["client_id"], tokens["refresh_token"]),
            refresh(b, tokens["client_id"], tokens["refresh_token"]),
        )
    assert sorted(r.status_code for r in answers) == [200, 400], [r.text for r in answers]


async def test_a_grant_revoked_on_one_replica_is_refused_by_all(cluster: Parts) -> None:
    tokens = await sign_in_across(cluster)
    async with cluster.admin("b") as admin:
        grants = (await admin.get("/api/oauth/grants")).json()
        mine = [g for g in grants if g["client_id"] == tokens["client_id"]]
        assert len(mine) == 1 and mine[0]["live_access_tokens"] == 1
        assert (await admin.delete(f"/api/oauth/grants/{mine[0]['id']}")).status_code == 204
    for replica in cluster.replicas.values():

        async def refused(base: str = replica.base) -> bool:
            return await mcp_status(f"{base}/mcp", tokens["access_token"]) == 401

        await eventually(refused, 30, f"the revoked grant refused on {replica.name}")
    async with cluster.direct("c") as c:
        r = await refresh(c, tokens["client_id"], tokens["refresh_token"])
        assert r.status_code == 400, r.text


async def test_one_consent_form_posted_on_two_replicas_at_once_is_answered_once(cluster: Parts) -> None:
    redirect = CALLBACK.format(port=free_port())
    async with cluster.direct("a") as a, cluster.direct("b") as b, cluster.direct("c") as c:
        client_id = await register(a, redirect)
        _, challenge = pkce()
        r = await a.get(
            "/authorize",
            params={"response_type": "code", "client_id": client_id, "redirect_uri": redirect,
                    "code_challenge": challenge, "code_challenge_method": "S256", "state": "s"},
        )  # fmt: skip
        page = await a.get(local(r.headers["location"]))
        fields = dict(re.findall(r'name="(request|csrf)" value="([^"]*)"', page.text))
        form = {**fields, "action": "approve", "token": ADMIN, "role": "user", "profile": ""}
        cookie = {"Cookie": f"patchbay_consent={page.cookies.get('patchbay_consent') or ''}"}
        answers = await asyncio.gather(
            *(http.post("/authorize/consent", data=form, headers=cookie) for http in (b, c))
        )
    # one approval and one code; the other post is refused: "answered already" when both read the request
    # before either took it, "unknown" when it came a moment after
    assert [r.status_code for r in answers].count(303) == 1, [r.text for r in answers]
    refused = next(r for r in answers if r.status_code != 303)
    if refused.status_code == 409:
        assert "answered already" in refused.text, refused.text
    else:
        assert refused.status_code == 400 and "unknown" in refused.text, refused.text


async def test_redis_holds_only_ciphertext(cluster: Parts) -> None:
    tokens = await sign_in_across(cluster)
    client = cluster.redis.client()
    try:
        keys = sorted(k for k in client.scan_iter("patchbay:authz:*"))
        assert "patchbay:authz:grants" in keys and "patchbay:authz:clients" in keys
        dump = json.dumps(
            [client.hgetall("patchbay:authz:grants"), client.hgetall("patchbay:authz:clients"), keys]
        )
    finally:
        client.close()
    # client and grant ids name the records (a client_id is no secret: it travels in every URL)
    assert tokens["client_id"] in dump
    for secret in (tokens["access_token"], tokens["refresh_token"], "raw client", "st4te", "127.0.0.1"):
        assert secret not in dump


async def test_without_redis_known_tokens_work_and_sign_ins_are_refused_then_it_comes_back_empty(
    cluster: Parts,
) -> None:
    """Last in the module: it restarts Redis, without persistence, so it comes back with nothing."""
    tokens = await sign_in_across(cluster)
    for replica in cluster.replicas.values():  # each replica's copy now holds the grant
        assert await mcp_status(f"{replica.base}/mcp", tokens["access_token"]) == 200
    cluster.redis.stop()
    for replica in cluster.replicas.values():  # each serves its copy
        assert await mcp_status(f"{replica.base}/mcp", tokens["access_token"]) == 200
    async with cluster.direct("b") as b:
        r = await b.post(
            "/register",
            json={"redirect_uris": [CALLBACK.format(port=1)], "token_endpoint_auth_method": "none"},
        )
        assert r.status_code == 503 and "Redis" in r.json()["detail"], r.text
        r = await refresh(b, tokens["client_id"], tokens["refresh_token"])
        assert r.status_code == 503 and "Redis" in r.json()["detail"], r.text
    cluster.redis.start()  # empty: the first replica to notice seeds it, the others merge their copies
    for replica in cluster.replicas.values():
        await replica.ready(token=ADMIN)
    again = await sign_in_across(cluster)  # sign-ins work again, across replicas
    for replica in cluster.replicas.values():
        for token in (tokens["access_token"], again["access_token"]):

            async def works(base: str = replica.base, token: str = token) -> bool:
                return await mcp_status(f"{base}/mcp", token) == 200

            await eventually(works, 30, f"a token known before and after Redis' restart on {replica.name}")
    async with cluster.direct("c") as c:  # the old grant's refresh token, kept through it all, rotates
        r = await refresh(c, tokens["client_id"], tokens["refresh_token"])
        assert r.status_code == 200, r.text


async def test_a_single_hub_s_sign_ins_seed_an_empty_cluster(tmp_path: Path) -> None:
    """A hub signed in to as a single process keeps its clients' grants when it joins an empty cluster."""
    redis = RedisProc(tmp_path).start()
    single = Replica("one", tmp_path / "one" / "patchbay.json", tmp_path, None)
    other = Replica(
        "two", tmp_path / "two" / "patchbay.json", tmp_path, redis.url, env={"PATCHBAY_SECRET_KEY": KEY}
    )
    doc = {
        "mcpServers": {"gh": bad("--name", "gh")},
        "pinning": "off",
        "auth": {"tokens": [ADMIN], "server": {"enabled": True, "issuer": single.base}},
    }
    for replica in (single, other):
        replica.config.parent.mkdir()
        replica.config.write_text(json.dumps(doc))
    parts = Parts(redis, {"a": single, "b": single, "c": single}, Haproxy(tmp_path, {"all": [single]}))
    parts.lb.ports["all"] = single.port  # the issuer: the single hub itself, no balancer here
    try:
        single.start()
        await single.ready(token=ADMIN)
        tokens = await sign_in_across(parts)
        single.stop()
        single.redis_url = redis.url
        single.env = {"PATCHBAY_SECRET_KEY": KEY}
        single.start()  # the same hub, now the first replica of a cluster: its state file seeds Redis
        await single.ready(token=ADMIN)
        other.start()
        await other.ready(token=ADMIN)
        for replica in (single, other):
            assert await mcp_status(f"{replica.base}/mcp", tokens["access_token"]) == 200
        async with other.http() as http:
            r = await refresh(http, tokens["client_id"], tokens["refresh_token"])
            assert r.status_code == 200, r.text
    finally:
        single.stop()
        other.stop()
        redis.stop()


async def test_auth_server_on_a_cluster_without_the_secret_key_stops_serve_with_its_name(
    tmp_path: Path,
) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {},
                "auth": {"tokens": [ADMIN], "server": {"enabled": True, "issuer": "https://hub.example.com"}},
            }
        )
    )
    redis = RedisProc(tmp_path).start()
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "patchbay", "serve", "--config", str(config), "--port", str(free_port()),
             "--no-reload", "--cluster", redis.url],
            capture_output=True, text=True, timeout=120, env=_without_key(),
        )  # fmt: skip
    finally:
        redis.stop()
    assert done.returncode == 2, done.stderr
    assert "PATCHBAY_SECRET_KEY" in done.stderr and "auth.server" in done.stderr


def _without_key() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PATCHBAY_SECRET_KEY"}
