"""`agentnb.grid`, `GridResult` (summary, plot, side by side) and `%%agent --models`."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import matplotlib
import pandas as pd
import pytest
import test_frames
import test_magics
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import agentnb
from agentnb.errors import AgentnbError, AgentNotFoundError
from agentnb.grids import KEY_COLUMNS, SUMMARY_COLUMNS, GridResult, SideBySide
from agentnb.orchestrator import AgentOrchestrator, Estimate

matplotlib.use("Agg")
ip = test_magics.ip  # the IPython shell with agentnb loaded (a fixture)

TASKS = ["What is 2+2?", "Name a colour."]
AGENTS = ["writer", "python-expert"]
MODELS = ["haiku", "sonnet"]


sim = test_frames.sim  # the orchestrator's simulator


def make(**settings: Any) -> AgentOrchestrator:
    """test_frames' orchestrator, its calls a little slower (5 ms) so a grid's calls overlap."""
    return test_frames.make(**{"sim_latency_s": 0.005, **settings})


@pytest.fixture
def orch() -> Iterator[AgentOrchestrator]:
    with make() as made:
        yield made


def length_score(task: str, answer: Any) -> float:
    return len(str(answer)) / 1000


def test_every_combination_is_one_row_and_they_run_at_once(orch: AgentOrchestrator) -> None:
    g = agentnb.grid(TASKS, AGENTS, MODELS, repeats=2, orchestrator=orch)
    assert isinstance(g, GridResult) and len(g) == 2 * 2 * 2 * 2
    frame = g.frame
    assert list(frame.columns) == [
        *KEY_COLUMNS,
        "text",
        "cached",
        "latency_ms",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "error",
    ]
    combos = set(zip(frame["task"], frame["agent"], frame["model"], frame["repeat"], strict=True))
    assert combos == set(itertools.product(TASKS, AGENTS, MODELS, [0, 1]))
    assert frame["error"].isna().all() and frame["output_tokens"].gt(0).all()
    assert sim(orch).call_count == 16  # each repeat is a sample of its own, not a cache hit
    assert sim(orch).peak_in_flight == 10  # all at once, up to max_concurrency
    models = {m for m in frame["model"]}
    assert models == set(MODELS)
    sent = {c.model for c in sim(orch).calls}
    assert sent == {orch.config.resolve_model(m) for m in MODELS}


def test_a_rerun_is_cached_but_keeps_its_list_price(orch: AgentOrchestrator) -> None:
    first = agentnb.grid(TASKS, "writer", MODELS, repeats=2, orchestrator=orch).frame
    again = agentnb.grid(TASKS, "writer", MODELS, repeats=2, orchestrator=orch).frame
    assert sim(orch).call_count == 8 and again["cached"].all()
    assert again["cost_usd"].tolist() == pytest.approx(first["cost_usd"].tolist())
    assert again["text"].tolist() == first["text"].tolist()


def test_models_default_to_each_agents_own(orch: AgentOrchestrator) -> None:
    frame = agentnb.grid(TASKS[:1], AGENTS, orchestrator=orch).frame
    own = [orch.config.resolve_model(orch.agents.get(a).model) for a in AGENTS]
    assert frame["model"].tolist() == own and frame["repeat"].tolist() == [0, 0]


def test_summary_pivots_per_agent_and_model_with_scores(orch: AgentOrchestrator) -> None:
    sim(orch).inject("bad_request", times=2, agent="python-expert")
    g = agentnb.grid(TASKS, AGENTS, MODELS, repeats=2, scorer=length_score, orchestrator=orch)
    assert g.scored and g.frame["score"].notna().sum() == 14
    summary = g.summary()
    assert list(summary.columns) == ["agent", "model", *SUMMARY_COLUMNS, "mean_score"]
    assert list(zip(summary["agent"], summary["model"], strict=True)) == list(
        itertools.product(AGENTS, MODELS)
    )
    assert summary["calls"].tolist() == [4, 4, 4, 4]
    assert summary["failure_rate"].sum() == pytest.approx(2 / 4)
    writer = summary[summary["agent"] == "writer"]
    assert writer["failure_rate"].eq(0).all()
    assert (writer["p95_latency_ms"] >= writer["p50_latency_ms"]).all()
    assert summary["cost_per_call_usd"].gt(0).all() and summary["mean_score"].gt(0).all()
    assert summary["mean_output_tokens"].gt(0).all()
    haiku = summary.set_index(["agent", "model"]).loc[("writer", "haiku")]
    rows = g.frame[(g.frame["agent"] == "writer") & (g.frame["model"] == "haiku")]
    assert haiku["mean_score"] == pytest.approx(rows["score"].mean())


def test_a_failing_scorer_raises_and_the_rerun_costs_nothing(orch: AgentOrchestrator) -> None:
    def broken(task: str, answer: Any) -> float:
        raise ValueError("scorer bug")

    with pytest.raises(ValueError, match="scorer bug"):
        agentnb.grid(TASKS, "writer", orchestrator=orch, scorer=broken)
    g = agentnb.grid(TASKS, "writer", orchestrator=orch, scorer=length_score)
    assert g.frame["cached"].all() and sim(orch).call_count == 2


def test_a_schema_gives_fields_and_the_scorer_gets_them(orch: AgentOrchestrator) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
        "required": ["answer", "confidence"],
    }
    got: list[Any] = []

    def score(task: str, answer: Any) -> float:
        got.append(answer)
        return float(answer["confidence"])

    g = agentnb.grid(TASKS, "writer", MODELS, scorer=score, schema=schema, orchestrator=orch)
    assert list(g.frame.columns[4:6]) == ["answer", "confidence"] and "text" not in g.frame
    assert all(set(a) == {"answer", "confidence"} for a in got) and len(got) == 4
    assert g.frame["score"].tolist() == g.frame["confidence"].tolist()
    assert '"confidence"' in repr(g.side_by_side())


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"agents": ["nope"]}, AgentNotFoundError, "nope"),
        ({"repeats": 0}, AgentnbError, "repeats"),
        ({"models": ["haiku"], "model": "sonnet"}, AgentnbError, "not both"),
        ({"sample": 2}, AgentnbError, "repeats="),
        ({"models": ["haiku", "haiku"]}, AgentnbError, "twice"),
        ({"tasks": []}, AgentnbError, "non-empty list"),
        ({"tasks": ["ok", " "]}, AgentnbError, "task #1"),
        ({"scorer": 3}, AgentnbError, "callable"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(
    orch: AgentOrchestrator, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    args: dict[str, Any] = {"tasks": TASKS, "agents": ["writer"], "orchestrator": orch}
    args.update(kwargs)
    with pytest.raises(error, match=message):
        agentnb.grid(**args)
    assert sim(orch).call_count == 0


def test_plot_draws_the_tradeoffs(orch: AgentOrchestrator) -> None:
    g = agentnb.grid(TASKS, AGENTS, MODELS, scorer=length_score, orchestrator=orch)
    fig = g.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    cost, score, latency = fig.axes
    assert cost.get_xlabel() == "p50 latency (ms)" and cost.get_ylabel() == "USD per call"
    assert score.get_ylabel() == "mean score"
    assert latency.get_title().startswith("Latency per agent")
    legend = cost.get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == MODELS
    import matplotlib.pyplot as plt

    _, mine = plt.subplots()
    drawn = g.plot(ax=mine)
    assert drawn is mine and isinstance(drawn, Axes)
    unscored = agentnb.grid(TASKS, "writer", MODELS, orchestrator=orch).plot()
    assert isinstance(unscored, Figure) and len(unscored.axes) == 2
    plt.close("all")


def test_side_by_side_has_one_column_per_model(orch: AgentOrchestrator) -> None:
    sim(orch).inject("bad_request", times=1)
    shown = agentnb.grid(["Say hi"], "writer", MODELS, orchestrator=orch).side_by_side()
    assert isinstance(shown, SideBySide)
    assert list(shown.frame.columns) == MODELS and list(shown.frame.index) == ["Say hi"]
    answers = shown.frame.iloc[0].tolist()
    assert sum(a.startswith("error: AgentCallError") for a in answers) == 1
    page = shown._repr_html_()
    assert page.count("</th>") == 2 and "Simulated answer" in page and "error:" in page
    text = repr(shown)
    assert "== haiku ==" in text and "== sonnet ==" in text and "-- failed" in text
    several = agentnb.grid(TASKS, AGENTS, ["haiku"], repeats=2, orchestrator=orch)
    table = several.side_by_side().frame
    assert list(table.columns) == ["writer · haiku", "python-expert · haiku"]
    assert table.index.names == ["task", "repeat"] and len(table) == 4


# -- %%agent --models -----------------------------------------------------------------------------
def test_the_models_magic_shows_the_answers_side_by_side(ip: InteractiveShell) -> None:
    shown = test_magics.run(ip, "%%agent --models haiku,sonnet -o both writer\nWrite a haiku")
    assert isinstance(shown, SideBySide) and ip.user_ns["both"] is shown
    assert list(shown.frame.columns) == ["haiku", "sonnet"]
    assert test_magics.sim_tasks() == ["Write a haiku", "Write a haiku"]
    data, _ = ip.display_formatter.format(shown)  # type: ignore[union-attr]
    assert "<table>" in data["text/html"] and "== sonnet ==" in data["text/plain"]
    estimate = test_magics.run(ip, "%agent --estimate --models haiku,sonnet writer Hi")
    assert isinstance(estimate, Estimate) and estimate.calls == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%agent --models haiku,,sonnet writer Hi", "separated by commas"),
        ("%agent --models haiku -m sonnet writer Hi", "not both"),
        ("%agent --models haiku --over df writer {{value}}", "not both"),
    ],
)
def test_the_models_magic_refuses_bad_input(ip: InteractiveShell, line: str, message: str) -> None:
    ip.user_ns["df"] = pd.Series(["a"])
    with pytest.raises(UsageError, match=message):
        test_magics.run(ip, line)
    assert test_magics.sim_tasks() == []
