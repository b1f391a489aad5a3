"""The ``httpx2.Auth`` a remote upstream's HTTP client uses: bearer tokens from an ``OAuthClient``.

It never runs a browser step. On a 401 it refreshes once (or, for client credentials, fetches a new token)
and retries once; when that is not enough it leaves the client in ``needs_auth`` and hands the 401 back
to the transport, which reports the connection lost; the supervisor then sees ``needs_auth`` and waits.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Generator

import httpx2

from patchbay.oauth.client import OAuthClient
from patchbay.oauth.discovery import parse_challenge
from patchbay.oauth.errors import OAuthError

log = logging.getLogger(__name__)


class BearerAuth(httpx2.Auth):
    """Adds ``Authorization: Bearer`` and handles 401 / 403 ``insufficient_scope`` (one retry at most)."""

    requires_response_body = False  # only headers matter; reading would block on an SSE stream

    def __init__(self, client: OAuthClient) -> None:
        self.client = client

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        raise RuntimeError("BearerAuth is for async clients")

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        try:
            token = await self.client.access_token()
        except (OAuthError, httpx2.HTTPError) as exc:
            self.client.mark_needs_auth(f"could not get an access token: {exc}")
            token = None
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        challenge = parse_challenge(response.status_code, response.headers.get("www-authenticate"))
        if challenge is None or (response.status_code == 403 and not challenge.insufficient_scope):
            return
        try:
            retry = await self.client.unauthorized(token, challenge)
        except (OAuthError, httpx2.HTTPError) as exc:
            self.client.mark_needs_auth(str(exc))
            retry = None
        if retry is None:
            log.info("server %r: %s", self.client.name, self.client.needs_auth)
            return
        request.headers["Authorization"] = f"Bearer {retry}"
        yield request
