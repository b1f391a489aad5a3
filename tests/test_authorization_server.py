"""The built-in authorization server (``auth.server``) end to end: real ``patchbay serve`` processes, the
MCP SDK's own OAuth client (dynamic registration, client ID metadata documents, PKCE), the consent page
in headless Chromium, and every bad input a client or an attacker can send.

Hub ``a`` allows client metadata documents on loopback (``allowLoopbackClientMetadata``, test-only) and
trusts the test's own https server (``SSL_CERT_FILE``); hub ``b`` has the production default, so a
metadata URL whose host resolves to 127.0.0.1 is refused there.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import json
import re
import secrets
import shutil
import ssl
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from mcp.shared.exceptions import MCPError

from patchbay.access.authorization_server.provider import PatchbayProvider
from patchbay.access.authorization_server.settings import ServerSettings
from patchbay.access.authorization_server.state import ServerState
from patchbay.identity import AuthenticationError
from tests.conftest import bad
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS
from tests.test_serve import Served, free_port, stop_serve

try:
    from playwright.async_api import Browser, Page, async_playwright
except ImportError:  # pragma: no cover - `make test` installs it (the dev extras)
    async_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.skipif(async_playwright is None, reason="playwright is not installed: run `make test`"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed: run `make test`"),
    pytest.mark.asyncio(loop_scope="module"),
]

ADMIN = "as-admin-t0ken-for-tests"
PROFILES = {"adders": {"tools": ["gh__add"]}}
CALLBACK = "http://127.0.0.1:{port}/callback"


# -- a local https server for client ID metadata documents ---------------------------------------------


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost/127.0.0.1 that is its own CA (the hub trusts it alone)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class MetadataServer:
    """https://localhost:PORT/<name>.json serves ``documents[name]``; ``/big.json`` is too large and
    ``/moved.json`` redirects."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.documents: dict[str, Any] = {}
        documents = self.documents

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.strip("/").removesuffix(".json")
                if name == "moved":
                    self.send_response(302)
                    self.send_header("Location", "/ok.json")
                    self.end_headers()
                    return
                body = (
                    b"{" + b" " * 10_000 + b"}" if name == "big" else json.dumps(documents.get(name)).encode()
                )
                self.send_response(200 if name in documents or name == "big" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"https://localhost:{self.port}/{name}.json"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


# -- hubs ----------------------------------------------------------------------------------------------


async def start_hub(directory: Path, *, loopback_metadata: bool, env: dict[str, str] | None = None) -> Served:
    port = free_port()
    directory.mkdir(exist_ok=True)
    config = directory / "patchbay.json"
    server: dict[str, Any] = {"enabled": True, "issuer": f"http://127.0.0.1:{port}"}
    if loopback_metadata:
        server["allowLoopbackClientMetadata"] = True
    doc = {
        "mcpServers": {"gh": bad("--name", "gh")},
        "profiles": PROFILES,
        "pinning": "off",
        "auth": {"tokens": [ADMIN], "server": server},
    }
    config.write_text(json.dumps(doc, indent=2))
    return await restart_hub(Served(None, f"http://127.0.0.1:{port}", config, ADMIN), env)  # type: ignore[arg-type]


async def restart_hub(old: Served, env: dict[str, str] | None = None) -> Served:
    import os

    port = urlsplit(old.base).port
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchbay", "serve", "--config", str(old.config), "--port", str(port),
        env={**os.environ, "PATCHBAY_TOKEN": "", **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    served = Served(proc, old.base, old.config, ADMIN)
    async with served.http() as http:
        for _ in range(300):
            if proc.returncode is not None:
                raise RuntimeError(f"patchbay serve exited: {(await proc.stderr.read()).decode()}")  # type: ignore[union-attr]
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return served
            except httpx2.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("patchbay serve did not become ready")


@dataclass
class World:
    a: Served
    b: Served
    metadata: MetadataServer
    browser: Browser


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def metadata_server(certificate: tuple[Path, Path]) -> Iterator[MetadataServer]:
    server = MetadataServer(*certificate)
    yield server
    server.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(
    tmp_path_factory: pytest.TempPathFactory, certificate: tuple[Path, Path], metadata_server: MetadataServer
) -> AsyncIterator[World]:
    root = tmp_path_factory.mktemp("as")
    hubs = await asyncio.gather(
        start_hub(root / "a", loopback_metadata=True, env={"SSL_CERT_FILE": str(certificate[0])}),
        start_hub(root / "b", loopback_metadata=False),
    )
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        world = World(hubs[0], hubs[1], metadata_server, chromium)
        try:
            yield world
        finally:
            await chromium.close()
            # the hubs as they are now: a test may have restarted one (world.b = await restart_hub(...))
            for hub in {id(h): h for h in (*hubs, world.a, world.b)}.values():
                await stop_serve(hub)


# -- driving the consent page -------------------------------------------------------------------------


async def consent_in_browser(
    browser: Browser,
    url: str,
    redirect_prefix: str,
    *,
    role: str = "user",
    profile: str = "",
    deny: bool = False,
    intercept: bool = True,
) -> dict[str, str]:
    """Open the authorization URL in Chromium, sign in with the admin token, approve (or deny), and
    return the query of the redirect to the client: captured (``intercept``, when nothing listens at the
    redirect URI), or once the client's own listener has answered it."""
    page: Page = await (await browser.new_context()).new_page()
    arrived: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def capture(route: Any) -> None:
        if not arrived.done():
            arrived.set_result(route.request.url)
        await route.fulfill(status=200, content_type="text/plain", body="signed in; return to the app")

    async def answered(response: Any) -> None:
        if response.url.startswith(redirect_prefix) and not arrived.done():
            arrived.set_result(response.url)

    if intercept:
        await page.route(re.compile("^" + re.escape(redirect_prefix)), capture)
    else:
        page.on("response", answered)
    try:
        await page.goto(url)
        assert await page.locator("#client-name").is_visible()
        if deny:
            await page.click("#deny")
        else:
            await page.fill("#token", ADMIN)
            await page.select_option("#role", role)
            if profile:
                await page.select_option("#profile", profile)
            await page.click("#approve")
        landed = await asyncio.wait_for(arrived, 30)
    finally:
        await page.context.close()
    return {k: v[0] for k, v in parse_qs(urlsplit(landed).query).items()}


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def sdk_client(
    world: World, hub: Served, *, role: str = "user", profile: str = "", metadata_url: str | None = None
) -> tuple[OAuthClientProvider, MemoryStorage]:
    """The SDK's OAuth client, its browser step done by Chromium on the consent page."""
    redirect = CALLBACK.format(port=free_port())
    storage = MemoryStorage()
    urls: asyncio.Queue[str] = asyncio.Queue()

    async def redirect_handler(url: str) -> None:
        await urls.put(url)

    async def callback_handler() -> AuthorizationCodeResult:
        query = await consent_in_browser(
            world.browser, await urls.get(), redirect, role=role, profile=profile
        )
        return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))

    provider = OAuthClientProvider(
        server_url=hub.mcp,
        client_metadata=OAuthClientMetadata(
            client_name="sdk test client", redirect_uris=[redirect], token_endpoint_auth_method="none"
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
        client_metadata_url=metadata_url,
    )
    return provider, storage


async def admin_get(hub: Served, path: str) -> Any:
    async with hub.http() as http:
        r = await http.get(path)
        assert r.status_code == 200, r.text
        return r.json()


# -- the raw protocol, for the bad inputs ---------------------------------------------------------------


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


async def register(http: httpx2.AsyncClient, redirect: str, name: str = "raw client") -> str:
    r = await http.post(
        "/register",
        json={"redirect_uris": [redirect], "token_endpoint_auth_method": "none", "client_name": name},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["client_id"])


async def consent_over_http(
    http: httpx2.AsyncClient,
    location: str,
    *,
    action: str = "approve",
    token: str = ADMIN,
    csrf_cookie: bool = True,
) -> httpx2.Response:
    """GET the consent page the authorization endpoint redirected to, and post its form as a browser would."""
    page = await http.get(location)
    assert page.status_code == 200, page.text
    fields = dict(re.findall(r'name="(request|csrf)" value="([^"]*)"', page.text))
    cookie = page.cookies.get("patchbay_consent") or ""
    http.cookies.clear()
    if csrf_cookie:
        http.cookies.set("patchbay_consent", cookie)
    try:
        return await http.post(
            "/authorize/consent",
            data={**fields, "action": action, "token": token, "role": "user", "profile": ""},
        )
    finally:
        http.cookies.clear()


@dataclass
class Flow:
    client_id: str
    redirect: str
    verifier: str
    code: str


async def authorize(
    http: httpx2.AsyncClient, hub: Served, client_id: str, redirect: str, challenge: str, **extra: str
) -> httpx2.Response:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "st4te",
        "resource": hub.mcp,
        **extra,
    }
    return await http.get(f"/authorize?{urlencode(params)}")


