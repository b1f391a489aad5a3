"""Tokens and client registrations at rest: one encrypted file per server, one record per issuer inside.

Encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``); the key lives in the OS keyring
when the optional ``keyring`` package finds a real backend, else in a key file readable only by the user.
The files are in the user's data directory (``$XDG_DATA_HOME/patchbay/oauth``, by default
``~/.local/share/patchbay/oauth``), never in the config file. Nothing here logs a token.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import BaseModel, ValidationError

from patchbay.config import atomic_write

log = logging.getLogger(__name__)

KEYRING_SERVICE = "patchbay"
KEYRING_USER = "oauth-token-store"


class TokenRecord(BaseModel):
    """What patchbay holds for one server at one authorization server (issuer)."""

    issuer: str
    resource: str
    client: OAuthClientInformationFull | None = None
    tokens: OAuthToken | None = None
    expires_at: float | None = None  # epoch seconds the access token expires at
    grant: str = "authorization_code"
    updated_at: float = 0.0

    def __repr__(self) -> str:  # never print tokens or secrets
        return f"TokenRecord(issuer={self.issuer!r}, resource={self.resource!r}, signed_in={self.signed_in})"

    __str__ = __repr__

    @property
    def signed_in(self) -> bool:
        return self.tokens is not None

    @property
    def scope(self) -> str | None:
        return self.tokens.scope if self.tokens is not None else None


def default_directory() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "patchbay" / "oauth"


def _keyring_key() -> bytes | None:
    """The key from the OS keyring (created there on first use), or None without a usable backend."""
    try:
        import keyring  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    try:
        # The fail and null backends (no desktop keyring, e.g. a headless server) have priority <= 0.
        if float(getattr(keyring.get_keyring(), "priority", 0)) <= 0:
            return None
        value = keyring.get_password(KEYRING_SERVICE, KEYRING_USER)
        if value is None:
            value = Fernet.generate_key().decode()
            keyring.set_password(KEYRING_SERVICE, KEYRING_USER, value)
        return str(value).encode()
    except Exception as exc:  # a locked or broken keyring: fall back to the key file
        log.debug("OS keyring unusable (%s); using the key file", type(exc).__name__)
        return None


def _file_key(directory: Path) -> bytes:
    """The key file (mode 0600) in ``directory``, created atomically on first use."""
    path = directory / "key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    return key


class TokenStore:
    """Encrypted records per server and issuer. ``directory`` and ``key`` are for tests and embedding."""

    def __init__(self, directory: Path | None = None, *, key: bytes | None = None, use_keyring: bool = True):
        self.directory = directory or default_directory()
        self._key = key
        self._use_keyring = use_keyring
        self._fernet: Fernet | None = None

    def _cipher(self) -> Fernet:
        if self._fernet is None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(OSError):
                os.chmod(self.directory, 0o700)
            key = self._key or (_keyring_key() if self._use_keyring else None) or _file_key(self.directory)
            self._fernet = Fernet(key)
        return self._fernet

    def _path(self, server: str) -> Path:
        return self.directory / f"server-{server}.tokens"

    # Where the encrypted blobs live: a file per server here, Redis in cluster mode (cluster/oauth_store.py).
    def _load_blob(self, server: str) -> bytes | None:
        try:
            return self._path(server).read_bytes()
        except FileNotFoundError:
            return None

    def _store_blob(self, server: str, blob: bytes | None) -> None:
        if blob is None:
            with contextlib.suppress(FileNotFoundError):
                self._path(server).unlink()
        else:
            atomic_write(self._path(server), blob)

    def fresh(self, server: str) -> None:
        """Make the next read of ``server``'s records come from where they live (files: always so)."""

    def names(self, prefix: str) -> list[str]:
        """The names with stored records that start with ``prefix`` (a server's per-user records)."""
        return [
            p.name.removeprefix("server-").removesuffix(".tokens")
            for p in self.directory.glob(f"server-{glob.escape(prefix)}*.tokens")
        ]

    def refresh_lock(self, server: str) -> contextlib.AbstractAsyncContextManager[Any]:
        """Held while ``server``'s tokens are refreshed; one process needs none beyond the client's own."""
        return contextlib.nullcontext()

    def _read(self, server: str) -> dict[str, Any]:
        blob = self._load_blob(server)
        if blob is None:
            return {}
        try:
            data = json.loads(self._cipher().decrypt(blob))
        except (InvalidToken, ValueError):
            log.warning("server %r: stored OAuth tokens could not be decrypted; sign in again", server)
            return {}
        return data if isinstance(data, dict) else {}

    def records(self, server: str) -> list[TokenRecord]:
        """Every record of ``server``, the most recently updated first."""
        out = []
        for raw in self._read(server).values():
            try:
                out.append(TokenRecord.model_validate(raw))
            except ValidationError:
                continue
        return sorted(out, key=lambda r: r.updated_at, reverse=True)

    def get(self, server: str, issuer: str | None = None) -> TokenRecord | None:
        """The record for ``issuer``, or (no issuer given) the most recent one."""
        for record in self.records(server):
            if issuer is None or record.issuer == issuer:
                return record
        return None

    def save(self, server: str, record: TokenRecord) -> None:
        data = self._read(server)
        record.updated_at = time.time()
        data[record.issuer] = record.model_dump(mode="json", exclude_none=True)
        self._store_blob(server, self._cipher().encrypt(json.dumps(data).encode()))

    def delete(self, server: str, issuer: str | None = None) -> list[TokenRecord]:
        """Forget ``server``'s records (one issuer's, or all); returns what was removed."""
        records = self.records(server)
        removed = [r for r in records if issuer is None or r.issuer == issuer]
        kept = [r for r in records if r not in removed]
        if not kept:
            self._store_blob(server, None)
        else:
            data = {r.issuer: r.model_dump(mode="json", exclude_none=True) for r in kept}
            self._store_blob(server, self._cipher().encrypt(json.dumps(data).encode()))
        return removed
