"""Who is asking: the identity every request carries from the gate to the hub.

The HTTP gate (``server/security.py``) authenticates a request once and stores the resulting
``Identity`` in the ASGI scope; every surface reads it back with ``identity_of`` and passes it to the
hub as ``caller=``, so roles, profile-bound tokens, the audit trail, rate limits and per-user upstream
credentials all see the same answer. The Python API has no gate: a call without ``caller`` is the
process owner's (``LOCAL``).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["admin", "user", "viewer"]
Kind = Literal["token", "oauth", "local"]
ROLES: tuple[Role, ...] = ("viewer", "user", "admin")  # each role may do everything the ones before may
_RANK = {role: rank for rank, role in enumerate(ROLES)}
SCOPE_KEY = "patchbay.identity"


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller. ``name`` is what the audit trail and rate limits key on: a token's
    configured name, or an OAuth subject; ``profile``, when set, is the only view it may see."""

    name: str
    role: Role = "admin"
    profile: str | None = None
    kind: Kind = "token"
    client_id: str | None = None  # the OAuth client that obtained the token, if any
    scopes: tuple[str, ...] = field(default=())

    def allows(self, needed: Role) -> bool:
        return _RANK[self.role] >= _RANK[needed]


LOCAL = Identity("local", "admin", kind="local")  # loopback without tokens, and the Python API


class Authenticator(Protocol):
    """Turns a presented bearer token into an identity, or ``None`` when the token is not its kind.

    Raises ``AuthenticationError`` for a token it recognises but refuses (expired, revoked, wrong
    audience), so the gate can say why.
    """

    async def authenticate(self, token: str) -> Identity | None: ...


class AuthenticationError(Exception):
    """A token was recognised and refused; the message says why and never contains the token."""

    def __init__(self, message: str, *, status: int = 401, error: str = "invalid_token") -> None:
        super().__init__(message)
        self.status = status
        self.error = error


def identity_of(scope: Mapping[str, Any] | None) -> Identity:
    """The identity the gate stored in an ASGI scope; ``LOCAL`` where there is no gate (tests, the
    Python API, an app that mounts patchbay without one)."""
    if scope is None:
        return LOCAL
    found = scope.get(SCOPE_KEY)
    return found if isinstance(found, Identity) else LOCAL


def attach(scope: MutableMapping[str, Any], identity: Identity) -> None:
    scope[SCOPE_KEY] = identity
