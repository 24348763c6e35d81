"""matplotlib figures of agentnb results; each takes `ax=None` and returns the Axes it drew on.

- `plot_timeline`: a workflow run as a Gantt chart;
- `plot_speedup`: a `SpeedupReport.table` as bars with the ideal marked;
- `plot_latency`, `plot_cost`: the call metrics (`orch.metrics()` or a `PerformanceTracker`)
  per agent, model or workflow;
- `plot_tradeoff`: a `GridResult.summary()` as one point per agent and model (cost against
  latency, score against cost...).

matplotlib is imported only when a plot is drawn, so importing agentnb stays fast.

Example:
    >>> ax = plot_timeline(run)          # doctest: +SKIP
    >>> ax.figure.savefig("run.png")     # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

    from .metrics import PerformanceTracker

__all__ = [
    "STATUS_COLOURS",
    "plot_cost",
    "plot_latency",
    "plot_speedup",
    "plot_timeline",
    "plot_tradeoff",
]

#: Bar colour of each step status.
STATUS_COLOURS: dict[str, str] = {
    "succeeded": "#4c9a4c",
    "cached": "#5b8fd6",
    "failed": "#d64b4b",
    "skipped": "#b0b0b0",
    "budget": "#c9a227",
    "running": "#e0a030",
    "waiting": "#e6e6e6",
}


class _RunLike(Protocol):
    """What `plot_timeline` needs of a `WorkflowRun`, named so this module need not import it."""

    @property
    def name(self) -> str: ...

    @property
    def metrics(self) -> pd.DataFrame: ...


def plot_timeline(run_or_frame: _RunLike | pd.DataFrame, ax: Axes | None = None) -> Axes:
    """A Gantt chart of a workflow run: one horizontal bar per step, from its start to its end.

    Bars are coloured by status; cached steps are hatched and labelled "cached"; skipped steps
    and steps the budget did not start are labelled where they stopped. Step ids label the y
    axis, first step at the top; the x axis is seconds since the run started. A run in waves
    (`run_workflow(batch=True)`) has each wave's span shaded and labelled. Accepts a
    `WorkflowRun` or its `.metrics` DataFrame (columns `step`, `status`, `start_s`, `end_s`,
    `cached`; `wave` when it has one).

    Example:
        >>> ax = plot_timeline(run.metrics)   # doctest: +SKIP
    """
    import pandas as pd

    # Told apart by the frame's type: importing the workflow package here would close a cycle
    # (`WorkflowRun.timeline` imports this module), so the dependency goes one way.
    if isinstance(run_or_frame, pd.DataFrame):
        frame, title = run_or_frame, None
    else:
        frame, title = run_or_frame.metrics, run_or_frame.name
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(8, max(1.5, 0.4 * len(frame) + 1)))
    from matplotlib.patches import Patch

    steps = [str(s) for s in frame["step"]]
    y = list(range(len(steps)))
    seen: dict[str, None] = {}
    for pos, row in zip(y, frame.itertuples(index=False), strict=True):
        status = str(row.status)
        start, end = _num(row.start_s), _num(row.end_s)
        if math.isnan(start):
            start = end if not math.isnan(end) else 0.0
        width = 0.0 if math.isnan(end) else max(0.0, end - start)
        cached = bool(getattr(row, "cached", False)) or status == "cached"
        ax.barh(
            pos,
            width,
            left=start,
            height=0.6,
            color=STATUS_COLOURS.get(status, "#808080"),
            edgecolor="#333333",
            linewidth=0.5,
            hatch="//" if cached else None,
        )
        seen.setdefault(status, None)
        label = "cached" if cached else (status if status in ("skipped", "budget") else "")
        if label:
            ax.text(start + width, pos, f" {label}", va="center", fontsize=8, color="#333333")
    _shade_waves(frame, ax)
    ax.set_yticks(y)
    ax.set_yticklabels(steps)
    ax.set_ylim(len(steps) - 0.5, -0.5)  # first step at the top
    ax.set_xlabel("seconds since start")
    if title:
        ax.set_title(f"workflow {title}")
    ax.legend(
        handles=[Patch(color=STATUS_COLOURS.get(s, "#808080"), label=s) for s in seen],
        loc="best",
        fontsize=8,
    )
    ax.grid(axis="x", alpha=0.3)
    return ax


def _shade_waves(frame: pd.DataFrame, ax: Axes) -> None:
    """Shade and label each wave's span, from its first step's start to its last one's end."""
    if "wave" not in frame:
        return
    timed = frame[["wave", "start_s", "end_s"]].astype("float64").dropna()  # NA: not in one
    for i, (wave, spans) in enumerate(timed.groupby("wave")):
        lo, hi = float(spans["start_s"].min()), float(spans["end_s"].max())
        ax.axvspan(lo, hi, color="#4c72b0" if i % 2 else "#dd8452", alpha=0.08, zorder=0)
        ax.text(
            (lo + hi) / 2,
            0.01,
            f"wave {int(wave)}",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
            color="#333333",
        )


