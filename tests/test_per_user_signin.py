"""Per-user upstream sign-in (``"credentials": "perUser"``, issue 10), against real parts only.

node-oidc-provider is the upstream's authorization server, an SDK ``MCPServer`` (tests/oauth/harness.py)
wants its tokens and answers ``whoami`` with the subject of the token each call brings. patchbay runs as a
real ``patchbay serve`` with two bearer tokens (two identities); each signs in upstream as a different
person in headless Chromium, through the URL its first call's error result names.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
import pytest_asyncio
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from patchbay import Hub
from patchbay.config import parse_server_spec
from patchbay.errors import ConfigError
from patchbay.identity import Identity
from patchbay.oauth import OAuthManager, TokenStore
from patchbay.oauth.per_user import NotPerUserError, SignInRequired, store_name
from tests.conftest import wait_for
from tests.oauth.harness import ProtectedServer, Provider, consent, provider_available
from tests.test_oauth import read_until
from tests.test_resource_server import client, issue
from tests.test_serve import start_serve, stop_serve

try:
    from playwright.async_api import Browser, async_playwright
except ImportError:  # pragma: no cover - `make test` installs it
    async_playwright = None  # type: ignore[assignment]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]

pytestmark = [
    pytest.mark.skipif(not provider_available(), reason="oidc-provider is not installed: run `make test`"),
    pytest.mark.skipif(async_playwright is None, reason="playwright is not installed: run `make test`"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed: run `make test`"),
    pytest.mark.asyncio(loop_scope="module"),
]

ALICE_TOKEN = "alice-hub-token-0123456789abcdef"  # identity token-1
BOB_TOKEN = "bob-hub-token-0123456789abcdef01"  # identity token-2
URL_IN_ERROR = re.compile(r"open (\S+) to sign in")


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    p = Provider().start()  # dynamic registration: patchbay registers itself
    yield p
    p.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def upstream(provider: Provider) -> AsyncIterator[ProtectedServer]:
    server = await ProtectedServer(provider.issuer).start()
    yield server
    await server.stop()


async def whoami(url: str, token: str) -> tuple[bool, str]:
    """``up__whoami`` through patchbay's /mcp with ``token``: (is_error, text)."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool("up__whoami", {})
        return bool(result.is_error), str(getattr(result.content[0], "text", ""))


async def test_per_user_is_validated_naming_the_field() -> None:
    spec = parse_server_spec("up", {"url": "https://mcp.example.com/mcp", "credentials": "perUser"})
    assert spec.credentials == "perUser" and spec.to_json()["credentials"] == "perUser"
    for entry, words in [
        ({"command": "x", "credentials": "perUser"}, "remote servers"),
        ({"url": "https://e.example/mcp", "credentials": "mine"}, "credentials"),
        (
            {
                "url": "https://e.example/mcp",
                "credentials": "perUser",
                "oauth": {"grant": "client_credentials"},
            },
            "people",
        ),
        (
            {"url": "https://e.example/mcp", "credentials": "perUser", "headers": {"Authorization": "x"}},
            "static",
        ),
    ]:
        with pytest.raises(ConfigError, match=words):
            parse_server_spec("up", entry)


