"""The admission stage's concurrency limit: a bound, first come first served, cancellation."""

from __future__ import annotations

import asyncio

from agentnb.orchestrator import ConcurrencyLimit, Unlimited


async def test_at_most_limit_in_flight_and_waiters_served_in_order() -> None:
    limit = ConcurrencyLimit(2)
    order: list[int] = []
    peak = 0

    async def attempt(i: int) -> None:
        nonlocal peak
        async with limit.slot(None):
            peak = max(peak, limit.in_flight)
            order.append(i)
            await asyncio.sleep(0.001)

    await asyncio.gather(*(attempt(i) for i in range(10)))
    assert peak == 2 and order == list(range(10)) and limit.in_flight == 0


async def test_a_cancelled_waiter_gives_its_slot_to_the_next() -> None:
    limit = ConcurrencyLimit(1)
    assert limit.try_acquire() and not limit.try_acquire()
    first = asyncio.ensure_future(limit.acquire())
    second = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)
    first.cancel()  # gives up while waiting
    limit.release()  # the slot skips the cancelled waiter
    await asyncio.wait_for(second, 1)
    assert first.cancelled() and limit.in_flight == 1
    limit.release()
    assert limit.in_flight == 0 and limit.try_acquire()


async def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_is_passed_on() -> None:
    limit = ConcurrencyLimit(1)
    await limit.acquire()
    first = asyncio.ensure_future(limit.acquire())
    second = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)
    limit.release()  # handed to `first` ...
    first.cancel()  # ... which is cancelled before it runs: it must pass the slot on
    await asyncio.wait_for(second, 1)
    assert limit.in_flight == 1
    limit.release()
    assert limit.in_flight == 0


async def test_unlimited_never_waits() -> None:
    free = Unlimited()
    assert all(free.try_acquire() for _ in range(1000))
    async with free.slot(None):
        pass