async def code_flow(http: httpx2.AsyncClient, hub: Served) -> Flow:
    redirect = CALLBACK.format(port=free_port())
    client_id = await register(http, redirect)
    verifier, challenge = pkce()
    r = await authorize(http, hub, client_id, redirect, challenge)
    assert r.status_code == 302, r.text
    done = await consent_over_http(http, r.headers["location"])
    assert done.status_code == 303, done.text
    query = parse_qs(urlsplit(done.headers["location"]).query)
    assert query["state"] == ["st4te"] and query["iss"] == [hub.base]
    return Flow(client_id, redirect, verifier, query["code"][0])


async def exchange(http: httpx2.AsyncClient, flow: Flow, **override: str) -> httpx2.Response:
    data = {
        "grant_type": "authorization_code",
        "code": flow.code,
        "redirect_uri": flow.redirect,
        "client_id": flow.client_id,
        "code_verifier": flow.verifier,
        "resource": "",
        **override,
    }
    return await http.post("/token", data={k: v for k, v in data.items() if v})


async def refresh(http: httpx2.AsyncClient, client_id: str, token: str) -> httpx2.Response:
    return await http.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
    )


async def mcp_status(mcp: str, access_token: str) -> int:
    """The HTTP status of an MCP initialize with this bearer token, sent to the endpoint at ``mcp``."""
    async with httpx2.AsyncClient(timeout=30) as http:
        r = await http.post(
            mcp,
            headers={
                "Authorization": f"Bearer {access_token}",
                "Accept": "application/json, text/event-stream",
            },
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "probe", "version": "1"},
                },
            },
        )
        return r.status_code


