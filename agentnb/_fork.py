"""Remaking what agentnb owns in a forked child: one `os.register_at_fork` hook and its list.

After `fork()` the child has only the thread that forked. Whatever of agentnb's relies on another
thread would wait for it forever there (work queued for a worker thread, a lock that thread held
at that moment), and what the child shares with its parent must not be used by both (a database
connection, an HTTP connection pool, futures of the parent's event loop). So each owner registers
a callback with `at_fork_in_child`, and the one hook here calls them all in the child, in the
order they were registered; one that fails is logged and the others still run. A bound method is
held weakly: an object that is gone has nothing to remake. Where it can, an owner remakes lazily,
so a pool worker that never makes a call pays nothing.

What a forked child remakes, by module:

- `loop`: the home loop (a new one starts on first use) and its lock;
- `cache.sqlite`: the tier's thread, and a connection of the child's own, opened on first use;
  pending LRU touches are dropped (see `SQLiteTier` for why the parent's connection is let go);
- `cache.redis`: the client (its connection pool) and the worker threads;
- `orchestrator.ledger`: the batch ledger's thread, and a connection of the child's own (the
  same rule as `cache.sqlite`'s);
- `cache.core`: the single-flight map (futures of the parent's loop);
- `cache.memory`, `metrics` (the tracker), `agents` (the registry), `progress`: their locks,
  which a thread of the parent may have held;
- `_jsonl`: the metrics file's writer thread and queue; the child appends to the same file, each
  write whole lines, so parent and children interleave line by line;
- `_columns`: metrics rows spill to a temporary file of the child's own;
- `orchestrator.admission`: a concurrency limit with nothing in flight and no waiters;
- `backends.anthropic`: the SDK client (and its HTTP connection pool), made anew on first use.

What the child lets go of but must not close (a connection pool, an event loop), it passes to
`abandon`, which keeps it alive and untouched: closing it from the child could reach the
parent's sockets or event loop.

Not remade: an `http_client` or `transport` given to `AnthropicBackend` (the caller's), and
the locks of modules that do not register here (yet): `orchestrator.facade`'s around
`default_orchestrator()`, `orchestrator.gcpolicy`'s, `pricing`'s and `magics.display`'s.

Example:
    >>> class Pool:
    ...     def __init__(self):
    ...         self.workers = []
    ...         at_fork_in_child(self._after_fork_in_child)
    ...     def _after_fork_in_child(self):
    ...         self.workers = []  # the parent's threads do not exist in the child
"""

from __future__ import annotations

import itertools
import logging
import os
import weakref
from collections.abc import Callable
from types import MethodType
from typing import Any

__all__ = ["abandon", "at_fork_in_child"]

logger = logging.getLogger("agentnb")

# Registration order is call order: a dict keeps it, and a dead object's entry can be dropped.
# Each entry: (a weak reference to the object, the method's function) or (None, a function).
_callbacks: dict[int, tuple[weakref.ref[Any] | None, Callable[..., object]]] = {}
_keys = itertools.count()
_abandoned: list[object] = []


def at_fork_in_child(callback: Callable[[], object]) -> None:
    """Call `callback()` in every forked child, after the callbacks registered before it.

    A bound method is held weakly (it is dropped with its object); a function for good.
    """
    key = next(_keys)
    if isinstance(callback, MethodType):
        # Not a WeakMethod: its callback can fail during interpreter shutdown ("'NoneType'
        # object has no attribute '_alive'").
        owner = weakref.ref(callback.__self__, _dropper(key, _callbacks))
        _callbacks[key] = (owner, callback.__func__)
    else:
        _callbacks[key] = (None, callback)


def _dropper(key: int, callbacks: dict[int, Any]) -> Callable[[object], None]:
    # Holds the dict itself, not the module's name for it: this may run during shutdown.
    return lambda _: callbacks.pop(key, None)


def abandon(obj: object) -> None:
    """Keep the parent's `obj` (if not None) alive and untouched in this child, so that nothing
    closes or finalises it while the child runs (only an interpreter shutdown would, in a child
    that ends by one rather than by `os._exit` as multiprocessing's do)."""
    if obj is not None:
        _abandoned.append(obj)


def _after_fork_in_child() -> None:
    for owner, fn in list(_callbacks.values()):
        args: tuple[object, ...] = ()
        if owner is not None:
            obj = owner()
            if obj is None:  # gone: nothing to remake
                continue
            args = (obj,)
        try:
            fn(*args)
        except Exception:
            # Not the owner's repr: it may need the very lock the callback failed to remake.
            name = getattr(fn, "__qualname__", type(fn).__name__)
            logger.exception("agentnb: remaking %s in a forked child failed", name)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
