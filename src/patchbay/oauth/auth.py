"""Bearer tokens from an ``OAuthClient`` on outgoing requests: as an httpx2 transport and as an ``Auth``.

``BearerTransport`` is what patchbay's remote upstreams use: it sits *below* the wire's watching transport,
so a 401 that a refresh fixes is never seen as a failure. ``BearerAuth`` is the same for any httpx2 client
(the SDK's, a user's). Neither runs a browser step: on a 401 they refresh once (or, for client credentials,
fetch a new token) and retry once; when that is not enough the client is left in ``needs_auth`` and the 401
is handed back, so the wire reports the connection lost and the supervisor waits for a sign-in.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Generator

import httpx2

from patchbay.oauth.client import OAuthClient
from patchbay.oauth.discovery import Challenge, parse_challenge
from patchbay.oauth.errors import OAuthError
from patchbay.transports.http.watch import WrappingTransport

log = logging.getLogger(__name__)


async def _token(client: OAuthClient) -> str | None:
    try:
        return await client.access_token()
    except (OAuthError, httpx2.HTTPError) as exc:
        client.mark_needs_auth(f"could not get an access token: {exc}")
        return None


def _challenge(client: OAuthClient, response: httpx2.Response) -> Challenge | None:
    """The challenge worth acting on: a Bearer 401, or a 403 ``insufficient_scope``."""
    challenge = parse_challenge(
        response.status_code, response.headers.get("www-authenticate"), bare_401=client.configured
    )
    if challenge is None or (response.status_code == 403 and not challenge.insufficient_scope):
        return None
    return challenge


async def _retry_token(client: OAuthClient, used: str | None, challenge: Challenge) -> str | None:
    try:
        retry = await client.unauthorized(used, challenge)
    except (OAuthError, httpx2.HTTPError) as exc:
        client.mark_needs_auth(str(exc))
        retry = None
    if retry is None:
        log.info("%s", client.needs_auth)
    return retry


STEP_UP_ERROR = -32001  # a JSON-RPC server error code: "this call needs wider scopes"


def _step_up_response(request: httpx2.Request, response: httpx2.Response, advice: str) -> httpx2.Response:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": STEP_UP_ERROR, "message": advice}}
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() == "www-authenticate"]
    return httpx2.Response(403, headers=headers, json=body, request=request)


class BearerTransport(WrappingTransport):
    """Wraps an httpx2 transport: adds the token, answers a 401 / 403 ``insufficient_scope`` (one retry)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, client: OAuthClient) -> None:
        super().__init__(inner)
        self.client = client

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        token = await _token(self.client)
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        response = await self._inner.handle_async_request(request)
        challenge = _challenge(self.client, response)
        if challenge is None:
            return response
        retry = await _retry_token(self.client, token, challenge)
        if retry is None:
            step_up = self.client.step_up
            if challenge.insufficient_scope and step_up is not None:
                # Only this request fails, with a JSON-RPC error saying what to do; the session stays up.
                await response.aclose()
                return _step_up_response(request, response, step_up.advice)
            return response
        await response.aclose()
        request.headers["Authorization"] = f"Bearer {retry}"
        return await self._inner.handle_async_request(request)


class BearerAuth(httpx2.Auth):
    """The same as an ``httpx2.Auth``, for clients patchbay does not build."""

    requires_response_body = False  # only headers matter; reading would block on an SSE stream

    def __init__(self, client: OAuthClient) -> None:
        self.client = client

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        raise RuntimeError("BearerAuth is for async clients")

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token = await _token(self.client)
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        challenge = _challenge(self.client, response)
        if challenge is None:
            return
        retry = await _retry_token(self.client, token, challenge)
        if retry is None:
            return
        request.headers["Authorization"] = f"Bearer {retry}"
        yield request
