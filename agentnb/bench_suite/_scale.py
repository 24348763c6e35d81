"""Scale: 10,000 calls in a child process, so that the peak RSS is the run's own."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from typing import Any

from ..backends import BackendRequest, SimulatedBackend
from ..loop import run_sync
from ..orchestrator import AgentCall
from ._common import Row, _goal, _orchestrator, _request, _timed


def bench_scale(
    calls: int = 10_000, *, max_concurrency: int = 200, latency_s: float = 0.05
) -> list[Row]:
    """`calls` calls at `max_concurrency` and `latency_s`, run in a fresh Python process.

    Goals: wall <= 1.1 x ideal (ceil(calls / concurrency) latencies) and peak RSS < 200 MB.
    `rss_before_mb` is the child's peak RSS after imports and a warm-up, before the run;
    `bare_sim_over_ideal` is the same load through `asyncio.gather` + a semaphore over the bare
    simulator (run after the RSS is read): the floor the simulator itself sets.
    """
    code = (
        "import json, sys; from agentnb.bench_suite._scale import _scale_child; "
        f"print(json.dumps(_scale_child({calls}, {max_concurrency}, {latency_s!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the scale run failed:\n{done.stderr[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    ideal = math.ceil(calls / max_concurrency) * latency_s
    ratio = figures["wall_s"] / ideal
    row = {
        "calls": calls,
        "concurrency": max_concurrency,
        "latency_ms": latency_s * 1000,
        "wall_s": round(figures["wall_s"], 3),
        "ideal_s": round(ideal, 3),
        "wall_over_ideal": round(ratio, 3),
        "bare_sim_over_ideal": round(figures["bare_sim_wall_s"] / ideal, 3),
        "calls_per_s": round(calls / figures["wall_s"]),
        "peak_in_flight": figures["peak_in_flight"],
        "rss_before_mb": round(figures["rss_before_mb"], 1),
        "peak_rss_mb": round(figures["peak_rss_mb"], 1),
    }
    met = ratio <= 1.1 and figures["peak_rss_mb"] < 200 and figures["ok"] == calls
    return [_goal(row, "wall <= 1.1 x ideal; peak RSS < 200 MB", met)]


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


def _scale_child(calls: int, max_concurrency: int, latency_s: float) -> dict[str, Any]:
    """Run in the child process of `bench_scale`; returns its figures."""
    aio = _orchestrator(latency_s, max_concurrency)
    batch = [AgentCall("writer", f"Summarise document {i}") for i in range(calls)]
    run_sync(aio.execute_multiple(batch[:max_concurrency]))  # warm-up
    aio.tracker.reset()
    before = _peak_rss_mb()
    t0 = time.perf_counter()
    results = run_sync(aio.execute_multiple(batch))
    wall = time.perf_counter() - t0
    figures = {
        "wall_s": wall,
        "ok": sum(1 for r in results if not isinstance(r, BaseException)),
        "peak_in_flight": getattr(aio.backend, "peak_in_flight", None),
        "rss_before_mb": before,
        "peak_rss_mb": _peak_rss_mb(),
    }
    del results
    # The simulator's own floor, after the RSS is read: the same number of calls (other tasks)
    # through asyncio.gather + a semaphore over a fresh simulator's `create`.
    sim = SimulatedBackend.from_config(aio.config)
    requests = [_request(aio, f"Summarise document {-i - 1}") for i in range(calls)]

    async def bare() -> None:
        limit = asyncio.Semaphore(max_concurrency)

        async def one(r: BackendRequest) -> None:
            async with limit:
                await sim.create(r)

        await asyncio.gather(*(one(r) for r in requests))

    figures["bare_sim_wall_s"] = _timed(bare())
    run_sync(aio.aclose())
    return figures
