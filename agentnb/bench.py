"""Speedup comparisons: the same calls run sequentially, concurrently and from the cache.

`compare_speedup` runs on the orchestrator you give it (or the session's default one) and
returns a `SpeedupReport` with a DataFrame `.table` and a `.plot()`. "sequential" awaits one
call after another on that same orchestrator, "concurrent" hands them all to
`execute_multiple`, and "cached" replays them after a warm-up run and checks that every answer
came from the cache (none reached the backend). Speedups are against the first mode given
("sequential" by default).

What the backend saw is read, never reset: `backend_calls` is the growth of the simulator's
`call_count` over each timed run (for another backend, the attempts in the tracker's records),
and `peak_in_flight` is the most calls overlapping in the simulator's call log (`started` to
`ended`, its monotonic clock) during one run; <NA> for a backend that keeps no log (Claude).
The tracker's own times cannot give it: `started_at` is wall-clock, taken apart from the
monotonic `latency_ms`, and under load they over-count by one.

Example:
    >>> report = compare_speedup([("writer", f"Idea {i}") for i in range(5)])   # doctest: +SKIP
    >>> report.table[["mode", "wall_s_mean", "speedup"]]                        # doctest: +SKIP
"""

from __future__ import annotations

import html
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .backends import Backend, SimulatedBackend
from .backends.simulated import CallRecord as SimulatedCallRecord
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
    """What `compare_speedup` measured: `.table` (one row per mode) and `.plot()`.

    `baseline` is the mode the speedups are against (the first one run); `simulated` is True
    when the offline simulator answered (directly, or behind the SDK as its HTTP transport).
    """

    table: pd.DataFrame
    calls: int
    max_concurrency: int
    backend: str
    baseline: str = "sequential"
    simulated: bool = False

    @property
    def backend_label(self) -> str:
        """The backend's label, with "(simulated)" when the simulator answered under another."""
        if self.simulated and "simulated" not in self.backend:
            return f"{self.backend} (simulated)"
        return self.backend

    @property
    def caption(self) -> str:
        """One line on what was measured: calls, concurrency, backend, baseline."""
        return (
            f"{self.calls} calls, max_concurrency={self.max_concurrency}, "
            f"backend={self.backend_label}, speedup vs {self.baseline}"
        )

    def plot(self, ax: Axes | None = None) -> Axes:
        """Bar chart of speedup per mode, with min/max error bars and the ideal marked."""
        from .plots import plot_speedup

        return plot_speedup(self.table, ax=ax, backend=self.backend_label)

    def __repr__(self) -> str:
        lines = [f"SpeedupReport: {self.caption}"]
        for row in self.table.itertuples():
            ideal = "" if math.isnan(row.ideal_speedup) else f" (ideal {row.ideal_speedup:.1f}x)"
            lines.append(
                f"  {row.mode:<11} {row.wall_s_mean:8.3f} s  speedup {row.speedup:7.1f}x{ideal}"
                f"  hits {row.hit_rate:.0%}"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        table = str(self.table.to_html(index=False, float_format=lambda v: f"{v:.3f}"))
        caption = f"<caption>SpeedupReport: {html.escape(self.caption)}</caption>"
        return table.replace(">", ">" + caption, 1)  # right after the opening <table ...>


def compare_speedup(
    calls: Iterable[CallLike],
    modes: Sequence[str] = MODES,
    repeats: int = 3,
    max_concurrency: int | None = None,
    orchestrator: AgentOrchestrator | AsyncAgentOrchestrator | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> SpeedupReport:
    """Time the same calls in each of `modes`, `repeats` times each, on the current backend.

    Speedups are against the first of `modes` (put "sequential" first, as the default does, for
    speedup over sequential). `max_concurrency` defaults to the orchestrator's limit.
    `progress(mode, i)` is told before each timed run (i counts from 1); the timed runs show
    no progress display of their own (it would be timed too).

    Before anything is timed, the first call is made once with `use_cache=False`: with Claude
    the first call imports the SDK and sets up the client and its connection, which would
    otherwise be timed in the first run and inflate every speedup. That warm-up is left out of
    the report's figures, but like every call it is in the tracker (and billed, with Claude).

    Raises `AgentnbError` for an unknown or repeated mode, and if the cached mode saw a cache
    miss (that would make its figure a lie).
    """
    import pandas as pd

    batch = [AgentCall.coerce(c, i) for i, c in enumerate(calls)]
    if not batch:
        raise AgentnbError("compare_speedup needs at least one call")
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise AgentnbError(f"unknown modes {unknown}; choose from {list(MODES)}")
    if len(set(modes)) != len(modes):
        raise AgentnbError(f"modes {list(modes)}: each mode may be given once")
    if repeats < 1:
        raise AgentnbError("repeats must be at least 1")
    orch = orchestrator or default_orchestrator()
    aio = orch.aio if isinstance(orch, AgentOrchestrator) else orch
    limit = max_concurrency or aio.config.max_concurrency
    if "cached" in modes and aio.cache is None:
        raise AgentnbError("the cached mode needs a response cache (cache_enabled is off)")
    fresh = [c.with_options(use_cache=False) for c in batch]
    cached = [c.with_options(use_cache=True) for c in batch]
    aio.home.run_sync(_sequential(aio, fresh[:1]))  # warm-up: see the docstring
    rows: list[dict[str, Any]] = []
    for mode in modes:
        if mode == "cached":
            aio.home.run_sync(  # warm-up
                aio.execute_multiple(cached, max_concurrency=limit, progress=False)
            )
        walls: list[float] = []
        hits = backend_calls = 0
        peak: int | None = 0
        for i in range(1, repeats + 1):
            if progress is not None:
                progress(mode, i)
            before = len(aio.tracker)
            seen = _BackendLog(aio.backend)
            t0 = time.perf_counter()
            if mode == "sequential":
                aio.home.run_sync(_sequential(aio, fresh))
            else:
                aio.home.run_sync(
                    aio.execute_multiple(
                        fresh if mode == "concurrent" else cached,
                        max_concurrency=limit,
                        progress=False,
                    )
                )
            walls.append(time.perf_counter() - t0)
            records = aio.tracker.records[before:]
            hits += sum(r.cache_hit for r in records)
            count = seen.calls_since()
            backend_calls += (
                count if count is not None else sum(r.attempts for r in records if not r.cache_hit)
            )
            run_peak = seen.peak_since()
            peak = None if peak is None or run_peak is None else max(peak, run_peak)
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
                "ideal_speedup": _ideal(mode, len(batch), limit)
                / _ideal(modes[0], len(batch), limit),
            }
        )
    table = pd.DataFrame(rows).astype({"peak_in_flight": "Int64"})
    table.insert(4, "speedup", float(table["wall_s_mean"].iloc[0]) / table["wall_s_mean"])
    return SpeedupReport(
        table=table,
        calls=len(batch),
        max_concurrency=limit,
        backend=aio.backend.label,
        baseline=modes[0],
        simulated=_simulated(aio.backend),
    )


