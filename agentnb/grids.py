"""`grid`: every task with every agent on every model, at once, as one long table to compare.

Every combination is one call and they all run concurrently (chunks of `execute_multiple`, as
`map` runs rows: `agentnb._jobs`). The result is a `GridResult`: `.frame` is the long table, one
row per call, `task`, `agent`, `model`, `repeat`, the answer (`text`, or with `schema=` one
column per field), `cached`, `latency_ms`, `input_tokens`, `output_tokens`, `cost_usd`, `error`,
and `score` when a `scorer(task, answer) -> float` is given. `.summary()` pivots it per agent and
model, `.plot()` draws it, `.side_by_side()` shows the answers next to each other.

A grid compares, so its `cost_usd` is what the answer costs at list price whether the response
cache answered it or not (`cached` says which); `map`'s is what was paid. The repeat index goes
into each call as its `sample` option, which is part of the cache key: repeats are real samples,
each cached on its own. The scorer runs after the calls, on the answers that came back; if it
raises, the error is raised, and running the grid again once it is fixed costs nothing: the
answers come from the cache.

Example:
    >>> g = agentnb.grid(["2+2?", "Capital of France?"], agents=["writer"],
    ...                  models=["haiku", "sonnet"], repeats=2)     # doctest: +SKIP
    >>> g.summary()                                                # doctest: +SKIP
    >>> g.plot()                                                   # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Unpack

from ._jobs import (
    META_COLUMNS,
    Chunk,
    Columns,
    Job,
    OrchestratorArg,
    async_core,
    run,
    schema_fields,
)
from .errors import AgentnbError
from .options import CallOptions, OptionArgs
from .orchestrator.calls import AgentCall, options_of

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .orchestrator.core import ProgressArg

__all__ = ["KEY_COLUMNS", "SUMMARY_COLUMNS", "GridResult", "SideBySide", "grid"]

#: The columns that say which combination a row of `GridResult.frame` is.
KEY_COLUMNS = ("task", "agent", "model", "repeat")
#: Columns of `GridResult.summary()` after `agent` and `model` (`mean_score` with a scorer).
SUMMARY_COLUMNS = (
    "calls",
    "p50_latency_ms",
    "p95_latency_ms",
    "cost_per_call_usd",
    "mean_output_tokens",
    "failure_rate",
)
_NOT_ANSWER = {*KEY_COLUMNS, *META_COLUMNS, "input_tokens", "output_tokens", "score"}

Scorer = Callable[[str, Any], float]


def grid(
    tasks: Sequence[str] | pd.Series,
    agents: Sequence[str] | str,
    models: Sequence[str | None] | str | None = None,
    repeats: int = 1,
    scorer: Scorer | None = None,
    *,
    on_error: Literal["keep", "raise"] = "keep",
    max_concurrency: int | None = None,
    progress: ProgressArg = None,
    batch: bool = False,
    max_cost_usd: float | None = None,
    orchestrator: OrchestratorArg = None,
    options: CallOptions | None = None,
    **overrides: Unpack[OptionArgs],
) -> GridResult:
    """Run every task with every agent on every model, `repeats` times each, all at once.

    `models`: model ids or aliases (None: each agent's own model). `scorer(task, answer)`: a
    number for each answer (the text, or the fields as a dict with `schema=`), in `score`.
    The other arguments are `map`'s. Everything is checked before anything runs.

    Example:
        >>> agentnb.grid(tasks, ["writer", "python-expert"], ["haiku"])  # doctest: +SKIP
    """
    aio = async_core(orchestrator)
    task_list = _tasks(tasks)
    agent_names = [aio.agents.get(a).name for a in _names(agents, "agents")]
    common = options_of(options, overrides, "grid")
    model_list: list[str | None] = [None] if models is None else list(_names(models, "models"))
    if models is not None and common.model is not None:
        raise AgentnbError("grid: give models=[...] or model=..., not both")
    if type(repeats) is not int or not 1 <= repeats <= 10_000:
        raise AgentnbError(
            f"grid: repeats must be a whole number from 1 to 10,000, got {repeats!r}"
        )
    if scorer is not None and not callable(scorer):
        raise AgentnbError(f"grid: scorer must be callable, got {type(scorer).__name__}")
    if common.sample is not None:
        raise AgentnbError(
            "grid: each call's sample is its repeat index; give repeats=, not sample="
        )
    per_call = [[_call_options(m, r) for r in range(repeats)] for m in model_list]
    shape = (len(task_list), len(agent_names), len(model_list), repeats)
    total = math.prod(shape)

    def make(start: int, stop: int) -> Chunk:
        chunk = Chunk()
        for i in range(start, stop):
            t, a, m, r = _unravel(i, shape)
            chunk.rows.append(i)
            chunk.calls.append(AgentCall(agent_names[a], task_list[t], per_call[m][r]))
        return chunk

    columns = Columns(total, fields=schema_fields("grid", common), tokens=True, prices=aio.prices)
    job = Job(
        "grid",
        total,
        make,
        common,
        on_error=on_error,
        max_concurrency=max_concurrency,
        progress=progress,
        batch=batch,
        max_cost_usd=max_cost_usd,
    )
    run(aio, job, columns)
    own = {a: aio.config.resolve_model(aio.agents.get(a).model) for a in agent_names}
    labels = [[m or own[a] for m in model_list] for a in agent_names]  # None: the agent's own
    keys: dict[str, list[Any]] = {name: [] for name in KEY_COLUMNS}
    for i in range(total):
        t, a, m, r = _unravel(i, shape)
        keys["task"].append(task_list[t])
        keys["agent"].append(agent_names[a])
        keys["model"].append(labels[a][m])
        keys["repeat"].append(r)
    frame = columns.frame(leading=keys)
    if scorer is not None:
        frame["score"] = [
            float(scorer(task, columns.answer(i))) if columns.ok[i] else math.nan
            for i, task in enumerate(keys["task"])
        ]
    return GridResult(frame)


def _tasks(tasks: Any) -> list[str]:
    items = tasks.tolist() if hasattr(tasks, "tolist") else tasks
    if isinstance(items, str) or not isinstance(items, Sequence) or not items:
        raise AgentnbError("grid: tasks must be a non-empty list of strings")
    for i, task in enumerate(items):
        if not isinstance(task, str) or not task.strip():
            raise AgentnbError(f"grid: task #{i} must be non-empty text, got {task!r:.60}")
    return list(items)


def _names(value: Any, what: str) -> list[Any]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not items:
        raise AgentnbError(f"grid: {what} must be a name or a non-empty list of names")
    if len(set(items)) != len(items):
        raise AgentnbError(f"grid: {what} names one twice: {list(items)!r}")
    return list(items)


def _call_options(model: str | None, repeat: int) -> CallOptions:
    # The repeat is the call's sample: in the cache key, so each repeat is a sample of its own.
    return CallOptions.build({"model": model, "sample": repeat or None}, source="grid")


def _unravel(i: int, shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Row `i`'s (task, agent, model, repeat) positions: repeats vary fastest."""
    i, r = divmod(i, shape[3])
    i, m = divmod(i, shape[2])
    t, a = divmod(i, shape[1])
    return t, a, m, r


class GridResult:
    """The result of `grid`: `.frame` (the long table), `.summary()`, `.plot()`, `.side_by_side()`.

    A wrapper, not a DataFrame subclass: pandas hands back plain frames from most operations on
    a subclass, so `.frame` is the honest place for the table (`len(g)` is its rows). It shows as
    the table in a notebook.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    @property
    def scored(self) -> bool:
        """True when a scorer gave the answers a `score`."""
        return "score" in self.frame.columns

    def summary(self) -> pd.DataFrame:
        """One row per agent and model: `calls`, `p50_latency_ms`, `p95_latency_ms` (of the
        calls that answered, cache hits included), `cost_per_call_usd` (list price),
        `mean_output_tokens`, `failure_rate`, and `mean_score` with a scorer."""
        import pandas as pd

        frame = self.frame
        by = ["agent", "model"]
        answered = frame[frame["error"].isna()].groupby(by, sort=False)
        latency = answered["latency_ms"]
        columns: dict[str, Any] = {
            "p50_latency_ms": latency.quantile(0.5),
            "p95_latency_ms": latency.quantile(0.95),
            "cost_per_call_usd": answered["cost_usd"].mean(),
            "mean_output_tokens": answered["output_tokens"].mean().astype("float64"),
        }
        if self.scored:
            columns["mean_score"] = answered["score"].mean()
        groups = frame.groupby(by, sort=False)
        calls = groups.size()  # every combination, in the grid's order (all-failed ones too)
        failed = groups["error"].count()
        table = pd.DataFrame(columns).reindex(calls.index)
        table.insert(0, "calls", calls.astype("int64"))
        table.insert(5, "failure_rate", failed / calls)
        return table.rename_axis(by).reset_index()

    def plot(self, ax: Axes | None = None) -> Axes | Figure:
        """Cost per call against p50 latency, one point per agent and model, coloured by model.

        With `ax`, that chart is drawn there and the Axes returned. Without, a Figure with it,
        the mean score against cost when the grid was scored, and the latency per agent
        (`plots.plot_latency`, cache hits left out).
        """
        from .plots import plot_latency, plot_tradeoff

        summary = self.summary()
        if ax is not None:
            return plot_tradeoff(summary, "p50_latency_ms", "cost_per_call_usd", ax=ax)
        import matplotlib.pyplot as plt

        panels = 3 if self.scored else 2
        fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8))
        plot_tradeoff(summary, "p50_latency_ms", "cost_per_call_usd", ax=axes[0])
        if self.scored:
            plot_tradeoff(summary, "cost_per_call_usd", "mean_score", ax=axes[1])
        answered = self.frame[self.frame["error"].isna()]
        plot_latency(answered.rename(columns={"cached": "cache_hit"}), ax=axes[-1], by="agent")
        fig.tight_layout()
        return fig

    def side_by_side(self) -> SideBySide:
        """The answers next to each other: one row per task (and repeat), one column per model
        (per agent · model with several agents)."""
        return SideBySide(self.frame)

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return f"GridResult({len(self.frame)} calls)\n{self.frame!r}"

    def _repr_html_(self) -> str:
        shown: str = self.frame._repr_html_()
        return shown


class SideBySide:
    """Answers to the same tasks next to each other: an HTML table in a notebook, text elsewhere.

    `.frame` holds the answers (or `error: ...`), one column per model (`agent · model` when
    the grid had several agents), one row per task (and repeat, when there were several).
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        import pandas as pd

        several = frame["agent"].nunique() > 1
        self.repeats = int(frame["repeat"].max()) + 1
        #: (task, repeat, column, answer, footer), in the grid's order.
        self.cells = [
            (
                task,
                int(r),
                f"{a} · {m}" if several else str(m),
                _answer(frame, i),
                _footer(frame, i),
            )
            for i, (task, a, m, r) in enumerate(
                zip(frame["task"], frame["agent"], frame["model"], frame["repeat"], strict=True)
            )
        ]
        self.columns = list(dict.fromkeys(c[2] for c in self.cells))
        long = pd.DataFrame(self.cells, columns=["task", "repeat", "column", "answer", "footer"])
        table = long.pivot(index=["task", "repeat"], columns="column", values="answer")
        table = table.reindex(columns=self.columns)  # the grid's order, not sorted
        self.frame = table.droplevel("repeat") if self.repeats == 1 else table
        self.frame.columns.name = None

    def _rows(self) -> dict[tuple[str, int], dict[str, tuple[str, str]]]:
        rows: dict[tuple[str, int], dict[str, tuple[str, str]]] = {}
        for task, repeat, column, answer, footer in self.cells:
            rows.setdefault((task, repeat), {})[column] = (answer, footer)
        return rows

    def _repr_html_(self) -> str:
        rows = self._rows()
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in self.columns)
        body = []
        for (task, repeat), row in rows.items():
            if len(rows) > 1:
                title = html.escape(task if len(task) <= 200 else task[:197] + "...")
                more = f" <small>(repeat {repeat})</small>" if self.repeats > 1 else ""
                body.append(f"<tr><td colspan='{len(self.columns)}'><b>{title}</b>{more}</td></tr>")
            tds = "".join(_cell_html(*row[c]) if c in row else "<td></td>" for c in self.columns)
            body.append(f"<tr>{tds}</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"

    def __repr__(self) -> str:
        out = []
        for (task, repeat), row in self._rows().items():
            if len(self.cells) > len(self.columns):  # several tasks or repeats: say which
                out.append(f"## {task[:70]}" + (f" (repeat {repeat})" if self.repeats > 1 else ""))
            for column, (answer, footer) in row.items():
                out += [f"== {column} ==", answer, f"-- {footer}", ""]
        return "\n".join(out).rstrip()


def _answer(rows: pd.DataFrame, i: int) -> str:
    error = rows["error"].iat[i]
    if isinstance(error, str):
        return f"error: {error}"
    if "text" in rows.columns:
        return str(rows["text"].iat[i])
    fields = {c: rows[c].iat[i] for c in rows.columns if c not in _NOT_ANSWER}
    return json.dumps(fields, default=str, ensure_ascii=False, indent=1)


def _footer(rows: pd.DataFrame, i: int) -> str:
    if isinstance(rows["error"].iat[i], str):
        return "failed"
    parts = [
        f"{rows['latency_ms'].iat[i]:,.0f} ms",
        f"{rows['output_tokens'].iat[i]:,} tokens out",
        f"${rows['cost_usd'].iat[i]:.4f}",
    ]
    if rows["cached"].iat[i]:
        parts.append("cached")
    return " · ".join(parts)


def _cell_html(answer: str, footer: str) -> str:
    return (
        "<td style='vertical-align:top;text-align:left'>"
        f"<div style='white-space:pre-wrap'>{html.escape(answer)}</div>"
        f"<div style='color:#777;font-size:smaller'>{html.escape(footer)}</div></td>"
    )
