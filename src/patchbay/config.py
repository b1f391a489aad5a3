"""Configuration: the servers file users already have, validated, expanded and saved safely.

The file is the one Claude Desktop, Cursor (``mcpServers``) and VS Code (``servers``) write. Patchbay reads
it without changing its shape: on save it keeps the top-level key the user chose, every key it does not
know (top level and per server) and the placeholders as written. A file that does not parse is an error
with line and column, and is never rewritten. Saves are atomic (temp file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from patchbay.errors import ConfigError

log = logging.getLogger(__name__)

SERVER_KEYS = ("mcpServers", "servers")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
Transport = Literal["stdio", "http", "sse"]
# Top-level key: items per page of /mcp listings (``nextCursor``); 0 or absent: one page.
LIST_PAGE_SIZE = "listPageSize"


def _seconds_json(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


# Seconds are floats, written back as the user wrote them: ``"timeout": 5`` stays 5, not 5.0.
Seconds = Annotated[float, PlainSerializer(_seconds_json)]


def _no_nul(value: str) -> str:
    """A NUL byte cannot reach a process (``execve`` strings end at NUL): refuse it at validation, where
    the error can name the field, instead of letting process creation raise later."""
    if "\0" in value:
        raise ValueError("contains a NUL byte, which cannot be passed to a process")
    return value


def _env_name(value: str) -> str:
    """An environment variable name: not empty, no ``=`` (it ends the name) and no NUL."""
    if not value:
        raise ValueError("an environment variable name cannot be empty")
    if "=" in value:
        raise ValueError(f"environment variable name {value!r} contains '=', which ends a name")
    return _no_nul(value)


# Strings that end up in a process's argv, environment or cwd (and, for safety, in URLs and headers).
ProcessStr = Annotated[str, AfterValidator(_no_nul)]
EnvName = Annotated[str, AfterValidator(_env_name)]


TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolOverride(BaseModel):
    """A server's ``tools.<original>`` entry: rename, re-describe, re-annotate or hide one upstream tool.

    Unknown keys are refused (``extra="forbid"``): a typo such as ``"hiden"`` would otherwise silently
    expose a tool the user meant to hide.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = None
    description: str | None = None
    annotations: dict[str, Any] | None = None
    hidden: bool = False

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not TOOL_NAME_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid tool name: use 1-64 letters, digits, '_' or '-'")
        return value

    @field_validator("annotations")
    @classmethod
    def _check_annotations(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            # the SDK's model says which hints exist and their types; from ``mcp_types`` (the same class
            # as ``mcp.types.ToolAnnotations``), which costs a third of the whole SDK's import
            from mcp_types import ToolAnnotations

            ToolAnnotations.model_validate(value)
        return value


class ServerSpec(BaseModel):
    """One server entry as written in the config file (placeholders not yet expanded).

    Unknown keys are kept (``extra="allow"``) so a save never drops what another client wrote.
    """

    # allow_inf_nan=False: ``1e999`` parses as infinity, which strict JSON readers cannot read back.
    model_config = ConfigDict(
        extra="allow", populate_by_name=True, coerce_numbers_to_str=True, allow_inf_nan=False
    )

    type: Transport | None = None
    command: ProcessStr | None = None
    args: list[ProcessStr] = Field(default_factory=list)
    env: dict[EnvName, ProcessStr] = Field(default_factory=dict)
    cwd: ProcessStr | None = None
    url: ProcessStr | None = None
    headers: dict[ProcessStr, ProcessStr] = Field(default_factory=dict)
    proxy: ProcessStr | None = None
    enabled: bool = True
    disabled: bool | None = None
    prefix: str | None = None
    timeout: Seconds | None = Field(default=None, gt=0, description="seconds allowed per call")
    start_timeout: Seconds = Field(default=30.0, gt=0, alias="startTimeout")
    disabled_tools: list[str] = Field(default_factory=list, alias="disabledTools")
    max_restarts: int = Field(default=5, ge=0, alias="maxRestarts")
    tools: dict[str, ToolOverride] = Field(default_factory=dict)
    # "perUser": every downstream identity signs in upstream for itself (patchbay.oauth.per_user)
    credentials: Literal["shared", "perUser"] | None = None

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        kind = info.data.get("type") or ("http" if info.data.get("url") else "stdio")
        if kind == "stdio":
            raise ValueError("only remote servers (http, sse) go through a proxy; remove it or give 'url'")
        if "$" not in value:  # placeholders are checked once expanded, in resolve()
            validate_proxy_url(value, check_installed=False)
        return value

    @model_validator(mode="after")
    def _check_transport(self) -> ServerSpec:
        kind = self.transport
        if kind == "stdio" and not self.command:
            raise ValueError("a stdio server needs 'command' (or give 'url' for a remote server)")
        if kind in ("http", "sse") and not self.url:
            raise ValueError(f"a {kind} server needs 'url'")
        if self.command and self.url:
            raise ValueError("give either 'command' (stdio) or 'url' (remote), not both")
        if self.credentials == "perUser":
            oauth = (self.model_extra or {}).get("oauth")
            if kind not in ("http", "sse"):
                raise ValueError(
                    "credentials 'perUser' is for remote servers (http, sse) that sign in with OAuth"
                )
            if isinstance(oauth, dict) and oauth.get("grant") == "client_credentials":
                raise ValueError(
                    "credentials 'perUser' needs people signing in: not oauth.grant client_credentials"
                )
            if any(k.lower() == "authorization" for k in self.headers):
                raise ValueError("credentials 'perUser' cannot be used with a static Authorization header")
        return self

    @property
    def transport(self) -> Transport:
        if self.type is not None:
            return self.type
        return "http" if self.url else "stdio"

    @property
    def is_enabled(self) -> bool:
        return self.enabled and not self.disabled

    def with_enabled(self, enabled: bool) -> ServerSpec:
        """A copy switched on or off, written in the style (``enabled`` or ``disabled``) the user used."""
        copy = self.model_copy(deep=True)
        if "disabled" in self.model_fields_set:
            copy.disabled = not enabled
            if "enabled" in self.model_fields_set:
                copy.enabled = True if enabled else copy.enabled
        else:
            copy.enabled = enabled
        return copy

    def to_json(self) -> dict[str, Any]:
        """The entry as it goes back to disk: only what was set, camelCase, placeholders intact."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


class AgentSpec(BaseModel):
    """A remote agent the hub accepts (top-level ``agents``): it proves who it is with this token.

    ``token`` may use placeholders (``${LAPTOP_TOKEN}``); tokens added through the API are stored only
    as ``tokenSha256``, so the file never holds them in clear.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True, allow_inf_nan=False)

    token: str | None = None
    token_sha256: str | None = Field(default=None, alias="tokenSha256", pattern=r"^[0-9a-f]{64}$")
    timeout: Seconds | None = Field(default=None, gt=0, description="seconds allowed per call")
    max_in_flight: int = Field(default=64, ge=1, alias="maxInFlight")

    @model_validator(mode="after")
    def _check_token(self) -> AgentSpec:
        if not self.token and not self.token_sha256:
            raise ValueError("an agent needs 'token' (or 'tokenSha256')")
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


