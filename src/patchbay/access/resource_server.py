"""OAuth resource server mode: access tokens from the operator's own identity provider (``auth.oauth``).

JWT access tokens are verified with PyJWT against the issuer's JWKS, found through its discovery document
(OpenID ``/.well-known/openid-configuration``, else RFC 8414 ``/.well-known/oauth-authorization-server``).
The JWKS is fetched with httpx2 on the event loop rather than with ``jwt.PyJWKClient``: that client is
synchronous (urllib) and would block every request while it fetches, or need a thread per fetch; here one
fetch at a time is shared by every request that waits for it, under a lock. It is cached, fetched again
when a token names a key id it does not hold (the issuer rotated its keys), at most once per
``jwksMinRefreshSeconds``, so a flood of tokens with made-up key ids cannot turn into a flood of fetches.
Opaque tokens go to RFC 7662 introspection, whose positive answers are cached for a short while under the
token's SHA-256 (never the token). The identity is the token's ``sub``; its role comes from ``rolesClaim``
and from the ``scopes`` → role mapping, the highest winning. The settings (``auth.oauth``) are read by
:mod:`patchbay.access.resource_settings`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
import jwt

from patchbay.access.resource_settings import (
    SYMMETRIC_ALGORITHMS,
    OAuthResourceConfig,
    resource_server_config,
)
from patchbay.config import HubConfig
from patchbay.errors import ConfigError
from patchbay.identity import ROLES, AuthenticationError, Identity, Role

log = logging.getLogger(__name__)

PRM_PATH = "/.well-known/oauth-protected-resource"
_RANK = {role: rank for rank, role in enumerate(ROLES)}
_HTTP_TIMEOUT = 10.0
_RETRY_AFTER_FAILURE = 5.0  # seconds a failed discovery or key set fetch is not retried
_MAX_DOCUMENT = 1 << 20  # discovery documents, key sets and introspection answers are small


def metadata_url(resource: str) -> str:
    """Where RFC 9728 puts a resource's metadata: the well-known path inserted before the resource's path."""
    parts = urlsplit(resource)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, PRM_PATH + path, "", ""))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class InsufficientScope(AuthenticationError):
    """A valid token that grants no patchbay role: 403 ``insufficient_scope``, naming the scopes needed."""

    def __init__(self, message: str, scope: str) -> None:
        super().__init__(message, status=403, error="insufficient_scope")
        self.scope = scope


class _Unavailable(AuthenticationError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status=503, error="temporarily_unavailable")


async def _get_json(http: httpx2.AsyncClient, url: str, what: str) -> dict[str, Any]:
    try:
        response = await http.get(url, headers={"Accept": "application/json"})
    except httpx2.HTTPError as exc:
        name = type(exc).__name__
        raise _Unavailable(f"the identity provider's {what} could not be fetched: {name}") from None
    if response.status_code != 200 or len(response.content) > _MAX_DOCUMENT:
        raise _Unavailable(f"the identity provider's {what} answered HTTP {response.status_code}")
    try:
        data = response.json()
    except ValueError:
        raise _Unavailable(f"the identity provider's {what} is not JSON") from None
    if not isinstance(data, dict):
        raise _Unavailable(f"the identity provider's {what} is not a JSON object")
    return data


class KeySet:
    """The issuer's signing keys (raw JWKs by ``kid``), fetched on first use and again on an unknown kid."""

    def __init__(self, settings: OAuthResourceConfig, http: httpx2.AsyncClient) -> None:
        self._settings = settings
        self._http = http
        self._keys: list[dict[str, Any]] | None = None
        self._jwks_uri = settings.jwks_uri
        self._fetched_at = -float("inf")
        self._failed: tuple[float, AuthenticationError] | None = None  # the last failed fetch, and when
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many times the key set was fetched (for the operator's logs and tests)

    async def _discover(self) -> str:
        issuer = self._settings.issuer.rstrip("/")
        parts = urlsplit(issuer)
        candidates = [
            f"{issuer}/.well-known/openid-configuration",
            # RFC 8414: the well-known segment goes before the issuer's path
            urlunsplit(
                (parts.scheme, parts.netloc, f"/.well-known/oauth-authorization-server{parts.path}", "", "")
            ),
        ]
        last: AuthenticationError | None = None
        for url in candidates:
            try:
                document = await _get_json(self._http, url, "discovery document")
            except AuthenticationError as exc:
                last = exc
                continue
            if str(document.get("issuer", "")).rstrip("/") != issuer:
                raise _Unavailable(
                    f"the discovery document at {url} names issuer {document.get('issuer')!r}, "
                    f"not {self._settings.issuer!r} (RFC 8414 §3.3): check auth.oauth.issuer"
                )
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise _Unavailable(f"the discovery document at {url} has no jwks_uri")
            return jwks_uri
        assert last is not None
        raise last

    async def _fetch(self) -> None:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover()
        document = await _get_json(self._http, self._jwks_uri, "key set (JWKS)")
        keys = document.get("keys")
        if not isinstance(keys, list):
            raise _Unavailable("the identity provider's key set (JWKS) has no 'keys' list")
        self._keys = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
        self._fetched_at = time.monotonic()
        self.fetches += 1
        log.info("fetched the identity provider's key set: %d signing key(s)", len(self._keys))

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        keys = self._keys or []
        if kid is None:
            return keys[0] if len(keys) == 1 else None
        return next((k for k in keys if k.get("kid") == kid), None)

    async def key(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK for ``kid``; the set is fetched again (rate-limited) when it does not hold it."""
        found = self._find(kid) if self._keys is not None else None
        if found is not None:
            return found
        async with self._lock:
            found = self._find(kid) if self._keys is not None else None
            if found is not None:  # another request fetched it meanwhile
                return found
            now = time.monotonic()
            if self._failed is not None and now - self._failed[0] < _RETRY_AFTER_FAILURE:
                raise self._failed[1]  # the provider is down: do not ask it again on every request
            if self._keys is None or now - self._fetched_at >= self._settings.jwks_min_refresh_seconds:
                try:
                    await self._fetch()
                except AuthenticationError as exc:
                    self._failed = (now, exc)
                    raise
                self._failed = None
            return self._find(kid)


class ResourceServer:
    """The ``Authenticator`` for ``auth.oauth``; also the source of the protected resource metadata."""

    def __init__(self, settings: OAuthResourceConfig, resource: str) -> None:
        self.settings = settings
        self.resource = resource
        self.audience = settings.audience or [resource]
        self._http = httpx2.AsyncClient(timeout=_HTTP_TIMEOUT, follow_redirects=False)
        self.keys = KeySet(settings, self._http)
        self._introspected: OrderedDict[str, tuple[float, Identity]] = OrderedDict()
        self._cache_size = 10_000

    @property
    def metadata_url(self) -> str:
        return metadata_url(self.resource)

    @property
    def scopes_needed(self) -> str:
        """The scopes that give a role, the lowest role's first (what a 403 asks a client to request)."""
        return " ".join(sorted(self.settings.scopes, key=lambda s: _RANK[self.settings.scopes[s]]))

    def metadata(self) -> dict[str, Any]:
        """The RFC 9728 protected resource metadata document."""
        doc: dict[str, Any] = {
            "resource": self.resource,
            "authorization_servers": [self.settings.issuer],
            "bearer_methods_supported": ["header"],
            "resource_name": "patchbay",
        }
        if self.settings.scopes:
            doc["scopes_supported"] = list(self.settings.scopes)
        return doc

    async def close(self) -> None:
        await self._http.aclose()

    # --- Authenticator ---------------------------------------------------------------------------

    async def authenticate(self, token: str) -> Identity | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            header = None
        if header is None:
            if self.settings.introspection_url:
                return await self._introspect(token)
            return None  # not a JWT and no introspection: not a token of this kind
        return self._identity(await self._verify(token, header))

    async def _verify(self, token: str, header: Mapping[str, Any]) -> dict[str, Any]:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.settings.algorithms:
            raise AuthenticationError(
                f"token algorithm {str(alg)[:20]!r} is not allowed (auth.oauth.algorithms: "
                f"{', '.join(self.settings.algorithms)})"
            )
        key: Any
        if alg in SYMMETRIC_ALGORITHMS:
            assert self.settings.secret is not None  # checked with the configuration
            key = self.settings.secret
        else:
            kid = header.get("kid")
            kid = kid if isinstance(kid, str) else None
            jwk = await self.keys.key(kid)
            if jwk is None:
                raise AuthenticationError(
                    f"token signing key {str(kid)[:64]!r} is not in the issuer's key set"
                    if kid
                    else "token names no key id (kid) and the issuer has several keys"
                )
            if "alg" in jwk and jwk["alg"] != alg:
                raise AuthenticationError(f"token algorithm {alg!r} does not match its key's {jwk['alg']!r}")
            try:
                key = jwt.PyJWK(jwk, algorithm=alg)
            except jwt.PyJWTError:
                raise AuthenticationError(f"token algorithm {alg!r} does not fit its key") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError("token not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError(f"token audience is not {' or '.join(self.audience)}") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError(f"token issuer is not {self.settings.issuer}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"token refused: {type(exc).__name__}") from None
        return claims

    async def _introspect(self, token: str) -> Identity:
        digest = _digest(token)
        now = time.monotonic()
        cached = self._introspected.get(digest)
        if cached is not None:
            if cached[0] > now:
                return cached[1]
            del self._introspected[digest]
        url = self.settings.introspection_url
        assert url is not None and self.settings.client_id and self.settings.client_secret
        try:
            response = await self._http.post(
                url,
                data={"token": token, "token_type_hint": "access_token"},
                auth=(self.settings.client_id, self.settings.client_secret),
                headers={"Accept": "application/json"},
            )
        except httpx2.HTTPError as exc:
            raise _Unavailable(f"token introspection failed: {type(exc).__name__}") from None
        if response.status_code != 200 or len(response.content) > _MAX_DOCUMENT:
            raise _Unavailable(f"token introspection answered HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            raise _Unavailable("token introspection answered something that is not JSON") from None
        if not isinstance(answer, dict) or answer.get("active") is not True:
            raise AuthenticationError("token is not active (expired, revoked or unknown)")
        if "iss" in answer and answer["iss"] != self.settings.issuer:
            raise AuthenticationError(f"token issuer is not {self.settings.issuer}")
        if "aud" in answer:
            aud = answer["aud"] if isinstance(answer["aud"], list) else [answer["aud"]]
            if not set(map(str, aud)) & set(self.audience):
                raise AuthenticationError(f"token audience is not {' or '.join(self.audience)}")
        if not answer.get("sub") and isinstance(answer.get("client_id"), str):
            # a client credentials token has no user: its subject is the client (as in RFC 9068 §2.2)
            answer = {**answer, "sub": answer["client_id"]}
        identity = self._identity(answer)
        ttl = self.settings.introspection_cache_seconds
        exp = answer.get("exp")
        if isinstance(exp, int | float):
            ttl = min(ttl, float(exp) - time.time())
        if ttl > 0:
            self._introspected[digest] = (now + ttl, identity)
            while len(self._introspected) > self._cache_size:
                self._introspected.popitem(last=False)
        return identity

    # --- claims → identity ------------------------------------------------------------------------

    def _identity(self, claims: Mapping[str, Any]) -> Identity:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthenticationError("token has no subject (sub)")
        scopes = _scopes(claims)
        roles: list[Role] = [self.settings.scopes[s] for s in scopes if s in self.settings.scopes]
        if self.settings.roles_claim:
            roles += _roles(_claim(claims, self.settings.roles_claim))
        if not roles:
            raise InsufficientScope(
                "the token grants no patchbay role"
                + (f": it needs one of the scopes {self.scopes_needed}" if self.settings.scopes else ""),
                self.scopes_needed,
            )
        profile: str | None = None
        if self.settings.profile_claim:
            value = _claim(claims, self.settings.profile_claim)
            profile = value if isinstance(value, str) and value else None
        client = claims.get("azp") or claims.get("client_id")
        return Identity(
            sub,
            max(roles, key=lambda r: _RANK[r]),
            profile=profile,
            kind="oauth",
            client_id=client if isinstance(client, str) else None,
            scopes=tuple(scopes),
        )


def _scopes(claims: Mapping[str, Any]) -> list[str]:
    """``scope`` (RFC 9068, space-separated) or ``scp`` (a list, as some providers write it)."""
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        return raw.split()
    if isinstance(raw, list):
        return [s for s in raw if isinstance(s, str)]
    return []


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name, or by a dotted path into nested objects (``realm_access.roles``)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _roles(value: Any) -> list[Role]:
    items = value if isinstance(value, list) else str(value).split() if isinstance(value, str) else []
    return [item for item in items if item in _RANK]


def derived_resource(host: str, port: int) -> str:
    """The /mcp URL of a server listening on ``host:port``, when ``auth.oauth.resource`` is not set."""
    if host in ("0.0.0.0", "::", ""):
        raise ConfigError(
            "auth.oauth.resource: set it to the /mcp URL clients use (listening on every interface, the "
            "URL cannot be guessed, and tokens' audience must match it exactly)",
            field="auth.oauth.resource",
        )
    name = f"[{host}]" if ":" in host else host
    return f"http://{name}:{port}/mcp"


def build_resource_server(config: HubConfig, host: str, port: int) -> ResourceServer | None:
    """The resource server ``patchbay serve`` installs, or None without ``auth.oauth``."""
    settings = resource_server_config(config)
    if settings is None:
        return None
    return ResourceServer(settings, settings.resource or derived_resource(host, port))
