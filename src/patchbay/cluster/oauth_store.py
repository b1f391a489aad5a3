"""Remote servers' OAuth tokens and pending sign-ins, shared by every replica through Redis.

Why: behind a load balancer, the sign-in's redirect comes back to whichever replica the browser reaches,
and every replica calls the remote server: each must find the tokens another replica obtained. So in
cluster mode the token store keeps its encrypted blobs in Redis (``patchbay:oauth:<server>``), pending
sign-ins (with their PKCE verifiers) live there for their ten minutes (``patchbay:oauth-pending:<state>``),
and a refresh holds a Redis lock, so two replicas never spend the same rotating refresh token.

Everything is encrypted before it reaches Redis, with ``PATCHBAY_SECRET_KEY``: a Fernet key given to
every replica (``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``),
kept out of children's environments. Without it, tokens stay in each replica's own store, as on a single
hub, and the replica says so at start-up.

Reads are served from a copy at most ``CACHE_SECONDS`` old (a call's token lookup is not a Redis round
trip); a save or delete here updates the copy at once, and a refresh re-reads Redis under its lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import redis
from cryptography.fernet import Fernet, InvalidToken
from redis.exceptions import RedisError

from patchbay.cluster.keys import PREFIX
from patchbay.oauth.store import TokenStore

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from patchbay.oauth.client import PendingAuthorization

log = logging.getLogger(__name__)

KEY_ENV = "PATCHBAY_SECRET_KEY"
CACHE_SECONDS = 1.0
REFRESH_LOCK_SECONDS = 30.0


def tokens_key(server: str) -> str:
    return f"{PREFIX}oauth:{server}"


def pending_key(state: str) -> str:
    return f"{PREFIX}oauth-pending:{state}"


class SharedTokenStore(TokenStore):
    """``TokenStore`` whose blobs live in Redis, encrypted with the cluster's key."""

    def __init__(self, url: str, key: bytes, async_redis: Redis) -> None:
        super().__init__(key=key, use_keyring=False)
        self._fernet = Fernet(key)
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._async = async_redis
        self._cache: dict[str, tuple[float, bytes | None]] = {}

    def _load_blob(self, server: str) -> bytes | None:
        cached = self._cache.get(server)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            blob = self._redis.get(tokens_key(server))
        except RedisError as exc:
            log.warning("OAuth tokens of %r: Redis is unreachable (%s); using the last copy", server, exc)
            return cached[1] if cached is not None else None
        value = blob if isinstance(blob, bytes) else None
        self._cache[server] = (time.monotonic(), value)
        return value

    def _store_blob(self, server: str, blob: bytes | None) -> None:
        # A RedisError propagates: a sign-in that cannot be shared fails loudly rather than half-applied.
        if blob is None:
            self._redis.delete(tokens_key(server))
        else:
            self._redis.set(tokens_key(server), blob)
        self._cache[server] = (time.monotonic(), blob)

    def fresh(self, server: str) -> None:
        self._cache.pop(server, None)

    def names(self, prefix: str) -> list[str]:
        start = tokens_key(prefix)
        pattern = start.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?").replace("[", "\\[")
        try:
            keys = list(self._redis.scan_iter(match=f"{pattern}*", count=1000))
        except RedisError as exc:
            log.warning("OAuth tokens under %r: Redis is unreachable (%s)", prefix, exc)
            return []
        return [k.decode().removeprefix(tokens_key("")) for k in keys if isinstance(k, bytes)]

    @contextlib.asynccontextmanager
    async def refresh_lock(self, server: str) -> AsyncIterator[None]:
        lock = self._async.lock(
            f"{PREFIX}oauth-refresh:{server}",
            timeout=REFRESH_LOCK_SECONDS,
            blocking_timeout=REFRESH_LOCK_SECONDS,
        )
        acquired = False
        try:
            acquired = bool(await lock.acquire())
        except RedisError as exc:
            log.warning("OAuth refresh of %r without the cluster's lock: %s", server, exc)
        self._cache.pop(server, None)  # what another replica refreshed meanwhile is read afresh
        try:
            yield
        finally:
            if acquired:
                with contextlib.suppress(RedisError):
                    await lock.release()


class SharedPending:
    """Pending sign-ins in Redis: the redirect may come back to any replica (one use, then gone)."""

    def __init__(self, key: bytes, async_redis: Redis, ttl: float) -> None:
        self._fernet = Fernet(key)
        self._redis = async_redis
        self._ttl = ttl

    async def put(self, pending: PendingAuthorization) -> None:
        data = {k: v for k, v in asdict(pending).items() if k != "created"}
        blob = self._fernet.encrypt(json.dumps(data).encode()).decode()
        await self._redis.set(pending_key(pending.state), blob, px=int(self._ttl * 1000))

    async def take(self, state: str) -> PendingAuthorization | None:
        from patchbay.oauth.client import PendingAuthorization

        if not state:
            return None
        try:
            blob = await self._redis.getdel(pending_key(state))
        except RedisError as exc:
            log.warning("sign-in: Redis is unreachable (%s); only this replica's pending sign-ins", exc)
            return None
        if not blob:
            return None
        try:
            data: dict[str, Any] = json.loads(
                self._fernet.decrypt(blob if isinstance(blob, bytes) else blob.encode())
            )
        except (InvalidToken, ValueError):
            log.warning("sign-in: a pending sign-in in Redis could not be decrypted (another key?)")
            return None
        return PendingAuthorization(**data)