PROFILE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ProfileSpec(BaseModel):
    """A named view of the catalog (top-level ``profiles``), served at ``/mcp/<name>``.

    A tool is in the profile if its source (server or agent) is in ``servers`` (any, if absent), it matches
    one of the ``tools`` glob patterns over exposed names (any, if there is none) and no ``!`` pattern.
    Unknown keys are refused: a misspelt ``"tool"`` would otherwise silently widen the view.
    """

    model_config = ConfigDict(extra="forbid")

    servers: list[str] | None = None
    tools: list[str] | None = None
    # "search": the profile lists the meta-tools search_tools and call_tool instead (see discovery.py)
    discovery: Literal["full", "search"] | None = None

    @field_validator("tools")
    @classmethod
    def _check_patterns(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or ():
            if not pattern.removeprefix("!"):
                raise ValueError(f"{pattern!r} is not a pattern: write a glob such as 'github__*'")
        return value

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


def parse_profile_spec(name: str, data: Any) -> ProfileSpec:
    """Validate one ``profiles`` entry; errors name the profile and the field."""
    if not isinstance(name, str) or not PROFILE_NAME_RE.fullmatch(name):
        raise ConfigError(f"invalid profile name {name!r}: use 1-64 letters, digits, '_' or '-'")
    if isinstance(data, ProfileSpec):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"profile {name!r}: expected an object, got {type(data).__name__}")
    try:
        return ProfileSpec.model_validate(dict(data), strict=True)
    except ValidationError as exc:
        raise ConfigError(_describe_validation("profile", name, exc), field=_first_field(exc)) from None


