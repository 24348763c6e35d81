"""The simulator's failures: injected and random faults, and its requests-per-minute limit.

A fault is one of `FAULT_KINDS`. `FaultScript` holds the faults a test injected for the next
calls; `random_fault` draws one from a call's digest (seeded, so a run repeats), and `FaultRuns`
draws them in runs (overload comes in bursts, not independent coin flips); `fail` raises the
`agentnb.errors` error a fault stands for, after the share of the latency a server would take to
fail. `RpmWindow` refuses calls past a sliding one-minute limit (the API's own quota rules are
`agentnb.backends.sim_limits`).

Example:
    >>> script = FaultScript()
    >>> script.inject("overloaded", times=1, retry_after=2.0, agent=None)
    >>> script.pick("writer"), script.pick("writer")
    (('overloaded', 2.0), None)
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    BadRequestError,
    OverloadedError,
    RateLimitError,
    RetryableError,
    ServerError,
    SpendLimitError,
)
from .sim_answer import mix

__all__ = [
    "DEFAULT_FAULTS",
    "FAULT_KINDS",
    "FaultRuns",
    "FaultScript",
    "RpmWindow",
    "check_fault_kinds",
    "fail",
    "random_fault",
]

#: Every fault the simulator can produce (`fault_kinds` and `inject()` take these names).
FAULT_KINDS = (
    "rate_limit",
    "server_error",
    "overloaded",
    "timeout",
    "connection",
    "bad_request",
    "authentication",
    "spend_limit",
    "invalid_output",  # no error: a structured answer that breaks its schema
)
#: The faults `fault_rate` draws from unless told otherwise: the ones a retry can cure.
DEFAULT_FAULTS = ("rate_limit", "server_error", "overloaded", "timeout", "connection")
_FAIL_FRACTION = 0.25  # faults surface after this share of the call's latency
_RPM_WINDOW_S = 60.0
_FAULT_ERRORS: dict[str, tuple[type[BackendError], int | None, str]] = {
    "server_error": (ServerError, 500, "simulated internal server error (500)"),
    "overloaded": (OverloadedError, 529, "simulated overload (529)"),
    "connection": (BackendConnectionError, None, "simulated connection reset"),
    "bad_request": (BadRequestError, 400, "simulated invalid request (400)"),
    "authentication": (AuthenticationError, 401, "simulated invalid API key (401)"),
    "spend_limit": (
        SpendLimitError,
        429,
        "simulated spend limit: you have reached your specified API usage limits",
    ),
}

#: A fault to raise: its kind and the retry-after hint it carries (None: the default).
Fault = tuple[str, float | None]


def check_fault_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """`kinds` as a tuple, or ValueError naming the unknown ones."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; choose from {list(FAULT_KINDS)}")
    return kinds


@dataclass(slots=True)
class _Injected:
    kind: str
    remaining: int
    retry_after: float | None
    agent: str | None


class FaultScript:
    """Faults injected for the next calls, in the order they were injected (`entries`)."""

    def __init__(self) -> None:
        self.entries: list[_Injected] = []

    def inject(self, kind: str, times: int, retry_after: float | None, agent: str | None) -> None:
        """Make the next `times` calls (only `agent`'s, if given) fail with fault `kind`."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {list(FAULT_KINDS)}")
        if times >= 1:
            self.entries.append(_Injected(kind, times, retry_after, agent))

    def pick(self, agent: str) -> Fault | None:
        """The fault the next call of `agent` gets, used up; None if none is scripted for it."""
        for i, entry in enumerate(self.entries):
            if entry.agent is None or entry.agent == agent:
                entry.remaining -= 1
                if entry.remaining <= 0:
                    del self.entries[i]
                return entry.kind, entry.retry_after
        return None


def random_fault(digest: int, n: int, rate: float, kinds: tuple[str, ...]) -> Fault | None:
    """A fault with probability `rate`, drawn from the request's digest and the call number."""
    if not (rate and kinds):
        return None
    x = mix(digest ^ (n * 0x9E3779B97F4A7C15))
    if (x & 0xFFFFFFFF) / 4294967296.0 < rate:
        return kinds[(x >> 32) % len(kinds)], None
    return None


