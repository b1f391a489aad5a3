"""Signing in to hosted MCP servers: the OAuth 2.1 client of the MCP authorization specification.

``OAuthClient`` (one server: discovery, registration, PKCE, grants, refresh, step-up, revocation),
``BearerTransport`` / ``BearerAuth`` (tokens on a remote upstream's requests), ``TokenStore`` (encrypted) and
``OAuthManager`` (all of a hub's servers and their pending sign-ins).

Lazy, as ``patchbay`` is: ``patchbay.oauth.settings`` (what ``config check`` validates) must not pay for
the MCP SDK, httpx2, PyJWT and cryptography that the client needs. ``from patchbay.oauth import X`` works
as before.
"""

from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BearerAuth": "patchbay.oauth.auth",
    "BearerTransport": "patchbay.oauth.auth",
    "OAuthClient": "patchbay.oauth.client",
    "PendingAuthorization": "patchbay.oauth.client",
    "Challenge": "patchbay.oauth.discovery",
    "ServerMetadata": "patchbay.oauth.discovery",
    "parse_challenge": "patchbay.oauth.discovery",
    "NeedsAuthError": "patchbay.oauth.errors",
    "OAuthError": "patchbay.oauth.errors",
    "OAuthManager": "patchbay.oauth.manager",
    "wants_oauth": "patchbay.oauth.manager",
    "OAuthSettings": "patchbay.oauth.settings",
    "oauth_settings": "patchbay.oauth.settings",
    "TokenRecord": "patchbay.oauth.store",
    "TokenStore": "patchbay.oauth.store",
}

if TYPE_CHECKING:
    from patchbay.oauth.auth import BearerAuth, BearerTransport
    from patchbay.oauth.client import OAuthClient, PendingAuthorization
    from patchbay.oauth.discovery import Challenge, ServerMetadata, parse_challenge
    from patchbay.oauth.errors import NeedsAuthError, OAuthError
    from patchbay.oauth.manager import OAuthManager, wants_oauth
    from patchbay.oauth.settings import OAuthSettings, oauth_settings
    from patchbay.oauth.store import TokenRecord, TokenStore


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'patchbay.oauth' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BearerAuth",
    "BearerTransport",
    "Challenge",
    "NeedsAuthError",
    "OAuthClient",
    "OAuthError",
    "OAuthManager",
    "OAuthSettings",
    "PendingAuthorization",
    "ServerMetadata",
    "TokenRecord",
    "TokenStore",
    "oauth_settings",
    "parse_challenge",
    "wants_oauth",
]
