"""Roles: which role each route needs, enforced in one place, and what a profile-bound identity may see.

``RULES`` is the whole policy: a route (method and path template) → the least role that may use it. A route
not in the table needs ``admin`` (deny by default), so a route added later is closed to ``user`` and
``viewer`` until someone decides otherwise here. ``RoleGate`` is the ASGI middleware that applies it, right
after the ``Guard`` (which authenticated the request and stored its identity in the scope).

A token bound to a profile is also held to that profile here, on every surface: ``/mcp`` is served by the
profile's endpoint, ``/mcp/<other>`` is refused, and a ``profile`` query parameter is forced to its own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode

from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from patchbay.catalog import Catalog
from patchbay.events import CatalogEvent, ConfigReloadEvent, Event
from patchbay.identity import SCOPE_KEY, Identity, Role
from patchbay.profiles import ProfileView
from patchbay.server.security import deny, route_path

log = logging.getLogger(__name__)

READ = frozenset({"GET", "HEAD"})
MCP = frozenset({"GET", "POST", "DELETE"})
WEBSOCKET = "WEBSOCKET"  # the "method" of a WebSocket scope

# (methods, path template, least role). Everything else: admin.
RULES: tuple[tuple[frozenset[str], str, Role], ...] = (
    # user: MCP (first: the hot path matches at once)
    (MCP, "/mcp", "user"),
    (MCP, "/mcp/{profile}", "user"),
    # viewer: read-only status, catalog and events (non-admins never see config entries or stderr)
    (READ, "/api/servers", "viewer"),
    (READ, "/api/servers/{name}", "viewer"),
    (READ, "/api/servers/{name}/auth", "viewer"),  # signed in or not; never a token
    (READ, "/api/agents", "viewer"),
    (READ, "/api/tools", "viewer"),
    (READ, "/api/tools/search", "viewer"),
    (READ, "/api/tools/search/status", "viewer"),
    (READ, "/api/tools/changes", "viewer"),
    (READ, "/api/resources", "viewer"),
    (READ, "/api/resources/templates", "viewer"),
    (READ, "/api/prompts", "viewer"),
    (READ, "/api/profiles", "viewer"),
    (READ, "/api/profiles/{name}", "viewer"),
    (READ, "/api/events", "viewer"),
    (READ, "/api/whoami", "viewer"),
    (READ, "/readyz", "viewer"),
    (READ, "/metrics", "viewer"),
    (READ, "/docs", "viewer"),
    (READ, "/docs/oauth2-redirect", "viewer"),
    (READ, "/redoc", "viewer"),
    (READ, "/openapi.json", "viewer"),
    # user: calling tools, reading resources, getting prompts over REST
    (frozenset({"POST"}), "/api/tools/{name:path}/call", "user"),
    (READ, "/api/resources/read", "user"),
    (frozenset({"POST"}), "/api/prompts/{name:path}/get", "user"),
    # user: its own upstream sign-in for a per-user server (never anyone else's)
    (frozenset({"GET", "POST", "DELETE"}), "/api/servers/{name}/sign-in", "user"),
)


class RoleTable:
    """The compiled ``RULES``: ``needed(method, path)`` is the least role, ``admin`` for anything else.
    Paths without parameters are a dict lookup (``/mcp`` is on every MCP request); the rest are tried
    in order."""

    def __init__(self, rules: Iterable[tuple[frozenset[str], str, Role]] = RULES) -> None:
        self._exact: dict[tuple[str, str], Role] = {}
        self._patterns: list[tuple[frozenset[str], re.Pattern[str], Role]] = []
        for methods, template, role in rules:
            if "{" in template:
                self._patterns.append((methods, compile_path(template)[0], role))
            else:
                for method in methods:
                    self._exact.setdefault((method, template), role)

    def needed(self, method: str, path: str) -> Role:
        found = self._exact.get((method, path))
        if found is not None:
            return found
        for methods, pattern, role in self._patterns:
            if method in methods and pattern.match(path):
                return role
        return "admin"


class RoleGate:
    """ASGI middleware after ``Guard``: refuses (403) a request whose identity lacks the route's role, and
    holds a profile-bound identity to its profile. A request the Guard let through without an identity
    (an open path: ``/healthz``, the dashboard's page, ``/agents``, which authenticates on its own) passes.
    """

    def __init__(self, app: ASGIApp, *, table: RoleTable | None = None) -> None:
        self.app = app
        self.table = table or RoleTable()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        identity = scope.get(SCOPE_KEY) if scope["type"] in ("http", "websocket") else None
        if not isinstance(identity, Identity):
            await self.app(scope, receive, send)
            return
        path = route_path(scope)  # less the prefix of a host app that mounted patchbay (embed.py)
        method = scope.get("method", WEBSOCKET) if scope["type"] == "http" else WEBSOCKET
        needed = self.table.needed(method, path)
        if not identity.allows(needed):
            await deny(
                scope,
                send,
                403,
                f"{method} {path} needs the {needed!r} role; {identity.kind} {identity.name!r} has "
                f"{identity.role!r}",
            )
            return
        if identity.profile is not None:
            refusal, scope = _hold_to_profile(scope, identity)
            if refusal is not None:
                await deny(scope, send, 403, refusal)
                return
        await self.app(scope, receive, send)


def _hold_to_profile(scope: Scope, identity: Identity) -> tuple[str | None, Scope]:
    """``/mcp`` → ``/mcp/<profile>``; another profile's endpoint or ``?profile=`` refused; elsewhere the
    ``profile`` query parameter set to the identity's own (REST lists and search)."""
    profile = identity.profile
    assert profile is not None
    path = route_path(scope)
    if path == "/mcp":
        full: str = scope.get("path", "")
        target = full[: len(full) - len(path)] + f"/mcp/{profile}"  # under a mount, keep its prefix
        return None, {**scope, "path": target, "raw_path": target.encode()}
    if path.startswith("/mcp/"):
        if path != f"/mcp/{profile}":
            return f"{identity.name!r} is bound to profile {profile!r}: use /mcp or /mcp/{profile}", scope
        return None, scope
    raw: bytes = scope.get("query_string", b"")
    query = parse_qsl(raw.decode("latin-1"), keep_blank_values=True) if raw else []
    other = next((v for k, v in query if k == "profile" and v != profile), None)
    if other is not None:
        return f"{identity.name!r} is bound to profile {profile!r}, not {other!r}", scope
    query = [(k, v) for k, v in query if k != "profile"] + [("profile", profile)]
    return None, {**scope, "query_string": urlencode(query).encode("latin-1")}


def visible_event(event: Event, view: ProfileView, catalog: Catalog) -> Event | None:
    """What an identity bound to ``view``'s profile sees of ``event``: catalog changes only of its tools,
    events naming a server, agent or tool only of its own; None when nothing is left."""
    if isinstance(event, CatalogEvent):
        source = event.server
        if source is not None and not view.admits_source(source):
            return None
        names = view.names(catalog)

        def mine(name: str) -> bool:
            return view.admits(source, name) if source is not None else name in names

        added = [n for n in event.added if mine(n)]
        removed = [n for n in event.removed if source is not None and mine(n)]
        if (event.added or event.removed) and not (added or removed):
            return None
        return event.model_copy(update={"added": added, "removed": removed})
    if isinstance(event, ConfigReloadEvent):
        lists = {
            k: [n for n in getattr(event, k) if view.admits_source(n)]
            for k in ("added", "removed", "changed")
        }
        return event.model_copy(update=lists)
    # every other event that names its server (or agent) and maybe a tool: server state, config changes,
    # agents, tool pinning; a kind added later is filtered the same way
    source = getattr(event, "server", None) or getattr(event, "agent", None)
    if isinstance(source, str):
        if not view.admits_source(source):
            return None
        tool = getattr(event, "tool", None)
        if isinstance(tool, str) and not view.admits(source, tool):
            return None
    return event
