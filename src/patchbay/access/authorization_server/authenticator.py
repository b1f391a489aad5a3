"""The Guard's ``Authenticator`` for access tokens this authorization server issued."""

from __future__ import annotations

from patchbay.access.authorization_server.provider import ACCESS_PREFIX, PatchbayProvider
from patchbay.identity import AuthenticationError, Identity


class GrantAuthenticator:
    """A ``pbat_`` token becomes the identity of its grant: the role and profile the operator approved,
    the client that holds it. Other tokens are not its kind (None); a known-but-dead one is refused."""

    def __init__(self, provider: PatchbayProvider) -> None:
        self._provider = provider

    async def authenticate(self, token: str) -> Identity | None:
        if not token.startswith(ACCESS_PREFIX):
            return None
        grant, expires = await self._provider.access_grant_fresh(token)
        if grant is None:
            raise AuthenticationError("the access token is unknown or was revoked; sign in again")
        now = self._provider.clock()
        if expires <= now:
            raise AuthenticationError("the access token has expired; refresh it")
        if not self._provider.settings.accepts_resource(grant.resource):
            raise AuthenticationError(f"the access token was issued for {grant.resource}, not this server")
        grant.last_used_at = now  # in memory; saved with the next change (no write per request)
        # the grant id, not the client's name: that is the client's own (untrusted) text, and audit
        # trails and rate limits key on ``name``
        return Identity(
            name=f"oauth:{grant.id}",
            role=grant.role,
            profile=grant.profile,
            kind="oauth",
            client_id=grant.client_id,
            scopes=tuple(grant.scopes),
        )
