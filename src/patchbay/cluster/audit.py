"""The cluster's audit trail: every replica's records also go to one capped Redis stream.

Why: behind a load balancer a person's calls land on every replica; an operator asking "what did ci do
today" must get one answer, not a third of it. Each replica still writes its own file first (the record
of last resort, readable without Redis); its writer thread then appends the same lines to
``patchbay:audit`` (``XADD ... MAXLEN ~``, pipelined per batch, off the event loop). ``GET /api/audit`` on
any replica reads the stream, newest first, with the same filters as the file reader. Each record names
the replica that wrote it (``replica``).

When Redis is unreachable, records stay in the replica's file (logged once), and a query answers from
that file, saying so (``X-Patchbay-Audit-Scope: replica``). Records written meanwhile are not copied
to the stream later: the files keep them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
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


class SharedAudit:
    """One replica's side of the shared stream: ``sink`` for its writer thread, ``read`` for queries."""

    def __init__(self, url: str, replica: str, max_records: int = MAX_RECORDS) -> None:
        self.replica = replica
        self.max_records = max_records
        self._redis = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, decode_responses=False
        )
        self._failing = False

    def sink(self, lines: list[bytes]) -> None:
        """Append a batch of formatted records (the writer thread calls this after writing the file)."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            for line in lines:
                pipe.xadd(AUDIT_STREAM, {b"r": line.rstrip(b"\n")}, maxlen=self.max_records, approximate=True)
            pipe.execute()
        except RedisError as exc:
            if not self._failing:
                self._failing = True
                log.error("audit: Redis is unreachable (%s); records stay in this replica's file", exc)
            return
        if self._failing:
            self._failing = False
            log.warning("audit: sharing records through Redis again")

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
                    return found[::-1]
                if query.matches(record, when):
                    found.append(record)
                    if len(found) >= query.limit:
                        return found[::-1]
            if len(chunk) < READ_CHUNK:
                break
            top = b"(" + chunk[-1][0]
        return found[::-1]

    def close(self) -> None:
        self._redis.close()
