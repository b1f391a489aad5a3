"""Signing in to hosted MCP servers (issue 9), against real parts only.

node-oidc-provider (tests/npm, configured by tests/oauth/provider.mjs) is the authorization server; an SDK
``MCPServer`` under streamable HTTP validates its JWT access tokens (tests/oauth/harness.py); a real
headless Chromium signs in through the provider's own login and consent pages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from patchbay import Hub
from patchbay.config import parse_server_spec
from patchbay.errors import ConfigError, ServerUnavailableError, UpstreamError
from patchbay.events import ServerStateEvent, Subscription
from patchbay.oauth import (
    BearerAuth,
    OAuthClient,
    OAuthError,
    OAuthManager,
    OAuthSettings,
    TokenStore,
    oauth_settings,
    parse_challenge,
)
from tests.oauth.harness import MetadataDocumentHost, ProtectedServer, Provider, consent, provider_available
from tests.test_serve import start_serve, stop_serve

try:
    from playwright.async_api import Browser, async_playwright, expect
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

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _RSA.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PUBLIC_JWK = {
    **json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(_RSA.public_key())),
    "use": "sig",
    "alg": "RS256",
}
SECRET = "pre-registered-secret-0123456789abcdef0123456789abcdef"
REDIRECTS = ["http://127.0.0.1/oauth/callback"]
CLIENTS = [
    {  # a pre-registered confidential client (GitHub-style: no dynamic registration wanted)
        "client_id": "basic-client",
        "client_secret": SECRET,
        "redirect_uris": REDIRECTS,
        "application_type": "native",
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "client_secret_basic",
    },
    {
        "client_id": "post-client",
        "client_secret": SECRET,
        "redirect_uris": REDIRECTS,
        "application_type": "native",
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "client_secret_post",
    },
    {
        "client_id": "jwt-client",
        "redirect_uris": REDIRECTS,
        "application_type": "native",
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": "RS256",
        "jwks": {"keys": [PUBLIC_JWK]},
    },
    {  # machine to machine
        "client_id": "m2m-client",
        "client_secret": SECRET,
        "redirect_uris": [],
        "response_types": [],
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
    },
    {
        "client_id": "m2m-jwt-client",
        "redirect_uris": [],
        "response_types": [],
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": "RS256",
        "jwks": {"keys": [PUBLIC_JWK]},
    },
]


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    p = Provider(clients=CLIENTS).start()
    yield p
    p.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def mcp_server(provider: Provider) -> AsyncIterator[ProtectedServer]:
    server = await ProtectedServer(provider.issuer).start()
    yield server
    await server.stop()


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "oauth", use_keyring=False)


@pytest.fixture
def captured_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def settings(**fields: Any) -> OAuthSettings:
    return OAuthSettings.model_validate(fields)


async def call_echo(auth: httpx2.Auth, url: str, tool: str = "echo", text: str = "hi") -> str:
    """A real MCP session (the SDK's client over streamable HTTP) through ``auth``."""
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool(tool, {"text": text})
        block = result.content[0]
        return str(getattr(block, "text", block))


async def sign_in(manager: OAuthManager, name: str, browser: Browser) -> str:
    url = await manager.sign_in(name)
    await consent(browser, url)
    await manager.get(name).wait_signed_in()
    return url


def all_tokens(store: TokenStore, name: str) -> list[str]:
    out: list[str] = []
    for record in store.records(name):
        if record.tokens is not None:
            out.append(record.tokens.access_token)
            if record.tokens.refresh_token:
                out.append(record.tokens.refresh_token)
    return out


def assert_no_secrets(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, "a token or secret appeared where it must not"


# --- the authorization code flow, end to end ------------------------------------------------------


async def test_dynamic_registration_pkce_resource_and_refresh_rotation(
    provider: Provider,
    mcp_server: ProtectedServer,
    browser: Browser,
    store: TokenStore,
    captured_logs: pytest.LogCaptureFixture,
) -> None:
    manager = OAuthManager(store)
    client = OAuthClient("linear", mcp_server.url, None, store)
    manager.clients["linear"] = client
    try:
        url = await sign_in(manager, "linear", browser)
    finally:
        await manager.close()
    assert "code_challenge_method=S256" in url
    assert "resource=" in url and "offline_access" in url
    record = store.get("linear")
    assert record is not None and record.tokens is not None and record.client is not None
    assert record.issuer == provider.issuer and record.resource == mcp_server.url
    assert record.tokens.refresh_token, "offline_access was asked for, so a refresh token came back"
    claims = jwt.decode(record.tokens.access_token, options={"verify_signature": False})
    assert claims["aud"] == mcp_server.url  # RFC 8707: the token is for this server only

    assert await call_echo(BearerAuth(client), mcp_server.url) == "hi"

    first_refresh = record.tokens.refresh_token
    assert await client.refresh()
    rotated = store.get("linear")
    assert rotated is not None and rotated.tokens is not None
    assert rotated.tokens.refresh_token and rotated.tokens.refresh_token != first_refresh  # rotation
    async with httpx2.AsyncClient() as http:  # the spent refresh token no longer works at the provider
        assert provider.issuer and record.tokens
        response = await http.post(
            f"{provider.issuer}/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": first_refresh,
                "client_id": record.client.client_id,
            },
        )
        assert response.status_code == 400 and response.json()["error"] == "invalid_grant"

    # The stored file is encrypted (no token in clear), and readable only by the user.
    blob = (store.directory / "server-linear.tokens").read_bytes()
    assert_no_secrets(blob.decode(errors="replace"), all_tokens(store, "linear"))
    assert stat.S_IMODE((store.directory / "key").stat().st_mode) == 0o600
    assert stat.S_IMODE((store.directory / "server-linear.tokens").stat().st_mode) == 0o600
    assert_no_secrets(captured_logs.text, [*all_tokens(store, "linear"), first_refresh])
    assert_no_secrets(json.dumps(client.status()), all_tokens(store, "linear"))


@pytest.mark.parametrize(
    ("client_id", "fields"),
    [
        ("basic-client", {"clientSecret": SECRET}),
        ("post-client", {"clientSecret": SECRET, "tokenEndpointAuthMethod": "client_secret_post"}),
        ("jwt-client", {"privateKey": PRIVATE_PEM}),
    ],
)
async def test_pre_registered_clients_and_token_endpoint_auth_methods(
    client_id: str,
    fields: dict[str, Any],
    mcp_server: ProtectedServer,
    browser: Browser,
    store: TokenStore,
    captured_logs: pytest.LogCaptureFixture,
) -> None:
    manager = OAuthManager(store)
    client = OAuthClient("github", mcp_server.url, settings(clientId=client_id, **fields), store)
    manager.clients["github"] = client
    try:
        await sign_in(manager, "github", browser)
    finally:
        await manager.close()
    record = store.get("github")
    assert record is not None and record.tokens is not None
    assert record.client is None  # pre-registered credentials stay in the config, never in the store
    claims = jwt.decode(record.tokens.access_token, options={"verify_signature": False})
    assert claims["client_id"] == client_id
    assert await client.refresh()  # the refresh grant authenticates the same way
    assert await call_echo(BearerAuth(client), mcp_server.url, text="pre") == "pre"
    assert_no_secrets(captured_logs.text, [*all_tokens(store, "github"), SECRET])


@pytest.mark.parametrize(
    ("client_id", "fields"),
    [("m2m-client", {"clientSecret": SECRET}), ("m2m-jwt-client", {"privateKey": PRIVATE_PEM})],
)
async def test_client_credentials_without_a_person_and_automatic_step_up(
    client_id: str,
    fields: dict[str, Any],
    mcp_server: ProtectedServer,
    store: TokenStore,
    captured_logs: pytest.LogCaptureFixture,
) -> None:
    client = OAuthClient(
        "m2m", mcp_server.url, settings(clientId=client_id, grant="client_credentials", **fields), store
    )
    auth = BearerAuth(client)
    assert await call_echo(auth, mcp_server.url, text="machine") == "machine"
    record = store.get("m2m")
    assert record is not None and record.tokens is not None and record.grant == "client_credentials"
    assert "mcp:admin" not in (record.tokens.scope or "")
    # A 403 insufficient_scope: a token with the wider scope is fetched and the request retried, once.
    forbidden = mcp_server.forbidden
    assert await call_echo(auth, mcp_server.url, tool="admin_echo", text="up") == "admin: up"
    assert mcp_server.forbidden == forbidden + 1
    stepped = store.get("m2m")
    assert stepped is not None and stepped.tokens is not None and "mcp:admin" in (stepped.tokens.scope or "")
    assert_no_secrets(captured_logs.text, [*all_tokens(store, "m2m"), SECRET])


async def test_step_up_is_bounded_against_a_server_that_always_refuses(
    provider: Provider, store: TokenStore
) -> None:
    server = await ProtectedServer(provider.issuer, always_insufficient=True).start()
    try:
        client = OAuthClient(
            "stingy",
            server.url,
            settings(clientId="m2m-client", clientSecret=SECRET, grant="client_credentials"),
            store,
        )
        auth = BearerAuth(client)
        counts = []
        for _ in range(4):  # every call is retried at most once, and step-ups stop after MAX_STEP_UPS
            with pytest.raises(Exception):  # noqa: B017 - the SDK reports the 403 in its own way
                await call_echo(auth, server.url, tool="admin_echo")
            counts.append(server.forbidden)
        assert counts == [2, 4, 5, 6], counts
        assert client.step_up is not None and "wider scopes" in str(client.step_up)
        assert client.needs_auth is None  # the server keeps running; only those calls fail
    finally:
        await server.stop()


async def test_step_up_in_the_code_flow_asks_a_person_for_the_wider_scope(
    mcp_server: ProtectedServer, browser: Browser, store: TokenStore
) -> None:
    manager = OAuthManager(store)
    client = OAuthClient("notion", mcp_server.url, None, store)
    manager.clients["notion"] = client
    try:
        await sign_in(manager, "notion", browser)
        auth = BearerAuth(client)
        with pytest.raises(Exception):  # noqa: B017 - a 403 the client cannot fix by itself
            await call_echo(auth, mcp_server.url, tool="admin_echo")
        assert client.step_up is not None and client.step_up.scope == "mcp:read mcp:admin"
        url = await sign_in(manager, "notion", browser)
        assert "mcp%3Aadmin" in url
        assert await call_echo(auth, mcp_server.url, tool="admin_echo", text="ok") == "admin: ok"
        assert client.needs_auth is None and client.step_up is None
    finally:
        await manager.close()


async def test_expiry_mid_session_refreshes_and_retries(
    mcp_server: ProtectedServer, browser: Browser, store: TokenStore
) -> None:
    manager = OAuthManager(store)
    client = OAuthClient("expiring", mcp_server.url, None, store)
    manager.clients["expiring"] = client
    try:
        await sign_in(manager, "expiring", browser)
    finally:
        await manager.close()
    before = store.get("expiring")
    assert before is not None and before.tokens is not None
    async with (
        httpx2.AsyncClient(auth=BearerAuth(client), timeout=30) as http,
        streamable_http_client(mcp_server.url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        await session.call_tool("echo", {"text": "one"})
        mcp_server.expire_all()  # the server now answers 401 invalid_token to the token in use
        unauthorized = mcp_server.unauthorized
        result = await session.call_tool("echo", {"text": "two"})
        assert getattr(result.content[0], "text", None) == "two"
        assert mcp_server.unauthorized > unauthorized
    after = store.get("expiring")
    assert after is not None and after.tokens is not None
    assert after.tokens.access_token != before.tokens.access_token
    assert after.tokens.refresh_token != before.tokens.refresh_token  # rotated


async def test_token_refreshed_before_it_expires(
    mcp_server: ProtectedServer, browser: Browser, store: TokenStore
) -> None:
    manager = OAuthManager(store)
    client = OAuthClient("soon", mcp_server.url, None, store)
    manager.clients["soon"] = client
    try:
        await sign_in(manager, "soon", browser)
    finally:
        await manager.close()
    record = store.get("soon")
    assert record is not None and record.tokens is not None
    old = record.tokens.access_token
    record.expires_at = 0.0  # as if its lifetime had run out
    store.save("soon", record)
    unauthorized = mcp_server.unauthorized
    assert await call_echo(BearerAuth(client), mcp_server.url) == "hi"
    assert mcp_server.unauthorized == unauthorized  # refreshed first, never sent the stale token
    fresh = store.get("soon")
    assert fresh is not None and fresh.tokens is not None and fresh.tokens.access_token != old


async def test_failed_refresh_leads_to_needs_auth_and_logout_revokes(
    provider: Provider, mcp_server: ProtectedServer, browser: Browser, store: TokenStore
) -> None:
    manager = OAuthManager(store)
    client = OAuthClient("revoked", mcp_server.url, None, store)
    manager.clients["revoked"] = client
    try:
        await sign_in(manager, "revoked", browser)
        record = store.get("revoked")
        assert record is not None and record.tokens is not None and record.client is not None
        refresh_token = record.tokens.refresh_token
        assert refresh_token
        await manager.logout("revoked")  # RFC 7009 at the provider, then forgotten
        assert store.records("revoked") == []
        async with httpx2.AsyncClient() as http:
            response = await http.post(
                f"{provider.issuer}/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token,
                    "client_id": record.client.client_id,
                },
            )
        assert response.status_code == 400 and response.json()["error"] == "invalid_grant"

        # Signed in again, then the refresh token dies at the provider: the next 401 ends in needs_auth.
        await sign_in(manager, "revoked", browser)
        again = store.get("revoked")
        assert again is not None and again.tokens is not None and again.client is not None
        async with httpx2.AsyncClient() as http:
            await http.post(
                f"{provider.issuer}/token/revocation",
                data={"token": again.tokens.refresh_token, "client_id": again.client.client_id},
            )
        assert await call_echo(BearerAuth(client), mcp_server.url) == "hi"  # the access token still works
        mcp_server.expire_all()
        with pytest.raises(Exception):  # noqa: B017 - the 401 reaches the transport
            await call_echo(BearerAuth(client), mcp_server.url)
        assert client.needs_auth is not None
        gone = store.get("revoked")
        assert gone is not None and gone.tokens is None  # the dead tokens are dropped
    finally:
        await manager.close()


# --- refusals --------------------------------------------------------------------------------------


async def test_a_server_whose_metadata_names_another_resource_is_refused(
    provider: Provider, store: TokenStore
) -> None:
    liar = await ProtectedServer(provider.issuer, claimed_resource="http://127.0.0.1:9/elsewhere").start()
    try:
        manager = OAuthManager(store)
        manager.clients["liar"] = OAuthClient("liar", liar.url, None, store)
        with pytest.raises(OAuthError, match=r"server 'liar'.*resource 'http://127.0.0.1:9/elsewhere'"):
            await manager.sign_in("liar")
        await manager.close()
    finally:
        await liar.stop()
    assert store.records("liar") == []  # nothing registered, nothing stored


async def test_an_authorization_server_without_s256_is_refused(store: TokenStore) -> None:
    server = ProtectedServer("")
    await server.start()
    try:
        origin = f"http://127.0.0.1:{server.port}"
        server.authorization_server = origin
        server.as_metadata = {
            "issuer": origin,
            "authorization_endpoint": f"{origin}/authorize",
            "token_endpoint": f"{origin}/token",
            "registration_endpoint": f"{origin}/register",
            "code_challenge_methods_supported": ["plain"],
        }
        client = OAuthClient("plain", server.url, None, store)
        assert await client.probe() is not None
        with pytest.raises(OAuthError, match=r"server 'plain'.*does not support PKCE with S256"):
            await client.begin("http://127.0.0.1:1/oauth/callback")
    finally:
        await server.stop()


async def test_a_tampered_state_or_issuer_is_refused(
    mcp_server: ProtectedServer, browser: Browser, store: TokenStore
) -> None:
    client = OAuthClient("tamper", mcp_server.url, None, store)
    pending = await client.begin("http://127.0.0.1:1/oauth/callback")
    params = await consent(browser, pending.url, intercept=True)
    assert params is not None and params["state"] == pending.state and params["iss"]
    with pytest.raises(OAuthError, match="state does not match"):
        await client.complete(pending, {**params, "state": params["state"][:-2] + "xy"})
    with pytest.raises(OAuthError, match="iss mismatch"):
        await client.complete(pending, {**params, "iss": "http://127.0.0.1:9"})
    record = store.get("tamper")
    assert record is None or record.tokens is None
    await client.complete(pending, params)  # the genuine response still works
    assert client.record_tokens() is not None

    manager = OAuthManager(store)
    with pytest.raises(OAuthError, match="matches no pending sign-in"):
        await manager.complete({**params, "state": "forged"})


async def test_settings_expand_placeholders_and_name_the_field(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GH_ID", "Iv1.abc")
    monkeypatch.setenv("GH_SECRET", "s3cret")
    spec = parse_server_spec(
        "github",
        {
            "url": "https://api.githubcopilot.com/mcp/",
            "oauth": {"clientId": "${GH_ID}", "clientSecret": "${GH_SECRET}", "scopes": ["repo", "read:org"]},
        },
    )
    s = oauth_settings("github", spec)
    assert s is not None and s.client_id == "Iv1.abc" and s.auth_method == "client_secret_basic"
    assert "s3cret" not in repr(s)
    with pytest.raises(ConfigError, match=r"server 'x': oauth.grant") as err:
        oauth_settings("x", parse_server_spec("x", {"url": "https://x/mcp", "oauth": {"grant": "password"}}))
    assert err.value.field == "oauth.grant"
    with pytest.raises(ConfigError, match=r"oauth.clientSecret: environment variable 'NOPE'"):
        oauth_settings(
            "x", parse_server_spec("x", {"url": "https://x/mcp", "oauth": {"clientSecret": "${NOPE}"}})
        )
    key = tmp_path / "key.pem"
    key.write_text(PRIVATE_PEM)
    spec = parse_server_spec(
        "k", {"url": "https://x/mcp", "oauth": {"clientId": "c", "privateKeyFile": "key.pem"}}
    )
    s = oauth_settings("k", spec, tmp_path)
    assert s is not None and s.auth_method == "private_key_jwt" and s.private_key == PRIVATE_PEM


async def test_challenges_are_parsed() -> None:
    c = parse_challenge(403, 'Bearer error="insufficient_scope", scope="a b", resource_metadata="http://x/m"')
    assert c is not None and c.insufficient_scope and c.scope == "a b" and c.resource_metadata == "http://x/m"
    assert parse_challenge(401, 'Basic realm="x"') is None
    bare = parse_challenge(401, None)
    assert bare is not None and bare.resource_metadata is None
    assert parse_challenge(403, None) is None


# --- through the hub: needs_auth, sign_in, events, status --------------------------------------------


async def wait_state(hub: Hub, events: Subscription, name: str, state: str) -> None:
    """Return once ``name`` is in ``state`` (now or by a later server_state event)."""
    async with asyncio.timeout(30):
        while hub.status()[name].state != state:
            event = await anext(events)
            if isinstance(event, ServerStateEvent) and event.server == name and event.state == state:
                return


async def test_hub_waits_in_needs_auth_signs_in_and_refreshes_mid_session(
    mcp_server: ProtectedServer,
    browser: Browser,
    store: TokenStore,
    captured_logs: pytest.LogCaptureFixture,
) -> None:
    hub = Hub.from_dict({"mcpServers": {"linear": {"url": mcp_server.url}}}, oauth=OAuthManager(store))
    events = hub.events()
    recorder = hub.events()  # everything a subscriber (the dashboard, /events) is sent
    seen: list[str] = []
    try:
        await hub.start()
        status = hub.status()["linear"]
        assert status.state == "needs_auth"
        assert status.last_error and "patchbay auth login linear" in status.last_error
        assert hub.tools() == []
        with pytest.raises(ServerUnavailableError, match="needs_auth"):
            await hub.call_tool("linear__echo", {"text": "x"})
        unauthorized = mcp_server.unauthorized
        url = await hub.sign_in("linear")
        assert mcp_server.unauthorized == unauthorized  # no retry loop while waiting
        await consent(browser, url)
        await wait_state(hub, events, "linear", "ready")
        result = await hub.call_tool("linear__echo", {"text": "signed in"})
        assert result.content[0].text == "signed in"  # type: ignore[union-attr]

        mcp_server.expire_all()  # mid-session: a 401, refreshed below the wire, the call just works
        result = await hub.call_tool("linear__echo", {"text": "still"})
        assert result.content[0].text == "still"  # type: ignore[union-attr]
        assert hub.status()["linear"].state == "ready"
        auth = hub.auth_status("linear")
        assert auth["signed_in"] and auth["refreshable"] and "mcp:read" in auth["scope"]
        seen.append(json.dumps(auth))
        seen.append(hub.status()["linear"].model_dump_json())

        assert await hub.sign_out("linear")
        await wait_state(hub, events, "linear", "needs_auth")
        assert store.records("linear") == []
    finally:
        secrets = all_tokens(store, "linear")
        await hub.close()
        events.close()
        recorder.close()
    while not recorder.queue.empty():
        seen.append(recorder.queue.get_nowait().model_dump_json())
    assert any('"needs_auth"' in text for text in seen)
    for text in [*seen, captured_logs.text]:
        assert_no_secrets(text, secrets)
        assert "eyJ" not in text  # no JWT at all


async def test_a_401_that_does_not_ask_for_oauth_is_a_plain_failure(store: TokenStore) -> None:
    """Without an ``oauth`` key, only a Bearer challenge means sign-in; a bare 401 is a credentials error."""

    server = ProtectedServer("", challenge=False)
    await server.start()
    try:
        hub = Hub.from_dict(
            {"mcpServers": {"plain": {"url": server.url, "maxRestarts": 0}}}, oauth=OAuthManager(store)
        )
        await hub.start()
        status = hub.status()["plain"]
        assert status.state == "failed" and "401" in (status.last_error or "")
        assert "headers" in (status.last_error or "")
        await hub.close()
    finally:
        await server.stop()


# --- patchbay serve: REST API, the hub's own callback route, the dashboard -------------------------


async def read_until(stream: AsyncIterator[str], server: str, state: str) -> list[str]:
    """Lines of the /api/events stream up to ``server`` reaching ``state``."""
    lines: list[str] = []
    async with asyncio.timeout(30):
        async for line in stream:
            lines.append(line)
            if line.startswith("data:"):
                data = json.loads(line.removeprefix("data:"))
                if (
                    data.get("type") == "server_state"
                    and data.get("server") == server
                    and data["state"] == state
                ):
                    return lines
    raise AssertionError(f"the event stream ended before {server} was {state}")


async def test_serve_api_sign_in_through_the_hubs_callback_and_sign_out(
    mcp_server: ProtectedServer, browser: Browser, tmp_path: Path
) -> None:
    config = tmp_path / "patchbay.json"
    secret = "a-literal-client-secret-in-the-file"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "linear": {"url": mcp_server.url},
                    "literal": {
                        "url": "http://127.0.0.1:9/mcp",
                        "enabled": False,
                        "oauth": {"clientSecret": secret},
                    },
                }
            }
        )
    )
    data_home = tmp_path / "data"
    served = await start_serve(
        config,
        env={"XDG_DATA_HOME": str(data_home), "PATCHBAY_TOKEN": "hub-token-123"},
        token="hub-token-123",
        ready=False,  # a server in needs_auth is not ready: /readyz answers 503
    )
    seen: list[str] = []
    try:
        async with served.http() as http, served.http() as sse, sse.stream("GET", "/api/events") as stream:
            events = stream.aiter_lines()
            r = await http.get("/api/servers/linear")
            if r.json()["state"] != "needs_auth":
                seen += await read_until(events, "linear", "needs_auth")
            r = await http.get("/api/servers/linear")
            assert (
                r.json()["state"] == "needs_auth"
                and "POST /api/servers/linear/auth" in r.json()["last_error"]
            )
            r = await http.get("/api/servers/literal")
            assert secret not in r.text and r.json()["spec"]["oauth"]["clientSecret"] == "***"

            r = await http.post("/api/servers/linear/auth")
            assert r.status_code == 200, r.text
            url = r.json()["url"]
            assert (
                f"redirect_uri=http%3A%2F%2F127.0.0.1%3A{served.base.rsplit(':', 1)[1]}%2Foauth%2Fcallback"
                in url
            )
            await consent(browser, url)  # the redirect reaches the hub's own /oauth/callback, without a token
            seen += await read_until(events, "linear", "ready")
            r = await http.post("/api/tools/linear__echo/call", json={"arguments": {"text": "via api"}})
            assert r.status_code == 200 and "via api" in r.text
            r = await http.get("/api/servers/linear/auth")
            assert r.json()["signed_in"] is True and r.json()["issuer"]
            seen.append(r.text)
            seen.append((await http.get("/api/servers")).text)

            r = await http.delete("/api/servers/linear/auth")
            assert r.status_code == 204
            seen += await read_until(events, "linear", "needs_auth")
            r = await http.post("/api/servers/nope/auth")
            assert r.status_code == 404
            r = await http.post("/api/servers/linear/auth", json={"redirectUri": "http://evil.example/cb"})
            assert r.status_code == 422 and r.json()["field"] == "redirectUri"
            r = await http.get("/oauth/callback", params={"state": "forged", "code": "x"}, headers={})
            assert r.status_code == 400 and "matches no pending sign-in" in r.text
    finally:
        await stop_serve(served)
    assert served.proc.stderr is not None
    logs = (await served.proc.stderr.read()).decode()
    tokens = [c["jti"] for c in mcp_server.seen]
    assert tokens
    for text in [*seen, logs]:
        assert "eyJ" not in text  # no JWT (access token) anywhere
        assert secret not in text


