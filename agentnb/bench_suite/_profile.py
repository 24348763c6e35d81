"""Where the time of a missed goal went: the code behind its figure, once more under cProfile.

`profile_top(fn)` runs `fn` with a profiler on the calling thread and another on the home
loop's thread (where every call runs), both timing CPU (`time.thread_time`), so that a thread
waiting on the other costs nothing; the two are merged, and the top functions by own time are
returned with the time the garbage collector took meanwhile (which is also inside the own time
of the functions that set it off).

Example:
    >>> rows = profile_top(lambda: sorted(range(10_000), key=str), limit=3)
    >>> [r["function"] for r in rows[-2:]]  # doctest: +ELLIPSIS
    ['(garbage collector: ... runs)', '(all functions, both threads)']
"""

from __future__ import annotations

import cProfile
import gc
import pstats
import re
import time
from collections.abc import Callable
from typing import Any

from ..loop import run_sync
from ._common import Profile, Row

__all__ = ["profile_top", "profiled"]

_Key = tuple[str, int, str]


def profile_top(fn: Callable[[], object], limit: int = 8) -> list[Row]:
    """The top `limit` functions by own CPU time while `fn()` ran, then two rows: the garbage
    collector's runs and time, and the total of all functions."""
    here = cProfile.Profile(time.thread_time)
    home = cProfile.Profile(time.thread_time)
    collections: list[float] = []
    started: list[float] = []

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.thread_time())
        elif started:
            collections.append(time.thread_time() - started.pop())

    async def switch(on: bool) -> None:  # runs on the home loop's thread: its profiler
        if on:
            home.enable()
        else:
            home.disable()

    gc.collect()  # the profile should not pay for garbage made before it
    run_sync(switch(True))
    gc.callbacks.append(on_gc)
    here.enable()
    try:
        fn()
    finally:
        here.disable()
        gc.callbacks.remove(on_gc)
        run_sync(switch(False))
    stats = pstats.Stats(here)
    if home.getstats():  # pstats refuses an empty profile
        stats.add(home)
    table: dict[_Key, tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in table.values()) or 1.0
    rows = [
        {
            "function": _label(key),
            "calls": entry[1],
            "own_ms": round(entry[2] * 1000, 1),
            "own_share": f"{entry[2] / total:.0%}",
            "cum_ms": round(entry[3] * 1000, 1),
        }
        for key, entry in sorted(table.items(), key=lambda kv: -kv[1][2])[:limit]
    ]
    gc_s = sum(collections)
    rows.append(
        _summary(f"(garbage collector: {len(collections)} runs)", len(collections), gc_s, total)
    )
    calls = sum(entry[1] for entry in table.values())
    rows.append(_summary("(all functions, both threads)", calls, total, total))
    return rows


def _summary(label: str, calls: int, seconds: float, total: float) -> Row:
    share = f"{seconds / total:.0%}"
    ms = round(seconds * 1000, 1)
    return {"function": label, "calls": calls, "own_ms": ms, "own_share": share, "cum_ms": ms}


def profiled(setup: Callable[[], Callable[[], object]], limit: int = 8) -> Profile:
    """A `Goal.profile`: `setup()` (not profiled) builds fresh state and returns the measured
    callable, which `profile_top` then runs."""

    def run() -> list[Row]:
        return profile_top(setup(), limit)

    return run


def _label(key: _Key) -> str:
    filename, line, name = key
    if filename == "~":  # a built-in: pstats spells it "{built-in method ...}" already
        return name
    filename = re.sub(r".*/lib/python3\.\d+/(site-packages/)?", "", filename)
    if "/agentnb/" in filename:
        filename = "agentnb/" + filename.rsplit("/agentnb/", 1)[1]
    return f"{filename}:{line}({name})"
