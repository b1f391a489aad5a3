"""The authorization server's state: clients and grants at rest, in one Fernet-encrypted file; consent
requests and codes in flight, in memory.

Follows ``patchbay.oauth.store``: the key comes from the OS keyring where there is a real one, else from a
0600 key file in the state directory (beside the config by default). Tokens are never stored, only their
SHA-256 digests, so a stolen state file (with its key) still yields no usable access or refresh token;
client secrets of registered clients are stored (the SDK compares them) and so are encrypted.

In cluster mode ``patchbay.cluster.authz_store.SharedServerState`` keeps all of it in Redis instead, behind
the same methods: that is why the provider reaches pending requests and codes only through here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet, InvalidToken
from mcp.server.auth.provider import AuthorizationCode, AuthorizationParams
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import BaseModel, Field, ValidationError

from patchbay.config import atomic_write
from patchbay.errors import ConfigError
from patchbay.identity import Role

log = logging.getLogger(__name__)

STATE_FILE = "state"
RETIRED_KEPT = 50  # rotated refresh-token digests remembered per grant, to spot a reused one
CODE_TTL = 300.0  # seconds between approval and the code's exchange
PENDING_TTL = 900.0  # seconds the consent page stays valid
MAX_PENDING = 1000  # consent requests waiting at once (anyone can open /authorize)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ClientRecord(BaseModel):
    """A client: registered here (RFC 7591) or known by its metadata document URL (its client_id)."""

    info: OAuthClientInformationFull
    kind: Literal["registered", "metadata_document"]
    registered_at: float
    fetched_at: float | None = None  # metadata documents: when the document was last fetched


class GrantRecord(BaseModel):
    """What the operator approved on the consent page for one client, and its live tokens' digests."""

    id: str
    client_id: str
    role: Role
    profile: str | None = None
    scopes: list[str] = Field(default_factory=list)
    resource: str
    approved_by: str
    created_at: float
    last_used_at: float | None = None
    refresh_digest: str | None = None
    refresh_expires_at: float | None = None
    retired_refresh: list[str] = Field(default_factory=list)
    access: dict[str, float] = Field(default_factory=dict)  # digest → expiry (epoch seconds)


class Code(AuthorizationCode):
    role: Role
    profile: str | None = None
    approved_by: str


@dataclass
class Pending:
    """An authorization request waiting on the consent page."""

    id: str
    client: OAuthClientInformationFull
    params: AuthorizationParams
    csrf: str
    created_at: float
    failures: int = 0


@dataclass
class IssuedCode:
    code: Code
    used: bool = False
    grant_id: str | None = None


class StaleGrantError(Exception):
    """The grant was changed or ended elsewhere (another replica) since it was read: nothing was written."""


class _Document(BaseModel):
    clients: dict[str, ClientRecord] = Field(default_factory=dict)
    grants: dict[str, GrantRecord] = Field(default_factory=dict)


def _key(directory: Path) -> bytes:
    from patchbay.oauth.store import _file_key, _keyring_key

    return _keyring_key() or _file_key(directory)


