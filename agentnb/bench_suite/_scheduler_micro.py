"""Scheduler benchmarks: overhead per step, wall time against the critical path, a skewed DAG.

These drive `execute_workflow` with a sleep executor (no model, no orchestrator), so they measure
the scheduler alone; the suite's workflow section (`_workflow`) reports them. Goals from the
workflow issue: at most 100 µs of overhead per step; wall at most 1.03 x the critical path;
the skewed DAG A -> {B 500 ms, C 200 ms -> D 200 ms} -> E within 1.05 x (500 ms + A + E),
where a superstep scheduler needs A + 500 + 200 + E.

Example:
    >>> figures = bench_scheduler(overhead_steps=200, dag_steps=20)   # doctest: +SKIP
    >>> figures["overhead_us_per_step"] < 100                          # doctest: +SKIP
    True
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from typing import Any

from ..loop import run_sync
from ..result import AgentResult
from ..workflow import Step, Workflow, execute_workflow

__all__ = ["SleepExecutor", "abench_scheduler", "bench_scheduler", "random_workflow"]


def random_workflow(
    steps: int, *, seed: int = 0, max_deps: int = 3, window: int = 50, agent: str = "writer"
) -> Workflow:
    """A random DAG: step `s<i>` depends on up to `max_deps` of the `window` steps before it.

    Each dependency is written as a `{{s<j>}}` placeholder, so rendering is measured too.
    """
    rng = random.Random(seed)
    out: list[Step] = []
    for i in range(steps):
        earlier = range(max(0, i - window), i)
        deps = rng.sample(earlier, rng.randint(0, min(max_deps, len(earlier))))
        task = " ".join(f"{{{{s{d}}}}}" for d in sorted(deps)) or f"start {i}"
        out.append(Step(id=f"s{i}", agent=agent, task=task))
    return Workflow(name=f"random-{steps}", steps=tuple(out))


class SleepExecutor:
    """A step executor that sleeps `latencies[step.id]` seconds (default 0) and answers."""

    def __init__(self, latencies: Mapping[str, float] | None = None) -> None:
        self.latencies = dict(latencies or {})
        self.calls = 0

    async def __call__(self, step: Step, task: str) -> AgentResult:
        self.calls += 1
        delay = self.latencies.get(step.id, 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        return AgentResult(agent=step.agent, model="bench", text=f"out {step.id}", backend="bench")


async def abench_scheduler(
    *,
    overhead_steps: int = 1000,
    dag_steps: int = 200,
    latency_range: tuple[float, float] = (0.005, 0.05),
    skew_s: tuple[float, float, float, float, float] = (0.02, 0.5, 0.2, 0.2, 0.02),
    repeat: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """The async form of `bench_scheduler` (run it on any event loop)."""
    figures: dict[str, Any] = {}

    # 1. Overhead: zero latency, best of `repeat`, against calling the executor directly.
    wf = random_workflow(overhead_steps, seed=seed)
    sleeper = SleepExecutor()
    best = base = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for step in wf.steps:
            await sleeper(step, step.task)
        base = min(base, time.perf_counter() - t0)
        t0 = time.perf_counter()
        await execute_workflow(wf, sleeper)
        best = min(best, time.perf_counter() - t0)
    figures["overhead_steps"] = overhead_steps
    figures["overhead_us_per_step"] = (best - base) / overhead_steps * 1e6
    figures["total_us_per_step"] = best / overhead_steps * 1e6

    # 2. A random DAG with real sleeps and no concurrency limit.
    rng = random.Random(seed + 1)
    wf = random_workflow(dag_steps, seed=seed + 1)
    lat = {s.id: rng.uniform(*latency_range) for s in wf.steps}
    run = await execute_workflow(wf, SleepExecutor(lat))
    figures["dag_steps"] = dag_steps
    figures["dag_wall_s"] = run.wall_s
    figures["dag_critical_path_s"] = run.critical_path_s
    figures["dag_wall_over_critical_path"] = run.wall_s / run.critical_path_s

    # 3. The skewed diamond: B is slow, C -> D together take almost as long.
    a, b, c, d, e = skew_s
    skewed = Workflow.from_dict(
        {
            "name": "skewed",
            "steps": [
                {"id": "A", "agent": "writer", "task": "a"},
                {"id": "B", "agent": "writer", "task": "{{A}}"},
                {"id": "C", "agent": "writer", "task": "{{A}}"},
                {"id": "D", "agent": "writer", "task": "{{C}}"},
                {"id": "E", "agent": "writer", "task": "{{B}} {{D}}"},
            ],
        }
    )
    run = await execute_workflow(skewed, SleepExecutor(dict(zip("ABCDE", skew_s, strict=True))))
    goal = 1.05 * (max(b, c + d) + a + e)
    figures["skewed_wall_s"] = run.wall_s
    figures["skewed_goal_s"] = goal
    figures["skewed_superstep_s"] = a + max(b, c) + d + e
    figures["skewed_ok"] = run.wall_s <= goal
    return figures


def bench_scheduler(**options: Any) -> dict[str, Any]:
    """Measure the scheduler (see the module docstring); blocks, works inside Jupyter too.

    Keys: `overhead_us_per_step` (scheduler time per step beyond the executor's own),
    `total_us_per_step`, `dag_wall_over_critical_path`, `skewed_wall_s` / `skewed_goal_s` /
    `skewed_superstep_s` / `skewed_ok`, and the sizes used.
    """
    return run_sync(abench_scheduler(**options))
