"""Per-user upstream sign-in (``"credentials": "perUser"``): one upstream connection per downstream identity.

Each identity that calls a per-user server signs in upstream for itself; its tokens are stored under its
own name in the encrypted ``TokenStore`` (``<server>~<digest of kind and name>``, so a token named ``alice``
and an OAuth subject ``alice`` are two people), and its calls go out on a connection whose transport
carries only its tokens. The connections are opened on an identity's first call and closed after
``idle`` seconds without a call in flight. The server's shared connection (the operator's sign-in) lists
the tools and serves the process owner (``LOCAL``); it never carries anyone else's call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from patchbay.errors import NotOAuthServerError, OAuthError, PatchbayError
from patchbay.identity import Identity
from patchbay.oauth.client import OAuthClient
from patchbay.upstream import Connection

log = logging.getLogger(__name__)

IDLE_SECONDS = 300.0
SEPARATOR = "~"  # never in a server name, so a per-user store name cannot be another server's


def user_key(identity: Identity) -> str:
    """A stable, file-name-safe key for an identity (its kind and name; the name itself may be anything)."""
    return hashlib.sha256(f"{identity.kind}:{identity.name}".encode()).hexdigest()[:32]


def store_name(server: str, identity: Identity) -> str:
    return f"{server}{SEPARATOR}{user_key(identity)}"


class SignInRequired(OAuthError):
    """The caller has no upstream tokens of its own for a per-user server; ``url`` starts its sign-in."""

    def __init__(self, server: str, identity: Identity, url: str, reason: str = "") -> None:
        where = f"open {url} to sign in" if url else f"sign in with POST /api/servers/{server}/sign-in"
        super().__init__(
            server,
            f"signs every user in separately and {identity.name!r} has not signed in"
            f"{f' ({reason})' if reason else ''}: {where}, then call again",
        )
        self.identity = identity
        self.url = url


class NotPerUserError(NotOAuthServerError):
    """A per-user sign-in was asked of a server whose credentials are shared."""

    def __init__(self, server: str) -> None:
        OAuthError.__init__(
            self, server, 'shares one sign-in for everyone: per-user sign-in needs "credentials": "perUser"'
        )


@dataclass
class _Entry:
    conn: Connection
    last_used: float = field(default_factory=time.monotonic)


ConnectionFactory = Callable[[OAuthClient, str], Connection]


class PerUserConnections:
    """The per-identity connections of one per-user server.

    ``client_for(identity)`` gives the identity's own ``OAuthClient``; ``connect(client, key)`` makes a
    ``Connection`` whose transport carries that client's tokens; ``sign_in_url(identity)`` starts (or
    reuses) the identity's pending sign-in for the error a call gets without tokens.
    """

    def __init__(
        self,
        server: str,
        *,
        client_for: Callable[[Identity], OAuthClient],
        connect: ConnectionFactory,
        sign_in_url: Callable[[Identity], Awaitable[str]],
        start_timeout: float,
        idle: float = IDLE_SECONDS,
    ) -> None:
        self.server = server
        self._client_for = client_for
        self._connect = connect
        self._sign_in_url = sign_in_url
        self._start_timeout = start_timeout
        self.idle = idle
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def open_count(self) -> int:
        return len(self._entries)

    async def _required(self, identity: Identity, reason: str = "") -> SignInRequired:
        try:
            url = await self._sign_in_url(identity)
        except Exception as exc:  # discovery failed (the upstream's AS is down): say so, without a URL
            log.warning("server %r: cannot start a sign-in for %r: %s", self.server, identity.name, exc)
            url = ""
        return SignInRequired(self.server, identity, url, reason)

    async def acquire(self, identity: Identity) -> Connection:
        """The identity's live connection, opened if needed. Raises ``SignInRequired`` without tokens."""
        if self._closed:
            raise PatchbayError(f"server {self.server!r} is stopping")
        key = user_key(identity)
        entry = self._entries.get(key)
        if entry is not None and not entry.conn.closed.done():
            entry.last_used = time.monotonic()
            return entry.conn
        client = self._client_for(identity)
        if client.record_tokens() is None:
            raise await self._required(identity)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            if entry is not None and not entry.conn.closed.done():
                entry.last_used = time.monotonic()
                return entry.conn
            conn = self._connect(client, key)
            try:
                await conn.open(self._start_timeout)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close())
                raise
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await conn.close()
                if client.needs_auth is not None or client.record_tokens() is None:
                    # its tokens were refused and could not be refreshed: it must sign in again
                    raise await self._required(identity, "its upstream tokens stopped working") from None
                if isinstance(exc, PatchbayError | OSError):
                    raise PatchbayError(
                        f"server {self.server!r}: could not connect for {identity.name!r}: {exc}"
                    ) from None
                raise
            self._entries[key] = _Entry(conn)
            log.info("server %r: opened a connection for %r", self.server, identity.name)
            self._ensure_reaper()
            return conn

    def lost(self, conn: Connection) -> None:
        """A connection closed by itself: forget it (the next call opens a new one)."""
        for key, entry in list(self._entries.items()):
            if entry.conn is conn:
                del self._entries[key]

    async def drop(self, identity: Identity) -> None:
        """Close the identity's connection (it signed out)."""
        self._locks.pop(user_key(identity), None)
        entry = self._entries.pop(user_key(identity), None)
        if entry is not None:
            await _close(entry.conn)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap(), name=f"patchbay-per-user-idle-{self.server}")

    async def _reap(self) -> None:
        """Close connections idle for ``idle`` seconds; ends when none is left (restarted on demand)."""
        while self._entries:
            now = time.monotonic()
            oldest = min(e.last_used for e in self._entries.values())
            await asyncio.sleep(max(self.idle - (now - oldest), 0.05))
            now = time.monotonic()
            for key, entry in list(self._entries.items()):
                if entry.conn.peer.in_flight:  # busy: idle from when its last call ends
                    entry.last_used = now
                elif now - entry.last_used >= self.idle:
                    del self._entries[key]
                    log.info("server %r: closed an idle per-user connection", self.server)
                    await _close(entry.conn)

    async def close(self) -> None:
        self._closed = True
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
        entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            await _close(entry.conn)


async def _close(conn: Connection) -> None:
    try:
        await conn.close()
    except Exception:
        log.exception("error while closing %s", conn.name)