# --- the CLI: patchbay auth login|status|logout ------------------------------------------------------


async def patchbay(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchbay", *args,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def login_in_browser(browser: Browser, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """``patchbay auth login ... --no-browser``: read the URL from its stdout, sign in, wait for its exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchbay", "auth", "login", *args, "--no-browser",
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    async with asyncio.timeout(60):
        url = (await proc.stdout.readline()).decode().strip()
        assert url.startswith("http://127.0.0.1:"), url
        await consent(browser, url)
        rest, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, url + "\n" + rest.decode(), err.decode()


async def test_cli_login_status_logout_on_the_config_file(
    mcp_server: ProtectedServer, browser: Browser, tmp_path: Path
) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(
        json.dumps({"mcpServers": {"linear": {"url": mcp_server.url}, "local": {"command": "x"}}})
    )
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "PATCHBAY_URL": "http://127.0.0.1:9"}
    common = ("--no-hub", "--config", str(config))
    _, _, err = await patchbay("tools", *common, env=env)  # before signing in: says what to do
    assert "linear: needs sign-in" in err and "patchbay auth login linear" in err
    code, out, err = await login_in_browser(browser, "linear", *common, env=env)
    assert code == 0, err
    assert out.strip().count("\n") == 0  # the URL alone on stdout
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in out
    code, out, err = await patchbay("auth", "status", "linear", "--json", *common, env=env)
    assert code == 0, err
    status = json.loads(out)
    assert status["signed_in"] is True and status["refreshable"] is True
    store = TokenStore(tmp_path / "data" / "patchbay" / "oauth")
    secrets = all_tokens(store, "linear")
    assert secrets
    # A hub started on the same file and data directory uses the tokens at once: no needs_auth.
    hub = Hub.from_file(config, oauth=OAuthManager(store))
    async with hub:
        assert hub.status()["linear"].state == "ready"
    code, out2, err2 = await patchbay("auth", "status", *common, env=env)
    assert code == 0 and "linear" in out2 and "yes" in out2
    code, _, err3 = await patchbay("auth", "login", "local", "--no-browser", *common, env=env)
    assert code == 2 and "not a remote server" in err3
    code, _, err4 = await patchbay("auth", "logout", "linear", *common, env=env)
    assert code == 0, err4
    assert store.records("linear") == []
    for text in (out, err, out2, err2, err3, err4):
        assert_no_secrets(text, secrets)


