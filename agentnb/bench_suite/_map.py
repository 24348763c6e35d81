"""`agentnb.map` and `agentnb.grid` on the simulator: CPU per row, cached re-runs, grid wall.

The CPU figures run each in a fresh Python process (as `_scale` does), so that its peak RSS is
that run's own: the bare reference (the same simulator calls through a hand-written
`asyncio.gather` under an `asyncio.Semaphore`), `map` with the cache off, and `map` with the
default SQLite cache (memory in front) in a temporary directory.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ..backends import BackendRequest, SimulatedBackend
from ..frames import map as agentnb_map
from ..grids import grid
from ..loop import run_sync
from ..options import CallOptions
from ..orchestrator import AsyncAgentOrchestrator
from ._common import Profile, Row, _goal, _orchestrator, _timed, fresh_tasks
from ._profile import profile_top, profiled
from ._scale import _peak_rss_mb

__all__ = ["SIZES", "MapSizes", "bench_map"]

_TEMPLATE = "Summarise in one line: {{value}}"
_RUNS = ("bare", "map, cache off", "map, SQLite cache")
#: Goals: µs of CPU per row beyond the bare call, by run.
_CPU_GOALS = {"map, cache off": 30.0, "map, SQLite cache": 100.0}
_AGENTS = ("writer", "python-expert", "data-analyst")
_MODELS = ("haiku", "sonnet", "opus")


class MapSizes:
    """The sizes of one run of the section (full, `--quick`, smoke)."""

    def __init__(
        self,
        rows: int = 10_000,
        rerun_rows: int = 1_000,
        rerun_latency_s: float = 0.2,
        grid_tasks: int = 50,
        grid_latency_s: float = 0.1,
        concurrency: int = 100,
    ) -> None:
        self.rows = rows
        self.rerun_rows = rerun_rows
        self.rerun_latency_s = rerun_latency_s
        self.grid_tasks = grid_tasks
        self.grid_latency_s = grid_latency_s
        self.concurrency = concurrency  # of the CPU runs (the re-run and the grid use 10)


#: The sizes of each mode of the suite; quick and smoke are scaled down, and their rows say so.
SIZES = {
    "full": MapSizes(),
    "quick": MapSizes(rows=1_000, rerun_rows=30, grid_tasks=10, grid_latency_s=0.02),
    "smoke": MapSizes(
        rows=200, rerun_rows=20, rerun_latency_s=0.01, grid_tasks=2, grid_latency_s=0.005
    ),
}
_SCALED = {"full": "", "quick": " (quick: scaled down)", "smoke": " (smoke)"}
_LATENCY_S = 0.001  # of the CPU runs: low, so that CPU, not waiting, is the figure


def bench_map(mode: str = "full") -> list[Row]:
    """The map section's rows: CPU per row (bare, cache off, SQLite), the cached re-run, the grid.

    Goals: `map`'s CPU per row beyond the bare call <= 30 µs with the cache off and <= 100 µs
    with the SQLite cache; a fully cached re-run of a map at 200 ms and concurrency 10 >= 100 x
    faster than its first run; a grid's wall / ideal (ceil(calls / concurrency) x latency)
    <= 1.1 at concurrency 10. `mode` ("full", "quick", "smoke") picks the `SIZES`.
    """
    sizes, scaled = SIZES[mode], _SCALED[mode]
    rows = _cpu_rows(sizes, scaled)
    rows.append(_rerun_row(sizes, scaled))
    rows.append(_grid_row(sizes, scaled))
    return rows


def _cpu_rows(sizes: MapSizes, scaled: str) -> list[Row]:
    n, workers = sizes.rows, sizes.concurrency
    figures = {run: _child(run, n, workers) for run in _RUNS}
    bare = figures["bare"]
    bare_us = bare["cpu_s"] / n * 1e6
    rows = []
    for run, f in figures.items():
        cpu_us = f["cpu_s"] / n * 1e6
        extra = None if run == "bare" else cpu_us - bare_us
        row: Row = {
            "figure": f"{n:,}-row {run}{scaled}",
            "rows": n,
            "latency_ms": _LATENCY_S * 1000,
            "concurrency": workers,
            "ok": f["ok"],
            "wall_s": round(f["wall_s"], 3),
            "cpu_us_per_row": round(cpu_us, 1),
            "beyond_bare_us": None if extra is None else round(extra, 1),
            "speedup": None,
            "wall_over_ideal": None,
            "peak_rss_mb": round(f["peak_rss_mb"], 1),
        }
        limit = _CPU_GOALS.get(run)
        if limit is None or extra is None:
            rows.append(_goal(row, "", None))
            continue
        failed = "" if f["ok"] == n else f", only {f['ok']:,} of {n:,} rows answered"
        profile: Profile = functools.cache(functools.partial(_child, run, n, workers, profile=True))
        rows.append(
            _goal(
                row,
                f"CPU/row beyond bare <= {limit:g} µs",
                extra <= limit and f["ok"] == n,
                measured=f"{extra:.1f} µs ({cpu_us:.1f} µs/row, peak RSS "
                f"{f['peak_rss_mb']:.0f} MB){failed}",
                bare=f"{bare_us:.1f} µs/row, peak RSS {bare['peak_rss_mb']:.0f} MB",
                what=f"{run}: CPU/row beyond bare, {n:,} rows",
                profile=profile,
            )
        )
    return rows


def _rerun_row(sizes: MapSizes, scaled: str) -> Row:
    n, latency = sizes.rerun_rows, sizes.rerun_latency_s
    with tempfile.TemporaryDirectory() as tmp:
        aio = _orchestrator(latency, 10, cache_backend="sqlite", cache_dir=tmp)
        once = _mapper(aio, fresh_tasks(n))
        once(fresh_tasks(2))  # warm-up: the cache's files and threads, not the first run's
        t0 = time.perf_counter()
        first = once()
        first_s = time.perf_counter() - t0
        reruns = []
        for _ in range(5):
            t0 = time.perf_counter()
            again = once()
            reruns.append(time.perf_counter() - t0)
        run_sync(aio.aclose())
    rerun = min(reruns)
    hits = int(again["cached"].sum())
    ok = int(first["error"].isna().sum())
    speedup = first_s / rerun
    row: Row = {
        "figure": f"{n:,}-row map, cached re-run vs first run{scaled}",
        "rows": n,
        "latency_ms": latency * 1000,
        "concurrency": 10,
        "ok": ok,
        "wall_s": round(first_s, 3),
        "cpu_us_per_row": None,
        "beyond_bare_us": None,
        "speedup": round(speedup, 1),
        "wall_over_ideal": round(first_s / (math.ceil(n / 10) * latency), 3),
        "peak_rss_mb": None,
    }
    return _goal(
        row,
        ">= 100x, every row a hit",
        speedup >= 100 and hits == n and ok == n,
        measured=f"{speedup:.0f}x ({rerun * 1000:.1f} ms vs {first_s:.2f} s), {hits} of {n} hits",
        what=f"cached re-run of a {n:,}-row map at {latency * 1000:g} ms",
        profile=profiled(functools.partial(_rerun_setup, n, latency)),
    )


def _mapper(aio: AsyncAgentOrchestrator, data: list[str]) -> Callable[..., Any]:
    def once(rows: list[str] = data) -> Any:
        return agentnb_map("writer", rows, _TEMPLATE, orchestrator=aio, progress=False)

    return once


def _rerun_setup(n: int, latency: float) -> Callable[[], object]:
    """For the profile of a missed re-run goal: a cache holding a map's answers; the re-run."""
    tmp = tempfile.TemporaryDirectory()
    aio = _orchestrator(latency, 10, cache_backend="sqlite", cache_dir=tmp.name)
    once = _mapper(aio, fresh_tasks(n))
    once()

    def rerun() -> None:
        for _ in range(5):
            once()
        run_sync(aio.aclose())
        tmp.cleanup()

    return rerun


