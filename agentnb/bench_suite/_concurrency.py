"""Concurrency: fan-out speedup, the orchestrator's overhead per call, `compare_speedup`."""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import Callable, Coroutine
from typing import Any

from ..backends import BackendRequest, SimulatedBackend
from ..loop import run_sync
from ..orchestrator import AgentCall
from ._common import Draw, Row, _goal, _orchestrator, _request, _sequential, _timed


def bench_fanout(
    sizes: tuple[int, ...] = (5, 20, 100, 1000),
    *,
    latency_s: float = 0.2,
    sequential_up_to: int = 100,
) -> list[Row]:
    """Wall time of N independent calls, concurrent and (up to `sequential_up_to`) sequential.

    `bare_sim_efficiency` is the same for `asyncio.gather` over the simulator's own `create`
    (other tasks of the same length, so neither run reuses the other's answers): the floor
    the simulator itself sets, since it composes each answer's text before it sleeps.
    Goals: efficiency (one latency / measured wall) >= 0.95 at every size; speedup over
    sequential >= 4.9x for 5 calls and >= 90x for 100 calls.
    """
    rows: list[Row] = []
    for n in sizes:
        aio = _orchestrator(latency_s, max_concurrency=n)
        calls = [AgentCall("writer", f"Summarise document {i}") for i in range(n)]
        bare_sim = SimulatedBackend.from_config(aio.config)
        requests = [_request(aio, f"Summarise document {-i - 1}") for i in range(n)]

        async def bare(sim: SimulatedBackend, reqs: list[BackendRequest]) -> None:
            await asyncio.gather(*(sim.create(r) for r in reqs))

        run_sync(aio.execute_multiple(calls[:1]))  # warm the agent registry and code paths
        repeats = 3 if n <= 100 else 1
        wall = min(_timed(aio.execute_multiple(calls)) for _ in range(repeats))
        bare_wall = min(_timed(bare(bare_sim, requests)) for _ in range(repeats))
        seq = _timed(_sequential(aio, calls)) if n <= sequential_up_to else None
        efficiency = latency_s / wall  # the ideal: every call overlaps, one latency in all
        speedup = None if seq is None else seq / wall
        goals, met = ["efficiency >= 0.95"], [efficiency >= 0.95]
        target = {5: 4.9, 100: 90.0}.get(n)
        if target is not None and speedup is not None:
            goals.append(f"speedup >= {target:g}x")
            met.append(speedup >= target)
        row = {
            "calls": n,
            "latency_ms": latency_s * 1000,
            "concurrent_s": round(wall, 4),
            "sequential_s": None if seq is None else round(seq, 3),
            "speedup": None if speedup is None else round(speedup, 1),
            "ideal_speedup": n,
            "efficiency": round(efficiency, 3),
            "bare_sim_efficiency": round(latency_s / bare_wall, 3),
            "peak_in_flight": getattr(aio.backend, "peak_in_flight", None),
        }
        rows.append(_goal(row, "; ".join(goals), all(met)))
        run_sync(aio.aclose())
    return rows


def bench_overhead(n: int = 5000, repeats: int = 5) -> list[Row]:
    """µs per call added by `execute_agent`/`execute_multiple` over the bare backend call.

    Goal: at most 50 µs per call.
    """
    aio = _orchestrator(0.0, max_concurrency=n)
    backend = aio.backend
    spec = aio.agents.get("writer")
    request = BackendRequest(
        model=aio.config.resolve_model(spec.model),
        task="Summarise",
        system=spec.system_prompt,
        agent=spec.name,
        max_tokens=aio.config.max_tokens,
    )
    calls = [AgentCall("writer", "Summarise")] * n

    async def bare_seq() -> None:
        for _ in range(n):
            await backend.create(request)

    async def orch_seq() -> None:
        for _ in range(n):
            await aio.execute_agent("writer", "Summarise")

    async def bare_batch() -> None:
        await asyncio.gather(*(backend.create(request) for _ in range(n)))

    async def orch_batch() -> None:
        await aio.execute_multiple(calls)

    def per_call_us(fn: Callable[[], Coroutine[Any, Any, None]]) -> float:
        return statistics.median(_timed(fn()) for _ in range(repeats)) / n * 1e6

    run_sync(orch_seq())  # warm-up
    rows: list[Row] = []
    for label, bare, orch in (
        ("one after another", bare_seq, orch_seq),
        ("one concurrent batch", bare_batch, orch_batch),
    ):
        b, o = per_call_us(bare), per_call_us(orch)
        row = {
            "mode": label,
            "calls": n,
            "bare_backend_us": round(b, 1),
            "orchestrator_us": round(o, 1),
            "overhead_us": round(o - b, 1),
        }
        rows.append(_goal(row, "overhead <= 50 us", o - b <= 50))
        aio.tracker.reset()
    run_sync(aio.aclose())
    return rows


def bench_speedup(
    calls: int = 20, *, latency_s: float = 0.2, repeats: int = 3
) -> tuple[list[Row], dict[str, Draw]]:
    """`compare_speedup` on the simulator: its table, and its plot as a figure.

    Goals: concurrent speedup >= 0.95 x ideal; cached: every call a hit, no backend call.
    """
    from ..bench import compare_speedup

    aio = _orchestrator(latency_s, calls, cache_backend="memory")
    batch = [AgentCall("writer", f"Summarise document {i}") for i in range(calls)]
    report = compare_speedup(batch, repeats=repeats, orchestrator=aio)
    run_sync(aio.aclose())
    rows: list[Row] = []
    for rec in report.table.to_dict(orient="records"):
        row = {
            k: (round(v, 4) if isinstance(v, float) and not math.isnan(v) else v)
            for k, v in rec.items()
        }
        if row["mode"] == "concurrent":
            _goal(row, ">= 0.95 x ideal speedup", rec["speedup"] >= 0.95 * rec["ideal_speedup"])
        elif row["mode"] == "cached":
            _goal(
                row, "100% hits, 0 backend calls", rec["hit_rate"] == 1 and not rec["backend_calls"]
            )
        else:
            _goal(row, "", None)
        rows.append(row)
    return rows, {"speedup": report.plot}
