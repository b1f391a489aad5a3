"""Rate limits on tool calls: token buckets per identity, and per identity and tool (``rateLimits``).

``{"default": "120/min", "identities": {"ci": "600/min"}, "tools": {"github__create_issue": "10/min"}}``

- Every identity has its own bucket: its ``identities`` entry, else ``default``.
- A tool listed under ``tools`` has a bucket *per identity* for that tool. Why per identity and not one
  global bucket per tool: a global bucket lets one busy caller use up everyone's allowance (a CI job
  filing issues would lock every person out of ``github__create_issue``), and what one identity did would
  change what another is told. Per identity, each caller gets the allowance the operator wrote, and a
  refusal only ever follows from the caller's own calls.
- A call must find a token in every bucket that applies; tokens are taken only when all have one, so a
  refusal by one bucket never costs the other. ``N/unit`` refills N tokens per unit, evenly, and allows a
  burst of up to N.
- The process owner (``LOCAL``: the Python API, and loopback clients of a hub without tokens) is not held
  to ``default``, which is meant for remote callers; naming ``"local"`` under ``identities`` limits it too.
- ``null`` or ``"unlimited"`` exempts an identity (or a tool) from the limit.

An exceeded limit raises :class:`RateLimitedError` before anything reaches the upstream.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from patchbay.errors import ConfigError, PatchbayError
from patchbay.identity import LOCAL, Identity

KEY = "rateLimits"
_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([A-Za-z]+)\s*$")
_MAX_BUCKETS = 50_000  # idle, full buckets are dropped beyond this (they would start full anyway)


class RateLimitedError(PatchbayError):
    """A call was refused by a rate limit; ``retry_after`` is how many seconds until it would pass."""

    def __init__(self, identity: str, tool: str, limit: str, scope: str, retry_after: float) -> None:
        self.identity = identity
        self.tool = tool
        self.limit = limit
        self.scope = scope  # "identity" or "tool": which bucket was empty
        self.retry_after = retry_after
        what = f"on tool {tool!r}" if scope == "tool" else "on tool calls"
        super().__init__(
            f"rate limit exceeded for {identity!r} {what} ({limit}); retry in {retry_after:.1f} s"
        )

    @property
    def retry_after_header(self) -> str:
        """HTTP ``Retry-After``: whole seconds, rounded up (at least 1)."""
        return str(max(1, math.ceil(self.retry_after)))

    def data(self) -> dict[str, Any]:
        """What the JSON-RPC error's ``data`` and the REST body carry."""
        return {"retryAfter": round(self.retry_after, 3), "limit": self.limit, "scope": self.scope}


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` calls per ``period`` seconds, as the user wrote it (``text``)."""

    count: int
    period: float
    text: str

    @property
    def per_second(self) -> float:
        return self.count / self.period


def parse_rate(value: Any, field: str) -> Rate | None:
    """``"10/min"``, ``"5/s"``, ``"1000/h"``; ``None`` or ``"unlimited"`` is no limit."""
    if value is None or value == "unlimited":
        return None
    example = 'write COUNT/UNIT such as "10/min" (units: s, min, h), or "unlimited"'
    if not isinstance(value, str):
        raise ConfigError(
            f"{field}: expected a rate string, got {type(value).__name__}; {example}", field=field
        )
    m = _RATE.match(value)
    unit = m.group(2).lower() if m else ""
    if m is None or (unit not in _UNITS and unit.rstrip("s") not in _UNITS):
        raise ConfigError(f"{field}: {value!r} is not a rate; {example}", field=field)
    count = int(m.group(1))
    if count < 1:
        raise ConfigError(
            f"{field}: {value!r} allows no calls at all; the count must be at least 1", field=field
        )
    period = _UNITS.get(unit) or _UNITS[unit.rstrip("s")]
    return Rate(count, period, f"{count}/{m.group(2)}")


@dataclass(frozen=True)
class RateLimitSettings:
    default: Rate | None = None
    identities: Mapping[str, Rate | None] | None = None
    tools: Mapping[str, Rate | None] | None = None


def parse_rate_limits(document: Mapping[str, Any]) -> RateLimitSettings | None:
    """The config's ``rateLimits``, validated (``ConfigError`` names the field); None when absent."""
    raw = document.get(KEY)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(
            f'{KEY}: expected an object such as {{"default": "120/min"}}, got {type(raw).__name__}', field=KEY
        )
    unknown = sorted(set(raw) - {"default", "identities", "tools"})
    if unknown:
        raise ConfigError(
            f"{KEY}.{unknown[0]}: unknown key; {KEY} takes default, identities and tools",
            field=f"{KEY}.{unknown[0]}",
        )
    default = parse_rate(raw.get("default"), f"{KEY}.default")
    tables: dict[str, dict[str, Rate | None]] = {}
    for key in ("identities", "tools"):
        entries = raw.get(key) or {}
        if not isinstance(entries, dict):
            raise ConfigError(
                f"{KEY}.{key}: expected an object mapping names to rates, got {type(entries).__name__}",
                field=f"{KEY}.{key}",
            )
        tables[key] = {str(n): parse_rate(v, f"{KEY}.{key}.{n}") for n, v in entries.items()}
    return RateLimitSettings(default, tables["identities"], tables["tools"])


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """The buckets of one hub. Runs on the event loop (no lock): a check is a few dict lookups."""

    def __init__(self, settings: RateLimitSettings, clock: Any = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._identities = dict(settings.identities or {})
        self._tools = dict(settings.tools or {})
        self._buckets: dict[tuple[str, str | None], _Bucket] = {}

    def _identity_rate(self, identity: Identity) -> Rate | None:
        name = identity.name
        if name in self._identities:
            return self._identities[name]
        if identity is LOCAL or identity.kind == "local":
            return None
        return self.settings.default

    shared = False  # True for the cluster's limiter (cluster/ratelimits.py): ``await acheck`` instead

    def applicable(self, identity: Identity, tool: str) -> list[tuple[tuple[str, str | None], Rate, str]]:
        """The buckets a call of ``tool`` by ``identity`` takes a token from: (key, rate, scope)."""
        rates: list[tuple[tuple[str, str | None], Rate, str]] = []
        rate = self._identity_rate(identity)
        if rate is not None:
            rates.append(((identity.name, None), rate, "identity"))
        tool_rate = self._tools.get(tool)
        if tool_rate is not None and (identity.kind != "local" or identity.name in self._identities):
            rates.append(((identity.name, tool), tool_rate, "tool"))
        return rates

    async def acheck(self, caller: Identity | None, tool: str) -> None:
        self.check(caller, tool)

    def check(self, caller: Identity | None, tool: str) -> None:
        """Take one token from each bucket that applies, or raise ``RateLimitedError`` taking none."""
        identity = caller or LOCAL
        rates = self.applicable(identity, tool)
        if not rates:
            return
        now = self._clock()
        buckets = []
        worst: tuple[float, Rate, str] | None = None
        for key, r, scope in rates:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= _MAX_BUCKETS:
                    self._prune(now)
                bucket = self._buckets[key] = _Bucket(float(r.count), now)
            else:
                bucket.tokens = min(float(r.count), bucket.tokens + (now - bucket.stamp) * r.per_second)
                bucket.stamp = now
            if bucket.tokens < 1.0:
                wait = (1.0 - bucket.tokens) / r.per_second
                if worst is None or wait > worst[0]:
                    worst = (wait, r, scope)
            buckets.append(bucket)
        if worst is not None:
            raise RateLimitedError(identity.name, tool, worst[1].text, worst[2], worst[0])
        for bucket in buckets:
            bucket.tokens -= 1.0

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled (a new one starts full: nothing is lost)."""
        full = [k for k, b in self._buckets.items() if now - b.stamp > 3600.0]
        for key in full:
            del self._buckets[key]


def rate_limiter(document: Mapping[str, Any]) -> RateLimiter | None:
    """A limiter for a config document, or None when it sets no limits (then calls pay nothing)."""
    settings = parse_rate_limits(document)
    if settings is None or (settings.default is None and not settings.identities and not settings.tools):
        return None
    return RateLimiter(settings)