class FaultRuns:
    """Random faults in runs of mean length `burst`, a share `rate` of the calls overall.

    A two-state Markov chain over the calls in the order they start: between runs a call starts
    one with probability `rate / (burst * (1 - rate))`; within a run the next call stays in it
    with probability `1 - 1 / burst`, so runs average `burst` calls and the share of faulty calls
    is `rate`. (Past `rate = burst / (burst + 1)` every call between runs starts one and runs grow
    longer than `burst`, to keep the share.) A run repeats one fault kind. The draws come from
    the call's digest and number, like `random_fault`'s, so a seeded run of calls repeats.
    `burst` 1 is `random_fault`: independent draws.

    Example:
        >>> runs = FaultRuns(burst=4.0)
        >>> faults = [runs.draw(0, n, 0.2, ("overloaded",)) for n in range(1, 2001)]
        >>> 0.1 < sum(f is not None for f in faults) / len(faults) < 0.3
        True
    """

    __slots__ = ("burst", "kind")

    def __init__(self, burst: float = 1.0) -> None:
        if not 1.0 <= burst < math.inf:
            raise ValueError(f"fault_burst must be at least 1, got {burst!r}")
        self.burst = burst
        self.kind: str | None = None  # the kind of the run in progress; None between runs

    def draw(self, digest: int, n: int, rate: float, kinds: tuple[str, ...]) -> Fault | None:
        """The fault of call number `n` (None: it succeeds); moves the chain on."""
        burst = self.burst
        if burst <= 1.0:
            return random_fault(digest, n, rate, kinds)
        if not (rate and kinds):
            self.kind = None
            return None
        x = mix(digest ^ (n * 0x9E3779B97F4A7C15))
        u = (x & 0xFFFFFFFF) / 4294967296.0
        if rate <= burst / (burst + 1.0):
            start, stay = rate / (burst * (1.0 - rate)), 1.0 - 1.0 / burst
        else:
            start, stay = 1.0, 1.0 - (1.0 - rate) / rate
        kind = self.kind
        if kind is not None and kind in kinds:
            if u < stay:
                return kind, None
            self.kind = None
            return None
        if u < start:
            self.kind = kinds[(x >> 32) % len(kinds)]
            return self.kind, None
        self.kind = None
        return None


async def fail(
    fault: Fault, *, delay: float, request_id: str, hang_s: float, retry_after_s: float
) -> None:
    """Raise the error of `fault` after a share of `delay`; a `timeout` hangs `hang_s` first.

    A `rate_limit` without its own retry-after hint carries `retry_after_s`.
    """
    kind, retry_after = fault
    if kind == "timeout":
        await asyncio.sleep(hang_s)
        raise BackendTimeoutError(
            f"simulated timeout: no answer within {hang_s:g}s", request_id=request_id
        )
    if delay > 0:
        await asyncio.sleep(delay * _FAIL_FRACTION)
    if kind == "rate_limit":
        wait = retry_after_s if retry_after is None else retry_after
        raise RateLimitError(
            f"simulated rate limit (429); retry after {wait:g}s",
            request_id=request_id,
            retry_after=wait,
        )
    cls, status, message = _FAULT_ERRORS[kind]
    if status is not None and issubclass(cls, RetryableError):  # a server's answer
        raise cls(message, status_code=status, request_id=request_id, retry_after=retry_after)
    raise cls(message, status_code=status, request_id=request_id)


class RpmWindow:
    """A requests-per-minute limit over a sliding minute (it holds at most `limit` times)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"rpm_limit must be at least 1, got {limit!r}")
        self.limit = limit
        self._starts: collections.deque[float] = collections.deque()

    def admit(self, now: float, request_id: str) -> None:
        """Count a call starting at `now`, or raise `RateLimitError` saying when a slot frees."""
        starts = self._starts
        while starts and now - starts[0] >= _RPM_WINDOW_S:
            starts.popleft()
        if len(starts) >= self.limit:
            raise RateLimitError(
                f"simulated rate limit: more than {self.limit} requests per minute",
                request_id=request_id,
                retry_after=max(0.0, starts[0] + _RPM_WINDOW_S - now),
            )
        starts.append(now)
