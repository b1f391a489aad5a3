"""The OAuth 2.1 client of the MCP authorization spec, for one remote server.

Why not the SDK's ``OAuthClientProvider``: it runs the browser step *inside* an HTTP request (the request
that got the 401 waits for a person), which cannot work for a headless hub where ``sign_in`` must return a
URL at once, the redirect may arrive in another process (``patchbay auth login``) or on the hub's own
callback route, and the server must wait in ``needs_auth`` meanwhile. It also does not refuse an
authorization server without S256, has no revocation, no ``private_key_jwt`` for the code flow, and no
bound on step-ups across requests. So the flow is driven here, in one place, while every protocol part
the SDK has is the SDK's: the metadata and token models, discovery URL lists, ``WWW-Authenticate``
parsing, scope selection (with ``offline_access``), issuer checks (RFC 8414, RFC 9207), resource
matching (RFC 8707) and PKCE parameters. Client assertions are signed by PyJWT, never by hand.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from mcp.client.auth.exceptions import OAuthFlowError
from mcp.client.auth.oauth2 import PKCEParameters
from mcp.client.auth.utils import (
    get_client_metadata_scopes,
    union_scopes,
    validate_authorization_response_iss,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken
from pydantic import ValidationError

from patchbay.oauth.discovery import HTTP_TIMEOUT, Challenge, ServerMetadata, discover, parse_challenge
from patchbay.oauth.errors import NeedsAuthError, OAuthError
from patchbay.oauth.settings import OAuthSettings
from patchbay.oauth.store import TokenRecord, TokenStore

log = logging.getLogger(__name__)

REFRESH_MARGIN = 60.0  # refresh this many seconds before the access token expires
PENDING_TTL = 600.0  # an authorization URL is good for ten minutes
MAX_STEP_UPS = 2  # automatic (client credentials) step-ups for one scope set, then give up
CLIENT_NAME = "patchbay"
_INIT_PROBE = {
    "jsonrpc": "2.0",
    "id": "patchbay-auth-probe",
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "patchbay", "version": "0"},
    },
}


STORE_POLL = 2.0  # seconds between reads of the token store while waiting for a sign-in


@dataclass
class PendingAuthorization:
    """One authorization URL handed out, waiting for its redirect. Holds the PKCE verifier: never shown."""

    server: str
    url: str
    state: str
    redirect_uri: str
    issuer: str
    resource: str
    scope: str | None
    verifier: str = field(repr=False)
    created: float = field(default_factory=time.monotonic)
    label: str = ""  # as shown ("up (for alice)"): a per-user sign-in may end on another replica

    @property
    def expired(self) -> bool:
        return time.monotonic() - self.created > PENDING_TTL


def _same_redirect(a: str, b: str) -> bool:
    """Equal, or loopback URIs that differ only in the port (RFC 8252 section 7.3)."""
    if a == b:
        return True
    pa, pb = urlsplit(a), urlsplit(b)
    loopback = {"127.0.0.1", "[::1]", "::1"}
    return (
        pa.hostname in loopback
        and pa.hostname == pb.hostname
        and (pa.scheme, pa.path, pa.query) == (pb.scheme, pb.path, pb.query)
    )


def _signing_alg(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: "ES256", 384: "ES384", 521: "ES512"}[key.curve.key_size]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ValueError(f"unsupported private key type {type(key).__name__}")


def _oauth_error_text(response: httpx2.Response) -> str:
    """``error: description`` of an OAuth error response (never echoing anything else of the body)."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        desc = body.get("error_description")
        return f"HTTP {response.status_code} {body['error']}" + (f": {desc}" if isinstance(desc, str) else "")
    return f"HTTP {response.status_code}"


