"""OAuth resource server mode (``auth.oauth``, issue 10), against real parts only.

node-oidc-provider (tests/oauth/provider.mjs) is the identity provider: it issues JWT access tokens (or opaque
ones, for introspection) for a resource indicator = patchbay's ``/mcp`` URL through the client credentials
grant, and signs them with keys the test generates (so it can rotate them, and forge the bad ones). patchbay
runs as a real ``patchbay serve`` subprocess; the MCP SDK's client talks to it, and the SDK's own client
OAuth (``mcp.client.auth``) discovers the metadata and the authorization server from patchbay's 401.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from patchbay.access.resource_server import ResourceServer, build_resource_server, resource_server_config
from patchbay.cli.check import check_config
from patchbay.config import parse_config
from patchbay.errors import ConfigError
from patchbay.identity import AuthenticationError
from tests.conftest import bad
from tests.oauth.harness import Provider, provider_available
from tests.test_serve import Served, free_port, start_serve, stop_serve

pytestmark = [
    pytest.mark.skipif(not provider_available(), reason="oidc-provider is not installed: run `make test`"),
    pytest.mark.asyncio(loop_scope="module"),
]

SECRET = "client-secret-0123456789abcdef0123456789abcdef"
ADMIN_TOKEN = "static-admin-token-0123456789abcdef"
SCOPES = {"mcp:read": "user", "mcp:admin": "admin"}


def client(client_id: str) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "client_secret": SECRET,
        "redirect_uris": [],
        "response_types": [],
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
    }


CLIENTS = [client("reader"), client("writer"), client("boss"), client("patchbay")]
CLAIMS = {"boss": {"roles": ["admin"], "profile": "work"}}


def rsa_jwk(kid: str) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key)), "kid": kid, "use": "sig", "alg": "RS256"}


K1 = rsa_jwk("k1")
K2 = rsa_jwk("k2")
STRANGER = rsa_jwk("k-unknown")


def forge(jwk: dict[str, Any], **claims: Any) -> str:
    """A token signed by the test with one of the provider's (or a stranger's) private keys."""
    key = jwt.PyJWK(jwk).key
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": jwk["kid"], "typ": "at+jwt"})


async def issue(issuer: str, resource: str, client_id: str, scope: str = "mcp:read") -> str:
    """A real access token from the provider: client credentials with a resource indicator."""
    async with httpx2.AsyncClient() as http:
        r = await http.post(
            f"{issuer}/token",
            data={"grant_type": "client_credentials", "resource": resource, "scope": scope},
            auth=(client_id, SECRET),
        )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def write_config(tmp: Path, oauth: dict[str, Any]) -> Path:
    path = tmp / "patchbay.json"
    path.write_text(json.dumps({"mcpServers": {"mb": bad()}, "auth": {"oauth": oauth}}, indent=2))
    return path


async def call_echo(url: str, token: str, text: str = "hi") -> tuple[list[str], str]:
    """A real MCP session (the SDK's client over streamable HTTP) with ``token``: tool names, echo result."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        names = [t.name for t in (await session.list_tools()).tools]
        result = await session.call_tool("mb__echo", {"text": text})
        return names, str(getattr(result.content[0], "text", ""))


def challenge(response: httpx2.Response) -> dict[str, str]:
    """The parameters of a ``WWW-Authenticate: Bearer k="v", ...`` header."""
    from patchbay.oauth import parse_challenge

    header = response.headers["www-authenticate"]
    assert header.startswith("Bearer "), header
    parsed = parse_challenge(response.status_code, header)
    assert parsed is not None
    out: dict[str, str] = {}
    for part in header.removeprefix("Bearer ").split('", '):
        name, _, value = part.partition("=")
        out[name.strip()] = value.strip().strip('"')
    return out


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    p = Provider(clients=CLIENTS, jwks={"keys": [K1]}, tokenClaims=CLAIMS).start()
    yield p
    p.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    config = write_config(
        tmp_path_factory.mktemp("rs"),
        {"issuer": provider.issuer, "scopes": SCOPES, "rolesClaim": "roles", "profileClaim": "profile"},
    )
    s = await start_serve(config, "--token", ADMIN_TOKEN, token=ADMIN_TOKEN)
    yield s
    await stop_serve(s)


# --- configuration -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("oauth", "field", "words"),
    [
        ({}, "auth.oauth.issuer", "required"),
        ({"issuer": "ftp://idp.example.com", "scopes": SCOPES}, "auth.oauth.issuer", "https://"),
        ({"issuer": "http://idp.example.com", "scopes": SCOPES}, "auth.oauth.issuer", "loopback"),
        ({"issuer": "https://idp.example.com"}, "auth.oauth", "rolesClaim"),
        ({"issuer": "https://idp.example.com", "scopes": {"a": "root"}}, "auth.oauth.scopes.a", "admin"),
        (
            {"issuer": "https://i.example", "scopes": SCOPES, "algorithms": ["none"]},
            "auth.oauth.algorithms",
            "none",
        ),
        ({"issuer": "https://i.example", "scopes": SCOPES, "algorithms": ["HS256"]}, "auth.oauth", "secret"),
        ({"issuer": "https://i.example", "scopes": SCOPES, "algorithms": []}, "auth.oauth.algorithms", "one"),
        (
            {"issuer": "https://i.example", "scopes": SCOPES, "introspectionUrl": "https://i.example/in"},
            "auth.oauth",
            "clientSecret",
        ),
        ({"issuer": "https://i.example", "scopes": SCOPES, "audiance": "x"}, "auth.oauth.audiance", "extra"),
        ({"issuer": "https://i.example", "scopes": SCOPES, "leeway": -1}, "auth.oauth.leeway", "0"),
        (
            {"issuer": "https://i.example", "scopes": SCOPES, "clientSecret": "${RS_TEST_UNSET_VAR}"},
            "auth.oauth.clientSecret",
            "RS_TEST_UNSET_VAR",
        ),
    ],
)
async def test_bad_configuration_is_refused_naming_the_field(
    oauth: dict[str, Any], field: str, words: str
) -> None:
    config = parse_config(json.dumps({"mcpServers": {}, "auth": {"oauth": oauth}}))
    with pytest.raises(ConfigError) as caught:
        resource_server_config(config)
    assert caught.value.field == field, str(caught.value)
    assert words.lower() in str(caught.value).lower()


