"""The whole suite: `run_suite`, its goals table, the profiles of missed goals, and the output
(`render` for the terminal, `write_outputs` for `--out`)."""

from __future__ import annotations

import gc
import json
import os
import platform
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..loop import get_home_loop
from ._batch import bench_batch
from ._caching import bench_cache_tiers, bench_cached_rerun
from ._common import Goal, Row, Section, public
from ._concurrency import bench_fanout, bench_overhead, bench_speedup
from ._map import bench_map
from ._quota import FULL, QUICK, SMOKE, bench_quota
from ._reliability import bench_reliability
from ._scale import bench_scale
from ._sdk import bench_sdk_baseline
from ._workflow import bench_workflow


@dataclass
class SuiteRun:
    """One run of the suite: its sections, where it ran, and the profiles of its missed goals."""

    mode: str
    sections: list[Section]
    environment: dict[str, Any]
    profiles: list[Row] = field(default_factory=list)


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not every platform has one
        return []


def run_suite(
    *,
    quick: bool = False,
    smoke: bool = False,
    only: Collection[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SuiteRun:
    """Run every section, then profile the code behind each missed goal.

    `quick` keeps every section within about 5 s; `smoke` makes every size and latency tiny (a
    few seconds in all; only for the tests: its figures mean nothing). `only` runs just the
    sections with those keys (`bench --reliability` is `only=("reliability",)`); the reliability
    section is otherwise part of the full suite alone (its quick mode takes up to 30 s).
    `progress` is told each section's title before it runs.
    """
    say = progress or (lambda _title: None)
    mode = "smoke" if smoke else "quick" if quick else "full"
    environment: dict[str, Any] = {
        "mode": mode,
        **({"only": sorted(only)} if only is not None else {}),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "home_loop": get_home_loop().kind,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_start": _load(),
    }
    started = time.perf_counter()
    lat = 0.01 if smoke else 0.2
    ms = f"{lat * 1000:g} ms"
    sections: list[Section] = []

    def add(key: str, title: str, note: str, fn: Callable[[], Any]) -> None:
        if only is not None and key not in only:
            return
        say(title)
        gc.collect()  # no section pays for the garbage of the one before
        t0 = time.perf_counter()
        out = fn()
        rows, figures = out if isinstance(out, tuple) else (out, {})
        sections.append(Section(key, title, note, rows, figures, time.perf_counter() - t0))

    add(
        "fanout",
        f"Fan-out efficiency ({ms} simulated latency)",
        "efficiency = ideal wall (one latency) / median wall; bare = asyncio.gather over the "
        "simulator's create, alternating with agentnb on the home loop",
        lambda: bench_fanout(
            (5, 100, 1000) if quick or smoke else (5, 20, 100, 1000),
            latency_s=lat,
            sequential_up_to=5 if quick or smoke else 100,
            repeats=1 if smoke else 2 if quick else 3,
        ),
    )
    add(
        "overhead",
        "agentnb's overhead per call (zero latency, cache off)",
        "µs per call over the bare simulator call; tasks never used before in every repeat; "
        "overhead = median of the repeats' differences",
        lambda: bench_overhead(n=200 if smoke else 1000 if quick else 5000, repeats=5),
    )
    add(
        "cache",
        "Cache latencies (µs)",
        "p50/p99 of one call of each tier; diskcache on the same data when installed",
        lambda: bench_cache_tiers(
            (500,) if smoke else (10_000,) if quick else (10_000, 100_000),
            samples=100 if smoke else 1000 if quick else 2000,
        ),
    )
    add(
        "workflow",
        "Workflow scheduler",
        "sleep executor (the scheduler alone), then the skewed DAG through the orchestrator",
        lambda: bench_workflow(
            overhead_steps=100 if smoke else 1000,
            dag_steps=20 if smoke else 200,
            skew_s=(0.002, 0.05, 0.02, 0.02, 0.002) if smoke else (0.02, 0.5, 0.2, 0.2, 0.02),
        ),
    )
    add(
        "scale",
        "Flat cost at scale (a child process per run)",
        "cpu = process CPU time around the run; bare = asyncio.gather of one coroutine per call "
        "under an asyncio.Semaphore; peak RSS = the child's high-water mark",
        lambda: (
            bench_scale(300, small=100, max_concurrency=30, latency_s=0.005)
            if smoke
            else bench_scale(10_000 if quick else 100_000)
        ),
    )
    add(
        "sdk_baseline",
        f"agentnb vs the bare Anthropic SDK ({ms}, simulator HTTP transport)",
        "same calls, home loop, alternating runs, fresh tasks; vs_bare = median / bare median",
        lambda: bench_sdk_baseline(
            (20, 50) if smoke else (100, 300) if quick else (100, 1000),
            latency_s=lat,
            repeats=1 if smoke or quick else 5,
        ),
    )
    add(
        "cached_rerun",
        f"Fully cached re-run vs first run ({ms})",
        "memory + SQLite cache in a temporary directory; re-runs answered from memory",
        lambda: bench_cached_rerun(20, latency_s=lat, repeats=5 if smoke else 10 if quick else 20),
    )
    add(
        "speedup",
        f"compare_speedup: sequential vs concurrent vs cached ({ms})",
        "repeats: 1 (quick) or 3; error bars in speedup.png span the repeats",
        lambda: bench_speedup(
            10 if quick else 20, latency_s=lat, repeats=1 if quick or smoke else 3
        ),
    )
    add(
        "map",
        "agentnb.map and agentnb.grid on the simulator",
        "CPU rows: a child process each, 1 ms latency; beyond_bare_us = map's CPU per row minus "
        "the bare reference's (asyncio.gather + semaphore over the simulator's create, same run); "
        "re-run: memory + SQLite cache, best of 5 re-runs; grid: ideal = ceil(calls / 10) x "
        "latency" + (" (sizes scaled down: see each row)" if quick or smoke else ""),
        lambda: bench_map(mode),
    )
    job = SMOKE if smoke else QUICK if quick else FULL
    add(
        "quota",
        f"Pacing to a simulated quota: {job.describe()}",
        "throughput = (use beyond one burst) / (what the rate allows) from the first to the last "
        "accepted call's start, per kind, read from the simulator's own log: the kind that binds "
        "most; 429s = the simulator's refusals among all attempts. agentnb over the SDK and the "
        "simulator's HTTP transport; the two reference rows (the bare SDK with its default "
        "retries, and agentnb without the limiter) run side by side, each against a simulator of "
        "its own, and are judged in their rows only; processes share one `agentnb simulate` "
        "server (its /agentnb/stats) and their buckets (full suite only)",
        lambda: bench_quota(job, processes=not (quick or smoke)),
    )
    size = 300 if smoke else 5_000 if quick else 100_000
    add(
        "batch",
        f"Message Batches: {size:,} requests through the simulator's batches",
        "agentnb_us = the process's CPU (every thread) around execute_multiple(calls, "
        "batch=True), less the simulator's own (sim_us), per request; "
        + (
            "every run in one child process (peak RSS: the first run's)"
            if quick or smoke
            else "each run in a child process of its own (peak RSS)"
        )
        + "; sdk_us = the bare SDK's own CPU per request over the simulator's transport (a "
        "smaller job, scaled); price: the same calls online and as a batch",
        lambda: bench_batch(
            size,
            sdk_requests=100 if smoke else 1_000 if quick else 10_000,
            price_calls=100 if smoke else 1_000,
            cached=10 if smoke else 100,
            separate=not (quick or smoke),
        ),
    )
    if only is not None or mode == "full":
        add(
            "reliability",
            "Reliability: faults, kills, tampering, bad inputs, forks, secrets",
            "n = how many were tried; what did not hold is listed under the table",
            lambda: bench_reliability(
                quick=quick, smoke=smoke, progress=lambda probe: say(f"reliability: {probe}")
            ),
        )
    label = mode if only is None else f"{mode}: {', '.join(sorted(only))}"
    run = SuiteRun(label, sections, environment)
    for section in sections:
        for goal in _goals(section):
            if goal.met is False and goal.profile is not None:
                what = goal.what or "?"
                say(f"profiling the missed goal: {section.key} {what}")
                run.profiles.append({"section": section.key, "what": what, "rows": goal.profile()})
    environment["load_average_end"] = _load()
    environment["seconds"] = round(time.perf_counter() - started, 1)
    return run


def _what(row: Row) -> str:
    """How the goals table names a row whose goal gives no name of its own."""
    if "store" in row:
        what = f"{row['store']} {row['op']}"
        if row["store"] != "orchestrator":
            what += f" ({row['entries']:,} entries)"
        return what
    for k in ("figure", "mode", "client", "op", "calls"):
        if k in row:
            return f"{k}={row[k]}"
    return ""


def _goals(section: Section) -> list[Goal]:
    """The section's goals, each named (`Goal.what` filled in from its row where empty)."""
    out = []
    for row in section.rows:
        for goal in row.get("_goals", ()):
            goal.what = goal.what or _what(row)
            out.append(goal)
    return out


def goals_table(sections: list[Section]) -> list[Row]:
    """Every goal of every section, one row each: what, the figure and its bare reference
    (measured in the same run), the goal, met, and whether a stretch goal was met."""
    return [
        {
            "section": s.key,
            "what": g.what,
            "measured": g.measured,
            "bare (same run)": g.bare,
            "goal": g.goal,
            "met": g.met,
            "stretch met": g.stretch,
        }
        for s in sections
        for g in _goals(s)
    ]


def to_markdown(rows: list[Row]) -> str:
    """A Markdown table of `rows` (columns from the first row, private `_` keys left out;
    `met` shown as yes/NO, `stretch met` as yes/no)."""
    if not rows:
        return "(no rows)"
    cols = [c for c in rows[0] if not c.startswith("_")]

    def cell(value: Any, col: str) -> str:
        if value is None:
            return ""
        if col == "met" and isinstance(value, bool):
            return "yes" if value else "**NO**"
        if col == "stretch met" and isinstance(value, bool):
            return "yes" if value else "no"
        return str(value).replace("|", "\\|")

    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(cell(r.get(c), c) for c in cols) + " |")
    return "\n".join(out)


def header(run: SuiteRun) -> str:
    """The first lines of the output: the mode, Python, the home loop, and the load."""
    env = run.environment

    def load(key: str) -> str:
        return " / ".join(f"{x:g}" for x in env.get(key, [])) or "n/a"

    return (
        f"## agentnb bench ({run.mode})\n\n"
        f"{env['implementation']} {env['python']}, home loop: {env['home_loop']}, "
        f"{env['cpus']} CPUs, {env['platform']}\n"
        f"load average (1 / 5 / 15 min): {load('load_average_start')} at the start, "
        f"{load('load_average_end')} at the end; {env.get('seconds', '?')} s in all"
    )


def did_not_hold(section: Section) -> dict[str, list[str]]:
    """What did not hold in the section's rows (their private `_failures`), by row figure."""
    return {
        str(row.get("figure", "?")): list(row["_failures"])
        for row in section.rows
        if row.get("_failures")
    }


def render(run: SuiteRun) -> str:
    """The whole output as Markdown: header, each section's table (and what did not hold),
    the goals, the profiles."""
    parts = [header(run)]
    for s in run.sections:
        parts.append(f"### {s.title} ({s.seconds:.1f} s)\n\n{s.note}\n\n{to_markdown(s.rows)}")
        failed = did_not_hold(s)
        if failed:
            listed = "\n".join(
                f"- {figure}:\n" + "\n".join(f"  - {line}" for line in lines)
                for figure, lines in failed.items()
            )
            parts.append(f"Did not hold:\n\n{listed}")
    goals = goals_table(run.sections)
    missed = sum(1 for g in goals if g["met"] is False)
    parts.append(f"### Goals: {len(goals) - missed} of {len(goals)} met\n\n{to_markdown(goals)}")
    for p in run.profiles:
        parts.append(
            f"#### Profile of the missed goal: {p['section']}, {p['what']}\n\n"
            "top functions by own CPU time (both threads), and the collector's time\n\n"
            f"{to_markdown(p['rows'])}"
        )
    return "\n\n".join(parts)


def write_outputs(run: SuiteRun, out: Path) -> list[Path]:
    """Write `results.json` and one PNG per figure into `out`; returns the paths written."""
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "environment": run.environment,
        "sections": [
            {
                "key": s.key,
                "title": s.title,
                "note": s.note,
                "seconds": round(s.seconds, 2),
                "rows": [public(r) for r in s.rows],
                "did_not_hold": did_not_hold(s),
            }
            for s in run.sections
        ],
        "goals": goals_table(run.sections),
        "profiles": run.profiles,
    }
    written = [out / "results.json"]
    written[0].write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    for s in run.sections:
        for name, draw in s.figures.items():
            fig = Figure(figsize=(7, 4))  # no pyplot: no GUI backend, no global figure list
            draw(fig.subplots())
            fig.tight_layout()
            path = out / f"{name}.png"
            fig.savefig(path, dpi=120)
            written.append(path)
    return written