async def test_cli_login_through_a_running_hub(
    mcp_server: ProtectedServer, browser: Browser, tmp_path: Path
) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"linear": {"url": mcp_server.url}}}))
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "PATCHBAY_TOKEN": "hub-token-456"}
    served = await start_serve(config, env=env, token="hub-token-456", ready=False)
    try:
        code, out, err = await login_in_browser(browser, "linear", "--url", served.base, env=env)
        assert code == 0, err
        # the redirect went to the CLI's own listener, which handed it to the hub
        assert f"127.0.0.1%3A{served.base.rsplit(':', 1)[1]}" not in out.splitlines()[0]
        async with served.http() as http, http.stream("GET", "/api/events") as stream:
            if (await http.get("/api/servers/linear")).json()["state"] != "ready":
                await read_until(stream.aiter_lines(), "linear", "ready")
        code, out, err = await patchbay("auth", "status", "--json", "--url", served.base, env=env)
        assert code == 0 and json.loads(out)[0]["signed_in"] is True
    finally:
        await stop_serve(served)


async def test_dashboard_sign_in_button(
    mcp_server: ProtectedServer, browser: Browser, tmp_path: Path
) -> None:
    """The dashboard shows needs_auth with a Sign in button that runs the flow through the hub's callback."""
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"notion": {"url": mcp_server.url}}}))
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "PATCHBAY_TOKEN": ""}
    served = await start_serve(config, env=env, ready=False)
    context = await browser.new_context()
    errors: list[str] = []
    try:
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{served.base}/")
        server_card = page.get_by_role("article", name="notion", exact=True)
        await expect(server_card.locator(".badge")).to_have_text("needs sign-in", timeout=15_000)
        await expect(server_card.locator(".card-error")).to_contain_text("Sign-in needed")
        await expect(server_card.locator(".card-error")).to_contain_text("patchbay auth login notion")
        async with context.expect_page() as popup_info:
            await server_card.get_by_role("button", name="Sign in to notion").click()
        popup = await popup_info.value
        await popup.wait_for_url(re.compile(r".*/interaction/.*"))
        await popup.fill('input[name="login"]', "alice")
        await popup.fill('input[name="password"]', "secret")
        await popup.click('button[type="submit"]')
        await popup.click('button:has-text("Continue")')
        await popup.wait_for_url(re.compile(rf"^{re.escape(served.base)}/oauth/callback.*"))
        await expect(popup.locator("h1")).to_have_text("Signed in")
        await expect(server_card.locator(".badge")).to_have_text("ready", timeout=15_000)
        await expect(server_card.get_by_role("button", name="Sign in to notion")).to_be_hidden()
    finally:
        await context.close()
        await stop_serve(served)
    assert errors == []


