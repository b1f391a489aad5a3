"""Rate limits shared by every replica: the same token buckets as ``ratelimit.py``, kept in Redis.

Why in Redis: behind a round-robin load balancer each replica sees a third of a caller's calls, so
buckets per replica would let a caller through at three times the rate the operator wrote. One Lua
script takes a token from every bucket that applies, or from none (the same all-or-nothing rule as a
single hub), atomically, on Redis' clock (so replicas' clocks need not agree). A bucket key expires once
it would have refilled, so idle callers cost Redis nothing.

It costs the call one Redis round trip, and only calls that a limit applies to: a hub without
``rateLimits`` has no limiter at all. When Redis is unreachable, the replica falls back to its own
buckets (``RateLimiter.check``) rather than refusing or waving calls through, and says so once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from patchbay.cluster.keys import rate_key
from patchbay.identity import LOCAL, Identity
from patchbay.ratelimit import RateLimitedError, RateLimiter, RateLimitSettings

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

# KEYS: the buckets; ARGV: count and refill per second of each, in order. Returns {0} when every bucket
# gave a token, else {i, wait}: bucket i (1-based) is the one that needs longest to refill, by ``wait`` s.
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens = {}
local worst, worst_wait = 0, -1
for i = 1, #KEYS do
  local count, rate = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local b = redis.call('HMGET', KEYS[i], 't', 's')
  local tk = tonumber(b[1])
  if tk == nil then tk = count else tk = math.min(count, tk + (now - tonumber(b[2])) * rate) end
  tokens[i] = tk
  if tk < 1 then
    local wait = (1 - tk) / rate
    if wait > worst_wait then worst, worst_wait = i, wait end
  end
end
if worst > 0 then return {worst, tostring(worst_wait)} end
for i = 1, #KEYS do
  local count, rate = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  redis.call('HSET', KEYS[i], 't', tostring(tokens[i] - 1), 's', tostring(now))
  redis.call('EXPIRE', KEYS[i], math.ceil(count / rate) + 1)
end
return {0}
"""


class SharedRateLimiter(RateLimiter):
    """``RateLimiter`` whose buckets live in Redis (``acheck``); its own are the fallback."""

    shared = True

    def __init__(self, settings: RateLimitSettings, redis: Redis) -> None:
        super().__init__(settings)
        self._redis = redis
        self._take = redis.register_script(TAKE)
        self._degraded = False

    async def acheck(self, caller: Identity | None, tool: str) -> None:
        """Take one token from each bucket that applies, in Redis, or raise ``RateLimitedError``."""
        identity = caller or LOCAL
        rates = self.applicable(identity, tool)
        if not rates:
            return
        keys = [rate_key(identity.name, t) for (_, t), _, _ in rates]
        argv: list[Any] = []
        for _, r, _ in rates:
            argv += [r.count, r.per_second]
        try:
            answer = await self._take(keys=keys, args=argv)
        except RedisError as exc:
            if not self._degraded:
                self._degraded = True
                log.warning("rate limits: Redis is unreachable (%s); each replica counts on its own", exc)
            self.check(caller, tool)
            return
        if self._degraded:
            self._degraded = False
            log.warning("rate limits: shared through Redis again")
        if int(answer[0]):
            _, rate, scope = rates[int(answer[0]) - 1]
            raise RateLimitedError(identity.name, tool, rate.text, scope, float(answer[1]))
