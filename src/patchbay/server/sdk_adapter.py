"""Every use of the MCP SDK's private attributes, in one place.

The SDK has no public way to enumerate a session manager's sessions, to count a request served outside
it as "in flight" on a session, or to get from a handler's ``ServerSession`` to its connection. Patchbay
needs all three (the fast path, the session fan-out). Each access is written here, once, and
:func:`missing` says which of them the installed SDK no longer has (``tests/test_sdk_adapter.py``
fails naming it). Callers step aside when an attribute is missing: the fast path hands every request
to the SDK, the session tracker tracks nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import anyio

# (where, attribute) pairs this module reads; checked by missing().
PRIVATE_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("StreamableHTTPSessionManager", "_server_instances"),
    ("StreamableHTTPSessionManager", "_session_owners"),
    ("StreamableHTTPServerTransport", "_requests_in_flight"),
    ("StreamableHTTPServerTransport", "_idle_timeout"),
    ("StreamableHTTPServerTransport", "idle_scope"),
    ("StreamableHTTPServerTransport", "is_terminated"),
    ("ServerSession", "_connection"),
    ("Connection", "exit_stack"),
)


def missing() -> list[str]:
    """The private attributes this module relies on that the installed SDK lacks, as ``Class.attr``."""
    from mcp.server.connection import Connection
    from mcp.server.lowlevel.server import Server
    from mcp.server.session import ServerSession
    from mcp.server.streamable_http import StreamableHTTPServerTransport
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    connection = Connection(None, protocol_version="2025-11-25")  # type: ignore[arg-type]
    instances: dict[str, Any] = {
        "StreamableHTTPSessionManager": StreamableHTTPSessionManager(app=Server("probe")),
        "StreamableHTTPServerTransport": StreamableHTTPServerTransport("probe", idle_timeout=1.0),
        "ServerSession": ServerSession(None, connection),  # type: ignore[arg-type]
        "Connection": connection,
    }
    return [f"{where}.{attr}" for where, attr in PRIVATE_ATTRIBUTES if not hasattr(instances[where], attr)]


# --- the session manager's sessions (fast path) ------------------------------------------------------


def can_track_sessions(manager: Any) -> bool:
    """Whether the manager still keeps its sessions where :func:`live_transport` looks."""
    return isinstance(getattr(manager, "_server_instances", None), dict)


def live_transport(manager: Any, session_id: str) -> Any | None:
    """The session's transport if requests to it may be served outside the SDK; else None.

    None when the session is unknown, ended or ending (idle timeout fired), bound to an authenticated
    owner (the SDK checks the credential), or when the transport lacks the idle bookkeeping."""
    transport = manager._server_instances.get(session_id)
    if transport is None or getattr(manager, "_session_owners", {}).get(session_id) is not None:
        return None
    if getattr(transport, "is_terminated", True) or not hasattr(transport, "_requests_in_flight"):
        return None
    scope = getattr(transport, "idle_scope", None)
    if scope is not None and scope.cancel_called:
        return None
    return transport


def hold(transport: Any) -> None:
    """Count a request served outside the SDK as in flight on its session, as ``handle_request`` does,
    so that the session's idle timeout does not fire under it."""
    if transport is None or transport.idle_scope is None:
        return
    transport._requests_in_flight += 1
    transport.idle_scope.deadline = math.inf


def release(transport: Any) -> None:
    """The end of a request :func:`hold` counted: restart the idle countdown when it was the last."""
    if transport is None or transport.idle_scope is None:
        return
    transport._requests_in_flight -= 1
    if not transport._requests_in_flight and transport._idle_timeout is not None:
        transport.idle_scope.deadline = anyio.current_time() + transport._idle_timeout


# --- from a handler's session to its connection ------------------------------------------------------


def connection_of(session: Any) -> Any | None:
    """The per-connection object behind a request-scoped ``ServerSession`` (one per client session)."""
    return getattr(session, "_connection", None)


def on_connection_close(connection: Any, callback: Callable[..., Any], *args: Any) -> bool:
    """Run ``callback(*args)`` when the connection ends (DELETE, idle timeout, crash).

    False if the SDK no longer offers that."""
    stack = getattr(connection, "exit_stack", None)
    if stack is None:
        return False
    stack.callback(callback, *args)
    return True
