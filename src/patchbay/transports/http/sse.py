"""Legacy HTTP+SSE upstreams (``"type": "sse"``): a GET event stream plus POSTs to the endpoint it names."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import httpx2
from mcp.client.sse import sse_client

from patchbay.transports.http import limits
from patchbay.transports.http.errors import snippet, status_text
from patchbay.transports.http.watch import watched_client
from patchbay.transports.http.wire import RemoteWire


class SseTransport(RemoteWire):
    """A legacy SSE upstream, on the SDK's ``sse_client`` with a watched client from our factory."""

    kind = "SSE"

    def _client(
        self,
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        return watched_client(self, self.proxy, headers, timeout, auth, self.oauth)

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[tuple[Any, Any]]:
        # sse_client builds its own client through the factory; the SDK leaves it unannotated.
        opener = cast(Callable[..., contextlib.AbstractAsyncContextManager[tuple[Any, Any]]], sse_client)
        async with opener(
            self.url,
            headers=self.headers,
            timeout=limits.CONNECT_TIMEOUT,
            sse_read_timeout=limits.READ_TIMEOUT,
            httpx_client_factory=self._client,
        ) as streams:
            yield streams

    def _eof_reason(self) -> str:
        return f"closed its SSE stream ({self.where})"

    def _judge_error(self, request: httpx2.Request, response: httpx2.Response, body: bytes) -> None:
        # The SDK gives up on the whole connection after any failed POST, and cannot start after a failed GET.
        what = "the SSE stream" if request.method == "GET" else "a message POST"
        status = response.status_code
        hint = (
            " (check the credentials in its 'headers')"
            if status in (401, 403)
            else " (check the proxy's credentials)"
            if status == 407
            else ""
        )
        self._lost(f"answered {status_text(response)} to {what} at {request.url}{snippet(body)}{hint}")
