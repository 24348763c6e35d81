"""The quota's buckets in Redis: every kernel on every machine paces itself against one quota.

Each key's buckets are a hash at `agentnb:quota:v1:b:<key>`: the limits they were made with
(`rpm`, `itpm`, `otpm`, `burst`), the levels (`l1`..`l3`, empty for an unlimited kind), when they
were last brought up to date (`u`) and the pause (`p`), all in the server's time. Each step is one
small Lua script (refill by the server's `TIME`, rescale to new limits, check, take, write), so it
is atomic across clients; costs differ from request to request, so a fixed-rate counter would not
do. The hash expires once its buckets would be full again and its pause over (plus a minute):
an abandoned key costs nothing, and a missing one starts full, which is the same thing. Needs
Redis 5 or later (a script that writes after reading `TIME`).

Times cross machines as durations, never as instants: `pause(until)` sends `until - time.time()`
and `snapshot` turns the server's instant back into this machine's, so skewed clocks do not
matter.

Live clients: each store has a random id and, at most every `heartbeat_s` (2 s) while it is used,
puts it in the sorted set `agentnb:quota:v1:clients` scored by the server's time, drops the ids
not seen for `live_s` (10 s), and reads how many are left. That count is this process's share
when Redis goes away.

Outage: a step that fails (connection refused or reset, timeout, any Redis error) is done
instead by a `Fallback`, this process's own buckets at 1/n of each limit (n: the live clients
last counted, at least 1), with ONE warning. Every 30 s (`retry_s`) one step tries Redis again;
the first that works logs one info line and the quota is shared again (the buckets Redis kept,
or full ones if it lost them). The client never retries by itself and gives up connecting after
0.5 s, so a dead server costs one failed step per retry, not a stall.

A forked child (`agentnb._fork`) makes a client (connections) and an id of its own; the
parent's client is left alone.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .._fork import abandon, at_fork_in_child
from ..config import redact_url
from ..errors import ConfigError
from .buckets import Buckets, Costs, Limits
from .stores import RETRY_S, Fallback, Remaining, snapshot_of

__all__ = ["PREFIX", "RedisStore"]

T = TypeVar("T")

PREFIX = "agentnb:quota:v1:"

# Loads the key's buckets into `level` (nil for an unlimited kind), refilled to the server's
# `now` and rescaled to the limits in ARGV[1..4]; `save()` writes them back with their expiry.
# Mirrors `Buckets` (refill, set_limits) step for step.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local key = KEYS[1]
local burst = tonumber(ARGV[4])
local rate, cap, level = {}, {}, {}
for k = 1, 3 do
  local x = tonumber(ARGV[k])
  if x then
    rate[k] = x / 60
    cap[k] = math.max(x / 60 * burst, 1)
  end
end
local s = redis.call('HMGET', key, 'rpm', 'itpm', 'otpm', 'burst', 'l1', 'l2', 'l3', 'u', 'p')
local paused = tonumber(s[9]) or 0
local updated = now
if not s[8] then
  for k = 1, 3 do level[k] = cap[k] end
else
  updated = math.max(now, tonumber(s[8]))
  local dt = updated - tonumber(s[8])
  local same = s[1] == ARGV[1] and s[2] == ARGV[2] and s[3] == ARGV[3] and s[4] == ARGV[4]
  local oburst = tonumber(s[4])
  for k = 1, 3 do
    local ox = tonumber(s[k])
    if not ox then
      level[k] = cap[k]
    else
      local orate, ocap = ox / 60, math.max(ox / 60 * oburst, 1)
      local l = tonumber(s[4 + k])
      if l < ocap then l = math.min(ocap, l + orate * dt) end
      if same then
        level[k] = l
      elseif cap[k] then
        level[k] = math.min(cap[k], l * cap[k] / ocap)
      end
    end
  end
end
local function num(x) return string.format('%.17g', x) end
local function save()
  local ttl = 0
  if paused > now then ttl = paused - now end
  local lv = {'', '', ''}
  for k = 1, 3 do
    if cap[k] then
      lv[k] = num(level[k])
      if level[k] < cap[k] then ttl = math.max(ttl, (cap[k] - level[k]) / rate[k]) end
    end
  end
  redis.call('HSET', key, 'rpm', ARGV[1], 'itpm', ARGV[2], 'otpm', ARGV[3], 'burst', ARGV[4],
    'l1', lv[1], 'l2', lv[2], 'l3', lv[3], 'u', num(updated), 'p', num(paused))
  redis.call('PEXPIRE', key, math.ceil((math.min(ttl, 86400) + 60) * 1000))
end
"""

_SCRIPTS = {
    # ARGV[5..7]: the costs. Returns the wait (0: taken).
    "take": """
local wait = 0
if paused > now then wait = paused - now end
for k = 1, 3 do
  if cap[k] then
    local need = math.min(tonumber(ARGV[4 + k]), cap[k]) - level[k]
    if need > 1e-9 then wait = math.max(wait, need / rate[k]) end
  end
end
if wait <= 0 then
  for k = 1, 3 do
    if cap[k] then level[k] = level[k] - tonumber(ARGV[4 + k]) end
  end
end
save()
return num(wait)
""",
    # ARGV[5..7]: the amounts given back (negative: taken).
    "give": """
for k = 1, 3 do
  local a = tonumber(ARGV[4 + k])
  if cap[k] and a ~= 0 then level[k] = math.min(cap[k], level[k] + a) end
end
save()
return 1
""",
    # ARGV[5..7]: what the server said is left ('' where it did not say).
    "lower_to": """
for k = 1, 3 do
  local r = tonumber(ARGV[4 + k])
  if r and cap[k] and r < level[k] then level[k] = r end
end
save()
return 1
""",
    # ARGV[5]: seconds from now.
    "pause": """
local upto = now + tonumber(ARGV[5])
if upto > paused then paused = upto end
save()
return 1
""",
    "snapshot": """
local out = {}
for k = 1, 3 do out[k] = cap[k] and num(level[k]) or '' end
out[4] = num(paused)
out[5] = num(now)
return out
""",
}

