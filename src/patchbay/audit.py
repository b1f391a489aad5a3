"""The audit log: who did what, when, through which client, and how it went. JSON lines, rotated by size.

Recorded: every tool call, resource read and prompt get (``event``: ``tool_call``, ``resource_read``,
``prompt_get``), every management change (``change``: through the API, the CLI, the Python API or a
config reload), every mutating request to the REST API (``api``), every sign-in (``sign_in``) and every
refused request (``refused``: a missing or bad token, a role that is not enough, a foreign Host or Origin).

Each record has the time, the identity (name, role, profile, kind), the client (name and version from the
MCP ``initialize``, and the surface: ``mcp``, ``rest`` or ``python``), the tool (or URI, prompt) and server,
the duration, the outcome (``ok``, ``tool_error`` for an error result, or the error's kind such as
``timeout`` or ``rate_limited``), and the SHA-256 of the arguments as canonical JSON (sorted keys, no
spaces, UTF-8), so two calls with the same arguments can be matched without storing them. The arguments
themselves are written only with ``"audit": {"arguments": true}``, and even then values under keys that
name a secret (``token``, ``password``, ``authorization``, ...) are written as ``***``. Tokens, error
messages (which may quote arguments) and headers are never written.

Why a queue and a thread: the call path only appends a tuple to a deque (~0.1 µs); formatting, hashing
and writing happen on a background thread, in batches, a few times a second. A call never waits for the
disk, and a disk that fails makes the log complain in the hub's log, never a call fail.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from patchbay.errors import ConfigError, PatchbayError
from patchbay.identity import LOCAL, SCOPE_KEY, Identity

log = logging.getLogger(__name__)

KEY = "audit"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5
FLUSH_INTERVAL = 0.2  # seconds between batches when nobody asks for a flush
YIELD_EVERY = 32  # records formatted between two GIL releases (~0.2 ms of work)
MAX_QUERY_LIMIT = 10_000  # records one GET /api/audit may return
MAX_PENDING = 100_000  # records waiting for the writer; beyond this they are counted as dropped
SECRET_KEY = re.compile(r"token|secret|passw|authorization|api[-_]?key|cookie|credential|private", re.I)
_T = TypeVar("_T")

# Who is making a management change, for the records of runtime.py (the API sets it per request).
ACTING: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("patchbay_acting", default=None)


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """The downstream client of a request: what it said in ``initialize`` (``clientInfo``) and the surface."""

    name: str | None = None
    version: str | None = None
    surface: str = "python"


PYTHON_CLIENT = ClientInfo()


@dataclass(frozen=True)
class AuditSettings:
    path: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS
    arguments: bool = False


def default_path(config_path: Path) -> Path:
    """``patchbay.json`` → ``patchbay.audit.jsonl`` beside it."""
    return config_path.with_name(f"{config_path.stem}.audit.jsonl")


def parse_audit(document: Mapping[str, Any], config_path: Path | None) -> AuditSettings | None:
    """The config's ``audit`` (``ConfigError`` names the field); None when the log is off.

    On by default for a hub over a config file (the log goes beside it); ``"audit": false`` turns it
    off. A hub without a file (``Hub.from_dict``) logs only when ``audit.path`` is given."""
    raw = document.get(KEY, True)
    if raw is False or raw is None:
        return None
    if raw is True:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f'{KEY}: expected true, false or an object such as {{"maxBytes": 10485760}}, got '
            f"{type(raw).__name__}",
            field=KEY,
        )
    unknown = sorted(set(raw) - {"enabled", "path", "maxBytes", "backups", "arguments"})
    if unknown:
        raise ConfigError(
            f"{KEY}.{unknown[0]}: unknown key; {KEY} takes enabled, path, maxBytes, backups and arguments",
            field=f"{KEY}.{unknown[0]}",
        )
    for key in ("enabled", "arguments"):
        if key in raw and not isinstance(raw[key], bool):
            raise ConfigError(f"{KEY}.{key}: expected true or false", field=f"{KEY}.{key}")
    if raw.get("enabled") is False:
        return None
    max_bytes = raw.get("maxBytes", DEFAULT_MAX_BYTES)
    if type(max_bytes) is not int or max_bytes < 4096:
        raise ConfigError(
            f"{KEY}.maxBytes: expected a whole number of bytes of at least 4096, got {max_bytes!r}",
            field=f"{KEY}.maxBytes",
        )
    backups = raw.get("backups", DEFAULT_BACKUPS)
    if type(backups) is not int or not 0 <= backups <= 1000:
        raise ConfigError(
            f"{KEY}.backups: expected a whole number from 0 to 1000, got {backups!r}", field=f"{KEY}.backups"
        )
    where = raw.get("path")
    if where is not None and (not isinstance(where, str) or not where.strip()):
        raise ConfigError(f"{KEY}.path: expected a file path", field=f"{KEY}.path")
    if where is None:
        if config_path is None:
            return None
        path = default_path(config_path)
    else:
        path = Path(where).expanduser()
        if not path.is_absolute():
            path = (config_path.parent if config_path else Path.cwd()) / path
    return AuditSettings(path, max_bytes, backups, bool(raw.get("arguments", False)))


# --- formatting (on the writer thread) -------------------------------------------------------------


# One encoder each, built once: ``json.dumps`` with options builds a new encoder on every call, and the
# writer formats a record per call made through the hub (an agent's hub too).
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode
_record = json.JSONEncoder(ensure_ascii=False, default=str).encode


def canonical_json(value: Any) -> str:
    return _canonical(value)


def digest(arguments: Any) -> str:
    """SHA-256 (hex) of the arguments as canonical JSON; ``{}`` for none."""
    return hashlib.sha256(canonical_json(arguments or {}).encode("utf-8", "surrogatepass")).hexdigest()


def redact(value: Any) -> Any:
    """The arguments with every value under a secret-looking key replaced by ``***``."""
    if isinstance(value, Mapping):
        return {k: "***" if SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text (the writer's cache)


def iso(ts: float) -> str:
    """``2026-12-02T00:01:05.071589Z``: the same text as ``datetime.fromtimestamp(ts, UTC).isoformat()``
    (microseconds rounded half to even), with the date and time formatted once per second."""
    global _second
    whole = math.floor(ts)
    us = round((ts - whole) * 1e6)
    if us >= 1_000_000:
        whole, us = whole + 1, us - 1_000_000
    second, prefix = _second
    if second != whole:
        prefix = dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (whole, prefix)
    return f"{prefix}.{us:06d}Z"


def identity_fields(identity: Identity | None) -> dict[str, Any]:
    who = identity or LOCAL
    out: dict[str, Any] = {"identity": who.name, "role": who.role, "kind": who.kind}
    if who.profile is not None:
        out["profile"] = who.profile
    if who.client_id is not None:
        out["client_id"] = who.client_id
    return out


def client_fields(client: ClientInfo | None) -> dict[str, Any]:
    c = client or PYTHON_CLIENT
    return {"client": {"name": c.name, "version": c.version}, "surface": c.surface}


# --- the log -----------------------------------------------------------------------------------------


class AuditLog:
    """One hub's audit log. ``active`` is False when the config turns it off (then nothing is queued)."""

    def __init__(self, settings: AuditSettings | None = None) -> None:
        self.settings: AuditSettings | None = None
        self.active = False
        self.arguments = False
        self.dropped = 0
        self._queue: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._file: Any = None
        self._size = 0
        self._seq = 0
        self._reported_drops = 0
        self._failing = False
        self._shared: Any = None  # cluster mode: cluster/audit.py's SharedAudit
        self.origin: str | None = None  # cluster mode: the replica id, in every record
        self.configure(settings)

    def share(self, shared: Any) -> None:
        """Cluster mode: also append every record to the cluster's stream, and read queries from it."""
        self._shared = shared
        self.origin = shared.replica

    def read(self, query: AuditQuery) -> tuple[list[dict[str, Any]], str]:
        """The records matching ``query`` and where they come from: ``cluster`` (every replica's, from
        the shared stream) or ``replica`` (this hub's files: no cluster, or Redis unreachable)."""
        shared = self._shared
        if shared is not None:
            from redis.exceptions import RedisError

            try:
                return shared.read(query), "cluster"
            except RedisError as exc:
                log.warning("audit: Redis is unreachable (%s); answering from this replica's file", exc)
        return read_records(self.files(), query), "replica"

    # --- settings and lifecycle ----------------------------------------------------------------------

    def configure(self, settings: AuditSettings | None) -> None:
        """Adopt new settings (a reload): what is queued is written with the old ones first."""
        if settings == self.settings:
            return
        if self._thread is not None:
            self.close()
        self.settings = settings
        self.arguments = bool(settings and settings.arguments)
        self.open()

    def open(self) -> None:
        """Start the writer (again, after ``close``: a hub that is started twice keeps its log)."""
        if self.settings is None or self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="patchbay-audit", daemon=True)
        self._thread.start()
        self.active = True

    def close(self) -> None:
        """Write what is queued, then stop the writer (blocking; ``aclose`` from the event loop)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        thread.join(10)
        self._thread = None
        self.active = False

    async def aclose(self) -> None:
        import asyncio  # here, not at the top: ``config check`` reads the settings without an event loop

        await asyncio.to_thread(self.close)

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until everything queued so far is written; False if the writer did not get there in time."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.append(("flush", done))
        self._wake.set()
        return done.wait(timeout)

    async def aflush(self) -> bool:
        import asyncio

        return await asyncio.to_thread(self.flush)

    # --- recording (the event loop's side: append a tuple, nothing more) ----------------------------

    def _put(self, item: tuple[Any, ...]) -> None:
        if len(self._queue) < MAX_PENDING:
            self._queue.append(item)
        else:
            self.dropped += 1

    def call(
        self,
        event: str,
        caller: Identity | None,
        client: ClientInfo | None,
        target: str,
        server: str | None,
        started: float,
        seconds: float,
        outcome: str,
        arguments: Any = None,
    ) -> None:
        """A tool call, resource read or prompt get (``started``: ``time.time()`` at its start)."""
        if self.active:
            self._put(("call", event, caller, client, target, server, started, seconds, outcome, arguments))

    def record(self, event: str, **fields: Any) -> None:
        """Any other record (``change``, ``api``, ``sign_in``, ``refused``, or a new kind of a
        surface's own): the fields are written as given, after the time and event. Never pass secrets."""
        if self.active:
            self._put(("record", event, time.time(), fields))

    def refused(self, scope: Mapping[str, Any], status: int, message: str) -> None:
        """The HTTP gate refused a request (its hook); the message never contains the token."""
        if not self.active:
            return
        client = scope.get("client")
        who = scope.get(SCOPE_KEY)  # set when the role gate refuses an authenticated caller
        self.record(
            "refused",
            **(identity_fields(who) if isinstance(who, Identity) else {}),
            method=scope.get("method", "WS"),
            path=scope.get("path"),
            status=status,
            detail=message,
            address=client[0] if client else None,
        )

    async def change(self, action: str, target: str | None, work: Awaitable[_T], **detail: Any) -> _T:
        """Run a management change and record who made it (``ACTING``, else ``LOCAL``) and how it went."""
        if not self.active:
            return await work
        import asyncio

        t0 = time.perf_counter()
        outcome = "error"
        try:
            result = await work
            outcome = "ok"
            return result
        except PatchbayError as exc:
            from patchbay import replies  # replies imports the SDK; the log must not need it at import

            outcome = replies.error_kind(exc).name
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            fields: dict[str, Any] = {
                **identity_fields(ACTING.get()),
                "action": action,
                "target": target,
                "duration_ms": round((time.perf_counter() - t0) * 1000, 3),
                "outcome": outcome,
            }
            fields.update({k: v for k, v in detail.items() if v is not None})
            self._put(("record", "change", time.time(), fields))

    # --- the writer thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            stopping = self._stopping
            self._drain()
            if stopping and not self._queue:
                break
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def _drain(self) -> None:
        lines: list[bytes] = []
        waiting: list[threading.Event] = []
        queue = self._queue
        formatted = 0
        while queue:
            item = queue.popleft()
            formatted += 1
            if formatted % YIELD_EVERY == 0:
                time.sleep(0)  # let the event loop have the GIL: a big batch never stalls a call
            if item[0] == "flush":
                waiting.append(item[1])
                continue
            try:
                lines.append(self._format(item))
            except Exception:  # a record that cannot be written must not stop the others
                log.exception("audit: could not format a %s record", item[1])
        if self.dropped > self._reported_drops:
            count, self._reported_drops = self.dropped - self._reported_drops, self.dropped
            lines.append(self._line({"time": iso(time.time()), "event": "audit_dropped", "count": count}))
        if lines:
            self._write(lines)
        if self._shared is not None and (lines or self._shared.backlogged):
            self._shared.sink(lines)
        for done in waiting:
            done.set()

    def _line(self, record: dict[str, Any]) -> bytes:
        self._seq += 1
        record["seq"] = self._seq
        if self.origin is not None:
            record["replica"] = self.origin
        return (_record(record) + "\n").encode("utf-8", "surrogatepass")

    def _format(self, item: tuple[Any, ...]) -> bytes:
        if item[0] == "record":
            _, event, started, fields = item
            return self._line({"time": iso(started), "event": event, **fields})
        _, event, caller, client, target, server, started, seconds, outcome, arguments = item
        # the time a record is made (the call's end), so the file is in time order
        record: dict[str, Any] = {"time": iso(started + seconds), "event": event, **identity_fields(caller)}
        record.update(client_fields(client))
        record["tool" if event == "tool_call" else "target"] = target
        record["server"] = server
        record["duration_ms"] = round(seconds * 1000, 3)
        record["outcome"] = outcome
        if event != "resource_read":
            try:
                record["arguments_sha256"] = digest(arguments)
            except (RuntimeError, ValueError):  # mutated by the caller while we read it, or circular
                record["arguments_sha256"] = None
            if self.arguments:
                record["arguments"] = redact(arguments or {})
        return self._line(record)

    def _write(self, lines: list[bytes]) -> None:
        settings = self.settings
        if settings is None:
            return
        try:
            if self._file is None:
                settings.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(settings.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._file = os.fdopen(fd, "ab", buffering=0)
                self._size = os.fstat(fd).st_size
            data = b"".join(lines)
            if self._size and self._size + len(data) > settings.max_bytes:
                self._rotate(settings)
            self._file.write(data)
            self._size += len(data)
            if self._failing:
                self._failing = False
                log.warning("audit: writing to %s again", settings.path)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.error(
                    "audit: cannot write to %s: %s (records are lost until it works)", settings.path, exc
                )
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None

    def _rotate(self, settings: AuditSettings) -> None:
        """``log`` → ``log.1`` → ``log.2`` … (the oldest beyond ``backups`` is deleted)."""
        self._file.close()
        self._file = None
        path = settings.path
        if settings.backups == 0:
            path.unlink(missing_ok=True)
        else:
            for n in range(settings.backups, 0, -1):
                older = path.with_name(f"{path.name}.{n}")
                newer = path if n == 1 else path.with_name(f"{path.name}.{n - 1}")
                if newer.exists():
                    os.replace(newer, older)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "ab", buffering=0)
        self._size = 0

    # --- reading (GET /api/audit, patchbay audit tail) -----------------------------------------------

    def files(self) -> list[Path]:
        """The log and its backups, newest first."""
        return audit_files(self.settings) if self.settings else []


def audit_files(settings: AuditSettings) -> list[Path]:
    path = settings.path
    return [path, *(path.with_name(f"{path.name}.{n}") for n in range(1, settings.backups + 1))]


# --- queries -----------------------------------------------------------------------------------------

_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d)$")
_AGO_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_time(value: str, field: str, now: float | None = None) -> float:
    """An ISO 8601 time (``2026-12-01T17:00:00Z``; no zone is UTC), epoch seconds, or an age
    (``90s``, ``15m``, ``2h``, ``1d`` ago) → epoch seconds."""
    text = value.strip()
    m = _AGO.match(text)
    if m:
        return (now if now is not None else time.time()) - float(m.group(1)) * _AGO_SECONDS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{field}: {value!r} is not a time; give ISO 8601 (2026-12-01T17:00:00Z), epoch seconds, or an "
            "age such as 15m, 2h or 1d",
            field=field,
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@dataclass(frozen=True)
class AuditQuery:
    since: float | None = None
    until: float | None = None
    identity: str | None = None
    tool: str | None = None
    outcome: str | None = None
    event: str | None = None
    limit: int = 100

    def matches(self, record: Mapping[str, Any], when: float) -> bool:
        if self.since is not None and when <= self.since:
            return False
        if self.until is not None and when > self.until:
            return False
        if self.identity is not None and record.get("identity") != self.identity:
            return False
        if self.tool is not None and record.get("tool") != self.tool:
            return False
        if self.outcome is not None and record.get("outcome") != self.outcome:
            return False
        return self.event is None or record.get("event") == self.event


