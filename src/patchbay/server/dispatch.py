"""``/mcp`` and ``/mcp/<profile>`` served in front of FastAPI: the same gates, none of FastAPI's layers.

Why: profiled under load (``bench/http.py --profile``), every ``/mcp`` call went through FastAPI's and
Starlette's per-request layers (``ServerErrorMiddleware``, FastAPI's exception telemetry and body limit
middleware, its native telemetry reading ``os.environ`` on each request, the router's matching) for
~20 µs of CPU, and none of them does anything for an MCP request. :class:`PatchbayApp` (the app
``create_app`` returns, a ``FastAPI``) hands a ``GET``/``POST``/``DELETE`` of those two paths straight to
:func:`mcp_chain`: exactly the layers the request went through inside the FastAPI app, in the same order
(``Guard``: Host, Origin, bearer tokens; ``RoleGate``; the cluster's ``SessionRouter``; ``McpFastPath``;
``AuditMiddleware``), then the SDK's app or the profile's endpoint. What ``ServerErrorMiddleware`` did
for it (a bug answered with the ``ErrorBody`` 500, its traceback logged and never sent) is
:class:`_Contained`'s job. Every other request, and other methods on these paths, take the FastAPI app
unchanged. A host app that mounts patchbay (``embed.py``) calls the same ``__call__``, so the mounted
``/mcp`` takes this path too (paths are read with ``route_path``, less the mount's prefix).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from patchbay.server.security import route_path

log = logging.getLogger(__name__)

MCP_METHODS = frozenset({"GET", "POST", "DELETE"})
_PROFILE_PREFIX = "/mcp/"
_BUG_BODY = (
    b'{"detail":"internal error in patchbay (logged on the hub); please report it",'
    b'"error":"internal_error"}'
)  # the API's last-resort answer (api.install_error_handlers), in its ErrorBody shape


def is_mcp_path(path: str) -> bool:
    """``/mcp`` or ``/mcp/<one segment>``: what the app's two MCP routes match (``{profile}`` is
    Starlette's ``[^/]+``)."""
    if path == "/mcp":
        return True
    return (
        path.startswith(_PROFILE_PREFIX)
        and len(path) > len(_PROFILE_PREFIX)
        and "/" not in path[len(_PROFILE_PREFIX) :]
    )


class PatchbayApp(FastAPI):
    """The FastAPI app of ``patchbay serve``, with ``/mcp`` served by ``mcp`` (see the module's doc)
    once ``create_app`` has set it."""

    mcp: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mcp = self.mcp
        if mcp is not None and scope["type"] == "http" and scope.get("method") in MCP_METHODS:
            if self.root_path:  # as FastAPI.__call__ does
                scope["root_path"] = self.root_path
            if is_mcp_path(route_path(scope)):
                scope["app"] = self  # as Starlette.__call__ does (request.app)
                await mcp(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class McpRoutes:
    """The end of the chain: the app's two MCP routes, matched after the ``RoleGate`` (which sends a
    profile-bound identity's ``/mcp`` to ``/mcp/<its profile>``)."""

    def __init__(self, mcp: ASGIApp, profiles: ASGIApp) -> None:
        self.mcp = mcp
        self.profiles = profiles

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if route_path(scope) == "/mcp":
            await self.mcp(scope, receive, send)
        else:
            await self.profiles(scope, receive, send)


class _Contained:
    """Outermost on the ``/mcp`` chain, as ``ServerErrorMiddleware`` is in the FastAPI app: an exception
    (a bug) is logged with its traceback and answered with the API's ``ErrorBody`` 500, which names
    nothing of it; if the answer had already begun, the connection is left for the server to close (a
    half-sent response cannot be mended)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started:
                return
            headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_BUG_BODY))]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": _BUG_BODY})


def mcp_chain(routes: ASGIApp, layers: list[tuple[type[Any], dict[str, Any]]]) -> ASGIApp:
    """``routes`` wrapped in ``layers`` (outermost first, each ``(class, keyword arguments)`` as for
    ``app.add_middleware``), inside :class:`_Contained`."""
    app = routes
    for cls, options in reversed(layers):
        app = cls(app, **options)
    return _Contained(app)