def anonymous(hub: Served) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=hub.base, timeout=10)


# -- the tests ------------------------------------------------------------------------------------------


async def test_metadata_and_the_401_challenge_point_clients_at_patchbay(world: World) -> None:
    hub = world.a
    async with anonymous(hub) as http:
        meta = (await http.get("/.well-known/oauth-authorization-server")).json()
        assert meta["issuer"] == hub.base  # exactly as configured: no trailing slash
        assert meta["authorization_endpoint"] == f"{hub.base}/authorize"
        assert meta["registration_endpoint"] == f"{hub.base}/register"
        assert meta["revocation_endpoint"] == f"{hub.base}/revoke"
        assert meta["code_challenge_methods_supported"] == ["S256"]
        assert meta["client_id_metadata_document_supported"] is True
        assert "none" in meta["token_endpoint_auth_methods_supported"]
        prm = (await http.get("/.well-known/oauth-protected-resource/mcp")).json()
        assert prm["resource"] == hub.mcp and prm["authorization_servers"] == [hub.base]
        assert (await http.get("/.well-known/oauth-protected-resource")).json()["resource"] == hub.mcp
        profile_prm = (await http.get("/.well-known/oauth-protected-resource/mcp/adders")).json()
        assert profile_prm["resource"] == f"{hub.mcp}/adders"
        assert (await http.get("/.well-known/oauth-protected-resource/elsewhere")).status_code == 404
        refused = await http.post(hub.mcp, json={})
        assert refused.status_code == 401
        prm_url = f"{hub.base}/.well-known/oauth-protected-resource/mcp"
        assert (
            refused.headers["www-authenticate"] == f'Bearer realm="patchbay", resource_metadata="{prm_url}"'
        )


async def test_sdk_client_registers_signs_in_on_the_consent_page_and_calls_tools(world: World) -> None:
    hub = world.a
    auth, storage = sdk_client(world, hub, role="user")
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        streamable_http_client(hub.mcp, http_client=http) as (r, w),
        ClientSession(r, w) as session,
    ):
        await session.initialize()
        names = {t.name for t in (await session.list_tools()).tools}
        assert {"gh__add", "gh__echo"} <= names
        result = await session.call_tool("gh__add", {"a": 2, "b": 3})
        assert result.structured_content == {"result": 5}
    assert storage.tokens is not None and storage.tokens.access_token.startswith("pbat_")
    assert storage.client is not None
    clients = await admin_get(hub, "/api/oauth/clients")
    mine = next(c for c in clients if c["client_id"] == storage.client.client_id)
    assert mine["client_name"] == "sdk test client" and mine["kind"] == "registered" and mine["grants"] == 1
    grants = [g for g in await admin_get(hub, "/api/oauth/grants") if g["client_id"] == mine["client_id"]]
    assert [(g["role"], g["profile"], g["approved_by"]) for g in grants] == [("user", None, "token-1")]
    listed = json.dumps([clients, grants])
    assert storage.tokens.access_token not in listed and str(storage.tokens.refresh_token) not in listed
    # the client's token is a user's: the authorization server's own listing is admin only
    async with httpx2.AsyncClient(base_url=hub.base, timeout=10) as http:
        r = await http.get(
            "/api/oauth/grants", headers={"Authorization": f"Bearer {storage.tokens.access_token}"}
        )
        assert r.status_code == 403 and "admin" in r.json()["detail"]


async def test_a_grant_bound_to_a_profile_calls_only_that_profile(world: World) -> None:
    hub = world.a
    auth, storage = sdk_client(world, hub, role="user", profile="adders")
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        streamable_http_client(hub.mcp, http_client=http) as (r, w),
        ClientSession(r, w) as session,
    ):
        await session.initialize()
        assert (await session.call_tool("gh__add", {"a": 1, "b": 1})).structured_content == {"result": 2}
        with pytest.raises(MCPError, match="tool 'gh__echo' is not in profile 'adders'"):
            await session.call_tool("gh__echo", {"text": "hi"})
    assert storage.client is not None
    grants = [
        g for g in await admin_get(hub, "/api/oauth/grants") if g["client_id"] == storage.client.client_id
    ]
    assert [g["profile"] for g in grants] == ["adders"]