async def test_two_identities_never_share_upstream_tokens_or_results(
    upstream: ProtectedServer, browser: Browser, tmp_path: Path
) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"up": {"url": upstream.url, "credentials": "perUser"}}}))
    data_home = tmp_path / "data"
    served = await start_serve(
        config,
        "--token", ALICE_TOKEN, "--token", BOB_TOKEN,
        env={"XDG_DATA_HOME": str(data_home)},
        token=ALICE_TOKEN,
        ready=False,
    )  # fmt: skip
    try:
        async with served.http() as http, served.http() as sse, sse.stream("GET", "/api/events") as stream:
            events = stream.aiter_lines()
            # the operator's shared sign-in lists the server's tools (and serves only the process owner)
            r = await http.post("/api/servers/up/auth")
            assert r.status_code == 200, r.text
            await consent(browser, r.json()["url"], login="operator")
            await read_until(events, "up", "ready")

        # alice (token-1) has not signed in herself: the error result names where to
        failed, text = await whoami(served.mcp, ALICE_TOKEN)
        assert failed and "'token-1' has not signed in" in text, text
        match = URL_IN_ERROR.search(text)
        assert match is not None, text
        alice_url = match.group(1)
        assert "redirect_uri=http%3A%2F%2F127.0.0.1" in alice_url and "%2Foauth%2Fcallback" in alice_url
        await consent(browser, alice_url, login="alice")  # the redirect reaches patchbay's /oauth/callback
        assert await whoami(served.mcp, ALICE_TOKEN) == (False, "alice")

        # bob is refused until he signs in for himself, and alice's sign-in is never his
        failed, text = await whoami(served.mcp, BOB_TOKEN)
        assert failed and "'token-2' has not signed in" in text
        async with httpx2.AsyncClient(
            base_url=served.base, headers={"Authorization": f"Bearer {BOB_TOKEN}"}
        ) as bob:
            r = await bob.get("/api/servers/up/sign-in")
            assert (
                r.status_code == 200 and r.json()["signed_in"] is False and r.json()["identity"] == "token-2"
            )
            r = await bob.post("/api/servers/up/sign-in")
            assert r.status_code == 200, r.text
            await consent(browser, r.json()["url"], login="bob")
            r = await bob.get("/api/servers/up/sign-in")
            assert r.json()["signed_in"] is True
            assert "access_token" not in r.text
        assert await whoami(served.mcp, BOB_TOKEN) == (False, "bob")
        assert await whoami(served.mcp, ALICE_TOKEN) == (False, "alice")
        # concurrently too: each call goes out on its caller's own connection
        both = await asyncio.gather(*(whoami(served.mcp, t) for t in [ALICE_TOKEN, BOB_TOKEN] * 3))
        assert [text for _, text in both] == ["alice", "bob"] * 3

        # each identity's tokens are stored apart, encrypted
        store = TokenStore(data_home / "patchbay" / "oauth", use_keyring=False)
        subjects = {}
        for name in ("token-1", "token-2"):
            record = store.get(store_name("up", Identity(name)))
            assert record is not None and record.tokens is not None
            token = record.tokens.access_token
            subjects[name] = jwt.decode(token, options={"verify_signature": False})["sub"]
            for path in store.directory.glob("server-*.tokens"):
                assert token.encode() not in path.read_bytes()
        assert subjects == {"token-1": "alice", "token-2": "bob"}

        # bob signs out: only he has to sign in again
        async with httpx2.AsyncClient(
            base_url=served.base, headers={"Authorization": f"Bearer {BOB_TOKEN}"}
        ) as bob:
            r = await bob.delete("/api/servers/up/sign-in")
            assert r.status_code == 204
        failed, text = await whoami(served.mcp, BOB_TOKEN)
        assert failed and "has not signed in" in text
        assert await whoami(served.mcp, ALICE_TOKEN) == (False, "alice")

        async with served.http() as http:
            r = await http.post("/api/servers/nope/sign-in")
            assert r.status_code == 404
    finally:
        await stop_serve(served)
        assert served.proc.stderr is not None
        logs = (await served.proc.stderr.read()).decode()
        for record in TokenStore(data_home / "patchbay" / "oauth", use_keyring=False).records(
            store_name("up", Identity("token-1"))
        ):
            assert record.tokens is None or record.tokens.access_token not in logs


