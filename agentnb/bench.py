"""Speedup comparisons: the same calls run sequentially, concurrently and from the cache.

`compare_speedup` runs on the orchestrator you give it (or the session's default one) and
returns a `SpeedupReport` with a DataFrame `.table` and a `.plot()`. "sequential" awaits one
call after another on that same orchestrator, "concurrent" hands them all to
`execute_multiple`, and "cached" replays them after a warm-up run and checks that every answer
came from the cache (none reached the backend). `backend_calls` in the table is what the backend
itself counted when it keeps a count (the simulator does), else the attempts in the records.

Example:
    >>> report = compare_speedup([("writer", f"Idea {i}") for i in range(5)])   # doctest: +SKIP
    >>> report.table[["mode", "wall_s_mean", "speedup"]]                        # doctest: +SKIP
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .errors import AgentnbError
from .orchestrator import AgentCall, AgentOrchestrator, AsyncAgentOrchestrator, default_orchestrator

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["MODES", "SpeedupReport", "compare_speedup"]

MODES = ("sequential", "concurrent", "cached")

CallLike = AgentCall | tuple[str, str] | Mapping[str, Any]


@dataclass(frozen=True)
class SpeedupReport:
    """What `compare_speedup` measured: `.table` (one row per mode) and `.plot()`."""

    table: pd.DataFrame
    calls: int
    max_concurrency: int
    backend: str

    def plot(self, ax: Axes | None = None) -> Axes:
        """Bar chart of speedup per mode, with min/max error bars and the ideal marked."""
        from .plots import plot_speedup

        return plot_speedup(self.table, ax=ax)

    def __repr__(self) -> str:
        lines = [
            f"SpeedupReport: {self.calls} calls, max_concurrency={self.max_concurrency}, "
            f"backend={self.backend}"
        ]
        for row in self.table.itertuples():
            ideal = "" if math.isnan(row.ideal_speedup) else f" (ideal {row.ideal_speedup:.1f}x)"
            lines.append(
                f"  {row.mode:<11} {row.wall_s_mean:8.3f} s  speedup {row.speedup:7.1f}x{ideal}"
                f"  hits {row.hit_rate:.0%}"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return str(self.table.to_html(index=False, float_format=lambda v: f"{v:.3f}"))


def compare_speedup(
    calls: Iterable[CallLike],
    modes: Sequence[str] = MODES,
    repeats: int = 3,
    max_concurrency: int | None = None,
    orchestrator: AgentOrchestrator | AsyncAgentOrchestrator | None = None,
) -> SpeedupReport:
    """Time the same calls in each of `modes`, `repeats` times each, on the current backend.

    `max_concurrency` defaults to the orchestrator's limit. Raises `AgentnbError` if the cached
    mode saw a cache miss (that would make its figure a lie).
    """
    import pandas as pd

    batch = [AgentCall.coerce(c, i) for i, c in enumerate(calls)]
    if not batch:
        raise AgentnbError("compare_speedup needs at least one call")
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise AgentnbError(f"unknown modes {unknown}; choose from {list(MODES)}")
    if repeats < 1:
        raise AgentnbError("repeats must be at least 1")
    orch = orchestrator or default_orchestrator()
    aio = orch.aio if isinstance(orch, AgentOrchestrator) else orch
    limit = max_concurrency or aio.config.max_concurrency
    fresh = [replace(c, use_cache=False) for c in batch]
    cached = [replace(c, use_cache=True) for c in batch]
    rows: list[dict[str, Any]] = []
    for mode in modes:
        if mode == "cached":
            if aio.cache is None:
                raise AgentnbError("the cached mode needs a response cache (cache_enabled is off)")
            aio._home.run_sync(aio.execute_multiple(cached, max_concurrency=limit))  # warm-up
        walls: list[float] = []
        hits = backend_calls = peak = 0
        for _ in range(repeats):
            before = len(aio.tracker)
            _reset_peak(aio)
            t0 = time.perf_counter()
            if mode == "sequential":
                aio._home.run_sync(_sequential(aio, fresh))
            else:
                aio._home.run_sync(
                    aio.execute_multiple(
                        fresh if mode == "concurrent" else cached, max_concurrency=limit
                    )
                )
            walls.append(time.perf_counter() - t0)
            records = aio.tracker.records[before:]
            hits += sum(r.cache_hit for r in records)
            seen = _backend_calls(aio)  # what the backend saw, where it counts (the simulator)
            backend_calls += (
                seen if seen is not None else sum(r.attempts for r in records if not r.cache_hit)
            )
            peak = max(peak, _peak(aio))
        if mode == "cached" and hits != len(batch) * repeats:
            raise AgentnbError(
                f"cached mode: only {hits} of {len(batch) * repeats} calls were hits"
            )
        rows.append(
            {
                "mode": mode,
                "wall_s_mean": statistics.fmean(walls),
                "wall_s_min": min(walls),
                "wall_s_max": max(walls),
                "calls": len(batch),
                "repeats": repeats,
                "hit_rate": hits / (len(batch) * repeats),
                "backend_calls": backend_calls,
                "peak_in_flight": peak,
                "ideal_speedup": _ideal(mode, len(batch), limit),
            }
        )
    table = pd.DataFrame(rows)
    base = table.loc[table["mode"] == "sequential", "wall_s_mean"]
    reference = float(base.iloc[0]) if len(base) else math.nan
    table.insert(4, "speedup", reference / table["wall_s_mean"])
    return SpeedupReport(
        table=table, calls=len(batch), max_concurrency=limit, backend=aio.backend.label
    )


async def _sequential(aio: AsyncAgentOrchestrator, calls: list[AgentCall]) -> None:
    for c in calls:
        await aio.execute_agent(
            c.agent,
            c.task,
            model=c.model,
            max_tokens=c.max_tokens,
            temperature=c.temperature,
            use_cache=c.use_cache,
        )


def _ideal(mode: str, n: int, limit: int) -> float:
    """Best possible speedup over sequential when every call takes the same time."""
    if mode == "sequential":
        return 1.0
    if mode == "concurrent":
        return n / math.ceil(n / limit)
    return math.nan  # a cache hit is bounded by overhead, not by a model of latency


def _reset_peak(aio: AsyncAgentOrchestrator) -> None:
    reset = getattr(aio.backend, "reset_log", None)
    if callable(reset):
        reset()


def _backend_calls(aio: AsyncAgentOrchestrator) -> int | None:
    """Calls the backend received since `_reset_peak`, if it keeps count."""
    count = getattr(aio.backend, "call_count", None)
    return (
        count
        if isinstance(count, int) and callable(getattr(aio.backend, "reset_log", None))
        else None
    )


def _peak(aio: AsyncAgentOrchestrator) -> int:
    return int(getattr(aio.backend, "peak_in_flight", 0) or 0)