async def test_sdk_client_with_a_client_id_metadata_document(world: World) -> None:
    hub, docs = world.a, world.metadata
    url = docs.url("sdk")
    auth, storage = sdk_client(world, hub, metadata_url=url)
    redirect = str(auth.context.client_metadata.redirect_uris[0])  # type: ignore[index]
    docs.documents["sdk"] = {
        "client_id": url,
        "client_name": "metadata document client",
        "redirect_uris": [redirect],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
    }
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        streamable_http_client(hub.mcp, http_client=http) as (r, w),
        ClientSession(r, w) as session,
    ):
        await session.initialize()
        assert (await session.call_tool("gh__add", {"a": 4, "b": 5})).structured_content == {"result": 9}
    assert storage.client is not None and storage.client.client_id == url  # no registration happened
    clients = {c["client_id"]: c for c in await admin_get(hub, "/api/oauth/clients")}
    assert clients[url]["kind"] == "metadata_document"
    assert clients[url]["client_name"] == "metadata document client"


@pytest.mark.parametrize(
    ("hub_name", "client_id", "why"),
    [
        ("a", "https://10.1.2.3/client.json", "a private address (10.1.2.3)"),
        ("a", "https://192.168.7.8/client.json", "a private address (192.168.7.8)"),
        ("a", "https://169.254.169.254/latest/meta-data.json", "a link-local address"),
        ("b", "https://localhost:{port}/ok.json", "a loopback address (127.0.0.1)"),
        ("a", "http://example.com/client.json", None),  # not https: not a metadata document, unknown
        ("a", "https://localhost:{port}/big.json", "larger than 5120 bytes"),
        ("a", "https://localhost:{port}/moved.json", "HTTP 302 (redirects are not followed)"),
        ("a", "https://localhost:{port}/liar.json", "client_id 'https://example.com/me' is not its URL"),
        ("a", "https://localhost:{port}/absent.json", "HTTP 404"),
    ],
)
async def test_a_refused_client_metadata_document_is_named(
    world: World, hub_name: str, client_id: str, why: str | None
) -> None:
    hub = world.a if hub_name == "a" else world.b
    client_id = client_id.format(port=world.metadata.port)
    world.metadata.documents["ok"] = {"client_id": world.metadata.url("ok"), "redirect_uris": [CALLBACK]}
    world.metadata.documents["liar"] = {"client_id": "https://example.com/me", "redirect_uris": [CALLBACK]}
    _, challenge = pkce()
    async with anonymous(hub) as http:
        r = await authorize(http, hub, client_id, CALLBACK.format(port=1), challenge)
    assert r.status_code == 400, r.text
    body = r.json()
    if why is None:
        assert body["error"] == "invalid_request" and "not found" in body["error_description"]
    else:
        assert body["error"] == "invalid_client" and why in body["error_description"], body


async def test_replayed_code_fails_and_revokes_the_grant(world: World) -> None:
    hub = world.a
    async with anonymous(hub) as http:
        flow = await code_flow(http, hub)
        first = await exchange(http, flow)
        assert first.status_code == 200, first.text
        tokens = first.json()
        assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
        assert await mcp_status(hub.mcp, tokens["access_token"]) == 200
        again = await exchange(http, flow)
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
        assert await mcp_status(hub.mcp, tokens["access_token"]) == 401
        dead = await refresh(http, flow.client_id, tokens["refresh_token"])
        assert dead.json()["error"] == "invalid_grant"


async def test_pkce_and_redirect_uri_mismatches_are_refused(world: World) -> None:
    hub = world.a
    async with anonymous(hub) as http:
        flow = await code_flow(http, hub)
        wrong_verifier = await exchange(http, flow, code_verifier=secrets.token_urlsafe(48))
        assert wrong_verifier.status_code == 400
        assert wrong_verifier.json() == {
            "error": "invalid_grant",
            "error_description": "incorrect code_verifier",
        }
        wrong_redirect = await exchange(http, flow, redirect_uri=flow.redirect + "x")
        assert wrong_redirect.status_code == 400 and wrong_redirect.json()["error"] == "invalid_request"
        # at the authorization endpoint: an unregistered redirect URI is answered here, never redirected to
        _, challenge = pkce()
        r = await authorize(http, hub, flow.client_id, "http://127.0.0.1:1/elsewhere", challenge)
        assert r.status_code == 400 and "not registered" in r.json()["error_description"]
        # plain PKCE is refused (back to the client, which is known, with the error)
        r = await authorize(
            http, hub, flow.client_id, flow.redirect, challenge, code_challenge_method="plain"
        )
        assert r.status_code == 302
        query = parse_qs(urlsplit(r.headers["location"]).query)
        assert (
            query["error"] == ["invalid_request"] and "code_challenge_method" in query["error_description"][0]
        )
        # a token for somebody else's resource is not issued
        r = await authorize(
            http, hub, flow.client_id, flow.redirect, challenge, resource="https://other.example/mcp"
        )
        assert parse_qs(urlsplit(r.headers["location"]).query)["error"] == ["invalid_target"]