_SLACK = 5.0  # seconds: records of concurrent writers (threads, processes) may be slightly out of order


def _reverse_lines(path: Path, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """The file's lines, last first, read backwards in chunks (a 10 MB log is not read whole)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        tail = b""
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            block = f.read(end - start) + tail
            end = start
            parts = block.split(b"\n")
            tail = parts[0]
            for line in reversed(parts[1:]):
                if line.strip():
                    yield line
        if tail.strip():
            yield tail


def read_records(files: list[Path], query: AuditQuery) -> list[dict[str, Any]]:
    """The last ``query.limit`` records matching ``query`` across the log and its backups, oldest first."""
    found: list[dict[str, Any]] = []
    for path in files:
        try:
            lines = _reverse_lines(path)
            for raw in lines:
                try:
                    record = json.loads(raw)
                    when = dt.datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00")).timestamp()
                except (ValueError, KeyError, TypeError):
                    continue  # a torn or foreign line
                if query.since is not None and when < query.since - _SLACK:
                    return found[::-1]  # the files are in time order: nothing older can match
                if query.matches(record, when):
                    found.append(record)
                    if len(found) >= query.limit:
                        return found[::-1]
        except FileNotFoundError:
            continue
    return found[::-1]


_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def audited(
    action: str, target_arg: int | None = 0, detail: Callable[[tuple[Any, ...]], dict[str, Any]] | None = None
) -> Callable[[_F], _F]:
    """Decorate a ``RuntimeChanges`` method so each change is recorded: its argument ``target_arg`` is the
    target, ``detail(args)`` adds fields (never pass a token through it)."""

    def wrap(method: _F) -> _F:
        @functools.wraps(method)
        async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            target = args[target_arg] if target_arg is not None and len(args) > target_arg else None
            extra = detail(args) if detail is not None else {}
            return await self._hub.audit.change(action, target, method(self, *args, **kwargs), **extra)

        return run  # type: ignore[return-value]

    return wrap
