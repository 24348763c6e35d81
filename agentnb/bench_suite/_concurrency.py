"""Concurrency: fan-out efficiency, agentnb's own overhead per call, `compare_speedup`.

Every figure here has its bare reference measured in the same run, alternating with it, on the
same home loop: `asyncio.gather` over the simulator's own `create` (the requests built before
the clock starts). Every run gets tasks never used before (`fresh_tasks`).
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import Callable, Coroutine
from typing import Any

from ..backends import Backend, BackendRequest, SimulatedBackend
from ..loop import run_sync
from ..orchestrator import AsyncAgentOrchestrator
from ._common import (
    Draw,
    Row,
    _calls,
    _goal,
    _orchestrator,
    _request,
    _sequential,
    _timed,
    fresh_tasks,
)
from ._profile import profiled

#: Fan-out sizes judged against the bare gather's efficiency rather than against the ideal.
RELATIVE_FROM = 1000


async def _gather(backend: Backend, requests: list[BackendRequest]) -> None:
    await asyncio.gather(*(backend.create(r) for r in requests))


def bench_fanout(
    sizes: tuple[int, ...] = (5, 20, 100, 1000),
    *,
    latency_s: float = 0.2,
    sequential_up_to: int = 100,
    repeats: int = 3,
) -> list[Row]:
    """Wall time of N independent calls through `execute_multiple`, against a hand-written
    `asyncio.gather` over the bare simulator (median of `repeats` alternating runs each), and
    sequential `execute_agent` up to `sequential_up_to` calls.

    Goals: efficiency (one latency / median wall) >= 0.95 below `RELATIVE_FROM` calls, and from
    there >= 0.95 x the bare gather's efficiency (stretch: >= 1.0 x); speedup over sequential
    >= 4.9x for 5 calls and >= 90x for 100.
    """
    aio = _orchestrator(latency_s, max_concurrency=max(sizes))
    bare_sim = SimulatedBackend.from_config(aio.config)
    run_sync(aio.execute_multiple(_calls(fresh_tasks(1))))  # warm the agent registry, code paths
    run_sync(_gather(bare_sim, [_request(aio, t) for t in fresh_tasks(1)]))
    rows: list[Row] = []
    for n in sizes:
        walls, bare_walls = [], []
        for _ in range(repeats):
            walls.append(_timed(aio.execute_multiple(_calls(fresh_tasks(n)))))
            requests = [_request(aio, t) for t in fresh_tasks(n)]
            bare_walls.append(_timed(_gather(bare_sim, requests)))
        aio.tracker.reset()
        seq = _timed(_sequential(aio, _calls(fresh_tasks(n)))) if n <= sequential_up_to else None
        wall, bare_wall = statistics.median(walls), statistics.median(bare_walls)
        efficiency, bare_eff = latency_s / wall, latency_s / bare_wall  # ideal: one latency
        speedup = None if seq is None else seq / wall
        row: Row = {
            "calls": n,
            "latency_ms": latency_s * 1000,
            "repeats": repeats,
            "concurrent_s": round(wall, 4),
            "bare_gather_s": round(bare_wall, 4),
            "sequential_s": None if seq is None else round(seq, 3),
            "speedup": None if speedup is None else round(speedup, 1),
            "ideal_speedup": n,
            "efficiency": round(efficiency, 3),
            "bare_efficiency": round(bare_eff, 3),
            "vs_bare": round(efficiency / bare_eff, 3),
            "peak_in_flight": getattr(aio.backend, "peak_in_flight", None),
        }
        rerun = profiled(_fanout_setup(n, latency_s))
        bare = f"gather {bare_eff:.3f}"
        if n >= RELATIVE_FROM:
            ratio = efficiency / bare_eff
            _goal(
                row,
                "efficiency >= 0.95 x bare gather's (stretch >= 1.0 x)",
                ratio >= 0.95,
                measured=f"{efficiency:.3f} ({ratio:.3f} x bare)",
                bare=bare,
                what=f"efficiency at {n:,} calls",
                stretch=ratio >= 1.0,
                profile=rerun,
            )
        else:
            _goal(
                row,
                "efficiency >= 0.95",
                efficiency >= 0.95,
                measured=f"{efficiency:.3f}",
                bare=bare,
                what=f"efficiency at {n:,} calls",
                profile=rerun,
            )
        target = {5: 4.9, 100: 90.0}.get(n)
        if target is not None and speedup is not None:
            _goal(
                row,
                f"speedup >= {target:g}x",
                speedup >= target,
                measured=f"{speedup:.1f}x",
                what=f"speedup at {n:,} calls",
            )
        rows.append(row)
    run_sync(aio.aclose())
    return rows


def _fanout_setup(n: int, latency_s: float) -> Callable[[], Callable[[], object]]:
    def setup() -> Callable[[], object]:
        aio = _orchestrator(latency_s, max_concurrency=n)
        run_sync(aio.execute_multiple(_calls(fresh_tasks(1))))
        calls = _calls(fresh_tasks(n))
        return lambda: run_sync(aio.execute_multiple(calls))

    return setup


_Run = Callable[[AsyncAgentOrchestrator, list[str]], Coroutine[Any, Any, None]]


async def _agentnb_seq(aio: AsyncAgentOrchestrator, tasks: list[str]) -> None:
    for t in tasks:
        await aio.execute_agent("writer", t)


async def _agentnb_batch(aio: AsyncAgentOrchestrator, tasks: list[str]) -> None:
    await aio.execute_multiple(_calls(tasks))


async def _bare_seq(backend: Backend, requests: list[BackendRequest]) -> None:
    for r in requests:
        await backend.create(r)


def bench_overhead(n: int = 5000, repeats: int = 5) -> list[Row]:
    """µs per call that `execute_agent` (one after another) and `execute_multiple` (one batch)
    add over the bare simulator call, at zero latency and with the cache off.

    Each repeat times the bare calls, then agentnb's, each on `n` tasks never used before;
    `overhead_us` is the median of the repeats' differences. Goal: at most 20 µs per call.
    """
    aio = _orchestrator(0.0, max_concurrency=n)
    sim = aio.backend
    run_sync(_agentnb_seq(aio, fresh_tasks(200)))  # warm-up
    run_sync(_bare_seq(sim, [_request(aio, t) for t in fresh_tasks(200)]))
    rows: list[Row] = []
    modes: tuple[tuple[str, Any, _Run], ...] = (
        ("one after another", _bare_seq, _agentnb_seq),
        ("one concurrent batch", _gather, _agentnb_batch),
    )
    for label, bare_run, agentnb_run in modes:
        bare_us, agentnb_us = [], []
        for _ in range(repeats):
            requests = [_request(aio, t) for t in fresh_tasks(n)]
            bare_us.append(_timed(bare_run(sim, requests)) / n * 1e6)
            agentnb_us.append(_timed(agentnb_run(aio, fresh_tasks(n))) / n * 1e6)
            aio.tracker.reset()
        overhead = statistics.median(a - b for a, b in zip(agentnb_us, bare_us, strict=True))
        row = {
            "mode": label,
            "calls": n,
            "repeats": repeats,
            "bare_us": round(statistics.median(bare_us), 1),
            "agentnb_us": round(statistics.median(agentnb_us), 1),
            "overhead_us": round(overhead, 1),
        }
        rows.append(
            _goal(
                row,
                "overhead <= 20 us/call",
                overhead <= 20,
                measured=f"{overhead:.1f} µs/call over bare",
                what=f"per call, {label} ({n:,} calls)",
                bare=f"{statistics.median(bare_us):.1f} µs/call",
                profile=profiled(_overhead_setup(n, agentnb_run)),
            )
        )
    run_sync(aio.aclose())
    return rows


def _overhead_setup(n: int, agentnb_run: _Run) -> Callable[[], Callable[[], object]]:
    def setup() -> Callable[[], object]:
        aio = _orchestrator(0.0, max_concurrency=n)
        run_sync(_agentnb_seq(aio, fresh_tasks(200)))
        tasks = fresh_tasks(n)
        return lambda: run_sync(agentnb_run(aio, tasks))

    return setup


def bench_speedup(
    calls: int = 20, *, latency_s: float = 0.2, repeats: int = 3
) -> tuple[list[Row], dict[str, Draw]]:
    """`compare_speedup` on the simulator: its table, and its plot as a figure.

    Goals: concurrent speedup >= 0.95 x ideal; cached: every call a hit, no backend call.
    """
    from ..bench import compare_speedup

    aio = _orchestrator(latency_s, calls, cache_backend="memory")
    report = compare_speedup(_calls(fresh_tasks(calls)), repeats=repeats, orchestrator=aio)
    run_sync(aio.aclose())
    rows: list[Row] = []
    for rec in report.table.to_dict(orient="records"):
        row = {
            k: (round(v, 4) if isinstance(v, float) and not math.isnan(v) else v)
            for k, v in rec.items()
        }
        if row["mode"] == "concurrent":
            ideal = rec["ideal_speedup"]
            _goal(
                row,
                ">= 0.95 x ideal speedup",
                rec["speedup"] >= 0.95 * ideal,
                measured=f"{rec['speedup']:.1f}x of {ideal:g}x",
            )
        elif row["mode"] == "cached":
            _goal(
                row,
                "100% hits, 0 backend calls",
                rec["hit_rate"] == 1 and not rec["backend_calls"],
                measured=f"{rec['hit_rate']:.0%} hits, {rec['backend_calls']} backend calls",
            )
        else:
            _goal(row, "", None)
        rows.append(row)
    return rows, {"speedup": report.plot}
