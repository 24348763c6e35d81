"""The admission stage: may this attempt go now? Taken by every attempt, released after it.

Admission wraps each attempt, not the call: a call waiting out a backoff holds no slot. An
admission is a concurrency limit; the quota (`agentnb.quota.limiter`: adaptive concurrency and
requests/tokens-per-minute buckets) wraps the slot of every attempt whose quota is known.

Example:
    >>> import asyncio
    >>> limit = ConcurrencyLimit(2)
    >>> async def one():
    ...     async with limit.slot(None):
    ...         return limit.in_flight
    >>> asyncio.run(one())
    1
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Protocol

from .._fork import at_fork_in_child

if TYPE_CHECKING:
    from .prepare import PreparedCall

__all__ = ["Admission", "ConcurrencyLimit", "Slot", "Unlimited"]


class Slot(Protocol):
    """One attempt's way in: `if not slot.try_acquire(): await slot.acquire()`, then
    `slot.release(outcome)` when the attempt ends (or `async with slot:`). `outcome` is the
    attempt's `BackendResponse` or exception (None: not known); a quota reconciles with it."""

    def try_acquire(self) -> bool: ...

    async def acquire(self) -> None: ...

    def release(self, outcome: object = None) -> None: ...

    async def __aenter__(self) -> None: ...

    async def __aexit__(self, *exc: object) -> None: ...


class Admission(Protocol):
    """Lets attempts go: `async with admission.slot(call): <one attempt>`."""

    def slot(self, call: PreparedCall | None) -> Slot: ...


class ConcurrencyLimit:
    """At most `limit` attempts in flight at once, first come, first served.

    A counter and a queue of waiters rather than an `asyncio.Semaphore`: taking a free slot is
    a comparison (no coroutine, no scan of the waiters), and nothing is bound to an event loop
    until someone waits. A released slot is handed straight to the first waiter. A forked child
    starts with nothing in flight: the attempts holding and awaiting slots are the parent's.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        at_fork_in_child(self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self.in_flight = 0
        self._waiters = deque()  # futures of the parent's loop: nobody here will settle them

    def slot(self, call: PreparedCall | None) -> ConcurrencyLimit:
        return self

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits for it."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting for one if need be."""
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over as we were cancelled: pass it on
            raise

    def release(self, outcome: object = None) -> None:
        """Give a slot back: to the first waiter still waiting, else to the pool."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # a cancelled waiter is done: skip it
                waiter.set_result(None)  # the slot passes on; in_flight is unchanged
                return
        self.in_flight -= 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        waiting = len(self._waiters)
        return f"ConcurrencyLimit({self.limit}, in_flight={self.in_flight}, waiting={waiting})"


class Unlimited:
    """No limit: for attempts whose caller already limits them (the workflow scheduler)."""

    in_flight = 0

    def slot(self, call: PreparedCall | None) -> Unlimited:
        return self

    def try_acquire(self) -> bool:
        return True

    async def acquire(self) -> None:
        return None

    def release(self, outcome: object = None) -> None:
        return None

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None
