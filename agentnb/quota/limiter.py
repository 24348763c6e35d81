"""The quota's admission: each attempt waits until the API will accept it, then goes.

One `QuotaLimiter` per (endpoint scope, model class), the unit the API counts a quota in. An
attempt is admitted in three steps, each skipped when it has nothing to do:

1. **the window**: adaptive concurrency (`AdaptiveLimit`): slow start (one more call in flight
   per success, so the window doubles each round trip) up to the first 429 or 529, then
   additive increase and multiplicative decrease (halved once per congestion event), under
   the job's own `max_concurrency`; after an idle spell it starts slowly again, so an
   acceleration limit is not tripped by a sudden ramp;
2. **learning**: while the limits are unknown (not in `rate_limits:`, no response seen yet),
   the first request goes alone and its response's headers say what the limits are, before
   the fan-out starts. A response without rate-limit headers means there is no quota to pace
   to: the limiter steps aside for good (the lean path);
3. **the buckets**: requests, input tokens and output tokens per minute, kept in a
   `BucketStore` (this process, SQLite for every process of the machine, or Redis for every
   machine: `agentnb.quota.stores`). An attempt takes 1 request, its estimated input tokens (a
   local estimate, corrected by the ratio of measured to estimated input) and its `max_tokens`
   as the output reservation (the API's own rule); it waits, first come first served, until
   they fit, so it is sent only when it will be accepted.

When the answer arrives the reservation is reconciled with the usage (unused output and any
over-estimate of input given back; cache reads do not count toward the input limit) and the
levels are lowered to what the headers say is left. A 429 pauses the buckets for its
`retry-after` (or until the headers' reset) for every waiting attempt at once; a spend-limit
429 stops every call of this quota for a minute, each failing in one attempt. Configured
limits can only lower what the headers say (to leave a share of the quota to others).

Example:
    >>> limit = AdaptiveLimit(ceiling=8, start=2)
    >>> limit.limit, [limit.grow() for _ in range(3)] and limit.limit
    (2, 5)
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from .._fork import at_fork_in_child
from ..errors import (
    BackendConnectionError,
    OverloadedError,
    RateLimitError,
    SpendLimitError,
)
from ..orchestrator.admission import ConcurrencyLimit
from ..orchestrator.tokens import estimate_input_tokens
from .buckets import Costs, Limits
from .headers import RateLimits

if TYPE_CHECKING:
    from ..backends import BackendResponse
    from ..orchestrator.prepare import PreparedCall
    from ..orchestrator.records import CallState
    from .stores import BucketStore

__all__ = ["AdaptiveLimit", "QuotaLimiter", "QuotaSlot"]

logger = logging.getLogger("agentnb")

#: Seconds without a call in flight after which the window starts slowly again.
IDLE_RESTART_S = 30.0
#: How long a spend-limit 429 stops the calls of its quota before one is tried again.
SPEND_BLOCK_S = 60.0
#: The pause after a 429 that says neither retry-after nor when the bucket resets.
DEFAULT_PAUSE_S = 1.0
#: The input estimate is raised by this factor: a little too much is given back after the answer,
#: too little would be a 429.
INPUT_MARGIN = 1.05
_HISTORY = 1000  # changes of the window kept for display

State = Literal["learning", "known", "none"]


class AdaptiveLimit(ConcurrencyLimit):
    """A concurrency limit whose size follows the server: see the module docstring.

    `limit` is the whole part of `window`; `history` keeps `(time, limit, why)` for each change.
    """

    def __init__(self, ceiling: int, start: int = 2) -> None:
        start = max(1, min(start, ceiling))
        super().__init__(start)
        self.ceiling = ceiling
        self.start = start
        self.window = float(start)
        self.threshold = float(ceiling)  # slow start until the first cut
        self.history: collections.deque[tuple[float, int, str]] = collections.deque(maxlen=_HISTORY)
        self.history.append((time.time(), start, "start"))
        self._last_cut = -math.inf
        self._idle_since = time.monotonic()

    def _set(self, window: float, why: str) -> None:
        self.window = window
        limit = max(1, min(self.ceiling, int(window)))
        if limit != self.limit:
            self.limit = limit
            self.history.append((time.time(), limit, why))
            self._wake()

    def grow(self) -> None:
        """One success: one more in flight while slow-starting, else 1/window more."""
        if self.window >= self.ceiling:
            return
        step = 1.0 if self.window < self.threshold else 1.0 / self.window
        self._set(min(float(self.ceiling), self.window + step), "increase")

    def cut(self, sent_at: float) -> None:
        """A 429 or 529 for an attempt sent at `sent_at` (monotonic): halve the window, once
        per congestion event (attempts sent before the last cut do not cut again)."""
        if sent_at < self._last_cut:
            return
        self._last_cut = time.monotonic()
        self.threshold = max(1.0, self.window / 2)
        self._set(self.threshold, "decrease")

    def try_acquire(self) -> bool:
        if self.in_flight == 0 and time.monotonic() - self._idle_since > IDLE_RESTART_S:
            # Idle for a while: ramp up again from the start (back to the old window quickly).
            self.threshold = max(self.threshold, self.window)
            self._set(float(self.start), "idle restart")
        return super().try_acquire()

    def release(self, outcome: object = None) -> None:
        if self.in_flight > self.limit:  # after a cut: the slot is not handed on
            self.in_flight -= 1
        else:
            super().release()
        if self.in_flight == 0:
            self._idle_since = time.monotonic()

    def _wake(self) -> None:
        """A bigger window lets waiters in at once, not only as calls end."""
        waiters = self._waiters
        while waiters and self.in_flight < self.limit:
            waiter = waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


class QuotaLimiter:
    """The admission of one quota (one endpoint scope and model class); see the module doc.

    `limits`: the configured limits (None: learn them when `learn`, else there is no quota).
    `ceiling`: the most the adaptive window grows to (`gate.WINDOW_CEILING`).
    """

    def __init__(
        self,
        key: str,
        store: Callable[[], BucketStore],
        *,
        limits: Limits | None,
        learn: bool,
        ceiling: int,
        adaptive: bool = True,
        burst_s: float = 1.0,
    ) -> None:
        self.key = key
        self._store_fn = store
        self._store: BucketStore | None = None
        self.configured = limits
        self.limits = limits
        self.state: State = "known" if limits is not None else "learning" if learn else "none"
        self.burst_s = limits.burst_s if limits is not None else burst_s
        self.window = AdaptiveLimit(ceiling) if adaptive else None
        self.ratio = 1.0  # measured ÷ estimated input tokens (uncached)
        self.sent = 0
        self.admitted = 0
        self.queued = 0  # attempts waiting for the window, the probe or the buckets
        self.in_flight = 0  # attempts admitted and not ended
        self.rate_limited = 0
        self.overloaded = 0
        self.waited_s = 0.0
        self.blocked: SpendLimitError | None = None
        self._blocked_until = 0.0
        self._paused_until = 0.0  # monotonic: a 429 heard here
        self._line: asyncio.Lock | None = None  # FIFO of attempts waiting for the buckets
        self._probe: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        at_fork_in_child(self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._line = None
        self._probe = None
        self._tasks = set()
        if self.window is not None:
            self.window._after_fork_in_child()

    @property
    def store(self) -> BucketStore:
        """Where this quota's buckets live (made when first needed: learning needs none)."""
        if self._store is None:
            self._store = self._store_fn()
        return self._store

    @property
    def active(self) -> bool:
        """False when there is no quota to pace to (attempts skip this limiter)."""
        return self.state != "none"

    # -- admission ----------------------------------------------------------------------------
    async def admit(self, slot: QuotaSlot) -> None:
        """Wait until `slot`'s attempt may go (see the module docstring)."""
        if self.blocked is not None:
            if time.monotonic() < self._blocked_until:
                raise SpendLimitError(
                    str(self.blocked), status_code=429, request_id=self.blocked.request_id
                )
            self.blocked = None
        window = self.window
        if window is not None and not window.try_acquire():
            await window.acquire()
        try:
            while self.state == "learning":
                if self._probe is None:  # this attempt learns the limits, alone
                    self._probe = asyncio.get_running_loop().create_future()
                    slot.probing = True
                    return
                await asyncio.shield(self._probe)
            if self.state == "known":
                await self._take(slot)
        except BaseException:
            if window is not None:
                window.release()
            raise

    async def _take(self, slot: QuotaSlot) -> None:
        request = slot.call.request
        raw = estimate_input_tokens(request)
        estimate = raw * self.ratio * INPUT_MARGIN
        costs: Costs = (1.0, estimate, float(request.max_tokens))
        slot.raw_estimate, slot.costs = raw, costs
        store, key = self.store, self.key
        line = self._line
        if self._paused_until and time.monotonic() < self._paused_until:
            pass  # paused by a 429: wait in line
        elif line is None or not line.locked():  # nobody waits: try at once
            limits = self.limits
            assert limits is not None
            if await store.take(key, limits, costs) <= 0.0:
                return
        if line is None:
            line = self._line = asyncio.Lock()
        t0 = time.perf_counter()
        try:
            async with line:  # first come, first served: only the head asks the store
                while True:
                    pause = self._paused_until - time.monotonic()
                    if pause > 0:  # this process heard the 429: no need to ask the store
                        await asyncio.sleep(pause)
                        continue
                    limits = self.limits
                    assert limits is not None
                    wait = await store.take(key, limits, costs)
                    if wait <= 0.0:
                        return
                    await asyncio.sleep(wait)
        finally:
            waited = time.perf_counter() - t0
            slot.waited += waited
            self.waited_s += waited

    # -- reconciliation -------------------------------------------------------------------------
    def settle(self, slot: QuotaSlot, outcome: object) -> None:
        """The attempt of `slot` ended with `outcome` (a response, an exception or None)."""
        from ..backends import BackendResponse

        costs = slot.costs
        if slot.probing:
            self._end_probe(outcome)
        if isinstance(outcome, BackendResponse):
            self.sent += 1
            if outcome.limits is not None:
                self.learn(outcome.limits)
            # Reconciled before the window lets anyone in, as the server gave the unused part
            # back before it answered: near a full bucket its give-back is capped, and ours,
            # counted after the takes this answer let in, would not be (the buckets would then
            # believe in more than is left, and the take at the edge meet a 429).
            self._reconcile(slot, costs, outcome)
            if self.window is not None:
                self.window.grow()
            return
        error = outcome if isinstance(outcome, BaseException) else None
        limits = getattr(error, "limits", None)
        if isinstance(limits, RateLimits):
            self.learn(limits)
        if isinstance(error, SpendLimitError):
            self.blocked = error
            self._blocked_until = time.monotonic() + SPEND_BLOCK_S
            logger.warning("spend limit reached: %s stops for %g s", self.key, SPEND_BLOCK_S)
        elif isinstance(error, RateLimitError):
            self.rate_limited += 1
            self._pause(error, limits if isinstance(limits, RateLimits) else None)
            if self.window is not None:
                self.window.cut(slot.sent_at)
        elif isinstance(error, OverloadedError):
            self.overloaded += 1
            if self.window is not None:
                self.window.cut(slot.sent_at)
        if costs is None or self.limits is None:
            return
        if isinstance(error, (RateLimitError, OverloadedError, BackendConnectionError)):
            back = costs  # refused or never arrived: the server counted nothing
        else:
            back = (0.0, 0.0, costs[2])  # no answer came: no output was produced
        self._spawn(self.store.give(self.key, self.limits, back))

    def _reconcile(self, slot: QuotaSlot, costs: Costs | None, response: BackendResponse) -> None:
        usage = response.usage
        counted = usage.input_tokens + usage.cache_write_tokens  # cache reads are exempt
        raw = slot.raw_estimate or estimate_input_tokens(slot.call.request)
        if raw > 0:
            # Learn how the local estimate relates to what the API counts toward the limit.
            self.ratio = 0.8 * self.ratio + 0.2 * (counted / raw)
        limits = self.limits
        if limits is None:
            return
        if costs is not None:
            back = (0.0, costs[1] - counted, costs[2] - usage.output_tokens)
            if back[1] or back[2]:
                self._spawn(self.store.give(self.key, limits, back))
        if response.limits is not None:
            self._spawn(self.store.lower_to(self.key, limits, response.limits.remaining()))

    def learn(self, seen: RateLimits) -> None:
        """Take the limits a response's headers state (configured ones can only lower them)."""
        per_minute = list(seen.per_minute())
        if self.configured is not None:
            for k, mine in enumerate(self.configured.per_minute()):
                theirs = per_minute[k]
                if mine is not None and (theirs is None or mine < theirs):
                    per_minute[k] = mine
        limits = Limits(per_minute[0], per_minute[1], per_minute[2], self.burst_s)
        if limits != self.limits and limits.any:
            if self.limits is not None:
                logger.info("quota of %s is now %s", self.key, limits)
            self.limits = limits
            self.state = "known"

    def _end_probe(self, outcome: object) -> None:
        from ..backends import BackendResponse

        probe, self._probe = self._probe, None
        learning = self.state == "learning" and isinstance(outcome, BackendResponse)
        if learning and getattr(outcome, "limits", None) is None:
            self.state = "none"  # a server without rate-limit headers: nothing to pace to
        if probe is not None and not probe.done():
            probe.set_result(None)

    def _pause(self, error: RateLimitError, limits: RateLimits | None) -> None:
        wait = error.retry_after
        if wait is None and limits is not None:
            # No retry-after: wait until the emptiest bucket is back (its reset).
            resets = [lv.reset_s for lv in limits.levels if lv is not None and lv.remaining < 1]
            wait = max(resets) if resets else None
        if wait is None:
            wait = DEFAULT_PAUSE_S
        # At once for the attempts of this process; through the store for the others.
        self._paused_until = max(self._paused_until, time.monotonic() + wait)
        if self.limits is not None:
            self._spawn(self.store.pause(self.key, self.limits, time.time() + wait))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- display ----------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """This quota's state as one row: limits, calls sent, 429s, waits, the window."""
        lim = self.limits or Limits()
        return {
            "quota": self.key,
            "state": self.state,
            "store": None if self._store is None else self._store.name,
            "rpm": lim.rpm,
            "itpm": lim.itpm,
            "otpm": lim.otpm,
            "sent": self.sent,
            "rate_limited": self.rate_limited,
            "overloaded": self.overloaded,
            "waited_s": round(self.waited_s, 3),
            "concurrency": None if self.window is None else self.window.limit,
            "input_ratio": round(self.ratio, 3),
        }

    def __repr__(self) -> str:
        return f"QuotaLimiter({self.key!r}, {self.state}, {self.limits})"


