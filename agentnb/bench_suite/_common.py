"""What every benchmark section shares: `Section`, `Goal`, fresh tasks, and bench orchestrators."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..agents import AgentRegistry
from ..backends import Backend, BackendRequest, SimulatedBackend
from ..config import Config
from ..loop import run_sync
from ..orchestrator import AgentCall, AsyncAgentOrchestrator

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["Draw", "Goal", "Profile", "Row", "Section", "fresh_tasks"]

Row = dict[str, Any]
Draw = Callable[["Axes"], "Axes"]
#: Runs the code behind a figure once more under a profiler; returns the top functions.
Profile = Callable[[], list[Row]]
_SECRET = b"agentnb-bench-secret-0123456789ab"  # the bench never touches the user's key file


@dataclass
class Goal:
    """One goal of one row: what it judges, the figure and its bare reference, met or not.

    `profile` re-runs the measured code under a profiler (see `_profile`); the suite calls it
    only when the goal is missed. `stretch` is whether a stretch goal was met (None: none).
    """

    goal: str
    met: bool
    measured: str
    bare: str = ""
    what: str = ""
    stretch: bool | None = None
    profile: Profile | None = field(default=None, repr=False)


@dataclass
class Section:
    """One table of the suite, and the figures (name -> draw on an Axes) that go with it."""

    key: str
    title: str
    note: str
    rows: list[Row]
    figures: dict[str, Draw] = field(default_factory=dict)
    seconds: float = 0.0  # how long the section took to run


def _goal(
    row: Row,
    goal: str,
    met: bool | None,
    *,
    measured: str = "",
    bare: str = "",
    what: str = "",
    stretch: bool | None = None,
    profile: Profile | None = None,
) -> Row:
    """Give `row` a goal (several calls give it several): its `goal` and `met` columns say them
    all, and a `Goal` under the private key `_goals` (not printed) feeds the goals table.
    `goal=""` and `met=None` mark a row without a goal."""
    if not goal or met is None:
        row.setdefault("goal", "")
        row.setdefault("met", None)
        return row
    goals: list[Goal] = row.setdefault("_goals", [])
    goals.append(Goal(goal, met, measured, bare, what, stretch, profile))
    row.pop("goal", None)  # re-added last, so that goal and met stay the last columns
    row.pop("met", None)
    row["goal"] = "; ".join(g.goal for g in goals)
    row["met"] = all(g.met for g in goals)
    return row


def public(row: Row) -> Row:
    """`row` without its private (`_`-prefixed) keys: what is printed and written."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


_task_ids = itertools.count()


def fresh_tasks(n: int, prefix: str = "Summarise document") -> list[str]:
    """`n` tasks never given before in this process: no answer may come from anything warm
    (the simulator's per-task work, a cache key, a response cache)."""
    pid = os.getpid()
    return [f"{prefix} {pid}-{next(_task_ids)}" for _ in range(n)]


def _config(latency_s: float, max_concurrency: int, **extra: Any) -> Config:
    # Config() and replace(), not Config.load(): no agentnb.yaml or environment in the figures.
    values: dict[str, Any] = {
        "backend": "simulated",
        "cache_enabled": False,
        "max_concurrency": max_concurrency,
        "sim_latency_s": latency_s,
        "sim_jitter": 0.0,
        "timeout_s": 600.0,
        "progress": False,  # a TTY would otherwise draw a progress bar during timed runs
    }
    return Config().replace(**{**values, **extra})


def _parts(
    latency_s: float,
    max_concurrency: int,
    *,
    backend: Backend | None = None,
    cache_backend: str | None = None,
    **extra: Any,
) -> tuple[Config, dict[str, Any]]:
    """Config and keyword arguments of a bench orchestrator: the simulator (or `backend`),
    built-in agents only, no cache unless `cache_backend` is given (with the bench's secret)."""
    if cache_backend is not None:
        extra.update(cache_enabled=True, cache_backend=cache_backend)
    cfg = _config(latency_s, max_concurrency, **extra)
    cache = None
    if cache_backend is not None:
        from ..cache import ResponseCache

        cache = ResponseCache(cfg, secret=_SECRET)
    kwargs = {
        "backend": backend if backend is not None else SimulatedBackend.from_config(cfg),
        "agents": AgentRegistry(include_default_dirs=False),
        "cache": cache,
    }
    return cfg, kwargs


def _orchestrator(latency_s: float, max_concurrency: int, **options: Any) -> AsyncAgentOrchestrator:
    cfg, kwargs = _parts(latency_s, max_concurrency, **options)
    return AsyncAgentOrchestrator(cfg, **kwargs)


def _timed(coro: Coroutine[Any, Any, Any]) -> float:
    """Seconds `coro` took on the home loop (timed there, without the thread hop)."""

    async def run() -> float:
        t0 = time.perf_counter()
        await coro
        return time.perf_counter() - t0

    return run_sync(run())


def _request(aio: AsyncAgentOrchestrator, task: str, agent: str = "writer") -> BackendRequest:
    """The request the orchestrator would send for `agent` on `task`."""
    return aio.prepare(agent, task).request


def _calls(tasks: list[str], agent: str = "writer") -> list[AgentCall]:
    return [AgentCall(agent, t) for t in tasks]


async def _sequential(aio: AsyncAgentOrchestrator, calls: list[AgentCall]) -> None:
    for c in calls:
        await aio.execute_agent(c.agent, c.task, c.options)