async def test_config_check_reports_it_and_serve_refuses_to_start(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, {"issuer": "https://idp.example.com", "algorithms": ["none"], "scopes": SCOPES}
    )
    report = check_config(path)
    assert not report["valid"]
    assert any(e["field"] == "auth.oauth.algorithms" for e in report["errors"]), report
    good = parse_config(
        json.dumps({"mcpServers": {}, "auth": {"oauth": {"issuer": "https://i.example", "scopes": SCOPES}}})
    )
    with pytest.raises(ConfigError, match=r"auth\.oauth\.resource"):
        build_resource_server(good, "0.0.0.0", 8765)  # every interface: the URL cannot be guessed
    rs = build_resource_server(good, "127.0.0.1", 8765)
    assert rs is not None and rs.resource == "http://127.0.0.1:8765/mcp" and rs.audience == [rs.resource]
    await rs.close()
    behind_a_proxy = {
        "issuer": "https://i.example",
        "scopes": SCOPES,
        "resource": "https://hub.example/pb/mcp",
    }
    rs = build_resource_server(
        parse_config(json.dumps({"mcpServers": {}, "auth": {"oauth": behind_a_proxy}})), "0.0.0.0", 8765
    )
    assert rs is not None and rs.metadata()["resource"] == "https://hub.example/pb/mcp"
    assert rs.metadata_url == "https://hub.example/.well-known/oauth-protected-resource/pb/mcp"
    await rs.close()


async def test_an_unreachable_identity_provider_is_503_and_not_asked_on_every_request() -> None:
    issuer = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    raw = {"issuer": issuer, "scopes": SCOPES}
    rs = ResourceServer(
        resource_server_config(parse_config(json.dumps({"mcpServers": {}, "auth": {"oauth": raw}})))
        or pytest.fail("no settings"),
        "http://127.0.0.1:9/mcp",
    )
    token = forge(K1, iss=issuer, aud="http://127.0.0.1:9/mcp", sub="x", exp=int(time.time()) + 60)
    try:
        errors = []
        for _ in range(2):
            with pytest.raises(AuthenticationError, match="could not be fetched") as caught:
                await rs.authenticate(token)
            assert caught.value.status == 503 and caught.value.error == "temporarily_unavailable"
            errors.append(caught.value)
        assert errors[0] is errors[1]  # the failure is remembered for a few seconds, not fetched again
        assert rs.keys.fetches == 0
    finally:
        await rs.close()


