"""Signing in to hosted MCP servers (issue 9), against real parts only.

node-oidc-provider (tests/npm, configured by tests/oauth/provider.mjs) is the authorization server; an SDK
``MCPServer`` under streamable HTTP validates its JWT access tokens (tests/oauth/harness.py); a real
headless Chromium signs in through the provider's own login and consent pages.
"""

from __future__ import annotations

import json
import logging
import shutil
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from patchbay.oauth import (
    BearerAuth,
    OAuthClient,
    OAuthManager,
    OAuthSettings,
    TokenStore,
)
from tests.oauth.harness import ProtectedServer, Provider, consent, provider_available

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