async def _sequential(aio: AsyncAgentOrchestrator, calls: list[AgentCall]) -> None:
    for c in calls:
        await aio.execute_agent(c.agent, c.task, c.options)


def _ideal(mode: str, n: int, limit: int) -> float:
    """Best possible speedup over sequential when every call takes the same time."""
    if mode == "sequential":
        return 1.0
    if mode == "concurrent":
        return n / math.ceil(n / limit)
    return math.nan  # a cache hit is bounded by overhead, not by a model of latency


def _simulated(backend: Backend) -> bool:
    """Whether the offline simulator answers: itself, or as the SDK's HTTP transport."""
    return backend.cache_identity in ("simulated", "simulated-http")


class _BackendLog:
    """What the backend itself saw from now on, read from its own log (the simulator keeps one).

    Nothing is reset: the user's `call_count` and `calls` go on growing.
    """

    def __init__(self, backend: Backend) -> None:
        self._sim = backend if isinstance(backend, SimulatedBackend) else None
        self._count = self._sim.call_count if self._sim is not None else 0
        self._logged = self._sim.calls.appended if self._sim is not None else 0

    def calls_since(self) -> int | None:
        """Calls the backend received since, or None if it keeps no count."""
        return None if self._sim is None else self._sim.call_count - self._count

    def peak_since(self) -> int | None:
        """The most of those calls in flight at once, or None if the backend keeps no log."""
        return None if self._sim is None else _peak_overlap(self._sim.calls.since(self._logged))


def _peak_overlap(calls: Sequence[SimulatedCallRecord]) -> int:
    """The most calls of a simulator's log that overlap in time (one still running has no end).

    A call that ended at the very instant another started does not overlap it.
    """
    events = [(c.started, 1) for c in calls]
    events += [(c.ended, -1) for c in calls if c.ended is not None]
    events.sort()  # at equal times -1 sorts first: the end comes before the start
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak
