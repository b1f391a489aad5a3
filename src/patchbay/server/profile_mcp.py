"""``/mcp/<profile>``: each configured profile served as an MCP endpoint of its own.

One ``McpEndpoint`` per profile, parameterised by the profile's view, so every feature of ``/mcp`` (both
eras, sessions, progress, cancellation, sampling and elicitation routing, completion, subscriptions, the
fast path) works the same, and ``list_changed`` goes out when the profile's own view changes and only then.
Each endpoint has its own session manager, run by a task owned here; profiles added or removed by a config
reload get or lose their endpoint at once (a removed profile's sessions are closed).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from starlette.types import ASGIApp, Receive, Scope, Send

from patchbay.events import EventsDropped, Subscription
from patchbay.hub import Hub
from patchbay.profiles import ProfilesChangedEvent
from patchbay.server.fastpath import McpFastPath
from patchbay.server.mcp import DEFAULT_SESSION_IDLE_TIMEOUT, McpEndpoint
from patchbay.server.security import route_path

log = logging.getLogger(__name__)

PREFIX = "/mcp/"


@dataclass
class _Running:
    endpoint: McpEndpoint
    app: ASGIApp
    stop: asyncio.Event
    task: asyncio.Task[None]


class ProfileEndpoints:
    """The ASGI app behind ``/mcp/{profile}``: routes each request to its profile's endpoint."""

    def __init__(
        self, hub: Hub, *, session_idle_timeout: float | None = DEFAULT_SESSION_IDLE_TIMEOUT
    ) -> None:
        self.hub = hub
        self.session_idle_timeout = session_idle_timeout
        self.endpoints: dict[str, _Running] = {}
        self._events: Subscription | None = None
        self._follower: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Serve every configured profile, and follow reloads from now on."""
        self._events = self.hub.events()  # subscribed before the first sync: no change slips between
        await self._sync()
        self._follower = asyncio.create_task(self._follow(), name="patchbay-profile-endpoints")

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        if self._events is not None:
            self._events.close()
        async with self._lock:
            for name in list(self.endpoints):
                await self._remove(name)

    def endpoint(self, profile: str) -> McpEndpoint | None:
        running = self.endpoints.get(profile)
        return running.endpoint if running is not None else None

    async def _follow(self) -> None:
        assert self._events is not None
        async for event in self._events:
            if isinstance(event, ProfilesChangedEvent | EventsDropped):  # dropped: it may have been one
                try:
                    await self._sync()
                except Exception:  # one profile that cannot start must not stop the others' updates
                    log.exception("could not update the /mcp/<profile> endpoints")

    async def _sync(self) -> None:
        """Make the endpoints match the hub's profiles (a changed profile keeps its endpoint: the
        endpoint reads the new view and tells its clients if their list changed)."""
        async with self._lock:
            wanted = list(self.hub.profiles())
            for name in [n for n in self.endpoints if n not in wanted]:
                await self._remove(name)
            for name in wanted:
                if name not in self.endpoints:
                    await self._add(name)

    async def _add(self, name: str) -> None:
        endpoint = McpEndpoint(
            self.hub,
            dns_rebinding_protection=False,  # the app's Guard checks Host/Origin for every path
            session_idle_timeout=self.session_idle_timeout,
            profile=name,
        )
        app = McpFastPath(
            StreamableHTTPASGIApp(endpoint.manager),
            hub=self.hub,
            manager=endpoint.manager,
            sessions=endpoint.fast_sessions,
            server_info=lambda: endpoint.server.server_info_stamp,
            path=PREFIX + name,
            profile=name,
        )
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        task = asyncio.create_task(self._run(endpoint, started, stop), name=f"patchbay-mcp-{name}")
        await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():  # it failed before serving: its exception is raised here, retrieved
            await task
        self.endpoints[name] = _Running(endpoint, app, stop, task)
        log.info("serving profile %r at %s%s", name, PREFIX, name)

    @staticmethod
    async def _run(endpoint: McpEndpoint, started: asyncio.Future[None], stop: asyncio.Event) -> None:
        """The endpoint's session manager lives in this task, from ``start`` until ``stop`` is set."""
        async with endpoint.manager.run():
            endpoint.start()
            try:
                started.set_result(None)
                await stop.wait()
            finally:
                await endpoint.stop()

    async def _remove(self, name: str) -> None:
        running = self.endpoints.pop(name)
        running.stop.set()
        try:
            await running.task
        except Exception:
            log.exception("the endpoint of profile %r failed", name)
        log.info("stopped serving profile %r", name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        name = path[len(PREFIX) :] if path.startswith(PREFIX) else ""
        running = self.endpoints.get(name)
        if running is None:
            await _unknown_profile(send, name, list(self.endpoints))
            return
        await running.app(scope, receive, send)


async def _unknown_profile(send: Send, name: str, known: list[str]) -> None:
    hint = f"; known: {', '.join(known)}" if known else "; no profiles are configured"
    body = json.dumps({"error": "unknown_profile", "detail": f"unknown profile {name!r}{hint}"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})
