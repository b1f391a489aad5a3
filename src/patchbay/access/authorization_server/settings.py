"""``auth.server``: the built-in authorization server's settings, validated field by field.

Parsed from the config document (not the hub's server specs), by ``config check`` and at ``serve``
start-up, so a bad value stops the start with a message naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from patchbay.config import HubConfig
from patchbay.errors import ConfigError

FIELD = "auth.server"
_KNOWN = {
    "enabled",
    "issuer",
    "accessTokenTtl",
    "refreshTokenTtl",
    "stateDirectory",
    "allowLoopbackClientMetadata",
}
DEFAULT_ACCESS_TTL = 3600  # one hour: short-lived, a client refreshes
DEFAULT_REFRESH_TTL = 30 * 24 * 3600  # thirty days of not using a grant ends it


@dataclass(frozen=True)
class ServerSettings:
    """``issuer`` is the public base URL, without a trailing slash; patchbay's MCP endpoint (the RFC 8707
    resource its tokens are bound to) is ``{issuer}/mcp``."""

    issuer: str
    state_directory: Path
    access_token_ttl: int = DEFAULT_ACCESS_TTL
    refresh_token_ttl: int = DEFAULT_REFRESH_TTL
    # Test-only: fetch client ID metadata documents from loopback addresses (a test's own https server).
    allow_loopback_client_metadata: bool = False

    @property
    def resource(self) -> str:
        return f"{self.issuer}/mcp"

    def accepts_resource(self, resource: str) -> bool:
        """``/mcp`` or a profile's ``/mcp/<name>``: the resources patchbay serves."""
        return resource.rstrip("/") == self.resource or resource.startswith(f"{self.resource}/")


def _loopback_host(host: str) -> bool:
    from patchbay.server.security import is_loopback

    return is_loopback(host)


def check_issuer(value: Any) -> str:
    """The issuer URL, or a ConfigError saying what is wrong with it."""
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f'{FIELD}.issuer is required: the public URL clients reach patchbay at, e.g. "https://hub.example.com"',
            field=f"{FIELD}.issuer",
        )
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{FIELD}.issuer must be an https URL, got {value!r}", field=f"{FIELD}.issuer")
    if parts.scheme == "http" and not _loopback_host(parts.hostname):
        raise ConfigError(
            f"{FIELD}.issuer must be https (http only for 127.0.0.1/localhost), got {value!r}",
            field=f"{FIELD}.issuer",
        )
    if parts.path not in ("", "/"):
        raise ConfigError(
            f"{FIELD}.issuer must be the server's origin without a path (patchbay serves /mcp, "
            f"/authorize and /.well-known/… at its root), got {value!r}",
            field=f"{FIELD}.issuer",
        )
    if parts.query or parts.fragment:
        raise ConfigError(
            f"{FIELD}.issuer must not have a query or fragment, got {value!r}", field=f"{FIELD}.issuer"
        )
    return value.rstrip("/")


def _seconds(raw: dict[str, Any], key: str, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{FIELD}.{key} must be a whole number of seconds (at least 1), got {value!r}",
            field=f"{FIELD}.{key}",
        )
    return int(value)


def server_settings(config: HubConfig) -> ServerSettings | None:
    """The settings when ``auth.server.enabled`` is true, else None; ConfigError for a bad value."""
    auth = config.document.get("auth")
    raw = auth.get("server") if isinstance(auth, dict) else None
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(
            f'{FIELD} must be an object, e.g. {{"enabled": true, "issuer": "https://…"}}', field=FIELD
        )
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        raise ConfigError(
            f"{FIELD}: unknown field {unknown[0]!r} (known: {', '.join(sorted(_KNOWN))})",
            field=f"{FIELD}.{unknown[0]}",
        )
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{FIELD}.enabled must be true or false, got {enabled!r}", field=f"{FIELD}.enabled")
    if not enabled:
        return None
    if isinstance(auth, dict) and auth.get("oauth") is not None:
        raise ConfigError(
            "auth.server and auth.oauth are both configured: patchbay either issues its own tokens "
            "(auth.server, the built-in authorization server) or accepts an external identity provider's "
            "(auth.oauth, resource server mode), not both; remove one",
            field=FIELD,
        )
    loopback = raw.get("allowLoopbackClientMetadata", False)
    if not isinstance(loopback, bool):
        raise ConfigError(
            f"{FIELD}.allowLoopbackClientMetadata must be true or false, got {loopback!r}",
            field=f"{FIELD}.allowLoopbackClientMetadata",
        )
    directory = raw.get("stateDirectory", ".patchbay-authorization-server")
    if not isinstance(directory, str) or not directory:
        raise ConfigError(
            f"{FIELD}.stateDirectory must be a directory path, got {directory!r}",
            field=f"{FIELD}.stateDirectory",
        )
    return ServerSettings(
        issuer=check_issuer(raw.get("issuer")),
        state_directory=(config.base_dir / Path(directory).expanduser()).resolve(),
        access_token_ttl=_seconds(raw, "accessTokenTtl", DEFAULT_ACCESS_TTL),
        refresh_token_ttl=_seconds(raw, "refreshTokenTtl", DEFAULT_REFRESH_TTL),
        allow_loopback_client_metadata=loopback,
    )


def public_host(config: HubConfig) -> list[str]:
    """The issuer's host name when ``auth.server`` is on (a Host header clients will send), else none."""
    settings = server_settings(config)
    return [urlsplit(settings.issuer).hostname or ""] if settings is not None else []
