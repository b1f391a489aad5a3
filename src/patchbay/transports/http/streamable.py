"""Streamable HTTP upstreams (``"type": "http"`` or just ``"url"``), on ``streamable_http_client``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from mcp.client.streamable_http import streamable_http_client

from patchbay.transports.http import limits
from patchbay.transports.http.errors import jsonrpc_error_message, snippet, status_text
from patchbay.transports.http.watch import default_timeout, watched_client
from patchbay.transports.http.wire import RemoteWire, log

SESSION_HEADER = "mcp-session-id"


class HttpTransport(RemoteWire):
    """A streamable HTTP upstream: POSTs answered with JSON or SSE, plus an optional GET event stream."""

    kind = "HTTP"

    def _client(self) -> httpx2.AsyncClient:
        return watched_client(self, self.proxy, self.headers, default_timeout(), oauth=self.oauth)

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[tuple[Any, Any]]:
        async with (
            self._client() as http,
            streamable_http_client(
                self.url, http_client=http, max_sse_event_size=limits.MAX_SSE_EVENT_BYTES
            ) as streams,
        ):
            yield streams

    def stream_broke(self, request: httpx2.Request, exc: Exception) -> None:
        if not self._watching():
            return
        if self.protocol_version is None and request.method != "GET":
            self._lost(self._connection_reason(exc))
        else:
            log.debug("%s: a %s response stream from %s broke: %s", self.name, request.method, self.url, exc)
            self._probe_wanted.set()

    def stream_ended(self, request: httpx2.Request) -> None:
        # The standalone GET stream ended: a server may do that on purpose, or it went away. Ask it.
        if request.method == "GET" and self._watching() and self.protocol_version is not None:
            self._probe_wanted.set()

    def _transport_error_on_stream(self, exc: Exception) -> None:
        if self.protocol_version is None:
            self._lost(self._connection_reason(exc))
        else:
            self._probe_wanted.set()

    def _judge_error(self, request: httpx2.Request, response: httpx2.Response, body: bytes) -> None:
        status = response.status_code
        had_session = SESSION_HEADER in request.headers
        rpc_message = (
            jsonrpc_error_message(body) if "json" in response.headers.get("content-type", "") else None
        )
        session_gone = had_session and (
            status == 404 or (status == 400 and rpc_message is not None and "session" in rpc_message.lower())
        )
        if request.method == "GET":
            # The GET stream is optional (405) and some servers answer it oddly: a POST settles it.
            if session_gone or status in (401, 403):
                self._probe_wanted.set()
            return
        if session_gone:
            said = f" {rpc_message!r}" if rpc_message else ""
            self._lost(self._session_gone(f"{status_text(response)}{said}"))
        elif status == 403 and self.oauth is not None and rpc_message is not None:
            pass  # a step-up the OAuth layer explained: only that call fails (its JSON-RPC error)
        elif status in (401, 403):
            self._lost(
                f"answered {status_text(response)} at {self.url}{snippet(body)} "
                "(check the credentials in its 'headers')"
            )
        elif status == 407:
            self._lost(
                f"got {status_text(response)} from its proxy for {self.where}{snippet(body)} "
                "(check the proxy's credentials)"
            )
        elif self.protocol_version is None and request.method == "POST" and rpc_message is None:
            hint = " (check the url)" if status in (404, 405) else ""
            self._lost(f"answered {status_text(response)} at {self.url}{snippet(body)}{hint}")