async def test_serve_with_a_bad_auth_oauth_exits_with_a_usage_error(tmp_path: Path) -> None:
    import asyncio
    import sys

    path = write_config(tmp_path, {"issuer": "https://idp.example.com", "scopes": {"mcp:read": "superuser"}})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchbay", "serve", "--config", str(path), "--port", str(free_port()),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "auth.oauth.scopes.mcp:read" in err.decode()


# --- discovery ---------------------------------------------------------------------------------------


async def test_protected_resource_metadata_names_the_endpoint_exactly(
    served: Served, provider: Provider
) -> None:
    async with httpx2.AsyncClient(base_url=served.base) as http:
        for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
            r = await http.get(path)  # no token: a client reads it before it has one
            assert r.status_code == 200, path
            doc = r.json()
            assert doc["resource"] == served.mcp  # exactly, as RFC 9728 §3.3 wants it
            assert doc["authorization_servers"] == [provider.issuer]
            assert doc["scopes_supported"] == ["mcp:read", "mcp:admin"]
            assert doc["bearer_methods_supported"] == ["header"]
        r = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert r.status_code == 401
    params = challenge(r)
    assert params["resource_metadata"] == f"{served.base}/.well-known/oauth-protected-resource/mcp"
    assert "error" not in params  # no token was presented: nothing to call invalid (RFC 6750 §3.1)