def _grid_row(sizes: MapSizes, scaled: str) -> Row:
    latency, workers = sizes.grid_latency_s, 10
    tasks = fresh_tasks(sizes.grid_tasks)
    aio = _orchestrator(latency, workers)
    sim = SimulatedBackend.from_config(aio.config)
    calls = len(tasks) * len(_AGENTS) * len(_MODELS)
    ideal = math.ceil(calls / workers) * latency
    requests = [
        aio.prepare(a, t, CallOptions(model=m)).request
        for t in fresh_tasks(sizes.grid_tasks)
        for a in _AGENTS
        for m in _MODELS
    ]
    grid(fresh_tasks(1), _AGENTS, _MODELS, orchestrator=aio, progress=False)  # warm-up
    t0 = time.perf_counter()
    g = grid(tasks, _AGENTS, _MODELS, orchestrator=aio, progress=False)
    wall = time.perf_counter() - t0
    bare_wall = _timed(_bare(sim, requests, workers))
    run_sync(aio.aclose())
    ok = int(g.frame["error"].isna().sum())
    ratio, bare_ratio = wall / ideal, bare_wall / ideal
    row: Row = {
        "figure": f"grid {len(_AGENTS)} agents x {len(_MODELS)} models x {len(tasks)} tasks"
        f"{scaled}",
        "rows": calls,
        "latency_ms": latency * 1000,
        "concurrency": workers,
        "ok": ok,
        "wall_s": round(wall, 3),
        "cpu_us_per_row": None,
        "beyond_bare_us": None,
        "speedup": None,
        "wall_over_ideal": round(ratio, 3),
        "peak_rss_mb": None,
    }
    return _goal(
        row,
        "wall / ideal <= 1.1",
        ratio <= 1.1 and ok == calls,
        measured=f"{ratio:.3f} ({wall:.2f} s vs ideal {ideal:.2f} s), {ok} of {calls} answered",
        bare=f"{bare_ratio:.3f}",
        what=f"grid of {calls:,} calls: wall / ideal at concurrency {workers}",
        profile=profiled(functools.partial(_grid_setup, sizes.grid_tasks, latency, workers)),
    )