def _num(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def plot_speedup(
    table: pd.DataFrame, ax: Axes | None = None, *, backend: str | None = None
) -> Axes:
    """Bar chart of a `SpeedupReport.table`: speedup per mode over the first row's mode.

    Error bars span the speedups of the slowest and the fastest repeat; a black tick on each bar
    marks the ideal speedup where one is defined (n / ceil(n / max_concurrency) for concurrent,
    over sequential). `backend` (e.g. "simulated") goes into the title; `SpeedupReport.plot`
    passes its own.

    Example:
        >>> compare_speedup(calls).plot()   # doctest: +SKIP
    """
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 3.5))
    modes = [str(m) for m in table["mode"]]
    speedup = [float(v) for v in table["speedup"]]
    reference = float(table["wall_s_mean"].iloc[0]) if len(speedup) else 1.0
    low = [s - reference / float(w) for s, w in zip(speedup, table["wall_s_max"], strict=True)]
    high = [reference / float(w) - s for s, w in zip(speedup, table["wall_s_min"], strict=True)]
    x = list(range(len(modes)))
    colours = ["#b0b0b0", "#4c9a4c", "#5b8fd6", "#e0a030"]
    ax.bar(
        x,
        speedup,
        yerr=[[max(0.0, v) for v in low], [max(0.0, v) for v in high]],
        capsize=4,
        color=[colours[i % len(colours)] for i in x],
        edgecolor="#333333",
        linewidth=0.5,
    )
    for xi, ideal in zip(x, table["ideal_speedup"], strict=True):
        if not math.isnan(float(ideal)):
            ax.hlines(
                float(ideal),
                xi - 0.4,
                xi + 0.4,
                colors="black",
                linestyles="--",
                linewidth=1,
                gid="ideal",
            )
    for xi, s in zip(x, speedup, strict=True):
        ax.text(xi, s, f"{s:,.1f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, modes)
    ax.set_ylabel(f"speedup vs {modes[0]}" if modes else "speedup")
    ax.set_yscale("log" if max(speedup, default=1) > 50 else "linear")
    ax.set_title(f"Speedup on {backend} (dashed: ideal)" if backend else "Speedup (dashed: ideal)")
    return ax


def _metrics_frame(metrics: pd.DataFrame | PerformanceTracker) -> pd.DataFrame:
    to_dataframe = getattr(metrics, "to_dataframe", None)
    frame: pd.DataFrame = to_dataframe() if callable(to_dataframe) else metrics
    return frame


def _labels(frame: pd.DataFrame, by: str) -> list[str]:
    return ["(none)" if _missing(v) else str(v) for v in frame[by]]


def _missing(value: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def plot_latency(
    metrics: pd.DataFrame | PerformanceTracker,
    ax: Axes | None = None,
    *,
    by: str = "agent",
    include_cache_hits: bool = False,
) -> Axes:
    """Latency distribution per agent (or `by` another metrics column): one box each.

    Boxes span the quartiles, the line inside is the median, whiskers reach the 5th and 95th
    percentiles exactly (interpolated as `summary()` interpolates `p95_latency_ms`, not cut
    back to the nearest call), dots are the calls beyond them. Cache hits are left out unless
    `include_cache_hits` (they answer in microseconds and would flatten the boxes), so by
    default the right whisker is the p95 of the calls that reached the backend, while
    `summary()` counts every call: with `include_cache_hits=True` the two agree. The y labels
    give each group's number of calls.

    Example:
        >>> plot_latency(orch.metrics())   # doctest: +SKIP
    """
    frame = _metrics_frame(metrics)
    if not include_cache_hits:
        frame = frame[~frame["cache_hit"].astype(bool)]
    groups: dict[str, list[float]] = {}
    for label, value in zip(_labels(frame, by), frame["latency_ms"], strict=True):
        groups.setdefault(label, []).append(float(value))
    names = sorted(groups)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(7, max(1.8, 0.5 * len(names) + 1.2)))
    if names:
        import matplotlib
        import numpy as np
        from matplotlib import cbook

        # `vert` gave way to `orientation` in matplotlib 3.10 (and warns from 3.11).
        horizontal: dict[str, Any] = (
            {"orientation": "horizontal"}
            if matplotlib.__version_info__ >= (3, 10)
            else {"vert": False}
        )
        stats = cbook.boxplot_stats([groups[n] for n in names], whis=(5, 95))
        for st, name in zip(stats, names, strict=True):
            # boxplot() would end a whisker at the last call inside the percentile; the
            # percentile itself (linear, as pandas' quantile) is what summary() reports.
            values = np.asarray(groups[name])
            low, high = np.percentile(values, [5, 95])
            st["whislo"], st["whishi"] = float(low), float(high)
            st["fliers"] = values[(values < low) | (values > high)]
        parts = ax.bxp(
            stats, **horizontal, widths=0.6, patch_artist=True, medianprops={"color": "black"}
        )
        for box in parts["boxes"]:
            box.set_facecolor("#9cc3e6")
        for line in parts["medians"]:
            line.set_gid("median")
        ax.set_yticks(range(1, len(names) + 1), [f"{n} ({len(groups[n])})" for n in names])
        ax.set_ylim(len(names) + 0.5, 0.5)  # first name at the top
    else:
        ax.text(0.5, 0.5, "no calls", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency (ms)")
    ax.set_title(f"Latency per {by}" + ("" if include_cache_hits else " (cache hits left out)"))
    ax.grid(axis="x", alpha=0.3)
    return ax


def plot_cost(
    metrics: pd.DataFrame | PerformanceTracker, ax: Axes | None = None, *, by: str = "agent"
) -> Axes:
    """USD spent per agent (or `by` another column), with what the cache saved stacked on top.

    Solid bars are the known cost (`cost_usd`; a call without a price counts nothing and the
    label says how many there were); hatched bars on top are `cost_saved_usd` of cache hits.
    Each bar is labelled with the amount spent.

    Example:
        >>> plot_cost(orch.tracker, by="model")   # doctest: +SKIP
    """
    frame = _metrics_frame(metrics)
    spent: dict[str, float] = {}
    saved: dict[str, float] = {}
    unknown: dict[str, int] = {}
    for label, cost, save in zip(
        _labels(frame, by), frame["cost_usd"], frame["cost_saved_usd"], strict=True
    ):
        cost, save = float(cost), float(save)
        spent[label] = spent.get(label, 0.0) + (0.0 if math.isnan(cost) else cost)
        saved[label] = saved.get(label, 0.0) + (0.0 if math.isnan(save) else save)
        unknown[label] = unknown.get(label, 0) + math.isnan(cost)
    names = sorted(spent)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 2), 3.5))
    x = list(range(len(names)))
    paid = [spent[n] for n in names]
    ax.bar(x, paid, color="#4c9a4c", edgecolor="#333333", linewidth=0.5, label="spent")
    ax.bar(
        x,
        [saved[n] for n in names],
        bottom=paid,
        color="#dfeedd",
        edgecolor="#333333",
        linewidth=0.5,
        hatch="//",
        label="saved by the cache",
    )
    for xi, n in zip(x, names, strict=True):
        note = f"\n{unknown[n]} unpriced" if unknown[n] else ""
        ax.text(
            xi, spent[n] + saved[n], f"${spent[n]:,.4f}{note}", ha="center", va="bottom", fontsize=8
        )
    top = max((spent[n] + saved[n] for n in names), default=0.0)
    if top > 0:  # room for the labels; margins() cannot: stacked bars pin the top edge
        ax.set_ylim(0, top * 1.15)
    ax.set_xticks(x, names)
    ax.set_ylabel("USD")
    ax.set_title(f"Cost per {by}")
    if names:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return ax


