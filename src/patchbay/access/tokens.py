"""Static bearer tokens: the ``auth.tokens`` config key, and the live table the gate checks them against.

An entry is a plain string (an admin token, as before roles existed) or an object naming who holds it::

    {"name": "ci", "token": "${CI_TOKEN}", "role": "user", "profile": "coding"}
    {"name": "wall", "tokenSha256": "<64 hex digits>", "role": "viewer"}

Tokens are kept only as SHA-256 digests and compared with ``hmac.compare_digest`` against every entry
(constant time, no early exit), so a ``tokenSha256`` entry needs nothing else: tokens created through the
API are stored that way and never written in clear. The table is replaced whole on a change (API, CLI or
config reload), so a request sees either the old set or the new one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from patchbay.config import HubConfig, error_message, expand, field_path, placeholder_env
from patchbay.errors import ConfigError, PatchbayError
from patchbay.identity import ROLES, Identity, Role

log = logging.getLogger(__name__)

TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_AUTO_NAME = re.compile(r"^token-\d+$")  # what an unnamed (plain string) token is called
Source = Literal["config", "command line"]


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    """A fresh bearer token: 256 bits from the OS's CSPRNG, URL-safe."""
    return "pb_" + secrets.token_urlsafe(32)


class TokenEntry(BaseModel):
    """One object entry of ``auth.tokens``."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, never silently ignored

    name: str = Field(pattern=TOKEN_NAME_RE.pattern)
    token: str | None = None
    token_sha256: str | None = Field(default=None, alias="tokenSha256", pattern=r"^[0-9a-f]{64}$")
    role: Role
    profile: str | None = None


@dataclass(frozen=True, slots=True)
class StaticToken:
    """A token the gate accepts: its SHA-256 and who holds it. ``source`` says where it was given (only
    config tokens can be removed at runtime)."""

    sha256: bytes
    identity: Identity
    source: Source = "config"

    def to_json(self) -> dict[str, Any]:
        """What the API shows: never the token nor its digest."""
        ident = self.identity
        return {"name": ident.name, "role": ident.role, "profile": ident.profile, "source": self.source}


class UnknownTokenError(PatchbayError, KeyError):
    def __init__(self, name: str, known: Sequence[str]) -> None:
        hint = f"; known: {', '.join(known)}" if known else "; no tokens are configured"
        super().__init__(f"unknown token {name!r}{hint}")
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])


class DuplicateTokenError(PatchbayError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a token named {name!r} already exists; remove it first or choose another name")


def is_auto_name(name: str) -> bool:
    """Whether ``name`` is what an unnamed (plain string) token is called."""
    return _AUTO_NAME.fullmatch(name) is not None


def token_entries(config: HubConfig) -> list[Any]:
    """``auth.tokens`` as written (a copy); [] if absent or not a list."""
    auth = config.document.get("auth")
    tokens = auth.get("tokens") if isinstance(auth, dict) else None
    return list(tokens) if isinstance(tokens, list) else []


def set_entries(config: HubConfig, entries: list[Any]) -> None:
    """Replace ``auth.tokens`` with a new document: the old one may be shared with the running config
    until the save succeeds, so it is never changed in place."""
    auth = config.document.get("auth")
    config.document = {
        **config.document,
        "auth": {**(auth if isinstance(auth, dict) else {}), "tokens": entries},
    }


def with_token(config: HubConfig, name: str, role: str, profile: str | None, token: str) -> list[Any]:
    """The entries with a new one for ``token``, stored as its SHA-256; validated like the file."""
    current = token_entries(config)
    entry: dict[str, Any] = {"name": name, "tokenSha256": digest(token).hex(), "role": role}
    if profile is not None:
        entry["profile"] = profile
    if any(isinstance(e, dict) and e.get("name") == name for e in current):
        raise DuplicateTokenError(name)
    parse_entry(entry, f"auth.tokens[{len(current)}]", config.profiles)  # ConfigError names the field
    return [*current, entry]


def without_token(config: HubConfig, name: str) -> list[Any]:
    current = token_entries(config)
    kept = [e for e in current if not (isinstance(e, dict) and e.get("name") == name)]
    if len(kept) == len(current):
        raise UnknownTokenError(name, [e["name"] for e in current if isinstance(e, dict) and "name" in e])
    return kept


def _raw_entries(config: HubConfig) -> list[Any]:
    auth = config.document.get("auth")
    if auth is None:
        return []
    if not isinstance(auth, dict):
        raise ConfigError('auth must be an object, e.g. {"tokens": [...]}', field="auth")
    tokens = auth.get("tokens")
    if tokens is None:
        return []
    if not isinstance(tokens, list):
        raise ConfigError(
            'auth.tokens must be a list of tokens, e.g. ["${PATCHBAY_TOKEN}"] or '
            '[{"name": "ci", "token": "${CI_TOKEN}", "role": "user"}]',
            field="auth.tokens",
        )
    return tokens


def parse_entry(data: Any, at: str, profiles: Iterable[str]) -> TokenEntry | str:
    """Validate one entry (without expanding placeholders); errors name the field, e.g.
    ``auth.tokens[2].role``."""
    if isinstance(data, str):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{at}: expected a token string or an object with name, token (or tokenSha256) and role, "
            f"got {type(data).__name__}",
            field=at,
        )
    try:
        entry = TokenEntry.model_validate(dict(data), strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        fld = field_path(err.get("loc", ()))
        where = f"{at}.{fld}" if fld else at
        if fld == "role":
            roles = ", ".join(reversed(ROLES))
            missing = err.get("type") == "missing"
            why = f"required: one of {roles}" if missing else f"{data['role']!r} is not a role; use {roles}"
        elif fld == "name" and err.get("type") == "string_pattern_mismatch":
            why = f"{data.get('name')!r}: use 1-64 letters, digits, '_', '-' or '.'"
        elif fld == "tokenSha256" and err.get("type") == "string_pattern_mismatch":
            why = "must be the token's SHA-256 as 64 lower-case hex digits"
        else:
            why = error_message(err)
        raise ConfigError(f"{where}: {why}", field=where) from None
    if (entry.token is None) == (entry.token_sha256 is None):
        raise ConfigError(f"{at}: give exactly one of 'token' and 'tokenSha256'", field=f"{at}.token")
    if _AUTO_NAME.fullmatch(entry.name):
        raise ConfigError(
            f"{at}.name: {entry.name!r} is reserved for unnamed tokens; choose another name",
            field=f"{at}.name",
        )
    known = list(profiles)
    if entry.profile is not None and entry.profile not in known:
        hint = f"known: {', '.join(known)}" if known else "no profiles are configured"
        raise ConfigError(f"{at}.profile: unknown profile {entry.profile!r} ({hint})", field=f"{at}.profile")
    return entry


def parse_entries(config: HubConfig) -> list[TokenEntry | str]:
    """Every entry of ``auth.tokens``, validated (names unique, one of token/tokenSha256, a known role
    and profile); placeholders are not expanded here."""
    out: list[TokenEntry | str] = []
    seen: set[str] = set()
    for i, raw in enumerate(_raw_entries(config)):
        at = f"auth.tokens[{i}]"
        entry = parse_entry(raw, at, config.profiles)
        if isinstance(entry, TokenEntry):
            if entry.name in seen:
                raise ConfigError(
                    f"{at}.name: {entry.name!r} is used by another token; names must be unique",
                    field=f"{at}.name",
                )
            seen.add(entry.name)
        out.append(entry)
    return out


def describe_entries(config: HubConfig) -> list[dict[str, Any]]:
    """Who holds each config token (name, role, profile), without expanding placeholders."""
    out: list[dict[str, Any]] = []
    n = 1
    for entry in parse_entries(config):
        if isinstance(entry, str):
            out.append({"name": f"token-{n}", "role": "admin", "profile": None, "source": "config"})
            n += 1
        else:
            out.append({"name": entry.name, "role": entry.role, "profile": entry.profile, "source": "config"})
    return out


def _expand(value: str, env: Mapping[str, str], at: str) -> str:
    try:
        return expand(value, env, server="auth", field=at)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("server 'auth': ", ""), field=at) from None


def config_tokens(config: HubConfig, *, first: int = 1) -> list[StaticToken]:
    """The config's tokens for the gate, placeholders expanded. Plain strings are admin tokens named
    ``token-<n>``, numbered from ``first``; an entry whose token expands to nothing is skipped."""
    env = placeholder_env(config.base_dir)
    out: list[StaticToken] = []
    n = first
    for i, entry in enumerate(parse_entries(config)):
        at = f"auth.tokens[{i}]"
        if isinstance(entry, str):
            value = _expand(entry, env, at)
            if value:
                out.append(StaticToken(digest(value), Identity(f"token-{n}")))
            n += 1
            continue
        identity = Identity(entry.name, entry.role, entry.profile)
        if entry.token_sha256 is not None:
            out.append(StaticToken(bytes.fromhex(entry.token_sha256), identity))
        else:
            value = _expand(entry.token or "", env, f"{at}.token")
            if value:
                out.append(StaticToken(digest(value), identity))
    return out


def validate_auth_tokens(config: HubConfig) -> None:
    """The check ``config check``, serve start-up and a reload run: structure first, then placeholders."""
    config_tokens(config)


def fixed_tokens(tokens: Iterable[str | tuple[str, Identity] | StaticToken]) -> list[StaticToken]:
    """Tokens given outside the config (``--token``, ``PATCHBAY_TOKEN``, the Python API): a plain string
    is an admin named ``token-<n>``."""
    out: list[StaticToken] = []
    for n, entry in enumerate(tokens, 1):
        if isinstance(entry, StaticToken):
            out.append(entry)
        elif isinstance(entry, str):
            if entry:
                out.append(StaticToken(digest(entry), Identity(f"token-{n}"), "command line"))
        else:
            token, identity = entry
            if token:
                out.append(StaticToken(digest(token), identity, "command line"))
    return out


class TokenTable:
    """The static tokens the gate accepts now: fixed ones (command line, environment) plus the config's.

    With ``config`` (a function returning the hub's current config) the config's tokens follow it: a
    change through the API or a reload replaces ``hub.config``, and the next request re-reads
    ``auth.tokens`` once (a reload was validated before it was adopted; should the new tokens still fail
    to expand, the previous set is kept and the problem logged).

    Once any token was configured, authentication stays required even if every token is removed: an
    empty table then refuses everyone rather than opening the hub.
    """

    def __init__(
        self,
        fixed: Iterable[str | tuple[str, Identity] | StaticToken] = (),
        *,
        config: Callable[[], HubConfig] | None = None,
    ) -> None:
        self._fixed = tuple(fixed_tokens(fixed))
        self._entries: tuple[StaticToken, ...] = self._fixed
        self._config = config
        self._loaded: HubConfig | None = None
        self._required = bool(self._entries)
        if config is not None:
            self._load(config())  # at start-up a bad entry is an error (ConfigError), not a log line

    def _load(self, config: HubConfig) -> None:
        self._entries = (*self._fixed, *config_tokens(config, first=len(self._fixed) + 1))
        self._loaded = config
        self._required = self._required or bool(self._entries)

    def _sync(self) -> None:
        if self._config is None:
            return
        config = self._config()
        if config is not self._loaded:
            try:
                self._load(config)
            except ConfigError as exc:
                self._loaded = config  # tried once; the previous tokens stay in force
                log.error("auth.tokens of the new config not adopted, the previous tokens stay: %s", exc)

    @property
    def required(self) -> bool:
        self._sync()
        return self._required

    @property
    def entries(self) -> tuple[StaticToken, ...]:
        self._sync()
        return self._entries

    def identify(self, presented: str) -> Identity | None:
        """The identity of a token in the table, or None; every entry is compared, in constant time."""
        d = digest(presented)
        found: Identity | None = None
        for entry in self.entries:  # no early exit: the time does not depend on which token matched
            if hmac.compare_digest(d, entry.sha256):
                found = entry.identity
        return found

    def find(self, name: str) -> StaticToken | None:
        return next((e for e in self.entries if e.identity.name == name), None)
