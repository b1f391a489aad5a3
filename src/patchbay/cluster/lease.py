"""``"replicas": "one"``: a stateful server that runs on exactly one replica at a time.

The replica that holds the server's lease (``patchbay:lease:<name>``, renewed every second, gone 5 s after
its holder stops renewing) runs the process; the others hold a ``RemoteConnection`` to it, as for an agent
on another replica, and forward every call there. Each lease carries a fencing token (a cluster-wide
counter): a forwarded call names the token of the holder it was meant for, and a replica that no longer
holds that lease refuses it instead of running it, so a replica that lost its lease (a pause, a partition)
can never serve a call meant for the new holder. A holder that fails to renew stops its process at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from patchbay.cluster.keys import HEARTBEAT_TTL_MS, PREFIX
from patchbay.cluster.registry import Holder
from patchbay.config import ServerSpec
from patchbay.errors import ConfigError
from patchbay.supervisor import ServerState, ServerSupervisor

if TYPE_CHECKING:
    from patchbay.cluster.forward import RemoteConnection

log = logging.getLogger(__name__)

LEASE_FENCE = PREFIX + "lease-fence"

# KEYS: lease, fence counter. ARGV: replica, ttl. Returns the new fencing token, or 0 if it is held.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence, 'PX', ARGV[2])
return fence
"""

# KEYS: lease. ARGV: 'replica fence', ttl. 1 if still ours (renewed), else 0.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]); return 1 end
return 0
"""

# KEYS: lease. ARGV: 'replica fence'.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_key(name: str) -> str:
    return f"{PREFIX}lease:{name}"


def served_key(name: str) -> str:
    return f"{PREFIX}served:{name}"


def replicas_setting(name: str, spec: ServerSpec) -> str:
    """``all`` (the default: every replica runs its own) or ``one``."""
    extra = spec.model_extra or {}
    value = extra.get("replicas", "all")
    if value not in ("all", "one"):
        raise ConfigError(
            f'server {name!r}: replicas: must be "all" or "one", got {value!r}', server=name, field="replicas"
        )
    return str(value)


class Leases:
    """This replica's leases: acquire, renew, release, and who holds the others."""

    def __init__(self, redis: Redis, replica: str) -> None:
        self._redis = redis
        self.replica = replica
        self.held: dict[str, int] = {}  # server -> fencing token
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def try_acquire(self, name: str) -> int:
        fence = int(
            await self._acquire(keys=[lease_key(name), LEASE_FENCE], args=[self.replica, HEARTBEAT_TTL_MS])
        )
        if fence:
            self.held[name] = fence
        return fence

    async def renew(self, name: str) -> bool:
        fence = self.held.get(name)
        if fence is None:
            return False
        ok = bool(
            await self._renew(keys=[lease_key(name)], args=[f"{self.replica} {fence}", HEARTBEAT_TTL_MS])
        )
        if not ok:
            self.held.pop(name, None)
        return ok

    async def release(self, name: str) -> None:
        fence = self.held.pop(name, None)
        if fence is not None:
            await self._release(keys=[lease_key(name)], args=[f"{self.replica} {fence}"])

    async def holder(self, name: str) -> tuple[str, int] | None:
        raw = await self._redis.get(lease_key(name))
        if not raw:
            return None
        replica, _, fence = str(raw).rpartition(" ")
        return (replica, int(fence)) if replica and fence.isdigit() else None

    def fence(self, name: str) -> int | None:
        return self.held.get(name)

    # --- what the holder publishes of the server (listing, protocol), for the others ------------------

    async def publish(self, name: str, lv: int, record: dict[str, Any]) -> None:
        fence = self.held.get(name)
        if fence is None:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                served_key(name),
                mapping={"replica": self.replica, "serial": fence, "lv": lv, "record": json.dumps(record)},
            )
            pipe.pexpire(served_key(name), HEARTBEAT_TTL_MS)
            await pipe.execute()

    async def keep(self, name: str) -> None:
        await self._redis.pexpire(served_key(name), HEARTBEAT_TTL_MS)

    async def served(self, name: str) -> tuple[Holder, dict[str, Any]] | None:
        """What the lease holder published, if it still holds the lease it published it under."""
        row: list[Any] = await self._redis.hmget(  # type: ignore[misc]
            served_key(name), ["replica", "serial", "lv", "record"]
        )
        holder = await self.holder(name)
        if not row[0] or not row[3] or holder is None or holder != (row[0], int(row[1])):
            return None
        return Holder(row[0], int(row[1]), int(row[2] or 0)), json.loads(row[3])


class LeasedServer(ServerSupervisor):
    """A ``"replicas": "one"`` server: supervised here while this replica holds the lease, else a remote
    connection to the replica that does (the lease job in ``node`` restarts it on every change of hands)."""

    def __init__(self, *args: Any, leases: Leases, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.leases = leases
        self.remote: RemoteConnection | None = None
        self._handover = asyncio.Event()

    @property
    def here(self) -> bool:
        return self.name in self.leases.held

    def hand_over(self) -> None:
        """The lease or its holder changed: re-decide (called by the lease job)."""
        self._handover.set()

    async def _supervise(self) -> None:
        if self.here:
            await super()._supervise()
            return
        while True:
            self._handover = asyncio.Event()
            remote = self.remote
            if remote is None:
                self._set_state(ServerState.STARTING)  # until the holder is known: calls wait for it
                self.last_error = "waiting for the replica that holds its lease"
                self._settled.set()  # the hub's start does not wait for another replica
            else:
                self.connection = remote  # type: ignore[assignment]
                self.last_error = None
                self.hooks.listing_changed(self, remote.listing)
                self._set_state(ServerState.READY)
            try:
                await self._handover.wait()
            finally:
                if self.connection is not None:
                    self.connection = None
                    self.hooks.listing_changed(self, None)