def profile_warnings(config: HubConfig) -> list[str]:
    """Profiles naming servers the config does not have: not errors (servers come and go), but likely
    typos, so ``config check`` shows them."""
    known = set(config.servers) | set(config.agents)
    out = []
    for name, spec in config.profiles.items():
        for server in spec.servers or ():
            if server not in known:
                out.append(f"profile {name!r}: servers: {server!r} is not a configured server or agent")
    return out


def parse_agent_spec(name: str, data: Any) -> AgentSpec:
    """Validate one ``agents`` entry; errors name the agent and the field."""
    return _parse_entry("agent", name, data, AgentSpec)


def validate_server_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ConfigError(
            f"invalid server name {name!r}: use 1-64 letters, digits, '_', '-' or '.'", server=str(name)
        )


def parse_server_spec(name: str, data: Any) -> ServerSpec:
    """Validate one server entry; errors name the server and the field."""
    return _parse_entry("server", name, data, ServerSpec)


_Entry = TypeVar("_Entry", ServerSpec, AgentSpec)


def _parse_entry(kind: str, name: str, data: Any, model: type[_Entry]) -> _Entry:
    validate_server_name(name)
    if isinstance(data, model):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{kind} {name!r}: expected an object, got {type(data).__name__}", server=name)
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(
            _describe_validation(kind, name, exc), server=name, field=_first_field(exc)
        ) from None


def field_path(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """A pydantic error location as the field a user edits: ``args[2]``, ``env.TOKEN``, ``startTimeout``
    (a dict key's own error, pydantic's ``[key]``, names the entry: ``env.A=B``)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("[key]", ""):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def error_message(err: Mapping[str, Any]) -> str:
    """pydantic's message without its ``Value error, `` prefix."""
    return str(err["msg"]).removeprefix("Value error, ")


def _first_field(exc: ValidationError) -> str | None:
    errs = exc.errors()
    return field_path(errs[0]["loc"]) or None if errs else None


def _describe_validation(kind: str, name: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = field_path(err["loc"])
        lines.append(f"{kind} {name!r}: {loc + ': ' if loc else ''}{error_message(err)}")
    return "\n".join(lines)


@dataclass
class HubConfig:
    """A parsed config document: the servers in file order plus everything else it held."""

    servers: dict[str, ServerSpec] = field(default_factory=dict)
    servers_key: str = "mcpServers"
    document: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    source_bytes: bytes | None = None  # the file as last read or written, to tell our saves from edits
    agents: dict[str, AgentSpec] = field(default_factory=dict)
    profiles: dict[str, ProfileSpec] = field(default_factory=dict)

    def to_document(self) -> dict[str, Any]:
        doc = dict(self.document)
        doc[self.servers_key] = {name: spec.to_json() for name, spec in self.servers.items()}
        if self.agents or "agents" in doc:
            doc["agents"] = {name: spec.to_json() for name, spec in self.agents.items()}
        if self.profiles or "profiles" in doc:
            doc["profiles"] = {name: spec.to_json() for name, spec in self.profiles.items()}
        return doc

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


def parse_config(text: str, source: str = "<config>", path: Path | None = None) -> HubConfig:
    """Parse and validate a whole document; every problem is reported, not just the first."""
    duplicates: list[str] = []

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                duplicates.append(key)
            obj[key] = value
        return obj

    try:
        doc = loads_strict(text, object_pairs_hook=no_duplicates) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    if duplicates:
        raise ConfigError(
            f"{source}: key {duplicates[0]!r} appears twice in the same object; JSON keeps only the last "
            "one, so remove or rename the other"
        )
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object, got {type(doc).__name__}")
    present = [k for k in SERVER_KEYS if k in doc]
    if len(present) > 1:
        raise ConfigError(f"{source}: has both 'mcpServers' and 'servers'; keep one of them")
    key = present[0] if present else "mcpServers"
    raw = doc.get(key, {})
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{key}' must be an object mapping server names to their settings")
    servers: dict[str, ServerSpec] = {}
    problems: list[str] = []
    for name, entry in raw.items():
        try:
            servers[name] = parse_server_spec(name, entry)
        except ConfigError as exc:
            problems.append(str(exc))
    agents: dict[str, AgentSpec] = {}
    raw_agents = doc.get("agents") or {}
    if not isinstance(raw_agents, dict):
        problems.append("'agents' must be an object mapping agent names to their settings")
        raw_agents = {}
    for name, entry in raw_agents.items():
        try:
            agents[name] = parse_agent_spec(name, entry)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if name in servers:
            problems.append(f"agent {name!r}: a server has the same name; agent and server names must differ")
    profiles: dict[str, ProfileSpec] = {}
    raw_profiles = doc.get("profiles")
    if raw_profiles is None:
        raw_profiles = {}
    if not isinstance(raw_profiles, dict):
        problems.append("'profiles' must be an object mapping profile names to their settings")
        raw_profiles = {}
    for name, entry in raw_profiles.items():
        try:
            profiles[name] = parse_profile_spec(name, entry)
        except ConfigError as exc:
            problems.append(str(exc))
    try:
        list_page_size(doc)
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        from patchbay.semantic import search_mode  # light: numpy & co. load only when search runs

        search_mode(doc)
    except ConfigError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(problems))
    return HubConfig(
        servers=servers, servers_key=key, document=doc, path=path, agents=agents, profiles=profiles
    )


def list_page_size(document: Mapping[str, Any]) -> int:
    """The ``listPageSize`` of a config document (kept as an unknown top-level key): 0 for no pagination.

    Absent means 0 on purpose: a client that does not follow ``nextCursor`` (the SDKs' ``list_tools()``
    returns one page; the loop is the caller's) would silently miss every tool past the first page."""
    value = document.get(LIST_PAGE_SIZE)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise ConfigError(
            f"{LIST_PAGE_SIZE}: {value!r} is not a page size; use a whole number of items per page "
            "(0 for every item in one answer)",
            field=LIST_PAGE_SIZE,
        )
    return value


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text)
    return value


