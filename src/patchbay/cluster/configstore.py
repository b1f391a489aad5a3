"""The config of record in Redis: one JSON document and a version, changed only by compare-and-set.

A change made through any replica is written here first (a Lua script: the version must still be the one
the change was made on), and the new version is published on the events channel in the same step, so
every replica learns of it at once; a periodic version check catches a message missed while the
subscription was down. An empty store (a new cluster, or a Redis that lost its data) is seeded from the
first replica's own config.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from patchbay.cluster.keys import CONFIG_DOC, CONFIG_VERSION, EVENTS
from patchbay.errors import ConfigConflictError

# KEYS: doc, version, events. ARGV: new doc, the version the change was made on. An empty store (no
# version) accepts it: Redis lost its data and this replica's config is as good as any.
_SAVE = """
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
local base = tonumber(ARGV[2])
if cur ~= 0 and cur ~= base then return {0, cur} end
if cur ~= 0 then base = cur end
local v = base + 1
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], v)
redis.call('PUBLISH', KEYS[3], cjson.encode({t = 'config', v = v}))
return {1, v}
"""

# KEYS: doc, version, events. ARGV: doc, version. Only into an empty store.
_SEED = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PUBLISH', KEYS[3], cjson.encode({t = 'config', v = tonumber(ARGV[2])}))
return 1
"""


def dump(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, allow_nan=False)


class ConfigStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._save = redis.register_script(_SAVE)
        self._seed = redis.register_script(_SEED)

    async def read(self) -> tuple[int, str] | None:
        """The current version and document, or None for an empty store."""
        version, doc = await self._redis.mget([CONFIG_VERSION, CONFIG_DOC])
        if version is None or doc is None:
            return None
        return int(version), str(doc)

    async def version(self) -> int:
        raw = await self._redis.get(CONFIG_VERSION)
        return int(raw) if raw is not None else 0

    async def seed(self, document: dict[str, Any], version: int) -> bool:
        """Write ``document`` as ``version`` if the store is empty; whether it was."""
        done = await self._seed(keys=[CONFIG_DOC, CONFIG_VERSION, EVENTS], args=[dump(document), version])
        return bool(done)

    async def save(self, document: dict[str, Any], base: int) -> int:
        """Write a change made on version ``base``; the new version. Another replica's change in between
        refuses it (``ConfigConflictError``): it was validated against a config that is no longer current."""
        ok, version = await self._save(keys=[CONFIG_DOC, CONFIG_VERSION, EVENTS], args=[dump(document), base])
        if not ok:
            raise ConfigConflictError(
                f"the cluster's config changed on another replica meanwhile (now version {version}, this "
                f"change was made on version {base}); nothing was changed: try again"
            )
        return int(version)