def _grid_setup(tasks: int, latency: float, workers: int) -> Callable[[], object]:
    """For the profile of a missed grid goal: a warm orchestrator; the grid."""
    aio = _orchestrator(latency, workers)
    grid(fresh_tasks(1), _AGENTS, _MODELS, orchestrator=aio, progress=False)

    def run() -> None:
        grid(fresh_tasks(tasks), _AGENTS, _MODELS, orchestrator=aio, progress=False)
        run_sync(aio.aclose())

    return run


async def _bare(sim: SimulatedBackend, requests: list[BackendRequest], workers: int) -> list[Any]:
    # What a user writes: one coroutine per call, a semaphore to bound the concurrency.
    limit = asyncio.Semaphore(workers)

    async def one(r: BackendRequest) -> Any:
        async with limit:
            return await sim.create(r)

    return await asyncio.gather(*(one(r) for r in requests))


def _child(run: str, rows: int, workers: int, *, profile: bool = False) -> Any:
    """The figures of one CPU run in a fresh Python process (its profile rows when `profile`)."""
    code = (
        "import json; from agentnb.bench_suite._map import _map_child; "
        f"print(json.dumps(_map_child({run!r}, {rows}, {workers}, profile={profile})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the map run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _map_child(run: str, rows: int, workers: int, *, profile: bool = False) -> Any:
    """Run in the child process of `bench_map`: one CPU run's figures (or its profile rows)."""
    import pandas  # noqa: F401  # every run has it loaded, as a notebook does: RSS like for like

    with tempfile.TemporaryDirectory() as tmp:
        cache: dict[str, Any] = (
            {"cache_backend": "sqlite", "cache_dir": tmp} if run == "map, SQLite cache" else {}
        )
        aio = _orchestrator(_LATENCY_S, workers, **cache)
        sim = SimulatedBackend.from_config(aio.config)

        def inputs(n: int) -> Any:
            data = fresh_tasks(n)
            if run != "bare":
                return data
            prefix = _TEMPLATE.replace("{{value}}", "")
            return [aio.prepare("writer", prefix + t).request for t in data]

        def go(batch: Any) -> int:
            if run == "bare":
                done = run_sync(_bare(sim, batch, workers))
                return sum(1 for r in done if not isinstance(r, BaseException))
            out = agentnb_map("writer", batch, _TEMPLATE, orchestrator=aio, progress=False)
            return int(out["error"].isna().sum())

        go(inputs(workers))  # warm-up
        batch = inputs(rows)
        if profile:
            top = profile_top(lambda: go(batch))
            run_sync(aio.aclose())
            return top
        before = _peak_rss_mb()
        c0, t0 = time.process_time(), time.perf_counter()
        ok = go(batch)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        run_sync(aio.aclose())
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "ok": ok,
        "rss_before_mb": before,
        "peak_rss_mb": _peak_rss_mb(),
    }