_AXIS_LABELS = {
    "p50_latency_ms": "p50 latency (ms)",
    "p95_latency_ms": "p95 latency (ms)",
    "cost_per_call_usd": "USD per call",
    "mean_score": "mean score",
    "mean_output_tokens": "mean output tokens",
    "failure_rate": "failure rate",
}


def plot_tradeoff(summary: pd.DataFrame, x: str, y: str, ax: Axes | None = None) -> Axes:
    """One point per row of a `GridResult.summary()`: `y` against `x`, coloured by model and
    labelled with the agent (when there are several), so the trade-off shows at a glance.

    Rows where `x` or `y` is missing (every call failed) are left out.

    Example:
        >>> plot_tradeoff(g.summary(), "p50_latency_ms", "cost_per_call_usd")  # doctest: +SKIP
    """
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 4))
    several = summary["agent"].nunique() > 1
    for n, (model, group) in enumerate(summary.groupby("model", sort=False)):
        points = group[group[x].notna() & group[y].notna()]
        ax.scatter(points[x], points[y], s=60, color=f"C{n % 10}", label=str(model), zorder=3)
        if several:
            for px, py, agent in zip(points[x], points[y], points["agent"], strict=True):
                ax.annotate(str(agent), (px, py), xytext=(4, 4), textcoords="offset points",
                            fontsize=8)  # fmt: skip
    ax.set_xlabel(_AXIS_LABELS.get(x, x))
    ax.set_ylabel(_AXIS_LABELS.get(y, y))
    ax.set_title(f"{_AXIS_LABELS.get(y, y)} against {_AXIS_LABELS.get(x, x)}, per model")
    if len(summary):
        ax.legend(fontsize=8, title="model", title_fontsize=8)
    ax.grid(alpha=0.3)
    return ax
