"""Forked children calling the shared orchestrator: do they complete, or hang?

The parent sets up `agentnb.default_orchestrator()` on the simulator with the default SQLite
cache in a temporary directory and makes a few calls (so its home loop, the cache's thread and
its connection exist), then forks a `multiprocessing` pool of 2 whose workers call
`default_orchestrator().execute_agent(...)`. Every task is awaited against one deadline, so a
hang shows as "did not complete" and the pool is terminated, never waited on for ever.
Afterwards the parent must still answer, and the children's answers should be in the shared
cache.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from typing import Any

from .. import default_orchestrator
from ..cache import SECRET_ENV
from ._common import _SECRET, Row, _config, fresh_tasks
from ._reliability_common import probe_row, scoped_environ, scratch_dir

__all__ = ["bench_fork", "fork_call"]


def fork_call(task: str) -> dict[str, Any]:
    """Run in a forked worker: one call through the inherited default orchestrator."""
    result = default_orchestrator().execute_agent("writer", task)
    return {"pid": os.getpid(), "simulated": result.simulated, "cached": result.cached}


def bench_fork(tasks: int, *, timeout_s: float = 10.0, latency_s: float = 0.002) -> list[Row]:
    """`tasks` calls in a forked pool of 2, all within `timeout_s`; one row.

    The session's default orchestrator, if there was one, is closed first (the next
    `default_orchestrator()` makes a fresh one), and the probe's own is closed at the end.
    """
    with scratch_dir("fork") as tmp, scoped_environ({SECRET_ENV: _SECRET.decode()}):
        cfg = _config(
            latency_s,
            10,
            cache_enabled=True,
            cache_backend="sqlite",
            cache_dir=tmp / "cache",
            timeout_s=30.0,
        )
        orch = default_orchestrator(cfg)
        try:
            for task in fresh_tasks(3, "Reliability fork parent"):
                orch.execute_agent("writer", task)
            work = fresh_tasks(tasks, "Reliability fork child")
            outcomes = _in_pool(work, timeout_s)
            after = fresh_tasks(1, "Reliability fork parent after")[0]
            parent_ok = orch.execute_agent("writer", after).simulated
            done = [t for t, o in zip(work, outcomes, strict=True) if isinstance(o, dict)]
            shared = sum(1 for t in done if orch.execute_agent("writer", t).cached)
        finally:
            orch.close()  # the next default_orchestrator() makes a fresh one
    failures = [f"task {i}: {o}" for i, o in enumerate(outcomes) if not isinstance(o, dict)]
    pids = {o["pid"] for o in outcomes if isinstance(o, dict)}
    return [
        probe_row(
            "forked children that completed",
            "fork Pool(2) after the parent's calls; workers call default_orchestrator()"
            f".execute_agent on the simulator, SQLite cache; deadline {timeout_s:g} s",
            tasks,
            f"{len(done)} of {tasks} completed",
            "all complete",
            len(done) == tasks and parent_ok,
            detail=f"{len(pids)} workers answered; parent answers after the pool: "
            f"{'yes' if parent_ok else 'NO'}; {shared} of {len(done)} children's answers "
            "then hit the shared cache",
            failures=failures,
        )
    ]


def _in_pool(work: list[str], timeout_s: float) -> list[dict[str, Any] | str]:
    """Each task's result dict, or why it has none ("did not complete", the error)."""
    ctx = multiprocessing.get_context("fork")
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process may deadlock: that is what is
        # measured here.
        warnings.simplefilter("ignore", DeprecationWarning)
        pool = ctx.Pool(2)
    try:
        pending = [pool.apply_async(fork_call, (task,)) for task in work]
        deadline = time.monotonic() + timeout_s
        out: list[dict[str, Any] | str] = []
        for p in pending:
            try:
                out.append(p.get(timeout=max(0.01, deadline - time.monotonic())))
            except multiprocessing.TimeoutError:
                out.append(f"did not complete within {timeout_s:g} s")
            except Exception as exc:
                out.append(f"{type(exc).__name__}: {str(exc)[:160]}")
        return out
    finally:
        pool.terminate()
        pool.join()
