"""Flat cost at scale: many calls through agentnb and bare, each run in its own child process.

A child per run, so that its peak RSS (a high-water mark) is that run's own and no run's heap
or collector state weighs on another's CPU time.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import subprocess
import sys
import time
from typing import Any

from ..backends import BackendRequest, SimulatedBackend
from ..loop import run_sync
from ._common import Profile, Row, _calls, _goal, _orchestrator, _request, fresh_tasks
from ._profile import profile_top

_RUNS = ("agentnb", "bare")


def bench_scale(
    calls: int = 100_000,
    *,
    small: int = 1_000,
    max_concurrency: int = 1_000,
    latency_s: float = 0.02,
) -> list[Row]:
    """`small` and `calls` calls at `max_concurrency` and `latency_s`, through agentnb
    (`execute_multiple`, cache off) and bare (`asyncio.gather` of one coroutine per call under
    an `asyncio.Semaphore(max_concurrency)`, over the simulator's `create`), each in a fresh
    Python process.

    `cpu_us_per_call` is the process's CPU time (`time.process_time()`, every thread) around the
    run over its calls; `peak_rss_mb` the child's high-water RSS, `rss_before_mb` the same
    before the run (after imports and a warm-up of `max_concurrency` calls). Goals at `calls`:
    agentnb's CPU per call <= 1.2 x its own at `small` calls; its peak RSS <= 1.2 x bare's.
    """
    args = (max_concurrency, latency_s)
    figures = {(run, n): _child(run, n, *args) for n in (small, calls) for run in _RUNS}
    ideal = {n: math.ceil(n / max_concurrency) * latency_s for n in (small, calls)}
    rows: dict[tuple[str, int], Row] = {}
    for (run, n), f in figures.items():
        cpu_us = f["cpu_s"] / n * 1e6
        small_us = figures[run, small]["cpu_s"] / small * 1e6
        rows[run, n] = _goal(
            {
                "run": run,
                "calls": n,
                "concurrency": max_concurrency,
                "latency_ms": latency_s * 1000,
                "ok": f["ok"],
                "wall_s": round(f["wall_s"], 3),
                "wall_over_ideal": round(f["wall_s"] / ideal[n], 3),
                "cpu_s": round(f["cpu_s"], 3),
                "cpu_us_per_call": round(cpu_us, 1),
                "cpu_vs_small": round(cpu_us / small_us, 3),
                "rss_before_mb": round(f["rss_before_mb"], 1),
                "peak_rss_mb": round(f["peak_rss_mb"], 1),
                "peak_in_flight": f["peak_in_flight"],
            },
            "",
            None,
        )
    big, bare_big = rows["agentnb", calls], rows["bare", calls]
    ok = big["ok"] == calls
    failed = "" if ok else f", only {big['ok']:,} of {calls:,} calls succeeded"
    profile: Profile = functools.cache(lambda: _child("agentnb", calls, *args, profile=True))
    _goal(
        big,
        f"CPU/call <= 1.2 x at {small:,} calls",
        big["cpu_vs_small"] <= 1.2 and ok,
        measured=f"{big['cpu_vs_small']:.2f} x ({big['cpu_us_per_call']:.0f} vs "
        f"{rows['agentnb', small]['cpu_us_per_call']:.0f} µs/call){failed}",
        bare=f"{bare_big['cpu_vs_small']:.2f} x ({bare_big['cpu_us_per_call']:.0f} vs "
        f"{rows['bare', small]['cpu_us_per_call']:.0f} µs/call)",
        what=f"CPU/call at {calls:,} vs {small:,} calls",
        profile=profile,
    )
    rss_ratio = big["peak_rss_mb"] / bare_big["peak_rss_mb"]
    _goal(
        big,
        "peak RSS <= 1.2 x bare",
        rss_ratio <= 1.2 and ok,
        measured=f"{rss_ratio:.2f} x ({big['peak_rss_mb']:.0f} MB){failed}",
        bare=f"{bare_big['peak_rss_mb']:.0f} MB",
        what=f"peak RSS at {calls:,} calls vs bare",
        profile=profile,
    )
    return list(rows.values())


def _child(
    run: str, calls: int, max_concurrency: int, latency_s: float, *, profile: bool = False
) -> Any:
    """The figures of one run in a fresh Python process (its profile rows when `profile`)."""
    code = (
        "import json; from agentnb.bench_suite._scale import _scale_child; "
        f"print(json.dumps(_scale_child({run!r}, {calls}, {max_concurrency}, {latency_s!r}, "
        f"profile={profile})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the scale run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak_rss_mb() -> float:
    """This process's peak RSS in MB.

    On Linux, `VmHWM` of /proc/self/status: `getrusage` there would report the parent's RSS at
    fork time when that was larger (the figure survives exec). Elsewhere `getrusage`.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def _scale_child(
    run: str, calls: int, max_concurrency: int, latency_s: float, *, profile: bool = False
) -> Any:
    """Run in the child process of `bench_scale`: one run's figures (or its profile rows)."""
    aio = _orchestrator(latency_s, max_concurrency)
    sim = SimulatedBackend.from_config(aio.config)

    async def bare(requests: list[BackendRequest]) -> list[Any]:
        # What a user writes: one coroutine per call, a semaphore to bound the concurrency.
        limit = asyncio.Semaphore(max_concurrency)

        async def one(r: BackendRequest) -> Any:
            async with limit:
                return await sim.create(r)

        return await asyncio.gather(*(one(r) for r in requests))

    def inputs(n: int) -> Any:
        if run == "agentnb":
            return _calls(fresh_tasks(n))
        return [_request(aio, t) for t in fresh_tasks(n)]

    def go(batch: Any) -> list[Any]:
        if run == "agentnb":
            return run_sync(aio.execute_multiple(batch))
        return run_sync(bare(batch))

    go(inputs(max_concurrency))  # warm-up
    aio.tracker.reset()
    batch = inputs(calls)
    if profile:
        return profile_top(lambda: go(batch))
    before = _peak_rss_mb()
    c0, t0 = time.process_time(), time.perf_counter()
    results = go(batch)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "ok": sum(1 for r in results if not isinstance(r, BaseException)),
        "peak_in_flight": getattr(aio.backend if run == "agentnb" else sim, "peak_in_flight", None),
        "rss_before_mb": before,
        "peak_rss_mb": _peak_rss_mb(),
    }
