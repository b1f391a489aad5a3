"""Typed errors: each failure a caller can act on differently has its own class.

Every message names the thing that went wrong (server, tool, field) and, where possible,
what to do about it, because these strings end up in front of users and LLMs.
"""

from __future__ import annotations

from typing import Any


class PatchbayError(Exception):
    """Base class of every error patchbay raises on purpose."""


class ConfigError(PatchbayError):
    """The configuration (file, server spec or placeholder) is invalid.

    ``server`` and ``field`` are set when the problem belongs to one server entry.
    """

    def __init__(self, message: str, *, server: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.server = server
        self.field = field


class StartError(PatchbayError):
    """The upstream did not come up (no answer to initialize, bad protocol version, exited at start)."""


class UnknownServerError(PatchbayError, KeyError):
    """No server (or agent) of that name is configured."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        hint = f"; known: {', '.join(known)}" if known else "; no servers are configured"
        super().__init__(f"unknown server {name!r}{hint}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class DuplicateServerError(PatchbayError, ValueError):
    """A server of that name already exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a server named {name!r} already exists; remove it first or choose another name")


class UnknownToolError(PatchbayError, LookupError):
    """No tool (or prompt/resource) is exposed under that name; ``suggestions`` holds close matches."""

    def __init__(self, name: str, suggestions: list[str], kind: str = "tool") -> None:
        self.name = name
        self.suggestions = suggestions
        self.kind = kind
        hint = f"; did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"unknown {kind} {name!r}{hint}")


class ServerUnavailableError(PatchbayError):
    """The server that owns the tool is not running (starting, restarting, failed or disabled)."""

    def __init__(self, server: str, message: str) -> None:
        self.server = server
        super().__init__(message)


class ServerExitedError(ServerUnavailableError):
    """The server went away while the request was in flight (process exit, lost connection)."""

    def __init__(self, server: str, reason: str, returncode: int | None = None) -> None:
        self.reason = reason
        self.returncode = returncode
        super().__init__(server, f"server {server!r} {reason}; the call did not complete")


class CallTimeoutError(PatchbayError, TimeoutError):
    """The upstream did not answer within the call's timeout; a cancellation was sent upstream."""

    def __init__(self, server: str, method: str, timeout: float, target: str | None = None) -> None:
        self.server = server
        self.method = method
        self.timeout = timeout
        what = f"{method} {target!r}" if target else method
        super().__init__(
            f"server {server!r} did not answer {what} within {timeout:g} s "
            f"(raise the per-call 'timeout' or the server's 'timeout' setting if it needs longer)"
        )


class UpstreamError(PatchbayError):
    """The upstream answered with a JSON-RPC error (or with a result patchbay cannot read)."""

    def __init__(self, server: str, code: int, message: str, data: Any = None) -> None:
        self.server = server
        self.code = code
        self.message = message
        self.data = data
        super().__init__(f"server {server!r} returned error {code}: {message}")


class OAuthError(PatchbayError):
    """Signing in to ``server`` (OAuth) failed or was refused; the message says why and names the server."""

    def __init__(self, server: str, message: str) -> None:
        self.server = server
        super().__init__(f"server {server!r}: {message}")


class NotOAuthServerError(OAuthError):
    """Sign-in was asked of a server that does not use it (stdio, or a static ``Authorization`` header)."""

    def __init__(self, server: str) -> None:
        super().__init__(server, "is not a remote server that signs in with OAuth")


class NeedsAuthError(OAuthError):
    """The server wants OAuth tokens patchbay does not have (or that no longer work): a person must sign in.

    ``reason`` is what the server said; ``advice`` (also the message) ends with what to do.
    """

    def __init__(self, server: str, reason: str, *, scope: str | None = None) -> None:
        self.reason = reason
        self.scope = scope
        self.advice = (
            f"{reason}; sign in with `patchbay auth login {server}` (or the dashboard's Sign in button, "
            f"or POST /api/servers/{server}/auth)"
        )
        super().__init__(server, self.advice)


class UnknownProfileError(PatchbayError, KeyError):
    """No profile of that name is configured."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        hint = f"; known: {', '.join(known)}" if known else "; no profiles are configured"
        super().__init__(f"unknown profile {name!r}{hint}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ToolNotInProfileError(UnknownToolError):
    """The tool is not in the caller's profile (it may exist in the catalog: the profile hides it)."""

    def __init__(self, name: str, profile: str, suggestions: list[str], *, exists: bool) -> None:
        super().__init__(name, suggestions)
        self.profile = profile
        self.exists = exists
        hint = f"; did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        if exists:
            what = f"tool {name!r} is not in profile {profile!r}"
        else:
            what = f"unknown tool {name!r} in profile {profile!r}"
        self.args = (what + hint,)


class ClusterUnavailableError(PatchbayError):
    """Cluster mode: Redis, where the config of record lives, cannot be reached; changes are refused."""


class ConfigConflictError(PatchbayError):
    """Cluster mode: another replica changed the config first; this change was not applied (try again)."""