def loads_strict(text: str, **kwargs: Any) -> Any:
    """``json.loads`` refusing what strict JSON readers cannot read: ``NaN``, ``Infinity`` and numbers too
    large for a double (``1e999``, which Python reads as infinity and would write back as ``Infinity``).
    The error is a :class:`json.JSONDecodeError` with the literal's position."""
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, **kwargs)
    except _NonFinite as exc:
        literal = str(exc)
        m = re.search(r"(?<![\w.])-?" + re.escape(literal.lstrip("-")) + r"(?![\w.])", text)
        pos = m.start() if m else 0
        raise json.JSONDecodeError(
            f"{literal} is not a finite number (JSON has no NaN or Infinity; use a smaller value)", text, pos
        ) from None


def load_config(path: str | os.PathLike[str]) -> HubConfig:
    p = Path(path)
    remove_stale_temp_files(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc}") from None
    config = parse_config(text, source=str(p), path=p.resolve())
    config.source_bytes = text.encode("utf-8")
    return config


def save_config(config: HubConfig) -> None:
    """Write atomically: a crash at any point leaves either the old file or the new one, never half."""
    if config.path is None:
        return
    if config.path.resolve() == BUNDLED_CONFIG.resolve():
        raise ConfigError(
            f"{config.path} is patchbay's bundled default config, which is never written; changes go to a "
            "config of your own (./patchbay.json, the per-user file, or --config PATH)"
        )
    try:
        # allow_nan=False: never write NaN/Infinity, which Claude Desktop and VS Code cannot parse.
        text = json.dumps(config.to_document(), indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise ConfigError(f"{config.path}: not saved: {exc} (JSON has no NaN or Infinity)") from None
    data = (text + "\n").encode()
    atomic_write(config.path, data)
    config.source_bytes = data


# The default config shipped in the package: copied to the per-user file on first use, never written.
BUNDLED_CONFIG = Path(__file__).with_name("default_config.json")

# Temp files of an atomic save: ``.<name>.<8 random characters>.tmp`` next to the file (mkstemp's names).
STALE_TEMP_SECONDS = 10.0


def _temp_pattern(path: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")


def remove_stale_temp_files(path: Path, older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove what a save of *this* file left when it crashed between writing its temp file and renaming
    it. Only our own names, only regular files, and only ones not touched for ``older_than`` seconds (a
    save in progress in another process is never that slow to rename)."""
    directory = path.parent
    pattern = _temp_pattern(path)
    removed: list[Path] = []
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return removed
    now = time.time()
    for entry in names:
        if not pattern.fullmatch(entry):
            continue
        tmp = directory / entry
        try:
            st = tmp.lstat()
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < older_than:
                continue
            tmp.unlink()
        except OSError:
            continue
        log.info("removed %s, left by a save that did not finish", tmp)
        removed.append(tmp)
    return removed


def atomic_write(path: Path, data: bytes) -> None:
    directory = path.parent
    remove_stale_temp_files(path)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# --- placeholders -----------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$\$|\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def placeholder_env(config_dir: Path | None = None) -> dict[str, str]:
    """The variables placeholders may use: the process environment plus patchbay's own helpers."""
    env = dict(os.environ)
    env.setdefault("PATCHBAY_PYTHON", sys.executable)
    if config_dir is not None:
        env.setdefault("PATCHBAY_CONFIG_DIR", str(config_dir))
    return env


def expand(value: str, env: Mapping[str, str], *, server: str, field: str) -> str:
    """Expand ``${VAR}``, ``${env:VAR}`` and ``${VAR:-default}``; ``$$`` is a literal ``$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        var, default = m.group(1), m.group(2)
        if var in env:
            return env[var]
        if default is not None:
            return default
        raise ConfigError(
            f"server {server!r}: {field}: environment variable {var!r} is not set "
            f"(set it, or write ${{{var}:-default}})",
            server=server,
            field=field,
        )

    if "$" not in value:
        return value
    return _PLACEHOLDER.sub(sub, value)


@dataclass(frozen=True)
class ResolvedSpec:
    """A server spec with placeholders expanded and paths made absolute: what a transport needs."""

    name: str
    transport: Transport
    command: str | None
    args: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None
    url: str | None
    headers: Mapping[str, str]
    proxy: str | None = None


def resolve(name: str, spec: ServerSpec, base_dir: Path | None = None) -> ResolvedSpec:
    env = placeholder_env(base_dir)

    def x(value: str, fld: str) -> str:
        out = expand(value, env, server=name, field=fld)
        if "\0" in out:  # a variable's value may hold what the file could not
            raise ConfigError(
                f"server {name!r}: {fld}: contains a NUL byte after expanding placeholders, which cannot "
                "be passed to a process",
                server=name,
                field=fld,
            )
        return out

    cwd = x(spec.cwd, "cwd") if spec.cwd else None
    if cwd and base_dir and not os.path.isabs(cwd):
        cwd = str((base_dir / cwd).resolve())
    return ResolvedSpec(
        name=name,
        transport=spec.transport,
        command=x(spec.command, "command") if spec.command else None,
        args=tuple(x(a, f"args[{i}]") for i, a in enumerate(spec.args)),
        env={k: x(v, f"env.{k}") for k, v in spec.env.items()},
        cwd=cwd,
        url=x(spec.url, "url") if spec.url else None,
        headers={k: x(v, f"headers.{k}") for k, v in spec.headers.items()},
        proxy=check_proxy(name, x(spec.proxy, "proxy")) if spec.proxy else None,
    )


# --- proxies ----------------------------------------------------------------------------------------

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")  # what httpx2 speaks (SOCKS with socksio installed)


def validate_proxy_url(value: str, *, check_installed: bool = True) -> None:
    """Raise ValueError saying what is wrong with a proxy URL, if anything (passwords never shown)."""
    try:
        parts = urlsplit(value)
        host, _ = parts.hostname, parts.port
    except ValueError:
        parts, host = None, None
    shown = redact_url(value)
    if parts is None or parts.scheme not in PROXY_SCHEMES or not host:
        raise ValueError(
            f"{shown!r} is not a proxy URL; write http://host:port "
            f"(schemes: {', '.join(s + '://' for s in PROXY_SCHEMES)})"
        )
    if check_installed and parts.scheme.startswith("socks") and importlib.util.find_spec("socksio") is None:
        raise ValueError(f"{shown!r} is a SOCKS proxy: install the 'socksio' package for it")


def check_proxy(server: str, value: str, *, field: str = "proxy") -> str:
    """The proxy URL, or a ConfigError naming the server and the field (or variable) it came from."""
    try:
        validate_proxy_url(value)
    except ValueError as exc:
        raise ConfigError(f"server {server!r}: {field}: {exc}", server=server, field=field) from None
    return value


def redact_url(url: str) -> str:
    """The URL with its password (if any) masked, for messages and logs."""
    head, sep, tail = url.rpartition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, userinfo = head.partition("://")
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{tail}" if ":" in userinfo else url
