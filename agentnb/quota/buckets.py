"""Token buckets for a quota: requests, input tokens and output tokens per minute.

The Messages API enforces each per-minute limit as a bucket refilled continuously (a limit of 60
requests per minute is one request a second, not 60 at the top of the minute) that holds a
burst of `burst_s` seconds' worth. `Buckets` is that arithmetic and nothing else: no clock, no
lock, no I/O. The simulator enforces a quota with it, and the admission stage mirrors the
server's buckets with it (in memory, in SQLite or in Redis, `agentnb.quota.stores`).

A request fits when every bucket holds its cost, or, for a cost bigger than the burst, when the
bucket is full; it then takes its whole cost, so a level may go below zero (a debt the refill
pays back). So a request asking for more than a burst is not refused forever, and the long-run
rate is the limit exactly.

Example:
    >>> b = Buckets(Limits(rpm=60, burst_s=1.0), now=0.0)
    >>> b.take((1, 0, 0), now=0.0), b.take((1, 0, 0), now=0.0)
    (0.0, 1.0)
    >>> b.take((1, 0, 0), now=1.0)
    0.0
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["KINDS", "LIMIT_KEYS", "Buckets", "Costs", "Limits"]

#: The three kinds of quota, in the order every tuple of costs or levels uses.
KINDS = ("requests", "input_tokens", "output_tokens")
#: The keys of a quota in `rate_limits:` / `sim_limits:` settings.
LIMIT_KEYS = ("rpm", "itpm", "otpm", "burst_s")
#: What one request takes: (requests, input tokens, output tokens).
Costs = tuple[float, float, float]
_EPS = 1e-9


class Limits(NamedTuple):
    """The per-minute limits of one (endpoint, model class); None: no limit of that kind.

    `burst_s`: each bucket holds this many seconds' worth of its rate (at least one request,
    so a limit under 60 per minute still lets a request through).
    """

    rpm: float | None = None
    itpm: float | None = None
    otpm: float | None = None
    burst_s: float = 1.0

    @classmethod
    def from_mapping(cls, data: dict[str, float]) -> Limits:
        """From a `rate_limits:` entry such as `{rpm: 3000, itpm: 400000}`."""
        return cls(
            data.get("rpm"), data.get("itpm"), data.get("otpm"), float(data.get("burst_s", 1.0))
        )

    @property
    def any(self) -> bool:
        """True when at least one kind is limited."""
        return self.rpm is not None or self.itpm is not None or self.otpm is not None

    def per_minute(self) -> tuple[float | None, float | None, float | None]:
        return (self.rpm, self.itpm, self.otpm)

    def rates(self) -> tuple[float, float, float]:
        """Refill per second of each bucket (`inf` for no limit)."""
        return tuple(math.inf if x is None else x / 60.0 for x in self.per_minute())  # type: ignore[return-value]

    def capacities(self) -> tuple[float, float, float]:
        """Most each bucket holds (`inf` for no limit)."""
        return tuple(  # type: ignore[return-value]
            math.inf if x is None else max(x / 60.0 * self.burst_s, 1.0) for x in self.per_minute()
        )


class Buckets:
    """The three buckets of one quota: levels, refilled continuously; see the module doc.

    `now` is any clock in seconds (monotonic in one process, wall time when shared).
    """

    __slots__ = ("caps", "levels", "limits", "paused_until", "rates", "updated")

    def __init__(self, limits: Limits, now: float, levels: list[float] | None = None) -> None:
        self.limits = limits
        self.rates = limits.rates()
        self.caps = limits.capacities()
        self.levels = list(self.caps) if levels is None else levels
        self.updated = now
        self.paused_until = 0.0

    def set_limits(self, limits: Limits, now: float) -> None:
        """New limits (learned or changed): levels keep their share of the old capacity."""
        self.refill(now)
        old = self.caps
        self.limits, self.rates, self.caps = limits, limits.rates(), limits.capacities()
        for k in range(3):
            cap = self.caps[k]
            if math.isinf(cap):
                self.levels[k] = math.inf
            elif math.isinf(old[k]):
                self.levels[k] = cap
            else:
                self.levels[k] = min(cap, self.levels[k] * cap / old[k])

    def refill(self, now: float) -> None:
        """Bring the levels up to `now`."""
        dt = now - self.updated
        if dt <= 0:
            return
        self.updated = now
        levels, rates, caps = self.levels, self.rates, self.caps
        for k in range(3):
            if levels[k] < caps[k]:
                levels[k] = min(caps[k], levels[k] + rates[k] * dt)

    def wait_for(self, costs: Costs, now: float) -> float:
        """Seconds until `costs` fit (0.0: they fit now); the levels are refilled to `now`."""
        self.refill(now)
        wait = self.paused_until - now if self.paused_until > now else 0.0
        levels, rates, caps = self.levels, self.rates, self.caps
        for k in range(3):
            need = min(costs[k], caps[k]) - levels[k]
            if need > _EPS:
                wait = max(wait, need / rates[k])
        return wait

    def take(self, costs: Costs, now: float) -> float:
        """Take `costs` if they fit now and return 0.0; else take nothing and return the wait."""
        wait = self.wait_for(costs, now)
        if wait <= 0.0:
            levels = self.levels
            for k in range(3):
                levels[k] -= costs[k]
        return wait

    def give(self, amounts: Costs, now: float) -> None:
        """Give back `amounts` (a negative amount takes more), never above the capacity."""
        self.refill(now)
        levels, caps = self.levels, self.caps
        for k in range(3):
            if amounts[k]:
                levels[k] = min(caps[k], levels[k] + amounts[k])

    def lower_to(
        self, remaining: tuple[float | None, float | None, float | None], now: float
    ) -> None:
        """Never believe more is left than the server said (None: it did not say)."""
        self.refill(now)
        levels, caps = self.levels, self.caps
        for k in range(3):
            r = remaining[k]
            if r is not None and r < levels[k] and not math.isinf(caps[k]):  # a kind not limited
                levels[k] = r

    def pause(self, until: float) -> None:
        """Nothing is taken before `until` (a 429's retry-after, for every waiting call)."""
        if until > self.paused_until:
            self.paused_until = until

    def remaining(self, now: float) -> tuple[float, float, float]:
        """The levels at `now` (never below zero), as the server's `remaining` headers say."""
        self.refill(now)
        return tuple(max(0.0, x) for x in self.levels)  # type: ignore[return-value]

    def full_in(self, now: float) -> tuple[float, float, float]:
        """Seconds until each bucket is full again (its `reset`); 0.0 for an unlimited one."""
        self.refill(now)
        return tuple(  # type: ignore[return-value]
            0.0 if math.isinf(c) else max(0.0, (c - x) / r)
            for x, r, c in zip(self.levels, self.rates, self.caps, strict=True)
        )

    def __repr__(self) -> str:
        levels = ", ".join(f"{x:.0f}" for x in self.levels)
        return f"Buckets({self.limits}, levels=[{levels}])"
