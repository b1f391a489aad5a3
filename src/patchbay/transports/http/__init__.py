"""Remote upstreams: streamable HTTP (``HttpTransport``) and legacy HTTP+SSE (``SseTransport``).

Both wrap the SDK's client transports and only move JSON-RPC messages; the handshake, correlation and
listing happen above, exactly as for stdio. One module per concern:

* ``wire``: what both share (the owning task, its ``WireState``, the bounded outbox, the liveness probe);
* ``streamable`` and ``sse``: opening each SDK transport and judging its error statuses;
* ``watch``: the httpx2 transport wrapper through which the wire sees every request and response;
* ``errors``: httpx2 exceptions and statuses turned into reasons that name the URL;
* ``proxy``: the server's ``proxy`` setting or the environment's ``HTTP(S)_PROXY`` / ``NO_PROXY``;
* ``limits``: the timeouts and bounds.
"""

from __future__ import annotations

from patchbay.transports.http.errors import check_url, describe_http_error
from patchbay.transports.http.sse import SseTransport
from patchbay.transports.http.streamable import HttpTransport
from patchbay.transports.http.wire import RemoteWire, WireState

__all__ = ["HttpTransport", "RemoteWire", "SseTransport", "WireState", "check_url", "describe_http_error"]
