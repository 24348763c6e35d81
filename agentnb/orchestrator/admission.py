"""The admission stage: may this attempt go now? Taken by every attempt, released after it.

Admission wraps each attempt, not the call: a call waiting out a backoff holds no slot. Today an
admission is a concurrency limit; quota buckets (requests and tokens per minute) and budgets plug
in here as further `Admission`s, and a batch path as another implementation.

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
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .prepare import PreparedCall

__all__ = ["Admission", "ConcurrencyLimit", "Slot", "Unlimited"]


class Slot(Protocol):
    """One attempt's way in: `await slot.acquire()` ... `slot.release()`, or `async with`."""

    async def acquire(self) -> None: ...

    def release(self) -> None: ...

    async def __aenter__(self) -> None: ...

    async def __aexit__(self, *exc: object) -> None: ...


class Admission(Protocol):
    """Lets attempts go: `async with admission.slot(call): <one attempt>`."""

    def slot(self, call: PreparedCall | None) -> Slot: ...


class ConcurrencyLimit:
    """At most `limit` attempts in flight at once (first come, first served)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit)
        self._slot = _Slot(self)
        self.in_flight = 0

    def slot(self, call: PreparedCall | None) -> _Slot:
        return self._slot

    def __repr__(self) -> str:
        return f"ConcurrencyLimit({self.limit}, in_flight={self.in_flight})"


class _Slot:
    __slots__ = ("_limit", "_semaphore")

    def __init__(self, limit: ConcurrencyLimit) -> None:
        self._limit = limit
        self._semaphore = limit._semaphore

    async def acquire(self) -> None:
        await self._semaphore.acquire()
        self._limit.in_flight += 1

    def release(self) -> None:
        self._limit.in_flight -= 1
        self._semaphore.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class Unlimited:
    """No limit: for attempts whose caller already limits them (the workflow scheduler)."""

    in_flight = 0

    def slot(self, call: PreparedCall | None) -> Unlimited:
        return self

    async def acquire(self) -> None:
        return None

    def release(self) -> None:
        return None

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None