class OAuthClient:
    """Sign-in, tokens and refresh for one server. Safe to share between the transport and the API."""

    def __init__(
        self,
        name: str,
        server_url: str,
        settings: OAuthSettings | None,
        store: TokenStore,
        *,
        verify: bool | str = True,
    ) -> None:
        self.name = name
        self.server_url = server_url
        self.settings = settings or OAuthSettings()
        self.configured = settings is not None  # an ``oauth`` key: any 401 means sign-in, not only Bearer
        self.store = store
        self.verify = verify
        self.metadata: ServerMetadata | None = None
        self.needs_auth: NeedsAuthError | None = None  # set when a person must sign in
        # A 403 insufficient_scope: one operation needs wider scopes. The session goes on (only that call
        # fails); a sign-in asks for them. Kept apart from needs_auth, which stops the server.
        self.step_up: NeedsAuthError | None = None
        self.challenge: Challenge | None = None  # the last 401/403 the server sent
        self._lock = asyncio.Lock()
        self._signed_in = asyncio.Event()
        self._stale_token: str | None = None
        self._step_ups: dict[str, int] = {}
        if self.record() is not None and self.record_tokens() is not None:
            self._signed_in.set()

    # --- state -----------------------------------------------------------------------------------------

    @property
    def grant(self) -> str:
        return self.settings.grant

    def record(self) -> TokenRecord | None:
        issuer = self.metadata.issuer if self.metadata is not None else None
        return self.store.get(self.name, issuer)

    def record_tokens(self) -> OAuthToken | None:
        record = self.record()
        return record.tokens if record is not None else None

    def status(self) -> dict[str, Any]:
        """What may be shown (API, CLI): never a token, a secret or a verifier."""
        record = self.record()
        tokens = record.tokens if record is not None else None
        return {
            "server": self.name,
            "signed_in": tokens is not None,
            "grant": self.grant,
            "issuer": record.issuer
            if record is not None
            else (self.metadata.issuer if self.metadata else None),
            "scope": tokens.scope if tokens is not None else None,
            "expires_at": record.expires_at if record is not None and tokens is not None else None,
            "refreshable": bool(tokens is not None and tokens.refresh_token),
            "needs_auth": str(self.needs_auth) if self.needs_auth is not None else None,
            "step_up": self.step_up.scope if self.step_up is not None else None,
        }

    async def wait_signed_in(self, poll: float = STORE_POLL) -> None:
        """Return once tokens are stored (at once if they already are).

        Tokens stored by this process wake it at once; the store is also read every ``poll`` seconds, so a
        sign-in by another process (``patchbay auth login --no-hub`` beside a running hub or agent) is
        noticed too, without a restart.
        """
        while not self._signed_in.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await self._signed_in.wait()
            if self._signed_in.is_set():
                return
            fresh = self.record_tokens()
            if fresh is not None and fresh.access_token != self._stale_token:  # stored by someone else
                self.needs_auth = None
                self._signed_in.set()

    def mark_needs_auth(self, reason: str, scope: str | None = None) -> NeedsAuthError:
        self.needs_auth = NeedsAuthError(self.name, reason, scope=scope)
        self._signed_in.clear()
        stale = self.record_tokens()  # what the store holds now does not count as a new sign-in
        self._stale_token = stale.access_token if stale is not None else None
        return self.needs_auth

    def _http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False, verify=self.verify)

    # --- discovery -------------------------------------------------------------------------------------

    async def probe(self) -> Challenge | None:
        """Ask the server, without a token, whether (and how) it wants OAuth: its 401 challenge or None."""
        async with self._http() as http:
            response = await http.post(
                self.server_url,
                json=_INIT_PROBE,
                headers={"Accept": "application/json, text/event-stream"},
            )
        challenge = parse_challenge(response.status_code, response.headers.get("www-authenticate"))
        if challenge is not None:
            self.challenge = challenge
        return challenge

    async def discover(self, challenge: Challenge | None = None) -> ServerMetadata:
        challenge = challenge or self.challenge
        async with self._http() as http:
            self.metadata = await discover(self.name, self.server_url, challenge, http)
        return self.metadata

    async def _metadata(self) -> ServerMetadata:
        if self.metadata is not None:
            return self.metadata
        record = self.store.get(self.name)
        if self.challenge is None and record is None:
            await self.probe()
        return await self.discover()

    # --- registration ----------------------------------------------------------------------------------

    async def _client_info(
        self, meta: ServerMetadata, redirect_uri: str | None
    ) -> OAuthClientInformationFull:
        """Pre-registered client, else the stored registration, else CIMD, else dynamic registration."""
        s = self.settings
        if s.client_id:
            return OAuthClientInformationFull(
                client_id=s.client_id,
                client_secret=s.client_secret,
                token_endpoint_auth_method=s.auth_method,
                redirect_uris=[redirect_uri] if redirect_uri else None,  # type: ignore[list-item]
            )
        record = self.store.get(self.name, meta.issuer)
        if record is not None and record.client is not None:
            registered = [str(u) for u in record.client.redirect_uris or []]
            if redirect_uri is None or any(_same_redirect(redirect_uri, u) for u in registered):
                return record.client
        if s.client_metadata_url and meta.asm.client_id_metadata_document_supported:
            return OAuthClientInformationFull(
                client_id=s.client_metadata_url,
                token_endpoint_auth_method="none",
                redirect_uris=[redirect_uri] if redirect_uri else None,  # type: ignore[list-item]
            )
        return await self._register(meta, redirect_uri)

    async def _register(self, meta: ServerMetadata, redirect_uri: str | None) -> OAuthClientInformationFull:
        endpoint = meta.asm.registration_endpoint
        if endpoint is None:
            raise OAuthError(
                self.name,
                f"authorization server {meta.issuer!r} offers no dynamic client registration: register "
                "patchbay there and set oauth.clientId (and oauth.clientSecret) in its config entry",
            )
        method = self.settings.token_endpoint_auth_method or "none"
        body: dict[str, Any] = {
            "client_name": CLIENT_NAME,
            "application_type": "native",
            "token_endpoint_auth_method": method,
            "response_types": ["code"],
        }
        if self.grant == "client_credentials":
            body["grant_types"] = ["client_credentials"]
            body["response_types"] = []
        else:
            body["grant_types"] = ["authorization_code", "refresh_token"]
            body["redirect_uris"] = [redirect_uri]
        async with self._http() as http:
            response = await http.post(str(endpoint), json=body)
        if response.status_code not in (200, 201):
            raise OAuthError(
                self.name, f"dynamic client registration at {endpoint} failed: {_oauth_error_text(response)}"
            )
        try:
            raw = response.json()
            if isinstance(raw, dict):
                raw.pop("issuer", None)
            info = OAuthClientInformationFull.model_validate(raw)
        except (ValueError, ValidationError) as exc:
            raise OAuthError(
                self.name, f"dynamic client registration returned an invalid answer: {exc}"
            ) from None
        assigned = info.token_endpoint_auth_method or "client_secret_basic"
        if assigned not in ("none", "client_secret_basic", "client_secret_post"):
            raise OAuthError(
                self.name,
                f"the authorization server registered patchbay for {assigned!r}, which it cannot use",
            )
        if assigned != "none" and not info.client_secret:
            raise OAuthError(self.name, f"registered for {assigned!r} but no client_secret was issued")
        info.token_endpoint_auth_method = assigned
        info.issuer = meta.issuer
        self._save(meta, client=info)
        log.info("server %r: registered a client at %s", self.name, meta.issuer)
        return info

    # --- token endpoint --------------------------------------------------------------------------------

    def _authenticate(
        self, client: OAuthClientInformationFull, data: dict[str, str], asm: OAuthMetadata
    ) -> dict[str, str]:
        """Add client authentication to a token/revocation request; returns the extra headers."""
        method = client.token_endpoint_auth_method or "none"
        headers: dict[str, str] = {}
        if method == "client_secret_basic" and client.client_secret:
            pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif method == "client_secret_post" and client.client_secret:
            data["client_id"] = client.client_id
            data["client_secret"] = client.client_secret
        elif method == "private_key_jwt":
            data["client_id"] = client.client_id
            data["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            data["client_assertion"] = self._client_assertion(client.client_id, asm)
        else:
            data["client_id"] = client.client_id
        return headers

    def _client_assertion(self, client_id: str, asm: OAuthMetadata) -> str:
        """A short-lived RFC 7523 assertion signed with the configured key (PyJWT does the signing)."""
        pem = self.settings.private_key
        if not pem:
            raise OAuthError(
                self.name, "oauth.privateKey: private_key_jwt needs privateKey or privateKeyFile"
            )
        try:
            key = load_pem_private_key(pem.encode(), password=None)
            alg = _signing_alg(key)
        except (ValueError, TypeError) as exc:
            raise OAuthError(self.name, f"oauth.privateKey: not a usable PEM private key ({exc})") from None
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": self.settings.audience or str(asm.issuer),
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + 60,
        }
        return jwt.encode(claims, key, algorithm=alg)  # type: ignore[arg-type]

    async def _token_request(
        self, meta: ServerMetadata, client: OAuthClientInformationFull, data: dict[str, str]
    ) -> OAuthToken:
        data["resource"] = meta.resource  # RFC 8707, in every token request
        headers = self._authenticate(client, data, meta.asm)
        async with self._http() as http:
            response = await http.post(str(meta.asm.token_endpoint), data=data, headers=headers)
        if response.status_code != 200:
            raise OAuthError(
                self.name,
                f"the token endpoint refused the {data['grant_type']} grant: {_oauth_error_text(response)}",
            )
        try:
            return OAuthToken.model_validate_json(response.content)
        except ValidationError:
            raise OAuthError(
                self.name, "the token endpoint returned an answer that is not a Bearer token"
            ) from None

    def _save(
        self,
        meta: ServerMetadata,
        *,
        client: OAuthClientInformationFull | None = None,
        tokens: OAuthToken | None = None,
        keep_tokens: bool = True,
    ) -> TokenRecord:
        record = self.store.get(self.name, meta.issuer) or TokenRecord(
            issuer=meta.issuer, resource=meta.resource
        )
        record.resource = meta.resource
        record.grant = self.grant
        if client is not None and not self.settings.client_id:
            record.client = client  # pre-registered credentials stay in the config, not here
        if tokens is not None:
            previous = record.tokens
            if tokens.refresh_token is None and previous is not None:
                tokens.refresh_token = previous.refresh_token  # no rotation: the old one stays valid
            record.tokens = tokens
            record.expires_at = time.time() + tokens.expires_in if tokens.expires_in else None
        elif not keep_tokens:
            record.tokens = None
            record.expires_at = None
        self.store.save(self.name, record)
        return record

    def _signed_in_now(self, *, person: bool = False) -> None:
        self.needs_auth = None
        if person:  # a person chose the scopes; automatic step-ups keep their count (no loop across requests)
            self.step_up = None
            self._step_ups.clear()
        self._signed_in.set()

    # --- the authorization code grant -----------------------------------------------------------------

    def _scope(
        self, meta: ServerMetadata, challenge: Challenge | None, extra: str | None = None
    ) -> str | None:
        if self.settings.scopes is not None:
            scope: str | None = " ".join(self.settings.scopes) or None
        else:
            scope = get_client_metadata_scopes(
                challenge.scope if challenge else None,
                meta.prm,
                meta.asm,
                ["authorization_code", "refresh_token"] if self.grant == "authorization_code" else [],
            )
        granted = self.record_tokens()
        if extra:  # a step-up keeps what was granted and adds what the server asked for (SEP-2350)
            scope = union_scopes(union_scopes(granted.scope if granted else None, scope), extra)
        if (
            self.grant == "authorization_code"
            and scope
            and meta.asm.scopes_supported
            and "offline_access" in meta.asm.scopes_supported
            and "offline_access" not in scope.split()
        ):
            scope = f"{scope} offline_access"
        return scope

    async def begin(self, redirect_uri: str) -> PendingAuthorization:
        """Discover, register if needed, and build the authorization URL (PKCE S256, state, resource)."""
        if self.grant != "authorization_code":
            raise OAuthError(self.name, "uses the client_credentials grant: there is nothing to sign in to")
        meta = await self._metadata()
        client = await self._client_info(meta, redirect_uri)
        challenge = self.challenge
        extra = challenge.scope if challenge is not None and challenge.insufficient_scope else None
        scope = self._scope(meta, challenge, extra)
        pkce = PKCEParameters.generate()
        state = secrets.token_urlsafe(32)
        params = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": pkce.code_challenge,
            "code_challenge_method": "S256",
            "resource": meta.resource,
        }
        if scope:
            params["scope"] = scope
            if "offline_access" in scope.split():
                params["prompt"] = "consent"  # OpenID Connect wants it for offline_access
        endpoint = str(meta.asm.authorization_endpoint)
        url = f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"
        return PendingAuthorization(
            server=self.name,
            url=url,
            state=state,
            redirect_uri=redirect_uri,
            issuer=meta.issuer,
            resource=meta.resource,
            scope=scope,
            verifier=pkce.code_verifier,
        )

    async def complete(self, pending: PendingAuthorization, params: Mapping[str, str]) -> None:
        """Check the redirect (state, ``iss``, errors) and exchange the code for tokens."""
        if pending.expired:
            raise OAuthError(self.name, "the sign-in took longer than 10 minutes; start it again")
        got_state = params.get("state") or ""
        if not secrets.compare_digest(got_state.encode(), pending.state.encode()):
            raise OAuthError(
                self.name, "the authorization response's state does not match the request: refusing it"
            )
        meta = self.metadata
        if meta is None or meta.issuer != pending.issuer:
            meta = await self.discover()
        try:
            validate_authorization_response_iss(params.get("iss"), meta.asm)
        except OAuthFlowError as exc:
            raise OAuthError(self.name, f"refusing the authorization response: {exc}") from None
        if "error" in params:
            desc = params.get("error_description")
            raise OAuthError(
                self.name, f"the authorization server said {params['error']}" + (f": {desc}" if desc else "")
            )
        code = params.get("code")
        if not code:
            raise OAuthError(self.name, "the authorization response carries no code")
        # the registration the authorization URL was made with: maybe by another replica a moment ago, so
        # read afresh (a stale "none yet" would register again, and the code belongs to the first client)
        self.store.fresh(self.name)
        client = await self._client_info(meta, pending.redirect_uri)
        async with self._lock:
            tokens = await self._token_request(
                meta,
                client,
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": pending.redirect_uri,
                    "code_verifier": pending.verifier,
                },
            )
            if tokens.scope is None:
                tokens.scope = pending.scope
            self._save(meta, tokens=tokens)
        log.info("server %r: signed in at %s", self.name, meta.issuer)
        self._signed_in_now(person=True)

    # --- client credentials, refresh -------------------------------------------------------------------

    async def fetch_client_credentials(self, extra_scope: str | None = None) -> OAuthToken:
        """A token for a machine-to-machine server (no person): the client_credentials grant."""
        meta = await self._metadata()
        client = await self._client_info(meta, None)
        scope = self._scope(meta, self.challenge, extra_scope)
        data = {"grant_type": "client_credentials"}
        if scope:
            data["scope"] = scope
        async with self._lock:
            tokens = await self._token_request(meta, client, data)
            if tokens.scope is None:
                tokens.scope = scope
            self._save(meta, tokens=tokens)
        self._signed_in_now()
        return tokens

    async def refresh(self, stale: str | None = None) -> bool:
        """Use the refresh token (rotation: the new one replaces it). False when there is none or it failed.

        ``stale`` is the access token the caller found wanting: if another task already replaced it, that is
        success without a second refresh (with rotation a second one would use a spent refresh token).
        """
        async with self._lock, self.store.refresh_lock(self.name):  # cluster mode: one replica at a time
            record = self.record()
            tokens = record.tokens if record is not None else None
            if tokens is not None and stale is not None and tokens.access_token != stale:
                return True
            if record is None or tokens is None or not tokens.refresh_token:
                return False
            meta = self.metadata or await self.discover()
            client = await self._client_info(meta, None)
            try:
                new = await self._token_request(
                    meta, client, {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
                )
            except OAuthError as exc:
                log.warning("server %r: token refresh failed: %s", self.name, exc)
                self._save(meta, keep_tokens=False)
                return False
            if new.scope is None:
                new.scope = tokens.scope
            self._save(meta, tokens=new)
        log.info("server %r: access token refreshed", self.name)
        return True

    async def access_token(self) -> str | None:
        """A valid access token, refreshed (or re-fetched, for client credentials) when about to expire."""
        record = self.store.get(self.name, self.metadata.issuer if self.metadata else None)
        tokens = record.tokens if record is not None else None
        if record is None or tokens is None:
            if self.grant == "client_credentials" and self.needs_auth is None:
                return (await self.fetch_client_credentials()).access_token
            return None
        if record.expires_at is not None and time.time() >= record.expires_at - REFRESH_MARGIN:
            if await self.refresh(stale=tokens.access_token):
                fresh = self.record_tokens()
                return fresh.access_token if fresh else None
            if self.grant == "client_credentials":
                return (await self.fetch_client_credentials()).access_token
            self.mark_needs_auth("the access token expired and could not be refreshed")
            return None
        return tokens.access_token

    async def unauthorized(self, used: str | None, challenge: Challenge) -> str | None:
        """The server answered 401 (or 403 ``insufficient_scope``) to ``used``: a token to retry with, or None

        On None the client is in ``needs_auth`` (or, for a 403, has a ``step_up``) and says why. Never
        loops: the caller retries at most once, and client-credential step-ups for one scope set are bounded
        by ``MAX_STEP_UPS``.
        """
        self.challenge = challenge
        if challenge.insufficient_scope:
            wanted = challenge.scope or ""
            if self.grant == "client_credentials":
                tries = self._step_ups.get(wanted, 0)
                if tries < MAX_STEP_UPS:
                    self._step_ups[wanted] = tries + 1
                    return (await self.fetch_client_credentials(extra_scope=challenge.scope)).access_token
            self.step_up = NeedsAuthError(
                self.name,
                f"the server needs wider scopes ({wanted or 'unspecified'}) for this: {challenge.describe()}",
                scope=wanted,
            )
            return None
        if used is not None and await self.refresh(stale=used):
            fresh = self.record_tokens()
            return fresh.access_token if fresh else None
        if self.grant == "client_credentials" and self.needs_auth is None:
            try:
                return (await self.fetch_client_credentials()).access_token
            except OAuthError as exc:
                self.mark_needs_auth(str(exc))
                return None
        what = "the server no longer accepts the stored token" if used else "the server requires sign-in"
        self.mark_needs_auth(f"{what} ({challenge.describe()})")
        return None

    # --- sign out --------------------------------------------------------------------------------------

    async def logout(self) -> bool:
        """Revoke the tokens where the server supports RFC 7009, and forget them. True if any were held."""
        records = self.store.records(self.name)
        for record in records:
            if record.tokens is not None:
                await self._revoke(record)
        self.store.delete(self.name)
        self._signed_in.clear()
        self.mark_needs_auth("signed out")
        return bool(records)

    async def _revoke(self, record: TokenRecord) -> None:
        tokens = record.tokens
        if tokens is None:
            return
        meta = self.metadata
        if meta is None or meta.issuer != record.issuer:
            try:
                meta = await self.discover()
            except (OAuthError, httpx2.HTTPError) as exc:
                log.warning(
                    "server %r: cannot revoke the tokens (%s); forgetting them anyway", self.name, exc
                )
                return
        endpoint = meta.asm.revocation_endpoint
        if endpoint is None:
            return
        client = self._stored_or_configured_client(record)
        if client is None:
            return
        async with self._http() as http:
            for token, hint in (
                (tokens.refresh_token, "refresh_token"),
                (tokens.access_token, "access_token"),
            ):
                if not token:
                    continue
                data = {"token": token, "token_type_hint": hint}
                headers = self._authenticate(client, data, meta.asm)
                try:
                    response = await http.post(str(endpoint), data=data, headers=headers)
                except httpx2.HTTPError as exc:
                    log.warning("server %r: revocation request failed: %s", self.name, exc)
                    return
                if response.status_code != 200:
                    log.warning("server %r: revocation refused: %s", self.name, _oauth_error_text(response))

    def _stored_or_configured_client(self, record: TokenRecord) -> OAuthClientInformationFull | None:
        s = self.settings
        if s.client_id:
            return OAuthClientInformationFull(
                client_id=s.client_id, client_secret=s.client_secret, token_endpoint_auth_method=s.auth_method
            )
        return record.client