async def test_registration_refuses_non_https_redirects(world: World) -> None:
    async with anonymous(world.a) as http:
        for uri in ("http://evil.example/cb", "https://ok.example/cb#frag", "javascript:alert(1)"):
            r = await http.post(
                "/register", json={"redirect_uris": [uri], "token_endpoint_auth_method": "none"}
            )
            assert r.status_code == 400, (uri, r.text)
            assert r.json()["error"] in ("invalid_redirect_uri", "invalid_client_metadata")
        ok = await http.post(
            "/register",
            json={
                "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
                "token_endpoint_auth_method": "none",
            },
        )
        assert ok.status_code == 201


async def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_grant(world: World) -> None:
    hub = world.a
    async with anonymous(hub) as http:
        flow = await code_flow(http, hub)
        first = (await exchange(http, flow)).json()
        second = await refresh(http, flow.client_id, first["refresh_token"])
        assert second.status_code == 200, second.text
        rotated = second.json()
        assert rotated["refresh_token"] != first["refresh_token"]
        assert await mcp_status(hub.mcp, rotated["access_token"]) == 200
        reused = await refresh(http, flow.client_id, first["refresh_token"])
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
        # the reuse ended the grant: the rotated tokens are dead too
        assert await mcp_status(hub.mcp, rotated["access_token"]) == 401
        assert (await refresh(http, flow.client_id, rotated["refresh_token"])).json()[
            "error"
        ] == "invalid_grant"


async def test_revocation_endpoint_and_admin_api_end_a_grant(world: World) -> None:
    hub = world.a
    async with anonymous(hub) as http:
        flow = await code_flow(http, hub)
        tokens = (await exchange(http, flow)).json()
        r = await http.post("/revoke", data={"token": tokens["access_token"], "client_id": flow.client_id})
        assert r.status_code == 200
        assert await mcp_status(hub.mcp, tokens["access_token"]) == 401
        assert (await refresh(http, flow.client_id, tokens["refresh_token"])).json()[
            "error"
        ] == "invalid_grant"

        flow = await code_flow(http, hub)
        tokens = (await exchange(http, flow)).json()
    grant = next(g for g in await admin_get(hub, "/api/oauth/grants") if g["client_id"] == flow.client_id)
    async with hub.http() as admin:
        assert (await admin.delete(f"/api/oauth/grants/{grant['id']}")).status_code == 204
        missing = await admin.delete(f"/api/oauth/grants/{grant['id']}")
        assert missing.status_code == 404 and "no grant" in missing.json()["detail"]
        assert await mcp_status(hub.mcp, tokens["access_token"]) == 401
        # forgetting the client ends its grants and its registration
        assert (await admin.delete(f"/api/oauth/clients/{flow.client_id}")).status_code == 204
        assert flow.client_id not in {c["client_id"] for c in (await admin.get("/api/oauth/clients")).json()}
    async with anonymous(hub) as http:  # a forgotten client is told so (401 invalid_client: register again)
        gone = await refresh(http, flow.client_id, tokens["refresh_token"])
        assert gone.status_code == 401 and gone.json()["error"] == "invalid_client"


async def test_consent_page_deny_csrf_and_wrong_token(world: World) -> None:
    hub = world.a
    redirect = CALLBACK.format(port=free_port())
    async with anonymous(hub) as http:
        client_id = await register(http, redirect, name="<b>Evil</b> & co")
        _, challenge = pkce()
        # no CSRF cookie: refused, and the request stays pending
        r = await authorize(http, hub, client_id, redirect, challenge)
        location = r.headers["location"]
        refused = await consent_over_http(http, location, csrf_cookie=False)
        assert refused.status_code == 403 and "CSRF" in refused.text
        # a wrong token is answered on the page
        wrong = await consent_over_http(http, location, token="not-the-admin-token")
        assert wrong.status_code == 401 and "not an admin token" in wrong.text
        assert "&lt;b&gt;Evil&lt;/b&gt; &amp; co" in wrong.text  # the client's name is text, never markup
        assert wrong.headers["x-frame-options"] == "DENY"
    # deny in the browser: access_denied back at the client, with its state
    url = f"{hub.base}/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "keep-me",
        }
    )
    query = await consent_in_browser(world.browser, url, redirect, deny=True)
    assert query["error"] == "access_denied" and query["state"] == "keep-me"
    # the audit trail has both, naming the client, never the token typed in
    records = await admin_get(hub, "/api/audit?event=consent")
    mine = [r for r in records if r.get("client") == client_id]
    assert [r["outcome"] for r in mine] == ["refused", "denied"], mine
    assert "not-the-admin-token" not in json.dumps(records)


