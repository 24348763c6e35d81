"""The whole suite: `run_suite`, its goals table, Markdown, and the files `--out` writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._caching import bench_cache_tiers, bench_cached_rerun
from ._common import Row, Section
from ._concurrency import bench_fanout, bench_overhead, bench_speedup
from ._scale import bench_scale
from ._sdk import bench_sdk_baseline
from ._workflow import bench_workflow


def run_suite(
    *, quick: bool = False, smoke: bool = False, progress: Callable[[str], None] | None = None
) -> list[Section]:
    """Run every section. `quick` keeps the whole suite under a minute; `smoke` makes every
    size and latency tiny (a few seconds in all; only for the tests: its figures mean nothing).
    `progress` is told each section's title before it runs."""
    say = progress or (lambda _title: None)
    lat = 0.01 if smoke else 0.2
    sections: list[Section] = []

    def add(key: str, title: str, note: str, fn: Callable[[], Any]) -> None:
        say(title)
        out = fn()
        rows, figures = out if isinstance(out, tuple) else (out, {})
        sections.append(Section(key, title, note, rows, figures))

    ms = f"{lat * 1000:g} ms"
    add(
        "fanout",
        f"Fan-out speedup ({ms} simulated latency)",
        "efficiency = ideal wall (one latency) / measured wall",
        lambda: bench_fanout(
            (5, 20) if smoke else (5, 20, 100, 1000),
            latency_s=lat,
            sequential_up_to=20 if quick or smoke else 100,
        ),
    )
    add(
        "overhead",
        "Orchestrator overhead per call (zero latency)",
        "µs per call over the bare simulator call (median of 5 runs)",
        lambda: bench_overhead(n=200 if smoke else 1000 if quick else 5000),
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
        "Scale run (child process)",
        "ideal = ceil(calls / concurrency) x latency; RSS from getrusage in the child",
        lambda: (
            bench_scale(300, max_concurrency=30, latency_s=0.005)
            if smoke
            else bench_scale(10_000, max_concurrency=200, latency_s=0.05)
        ),
    )
    add(
        "sdk_baseline",
        f"agentnb vs the bare Anthropic SDK ({ms}, simulator HTTP transport)",
        "same calls, same loop, alternating runs; vs_bare = median wall / bare median wall",
        lambda: bench_sdk_baseline(
            20 if smoke else 100, latency_s=lat, repeats=2 if smoke else 3 if quick else 5
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
        f"compare_speedup: sequential vs concurrent vs cached (20 calls, {ms})",
        "repeats: 1 (quick) or 3; error bars in speedup.png span the repeats",
        lambda: bench_speedup(20, latency_s=lat, repeats=1 if quick or smoke else 3),
    )
    return sections


def goals_table(sections: list[Section]) -> list[Row]:
    """Every row that has a goal, in one table: section, what, goal, met."""
    out: list[Row] = []
    for s in sections:
        for row in s.rows:
            if row.get("goal"):
                what = next(
                    (
                        f"{k}={row[k]}"
                        for k in ("figure", "mode", "client", "op", "calls")
                        if k in row
                    ),
                    "",
                )
                if "store" in row:
                    what = f"{row['store']} {row['op']}"
                    if row["store"] != "orchestrator":
                        what += f" ({row['entries']:,} entries)"
                out.append({"section": s.key, "what": what, "goal": row["goal"], "met": row["met"]})
    return out


def to_markdown(rows: list[Row]) -> str:
    """A Markdown table of `rows` (columns from the first row; `met` shown as yes/NO)."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])

    def cell(value: Any, col: str) -> str:
        if value is None:
            return ""
        if col == "met" and isinstance(value, bool):
            return "yes" if value else "**NO**"
        return str(value)

    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(cell(r.get(c), c) for c in cols) + " |")
    return "\n".join(out)


def write_outputs(sections: list[Section], out: Path) -> list[Path]:
    """Write `results.json` and one PNG per figure into `out`; returns the paths written."""
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "sections": [
            {"key": s.key, "title": s.title, "note": s.note, "rows": s.rows} for s in sections
        ],
        "goals": goals_table(sections),
    }
    written = [out / "results.json"]
    written[0].write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    for s in sections:
        for name, draw in s.figures.items():
            fig = Figure(figsize=(7, 4))  # no pyplot: no GUI backend, no global figure list
            draw(fig.subplots())
            fig.tight_layout()
            path = out / f"{name}.png"
            fig.savefig(path, dpi=120)
            written.append(path)
    return written
