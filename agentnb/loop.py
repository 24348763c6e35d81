"""The home event loop: one background thread that all of agentnb's async work runs on.

Why: a Jupyter cell already runs inside an event loop, so `asyncio.run` fails there, and an SDK
client must stay on the loop it was created on. Running everything on one loop thread of our own
makes the same code work from a notebook, a script, a thread or another event loop:

- `run_sync(coro)` blocks the calling thread until `coro` has run on the home loop. A
  `KeyboardInterrupt` while waiting (the kernel's interrupt button) cancels the work there and
  waits for it to unwind before re-raising, so no call is left running.
- `await run_async(coro)` from any other loop awaits it without blocking that loop; cancelling the
  awaiting task cancels the work on the home loop.
- Code already on the home loop just awaits (no hop, no deadlock).

One home loop per process (made lazily, a daemon thread); after `fork` the child makes its own.
`nest_asyncio` is deliberately not used (see DESIGN.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["HomeLoop", "get_home_loop", "in_home_loop", "run_async", "run_sync"]

T = TypeVar("T")


class HomeLoop:
    """An event loop running forever in a daemon thread."""

    def __init__(self, name: str = "agentnb-home-loop") -> None:
        self._ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def is_current(self) -> bool:
        """True when called from code running on this loop's thread."""
        return threading.get_ident() == self.thread.ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the home loop; cancelling the returned future cancels it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the home loop and block until it is done (see module docstring)."""
        if self.is_current():
            coro.close()
            raise RuntimeError(
                "a blocking agentnb call was made from the agentnb loop itself; "
                "use the async API (await ...) in coroutines"
            )
        started = threading.Event()
        finished = threading.Event()
        # Shared with the loop thread; only touched there, so no lock is needed.
        state: dict[str, Any] = {"task": None, "cancelled": False}

        async def runner() -> T:
            started.set()
            state["task"] = asyncio.current_task()
            try:
                if state["cancelled"]:  # interrupted before it could start
                    coro.close()
                    raise asyncio.CancelledError
                return await coro
            finally:
                finished.set()

        def cancel() -> None:
            task = state["task"]
            if task is not None:
                task.cancel()
            else:
                state["cancelled"] = True

        wrapper = runner()
        try:
            # Inside the try: Ctrl-C can land while the work is being handed over, too.
            return self.submit(wrapper).result()
        except KeyboardInterrupt:
            # Cancel the work on the home loop and wait for it to unwind (cancel its children,
            # record them), so nothing is left half-running. The barrier orders this after the
            # cancel and after the wrapper's first step, if it was scheduled at all.
            self.loop.call_soon_threadsafe(cancel)
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop).result(timeout=10)
            if started.is_set():
                finished.wait(timeout=10)
            else:  # never handed over: nothing ran
                wrapper.close()
                coro.close()
            raise

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the home loop from whatever loop the caller is on."""
        if self.is_current():
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self) -> None:
        """Stop the loop and join its thread (tests and interpreter shutdown only)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


_lock = threading.Lock()
_home: HomeLoop | None = None


def get_home_loop() -> HomeLoop:
    """The process-wide home loop, started on first use."""
    global _home
    if _home is None or not _home.thread.is_alive():
        with _lock:
            if _home is None or not _home.thread.is_alive():
                _home = HomeLoop()
    return _home


def in_home_loop() -> bool:
    """True when the caller runs on the home loop's thread."""
    return _home is not None and _home.is_current()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Shortcut for `get_home_loop().run_sync(coro)`."""
    return get_home_loop().run_sync(coro)


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Shortcut for `await get_home_loop().run_async(coro)`."""
    return await get_home_loop().run_async(coro)


def _after_fork_in_child() -> None:
    # The parent's loop thread does not exist in the child; start afresh on first use.
    global _home, _lock
    _home = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