class ServerState:
    """Clients and grants in memory, with digest indexes for the per-request token lookup; every change
    is written through (the file is small: one record per client and grant)."""

    def __init__(
        self, directory: Path, *, key: bytes | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = directory
        self._clock = clock
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o700)
        self._fernet = Fernet(key or _key(directory))
        self._doc = self._load()
        self._access: dict[str, str] = {}
        self._refresh: dict[str, str] = {}
        self._retired: dict[str, str] = {}
        self._reindex()
        self._pending: dict[str, Pending] = {}  # in memory: a restart ends the sign-ins in progress
        self._codes: dict[str, IssuedCode] = {}

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def _load(self) -> _Document:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return _Document()
        try:
            return _Document.model_validate_json(self._fernet.decrypt(blob))
        except (InvalidToken, ValidationError, ValueError):
            # Refuse to start over silently: that would drop every client's grant without a word.
            raise ConfigError(
                f"the authorization server's state {self.path} cannot be decrypted or read; restore its key "
                "or move the directory away to start with no clients and grants",
                field="auth.server.stateDirectory",
            ) from None

    def save(self) -> None:
        now = self._clock()
        for grant in self._doc.grants.values():  # expired access digests are dead weight
            grant.access = {d: exp for d, exp in grant.access.items() if exp > now}
        self._reindex()
        atomic_write(self.path, self._fernet.encrypt(json.dumps(self._doc.model_dump(mode="json")).encode()))

    def _reindex(self) -> None:
        self._access = {d: g.id for g in self._doc.grants.values() for d in g.access}
        self._refresh = {g.refresh_digest: g.id for g in self._doc.grants.values() if g.refresh_digest}
        self._retired = {d: g.id for g in self._doc.grants.values() for d in g.retired_refresh}

    # clients
    @property
    def clients(self) -> dict[str, ClientRecord]:
        return self._doc.clients

    def put_client(self, record: ClientRecord) -> None:
        self._doc.clients[record.info.client_id] = record
        self.save()

    def remove_client(self, client_id: str) -> ClientRecord | None:
        """Forget a client and end every grant it holds."""
        record = self._doc.clients.pop(client_id, None)
        if record is not None:
            for grant in [g for g in self._doc.grants.values() if g.client_id == client_id]:
                del self._doc.grants[grant.id]
            self.save()
        return record

    # grants
    @property
    def grants(self) -> dict[str, GrantRecord]:
        return self._doc.grants

    def put_grant(self, grant: GrantRecord, *, rotated_from: str | None = None) -> None:
        """Save ``grant``; ``rotated_from``: the refresh token's digest it replaced, which must still be
        the stored one (here, one event loop, the caller's check holds; a cluster re-checks)."""
        self._doc.grants[grant.id] = grant
        self.save()

    def remove_grant(self, grant_id: str) -> GrantRecord | None:
        grant = self._doc.grants.pop(grant_id, None)
        if grant is not None:
            self.save()
        return grant

    def grant_of_access(self, token_digest: str) -> GrantRecord | None:
        found = self._access.get(token_digest)
        return self._doc.grants.get(found) if found else None

    def grant_of_refresh(self, token_digest: str) -> GrantRecord | None:
        found = self._refresh.get(token_digest)
        return self._doc.grants.get(found) if found else None

    def grant_of_retired_refresh(self, token_digest: str) -> GrantRecord | None:
        found = self._retired.get(token_digest)
        return self._doc.grants.get(found) if found else None

    async def refresh(self) -> None:
        """Catch up with changes made elsewhere (a cluster's other replicas); nothing to do here."""

    def stale(self) -> bool:
        """Whether this copy is due a check against the state of record (never, here)."""
        return False

    # consent requests (PENDING_TTL) and codes (CODE_TTL): short-lived, so in memory
    def park(self, request: Pending) -> None:
        now = self._clock()
        for stale in [p.id for p in self._pending.values() if now - p.created_at > PENDING_TTL]:
            del self._pending[stale]
        while len(self._pending) >= MAX_PENDING:
            del self._pending[next(iter(self._pending))]  # the oldest (dicts keep insertion order)
        self._pending[request.id] = request

    def pending(self, request_id: str) -> Pending | None:
        found = self._pending.get(request_id)
        if found is None or self._clock() - found.created_at > PENDING_TTL:
            self._pending.pop(request_id, None)
            return None
        return found

    def update_pending(self, request: Pending) -> None:
        """Keep a change to ``request`` (its failure count): here it is the object held."""

    def drop_pending(self, request_id: str) -> bool:
        """Forget the request: True if this call did (it was still waiting)."""
        return self._pending.pop(request_id, None) is not None

    def put_code(self, code_digest: str, code: Code) -> None:
        now = self._clock()
        for stale in [d for d, c in self._codes.items() if c.code.expires_at + CODE_TTL < now]:
            del self._codes[stale]
        self._codes[code_digest] = IssuedCode(code)

    def code(self, code_digest: str) -> IssuedCode | None:
        return self._codes.get(code_digest)

    def use_code(self, code_digest: str) -> bool:
        """Mark the code used: True for its one use, False if it was used already (or is unknown)."""
        issued = self._codes.get(code_digest)
        if issued is None or issued.used:
            return False
        issued.used = True
        return True

    def bind_code(self, code_digest: str, grant_id: str) -> None:
        """The grant a used code produced: a replay of the code revokes it."""
        issued = self._codes.get(code_digest)
        if issued is not None:
            issued.grant_id = grant_id
