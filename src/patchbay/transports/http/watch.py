"""Watching the HTTP traffic under the SDK: a wrapper around the httpx2 transport that reports to the wire.

The SDK's own failure reporting is uneven (see ``wire``), so every request, response status and response
body end goes through here, and the wire judges what it means.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Awaitable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

import httpx2

from patchbay.transports.http import limits

if TYPE_CHECKING:
    from patchbay.oauth import OAuthClient


class Watcher(Protocol):
    """What the watched transport reports to (the wire)."""

    @property
    def session_gone(self) -> bool: ...
    def request_failed(self, request: httpx2.Request, exc: httpx2.TransportError) -> None: ...
    def response_seen(
        self, request: httpx2.Request, response: httpx2.Response
    ) -> Awaitable[httpx2.Response]: ...
    def stream_broke(self, request: httpx2.Request, exc: Exception) -> None: ...
    def stream_ended(self, request: httpx2.Request) -> None: ...


class WatchedStream(httpx2.AsyncByteStream):
    """A response body that reports how it ended: broken (a transport error) or cleanly."""

    def __init__(self, inner: httpx2.AsyncByteStream, watcher: Watcher, request: httpx2.Request) -> None:
        self._inner = inner
        self._watcher = watcher
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx2.TransportError as exc:
            self._watcher.stream_broke(self._request, exc)
            raise
        self._watcher.stream_ended(self._request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class WrappingTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport that wraps another: entering, leaving and closing are passed through."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc_value, traceback)

    async def aclose(self) -> None:
        await self._inner.aclose()


class WatchedTransport(WrappingTransport):
    """Wraps the real httpx2 transport so the wire sees every connection failure and error status."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, watcher: Watcher) -> None:
        super().__init__(inner)
        self._watcher = watcher

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "DELETE" and self._watcher.session_gone:
            # The SDK ends a session with DELETE on the way out; no point when the session is already gone.
            return httpx2.Response(204, request=request)
        try:
            response = await self._inner.handle_async_request(request)
        except httpx2.TransportError as exc:
            self._watcher.request_failed(request, exc)
            raise
        return await self._watcher.response_seen(request, response)


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """httpx2's default (certifi, SSL_CERT_FILE/DIR) built once: building it blocks the loop for ~0.1 s."""
    return httpx2.create_ssl_context()


def default_timeout() -> httpx2.Timeout:
    return httpx2.Timeout(limits.WRITE_TIMEOUT, connect=limits.CONNECT_TIMEOUT, read=limits.READ_TIMEOUT)


def watched_client(
    watcher: Watcher,
    proxy: str | None,
    headers: dict[str, str] | None,
    timeout: httpx2.Timeout | None,
    auth: httpx2.Auth | None = None,
    oauth: OAuthClient | None = None,
) -> httpx2.AsyncClient:
    """An httpx2 client like the SDK's ``create_mcp_http_client``, its transport watched by ``watcher``.

    ``proxy`` (already chosen, see ``proxy.choose_proxy``) goes into the transport: httpx2 ignores
    environment proxies when it is given a transport, which is why the choice is patchbay's. With ``oauth``
    the requests carry that server's OAuth tokens (``patchbay.oauth.BearerTransport``).
    """
    pool = httpx2.Limits(
        max_connections=100, max_keepalive_connections=20, keepalive_expiry=limits.KEEPALIVE_EXPIRY
    )
    inner: httpx2.AsyncBaseTransport = httpx2.AsyncHTTPTransport(
        verify=_default_ssl_context(), limits=pool, proxy=proxy
    )
    if oauth is not None:  # below the watcher: a 401 that a token refresh fixes is no failure
        from patchbay.oauth import BearerTransport

        inner = BearerTransport(inner, oauth)
    return httpx2.AsyncClient(
        headers=headers,
        timeout=timeout or default_timeout(),
        auth=auth,
        transport=WatchedTransport(inner, watcher),
    )
