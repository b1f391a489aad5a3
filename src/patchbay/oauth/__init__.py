"""Signing in to hosted MCP servers: the OAuth 2.1 client of the MCP authorization specification.

``OAuthClient`` (one server: discovery, registration, PKCE, grants, refresh, step-up, revocation),
``BearerTransport`` / ``BearerAuth`` (tokens on a remote upstream's requests), ``TokenStore`` (encrypted) and
``OAuthManager`` (all of a hub's servers and their pending sign-ins).
"""

from patchbay.oauth.auth import BearerAuth, BearerTransport
from patchbay.oauth.client import OAuthClient, PendingAuthorization
from patchbay.oauth.discovery import Challenge, ServerMetadata, parse_challenge
from patchbay.oauth.errors import NeedsAuthError, OAuthError
from patchbay.oauth.manager import OAuthManager, wants_oauth
from patchbay.oauth.settings import OAuthSettings, oauth_settings
from patchbay.oauth.store import TokenRecord, TokenStore

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
