"""Patchbay inside your own app: every surface of ``patchbay serve`` mounted under a prefix of a FastAPI or
Starlette application, with the hub started and stopped by that application's lifespan.

Why a mount rather than a copy of the routes: the MCP endpoints, the management API, the agents' WebSocket,
the dashboard and the OAuth callback are one app with one guard (Host/Origin checks and bearer tokens for
every path), so ``create_app`` builds exactly what ``patchbay serve`` runs and the host mounts it. The host
app's own routes stay outside patchbay's guard. Under a mount, ASGI keeps the full path in ``path`` and the
prefix in ``root_path``; patchbay's own path checks use ``security.route_path`` and its absolute URLs (the
OAuth redirect) include the prefix, and the dashboard addresses the API by relative URLs.

A sub-app's lifespan is never run by Starlette's ``Mount``: ``mount`` wraps the host's lifespan so that
patchbay's runs around it (the hub starts before the host's own start-up code and is closed, every child
process with it, after the host's shutdown code).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette

from patchbay.hub import Hub
from patchbay.server.app import ServeSettings, create_app

__all__ = ["ServeSettings", "asgi_app", "lifespan", "mount"]

_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")


def asgi_app(hub: Hub, settings: ServeSettings | None = None) -> FastAPI:
    """The app ``patchbay serve`` runs, to mount yourself; enter :func:`lifespan` in your app's lifespan.

    ``settings`` are those of ``patchbay serve``: ``tokens`` (bearer tokens for every patchbay path but the
    open ones), ``allowed_hosts`` (Host names clients use besides loopback; ``host="0.0.0.0"`` with no
    names turns the Host check off, and then tokens are required), ``watch_config``,
    ``session_idle_timeout``. ``port`` and ``header_timeout`` belong to your server, not to patchbay.
    """
    return create_app(hub, settings)


def lifespan(patchbay: FastAPI) -> contextlib.AbstractAsyncContextManager[Any]:
    """Patchbay's lifespan: starts the hub (in the background: the app answers at once, listings wait for
    the servers' first start) and, on exit, stops the config watcher, the MCP sessions and every server."""
    return patchbay.router.lifespan_context(patchbay)


def mount(app: Starlette, hub: Hub, prefix: str = "/hub", settings: ServeSettings | None = None) -> FastAPI:
    """Serve ``hub`` under ``prefix`` of ``app`` and tie it to ``app``'s lifespan; returns patchbay's app.

    ``prefix + "/mcp"`` (and ``/mcp/<profile>``), ``/api``, ``/agents`` (WebSocket), ``/`` (the dashboard:
    open ``prefix + "/"``), ``/oauth/callback``, ``/healthz``, ``/readyz``, ``/metrics`` and ``/docs``.
    Call it before the app starts; ``app`` must be served with its lifespan on (uvicorn's default).
    """
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"prefix {prefix!r} must be a path such as '/hub': it starts with '/', does not end with one, "
            "and has no empty segments, spaces or '..'"
        )
    if any(p in (".", "..") for p in prefix.split("/")):
        raise ValueError(f"prefix {prefix!r} must not contain '.' or '..' segments")
    patchbay = asgi_app(hub, settings)
    app.mount(prefix, patchbay, name="patchbay")
    _around_lifespan(app, lambda: lifespan(patchbay))
    return patchbay


def _around_lifespan(
    app: Starlette, outer: Callable[[], contextlib.AbstractAsyncContextManager[Any]]
) -> None:
    """Run ``outer`` around the host app's own lifespan (its handlers, or its ``lifespan=``)."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def combined(host: Any) -> AsyncIterator[Any]:
        async with outer(), inner(host) as state:
            yield state

    app.router.lifespan_context = combined
