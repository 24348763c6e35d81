"""The cache: tier latencies, a cached call end to end, and fully cached re-runs."""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from collections.abc import Callable

from ..loop import run_sync
from ..orchestrator import AgentOrchestrator
from ._cache_micro import bench_cache, latency_row, memory_hits
from ._common import Profile, Row, _calls, _goal, _orchestrator, _parts, _timed, fresh_tasks
from ._profile import profiled

_CACHE_GOALS = {
    ("memory", "hit"): 10.0,
    ("sqlite", "get"): 50.0,
    ("sqlite", "set"): 100.0,
    ("orchestrator", "execute_agent hit (awaited)"): 200.0,
    ("orchestrator", "execute_agent hit (blocking)"): 60.0,
}
_TASK = "Summarise " + "x" * 2038  # a 2 KB task, as in the cache issue's goal


def bench_cache_tiers(
    entries: tuple[int, ...] = (10_000, 100_000), *, samples: int = 2000
) -> list[Row]:
    """Cache latencies (p50/p99 µs) per tier and entry count, then a cached call end to end.

    Tier rows come from `_cache_micro.bench_cache` (diskcache included when installed); the
    memory `hit` builds the key of a request with a 2 KB task for every lookup. The last rows
    time a memory hit through the whole orchestrator: `await execute_agent` on the home loop,
    and the blocking `AgentOrchestrator.execute_agent` a notebook cell uses, called from this
    (the main) thread, which answers a memory hit there without a hop. Goals (p50): memory hit
    <= 10 µs, SQLite get <= 50 µs and set <= 100 µs, awaited `execute_agent` <= 200 µs, blocking
    `execute_agent` <= 60 µs.
    """
    # End to end first: after the 100k-entry tier run frees its few hundred MB, thread
    # hand-offs are slower for a while, which would be the allocator's figure, not agentnb's.
    end_to_end = _cached_call_latency(samples)
    rows: list[Row] = []
    for n in entries:
        rows.extend(bench_cache(n, samples=samples))
    rows.extend(end_to_end)
    for row in rows:
        limit = _CACHE_GOALS.get((row["store"], row["op"]))
        if limit is None:
            _goal(row, "", None)
            continue
        what, profile = "", None
        if (row["store"], row["op"]) == ("memory", "hit"):
            what = f"memory hit incl. the key of a 2 KB task ({row['entries']:,} entries)"
            profile = profiled(functools.partial(memory_hits, row["entries"], samples))
        elif row["op"] == "execute_agent hit (blocking)":
            what = "execute_agent hit, blocking, from the main thread"
            profile = _blocking_profile(samples)
        _goal(
            row,
            f"p50 <= {limit:g} us",
            row["p50_us"] <= limit,
            measured=f"p50 {row['p50_us']:g} µs",
            what=what,
            profile=profile,
        )
    return rows


def _cached(samples: int) -> AgentOrchestrator:
    """A blocking orchestrator with a memory cache holding the answer to `_TASK`, warmed up."""
    cfg, kwargs = _parts(0.0, 10, cache_backend="memory")
    orch = AgentOrchestrator(cfg, **kwargs)
    orch.execute_agent("writer", _TASK)  # the one miss
    for _ in range(max(50, samples // 4)):  # warm-up: steady state, not first calls
        orch.execute_agent("writer", _TASK)
    return orch


def _blocking_profile(samples: int) -> Profile:
    def setup() -> Callable[[], object]:
        orch = _cached(samples)

        def run() -> None:
            for _ in range(samples):
                orch.execute_agent("writer", _TASK)
            orch.close()

        return run

    return profiled(setup)


def _cached_call_latency(samples: int) -> list[Row]:
    orch = _cached(samples)
    aio, task = orch.aio, _TASK

    async def awaited() -> list[int]:
        clock = time.perf_counter_ns
        out = []
        for _ in range(samples):
            t0 = clock()
            await aio.execute_agent("writer", task)
            out.append(clock() - t0)
        return out

    on_loop = run_sync(awaited())
    blocking = []
    for _ in range(samples):
        t0 = time.perf_counter_ns()
        orch.execute_agent("writer", task)
        blocking.append(time.perf_counter_ns() - t0)
    df = orch.metrics()
    orch.close()
    misses = int((~df["cache_hit"]).sum())
    note = "memory tier" if misses == 1 else f"memory tier, {misses} misses (expected 1)"
    return [
        latency_row("orchestrator", "execute_agent hit (awaited)", 1, on_loop, note),
        latency_row(
            "orchestrator", "execute_agent hit (blocking)", 1, blocking, note + ", main thread"
        ),
    ]


def bench_cached_rerun(calls: int = 20, *, latency_s: float = 0.2, repeats: int = 20) -> list[Row]:
    """A batch's first run (empty cache) against re-runs answered wholly by the cache.

    The cache is the default kind (memory in front of SQLite) in a temporary directory; a
    re-run is answered by the memory tier. Goal: re-run >= 100x faster than the first run.
    """
    with tempfile.TemporaryDirectory() as tmp:
        aio = _orchestrator(latency_s, calls, cache_backend="sqlite", cache_dir=tmp)
        batch = _calls(fresh_tasks(calls))
        first = _timed(aio.execute_multiple(batch))
        reruns = [_timed(aio.execute_multiple(batch)) for _ in range(repeats)]
        df = aio.metrics()
        hits = int(df["cache_hit"].iloc[calls:].sum())
        run_sync(aio.aclose())
    rerun = statistics.median(reruns)
    row = {
        "calls": calls,
        "latency_ms": latency_s * 1000,
        "first_run_s": round(first, 4),
        "rerun_ms_median": round(rerun * 1000, 3),
        "rerun_hit_rate": hits / (calls * repeats),
        "speedup": round(first / rerun, 1),
        "backend_calls_in_reruns": int(getattr(aio.backend, "call_count", calls)) - calls,
    }
    met = first / rerun >= 100 and hits == calls * repeats
    measured = f"{first / rerun:.0f}x, {hits} of {calls * repeats} hits"
    return [_goal(row, ">= 100x, every re-run call a hit", met, measured=measured)]
