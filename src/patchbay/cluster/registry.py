"""Who is in the cluster: replica heartbeats, and which replica holds which dial-in agent.

A replica's key (``patchbay:replica:<id>``) and the keys of the agents it holds expire unless it renews
them every second, so a replica killed with SIGKILL drops out within ``HEARTBEAT_TTL_MS``. Each agent's key
is a hash: ``replica`` and ``serial`` (who holds it, ordered by a cluster-wide counter, so the newest
connection of an agent wins wherever it landed), ``lv`` (bumped when its listing changes) and ``record``
(listing, protocol, server info: what the other replicas need to show and route its tools).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import mcp.types as types
from redis.asyncio import Redis

from patchbay.catalog import Listing, parse_items, parse_tools
from patchbay.cluster.keys import AGENT_SERIAL, EVENTS, HEARTBEAT_TTL_MS, agent_key, replica_key

# KEYS: agent, events, serial counter. ARGV: replica, serial, lv, record, ttl, message. A lower serial
# never displaces a higher one (an older connection of the agent, reported late); the counter is kept
# above every serial in use, so a Redis that lost its data cannot hand out an old number again.
_REGISTER = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'serial') or '0')
if cur > tonumber(ARGV[2]) then return 0 end
if tonumber(redis.call('GET', KEYS[3]) or '0') < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[3], ARGV[2])
end
redis.call('HSET', KEYS[1], 'replica', ARGV[1], 'serial', ARGV[2], 'lv', ARGV[3], 'record', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', KEYS[2], ARGV[6])
return 1
"""

# KEYS: agent keys. ARGV: replica, serial per key..., ttl last. Per key: 1 renewed, 0 gone, -1 held elsewhere.
_RENEW = """
local out = {}
local ttl = ARGV[#ARGV]
for i, key in ipairs(KEYS) do
  local holder = redis.call('HMGET', key, 'replica', 'serial')
  if not holder[1] then out[i] = 0
  elseif holder[1] == ARGV[1] and holder[2] == ARGV[i + 1] then redis.call('PEXPIRE', key, ttl); out[i] = 1
  else out[i] = -1 end
end
return out
"""

# KEYS: agent, events. ARGV: replica, serial, message. Only the holder's own entry is removed.
_WITHDRAW = """
local holder = redis.call('HMGET', KEYS[1], 'replica', 'serial')
if holder[1] == ARGV[1] and holder[2] == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[2], ARGV[3])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Holder:
    """Who holds an agent now, as read from its key."""

    replica: str
    serial: int
    lv: int


def listing_to_json(listing: Listing) -> dict[str, Any]:
    def dump(items: list[Any]) -> list[dict[str, Any]]:
        return [i.model_dump(by_alias=True, exclude_none=True, mode="json") for i in items]

    return {
        "tools": dump(listing.tools),
        "resources": dump(listing.resources),
        "resourceTemplates": dump(listing.templates),
        "prompts": dump(listing.prompts),
    }


def listing_from_json(data: dict[str, Any], source: str) -> Listing:
    tools, problems = parse_tools(data.get("tools") or [], source)
    return Listing(
        tools=tools,
        resources=parse_items(data.get("resources") or [], types.Resource, source),
        templates=parse_items(data.get("resourceTemplates") or [], types.ResourceTemplate, source),
        prompts=parse_items(data.get("prompts") or [], types.Prompt, source),
        problems=problems,
    )


class Registry:
    def __init__(self, redis: Redis, replica: str) -> None:
        self._redis = redis
        self.replica = replica
        self._register = redis.register_script(_REGISTER)
        self._renew = redis.register_script(_RENEW)
        self._withdraw = redis.register_script(_WITHDRAW)

    # --- this replica --------------------------------------------------------------------------------

    async def heartbeat(self, info: dict[str, Any], held: dict[str, int]) -> dict[str, int]:
        """Renew this replica's key and its agents'; per agent 1, 0 (gone: register again), -1 (elsewhere)."""
        info = {**info, "seen": time.time()}
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(replica_key(self.replica), json.dumps(info), px=HEARTBEAT_TTL_MS)
            names = list(held)
            if names:
                await self._renew(
                    keys=[agent_key(n) for n in names],
                    args=[self.replica, *(str(held[n]) for n in names), HEARTBEAT_TTL_MS],
                    client=pipe,
                )
            results = await pipe.execute()
        return dict(zip(names, results[1], strict=True)) if names else {}

    async def next_serial(self) -> int:
        return int(await self._redis.incr(AGENT_SERIAL))

    async def register(self, name: str, serial: int, lv: int, record: dict[str, Any]) -> bool:
        """Say this replica holds ``name`` (connection ``serial``); False: a newer connection is elsewhere."""
        message = json.dumps({"t": "agent", "name": name, "replica": self.replica, "serial": serial})
        done = await self._register(
            keys=[agent_key(name), EVENTS, AGENT_SERIAL],
            args=[self.replica, serial, lv, json.dumps(record), HEARTBEAT_TTL_MS, message],
        )
        return bool(done)

    async def withdraw(self, name: str, serial: int) -> None:
        message = json.dumps({"t": "agent_gone", "name": name, "replica": self.replica, "serial": serial})
        await self._withdraw(keys=[agent_key(name), EVENTS], args=[self.replica, serial, message])

    async def leave(self) -> None:
        """A clean stop: the others fail calls forwarded here at once instead of waiting for the TTL."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(replica_key(self.replica))
            pipe.publish(EVENTS, json.dumps({"t": "replica_gone", "replica": self.replica}))
            await pipe.execute()

    # --- the others ----------------------------------------------------------------------------------

    async def holders(self, names: list[str]) -> dict[str, Holder | None]:
        """Who holds each agent now, counting only replicas whose heartbeat is alive."""
        if not names:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.hmget(agent_key(n), ["replica", "serial", "lv"])
            rows = await pipe.execute()
        found = {
            n: Holder(r[0], int(r[1]), int(r[2] or 0)) if r[0] and r[1] else None
            for n, r in zip(names, rows, strict=True)
        }
        replicas = sorted({h.replica for h in found.values() if h is not None})
        if replicas:
            async with self._redis.pipeline(transaction=False) as pipe:
                for r in replicas:
                    pipe.exists(replica_key(r))
                live = dict(zip(replicas, await pipe.execute(), strict=True))
            found = {n: h if h is not None and live.get(h.replica) else None for n, h in found.items()}
        return found

    async def record(self, name: str) -> tuple[Holder, dict[str, Any]] | None:
        row: list[Any] = await self._redis.hmget(  # type: ignore[misc]
            agent_key(name), ["replica", "serial", "lv", "record"]
        )
        if not row[0] or not row[1] or not row[3]:
            return None
        return Holder(row[0], int(row[1]), int(row[2] or 0)), json.loads(row[3])

    async def replicas(self) -> list[dict[str, Any]]:
        """Every replica whose heartbeat is alive, with what it last said of itself."""
        keys = [k async for k in self._redis.scan_iter(match=replica_key("*"), count=100)]
        if not keys:
            return []
        values = await self._redis.mget(keys)
        return sorted((json.loads(v) for v in values if v), key=lambda r: str(r.get("id")))
