"""One live MCP connection to an upstream: handshake, paginated listing, list_changed refreshes.

Transport-agnostic: a ``Wire`` (stdio process today, HTTP or a dial-in WebSocket later) carries decoded
JSON-RPC messages; everything protocol-level lives here so every kind of upstream behaves the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import mcp.types as types
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS

from patchbay import __version__
from patchbay.catalog import Listing, parse_items, parse_tools
from patchbay.errors import CallTimeoutError, PatchbayError, ServerExitedError, StartError, UpstreamError
from patchbay.jsonrpc import METHOD_NOT_FOUND, JsonRpcPeer, RequestHandler
from patchbay.transports.base import WireFactory

log = logging.getLogger(__name__)

CLIENT_PROTOCOL_VERSION = "2025-11-25"
MAX_PAGES = 1000
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "emergency": logging.CRITICAL,
}


class Connection:
    """A started, initialized upstream. ``closed`` resolves with the reason once it is gone."""

    def __init__(
        self,
        name: str,
        make_wire: WireFactory,
        *,
        on_listing: Callable[[Listing], None] | None = None,
        on_notification: Callable[[str, dict[str, Any]], None] | None = None,
        on_request: RequestHandler | None = None,
        on_lost: Callable[[Connection, str], None] | None = None,
    ) -> None:
        self.name = name
        self._on_lost = on_lost
        self._on_listing = on_listing
        self._on_notification = on_notification
        self.peer = JsonRpcPeer(name, self._send, on_notification=self._notified, on_request=on_request)
        self.wire = make_wire(self.peer.feed, self._lost)
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.returncode: int | None = None
        self.protocol_version: str | None = None
        self.server_info: types.Implementation | None = None
        self.capabilities: dict[str, Any] = {}
        self.instructions: str | None = None
        self.listing = Listing()
        self._log = logging.getLogger(f"patchbay.server.{name}")
        self._refresh_task: asyncio.Task[None] | None = None
        self._refresh_again = False

    def _send(self, msg: dict[str, Any]) -> None:
        self.wire.send(msg)

    def _lost(self, reason: str, returncode: int | None) -> None:
        """Synchronously: withdraw (``on_lost``) first, then fail waiting callers, then wake the owner."""
        if self.closed.done():
            return
        self.returncode = returncode
        if self._on_lost is not None:
            try:
                self._on_lost(self, reason)
            except Exception:
                log.exception("%s: on_lost handler failed", self.name)
        self.peer.close(ServerExitedError(self.name, reason, returncode))
        if not self.closed.done():
            self.closed.set_result(reason)

    # --- start -------------------------------------------------------------------------------------

    async def open(self, timeout: float) -> None:
        """Start the wire, handshake and list everything, all within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        phase = "start"
        try:
            async with asyncio.timeout(timeout):
                await self.wire.start()
                phase = "initialize"
                await self._initialize(deadline)
                phase = "list its tools"
                self.listing = await self._list_everything(deadline)
        except TimeoutError:
            raise StartError(f"did not {phase} within {timeout:g} s (startTimeout)") from None
        except CallTimeoutError:
            raise StartError(f"did not {phase} within {timeout:g} s (startTimeout)") from None
        except ServerExitedError as exc:
            raise StartError(f"{exc.reason} during start-up{self._stderr_hint()}") from None

    def _stderr_hint(self) -> str:
        tail = self.wire.stderr.tail(3) if self.wire.stderr else []
        return f" (stderr: {' | '.join(tail)})" if tail else ""

    async def _initialize(self, deadline: float) -> None:
        result = await self.request(
            "initialize",
            {
                "protocolVersion": CLIENT_PROTOCOL_VERSION,
                # sampling and elicitation are answered by the downstream client of the call in progress
                "capabilities": {"sampling": {}, "elicitation": {}},
                "clientInfo": {"name": "patchbay", "version": __version__},
            },
            timeout=max(deadline - time.monotonic(), 0.001),
        )
        if not isinstance(result, dict):
            raise StartError(f"answered initialize with {type(result).__name__}, not an object")
        version = result.get("protocolVersion")
        if version not in HANDSHAKE_PROTOCOL_VERSIONS:
            raise StartError(
                f"answered initialize with protocol version {version!r}; patchbay speaks "
                f"{', '.join(HANDSHAKE_PROTOCOL_VERSIONS)}"
            )
        self.protocol_version = version
        caps = result.get("capabilities")
        self.capabilities = caps if isinstance(caps, dict) else {}
        info = result.get("serverInfo")
        with contextlib.suppress(Exception):
            self.server_info = types.Implementation.model_validate(info)
        instructions = result.get("instructions")
        self.instructions = instructions if isinstance(instructions, str) else None
        self.peer.notify("notifications/initialized")

    async def request(self, method: str, params: dict[str, Any] | None, *, timeout: float) -> Any:
        return await self.peer.request(method, params, timeout=timeout)

    # --- listing -----------------------------------------------------------------------------------

    async def _list_all(self, method: str, key: str, timeout: float) -> list[Any]:
        items: list[Any] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            page = await self.request(method, {"cursor": cursor} if cursor else None, timeout=timeout)
            if not isinstance(page, dict):
                raise UpstreamError(
                    self.name, -32603, f"{method} returned {type(page).__name__}, not an object"
                )
            got = page.get(key)
            if isinstance(got, list):
                items.extend(got)
            cursor = page.get("nextCursor")
            if not cursor or not isinstance(cursor, str) or cursor in seen:
                break
            seen.add(cursor)
        return items

    async def _list_optional(self, method: str, key: str, timeout: float) -> list[Any]:
        try:
            return await self._list_all(method, key, timeout)
        except UpstreamError as exc:
            if exc.code == METHOD_NOT_FOUND:
                return []
            raise

    async def _list_everything(self, deadline: float) -> Listing:
        def left() -> float:
            return max(deadline - time.monotonic(), 0.001)

        listing = Listing()
        # Tools are always listed (some servers forget to declare the capability); the rest only if declared.
        raw_tools = await self._list_optional("tools/list", "tools", left())
        listing.tools, listing.problems = parse_tools(raw_tools, self.name)
        if "resources" in self.capabilities:
            listing.resources = parse_items(
                await self._list_optional("resources/list", "resources", left()), types.Resource, self.name
            )
            listing.templates = parse_items(
                await self._list_optional("resources/templates/list", "resourceTemplates", left()),
                types.ResourceTemplate,
                self.name,
            )
        if "prompts" in self.capabilities:
            listing.prompts = parse_items(
                await self._list_optional("prompts/list", "prompts", left()), types.Prompt, self.name
            )
        return listing

    def _notified(self, method: str, params: dict[str, Any]) -> None:
        if method in (
            "notifications/tools/list_changed",
            "notifications/resources/list_changed",
            "notifications/prompts/list_changed",
        ):
            self._schedule_refresh()
        elif method == "notifications/message":
            level = LOG_LEVELS.get(str(params.get("level", "info")), logging.INFO)
            logger = params.get("logger")
            self._log.log(level, "%s%s", f"[{logger}] " if logger else "", params.get("data"))
        if self._on_notification is not None:
            self._on_notification(method, params)

    def _schedule_refresh(self) -> None:
        """Coalesce bursts of list_changed: at most one refresh running and one queued."""
        if self._refresh_task is not None and not self._refresh_task.done():
            self._refresh_again = True
            return
        self._refresh_task = asyncio.ensure_future(self._refresh())

    async def _refresh(self) -> None:
        while True:
            self._refresh_again = False
            try:
                listing = await self._list_everything(time.monotonic() + 30.0)
            except PatchbayError as exc:
                if not self.peer.closed:
                    log.warning("%s: re-listing after list_changed failed: %s", self.name, exc)
                return
            except Exception:  # an upstream that lies must not kill the connection's owner
                log.exception("%s: re-listing after list_changed failed", self.name)
                return
            self.listing = listing
            if self._on_listing is not None:
                self._on_listing(listing)
            if not self._refresh_again:
                return

    # --- stop --------------------------------------------------------------------------------------

    async def close(self) -> None:
        refresh, self._refresh_task = self._refresh_task, None
        if refresh is not None:
            refresh.cancel()
        try:
            await self.wire.close()
        finally:
            self._lost("was stopped", self.returncode)
            if refresh is not None:
                await asyncio.gather(refresh, return_exceptions=True)
            await self.peer.wait_closed()
