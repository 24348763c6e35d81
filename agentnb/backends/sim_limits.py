"""The simulator's quota: rate limits, an acceleration limit and a spend limit, as the API has.

`SimQuota` is what `SimulatedBackend(limits=..., spend_limit_usd=...)` (the `sim_limits` and
`sim_spend_limit_usd` settings) enforces, so that pacing, retries and the rate-limit headers can
be tested offline against the rules of the Messages API:

- **Per model class.** `limits` maps a class (`sonnet`, `opus`, `haiku`, see
  `agentnb.quota.model_class`) to `{rpm, itpm, otpm, burst_s, ramp_s}`; `"*"` gives the limits of
  every class not listed (each such class still has buckets of its own, as on the API).
- **Continuous refill.** Each limit is an `agentnb.quota.Buckets` bucket refilled continuously and
  holding `burst_s` seconds' worth (default one second): 60 rpm is one request a second.
- **What a request costs.** One request; input tokens = uncached input + cache writes (cache
  reads do not count toward ITPM, the API's cache-aware rule); output tokens = the request's
  `max_tokens`, taken when it starts, the unused part (`max_tokens` - output tokens) given back
  when its answer ends (all of it when the call fails before answering).
- **Refusals.** A request that does not fit raises `RateLimitError` whose message names the
  limit hit, with `retry_after` in whole seconds rounded up (at least 1), as the API's
  `retry-after` header, and `limits` set (what the headers would say).
- **Acceleration (`ramp_s`).** After `ramp_s` seconds without an admitted request of a class (and
  before its first), the next one starts a ramp: for `ramp_s` seconds the rate allowed grows
  linearly from a quarter of the limit to all of it, so what the class may have taken since the
  ramp began, `t` seconds in, is a quarter of the burst plus that rate's integral:
  `burst/4 + rate * (t/4 + 3 t^2 / (8 ramp_s))` of each limited kind. The ramp's first request
  always fits it; a request past the ramp is refused with a 429 saying usage rose too sharply
  after an idle period. The buckets apply as well.
- **Spend limit (`spend_limit_usd`).** Once the list-price cost (`agentnb.pricing.prices`) of the
  answered calls reaches it, every request gets the API's spend-limit 429 (`SpendLimitError`,
  "usage limits" in its message, no retry-after). A call cancelled mid-answer counts as answered.

Example:
    >>> q = SimQuota({"*": {"rpm": 60}})
    >>> ticket = q.admit("claude-sonnet-5-5", 10, 100, now=0.0, request_id="r1")
    >>> try:
    ...     q.admit("claude-sonnet-5-5", 10, 100, now=0.5, request_id="r2")
    ... except RateLimitError as exc:
    ...     print(exc.retry_after, exc)  # doctest: +ELLIPSIS
    1.0 simulated rate limit: ... the sonnet limit of 60 requests per minute; retry after 1 s
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from ..errors import RateLimitError, SpendLimitError
from ..quota import LIMIT_KEYS, Buckets, Costs, Level, Limits, RateLimits, model_class

if TYPE_CHECKING:
    from ..pricing import PriceTable
    from .base import Usage

__all__ = ["QUOTA_KEYS", "SimQuota", "Ticket", "retry_after_seconds"]

#: The keys of one `sim_limits` entry.
QUOTA_KEYS = (*LIMIT_KEYS, "ramp_s")
_KIND_NAMES = ("requests", "input tokens", "output tokens")
_RAMP_FLOOR = 0.25  # a ramp starts at this share of the limit
_MEMO_MODELS = 4096  # model ids remembered with their class's quota
_EPS = 1e-9


def retry_after_seconds(wait: float) -> float:
    """A wait as the API's `retry-after` says it: whole seconds, rounded up, at least 1.

    Example:
        >>> retry_after_seconds(0.2), retry_after_seconds(1.0), retry_after_seconds(1.01)
        (1.0, 1.0, 2.0)
    """
    return float(max(1, math.ceil(wait - _EPS)))


class _ClassQuota:
    """The buckets of one model class, and its ramp after idle periods."""

    __slots__ = (
        "buckets",
        "last_admit",
        "limited",
        "name",
        "ramp_s",
        "ramp_start",
        "ramp_taken",
    )

    def __init__(self, name: str, limits: Limits, ramp_s: float | None, now: float) -> None:
        self.name = name
        self.buckets = Buckets(limits, now)
        # (kind, per-minute limit as the headers say it) of each limited kind
        self.limited = [(k, int(x)) for k, x in enumerate(limits.per_minute()) if x is not None]
        self.ramp_s = ramp_s
        self.last_admit = -math.inf
        self.ramp_start = -math.inf
        self.ramp_taken = [0.0, 0.0, 0.0]

    def ramp_wait(self, costs: Costs, now: float) -> float:
        """Seconds until `costs` fit the ramp (0.0: they fit, or no ramp is on); starts a ramp
        when the class has been idle."""
        ramp_s = self.ramp_s
        if ramp_s is None:
            return 0.0
        if now - self.last_admit >= ramp_s:  # idle: a new ramp, its first request fits
            self.ramp_start = now
            self.ramp_taken = [0.0, 0.0, 0.0]
            return 0.0
        t = now - self.ramp_start
        if t >= ramp_s:
            return 0.0
        wait = 0.0
        b = self.buckets
        for k in range(3):
            rate, taken = b.rates[k], self.ramp_taken[k]
            if math.isinf(rate) or taken == 0.0:
                continue
            need = taken + costs[k]
            if need <= _ramp_allowed(b.caps[k], rate, ramp_s, t) + _EPS:
                continue
            # allowed(x) = need: a x^2 + c x + (cap/4 - need) = 0, a = 3 rate / (8 ramp_s)
            a, c = 3.0 * rate / (8.0 * ramp_s), rate * _RAMP_FLOOR
            d = need - b.caps[k] * _RAMP_FLOOR
            x = (-c + math.sqrt(c * c + 4.0 * a * d)) / (2.0 * a)
            wait = max(wait, min(x, ramp_s) - t)
        return wait

    def take(self, costs: Costs, now: float) -> None:
        self.last_admit = now
        if now - self.ramp_start < (self.ramp_s or 0.0):
            taken = self.ramp_taken
            for k in range(3):
                taken[k] += costs[k]

    def give_back(self, output_tokens: float, now: float) -> None:
        """Output tokens reserved and not used: back into the bucket (and the ramp's count)."""
        self.buckets.give((0.0, 0.0, output_tokens), now)
        if now - self.ramp_start < (self.ramp_s or 0.0):
            self.ramp_taken[2] = max(0.0, self.ramp_taken[2] - output_tokens)

    def refusal(self, costs: Costs, bucket_wait: float, ramp_wait: float, now: float) -> str:
        """What a refused request is told: the limit it hit (the one that holds it longest)."""
        b = self.buckets
        if ramp_wait > bucket_wait:
            share = _RAMP_FLOOR + (1 - _RAMP_FLOOR) * (now - self.ramp_start) / (self.ramp_s or 1)
            return (
                f"simulated acceleration limit: usage of {self.name} models rose too sharply "
                f"after an idle period; ramp up gradually ({share:.0%} of the rate limit is "
                f"allowed now, all of it {self.ramp_s:g} s after the ramp began)"
            )
        worst, most = 0, -1.0
        for k in range(3):
            need = min(costs[k], b.caps[k]) - b.levels[k]
            if need > _EPS and need / b.rates[k] > most:
                worst, most = k, need / b.rates[k]
        limit = b.limits.per_minute()[worst]
        return (
            f"simulated rate limit: this request would exceed the {self.name} limit of "
            f"{limit:g} {_KIND_NAMES[worst]} per minute"
        )

    def rate_limits(self, now: float) -> RateLimits:
        """What the API's rate-limit headers would say of this class now."""
        b = self.buckets
        b.refill(now)
        levels, rates, caps = b.levels, b.rates, b.caps
        out: list[Level | None] = [None, None, None]
        for k, per_minute in self.limited:
            level = levels[k]
            out[k] = Level(per_minute, int(level) if level > 0 else 0, (caps[k] - level) / rates[k])
        return RateLimits(out[0], out[1], out[2], time.time())


def _ramp_allowed(cap: float, rate: float, ramp_s: float, t: float) -> float:
    return cap * _RAMP_FLOOR + rate * (_RAMP_FLOOR * t + 3.0 * t * t / (8.0 * ramp_s))


class Ticket(NamedTuple):
    """An admitted call's hold on the quota, settled (`SimQuota.settle`) when the call ends."""

    quota: _ClassQuota | None
    model: str
    reserved: int  # output tokens taken at the start: the request's max_tokens


class SimQuota:
    """The simulator's quota per model class, its acceleration limit and its spend limit.

    See the module docstring for the rules. `now` is the simulator's clock (monotonic);
    `RateLimits.received` is wall time, as for a response from the API.
    """

    def __init__(
        self,
        limits: Mapping[str, Mapping[str, float]],
        spend_limit_usd: float | None = None,
        *,
        prices: PriceTable | None = None,
    ) -> None:
        self._limits: dict[str, tuple[Limits, float | None]] = {}
        for cls, entry in limits.items():
            unknown = set(entry) - set(QUOTA_KEYS)
            if unknown:
                raise ValueError(f"sim_limits[{cls!r}]: unknown keys {sorted(unknown)}")
            if not all(math.isfinite(v) and v > 0 for v in entry.values()):
                raise ValueError(f"sim_limits[{cls!r}]: every limit must be a number above 0")
            quota = Limits.from_mapping({k: v for k, v in entry.items() if k in LIMIT_KEYS})
            if quota.any:
                self._limits[cls] = (quota, entry.get("ramp_s"))
        if spend_limit_usd is not None and not spend_limit_usd >= 0:
            raise ValueError(f"spend_limit_usd must be at least 0, got {spend_limit_usd!r}")
        self.spend_limit_usd = spend_limit_usd
        self.spent_usd = 0.0
        if prices is None and spend_limit_usd is not None:
            from ..pricing import prices  # here: agentnb.pricing imports the backends package
        self._prices = prices
        self._classes: dict[str, _ClassQuota | None] = {}
        self._models: dict[str, _ClassQuota | None] = {}

    @property
    def limited(self) -> bool:
        """Whether any model class has rate limits (so responses carry rate-limit headers)."""
        return bool(self._limits)

    def admit(
        self, model: str, input_tokens: int, max_tokens: int, *, now: float, request_id: str
    ) -> Ticket | None:
        """Take a request's costs, or raise the 429 the API would send (see the module doc).

        `input_tokens` is what counts toward ITPM (uncached input + cache writes). Returns the
        ticket to `settle` when the call ends, or None when nothing needs settling.
        """
        spend_limit = self.spend_limit_usd
        quota = self._quota_of(model, now)
        if spend_limit is not None and self.spent_usd >= spend_limit:
            spent = SpendLimitError(
                "simulated spend limit: you have reached your specified API usage limits "
                f"(USD {spend_limit:g} at list prices)",
                status_code=429,
                request_id=request_id,
            )
            spent.limits = None if quota is None else quota.rate_limits(now)
            raise spent
        if quota is None:
            return None if spend_limit is None else Ticket(None, model, max_tokens)
        costs: Costs = (1.0, float(input_tokens), float(max_tokens))
        ramp_wait = quota.ramp_wait(costs, now) if quota.ramp_s is not None else 0.0
        bucket_wait = (
            quota.buckets.wait_for(costs, now) if ramp_wait else quota.buckets.take(costs, now)
        )
        if ramp_wait or bucket_wait:
            retry_after = retry_after_seconds(max(ramp_wait, bucket_wait))
            message = quota.refusal(costs, bucket_wait, ramp_wait, now)
            refused = RateLimitError(
                f"{message}; retry after {retry_after:g} s",
                request_id=request_id,
                retry_after=retry_after,
            )
            refused.limits = quota.rate_limits(now)
            raise refused
        quota.take(costs, now)
        return Ticket(quota, model, max_tokens)

    def settle(self, ticket: Ticket, usage: Usage | None, now: float) -> None:
        """End a call: give back the output tokens it did not use (all of them when `usage` is
        None: it failed before answering) and count what an answer cost toward the spend."""
        quota = ticket.quota
        if quota is not None:
            used = 0 if usage is None else usage.output_tokens
            unused = ticket.reserved - used
            if unused > 0:
                quota.give_back(float(unused), now)
        if usage is not None and self._prices is not None:
            cost = self._prices.cost(ticket.model, usage)
            if cost == cost:  # NaN: a model with no price costs nothing here
                self.spent_usd += cost

    def rate_limits(self, model: str, now: float) -> RateLimits | None:
        """What the rate-limit headers of a response for `model` say now; None: no limits."""
        quota = self._quota_of(model, now)
        return None if quota is None else quota.rate_limits(now)

    def _quota_of(self, model: str, now: float) -> _ClassQuota | None:
        try:
            return self._models[model]
        except KeyError:
            pass
        cls = model_class(model)
        if cls in self._classes:
            quota = self._classes[cls]
        else:
            entry = self._limits.get(cls) or self._limits.get("*")
            quota = None if entry is None else _ClassQuota(cls, entry[0], entry[1], now)
            self._classes[cls] = quota
        if len(self._models) >= _MEMO_MODELS:
            self._models.clear()
        self._models[model] = quota
        return quota

    def __repr__(self) -> str:
        return (
            f"SimQuota(classes={sorted(self._limits)}, spend_limit_usd={self.spend_limit_usd}, "
            f"spent_usd={self.spent_usd:.4f})"
        )
