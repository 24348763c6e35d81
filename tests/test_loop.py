"""The home loop: blocking and async bridges, cancellation, and the running-loop case."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from agentnb.loop import (
    LOOP_KINDS,
    HomeLoop,
    get_home_loop,
    in_home_loop,
    run_async,
    run_sync,
    swap_home_loop,
)


@pytest.fixture(autouse=True, params=LOOP_KINDS)
def home_loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on a uvloop home loop and on a plain asyncio one."""
    kind = request.param
    home = HomeLoop(name=f"agentnb-test-{kind}", kind=kind)
    previous = swap_home_loop(home)
    try:
        yield kind
    finally:
        swap_home_loop(previous)
        home.stop()


def test_the_home_loop_is_of_the_asked_kind(home_loop_kind: str) -> None:
    async def loop_type() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert get_home_loop().kind == home_loop_kind
    assert run_sync(loop_type()).startswith("uvloop" if home_loop_kind == "uvloop" else "asyncio")


def test_items_cross_from_the_home_loop_to_threads_and_loops() -> None:
    async def numbers(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    home = get_home_loop()
    assert list(home.iterate(numbers(5))) == [0, 1, 2, 3, 4]

    async def elsewhere() -> list[int]:
        return [i async for i in home.aiterate(numbers(4))]

    assert asyncio.run(elsewhere()) == [0, 1, 2, 3]

    async def broken() -> AsyncIterator[int]:
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(home.iterate(broken()))


async def where() -> int | None:
    await asyncio.sleep(0)
    return threading.get_ident()


def test_run_sync_runs_on_home_thread() -> None:
    home = get_home_loop()
    assert run_sync(where()) == home.thread.ident
    assert not in_home_loop()


def test_run_sync_works_inside_a_running_loop() -> None:
    # The Jupyter case: a loop is already running in this thread, asyncio.run would fail.
    async def cell() -> int | None:
        return run_sync(where())

    assert asyncio.run(cell()) == get_home_loop().thread.ident


async def test_run_async_from_another_loop() -> None:
    assert await run_async(where()) == get_home_loop().thread.ident


async def test_run_async_on_home_loop_does_not_hop() -> None:
    async def nested() -> tuple[bool, int | None]:
        return in_home_loop(), await run_async(where())

    inside, ident = await run_async(nested())
    assert inside and ident == get_home_loop().thread.ident


def test_blocking_call_from_home_loop_is_refused() -> None:
    async def bad() -> None:
        run_sync(asyncio.sleep(0))

    with pytest.raises(RuntimeError, match="async API"):
        run_sync(bad())


async def test_cancelling_the_awaiter_cancels_home_work() -> None:
    state = {"started": False, "cancelled": False}

    async def slow() -> None:
        state["started"] = True
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    task = asyncio.ensure_future(run_async(slow()))
    while not state["started"]:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if state["cancelled"]:
            break
        await asyncio.sleep(0.005)
    assert state["cancelled"]


def test_keyboard_interrupt_cancels_home_work() -> None:
    """Ctrl-C (SIGINT, the kernel's stop button) while a cell waits cancels the work in flight."""
    started = threading.Event()
    state = {"cancelled": False, "finished": False}

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
            state["finished"] = True
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    assert threading.current_thread() is threading.main_thread()

    def interrupt() -> None:
        started.wait(5)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_sync(slow())
    assert state["cancelled"] and not state["finished"]
    assert time.monotonic() - t0 < 25  # it did not wait for the 30 s sleep
    assert run_sync(where()) == get_home_loop().thread.ident  # the loop still works