async def test_client_id_metadata_document(browser: Browser, store: TokenStore, tmp_path: Path) -> None:
    """With ``clientMetadataUrl`` and an AS that supports CIMD, that URL is the client_id: no registration."""
    host = await MetadataDocumentHost(tmp_path).start()
    provider = Provider(env={"NODE_EXTRA_CA_CERTS": str(host.cert_file)}, cimd=True).start()
    server = await ProtectedServer(provider.issuer).start()
    manager = OAuthManager(store)
    try:
        client = OAuthClient("cimd", server.url, settings(clientMetadataUrl=host.url), store)
        manager.clients["cimd"] = client
        url = await sign_in(manager, "cimd", browser)
        assert f"client_id={quote(host.url, safe='')}" in url
        assert host.fetched >= 1  # the provider read the document
        record = store.get("cimd")
        assert (
            record is not None and record.tokens is not None and record.client is None
        )  # nothing registered
        claims = jwt.decode(record.tokens.access_token, options={"verify_signature": False})
        assert claims["client_id"] == host.url
        assert await call_echo(BearerAuth(client), server.url, text="cimd") == "cimd"
    finally:
        await manager.close()
        await server.stop()
        provider.stop()
        await host.stop()


async def test_a_2025_03_26_server_without_resource_metadata_uses_its_origin(store: TokenStore) -> None:
    """No RFC 9728 metadata: the server's origin is the authorization server (metadata, else defaults)."""
    server = await ProtectedServer("", resource_metadata=False).start()
    try:
        origin = f"http://127.0.0.1:{server.port}"
        client = OAuthClient("legacy", server.url, None, store)
        challenge = await client.probe()
        assert challenge is not None and challenge.resource_metadata is None
        meta = await client.discover()  # nothing at the well-known URIs: the 2025-03-26 defaults
        assert meta.legacy and meta.prm is None and meta.issuer.rstrip("/") == origin
        assert str(meta.asm.authorization_endpoint) == f"{origin}/authorize"
        assert str(meta.asm.token_endpoint) == f"{origin}/token"
        assert meta.resource == server.url
        server.as_metadata = {  # with RFC 8414 metadata at the origin, that is used instead
            "issuer": origin,
            "authorization_endpoint": f"{origin}/oauth/authorize",
            "token_endpoint": f"{origin}/oauth/token",
            "code_challenge_methods_supported": ["S256"],
        }
        meta = await client.discover()
        assert not meta.legacy and str(meta.asm.authorization_endpoint) == f"{origin}/oauth/authorize"
        with pytest.raises(OAuthError, match=r"offers no dynamic client registration.*oauth\.clientId"):
            await client.begin("http://127.0.0.1:1/oauth/callback")  # and no DCR: the config must name one
    finally:
        await server.stop()


