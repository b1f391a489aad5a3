"""Where the cluster's Redis is: ``--cluster URL`` or the config's ``"cluster": {"redis": "…"}``.

Kept free of the Redis client so that reading it costs nothing outside cluster mode.
"""

from __future__ import annotations

from patchbay.config import HubConfig, expand, placeholder_env, redact_url
from patchbay.errors import ConfigError

SCHEMES = ("redis://", "rediss://", "unix://")


def cluster_url(option: str | None, config: HubConfig) -> str | None:
    """The Redis URL to join, or None (not in cluster mode). The option wins over the config file."""
    if option:
        return check_url(option, "--cluster")
    section = config.document.get("cluster")
    if section is None:
        return None
    if not isinstance(section, dict) or not isinstance(section.get("redis"), str):
        raise ConfigError(
            'cluster must be an object with a "redis" URL, e.g. {"redis": "${REDIS_URL}"}', field="cluster"
        )
    env = placeholder_env(config.base_dir)
    try:
        value = expand(section["redis"], env, server="cluster", field="redis")
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("server 'cluster': ", "cluster."), field="cluster.redis") from None
    return check_url(value, "cluster.redis")


def check_url(url: str, where: str) -> str:
    if not url.startswith(SCHEMES):
        raise ConfigError(
            f"{where}: {redact_url(url)!r} is not a Redis URL; use redis://HOST:PORT/DB "
            "(or rediss:// for TLS, unix:///path/to/redis.sock)",
            field=where,
        )
    return url
