"""The SDK's ``OAuthAuthorizationServerProvider`` for patchbay: clients, codes, grants and tokens.

``mcp.server.auth`` does the protocol (request parsing, PKCE S256 verification, redirect URI and client
checks, error shapes); this class decides and remembers. Tokens are opaque random strings (256 bits)
stored only as SHA-256 digests, not JWTs: every request looks the digest up anyway (one dict access), so
a revoked grant stops working at once and there is no signing key to keep safe or rotate.

- ``authorize`` does not issue a code: it parks the request and sends the browser to the consent page,
  where the operator approves it (``approve``) for a role and profile, or denies it.
- A code is single-use; a replayed one revokes the grant it produced (RFC 6749 §4.1.2).
- Refresh tokens rotate on every use; presenting a rotated-out one revokes the grant (OAuth 2.1 §4.3.1:
  one of the two holders is not the client).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationParams,
    AuthorizeError,
    IdentityAssertionParams,
    RefreshToken,
    RegistrationError,
    TokenError,
    construct_redirect_uri,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from patchbay.access.authorization_server.client_metadata import (
    ClientMetadataError,
    fetch_client_metadata,
    is_metadata_url,
)
from patchbay.access.authorization_server.redirects import check_redirect_uri
from patchbay.access.authorization_server.settings import ServerSettings
from patchbay.access.authorization_server.state import (
    CODE_TTL,
    RETIRED_KEPT,
    ClientRecord,
    Code,
    GrantRecord,
    Pending,
    ServerState,
    StaleGrantError,
    digest,
)
from patchbay.identity import Role

log = logging.getLogger(__name__)

ACCESS_PREFIX = "pbat_"
REFRESH_PREFIX = "pbrt_"
METADATA_TTL = 3600.0  # seconds a fetched client metadata document is trusted before it is fetched again
MAX_UNAPPROVED_CLIENTS = 500  # registration is open to anyone: the oldest never-approved ones go first
SCOPE = "mcp"  # the one scope: "use patchbay's MCP endpoint"; what the client may do is the approved role


class Refresh(RefreshToken):
    grant_id: str


class Access(AccessToken):
    grant_id: str


@dataclass
class PatchbayProvider:
    settings: ServerSettings
    state: ServerState
    clock: Callable[[], float] = time.time

    # clients
    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        try:
            return await self.resolve_client(client_id)
        except ClientMetadataError as exc:
            log.warning("client metadata document %s refused: %s", client_id, exc)
            return None

    async def resolve_client(self, client_id: str) -> OAuthClientInformationFull | None:
        """The client, fetching (or refreshing) a metadata document; ClientMetadataError says why not."""
        record = self.state.clients.get(client_id)
        if record is None:
            await self.state.refresh()  # registered on another replica a moment ago?
            record = self.state.clients.get(client_id)
        if not is_metadata_url(client_id):
            return record.info if record is not None else None
        now = self.clock()
        if record is not None and record.fetched_at is not None and now - record.fetched_at < METADATA_TTL:
            return record.info
        info = await fetch_client_metadata(
            client_id, allow_loopback=self.settings.allow_loopback_client_metadata
        )
        scopes = (info.scope or "").split()
        info.scope = " ".join(dict.fromkeys([*scopes, SCOPE]))
        self.state.put_client(
            ClientRecord(
                info=info,
                kind="metadata_document",
                registered_at=record.registered_at if record else now,
                fetched_at=now,
            )
        )
        return info

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        for uri in client_info.redirect_uris or []:
            problem = check_redirect_uri(str(uri))
            if problem:
                raise RegistrationError("invalid_redirect_uri", problem)
        if client_info.token_endpoint_auth_method not in (
            "none",
            "client_secret_post",
            "client_secret_basic",
        ):
            raise RegistrationError(
                "invalid_client_metadata",
                f"token_endpoint_auth_method {client_info.token_endpoint_auth_method!r} is not supported",
            )
        self._forget_unapproved_beyond(MAX_UNAPPROVED_CLIENTS - 1)
        self.state.put_client(ClientRecord(info=client_info, kind="registered", registered_at=self.clock()))
        log.info(
            "registered OAuth client %s (%s)", client_info.client_id, client_info.client_name or "unnamed"
        )

    def _forget_unapproved_beyond(self, keep: int) -> None:
        """Open registration must not grow the state without bound: past ``keep`` clients that hold no
        grant, the oldest of them are forgotten (a client that is approved is never dropped here)."""
        granted = {g.client_id for g in self.state.grants.values()}
        unapproved = sorted(
            (r for r in self.state.clients.values() if r.info.client_id not in granted),
            key=lambda r: r.registered_at,
        )
        for record in unapproved[: max(0, len(unapproved) - keep)]:
            self.state.remove_client(record.info.client_id)
            log.info("forgot never-approved OAuth client %s (too many registrations)", record.info.client_id)

    # authorization
    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        if params.resource is not None and not self.settings.accepts_resource(params.resource):
            raise AuthorizeError(
                "invalid_target",
                f"resource {params.resource!r} is not served here; use {self.settings.resource}",
            )
        request = Pending(secrets.token_urlsafe(24), client, params, secrets.token_urlsafe(32), self.clock())
        self.state.park(request)
        return f"{self.settings.issuer}/authorize/consent?request={request.id}"

    def take_pending(self, request_id: str) -> Pending | None:
        return self.state.pending(request_id) if request_id else None

    def approve(self, request: Pending, *, role: Role, profile: str | None, approved_by: str) -> str | None:
        """The redirect back to the client, with a fresh single-use code; None if the request was answered
        meanwhile (each request is answered once, on whichever replica comes first)."""
        if not self.state.drop_pending(request.id):
            return None
        code = secrets.token_urlsafe(32)
        params = request.params
        self.state.put_code(
            digest(code),
            Code(
                code="",  # never kept: the digest is the key
                scopes=params.scopes or [SCOPE],
                expires_at=self.clock() + CODE_TTL,
                client_id=request.client.client_id,
                code_challenge=params.code_challenge,
                redirect_uri=params.redirect_uri,
                redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
                resource=params.resource or self.settings.resource,
                subject=approved_by,
                role=role,
                profile=profile,
                approved_by=approved_by,
            ),
        )
        return construct_redirect_uri(
            str(params.redirect_uri), code=code, state=params.state, iss=self.settings.issuer
        )

    def deny(self, request: Pending) -> str | None:
        if not self.state.drop_pending(request.id):
            return None
        return construct_redirect_uri(
            str(request.params.redirect_uri),
            error="access_denied",
            error_description="the operator denied the request",
            state=request.params.state,
            iss=self.settings.issuer,
        )

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> Code | None:
        issued = self.state.code(digest(authorization_code))
        if issued is None or issued.code.client_id != client.client_id:
            return None
        if issued.used:
            if issued.grant_id and self.state.remove_grant(issued.grant_id) is not None:
                log.warning(
                    "authorization code replayed by client %s: grant %s revoked",
                    client.client_id,
                    issued.grant_id,
                )
            return None
        return issued.code.model_copy(update={"code": authorization_code})

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: Code
    ) -> OAuthToken:
        code_digest = digest(authorization_code.code)
        issued = self.state.code(code_digest)
        if issued is None or not self.state.use_code(code_digest):
            raise TokenError("invalid_grant", "authorization code was already used")
        code = issued.code
        grant = GrantRecord(
            id=f"g_{secrets.token_hex(8)}",
            client_id=client.client_id,
            role=code.role,
            profile=code.profile,
            scopes=code.scopes,
            resource=code.resource or self.settings.resource,
            approved_by=code.approved_by,
            created_at=self.clock(),
        )
        self.state.bind_code(code_digest, grant.id)
        log.info("grant %s for client %s: role %s", grant.id, client.client_id, grant.role)
        return self._issue(grant)

    def _issue(self, grant: GrantRecord) -> OAuthToken:
        """A new access and refresh token for ``grant`` (the previous refresh token retired), saved."""
        now = self.clock()
        access = ACCESS_PREFIX + secrets.token_urlsafe(32)
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        rotated_from = grant.refresh_digest
        grant = grant.model_copy(deep=True)  # the stored record changes only once it is saved
        if rotated_from:
            grant.retired_refresh = [*grant.retired_refresh, rotated_from][-RETIRED_KEPT:]
        grant.refresh_digest = digest(refresh)
        grant.refresh_expires_at = now + self.settings.refresh_token_ttl
        grant.access[digest(access)] = now + self.settings.access_token_ttl
        try:
            self.state.put_grant(grant, rotated_from=rotated_from)
        except StaleGrantError:
            raise TokenError("invalid_grant", "the refresh token was used or revoked meanwhile") from None
        return OAuthToken(
            access_token=access,
            expires_in=self.settings.access_token_ttl,
            scope=" ".join(grant.scopes),
            refresh_token=refresh,
        )

    # refresh
    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> Refresh | None:
        d = digest(refresh_token)
        grant = self.state.grant_of_refresh(d)
        if grant is None and self.state.grant_of_retired_refresh(d) is None:
            await self.state.refresh()  # issued on another replica a moment ago?
            grant = self.state.grant_of_refresh(d)
        if grant is None:
            reused = self.state.grant_of_retired_refresh(d)
            if reused is not None:
                self.state.remove_grant(reused.id)
                log.warning(
                    "a rotated refresh token of grant %s was used again (client %s): grant revoked",
                    reused.id,
                    client.client_id,
                )
            return None
        if grant.client_id != client.client_id:
            return None
        return Refresh(
            token=refresh_token,
            client_id=grant.client_id,
            scopes=grant.scopes,
            expires_at=int(grant.refresh_expires_at) if grant.refresh_expires_at else None,
            resource=grant.resource,
            subject=grant.approved_by,
            grant_id=grant.id,
        )

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: Refresh, scopes: list[str]
    ) -> OAuthToken:
        grant = self.state.grants.get(refresh_token.grant_id)
        if grant is None or grant.refresh_digest != digest(refresh_token.token):
            raise TokenError("invalid_grant", "refresh token does not exist")
        return self._issue(grant.model_copy(update={"scopes": scopes or grant.scopes}))

    # access
    def access_grant(self, token: str) -> tuple[GrantRecord | None, float]:
        """The grant an access token belongs to and its expiry (0 when unknown)."""
        d = digest(token)
        grant = self.state.grant_of_access(d)
        return (grant, grant.access.get(d, 0.0)) if grant is not None else (None, 0.0)

    async def access_grant_fresh(self, token: str) -> tuple[GrantRecord | None, float]:
        """``access_grant``, having caught up with other replicas when the token is not known here (it
        may have been issued on another a moment ago) or this copy is due a check."""
        grant, expires = self.access_grant(token)
        if grant is None or self.state.stale():
            await self.state.refresh()
            grant, expires = self.access_grant(token)
        return grant, expires

    async def load_access_token(self, token: str) -> Access | None:
        grant, expires = await self.access_grant_fresh(token)
        if grant is None or expires <= self.clock():
            return None
        return Access(
            token=token,
            client_id=grant.client_id,
            scopes=grant.scopes,
            expires_at=int(expires),
            resource=grant.resource,
            subject=grant.approved_by,
            grant_id=grant.id,
        )

    async def exchange_identity_assertion(
        self, client: OAuthClientInformationFull, params: IdentityAssertionParams
    ) -> OAuthToken:
        """Not offered (no enterprise identity provider here); the SDK only calls it when enabled."""
        raise TokenError("unsupported_grant_type", "the JWT bearer grant is not supported here")

    async def revoke_token(self, token: Access | Refresh) -> None:
        """RFC 7009: revoking either token ends the whole grant (both tokens)."""
        if self.state.remove_grant(token.grant_id) is not None:
            log.info("grant %s revoked by its client %s", token.grant_id, token.client_id)
