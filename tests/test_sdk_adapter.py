"""The MCP SDK private attributes patchbay reads (all in ``server/sdk_adapter.py``) are still there.

When an SDK upgrade moves one, this fails naming it; the fast path would then step aside (every request
through the SDK) rather than break, which the second test shows."""

from __future__ import annotations

from typing import Any

from patchbay.server import sdk_adapter
from patchbay.server.fastpath import FastSessions, McpFastPath


def test_every_private_sdk_attribute_the_adapter_reads_exists() -> None:
    assert sdk_adapter.missing() == [], "the MCP SDK moved these; update server/sdk_adapter.py"


class _MovedManager:
    """A session manager from an SDK that keeps its sessions elsewhere."""


class _MovedTransport:
    """A transport whose idle bookkeeping moved (as on the SDK's main branch)."""

    is_terminated = False
    idle_scope = None


def test_the_fast_path_steps_aside_when_the_sdk_internals_move() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        pass

    fast = McpFastPath(app, hub=None, manager=_MovedManager(), sessions=FastSessions(), server_info=dict)  # type: ignore[arg-type]
    assert not fast.enabled
    manager: Any = type("M", (), {"_server_instances": {"s": _MovedTransport()}, "_session_owners": {}})()
    assert sdk_adapter.live_transport(manager, "s") is None  # no _requests_in_flight: not served outside
