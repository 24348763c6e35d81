"""The benchmark suite behind `python -m agentnb bench`: figures, not pass/fail tests.

Every section returns a list of row dicts; `run_suite` collects them and the CLI prints each as
a Markdown table (and writes JSON with `--out DIR`). All sections run on the offline simulator,
so the figures measure agentnb itself, not the network.

Sections:
- fanout: N independent calls at 200 ms simulated latency, concurrent vs sequential and vs the
  ideal (one latency), for N in 5, 20, 100, 1000 (`--quick`: 5, 20, 100, with sequential runs
  only where they take a few seconds).
- overhead: µs per call that the orchestrator adds over the bare `backend.create` call, at zero
  latency, one after another and as one concurrent batch.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from .backends import BackendRequest, SimulatedBackend
from .config import Config
from .orchestrator import AgentCall, AsyncAgentOrchestrator
from .loop import run_sync

__all__ = ["Section", "bench_fanout", "bench_overhead", "run_suite"]

Row = dict[str, Any]
Section = tuple[str, str, list[Row]]  # (title, note, rows)


def _orchestrator(latency_s: float, max_concurrency: int) -> AsyncAgentOrchestrator:
    cfg = Config.load(
        env={},
        backend="simulated",
        cache_enabled=False,
        max_concurrency=max_concurrency,
        sim_latency_s=latency_s,
        sim_jitter=0.0,
        timeout_s=600.0,
    )
    return AsyncAgentOrchestrator(cfg, backend=SimulatedBackend.from_config(cfg))


def bench_fanout(
    sizes: tuple[int, ...] = (5, 20, 100, 1000),
    *,
    latency_s: float = 0.2,
    sequential_up_to: int = 100,
) -> list[Row]:
    """Wall time of N independent calls, concurrent and (up to `sequential_up_to`) sequential."""
    rows: list[Row] = []
    for n in sizes:
        aio = _orchestrator(latency_s, max_concurrency=n)
        calls = [AgentCall("writer", f"Summarise document {i}") for i in range(n)]

        async def concurrent() -> float:
            t0 = time.perf_counter()
            await aio.execute_multiple(calls)
            return time.perf_counter() - t0

        async def sequential() -> float:
            t0 = time.perf_counter()
            for c in calls:
                await aio.execute_agent(c.agent, c.task)
            return time.perf_counter() - t0

        run_sync(aio.execute_multiple(calls[:1]))  # warm the agent registry and code paths
        wall = min(run_sync(concurrent()) for _ in range(3 if n <= 100 else 1))
        seq = run_sync(sequential()) if n <= sequential_up_to else None
        ideal = latency_s  # every call overlaps: the whole batch takes one latency
        rows.append(
            {
                "calls": n,
                "latency_ms": latency_s * 1000,
                "concurrent_s": round(wall, 4),
                "sequential_s": None if seq is None else round(seq, 3),
                "speedup": None if seq is None else round(seq / wall, 1),
                "ideal_speedup": n,
                "efficiency": round(ideal / wall, 3),
                "peak_in_flight": getattr(aio.backend, "peak_in_flight", None),
            }
        )
        run_sync(aio.aclose())
    return rows


def bench_overhead(n: int = 5000, repeats: int = 5) -> list[Row]:
    """µs per call added by `execute_agent`/`execute_multiple` over the bare backend call."""
    aio = _orchestrator(0.0, max_concurrency=n)
    backend = aio.backend
    spec = aio.agents.get("writer")
    request = BackendRequest(
        model=aio.config.resolve_model(spec.model), task="Summarise", system=spec.system_prompt,
        agent=spec.name, max_tokens=aio.config.max_tokens,
    )
    calls = [AgentCall("writer", "Summarise")] * n

    async def bare_seq() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await backend.create(request)
        return time.perf_counter() - t0

    async def orch_seq() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await aio.execute_agent("writer", "Summarise")
        return time.perf_counter() - t0

    async def bare_batch() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(backend.create(request) for _ in range(n)))
        return time.perf_counter() - t0

    async def orch_batch() -> float:
        t0 = time.perf_counter()
        await aio.execute_multiple(calls)
        return time.perf_counter() - t0

    def per_call_us(fn: Callable[[], Any]) -> float:
        samples: list[float] = [run_sync(fn()) for _ in range(repeats)]
        return statistics.median(samples) / n * 1e6

    run_sync(orch_seq())  # warm-up
    rows: list[Row] = []
    for label, bare, orch in (
        ("one after another", bare_seq, orch_seq),
        ("one concurrent batch", bare_batch, orch_batch),
    ):
        b, o = per_call_us(bare), per_call_us(orch)
        rows.append(
            {
                "mode": label,
                "calls": n,
                "bare_backend_us": round(b, 1),
                "orchestrator_us": round(o, 1),
                "overhead_us": round(o - b, 1),
            }
        )
        aio.tracker.reset()
    run_sync(aio.aclose())
    return rows


def run_suite(*, quick: bool = False) -> list[Section]:
    """Run every section; `quick` keeps the whole suite under a minute."""
    sections: list[Section] = []
    sizes = (5, 20, 100) if quick else (5, 20, 100, 1000)
    sections.append(
        (
            "Fan-out speedup (200 ms simulated latency)",
            "efficiency = ideal wall (one latency) / measured wall; goal >= 0.95",
            bench_fanout(sizes, sequential_up_to=20 if quick else 100),
        )
    )
    sections.append(
        (
            "Orchestrator overhead per call (zero latency)",
            "goal <= 50 us per call over the bare simulator call",
            bench_overhead(n=1000 if quick else 5000),
        )
    )
    return sections


def to_markdown(rows: list[Row]) -> str:
    """A Markdown table of `rows` (columns from the first row)."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    return "\n".join(out)
