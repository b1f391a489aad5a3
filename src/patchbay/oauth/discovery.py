"""Finding out how to sign in to a server: its 401 challenge, RFC 9728 and RFC 8414 / OIDC metadata.

Built on the MCP SDK's helpers (URL lists, ``WWW-Authenticate`` parsing, metadata models, issuer checks);
the refusals the SDK's client does not make are made here: a protected resource whose ``resource`` is not
this server, and an authorization server that does not do PKCE with S256.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx2
from mcp.client.auth.exceptions import OAuthFlowError
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    validate_metadata_issuer,
)
from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url
from pydantic import ValidationError

from patchbay.oauth.errors import OAuthError

log = logging.getLogger(__name__)

HTTP_TIMEOUT = httpx2.Timeout(30.0, connect=10.0)
_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Challenge:
    """What a 401 or 403 said in its ``WWW-Authenticate: Bearer ...`` header (RFC 6750, RFC 9728)."""

    status: int
    error: str | None = None
    description: str | None = None
    scope: str | None = None
    resource_metadata: str | None = None

    @property
    def insufficient_scope(self) -> bool:
        return self.status == 403 and self.error == "insufficient_scope"

    def describe(self) -> str:
        what = f"HTTP {self.status}"
        if self.error:
            what += f" {self.error}"
        if self.description:
            what += f" ({self.description})"
        return what


def parse_challenge(status: int, header: str | None, *, bare_401: bool = True) -> Challenge | None:
    """The Bearer challenge of a 401/403 response; ``None`` when it asks for something else (Basic, ...).

    With ``bare_401`` a 401 without any ``WWW-Authenticate`` counts too (some OAuth servers omit it;
    discovery then uses the well-known URIs): for servers configured with ``oauth``. A server that is not
    must ask for OAuth (``Bearer``) to be treated as one.
    """
    if status not in (401, 403):
        return None
    if not header:
        return Challenge(status) if status == 401 and bare_401 else None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _PARAM.finditer(rest)
    }
    return Challenge(
        status,
        error=params.get("error"),
        description=params.get("error_description"),
        scope=params.get("scope"),
        resource_metadata=params.get("resource_metadata"),
    )


@dataclass(frozen=True)
class ServerMetadata:
    """Everything discovered about one server's authorization: what to ask for, and where."""

    server_url: str
    resource: str  # the RFC 8707 resource indicator to send
    issuer: str
    asm: OAuthMetadata
    prm: ProtectedResourceMetadata | None
    legacy: bool = False  # no metadata at all: the 2025-03-26 default endpoints on the server's origin

    @property
    def scopes_supported(self) -> list[str] | None:
        if self.prm is not None and self.prm.scopes_supported:
            return list(self.prm.scopes_supported)
        return list(self.asm.scopes_supported) if self.asm.scopes_supported else None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def _get_json(http: httpx2.AsyncClient, url: str) -> httpx2.Response | None:
    try:
        return await http.get(url, headers={"Accept": "application/json"})
    except httpx2.HTTPError as exc:
        log.debug("metadata request to %s failed: %s", url, exc)
        return None


async def discover(
    server: str, server_url: str, challenge: Challenge | None, http: httpx2.AsyncClient
) -> ServerMetadata:
    """Protected resource metadata, then authorization server metadata, with the refusals.

    Raises ``OAuthError`` (naming ``server``) for a lying resource, a wrong issuer or no S256.
    """
    canonical = resource_url_from_server_url(server_url)
    prm: ProtectedResourceMetadata | None = None
    for url in build_protected_resource_metadata_discovery_urls(
        challenge.resource_metadata if challenge else None, server_url
    ):
        response = await _get_json(http, url)
        if response is None or response.status_code != 200:
            continue
        try:
            prm = ProtectedResourceMetadata.model_validate_json(response.content)
        except ValidationError:
            log.debug("server %r: invalid protected resource metadata at %s", server, url)
            continue
        break
    if prm is not None:
        claimed = str(prm.resource)
        if not check_resource_allowed(requested_resource=canonical, configured_resource=claimed):
            raise OAuthError(
                server,
                f"its protected resource metadata names the resource {claimed!r}, which is not "
                f"{canonical!r}: refusing to sign in (tokens for another resource must not be sent here)",
            )
        resource = claimed
        auth_server: str | None = str(prm.authorization_servers[0])
    else:
        resource = canonical
        auth_server = None

    expected_issuer = auth_server or _origin(server_url)
    asm: OAuthMetadata | None = None
    for url in build_oauth_authorization_server_metadata_discovery_urls(auth_server, server_url):
        response = await _get_json(http, url)
        if response is None or response.status_code != 200:
            continue
        try:
            candidate = OAuthMetadata.model_validate_json(response.content)
        except ValidationError:
            continue
        try:
            validate_metadata_issuer(candidate, expected_issuer)
        except OAuthFlowError:
            if auth_server is None and str(candidate.issuer).rstrip("/") == expected_issuer.rstrip("/"):
                pass  # a root issuer written with its trailing slash names the same origin
            else:
                raise OAuthError(
                    server,
                    f"authorization server metadata at {url} names the issuer {str(candidate.issuer)!r}, "
                    f"expected {expected_issuer!r}: refusing to sign in",
                ) from None
        asm = candidate
        break

    legacy = False
    if asm is None:
        if auth_server is not None:
            raise OAuthError(
                server,
                f"found no authorization server metadata for {auth_server} (RFC 8414 / OpenID discovery)",
            )
        # 2025-03-26 fallback: the server's origin is the authorization server, with default endpoints.
        origin = _origin(server_url)
        asm = OAuthMetadata.model_validate(
            {
                "issuer": origin,
                "authorization_endpoint": urljoin(origin, "/authorize"),
                "token_endpoint": urljoin(origin, "/token"),
                "registration_endpoint": urljoin(origin, "/register"),
                "code_challenge_methods_supported": ["S256"],
            }
        )
        legacy = True
    methods = asm.code_challenge_methods_supported
    if not methods or "S256" not in methods:
        offered = ", ".join(methods) if methods else "none"
        raise OAuthError(
            server,
            f"authorization server {str(asm.issuer)!r} does not support PKCE with S256 "
            f"(code_challenge_methods_supported: {offered}): refusing to sign in",
        )
    return ServerMetadata(
        server_url=server_url,
        resource=resource,
        issuer=str(asm.issuer),
        asm=asm,
        prm=prm,
        legacy=legacy,
    )
