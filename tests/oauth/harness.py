"""Real parts for the sign-in tests: node-oidc-provider, an MCP server it protects, and Chromium.

``Provider`` runs tests/oauth/provider.mjs (oidc-provider from tests/npm) on 127.0.0.1. ``ProtectedServer``
is an SDK 2.x ``MCPServer`` under streamable HTTP, in this process, behind a bearer check that validates the
provider's JWT access tokens with PyJWT against its JWKS (issuer, audience = this server's URL, expiry),
answers 401 with ``WWW-Authenticate: Bearer resource_metadata=...`` and serves RFC 9728 metadata. Its
``admin_echo`` tool needs the ``mcp:admin`` scope (403 ``insufficient_scope``: step-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2
import jwt
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from starlette.types import Message, Receive, Scope, Send

NPM_DIR = Path(__file__).resolve().parent.parent / "npm"
PROVIDER_JS = Path(__file__).resolve().parent / "provider.mjs"
NODE = shutil.which("node")


def provider_available() -> bool:
    return NODE is not None and (NPM_DIR / "node_modules" / "oidc-provider").is_dir()


class Provider:
    """node-oidc-provider in a child process; ``issuer`` once it listens."""

    def __init__(self, env: dict[str, str] | None = None, **options: Any) -> None:
        self.options = options
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.issuer = ""

    def start(self) -> Provider:
        assert NODE is not None
        self.proc = subprocess.Popen(
            [NODE, str(PROVIDER_JS), json.dumps(self.options)],
            cwd=NPM_DIR,
            env={**os.environ, **self.env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()  # blocks until it listens (or dies)
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"oidc-provider did not start (exit status {self.proc.poll()})")
        self.issuer = line.removeprefix("listening ")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ProtectedServer:
    """An MCP server that wants the provider's tokens; ``expire_all()`` makes all tokens seen so far stale."""

    def __init__(
        self,
        issuer: str,
        *,
        claimed_resource: str | None = None,
        scopes: str = "mcp:read",
        authorization_server: str | None = None,
        always_insufficient: bool = False,
        challenge: bool = True,
        resource_metadata: bool = True,
    ) -> None:
        self.issuer = issuer
        self.authorization_server = authorization_server or issuer  # what its metadata points to
        self.always_insufficient = always_insufficient  # a server that 403s admin_echo whatever the token
        self.challenge = challenge  # False: a 401 without WWW-Authenticate (not asking for OAuth)
        self.resource_metadata = resource_metadata  # False: a 2025-03-26 server (no RFC 9728 metadata)
        self.claimed_resource = claimed_resource  # what its metadata says (a lying server says another URL)
        self.required = scopes.split()
        self.port = 0
        self.seen: list[dict[str, Any]] = []  # claims of every accepted token
        self.rejected: set[str] = set()  # jti values treated as expired
        self.unauthorized = 0  # 401s sent
        self.forbidden = 0  # 403s sent
        self._keys: jwt.PyJWKSet | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.as_metadata: dict[str, Any] | None = (
            None  # set: it is its own (metadata-only) authorization server
        )
        mcp = MCPServer("protected")

        @mcp.tool()
        def echo(text: str) -> str:
            """Return the text unchanged."""
            return text

        @mcp.tool()
        def admin_echo(text: str) -> str:
            """Return the text; needs the mcp:admin scope."""
            return f"admin: {text}"

        @mcp.tool()
        def whoami(ctx: Context) -> str:
            """The subject (sub) of the access token this call came with (checked by the ASGI layer)."""
            request: Any = ctx.request_context.request
            token = str(request.headers.get("authorization", "")).partition(" ")[2]
            return str(jwt.decode(token, options={"verify_signature": False})["sub"])

        self._inner = mcp.streamable_http_app()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def metadata_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/oauth-protected-resource/mcp"

    def expire_all(self) -> None:
        self.rejected.update(c["jti"] for c in self.seen)

    async def start(self) -> ProtectedServer:
        if self.issuer:
            async with httpx2.AsyncClient() as http:
                response = await http.get(f"{self.issuer}/jwks")
                response.raise_for_status()
                self._keys = jwt.PyJWKSet.from_dict(response.json())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            raise RuntimeError("the protected MCP server did not start")
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    # --- ASGI ---------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":

            async def watched_send(message: Message) -> None:
                if message["type"] == "lifespan.startup.complete":
                    self._ready.set()
                await send(message)

            await self._inner(scope, receive, watched_send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path.startswith(("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")):
            if self.as_metadata is None:
                await self._json(send, 404, {"error": "not found"})
            else:
                await self._json(send, 200, self.as_metadata)
            return
        if path.startswith("/.well-known/oauth-protected-resource") and not self.resource_metadata:
            await self._json(send, 404, {"error": "not found"})
            return
        if path.startswith("/.well-known/oauth-protected-resource"):
            await self._json(
                send,
                200,
                {
                    "resource": self.claimed_resource or self.url,
                    "authorization_servers": [self.authorization_server],
                    "scopes_supported": ["mcp:read", "mcp:write"],
                    "bearer_methods_supported": ["header"],
                },
            )
            return
        headers = dict(scope["headers"])
        claims = self._verify(headers.get(b"authorization", b"").decode())
        if claims is None:
            self.unauthorized += 1
            error = ', error="invalid_token"' if headers.get(b"authorization") else ""
            scopes = " ".join(self.required)
            await self._json(
                send,
                401,
                {"error": "unauthorized"},
                (
                    f'Bearer resource_metadata="{self.metadata_url}", scope="{scopes}"{error}'
                    if self.resource_metadata
                    else f"Bearer{error.replace(',', '', 1)}"
                )
                if self.challenge
                else None,
            )
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        granted = str(claims.get("scope", "")).split()
        if b'"admin_echo"' in body and ("mcp:admin" not in granted or self.always_insufficient):
            self.forbidden += 1
            await self._json(
                send,
                403,
                {"error": "insufficient_scope"},
                f'Bearer error="insufficient_scope", scope="mcp:read mcp:admin", '
                f'resource_metadata="{self.metadata_url}"',
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self._inner(scope, replay, send)

    def _verify(self, authorization: str) -> dict[str, Any] | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token or self._keys is None:
            return None
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys[kid].key if kid else self._keys.keys[0].key
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=["RS256"], audience=self.url, issuer=self.issuer
            )
        except (jwt.PyJWTError, KeyError):
            return None
        if not set(self.required) <= set(str(claims.get("scope", "")).split()):
            return None
        if claims.get("jti") in self.rejected:
            return None
        self.seen.append(claims)
        return claims

    @staticmethod
    async def _json(send: Send, status: int, body: dict[str, Any], www: str | None = None) -> None:
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        if www:
            headers.append((b"www-authenticate", www.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


# Also under a prefix: a hub mounted in a host app (tests/test_embed.py) has /hub/oauth/callback.
CALLBACK_RE = re.compile(
    r"^http://127\.0\.0\.1:\d+/(?:[A-Za-z0-9_-]+/)?(oauth/callback|api/oauth/callback).*"
)


async def consent(
    browser: Any, url: str, *, intercept: bool = False, login: str = "alice"
) -> dict[str, str] | None:
    """Sign in through the provider's own login and consent pages in a fresh Chromium context.

    The redirect then reaches the real callback; with ``intercept`` it is captured instead and its query
    parameters returned (to tamper with).
    """
    context = await browser.new_context()
    captured: dict[str, str] = {}
    try:
        page = await context.new_page()
        if intercept:

            async def capture(route: Any) -> None:
                captured.update(parse_qsl(urlsplit(route.request.url).query))
                await route.fulfill(status=200, body="captured")

            await page.route(CALLBACK_RE, capture)
        await page.goto(url)
        await page.fill('input[name="login"]', login)
        await page.fill('input[name="password"]', "secret")
        await page.click('button[type="submit"]')
        await page.click('button:has-text("Continue")')
        await page.wait_for_url(CALLBACK_RE)
        with contextlib.suppress(Exception):
            await page.wait_for_load_state()
        return captured if intercept else None
    finally:
        await context.close()


class MetadataDocumentHost:
    """Serves a client ID metadata document over HTTPS on 127.0.0.1 with a self-signed certificate."""

    def __init__(self, directory: Path) -> None:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
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
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256())
        )
        self.cert_file = directory / "cimd-cert.pem"
        self.key_file = directory / "cimd-key.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self.port = sock.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}/patchbay/client.json"
        self.document = {
            "client_id": self.url,
            "client_name": "patchbay",
            "redirect_uris": ["http://127.0.0.1/oauth/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "application_type": "native",
        }
        self.fetched = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                    self._started.set()
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        self.fetched += 1
        await ProtectedServer._json(send, 200, self.document)

    async def start(self) -> MetadataDocumentHost:
        self._started = asyncio.Event()
        config = uvicorn.Config(
            self,
            log_level="warning",
            lifespan="on",
            ssl_certfile=str(self.cert_file),
            ssl_keyfile=str(self.key_file),
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        ready = asyncio.create_task(self._started.wait())
        done, _ = await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            raise RuntimeError("the metadata document host did not start")
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
