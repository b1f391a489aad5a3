"""Signing in to a remote server once, for every replica: tokens and pending sign-ins shared in Redis.

A real Redis, two real ``patchbay serve --cluster`` replicas given the same ``PATCHBAY_SECRET_KEY`` (each
with its own data directory, so nothing is shared through the disk), node-oidc-provider as the
authorization server, an SDK ``MCPServer`` that validates its tokens, and a headless Chromium at the
provider's login and consent pages. The sign-in starts on replica A; the browser's redirect goes to replica
B, as it would through a load balancer.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from cryptography.fernet import Fernet

from tests.cluster_parts import RedisProc, Replica
from tests.oauth.harness import ProtectedServer, Provider, consent, provider_available
from tests.test_agents import eventually
from tests.test_oauth import browser, provider  # noqa: F401 (test_oauth's fixtures: the provider, Chromium)
from tests.test_per_user_signin import URL_IN_ERROR, whoami

try:
    from playwright.async_api import Browser, async_playwright
except ImportError:  # pragma: no cover - `make test` installs it
    async_playwright = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(
    not provider_available() or async_playwright is None, reason="needs tests/npm (make test)"
)
KEY = Fernet.generate_key().decode()


async def ready(replica: Replica, timeout: float = 60, token: str | None = None) -> None:
    """Up (its remote server waits for a sign-in, so /readyz is 503 until then: /healthz)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with replica.http() as http, asyncio.timeout(timeout):
        while True:
            assert replica.proc is not None and replica.proc.poll() is None, replica.log.read_text()
            try:
                if (await http.get("/healthz", headers=headers)).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            await asyncio.sleep(0.05)


async def state(replica: Replica, server: str, token: str | None = None) -> str:
    async with replica.http() as http:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return str((await http.get(f"/api/servers/{server}", headers=headers)).json()["state"])


@pytest.mark.asyncio(loop_scope="module")
async def test_a_sign_in_begun_on_one_replica_and_finished_on_another_serves_both(
    provider: Provider,  # noqa: F811 (the imported fixture)
    browser: Browser,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    mcp_server = await ProtectedServer(provider.issuer).start()
    redis = RedisProc(tmp_path).start()
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"mcpServers": {"linear": {"url": mcp_server.url}}}))
    replicas = {
        n: Replica(
            n, seed, tmp_path, redis.url, env={"PATCHBAY_SECRET_KEY": KEY, "XDG_DATA_HOME": str(tmp_path / n)}
        )
        for n in ("a", "b")
    }
    a, b = replicas["a"], replicas["b"]
    try:
        for r in replicas.values():
            r.start()
        await asyncio.gather(ready(a), ready(b))
        async with a.http() as http:
            assert (await http.get("/api/cluster")).json()["oauthShared"] is True
        for r in (a, b):
            await eventually(lambda r=r: _is(r, "linear", "needs_auth"), 30, f"{r.name} waiting for sign-in")
        async with a.http() as http:  # the public callback URL (a load balancer's) reaches B here
            r = await http.post("/api/servers/linear/auth", json={"redirectUri": f"{b.base}/oauth/callback"})
            assert r.status_code == 200, r.text
            url = r.json()["url"]
        client = redis.client()
        assert client.keys("patchbay:oauth-pending:*"), "the pending sign-in is in Redis"
        await consent(browser, url)  # the provider's redirect reaches B, which never saw the sign-in begin
        assert not client.keys("patchbay:oauth-pending:*"), "used once, then gone"
        for r in (a, b):
            await eventually(lambda r=r: _is(r, "linear", "ready"), 30, f"linear ready on {r.name}")
            async with r.http() as http:
                called = await http.post("/api/tools/linear__echo/call", json={"arguments": {"text": r.name}})
                assert called.status_code == 200 and r.name in called.text, called.text
        # what Redis holds is ciphertext, which only the replicas' key opens: no token in the clear
        stored = {k: client.get(k) for k in client.keys("patchbay:oauth*")}
        assert stored, "the tokens are in Redis"
        for value in stored.values():
            assert value is not None
            record = json.loads(Fernet(KEY).decrypt(value.encode()))
            secrets = [
                t
                for r in record.values()
                for t in (r["tokens"]["access_token"], r["tokens"].get("refresh_token"))
            ]
            assert secrets and all(t not in value for t in secrets if t)
            assert "access_token" not in value
        # nothing was written to either replica's own token store
        assert not list((tmp_path / "a").rglob("server-*.tokens"))
        assert not list((tmp_path / "b").rglob("server-*.tokens"))
        # signing out on B forgets the tokens for every replica (A's open session ends when its token does)
        async with b.http() as http:
            assert (await http.delete("/api/servers/linear/auth")).status_code == 204
        assert not client.keys("patchbay:oauth:*")

        async def signed_out_on_a() -> bool:
            async with a.http() as http:
                return (await http.get("/api/servers/linear/auth")).json()["signed_in"] is False

        await eventually(signed_out_on_a, 10, "A to see the sign-out")
    finally:
        for r in replicas.values():
            r.stop()
        redis.stop()
        await mcp_server.stop()


OPERATOR = "operator-hub-token-0123456789abcdef"
ALICE = "alice-hub-token-0123456789abcdef01"