async def test_state_survives_a_restart_encrypted(world: World) -> None:
    hub = world.b
    async with anonymous(hub) as http:
        flow = await code_flow(http, hub)
        tokens = (await exchange(http, flow)).json()
    state = hub.config.parent / ".patchbay-authorization-server" / "state"
    blob = state.read_bytes()
    for secret in (tokens["access_token"], tokens["refresh_token"], flow.client_id):
        assert secret.encode() not in blob
    assert (state.parent / "key").stat().st_mode & 0o777 == 0o600
    await stop_serve(hub)
    world.b = await restart_hub(hub)
    assert await mcp_status(world.b.mcp, tokens["access_token"]) == 200
    async with anonymous(world.b) as http:
        assert (await refresh(http, flow.client_id, tokens["refresh_token"])).status_code == 200


async def test_expired_access_token_is_refused_by_name(tmp_path: Path) -> None:
    """Expiry in-process, with the provider's clock moved on (no waiting for real time)."""
    from mcp.server.auth.provider import AuthorizationParams
    from pydantic import AnyUrl

    from patchbay.access.authorization_server.authenticator import GrantAuthenticator

    now = [1_000_000.0]
    settings = ServerSettings(issuer="https://hub.example.com", state_directory=tmp_path, access_token_ttl=60)
    provider = PatchbayProvider(settings, ServerState(tmp_path, clock=lambda: now[0]), clock=lambda: now[0])
    client = OAuthClientInformationFull(
        client_id="c1", redirect_uris=[AnyUrl("https://app.example/cb")], token_endpoint_auth_method="none"
    )
    params = AuthorizationParams(
        state="s",
        scopes=["mcp"],
        code_challenge="x" * 43,
        redirect_uri=AnyUrl("https://app.example/cb"),
        redirect_uri_provided_explicitly=True,
        resource="https://hub.example.com/mcp",
    )

    async def scenario() -> None:
        await provider.register_client(client)
        consent = await provider.authorize(client, params)
        pending = provider.take_pending(parse_qs(urlsplit(consent).query)["request"][0])
        assert pending is not None
        approved = provider.approve(pending, role="viewer", profile=None, approved_by="op")
        assert approved is not None
        assert provider.approve(pending, role="admin", profile=None, approved_by="op") is None  # once only
        code = parse_qs(urlsplit(approved).query)
        loaded = await provider.load_authorization_code(client, code["code"][0])
        assert loaded is not None
        tokens = await provider.exchange_authorization_code(client, loaded)
        authenticator = GrantAuthenticator(provider)
        identity = await authenticator.authenticate(tokens.access_token)
        assert identity is not None and identity.role == "viewer" and identity.kind == "oauth"
        assert identity.name.startswith("oauth:g_") and identity.client_id == "c1"
        assert await authenticator.authenticate("some-other-kind-of-token") is None
        now[0] += 61
        with pytest.raises(AuthenticationError, match="expired"):
            await authenticator.authenticate(tokens.access_token)
        assert await provider.load_access_token(tokens.access_token) is None

    await scenario()


async def test_config_errors_name_the_field(tmp_path: Path) -> None:
    cases = [
        ({"server": {"enabled": True}}, "auth.server.issuer is required"),
        ({"server": {"enabled": True, "issuer": "http://hub.example.com"}}, "must be https"),
        ({"server": {"enabled": True, "issuer": "https://hub.example.com/sub"}}, "without a path"),
        ({"server": {"enabled": True, "issuer": "https://h.example", "accessTokenTtl": 0}}, "accessTokenTtl"),
        (
            {"server": {"enabled": True, "issuer": "https://h.example", "issuerr": 1}},
            "unknown field 'issuerr'",
        ),
        (
            {
                "server": {"enabled": True, "issuer": "https://h.example"},
                "oauth": {"issuer": "https://idp.example"},
            },
            "auth.server and auth.oauth are both configured",
        ),
    ]
    for auth, message in cases:
        config = tmp_path / "patchbay.json"
        config.write_text(json.dumps({"mcpServers": {}, "auth": auth}))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "patchbay", "config", "check", str(config), "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        report = json.loads(out)
        assert not report["valid"], auth
        assert any(
            message in e["message"] and e["field"].startswith("auth.server") for e in report["errors"]
        ), (
            auth,
            report["errors"],
        )
    # and serve refuses to start without an admin token to sign in to the consent page with
    no_token = {"tokens": [], "server": {"enabled": True, "issuer": "https://h.example"}}
    config.write_text(json.dumps({"mcpServers": {}, "auth": no_token}))
    import os

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchbay", "serve", "--config", str(config), "--port", str(free_port()),
        env={**os.environ, "PATCHBAY_TOKEN": ""},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 2 and "auth.server needs an admin token" in err.decode()


