"""Plots: drawn on the Agg backend and checked for what was drawn (bar heights, labels, lines)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from agentnb import PerformanceTracker
from agentnb.metrics import CallRecord, summarize
from agentnb.plots import plot_cost, plot_latency, plot_speedup, plot_timeline


@pytest.fixture(autouse=True)
def no_open_figures() -> Iterator[None]:
    yield
    plt.close("all")


def new_ax() -> Axes:
    ax: Axes = Figure().subplots()
    return ax


def rec(agent: str, latency_ms: float, **changes: Any) -> CallRecord:
    base = CallRecord(
        run_id=None,
        workflow=None,
        step=None,
        agent=agent,
        model="m1",
        backend="simulated",
        started_at=datetime(2026, 11, 1, tzinfo=UTC),
        latency_ms=latency_ms,
        queue_ms=0.0,
        attempts=1,
        cache_hit=False,
        input_tokens=1,
        output_tokens=1,
        cache_read_tokens=0,
        cache_write_tokens=0,
        cost_usd=0.0,
        success=True,
        error_type=None,
    )
    return replace(base, **changes)


def tracker_of(records: list[CallRecord]) -> PerformanceTracker:
    tracker = PerformanceTracker()
    tracker.extend(records)
    return tracker


def latency_records() -> list[CallRecord]:
    return [
        rec("writer", 10.0),
        rec("writer", 20.0),
        rec("writer", 30.0),
        rec("writer", 40.0),
        rec("writer", 0.1, cache_hit=True, attempts=0),
        rec("critic", 100.0),
    ]


def medians(ax: Axes) -> list[float]:
    """x of each median line (boxes are horizontal), in drawing order."""
    return [
        float(np.asarray(line.get_xdata())[0]) for line in ax.lines if line.get_gid() == "median"
    ]


def timeline_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "step": ["a", "b", "c"],
            "status": ["succeeded", "cached", "skipped"],
            "start_s": [0.0, 0.5, math.nan],
            "end_s": [0.5, 0.5, math.nan],
            "cached": [False, True, False],
        }
    )


class RunLike:
    """What `plot_timeline` needs of a `WorkflowRun`: its name and its metrics frame."""

    name = "review"

    @property
    def metrics(self) -> pd.DataFrame:
        return timeline_frame()


def test_timeline_draws_any_object_with_a_name_and_metrics() -> None:
    # plots does not import the workflow package (which imports plots for `run.timeline()`),
    # so a run is recognised by what it offers, not by its class.
    ax = plot_timeline(RunLike(), new_ax())
    assert ax.get_title() == "workflow review"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [round(b.get_width(), 3) for b in bars] == [0.5, 0.0, 0.0]
    assert [t.get_text().strip() for t in ax.texts] == ["cached", "skipped"]


def test_timeline_of_a_frame_has_no_title() -> None:
    ax = plot_timeline(timeline_frame(), new_ax())
    assert ax.get_title() == ""


def test_latency_boxes_per_agent_leave_out_cache_hits() -> None:
    ax = new_ax()
    out = plot_latency(tracker_of(latency_records()), ax)
    assert out is ax
    assert [t.get_text() for t in ax.get_yticklabels()] == ["critic (1)", "writer (4)"]
    assert medians(ax) == [pytest.approx(100.0), pytest.approx(25.0)]
    assert "cache hits left out" in ax.get_title()
    assert ax.get_xlabel() == "latency (ms)"


def test_latency_can_include_cache_hits_and_group_by_model() -> None:
    records = [*latency_records(), rec("critic", 300.0, model="m2")]
    ax = plot_latency(tracker_of(records).to_dataframe(), new_ax(), include_cache_hits=True)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["critic (2)", "writer (5)"]
    assert medians(ax) == [pytest.approx(200.0), pytest.approx(20.0)]
    by_model = plot_latency(tracker_of(records), new_ax(), by="model")
    assert [t.get_text() for t in by_model.get_yticklabels()] == ["m1 (5)", "m2 (1)"]


def whisker_ends(ax: Axes) -> list[float]:
    """x where each right-hand whisker ends, top box first (boxes are horizontal)."""
    ends: dict[float, float] = {}
    for line in ax.lines:
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        flat = len(x) == 2 and y[0] == y[1] and x[0] != x[1]  # caps and medians are upright
        if flat and line.get_linestyle() != "None":  # fliers are markers, not a line
            ends[y[0]] = max(ends.get(y[0], -math.inf), *x)
    return [ends[y] for y in sorted(ends)]


def test_latency_whiskers_are_the_p95_that_summary_reports() -> None:
    records = [rec("writer", float(ms)) for ms in range(10, 110, 10)]  # p95 = 95.5, between calls
    records += [rec("writer", 0.2, cache_hit=True, attempts=0)] * 3
    records += [rec("critic", 100.0), rec("critic", 300.0)]
    tracker = tracker_of(records)
    every_call = summarize(tracker.to_dataframe(), "agent").set_index("agent")["p95_latency_ms"]
    ax = plot_latency(tracker, new_ax(), include_cache_hits=True)
    assert whisker_ends(ax) == pytest.approx([every_call["critic"], every_call["writer"]])
    # By default cache hits are left out: the whisker is the p95 of the backend's calls only.
    backend_only = tracker.to_dataframe().query("not cache_hit")
    p95 = summarize(backend_only, "agent").set_index("agent")["p95_latency_ms"]
    assert whisker_ends(plot_latency(tracker, new_ax())) == pytest.approx(
        [p95["critic"], p95["writer"]]
    )
    assert p95["writer"] == pytest.approx(95.5) and every_call["writer"] < 95.5


def test_latency_with_no_calls_says_so() -> None:
    ax = plot_latency(PerformanceTracker(), new_ax())
    assert medians(ax) == [] and [t.get_text() for t in ax.texts] == ["no calls"]


def test_cost_bars_stack_spent_and_saved() -> None:
    records = [
        rec("writer", 1, cost_usd=0.25),
        rec("writer", 1, cost_usd=0.5),
        rec("writer", 1, cost_usd=0.0, cache_hit=True, cost_saved_usd=0.25),
        rec("critic", 1, cost_usd=1.0),
        rec("critic", 1, cost_usd=math.nan, success=False),
    ]
    ax = plot_cost(tracker_of(records), new_ax())
    spent, saved = ax.containers
    assert [t.get_text() for t in ax.get_xticklabels()] == ["critic", "writer"]
    assert [p.get_height() for p in spent] == pytest.approx([1.0, 0.75])
    assert [p.get_height() for p in saved] == pytest.approx([0.0, 0.25])
    assert [p.get_y() for p in saved] == pytest.approx([1.0, 0.75])  # stacked on the spend
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["$1.0000\n1 unpriced", "$0.7500"]
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["spent", "saved by the cache"]


def test_plots_make_their_own_axes_when_none_is_given() -> None:
    tracker = tracker_of(latency_records())
    for draw in (plot_latency, plot_cost):
        ax = draw(tracker)
        assert isinstance(ax, Axes) and ax.figure is not None


def test_speedup_bars_heights_labels_and_ideal() -> None:
    table = pd.DataFrame(
        {
            "mode": ["sequential", "concurrent", "cached"],
            "wall_s_mean": [2.0, 0.5, 0.01],
            "wall_s_min": [1.9, 0.4, 0.01],
            "wall_s_max": [2.1, 0.6, 0.01],
            "speedup": [1.0, 4.0, 200.0],
            "ideal_speedup": [1.0, 5.0, math.nan],
        }
    )
    ax = plot_speedup(table, new_ax())
    heights = [p.get_height() for p in ax.patches if isinstance(p, Rectangle)]
    assert heights == pytest.approx([1.0, 4.0, 200.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sequential", "concurrent", "cached"]
    ideals = [
        (float(seg[0][0]), float(seg[0][1]))
        for coll in ax.collections
        if isinstance(coll, LineCollection) and coll.get_gid() == "ideal"
        for seg in coll.get_segments()
    ]
    assert ideals == [(-0.4, 1.0), (0.6, 5.0)]  # over their own bars; none for "cached"
    assert ax.get_yscale() == "log"  # 200x does not fit a linear axis
    assert ax.get_ylabel() == "speedup vs sequential"
    assert ax.get_title() == "Speedup (dashed: ideal)"
    titled = plot_speedup(table, new_ax(), backend="claude (simulated)")
    assert titled.get_title() == "Speedup on claude (simulated) (dashed: ideal)"
