"""Workflows: the scheduler's figures, and a skewed DAG through the orchestrator."""

from __future__ import annotations

from ..backends import SimulatedBackend
from ..loop import run_sync
from ._common import Draw, Row, _goal, _orchestrator


def bench_workflow(
    *,
    overhead_steps: int = 1000,
    dag_steps: int = 200,
    latency_range: tuple[float, float] = (0.005, 0.05),
    skew_s: tuple[float, float, float, float, float] = (0.02, 0.5, 0.2, 0.2, 0.02),
) -> tuple[list[Row], dict[str, Draw]]:
    """The scheduler's figures, and the skewed DAG run through the orchestrator + simulator.

    Goals: <= 100 µs of scheduler overhead per step; wall <= 1.03 x critical path on the random
    DAG; the skewed DAG A -> {B, C -> D} -> E within 1.05 x (max(B, C + D) + A + E). In the
    orchestrator run, A and E are `writer`, B `code-reviewer`, C and D `python-expert`, whose
    simulated latencies are set per agent (so A and E share one).
    """
    from ..workflow import Workflow
    from ._scheduler_micro import bench_scheduler

    f = bench_scheduler(
        overhead_steps=overhead_steps,
        dag_steps=dag_steps,
        latency_range=latency_range,
        skew_s=skew_s,
    )
    a, b, c, d, e = skew_s
    skew_goal = 1.05 * (max(b, c + d) + a + e)
    lo, hi = (round(x * 1000) for x in latency_range)
    rows = [
        _goal(
            {
                "figure": f"scheduler overhead, {overhead_steps}-step random DAG, zero latency",
                "value": round(f["overhead_us_per_step"], 1),
                "unit": "us/step",
            },
            "<= 100 us/step",
            f["overhead_us_per_step"] <= 100,
            measured=f"{f['overhead_us_per_step']:.1f} µs/step",
        ),
        _goal(
            {
                "figure": f"wall / critical path, {dag_steps}-step random DAG, {lo}-{hi} ms",
                "value": round(f["dag_wall_over_critical_path"], 3),
                "unit": "x",
            },
            "<= 1.03",
            f["dag_wall_over_critical_path"] <= 1.03,
            measured=f"{f['dag_wall_over_critical_path']:.3f}",
        ),
        _goal(
            {
                "figure": "skewed DAG, scheduler alone (superstep scheduler: "
                f"{f['skewed_superstep_s']:.2f} s)",
                "value": round(f["skewed_wall_s"], 3),
                "unit": "s",
            },
            f"<= {skew_goal:.3f} s",
            f["skewed_wall_s"] <= skew_goal,
            measured=f"{f['skewed_wall_s']:.3f} s",
        ),
    ]
    latencies = {"writer": a, "code-reviewer": b, "python-expert": c}
    aio = _orchestrator(0.0, 10, backend=SimulatedBackend(latencies=latencies, jitter=0.0))
    skewed = Workflow.from_dict(
        {
            "name": "skewed",
            "steps": [
                {"id": "A", "agent": "writer", "task": "Outline a short report"},
                {"id": "B", "agent": "code-reviewer", "task": "Review: {{A}}"},
                {"id": "C", "agent": "python-expert", "task": "Prototype: {{A}}"},
                {"id": "D", "agent": "python-expert", "task": "Refine: {{C}}"},
                {"id": "E", "agent": "writer", "task": "Merge: {{B}} {{D}}"},
            ],
        }
    )
    run_sync(aio.run_workflow(skewed, max_concurrency=10))  # warm-up
    aio.tracker.reset()
    run = run_sync(aio.run_workflow(skewed, max_concurrency=10))
    rows.append(
        _goal(
            {
                "figure": f"skewed DAG through the orchestrator + simulator "
                f"(critical path {run.critical_path_s:.3f} s)",
                "value": round(run.wall_s, 3),
                "unit": "s",
            },
            f"<= {skew_goal:.3f} s",
            run.wall_s <= skew_goal and run.status == "succeeded",
            measured=f"{run.wall_s:.3f} s ({run.status})",
        )
    )
    tracker = aio.tracker
    run_sync(aio.aclose())
    from ..plots import plot_cost, plot_latency

    figures: dict[str, Draw] = {
        "skewed_timeline": run.timeline,
        "skewed_latency": lambda ax: plot_latency(tracker, ax),
        "skewed_cost": lambda ax: plot_cost(tracker, ax),
    }
    return rows, figures