MCP_REMOTE = Path(__file__).parent / "npm" / "node_modules" / "mcp-remote" / "dist" / "proxy.js"


@pytest.mark.skipif(not MCP_REMOTE.exists(), reason="mcp-remote is not installed: run `make test`")
async def test_mcp_remote_signs_in_through_the_consent_page_and_calls_tools(
    world: World, tmp_path: Path
) -> None:
    """mcp-remote (the stdio bridge Claude Desktop users run): its browser opener is a script that only
    records the URL; the URL it prints is opened in Chromium and approved, the redirect reaches its own
    callback listener, and then tools are listed and called through it over stdio."""
    import os

    from mcp import StdioServerParameters, stdio_client

    hub = world.a
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    opener = bin_dir / "xdg-open"
    opener.write_text('#!/bin/sh\necho "$1" >> "$OPENED"\nexit 0\n')
    opener.chmod(0o755)
    port = free_port()
    params = StdioServerParameters(
        command=shutil.which("node") or "node",
        args=[str(MCP_REMOTE), hub.mcp, str(port), "--allow-http", "--host", "127.0.0.1"],
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "BROWSER": str(opener),
            "OPENED": str(tmp_path / "opened.txt"),
            "HOME": str(tmp_path),
            "MCP_REMOTE_CONFIG_DIR": str(tmp_path / "mcp-auth"),
        },
    )
    read_fd, write_fd = os.pipe()
    errlog = os.fdopen(write_fd, "w")
    lines: list[str] = []
    url: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def watch_stderr() -> None:
        reader = asyncio.StreamReader()
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb")
        )
        try:
            while raw := await reader.readline():
                lines.append(raw.decode(errors="replace").rstrip())
                if (
                    len(lines) >= 2
                    and "Please authorize this client by visiting:" in lines[-2]
                    and not url.done()
                ):
                    url.set_result(lines[-1].strip())
        finally:
            transport.close()

    async def approve() -> dict[str, str]:
        return await consent_in_browser(
            world.browser, await asyncio.wait_for(url, 60), f"http://127.0.0.1:{port}/", intercept=False
        )

    watcher = asyncio.create_task(watch_stderr())
    try:
        approving = asyncio.create_task(approve())
        async with stdio_client(params, errlog=errlog) as (r, w):
            errlog.close()  # the child has its own copy; EOF arrives when it exits
            async with ClientSession(r, w, read_timeout_seconds=90) as session:
                await session.initialize()
                callback = await approving
                assert "code" in callback
                names = {t.name for t in (await session.list_tools()).tools}
                assert "gh__add" in names
                assert (await session.call_tool("gh__add", {"a": 20, "b": 22})).structured_content == {
                    "result": 42
                }
    finally:
        if not errlog.closed:
            errlog.close()
        await asyncio.wait_for(watcher, 30)
    grants = await admin_get(hub, "/api/oauth/grants")
    clients = {c["client_id"]: c for c in await admin_get(hub, "/api/oauth/clients")}
    redirects = [clients[g["client_id"]]["redirect_uris"] for g in grants if g["client_id"] in clients]
    assert [f"http://127.0.0.1:{port}/oauth/callback"] in redirects, (redirects, lines[-20:])


async def run_cli(*args: str) -> tuple[int, str, str]:
    import os

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchbay", *args,
        env={**os.environ, "PATCHBAY_TOKEN": ""},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_lists_and_revokes_clients_and_grants(world: World) -> None:
    hub = world.a
    async with anonymous(hub) as http:
        flow = await code_flow(http, hub)
        tokens = (await exchange(http, flow)).json()
    where = ("--url", hub.base, "--token", ADMIN)
    code, out, _ = await run_cli("oauth", "clients", *where, "--json")
    assert code == 0 and flow.client_id in {c["client_id"] for c in json.loads(out)}
    code, out, _ = await run_cli("oauth", "grants", *where)
    assert code == 0 and "raw client" in out and "user" in out and tokens["access_token"] not in out
    code, out, _ = await run_cli("oauth", "grants", *where, "--json")
    grant = next(g for g in json.loads(out) if g["client_id"] == flow.client_id)
    code, _, err = await run_cli("oauth", "revoke", "grant", grant["id"], *where)
    assert code == 0 and "grant revoked" in err
    assert await mcp_status(hub.mcp, tokens["access_token"]) == 401
    code, _, err = await run_cli("oauth", "revoke", "grant", grant["id"], *where)
    assert code != 0 and f"no grant {grant['id']!r}" in err
    code, _, err = await run_cli("oauth", "revoke", "client", flow.client_id, *where)
    assert code == 0 and "client forgotten" in err
    code, _, err = await run_cli("oauth", "grants", "--url", hub.base, "--token", "wrong")
    assert code != 0 and "token" in err


