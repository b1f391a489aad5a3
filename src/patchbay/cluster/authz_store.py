"""The built-in authorization server's state, shared by every replica through Redis.

Why: behind a load balancer with no stickiness, one sign-in touches several replicas (``/register`` on
one, ``/authorize`` on the next, the consent page's GET and POST on two more, ``/token`` and then every
``/mcp`` request anywhere). Each must see what the others did, at once, and a single-use code or a
rotating refresh token must be spent exactly once across all of them.

What lives where (every value Fernet-encrypted with ``PATCHBAY_SECRET_KEY``; digests of tokens and codes
appear in key names, never a token):

- ``patchbay:authz:clients`` / ``patchbay:authz:grants``: hashes of client and grant records;
  ``patchbay:authz:version``, bumped by every change; ``patchbay:authz:epoch``, which names one life of
  the state in Redis; ``patchbay:authz:ended``, the ids of the clients and grants removed in it. Each
  replica serves token lookups from its own copy (no Redis round trip per request) and re-reads it when
  the version moved: when a token is not in its copy (issued elsewhere a moment ago) and at most
  ``CHECK_EVERY`` seconds after its last check (so a grant revoked on another replica stops working here
  within that time). Writes are optimistic transactions on the version (``WATCH``/``MULTI``): a refresh
  token rotated here is refused if another replica rotated or revoked the grant first, and a revocation
  is never undone by a concurrent refresh.
- ``patchbay:authz:pending:<id>``: a consent request, for its fifteen minutes (``PENDING_TTL``), at most
  ``MAX_PENDING`` of them (a sorted set of ids drops the oldest).
- ``patchbay:authz:code:<digest>`` and ``patchbay:authz:code-used:<digest>``: an approved code, and its one
  use (``SET NX``), which names the grant it produced so that a replay revokes it.

The first replica of an empty cluster seeds it from its own state file (``auth.server.stateDirectory``), so
clients signed in to a single hub stay signed in when it becomes a cluster. A Redis that comes back empty
(no persistence) is seeded again from the first replica's copy that notices, under a new epoch, and every
other replica merges its own copy in (what was removed since stays removed). While Redis is away, tokens
already known keep working; sign-ins and changes are refused with a 503 that says why. Consent requests
and codes in flight are lost with Redis' data: those sign-ins start again.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import redis
from cryptography.fernet import Fernet, InvalidToken
from mcp.server.auth.provider import AuthorizationParams
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError, WatchError

from patchbay.access.authorization_server.state import (
    CODE_TTL,
    MAX_PENDING,
    PENDING_TTL,
    ClientRecord,
    Code,
    GrantRecord,
    IssuedCode,
    Pending,
    ServerState,
    StaleGrantError,
    _Document,
)
from patchbay.cluster.keys import PREFIX
from patchbay.errors import ClusterUnavailableError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.client import Pipeline

log = logging.getLogger(__name__)

CLIENTS = f"{PREFIX}authz:clients"
GRANTS = f"{PREFIX}authz:grants"
VERSION = f"{PREFIX}authz:version"
EPOCH = f"{PREFIX}authz:epoch"
ENDED = f"{PREFIX}authz:ended"  # ids of clients ("c:…") and grants ("g:…") removed in this epoch
PENDING_IDS = f"{PREFIX}authz:pending-ids"
CHECK_EVERY = 1.0  # seconds a replica serves its copy before it checks the version again
ATTEMPTS = 20  # optimistic transactions retried when another replica wrote first
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def pending_key(request_id: str) -> str:
    return f"{PREFIX}authz:pending:{request_id}"


def code_key(code_digest: str) -> str:
    return f"{PREFIX}authz:code:{code_digest}"


def used_key(code_digest: str) -> str:
    return f"{PREFIX}authz:code-used:{code_digest}"


def _unavailable(exc: RedisError) -> ClusterUnavailableError:
    return ClusterUnavailableError(
        f"the authorization server's state is in Redis, which cannot be reached ({exc}); sign-ins and "
        "changes to clients and grants resume when it is back"
    )


class SharedServerState(ServerState):
    """``ServerState`` whose records of record are in Redis; this replica holds a copy."""

    def __init__(self, directory: Path, *, url: str, key: bytes, async_redis: Redis) -> None:
        super().__init__(directory)  # the local state file (its own key): what seeds an empty cluster
        self._shared = Fernet(key)
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._async = async_redis
        self._version = 0
        self._epoch: str | None = None  # which life of the state in Redis this copy follows
        self._checked = 0.0  # monotonic time of the last version check
        try:
            self._transact(lambda pipe: None)  # seed an empty cluster from the file, else read its copy
        except ClusterUnavailableError as exc:
            log.warning("%s; serving the state file's copy meanwhile", exc)

    # --- the copy ------------------------------------------------------------------------------------

    def stale(self) -> bool:
        return time.monotonic() - self._checked >= CHECK_EVERY

    async def refresh(self) -> None:
        """Re-read the records if another replica changed them; re-seed a Redis that came back empty."""
        try:
            version, epoch = await self._async.mget(VERSION, EPOCH)
            self._checked = time.monotonic()
            if version is None or epoch != self._epoch:  # emptied, or re-seeded by another replica
                if version is not None or self._doc.clients or self._doc.grants:
                    self._transact(lambda pipe: None)  # (sync: rare) merge this copy in, or seed
                return
            if int(version) <= self._version:
                return
            async with self._async.pipeline(transaction=True) as pipe:
                pipe.mget(VERSION, EPOCH)
                pipe.hgetall(CLIENTS)
                pipe.hgetall(GRANTS)
                (version, epoch), clients, grants = await pipe.execute()
        except (RedisError, ClusterUnavailableError) as exc:
            self._checked = time.monotonic()  # keep serving the copy; try again in CHECK_EVERY
            log.warning("authorization server: Redis is unreachable (%s); using this replica's copy", exc)
            return
        if epoch == self._epoch and int(version or 0) > self._version:  # a write here may be newer
            self._adopt(int(version or 0), epoch, clients, grants)

    def _adopt(
        self, version: int, epoch: str | None, clients: dict[Any, Any], grants: dict[Any, Any]
    ) -> None:
        doc = _Document()
        for raw in clients.values():
            if (client := self._open(raw, ClientRecord)) is not None:
                doc.clients[client.info.client_id] = client
        for raw in grants.values():
            if (grant := self._open(raw, GrantRecord)) is not None:
                old = self._doc.grants.get(grant.id)
                if old is not None and (old.last_used_at or 0) > (grant.last_used_at or 0):
                    grant.last_used_at = old.last_used_at  # seen here, not yet saved
                doc.grants[grant.id] = grant
        self._doc = doc
        self._version = version
        self._epoch = epoch
        self._reindex()

    def _seal(self, record: BaseModel) -> str:
        return self._shared.encrypt(record.model_dump_json().encode()).decode()  # Fernet tokens are ASCII

    def _open(self, raw: bytes | str, model: type[M]) -> M | None:
        try:
            return model.model_validate_json(self._shared.decrypt(raw))
        except (InvalidToken, ValidationError, ValueError):
            log.warning("authorization server: a record in Redis cannot be read (another secret key?)")
            return None

    def _transact(self, change: Callable[[Pipeline], T]) -> T:
        """Run ``change`` against a fresh copy and queue its writes, in one transaction on the version.

        ``change`` reads ``self._doc`` (current as of the watched version), may raise (nothing is written),
        queues its writes on the pipeline, and returns what its caller gets; it runs again on a fresher
        copy if another replica wrote first. The epoch names one life of the state in Redis: an empty
        Redis (first start, or a restart without persistence) is seeded from this copy under a new epoch,
        and a replica that finds another epoch than its own merges its records into it (a grant revoked
        meanwhile was dropped from every copy within ``CHECK_EVERY``; nothing else is lost).
        """
        origin_doc, origin_epoch = self._doc, self._epoch
        try:
            with self._redis.pipeline() as pipe:
                for _ in range(ATTEMPTS):
                    try:
                        pipe.watch(VERSION, EPOCH)  # type: ignore[no-untyped-call]
                        raw, raw_epoch = cast(list[bytes | None], pipe.mget(VERSION, EPOCH))  # immediate
                        epoch = raw_epoch.decode() if raw_epoch is not None else None
                        fresh = raw is None or epoch is None
                        if fresh:  # seed it from this copy
                            mine = self._doc
                        else:  # merge this copy's records only into another epoch than this copy's
                            merge = origin_epoch is not None and epoch != origin_epoch
                            mine = origin_doc if merge else _Document()
                            if epoch != self._epoch or int(raw or 0) != self._version:
                                clients = cast(dict[bytes, bytes], pipe.hgetall(CLIENTS))
                                grants = cast(dict[bytes, bytes], pipe.hgetall(GRANTS))
                                self._adopt(int(raw or 0), epoch, clients, grants)
                            if merge:  # what was ended in that epoch stays ended
                                ended = {e.decode() for e in cast(set[bytes], pipe.smembers(ENDED))}
                                mine = _Document(
                                    clients={k: v for k, v in mine.clients.items() if f"c:{k}" not in ended},
                                    grants={k: v for k, v in mine.grants.items() if f"g:{k}" not in ended},
                                )
                        pipe.multi()
                        new_epoch = secrets.token_hex(8) if fresh else epoch
                        if fresh:
                            pipe.delete(CLIENTS, GRANTS, ENDED)
                            pipe.set(EPOCH, cast(str, new_epoch))
                        seeded = 0
                        for client_id, client in mine.clients.items():  # seed, or merge into another epoch
                            if fresh or client_id not in self._doc.clients:
                                pipe.hset(CLIENTS, client_id, self._seal(client))
                                self._doc.clients[client_id] = client
                                seeded += 1
                        for grant_id, grant in mine.grants.items():
                            if fresh or grant_id not in self._doc.grants:
                                pipe.hset(GRANTS, grant_id, self._seal(grant))
                                self._doc.grants[grant_id] = grant
                                seeded += 1
                        queued = len(pipe.command_stack)
                        result = change(pipe)
                        if not seeded and len(pipe.command_stack) == queued:
                            pipe.reset()  # nothing to write (an empty Redis stays empty until a change)
                            self._checked = time.monotonic()
                            return result
                        pipe.incr(VERSION)
                        self._version = int(pipe.execute()[-1])
                        self._epoch = new_epoch
                        self._reindex()
                        self._checked = time.monotonic()
                        if seeded:
                            log.info("authorization server: %d records of this copy written to Redis", seeded)
                        return result
                    except WatchError:
                        continue
        except RedisError as exc:
            raise _unavailable(exc) from None
        raise ClusterUnavailableError("the authorization server's state kept changing under a write; retry")

    # --- clients and grants --------------------------------------------------------------------------

    def save(self) -> None:
        """Nothing to write to the file: every change goes to Redis as it is made."""

    def put_client(self, record: ClientRecord) -> None:
        def change(pipe: Pipeline) -> None:
            pipe.hset(CLIENTS, record.info.client_id, self._seal(record))

        self._transact(change)
        self._doc.clients[record.info.client_id] = record

    def remove_client(self, client_id: str) -> ClientRecord | None:
        def change(pipe: Pipeline) -> tuple[ClientRecord | None, list[str]]:
            record = self._doc.clients.get(client_id)
            ended = [g.id for g in self._doc.grants.values() if g.client_id == client_id]
            if record is not None:
                pipe.hdel(CLIENTS, client_id)
                pipe.sadd(ENDED, f"c:{client_id}", *(f"g:{g}" for g in ended))
                if ended:
                    pipe.hdel(GRANTS, *ended)
            return record, ended

        record, ended = self._transact(change)
        if record is not None:
            self._doc.clients.pop(client_id, None)
            for grant_id in ended:
                self._doc.grants.pop(grant_id, None)
            self._reindex()
        return record

    def put_grant(self, grant: GrantRecord, *, rotated_from: str | None = None) -> None:
        now = time.time()
        grant.access = {d: exp for d, exp in grant.access.items() if exp > now}  # dead weight

        def change(pipe: Pipeline) -> None:
            if rotated_from is not None:
                stored = self._doc.grants.get(grant.id)
                if stored is None or stored.refresh_digest != rotated_from:
                    raise StaleGrantError(grant.id)
            pipe.hset(GRANTS, grant.id, self._seal(grant))

        self._transact(change)
        self._doc.grants[grant.id] = grant
        self._reindex()

    def remove_grant(self, grant_id: str) -> GrantRecord | None:
        def change(pipe: Pipeline) -> GrantRecord | None:
            grant = self._doc.grants.get(grant_id)
            if grant is not None:
                pipe.hdel(GRANTS, grant_id)
                pipe.sadd(ENDED, f"g:{grant_id}")
            return grant

        grant = self._transact(change)
        if grant is not None:
            self._doc.grants.pop(grant_id, None)
            self._reindex()
        return grant

    # --- consent requests and codes --------------------------------------------------------------------

    def _seal_pending(self, request: Pending) -> bytes:
        return self._shared.encrypt(
            json.dumps(
                {
                    "id": request.id,
                    "client": request.client.model_dump(mode="json"),
                    "params": request.params.model_dump(mode="json"),
                    "csrf": request.csrf,
                    "created_at": request.created_at,
                    "failures": request.failures,
                }
            ).encode()
        )

    def park(self, request: Pending) -> None:
        blob = self._seal_pending(request)
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(pending_key(request.id), blob, px=int(PENDING_TTL * 1000))
                pipe.zadd(PENDING_IDS, {request.id: time.time()})
                pipe.zremrangebyscore(PENDING_IDS, "-inf", time.time() - PENDING_TTL)
                pipe.zcard(PENDING_IDS)
                waiting = int(pipe.execute()[-1])
            if waiting > MAX_PENDING:  # anyone can open /authorize: the oldest requests go first
                dropped = self._redis.zpopmin(PENDING_IDS, waiting - MAX_PENDING)
                ids = [entry[0].decode() for entry in dropped]  # type: ignore[union-attr]
                if ids:
                    self._redis.delete(*(pending_key(i) for i in ids))
        except RedisError as exc:
            raise _unavailable(exc) from None

    def pending(self, request_id: str) -> Pending | None:
        try:
            blob = self._redis.get(pending_key(request_id))
        except RedisError as exc:
            raise _unavailable(exc) from None
        if not isinstance(blob, bytes):
            return None
        try:
            data = json.loads(self._shared.decrypt(blob))
            return Pending(
                id=data["id"],
                client=OAuthClientInformationFull.model_validate(data["client"]),
                params=AuthorizationParams.model_validate(data["params"]),
                csrf=data["csrf"],
                created_at=data["created_at"],
                failures=data["failures"],
            )
        except (InvalidToken, ValidationError, ValueError, KeyError, TypeError):
            log.warning("authorization server: a consent request in Redis cannot be read")
            return None

    def update_pending(self, request: Pending) -> None:
        try:  # only while it is still waiting (XX), for the rest of its time (KEEPTTL)
            self._redis.set(pending_key(request.id), self._seal_pending(request), xx=True, keepttl=True)
        except RedisError as exc:
            raise _unavailable(exc) from None

    def drop_pending(self, request_id: str) -> bool:
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(pending_key(request_id))
                pipe.zrem(PENDING_IDS, request_id)
                deleted = pipe.execute()[0]
        except RedisError as exc:
            raise _unavailable(exc) from None
        return bool(deleted)  # one replica's DEL removes it: that one answers the request

    def put_code(self, code_digest: str, code: Code) -> None:
        try:
            self._redis.set(
                code_key(code_digest),
                self._shared.encrypt(code.model_dump_json().encode()),
                px=int(2 * CODE_TTL * 1000),  # kept past its expiry, so a late replay is still caught
            )
        except RedisError as exc:
            raise _unavailable(exc) from None

    def code(self, code_digest: str) -> IssuedCode | None:
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(code_key(code_digest))
                pipe.get(used_key(code_digest))
                blob, used = pipe.execute()
        except RedisError as exc:
            raise _unavailable(exc) from None
        if not isinstance(blob, bytes):
            return None
        code = self._open(blob, Code)
        if code is None:
            return None
        return IssuedCode(code, used=used is not None, grant_id=used.decode() if used else None)

    def use_code(self, code_digest: str) -> bool:
        try:
            return bool(self._redis.set(used_key(code_digest), b"", nx=True, px=int(2 * CODE_TTL * 1000)))
        except RedisError as exc:
            raise _unavailable(exc) from None

    def bind_code(self, code_digest: str, grant_id: str) -> None:
        try:
            self._redis.set(used_key(code_digest), grant_id.encode(), xx=True, keepttl=True)
        except RedisError as exc:
            raise _unavailable(exc) from None
