"""Reading the config of record from outside a replica (``patchbay config export``)."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from patchbay.cluster.configstore import ConfigStore
from patchbay.cluster.node import REDIS_TIMEOUT


async def read_config_of_record(url: str) -> tuple[int, dict[str, Any] | None]:
    """The version and document in the cluster's Redis; (0, None) when no replica has seeded it yet."""
    redis = Redis.from_url(
        url, decode_responses=True, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )
    try:
        got = await ConfigStore(redis).read()
    finally:
        await redis.aclose()
    if got is None:
        return 0, None
    version, text = got
    document: dict[str, Any] = json.loads(text)
    return version, document
