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

One home loop per process (made lazily, a daemon thread); after `fork` the child abandons the
parent's (its thread does not exist there; see `agentnb._fork`) and makes its own on first use.
The loop is uvloop's where `uvloop` is installed (its per-task cost is lower), else asyncio's;
`AGENTNB_LOOP=asyncio` forces the standard one. Only this loop is affected: `uvloop.install()`
is never called, so Jupyter's and pytest's loops stay what they are. `nest_asyncio` is
deliberately not used (see DESIGN.md).

`iterate` and `aiterate` carry an async iterator running on the home loop over to a blocking
thread or to another event loop (streams use them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Literal, TypeVar

from ._fork import abandon, at_fork_in_child

__all__ = [
    "LOOP_KINDS",
    "HomeLoop",
    "default_loop_kind",
    "get_home_loop",
    "in_home_loop",
    "run_async",
    "run_sync",
    "swap_home_loop",
]

T = TypeVar("T")
LoopKind = Literal["uvloop", "asyncio"]
LOOP_KINDS: tuple[LoopKind, ...] = ("uvloop", "asyncio")


def default_loop_kind() -> LoopKind:
    """`uvloop` when it is installed (and `AGENTNB_LOOP` does not say `asyncio`), else `asyncio`."""
    if os.environ.get("AGENTNB_LOOP", "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _new_loop(kind: LoopKind) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


class HomeLoop:
    """An event loop running forever in a daemon thread.

    `kind` is "uvloop" or "asyncio" (default: `default_loop_kind()`). `submissions` counts the
    coroutines handed to the loop from other threads (tests use it to prove a path never hops).
    """

    def __init__(self, name: str = "agentnb-home-loop", *, kind: LoopKind | None = None) -> None:
        self.kind: LoopKind = kind or default_loop_kind()
        self.submissions = 0
        self.running = True  # until `stop()`; a forked child drops the whole object
        self._ready = threading.Event()
        self.loop = _new_loop(self.kind)
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.running = False

    def is_current(self) -> bool:
        """True when called from code running on this loop's thread."""
        return threading.get_ident() == self.thread.ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the home loop; cancelling the returned future cancels it."""
        self.submissions += 1
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

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        """Iterate `items` (run on the home loop) from a blocking thread, item by item.

        Leaving the loop early, or an interrupt while waiting, cancels the producer.
        """
        inbox: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        future = self.submit(_pump(items, inbox.put))
        try:
            while True:
                kind, value = inbox.get()
                if kind == _ITEM:
                    yield value
                elif kind == _END:
                    return
                else:
                    raise value
        finally:
            future.cancel()

    async def aiterate(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """Iterate `items` (run on the home loop) from any event loop, this one included."""
        inbox: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        cancel: Callable[[], Any]
        if self.is_current():
            task = asyncio.ensure_future(_pump(items, inbox.put_nowait))
            cancel = task.cancel
        else:
            consumer = asyncio.get_running_loop()

            def push(item: tuple[int, Any]) -> None:
                consumer.call_soon_threadsafe(inbox.put_nowait, item)

            cancel = self.submit(_pump(items, push)).cancel
        try:
            while True:
                kind, value = await inbox.get()
                if kind == _ITEM:
                    yield value
                elif kind == _END:
                    return
                else:
                    raise value
        finally:
            cancel()

    def stop(self) -> None:
        """Stop the loop and join its thread (tests and interpreter shutdown only)."""
        self.running = False
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


_ITEM, _END, _ERROR = 0, 1, 2


async def _pump(items: AsyncIterator[Any], push: Callable[[tuple[int, Any]], None]) -> None:
    """Run `items` to its end, pushing each item, then the end or the error."""
    try:
        async for item in items:
            push((_ITEM, item))
    except BaseException as exc:
        push((_ERROR, exc))
        if isinstance(exc, asyncio.CancelledError):
            raise
    else:
        push((_END, None))
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


_lock = threading.Lock()
_home: HomeLoop | None = None


def get_home_loop() -> HomeLoop:
    """The process-wide home loop, started on first use."""
    global _home
    home = _home
    if home is not None and home.running:  # the common case: no lock, no thread query
        return home
    if _home is None or not _home.thread.is_alive():
        with _lock:
            if _home is None or not _home.thread.is_alive():
                _home = HomeLoop()
    return _home


def swap_home_loop(new: HomeLoop | None) -> HomeLoop | None:
    """Make `new` the process's home loop and return the previous one (tests use it to run the
    same code on uvloop and on asyncio; the caller stops what it no longer needs)."""
    global _home
    with _lock:
        old, _home = _home, new
    return old


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
    # The parent's loop thread does not exist in the child: start afresh on first use. The old
    # loop is kept, never closed: closing it would unregister its fds from an epoll instance
    # the parent shares.
    global _home, _lock
    abandon(_home)
    _home = None
    _lock = threading.Lock()


at_fork_in_child(_after_fork_in_child)
