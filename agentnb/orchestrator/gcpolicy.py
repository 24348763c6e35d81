"""A larger young generation while a large job runs: objects of calls in flight die young.

With 1,000 calls in flight, each call's objects (its coroutines, timers, request) live through
many of Python's young-generation collections (one every 700 allocations by default), so they
are promoted and rescanned by the older generations before they die: the collector's share of
a 100,000-call job grew from nothing to a third of its CPU. Raising the first threshold while
such a job runs lets them die in the young generation; the thresholds are put back when the
last large job ends (jobs may overlap, on any thread). `Config.job_gc_threshold` sets the value
(0 leaves the collector alone).

Example:
    >>> import gc
    >>> before = gc.get_threshold()
    >>> with young_generation(20_000):
    ...     gc.get_threshold()[0]
    20000
    >>> gc.get_threshold() == before
    True
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["LARGE_JOB", "young_generation"]

#: Jobs of at least this many calls get the larger young generation.
LARGE_JOB = 1_000

_lock = threading.Lock()
_active = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def young_generation(threshold: int) -> Iterator[None]:
    """Raise the first GC threshold to `threshold` (never lower it) for the duration."""
    global _active, _saved
    if threshold <= 0:
        yield
        return
    with _lock:
        if _active == 0:
            _saved = gc.get_threshold()
            if threshold > _saved[0]:
                gc.set_threshold(threshold, *_saved[1:])
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None