async def test_oauth_subjects_from_the_identity_provider_sign_in_upstream_each_for_itself(
    upstream: ProtectedServer, browser: Browser, tmp_path: Path
) -> None:
    """Both halves of issue 10 at once: the downstream identities are OAuth subjects (tokens from the
    operator's identity provider, ``auth.oauth``), each signed in upstream as a different person."""
    idp = Provider(clients=[client("svc-a"), client("svc-b")]).start()
    config = tmp_path / "patchbay.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {"up": {"url": upstream.url, "credentials": "perUser"}},
                "auth": {"oauth": {"issuer": idp.issuer, "scopes": {"mcp:read": "user"}}},
            }
        )
    )
    served = await start_serve(
        config,
        "--token",
        ALICE_TOKEN,
        env={"XDG_DATA_HOME": str(tmp_path / "data")},
        token=ALICE_TOKEN,
        ready=False,
    )
    try:
        async with served.http() as http, served.http() as sse, sse.stream("GET", "/api/events") as stream:
            events = stream.aiter_lines()
            r = await http.post("/api/servers/up/auth")
            await consent(browser, r.json()["url"], login="operator")
            await read_until(events, "up", "ready")
        tokens = {name: await issue(idp.issuer, served.mcp, name) for name in ("svc-a", "svc-b")}
        for name, person in (("svc-a", "carol"), ("svc-b", "dave")):
            failed, text = await whoami(served.mcp, tokens[name])
            assert failed and f"{name!r} has not signed in" in text, text
            match = URL_IN_ERROR.search(text)
            assert match is not None
            await consent(browser, match.group(1), login=person)
        assert await whoami(served.mcp, tokens["svc-a"]) == (False, "carol")
        assert await whoami(served.mcp, tokens["svc-b"]) == (False, "dave")
    finally:
        await stop_serve(served)
        idp.stop()


async def test_shared_servers_refuse_per_user_sign_in_and_idle_connections_close(
    upstream: ProtectedServer, browser: Browser, tmp_path: Path
) -> None:
    """In-process: the per-identity connection pool closes a connection nobody used for ``idle`` s."""
    store = TokenStore(tmp_path / "oauth", use_keyring=False)
    hub = Hub.from_dict(
        {
            "mcpServers": {
                "up": {"url": upstream.url, "credentials": "perUser"},
                "shared": {"url": upstream.url},
            }
        },
        oauth=OAuthManager(store),
    )

    def text(result: Any) -> str:
        return str(getattr(result.content[0], "text", ""))

    try:
        await hub.start()
        for name in ("up", "shared"):
            await consent(browser, await hub.sign_in(name), login="operator")
        await wait_for(lambda: hub.status()["up"].state == "ready", 30, "the shared sign-in")
        carol = Identity("carol", "user", kind="oauth")
        with pytest.raises(NotPerUserError, match="shares one sign-in"):
            await hub.sign_in_user("shared", carol)
        result = await hub.call_tool("up__whoami", {}, caller=carol)
        assert result.is_error
        url = URL_IN_ERROR.search(text(result))
        assert url is not None, text(result)
        pool = hub._supervisor("up")._per_user_pool()
        pool.idle = 0.2  # before its first connection opens, so the idle timer uses it
        await consent(browser, url.group(1), login="carol")
        assert text(await hub.call_tool("up__whoami", {}, caller=carol)) == "carol"
        # the process owner (no caller) uses the shared sign-in
        assert text(await hub.call_tool("up__whoami", {})) == "operator"
        await wait_for(lambda: pool.open_count == 0, 10, "the idle connection to close")
        # the next call opens a new one, with the same identity's tokens
        assert text(await hub.call_tool("up__whoami", {}, caller=carol)) == "carol"
        with pytest.raises(SignInRequired, match="'dave' has not signed in"):
            await hub._supervisor("up").connection_for(Identity("dave", "user", kind="oauth"))
        # a token named "carol" is not the OAuth subject "carol"
        same_name = await hub.call_tool("up__whoami", {}, caller=Identity("carol", "user", kind="token"))
        assert same_name.is_error and "has not signed in" in text(same_name)
        carols = store_name("up", carol)
        assert store.get(carols) is not None and store.get(carols).tokens is not None  # type: ignore[union-attr]
        await hub.remove_server("up")  # every identity's tokens go with the server
        assert store.get(carols) is None and not list(store.directory.glob("server-up~*"))
        assert store.get("shared") is not None
    finally:
        await hub.close()