async def test_hub_step_up_fails_only_that_call_and_a_sign_in_widens_the_scope(
    mcp_server: ProtectedServer, browser: Browser, store: TokenStore
) -> None:
    hub = Hub.from_dict({"mcpServers": {"notion": {"url": mcp_server.url}}}, oauth=OAuthManager(store))
    events = hub.events()
    try:
        await hub.start()
        await consent(browser, await hub.sign_in("notion"))
        await wait_state(hub, events, "notion", "ready")
        with pytest.raises(
            UpstreamError, match=r"needs wider scopes \(mcp:read mcp:admin\).*auth login notion"
        ):
            await hub.call_tool("notion__admin_echo", {"text": "x"})
        assert hub.status()["notion"].state == "ready"  # the session goes on
        other = await hub.call_tool("notion__echo", {"text": "y"})
        assert other.content[0].text == "y"  # type: ignore[union-attr]
        assert hub.auth_status("notion")["step_up"] == "mcp:read mcp:admin"
        url = await hub.sign_in("notion")
        assert "mcp%3Aadmin" in url
        await consent(browser, url)
        result = await hub.call_tool("notion__admin_echo", {"text": "z"})
        assert result.content[0].text == "admin: z"  # type: ignore[union-attr]
        assert hub.auth_status("notion")["step_up"] is None
    finally:
        await hub.close()
        events.close()


