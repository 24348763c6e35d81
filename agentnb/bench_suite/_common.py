"""What every benchmark section shares: its `Section`, and simulator orchestrators to time."""

from __future__ import annotations

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

__all__ = ["Draw", "Row", "Section"]

Row = dict[str, Any]
Draw = Callable[["Axes"], "Axes"]
_SECRET = b"agentnb-bench-secret-0123456789ab"  # the bench never touches the user's key file


@dataclass
class Section:
    """One table of the suite, and the figures (name -> draw on an Axes) that go with it."""

    key: str
    title: str
    note: str
    rows: list[Row]
    figures: dict[str, Draw] = field(default_factory=dict)


def _goal(row: Row, goal: str, met: bool | None) -> Row:
    row["goal"] = goal
    row["met"] = met
    return row


def _config(latency_s: float, max_concurrency: int, **extra: Any) -> Config:
    # Config() and replace(), not Config.load(): no agentnb.yaml or environment in the figures.
    values: dict[str, Any] = {
        "backend": "simulated",
        "cache_enabled": False,
        "max_concurrency": max_concurrency,
        "sim_latency_s": latency_s,
        "sim_jitter": 0.0,
        "timeout_s": 600.0,
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
    return aio._prepare(AgentCall(agent, task)).request


async def _sequential(aio: AsyncAgentOrchestrator, calls: list[AgentCall]) -> None:
    for c in calls:
        await aio.execute_agent(c.agent, c.task)