class QuotaSlot:
    """One attempt's way through the orchestrator's slot, then its quota (see `Slot`)."""

    __slots__ = (
        "call",
        "costs",
        "inner",
        "limiter",
        "probing",
        "raw_estimate",
        "sent_at",
        "state",
        "waited",
    )

    def __init__(
        self, inner: Any, limiter: QuotaLimiter, call: PreparedCall, state: CallState | None
    ) -> None:
        self.inner = inner
        self.limiter = limiter
        self.call = call
        self.state = state
        self.costs: Costs | None = None
        self.raw_estimate = 0
        self.probing = False
        self.sent_at = 0.0
        self.waited = 0.0

    def try_acquire(self) -> bool:
        return False  # the quota is asked in `acquire`

    async def acquire(self) -> None:
        inner = self.inner
        if not inner.try_acquire():
            await inner.acquire()
        self.costs, self.probing, waited = None, False, self.waited
        limiter = self.limiter
        limiter.queued += 1
        try:
            await limiter.admit(self)
        except BaseException:
            inner.release()
            raise
        finally:
            limiter.queued -= 1
        limiter.admitted += 1
        limiter.in_flight += 1
        self.sent_at = time.monotonic()
        state = self.state
        if state is not None:
            state.quota_s += self.waited - waited
            window = self.limiter.window
            state.concurrency = window.limit if window is not None else 0

    def release(self, outcome: object = None) -> None:
        limiter = self.limiter
        limiter.in_flight -= 1
        try:
            limiter.settle(self, outcome)
        finally:
            if limiter.window is not None:
                limiter.window.release()
            self.inner.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release(exc[1] if len(exc) > 1 else None)