async def test_a_waiting_hub_notices_a_sign_in_by_another_process_and_removal_forgets_tokens(
    mcp_server: ProtectedServer, browser: Browser, tmp_path: Path
) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {"linear": {"url": mcp_server.url}}}))
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "PATCHBAY_URL": "http://127.0.0.1:9"}
    store = TokenStore(tmp_path / "data" / "patchbay" / "oauth")
    hub = Hub.from_file(config, oauth=OAuthManager(store))
    events = hub.events()
    try:
        await hub.start()
        assert hub.status()["linear"].state == "needs_auth"
        # Signed in by a separate `patchbay auth login --no-hub` on the same file and data directory.
        code, _, err = await login_in_browser(browser, "linear", "--no-hub", "--config", str(config), env=env)
        assert code == 0, err
        await wait_state(hub, events, "linear", "ready")  # no restart needed
        assert store.records("linear")
        # Removed by a config reload: its tokens go too.
        config.write_text(json.dumps({"mcpServers": {}}))
        from patchbay.config import load_config

        await hub.apply_config(load_config(config))
        assert store.records("linear") == []
    finally:
        await hub.close()
        events.close()
    # And `servers remove --no-hub` deletes what a file-mode sign-in stored.
    config.write_text(json.dumps({"mcpServers": {"linear": {"url": mcp_server.url}}}))
    code, _, err = await login_in_browser(browser, "linear", "--no-hub", "--config", str(config), env=env)
    assert code == 0, err
    assert store.records("linear")
    code, out, err = await patchbay(
        "servers", "remove", "linear", "--no-hub", "--config", str(config), env=env
    )
    assert code == 0, err
    assert "tokens deleted" in out + err
    assert store.records("linear") == []
