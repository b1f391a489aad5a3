"""The errors of signing in: a refusal (the other side is not safe to sign in to) and "needs sign-in"."""

from __future__ import annotations

from patchbay.errors import PatchbayError


class OAuthError(PatchbayError):
    """Signing in to ``server`` failed or was refused; the message says why and names the server."""

    def __init__(self, server: str, message: str) -> None:
        self.server = server
        super().__init__(f"server {server!r}: {message}")


class NeedsAuthError(OAuthError):
    """The server wants OAuth tokens patchbay does not have (or that no longer work): a person must sign in.

    ``reason`` is what the server said; the message ends with what to do.
    """

    def __init__(self, server: str, reason: str, *, scope: str | None = None) -> None:
        self.reason = reason
        self.scope = scope
        self.advice = (
            f"{reason}; sign in with `patchbay auth login {server}` (or the dashboard's Sign in button, "
            f"or POST /api/servers/{server}/auth)"
        )
        super().__init__(server, self.advice)