async def test_dashboard_panel_lists_clients_and_revokes_a_grant(world: World) -> None:
    hub = world.a
    async with anonymous(hub) as http:
        flow = await code_flow(http, hub)
        tokens = (await exchange(http, flow)).json()
    grant = next(g for g in await admin_get(hub, "/api/oauth/grants") if g["client_id"] == flow.client_id)
    context = await world.browser.new_context()
    errors: list[str] = []
    try:
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{hub.base}/")
        await page.fill("#token-input", ADMIN)  # the dashboard asks for the hub's token
        await page.press("#token-input", "Enter")
        card = page.locator(f'#oauth-section article[data-client="{flow.client_id}"]')
        await card.wait_for()
        assert "raw client" in await card.inner_text()
        row = card.locator(f'li[data-grant="{grant["id"]}"]')
        assert "user" in await row.inner_text()
        await row.locator("button").click()
        await row.wait_for(state="detached")
        assert "revoked" in await page.locator("#oauth-status").inner_text()
    finally:
        await context.close()
    assert not errors
    assert await mcp_status(hub.mcp, tokens["access_token"]) == 401


async def test_dashboard_panel_is_hidden_without_the_authorization_server(
    tmp_path: Path, world: World
) -> None:
    from tests.test_serve import start_serve

    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"mcpServers": {}}))
    plain = await start_serve(config, env={"PATCHBAY_TOKEN": ""})
    context = await world.browser.new_context()
    try:
        page = await context.new_page()
        async with page.expect_response(lambda r: r.url.endswith("/api/oauth/clients")) as answer:
            await page.goto(f"{plain.base}/")
        assert (await answer.value).status == 404
        await page.locator("#server-list").wait_for()
        assert await page.locator("#oauth-section").is_hidden()
    finally:
        await context.close()
        await stop_serve(plain)


async def test_open_registration_cannot_grow_the_state_without_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the cap, the oldest never-approved clients are forgotten; an approved one never is."""
    from pydantic import AnyUrl

    from patchbay.access.authorization_server import provider as provider_module
    from patchbay.access.authorization_server.state import GrantRecord

    monkeypatch.setattr(provider_module, "MAX_UNAPPROVED_CLIENTS", 2)
    now = [1000.0]
    settings = ServerSettings(issuer="https://hub.example.com", state_directory=tmp_path)
    provider = PatchbayProvider(settings, ServerState(tmp_path), clock=lambda: now[0])

    async def scenario() -> None:
        for name in "abcd":
            now[0] += 1
            await provider.register_client(
                OAuthClientInformationFull(
                    client_id=name,
                    redirect_uris=[AnyUrl("https://app.example/cb")],
                    token_endpoint_auth_method="none",
                )
            )
            if name == "b":
                provider.state.put_grant(
                    GrantRecord(
                        id="g_a",
                        client_id="a",
                        role="user",
                        resource=settings.resource,
                        approved_by="op",
                        created_at=0,
                    )
                )

    await scenario()
    assert sorted(provider.state.clients) == ["a", "c", "d"]
    assert sorted(ServerState(tmp_path).clients) == ["a", "c", "d"]  # and so on disk


async def test_a_client_of_a_profile_endpoint_gets_that_profile_preselected(world: World) -> None:
    hub = world.a
    redirect = CALLBACK.format(port=free_port())
    async with anonymous(hub) as http:
        client_id = await register(http, redirect)
        _, challenge = pkce()
        r = await authorize(http, hub, client_id, redirect, challenge, resource=f"{hub.mcp}/adders")
        page = await http.get(r.headers["location"])
    assert '<option value="adders" selected>' in page.text and f"{hub.mcp}/adders" in page.text


async def test_an_undecryptable_state_stops_the_start_instead_of_dropping_every_grant(tmp_path: Path) -> None:
    import os

    state = tmp_path / ".patchbay-authorization-server"
    state.mkdir()
    (state / "state").write_bytes(b"not a fernet token")
    config = tmp_path / "patchbay.json"
    auth = {"tokens": [ADMIN], "server": {"enabled": True, "issuer": "https://hub.example.com"}}
    config.write_text(json.dumps({"mcpServers": {}, "auth": auth}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchbay", "serve", "--config", str(config), "--port", str(free_port()),
        env={**os.environ, "PATCHBAY_TOKEN": ""},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 2 and "cannot be decrypted or read" in err.decode()
    assert (state / "state").read_bytes() == b"not a fernet token"  # left as it was