@pytest.mark.asyncio(loop_scope="module")
async def test_a_per_user_sign_in_begun_on_one_replica_and_finished_on_another_serves_that_user_on_both(
    provider: Provider,  # noqa: F811 (the imported fixture)
    browser: Browser,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    """``"credentials": "perUser"``: alice's own sign-in ends on the replica her browser's redirect reaches
    (one that never made her client), and both replicas then call the server with her tokens, not the
    operator's; her sign-out on that replica signs her out on the other."""
    mcp_server = await ProtectedServer(provider.issuer).start()
    redis = RedisProc(tmp_path).start()
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            {
                "mcpServers": {"up": {"url": mcp_server.url, "credentials": "perUser"}},
                "auth": {
                    "tokens": [
                        {"name": "operator", "token": OPERATOR, "role": "admin"},
                        {"name": "alice", "token": ALICE, "role": "user"},
                    ]
                },
            }
        )
    )
    replicas = {
        n: Replica(
            n, seed, tmp_path, redis.url, env={"PATCHBAY_SECRET_KEY": KEY, "XDG_DATA_HOME": str(tmp_path / n)}
        )
        for n in ("a", "b")
    }
    a, b = replicas["a"], replicas["b"]

    def as_(token: str, replica: Replica, host: str | None = None) -> httpx2.AsyncClient:
        headers = {"Authorization": f"Bearer {token}", **({"Host": host} if host else {})}
        return httpx2.AsyncClient(base_url=replica.base, headers=headers, timeout=30)

    try:
        for r in replicas.values():
            r.start()
        await asyncio.gather(ready(a, token=OPERATOR), ready(b, token=OPERATOR))
        async with as_(OPERATOR, a) as http:  # the operator's shared sign-in lists the tools
            r = await http.post("/api/servers/up/auth", json={"redirectUri": f"{b.base}/oauth/callback"})
            assert r.status_code == 200, r.text
            await consent(browser, r.json()["url"], login="operator")
        for r in (a, b):
            await eventually(lambda r=r: _is(r, "up", "ready", OPERATOR), 30, f"up ready on {r.name}")
        failed, text = await whoami(f"{a.base}/mcp", ALICE)  # alice has not signed in herself
        assert failed and "'alice' has not signed in" in text and URL_IN_ERROR.search(text), text
        # her sign-in starts on A, reached under B's host name (as through a load balancer's), so the
        # provider sends her browser back to B, which never saw it begin
        async with as_(ALICE, a, host=f"127.0.0.1:{b.port}") as http:
            r = await http.post("/api/servers/up/sign-in")
            assert r.status_code == 200, r.text
            assert f"127.0.0.1%3A{b.port}%2Foauth%2Fcallback" in r.json()["url"]
            await consent(browser, r.json()["url"], login="alice")
        for r in (a, b):

            async def as_alice(r: Replica = r) -> bool:
                return await whoami(f"{r.base}/mcp", ALICE) == (False, "alice")

            await eventually(as_alice, 30, f"alice's own tokens used on {r.name}")
        client = redis.client()
        assert [k for k in client.keys("patchbay:oauth:up~*")], "her tokens are in Redis, apart"
        async with as_(ALICE, b) as http:  # she signs out on B ...
            assert (await http.delete("/api/servers/up/sign-in")).status_code == 204

        async def signed_out_on_a() -> bool:  # ... and A refuses her until she signs in again
            failed, text = await whoami(f"{a.base}/mcp", ALICE)
            return failed and "has not signed in" in text

        await eventually(signed_out_on_a, 30, "A to see alice's sign-out")
    finally:
        for r in replicas.values():
            r.stop()
        redis.stop()
        await mcp_server.stop()


async def _is(replica: Replica, server: str, wanted: str, token: str | None = None) -> bool:
    return await state(replica, server, token) == wanted


def test_a_secret_key_that_is_no_fernet_key_stops_serve_with_its_name(tmp_path: Path) -> None:
    redis = RedisProc(tmp_path).start()
    try:
        config = tmp_path / "c.json"
        config.write_text(json.dumps({"mcpServers": {}}))
        proc = subprocess.run(
            [sys.executable, "-m", "patchbay", "serve", "--config", str(config), "--port", "0",
             "--cluster", redis.url],
            env={**__import__("os").environ, "PATCHBAY_SECRET_KEY": "not-a-key"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "PATCHBAY_SECRET_KEY is not a Fernet key" in proc.stderr
        assert "not-a-key" not in proc.stderr + proc.stdout
    finally:
        redis.stop()


@pytest.mark.asyncio(loop_scope="module")
async def test_a_removed_server_s_per_user_tokens_are_found_in_redis(tmp_path: Path) -> None:
    """``OAuthManager.forget`` finds every identity's own records of a server, in Redis as in files."""
    from redis.asyncio import Redis

    from patchbay.cluster.oauth_store import SharedTokenStore
    from patchbay.oauth import TokenStore
    from patchbay.oauth.store import TokenRecord

    redis = RedisProc(tmp_path).start()
    client = Redis.from_url(redis.url)
    try:
        shared = SharedTokenStore(redis.url, KEY.encode(), client)
        local = TokenStore(tmp_path / "files", key=KEY.encode(), use_keyring=False)
        for store in (shared, local):
            for name in ("up~1f2e", "up~9a8b", "upper", "up*~x"):
                store.save(name, TokenRecord(issuer="https://as.example", resource="https://up.example/mcp"))
            assert sorted(store.names("up~")) == ["up~1f2e", "up~9a8b"]
            assert store.names("up*~") == ["up*~x"]  # a glob character in a name is only itself
        # a sign-in's redirect may reach a replica whose copy predates the registration: ``fresh`` re-reads
        other = SharedTokenStore(redis.url, KEY.encode(), client)
        assert other.get("late") is None  # now in its copy, for up to a second
        shared.save("late", TokenRecord(issuer="https://as.example", resource="https://up.example/mcp"))
        other.fresh("late")
        assert other.get("late") is not None
    finally:
        await client.aclose()
        redis.stop()
