"""Every use of the MCP SDK's private attributes, in one place.

The SDK has no public way to enumerate a session manager's sessions, to count a request served outside
it as "in flight" on a session, or to get from a handler's ``ServerSession`` to its connection. Patchbay
needs all three (the fast path, the session fan-out), and to open a session under an id of its own
choosing, already initialised (a dead replica's session adopted, a lean session handed to the SDK).
Each access is written here, once, and :func:`missing` says which of them the installed SDK no longer
has (``tests/test_sdk_adapter.py`` fails naming it). Callers step aside when an attribute is missing:
the fast path hands every request to the SDK, the session tracker tracks nothing, every session is the
SDK's from its ``initialize`` on.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus

log = logging.getLogger(__name__)

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
    ("StreamableHTTPSessionManager", "_task_group"),
    ("StreamableHTTPSessionManager", "_lifespan_state"),
    ("StreamableHTTPSessionManager", "_discard_session"),
    ("StreamableHTTPServerTransport", "_request_streams"),
    ("StreamableHTTPServerTransport", "_create_event_data"),
    ("StreamableHTTPServerTransport", "_clean_up_memory_streams"),
)


def missing() -> list[str]:
    """The private attributes this module relies on that the installed SDK lacks, as ``Class.attr``."""
    from mcp.server.connection import Connection
    from mcp.server.lowlevel.server import Server
    from mcp.server.session import ServerSession
    from mcp.server.streamable_http import StreamableHTTPServerTransport
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    try:  # the names the standalone-stream hand-over uses
        from mcp.server.streamable_http import GET_STREAM_KEY, REQUEST_STREAM_BUFFER_SIZE, EventMessage  # noqa: F401
    except ImportError:
        return ["mcp.server.streamable_http.GET_STREAM_KEY/REQUEST_STREAM_BUFFER_SIZE/EventMessage"]

    connection = Connection(None, protocol_version="2025-11-25")  # type: ignore[arg-type]
    instances: dict[str, Any] = {
        "StreamableHTTPSessionManager": StreamableHTTPSessionManager(app=Server("probe")),
        "StreamableHTTPServerTransport": StreamableHTTPServerTransport("probe", idle_timeout=1.0),
        "ServerSession": ServerSession(None, connection),  # type: ignore[arg-type]
        "Connection": connection,
    }
    return [f"{where}.{attr}" for where, attr in PRIVATE_ATTRIBUTES if not hasattr(instances[where], attr)]


@functools.cache
def can_materialise() -> bool:
    """Whether every private detail is where this module looks, so that a session held without the SDK
    (``lean_sessions.py``) can be handed to it later (:func:`adopt_session`); checked once."""
    gone = missing()
    if gone:
        log.warning("the MCP SDK changed (%s); /mcp sessions are all opened by the SDK", ", ".join(gone))
    return not gone


# --- the session manager's sessions (fast path) ------------------------------------------------------


def can_track_sessions(manager: Any) -> bool:
    """Whether the manager still keeps its sessions where :func:`live_transport` looks."""
    return isinstance(getattr(manager, "_server_instances", None), dict)


def open_sessions(manager: Any) -> int:
    """How many sessions the manager holds (its cap counts them)."""
    return len(manager._server_instances)


def is_running(manager: Any) -> bool:
    """Whether the manager's ``run()`` is entered (it can open sessions)."""
    return getattr(manager, "_task_group", None) is not None


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


# --- adopting a session initialised on another replica (cluster mode) --------------------------------


async def adopt_session(
    manager: Any,
    session_id: str,
    *,
    protocol_version: str,
    client_params: dict[str, Any],
    ready: Callable[[Any, Any], None],
) -> bool:
    """Open a session under ``session_id`` that is already initialised with what another replica's
    ``initialize`` negotiated: the client goes on without a new handshake.

    The SDK only opens sessions at ``initialize`` and under ids it makes up; this does what its
    ``_admit_session`` and ``_serve_opening_request`` do, with the given id and a connection whose
    handshake is done. ``ready(connection, session)`` runs once the session exists, before any request
    reaches it (``session`` sends the connection's own notifications). False when the manager is not
    running or the stored parameters do not validate; True if the session is (now) open here."""
    from mcp.server.connection import Connection
    from mcp.server.runner import serve_connection
    from mcp.server.session import ServerSession
    from mcp.server.streamable_http import StreamableHTTPServerTransport
    from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
    from mcp.types import InitializeRequestParams
    from pydantic import ValidationError

    if session_id in manager._server_instances:
        return True
    if manager._task_group is None:
        return False
    try:
        params = InitializeRequestParams.model_validate(client_params)
    except ValidationError as exc:
        log.warning(
            "cannot adopt session %s: its stored initialize parameters are invalid: %s", session_id, exc
        )
        return False
    transport = StreamableHTTPServerTransport(
        mcp_session_id=session_id,
        is_json_response_enabled=manager.json_response,
        event_store=manager.event_store,
        security_settings=manager.security_settings,
        retry_interval=manager.retry_interval,
        idle_timeout=manager.session_idle_timeout,
    )
    manager._server_instances[session_id] = transport

    async def run(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with transport.connect() as (read_stream, write_stream):
                dispatcher: Any = JSONRPCDispatcher(
                    read_stream, write_stream, inline_methods=frozenset({"initialize"})
                )
                connection = Connection.for_loop(dispatcher, session_id=session_id)
                connection.client_params = params
                connection.protocol_version = protocol_version
                connection.initialized.set()
                ready(connection, ServerSession(dispatcher, connection))
                task_status.started()
                idle_scope = transport.idle_scope if transport.idle_scope is not None else anyio.CancelScope()
                with idle_scope:
                    await serve_connection(
                        manager.app, dispatcher, connection=connection, lifespan_state=manager._lifespan_state
                    )
        except Exception:
            log.exception("adopted session %s crashed", session_id)
        finally:
            await manager._discard_session(session_id, transport)

    try:
        await manager._task_group.start(run)
    except Exception:  # the session could not even start: nothing is left open
        log.exception("could not adopt session %s", session_id)
        await manager._discard_session(session_id, transport)
        return False
    return True


# --- a GET stream patchbay holds, handed to the SDK's session (lean sessions) -------------------------


def take_standalone_stream(transport: Any) -> Any | None:
    """Register a standalone (GET) stream on the transport, as its GET handler does, and return the end
    the transport's messages for it arrive on; None if the transport already has one."""
    from mcp.server.streamable_http import GET_STREAM_KEY, REQUEST_STREAM_BUFFER_SIZE, EventMessage

    if GET_STREAM_KEY in transport._request_streams:
        return None
    pair = anyio.create_memory_object_stream[EventMessage](REQUEST_STREAM_BUFFER_SIZE)
    transport._request_streams[GET_STREAM_KEY] = pair
    return pair[1]


async def carry_standalone_stream(
    transport: Any, messages: Any, write: Callable[[bytes], Awaitable[None]]
) -> None:
    """Write each message the transport sends on its GET stream as its GET handler's writer would (one
    SSE event each), until the session ends or the caller cancels; then unregister the stream."""
    from mcp.server.streamable_http import GET_STREAM_KEY

    try:
        async with messages:
            async for message in messages:
                event = transport._create_event_data(message)
                head = f"id: {event['id']}\r\n" if event.get("id") else ""
                await write(f"{head}event: {event['event']}\r\ndata: {event['data']}\r\n\r\n".encode())
    except (anyio.ClosedResourceError, anyio.EndOfStream):
        pass
    finally:
        with anyio.CancelScope(shield=True):
            await transport._clean_up_memory_streams(GET_STREAM_KEY)
