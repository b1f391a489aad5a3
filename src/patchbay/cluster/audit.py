"""The cluster's audit trail: every replica's records also go to one capped Redis stream.

Why: behind a load balancer a person's calls land on every replica; an operator asking "what did ci do
today" must get one answer, not a third of it. Each replica still writes its own file first (the record
of last resort, readable without Redis); its writer thread then appends the same lines to
``patchbay:audit`` (``XADD ... MAXLEN ~``, pipelined per batch, off the event loop). ``GET /api/audit`` on
any replica reads the stream, newest first, with the same filters as the file reader. Each record names
the replica that wrote it (``replica``).

When Redis is unreachable, records stay in the replica's file (logged once), and a query answers from
that file, saying so (``X-Patchbay-Audit-Scope: replica``). The records written meanwhile wait in memory
(at most ``BACKLOG_MAX``; beyond that the oldest are left to the file alone, and the log says how many)
and are copied to the stream once Redis is back, tried again every ``RETRY_EVERY`` seconds, so the
cluster's answer has no hole. A backlogged record lands in the stream after records made later; a query
returns its records in time order all the same. A batch that failed half-sent may be copied twice.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import time
from typing import TYPE_CHECKING, Any, cast

import redis
from redis.exceptions import RedisError

from patchbay.cluster.keys import AUDIT_STREAM

if TYPE_CHECKING:
    from patchbay.audit import AuditQuery

log = logging.getLogger(__name__)

MAX_RECORDS = 1_000_000  # kept in the stream (approximately): older ones are trimmed
READ_CHUNK = 1000
TIMEOUT = 2.0
BACKLOG_MAX = 100_000  # records kept for the stream while Redis is away
RETRY_EVERY = 1.0  # seconds between attempts while Redis is away (each may wait up to TIMEOUT)
SEND_CHUNK = 5000  # records per pipeline


class SharedAudit:
    """One replica's side of the shared stream: ``sink`` for its writer thread, ``read`` for queries."""

    def __init__(self, url: str, replica: str, max_records: int = MAX_RECORDS) -> None:
        self.replica = replica
        self.max_records = max_records
        self._redis = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, decode_responses=False
        )
        self._failing = False
        self._backlog: collections.deque[bytes] = collections.deque()
        self._retry_at = 0.0
        self._left = 0  # records that overflowed the backlog: in the files only

    @property
    def backlogged(self) -> bool:
        """Records wait for Redis: the writer thread calls ``sink`` even with nothing new."""
        return bool(self._backlog)

    def sink(self, lines: list[bytes]) -> None:
        """Append a batch of formatted records (the writer thread calls this after writing the file), after
        any that wait since Redis went away."""
        self._backlog.extend(line.rstrip(b"\n") for line in lines)
        while len(self._backlog) > BACKLOG_MAX:
            self._backlog.popleft()
            self._left += 1
        if self._failing and time.monotonic() < self._retry_at:
            return
        waited = len(self._backlog) - len(lines)
        try:
            while self._backlog:
                chunk = [self._backlog[i] for i in range(min(SEND_CHUNK, len(self._backlog)))]
                pipe = self._redis.pipeline(transaction=False)
                for line in chunk:
                    pipe.xadd(AUDIT_STREAM, {b"r": line}, maxlen=self.max_records, approximate=True)
                pipe.execute()
                for _ in chunk:
                    self._backlog.popleft()
        except RedisError as exc:
            self._retry_at = time.monotonic() + RETRY_EVERY
            if not self._failing:
                self._failing = True
                log.error("audit: Redis is unreachable (%s); records stay in this replica's file", exc)
            return
        if self._failing:
            self._failing = False
            left, self._left = self._left, 0
            log.warning(
                "audit: sharing records through Redis again; %d written meanwhile copied to the stream%s",
                max(waited, 0),
                f", {left} more are in this replica's file only" if left else "",
            )

    def read(self, query: AuditQuery) -> list[dict[str, Any]]:
        """The last ``query.limit`` matching records of every replica, oldest first (RedisError if down)."""
        found: list[dict[str, Any]] = []
        top = b"+"
        while True:
            chunk = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]",
                self._redis.xrevrange(AUDIT_STREAM, max=top, min=b"-", count=READ_CHUNK),
            )
            if not chunk:
                break
            for entry_id, fields in chunk:
                try:
                    record = json.loads(fields[b"r"])
                    when = dt.datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00")).timestamp()
                except (ValueError, KeyError, TypeError):
                    continue
                # stream order is arrival order: a record's own time is within seconds of it
                if query.since is not None and int(entry_id.split(b"-")[0]) / 1000 < query.since - 5.0:
                    return _in_time_order(found[::-1])
                if query.matches(record, when):
                    found.append(record)
                    if len(found) >= query.limit:
                        return _in_time_order(found[::-1])
            if len(chunk) < READ_CHUNK:
                break
            top = b"(" + chunk[-1][0]
        return _in_time_order(found[::-1])

    def close(self) -> None:
        self._redis.close()


def _in_time_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stream order, except that records copied late (written while Redis was away) take their place."""
    return sorted(records, key=lambda r: str(r.get("time", "")))