# Puts this client's id (ARGV[1]) in the set scored by the server's time, drops those older
# than ARGV[2] seconds, returns how many are left.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local live = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], string.format('%.17g', now), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', now - live))
redis.call('PEXPIRE', KEYS[1], math.ceil(live * 2000))
return redis.call('ZCARD', KEYS[1])
"""


def _number(x: float | None) -> str:
    return "" if x is None else repr(float(x))


class RedisStore:
    """The buckets in Redis, shared by every client of `url`; see the module docstring."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 0.5,
        timeout_s: float = 2.0,
        retry_s: float = RETRY_S,
        heartbeat_s: float = 2.0,
        live_s: float = 10.0,
    ) -> None:
        try:
            import redis
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise ConfigError(
                "ratelimit_backend 'redis' needs the redis package: pip install 'agentnb[redis]'"
            ) from None
        self.url = redact_url(url)

        def connect() -> redis.asyncio.Redis:  # a closure: the password stays out of reprs
            return redis.asyncio.Redis.from_url(
                url,
                socket_connect_timeout=connect_timeout_s,
                socket_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )

        self._connect = connect
        try:
            self._client = connect()
        except ValueError as exc:
            raise ConfigError(f"redis_url {self.url!r} is not a valid Redis URL: {exc}") from None
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._heartbeat_s = heartbeat_s
        self._live_s = live_s
        self._closed = False
        self._fallback = Fallback(f"the Redis quota store at {self.url}", retry_s=retry_s)
        self._setup()
        at_fork_in_child(self._after_fork_in_child)

    def _setup(self) -> None:
        self.client_id = secrets.token_hex(8)
        self._next_beat = 0.0
        self._scripts = {
            op: self._client.register_script(_PRELUDE + body) for op, body in _SCRIPTS.items()
        }
        self._heartbeat = self._client.register_script(_HEARTBEAT)

    @property
    def live_clients(self) -> int:
        """The clients sharing the quota when last counted (1 before the first count)."""
        return self._fallback.clients

    @property
    def available(self) -> bool:
        """False while an outage is on (between a failure and the next success)."""
        return not self._fallback.down

    # -- the interface -------------------------------------------------------------------
    async def take(self, key: str, limits: Limits, costs: Costs) -> float:
        return await self._apply(
            "take", key, limits, costs, float, lambda b, now: b.take(costs, now)
        )

    async def give(self, key: str, limits: Limits, amounts: Costs) -> None:
        await self._apply("give", key, limits, amounts, _none, lambda b, now: b.give(amounts, now))

    async def lower_to(self, key: str, limits: Limits, remaining: Remaining) -> None:
        await self._apply(
            "lower_to", key, limits, remaining, _none, lambda b, now: b.lower_to(remaining, now)
        )

    async def pause(self, key: str, limits: Limits, until: float) -> None:
        await self._apply(
            "pause", key, limits, (until - time.time(),), _none, lambda b, now: b.pause(until)
        )

    async def snapshot(self, key: str, limits: Limits) -> tuple[tuple[float, float, float], float]:
        return await self._apply("snapshot", key, limits, (), _read_snapshot, snapshot_of)

    async def aclose(self) -> None:
        """Leave the live clients (when Redis is there) and close the connections."""
        if self._closed:
            return
        self._closed = True
        if not self._fallback.down:
            with contextlib.suppress(*self._errors):
                await self._client.zrem(PREFIX + "clients", self.client_id)
        await self._client.aclose()

    # -- on the loop -----------------------------------------------------------------------
    async def _apply(
        self,
        op: str,
        key: str,
        limits: Limits,
        args: Sequence[float | None],
        parse: Callable[[Any], T],
        step: Callable[[Buckets, float], T],
    ) -> T:
        fallback = self._fallback
        if not self._closed and fallback.try_shared():
            argv = [*map(_number, limits.per_minute()), _number(limits.burst_s)]
            argv += map(_number, args)
            try:
                if time.monotonic() >= self._next_beat:
                    await self._beat()
                raw = await self._scripts[op](keys=[PREFIX + "b:" + key], args=argv)
            except self._errors as exc:
                fallback.failed(exc)
            else:
                fallback.succeeded()
                return parse(raw)
        return fallback.apply(key, limits, step)

    async def _beat(self) -> None:
        self._next_beat = time.monotonic() + self._heartbeat_s  # before the await: one at a time
        count = await self._heartbeat(
            keys=[PREFIX + "clients"], args=[self.client_id, repr(self._live_s)]
        )
        self._fallback.clients = max(1, int(count))

    # -- fork ------------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        # The parent's connections (and the loop they belong to) are not the child's.
        abandon(self._client)
        if not self._closed:
            self._client = self._connect()
            self._setup()


def _none(raw: object) -> None:
    return None


def _read_snapshot(raw: list[bytes]) -> tuple[tuple[float, float, float], float]:
    l1, l2, l3 = (float(x) if x else float("inf") for x in raw[:3])
    paused, server_now = float(raw[3]), float(raw[4])
    # The server's instant, as this machine's clock reads it.
    return (l1, l2, l3), (paused - server_now + time.time() if paused else 0.0)