async def test_the_sdk_client_discovers_patchbay_and_its_authorization_server_from_the_401(
    served: Served, provider: Provider
) -> None:
    """mcp.client.auth: 401 → RFC 9728 metadata → the provider's RFC 8414 metadata → a token for
    resource = patchbay's URL (client credentials) → the call goes through."""

    class Memory:
        def __init__(self) -> None:
            self.tokens: OAuthToken | None = None
            self.info: OAuthClientInformationFull | None = None

        async def get_tokens(self) -> OAuthToken | None:
            return self.tokens

        async def set_tokens(self, tokens: OAuthToken) -> None:
            self.tokens = tokens

        async def get_client_info(self) -> OAuthClientInformationFull | None:
            return self.info

        async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
            self.info = client_info

    storage = Memory()
    auth = ClientCredentialsOAuthProvider(
        served.mcp, storage, "reader", SECRET, scope="mcp:read", issuer=provider.issuer
    )
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        streamable_http_client(served.mcp, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert "mb__echo" in [t.name for t in (await session.list_tools()).tools]
    assert storage.tokens is not None
    claims = jwt.decode(storage.tokens.access_token, options={"verify_signature": False})
    assert claims["aud"] == served.mcp and claims["iss"] == provider.issuer


# --- tokens accepted and refused ---------------------------------------------------------------------


async def test_a_valid_token_lists_and_calls(served: Served, provider: Provider) -> None:
    token = await issue(provider.issuer, served.mcp, "reader")
    names, echoed = await call_echo(served.mcp, token, "from an OAuth client")
    assert "mb__echo" in names and echoed == "from an OAuth client"
    async with httpx2.AsyncClient(base_url=served.base, headers={"Authorization": f"Bearer {token}"}) as http:
        r = await http.get("/api/tools")
    assert r.status_code == 200


def _tampered(token: str) -> str:
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{raw}.{signature}"


def _unsigned(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'at+jwt', 'kid': 'k1'})}.{part(claims)}."


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("expired", "expired"),
        ("wrong-audience", "audience"),
        ("wrong-issuer", "issuer"),
        ("other-provider", "key"),
        ("alg-none", "algorithm"),
        ("tampered", "signature"),
        ("unknown-kid", "k-unknown"),
        ("future", "not valid yet"),
        ("no-sub", "sub"),
        ("garbage", "invalid bearer token"),
    ],
)
async def test_bad_tokens_get_401_invalid_token_with_the_metadata(
    served: Served, provider: Provider, kind: str, words: str, tmp_path: Path
) -> None:
    now = int(time.time())
    base = {"iss": provider.issuer, "aud": served.mcp, "sub": "mallory", "scope": "mcp:read", "iat": now}
    if kind == "expired":
        token = forge(K1, **base, exp=now - 3600)
    elif kind == "wrong-audience":
        token = await issue(provider.issuer, "http://127.0.0.1:1/mcp", "reader")  # for another resource
    elif kind == "wrong-issuer":
        token = forge(K1, **{**base, "iss": "https://idp.example.com"}, exp=now + 600)
    elif kind == "other-provider":
        other = Provider(clients=CLIENTS).start()  # a real token from another identity provider
        try:
            token = await issue(other.issuer, served.mcp, "reader")
        finally:
            other.stop()
    elif kind == "alg-none":
        token = _unsigned({**base, "exp": now + 600})
    elif kind == "tampered":
        token = _tampered(await issue(provider.issuer, served.mcp, "reader"))
    elif kind == "unknown-kid":
        token = forge(STRANGER, **base, exp=now + 600)
    elif kind == "future":
        token = forge(K1, **base, exp=now + 7200, nbf=now + 3600)
    elif kind == "no-sub":
        token = forge(K1, **{k: v for k, v in base.items() if k != "sub"}, exp=now + 600)
    else:
        token = "not-a-jwt-and-no-introspection"
    async with httpx2.AsyncClient(base_url=served.base, headers={"Authorization": f"Bearer {token}"}) as http:
        for method, path in (("POST", "/mcp"), ("GET", "/api/tools")):
            r = await http.request(method, path, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert r.status_code == 401, (kind, path, r.text)
            params = challenge(r)
            assert params["error"] == "invalid_token"
            assert params["resource_metadata"] == f"{served.base}/.well-known/oauth-protected-resource/mcp"
            assert words in params["error_description"], params
            assert words in r.json()["detail"]
            assert token not in r.text and token not in r.headers["www-authenticate"]


async def test_a_token_without_a_role_gets_403_insufficient_scope(served: Served, provider: Provider) -> None:
    token = await issue(provider.issuer, served.mcp, "writer", scope="mcp:write")  # mapped to no role
    async with httpx2.AsyncClient(base_url=served.base, headers={"Authorization": f"Bearer {token}"}) as http:
        r = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert r.status_code == 403
    params = challenge(r)
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "mcp:read mcp:admin"  # the lowest role's scope first
    assert params["resource_metadata"].endswith("/.well-known/oauth-protected-resource/mcp")
    assert "mcp:read" in r.json()["detail"]


async def test_the_static_token_still_works_next_to_oauth(served: Served) -> None:
    names, echoed = await call_echo(served.mcp, ADMIN_TOKEN, "static")
    assert echoed == "static" and "mb__echo" in names


# --- identities (in-process, against the same real provider) ------------------------------------------


async def test_identity_comes_from_sub_scopes_and_the_roles_claim(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    resource = "http://127.0.0.1:9/mcp"
    rs = ResourceServer(
        resource_server_config(
            parse_config(
                json.dumps(
                    {
                        "mcpServers": {},
                        "auth": {
                            "oauth": {
                                "issuer": provider.issuer,
                                "scopes": SCOPES,
                                "rolesClaim": "roles",
                                "profileClaim": "profile",
                            }
                        },
                    }
                )
            )
        )
        or pytest.fail("no settings"),
        resource,
    )
    try:
        reader_token = await issue(provider.issuer, resource, "reader")
        reader = await rs.authenticate(reader_token)
        assert reader is not None
        assert (reader.name, reader.role, reader.kind, reader.client_id) == (
            "reader",
            "user",
            "oauth",
            "reader",
        )
        assert reader.scopes == ("mcp:read",) and reader.profile is None
        # scope mcp:write maps to nothing, but the roles claim says admin: the highest wins
        boss_token = await issue(provider.issuer, resource, "boss", scope="mcp:write")
        boss = await rs.authenticate(boss_token)
        assert boss is not None and boss.role == "admin" and boss.profile == "work"
        admin = await rs.authenticate(
            await issue(provider.issuer, resource, "reader", scope="mcp:read mcp:admin")
        )
        assert admin is not None and admin.role == "admin"
        assert reader_token not in caplog.text and boss_token not in caplog.text
    finally:
        await rs.close()


async def test_unknown_key_ids_refetch_the_key_set_at_most_once_per_interval(provider: Provider) -> None:
    resource = "http://127.0.0.1:9/mcp"

    def settings(interval: float) -> Any:
        raw = {"issuer": provider.issuer, "scopes": SCOPES, "jwksMinRefreshSeconds": interval}
        return resource_server_config(parse_config(json.dumps({"mcpServers": {}, "auth": {"oauth": raw}})))

    now = int(time.time())
    stranger = forge(STRANGER, iss=provider.issuer, aud=resource, sub="x", scope="mcp:read", exp=now + 600)
    limited = ResourceServer(settings(3600), resource)
    eager = ResourceServer(settings(0), resource)
    try:
        for rs in (limited, eager):
            assert await rs.authenticate(await issue(provider.issuer, resource, "reader")) is not None
            assert rs.keys.fetches == 1
            for _ in range(3):
                with pytest.raises(AuthenticationError, match="k-unknown"):
                    await rs.authenticate(stranger)
        assert limited.keys.fetches == 1  # a flood of made-up key ids is no flood of fetches
        assert eager.keys.fetches == 4
    finally:
        await limited.close()
        await eager.close()


# --- key rotation ------------------------------------------------------------------------------------


async def test_key_rotation_is_followed(tmp_path: Path) -> None:
    port = free_port()
    first = Provider(clients=CLIENTS, jwks={"keys": [K1]}, port=port).start()
    served: Served | None = None
    try:
        config = write_config(
            tmp_path, {"issuer": first.issuer, "scopes": SCOPES, "jwksMinRefreshSeconds": 0}
        )
        served = await start_serve(config, "--token", ADMIN_TOKEN, token=ADMIN_TOKEN)
        old = await issue(first.issuer, served.mcp, "reader")
        assert jwt.get_unverified_header(old)["kid"] == "k1"
        assert (await call_echo(served.mcp, old, "before"))[1] == "before"
        first.stop()
        # the provider rotates: a new signing key first, the old one still published for its tokens
        second = Provider(clients=CLIENTS, jwks={"keys": [K2, K1]}, port=port).start()
        try:
            assert second.issuer == first.issuer
            new = await issue(second.issuer, served.mcp, "reader")
            assert jwt.get_unverified_header(new)["kid"] == "k2"
            assert (await call_echo(served.mcp, new, "after"))[1] == "after"
            assert (await call_echo(served.mcp, old, "old"))[1] == "old"
        finally:
            second.stop()
    finally:
        first.stop()
        if served is not None:
            await stop_serve(served)


# --- opaque tokens: RFC 7662 introspection -------------------------------------------------------------


async def test_opaque_tokens_are_introspected_and_revoked_ones_refused(tmp_path: Path) -> None:
    idp = Provider(clients=CLIENTS, opaque=True).start()
    served: Served | None = None
    try:
        oauth = {
            "issuer": idp.issuer,
            "scopes": SCOPES,
            "introspectionUrl": f"{idp.issuer}/token/introspection",
            "clientId": "patchbay",
            "clientSecret": "${RS_TEST_INTROSPECTION_SECRET}",
        }
        config = write_config(tmp_path, oauth)
        served = await start_serve(
            config, "--token", ADMIN_TOKEN, token=ADMIN_TOKEN, env={"RS_TEST_INTROSPECTION_SECRET": SECRET}
        )
        good = await issue(idp.issuer, served.mcp, "reader")
        assert good.count(".") == 0  # opaque
        assert (await call_echo(served.mcp, good, "opaque"))[1] == "opaque"

        revoked = await issue(idp.issuer, served.mcp, "reader")
        async with httpx2.AsyncClient() as http:
            r = await http.post(
                f"{idp.issuer}/token/revocation", data={"token": revoked}, auth=("reader", SECRET)
            )
            assert r.status_code == 200
        elsewhere = await issue(idp.issuer, "http://127.0.0.1:1/mcp", "reader")  # another resource's
        cases = [(revoked, "not active"), ("made-up-opaque-token", "not active"), (elsewhere, "audience")]
        async with httpx2.AsyncClient(base_url=served.base) as http:
            for token, words in cases:
                r = await http.post(
                    "/mcp",
                    json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert r.status_code == 401, r.text
                params = challenge(r)
                assert params["error"] == "invalid_token" and words in params["error_description"]
            writer = await issue(idp.issuer, served.mcp, "writer", scope="mcp:write")
            r = await http.post(
                "/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={"Authorization": f"Bearer {writer}"},
            )
            assert r.status_code == 403 and challenge(r)["error"] == "insufficient_scope"
    finally:
        idp.stop()
        if served is not None:
            await stop_serve(served)
            assert served.proc.stderr is not None
            logs = (await served.proc.stderr.read()).decode()
            assert SECRET not in logs
