"""The errors of signing in (defined with the other typed errors in ``patchbay.errors``)."""

from __future__ import annotations

from patchbay.errors import NeedsAuthError, NotOAuthServerError, OAuthError

__all__ = ["NeedsAuthError", "NotOAuthServerError", "OAuthError"]
