"""`agentnb.map` / `amap`, the `df.agentnb` accessor and `%agent --over`, on the simulator."""

from __future__ import annotations

import io
import subprocess
import sys
import weakref
from collections.abc import Iterator
from typing import Any, Literal

import pandas as pd
import pydantic
import pytest
import test_magics
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import agentnb
from agentnb import _jobs
from agentnb.backends import SimulatedBackend
from agentnb.config import Config
from agentnb.errors import AgentnbError, AgentNotFoundError, OptionError
from agentnb.frames import PREFIX_MIN_TOKENS, amap, estimate_map
from agentnb.orchestrator import AgentOrchestrator, Estimate
from agentnb.result import AgentResult

COLUMNS = ["text", "cached", "latency_ms", "cost_usd", "error"]
ip = test_magics.ip  # the IPython shell with agentnb loaded (a fixture)


def make(**settings: Any) -> AgentOrchestrator:
    values: dict[str, Any] = {
        "backend": "simulated",
        "sim_latency_s": 0.001,
        "sim_jitter": 0.0,
        "cache_enabled": True,
        "progress": False,
    }
    values.update(settings)
    return AgentOrchestrator(Config.load(env={}, **values))


@pytest.fixture
def orch() -> Iterator[AgentOrchestrator]:
    with make() as made:
        yield made


def sim(orch: AgentOrchestrator) -> SimulatedBackend:
    backend = orch.backend
    assert isinstance(backend, SimulatedBackend)
    return backend


REVIEWS = pd.DataFrame(
    {"text": ["great film", "dull plot", "fine acting"], "stars": [5, 2, 4]},
    index=pd.Index(["r1", "r2", "r3"], name="review"),
)


# -- shape and placeholders -----------------------------------------------------------------------
def test_result_is_aligned_with_a_non_default_index(orch: AgentOrchestrator) -> None:
    out = agentnb.map("writer", REVIEWS, "Summarise: {{text}}", orchestrator=orch)
    assert list(out.columns) == COLUMNS
    assert out.index.equals(REVIEWS.index)  # same labels, same order, same name
    assert out["error"].isna().all()
    assert out["text"].str.contains("Simulated answer").all()
    assert out["latency_ms"].gt(0).all() and out["cost_usd"].gt(0).all()
    assert not out["cached"].any()
    joined = REVIEWS.join(out.add_prefix("answer_"))
    assert list(joined.columns[:3]) == ["text", "stars", "answer_text"]


def test_each_row_fills_its_columns_and_wins_over_a_variable(orch: AgentOrchestrator) -> None:
    template = "Review {{text}} ({{stars}} stars) in {{language}}"
    agentnb.map(
        "writer",
        REVIEWS,
        template,
        variables={"language": "French", "text": "not this one"},
        orchestrator=orch,
    )
    tasks = sorted(c.task for c in sim(orch).calls)
    assert tasks == [
        "Review dull plot (2 stars) in French",
        "Review fine acting (4 stars) in French",
        "Review great film (5 stars) in French",
    ]


def test_a_missing_column_is_named_before_anything_runs(orch: AgentOrchestrator) -> None:
    with pytest.raises(AgentnbError, match=r"\{\{txt\}\}.*columns: text, stars") as caught:
        agentnb.map("writer", REVIEWS, "Summarise {{txt}}", orchestrator=orch)
    assert "neither a column of the data nor a variable" in str(caught.value)
    with pytest.raises(AgentnbError, match=r"\{\{value\}\}"):
        agentnb.map("writer", ["a"], "Summarise {{text}}", orchestrator=orch)
    with pytest.raises(AgentnbError, match="uses no column"):
        agentnb.map("writer", REVIEWS, "Say hi", orchestrator=orch)
    with pytest.raises(AgentNotFoundError):
        agentnb.map("no-such-agent", REVIEWS, "{{text}}", orchestrator=orch)
    with pytest.raises(OptionError, match="max_tokens"):
        agentnb.map("writer", REVIEWS, "{{text}}", orchestrator=orch, max_tokens=0)
    with pytest.raises(AgentnbError, match="got dict"):
        agentnb.map("writer", {"text": "a"}, "{{text}}", orchestrator=orch)
    assert sim(orch).call_count == 0
    assert len(orch.tracker) == 0


def test_list_and_series_items_are_value(orch: AgentOrchestrator) -> None:
    from_list = agentnb.map("writer", ["cats", "dogs"], "A haiku on {{value}}", orchestrator=orch)
    assert list(from_list.index) == [0, 1]
    series = pd.Series(["cats", "owls"], index=[10, 20])
    from_series = agentnb.map("writer", series, "A haiku on {{value}}", orchestrator=orch)
    assert list(from_series.index) == [10, 20]
    # "cats" was asked already: the second map answers it from the cache
    assert from_series["cached"].tolist() == [True, False]
    assert from_series.loc[10, "text"] == from_list.loc[0, "text"]
    assert sim(orch).call_count == 3


def test_rows_that_cannot_be_a_call_say_why_and_the_rest_run(orch: AgentOrchestrator) -> None:
    data = pd.DataFrame({"text": ["ok", None, "  ", "x" * 200]}, index=list("abcd"))
    with make(max_task_chars=100) as small:
        out = agentnb.map("writer", data, "{{text}}", orchestrator=small)
        assert sim(small).call_count == 1
    assert out.loc["a", "error"] is pd.NA
    assert out.loc["b", "error"] == "row 'b': no value in {{text}}"
    assert out.loc["c", "error"] == "row 'c': the task is empty once filled in"
    assert "more than max_task_chars=100" in out.loc["d", "error"]
    assert out.loc[["b", "c", "d"], "text"].isna().all()


# -- failures and re-runs -------------------------------------------------------------------------
def test_failed_rows_are_kept_and_a_rerun_runs_only_them(orch: AgentOrchestrator) -> None:
    rows = pd.DataFrame({"text": [f"item {i}" for i in range(8)]}, index=range(100, 108))
    sim(orch).inject("bad_request", times=3)  # not retryable: three rows fail for good
    first = agentnb.map("writer", rows, "Summarise {{text}}", orchestrator=orch)
    failed = first["error"].notna()
    assert failed.sum() == 3
    assert first.loc[failed, "error"].str.startswith("AgentCallError: ").all()
    assert first.loc[failed, "text"].isna().all() and first.loc[failed, "latency_ms"].isna().all()
    assert first.loc[~failed, "text"].notna().all()

    before = sim(orch).call_count
    second = agentnb.map("writer", rows, "Summarise {{text}}", orchestrator=orch)
    assert sim(orch).call_count - before == 3  # only the failed rows went to the backend
    assert second["error"].isna().all()
    assert second["cached"].tolist() == (~failed).tolist()
    assert second.loc[~failed, "cost_usd"].eq(0).all()


def test_on_error_raise_stops_at_the_first_failure(orch: AgentOrchestrator) -> None:
    sim(orch).inject("bad_request", times=1)
    with pytest.raises(AgentnbError, match="writer"):
        agentnb.map("writer", ["a", "b"], "{{value}}", orchestrator=orch, on_error="raise")
    with pytest.raises(AgentnbError, match="row 0: no value"):
        agentnb.map("writer", [None, "b"], "{{value}}", orchestrator=orch, on_error="raise")
    with pytest.raises(OptionError, match="on_error"):
        agentnb.map("writer", ["a"], "{{value}}", orchestrator=orch, on_error="ignore")  # type: ignore[arg-type]


def test_the_budget_is_the_whole_maps(orch: AgentOrchestrator) -> None:
    out = agentnb.map("writer", ["a", "b", "c"], "{{value}}", orchestrator=orch, max_cost_usd=0)
    assert out["error"].str.startswith("BudgetExceededError").all()
    assert sim(orch).call_count == 0


# -- options, prefix, batch -----------------------------------------------------------------------
def test_options_reach_every_row(orch: AgentOrchestrator) -> None:
    agentnb.map("writer", ["a", "b"], "{{value}}", orchestrator=orch, model="haiku", max_tokens=32)
    assert {c.model for c in sim(orch).calls} == {orch.config.resolve_model("haiku")}


def test_a_long_constant_opening_goes_as_the_cached_prefix(orch: AgentOrchestrator) -> None:
    rules = "Follow these rules. " * (PREFIX_MIN_TOKENS // 3)  # about 1,400 tokens
    template = "{{intro}}" + rules + "Now summarise: {{text}}"
    seen: list[tuple[str, str]] = []
    backend = sim(orch)
    create = backend.create

    async def spy(request: Any) -> Any:
        seen.append((request.prefix, request.task))
        return await create(request)

    backend.create = spy  # type: ignore[method-assign]
    agentnb.map("writer", REVIEWS, template, variables={"intro": "Hi. "}, orchestrator=orch)
    assert {p for p, _ in seen} == {"Hi. " + rules + "Now summarise: "}
    assert sorted(t for _, t in seen) == sorted(REVIEWS["text"])
    seen.clear()  # short openings are not worth a cache write: the task is the whole text
    agentnb.map("writer", REVIEWS, "Now summarise: {{text}}", orchestrator=orch)
    assert {p for p, _ in seen} == {""}


def test_batch_goes_through_message_batches(orch: AgentOrchestrator) -> None:
    with make(sim_batch_latency_s=0.01) as batched:
        out = agentnb.map("writer", REVIEWS, "{{text}}", orchestrator=batched, batch=True)
        assert out["error"].isna().all()
        assert batched.metrics()["batch_id"].notna().all()


def test_batch_needs_the_orchestrator_to_have_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_jobs, "_EXECUTE_PARAMETERS", {})
    with make() as orch, pytest.raises(AgentnbError, match="batch=True needs Message Batches"):
        agentnb.map("writer", ["a"], "{{value}}", batch=True, orchestrator=orch)


# -- progress -------------------------------------------------------------------------------------
class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_shown_and_silenced(
    orch: AgentOrchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = TTY()
    monkeypatch.setattr(sys, "stderr", terminal)
    agentnb.map("writer", ["a", None, "c"], "{{value}}", orchestrator=orch, progress=True)
    shown = terminal.getvalue()
    assert "map  3/3" in shown and "1 failed" in shown and shown.rstrip().endswith("done")
    terminal.truncate(0)
    terminal.seek(0)
    agentnb.map("writer", ["d", "e"], "{{value}}", orchestrator=orch, progress=False)
    agentnb.map("writer", ["f", "g"], "{{value}}", orchestrator=orch)  # the setting: off
    assert terminal.getvalue() == ""


# -- async, accessor, estimate --------------------------------------------------------------------
async def test_amap_from_a_running_loop(orch: AgentOrchestrator) -> None:
    out = await amap("writer", REVIEWS, "{{text}}", orchestrator=orch.aio)
    assert out.index.equals(REVIEWS.index) and out["error"].isna().all()


def test_the_accessor_maps_and_estimates(orch: AgentOrchestrator) -> None:
    estimate = REVIEWS.agentnb.estimate("writer", "Summarise {{text}}", orchestrator=orch)
    assert isinstance(estimate, Estimate) and estimate.calls == 3
    assert sim(orch).call_count == 0
    out = REVIEWS.agentnb.map("writer", "Summarise {{text}}", orchestrator=orch)
    assert out.index.equals(REVIEWS.index) and sim(orch).call_count == 3
    series_out = REVIEWS["text"].agentnb.map("writer", "Summarise {{value}}", orchestrator=orch)
    assert series_out["cached"].all()  # the same tasks: from the cache
    assert (
        estimate_map("writer", REVIEWS, "Summarise {{text}}", orchestrator=orch).cached_calls == 3
    )


def test_the_accessor_is_there_whichever_is_imported_first() -> None:
    light = "import sys, agentnb; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", light], capture_output=True, text=True)
    assert out.stdout.strip() == "False"  # agentnb alone does not import pandas
    for first, second in (("agentnb", "pandas"), ("pandas", "agentnb")):
        code = (
            f"import {first}, {second}; import pandas as pd; "
            "print(type(pd.DataFrame({'a': [1]}).agentnb).__name__, "
            "type(pd.Series([1]).agentnb).__name__, pd.__spec__.loader is pd.__loader__)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["AgentnbAccessor", "AgentnbAccessor", "True"]


# -- memory ---------------------------------------------------------------------------------------
def test_a_100k_row_map_holds_one_chunk_of_results(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = 100_000
    alive: weakref.WeakSet[AgentResult] = weakref.WeakSet()
    peak = [0]
    make_result = AgentResult.make.__func__  # type: ignore[attr-defined]

    def counted(cls: type[AgentResult], *args: Any) -> AgentResult:
        result: AgentResult = make_result(cls, *args)
        alive.add(result)
        peak[0] = max(peak[0], len(alive))
        return result

    monkeypatch.setattr(AgentResult, "make", classmethod(counted))
    data = pd.DataFrame({"text": [f"item {i}" for i in range(rows)]}, index=range(7, rows + 7))
    with make(sim_latency_s=0, cache_enabled=False) as big:
        out = agentnb.map("writer", data, "Summarise {{text}}", orchestrator=big)
        assert len(big.tracker) == rows
        assert big.tracker.memory_bytes < 120 * rows  # compact columns, not records
    assert len(out) == rows and out.index.equals(data.index)
    assert out["error"].isna().all()
    # The front keeps columns, not results: at most about one chunk of them lived at once.
    assert peak[0] <= 2 * _jobs.CHUNK_ROWS
    assert len(alive) == 0
    numbers = out[["cached", "latency_ms", "cost_usd"]]
    assert numbers.memory_usage(deep=True, index=False).sum() == 17 * rows  # no per-row objects


# -- %agent --over --------------------------------------------------------------------------------
def test_the_over_magic_maps_the_notebooks_frame(ip: InteractiveShell) -> None:
    ip.user_ns["df"] = REVIEWS
    ip.user_ns["tone"] = "dry"
    out = test_magics.run(ip, "%agent --over df -o summaries writer In a {{tone}} tone: {{text}}")
    assert isinstance(out, pd.DataFrame) and out.index.equals(REVIEWS.index)
    assert ip.user_ns["summaries"] is out
    assert sorted(test_magics.sim_tasks()) == [f"In a dry tone: {t}" for t in sorted(REVIEWS.text)]
    cell = test_magics.run(ip, "%%agent --over df writer\nIn a {{tone}} tone: {{text}}")
    assert cell["cached"].all()
    estimate = test_magics.run(ip, "%agent --estimate --over df writer Again: {{text}}")
    assert isinstance(estimate, Estimate) and estimate.calls == 3


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        ("%agent --over nope writer {{value}}", UsageError, "no variable of that name"),
        ("%agent --over n writer {{value}}", UsageError, "expected a DataFrame.*got int"),
        ("%agent --over df writer {{nope}}", AgentnbError, r"\{\{nope\}\}.*text, stars"),
        ("%agent --over df --stream writer {{text}}", UsageError, "not with --over"),
    ],
)
def test_the_over_magic_refuses_bad_input_in_one_line(
    ip: InteractiveShell, line: str, error: type[Exception], message: str
) -> None:
    ip.user_ns["df"] = REVIEWS
    ip.user_ns["n"] = 3
    with pytest.raises(error, match=message) as caught:
        test_magics.run(ip, line)
    if isinstance(caught.value, AgentnbError):
        assert len(caught.value._render_traceback_()) == 1  # type: ignore[attr-defined]
    assert test_magics.sim_tasks() == []


# -- structured answers ---------------------------------------------------------------------------
class Review(pydantic.BaseModel):
    sentiment: Literal["positive", "negative", "mixed"]
    score: int = pydantic.Field(ge=1, le=5)


TOPICS = {
    "type": "object",
    "properties": {"topic": {"type": "string"}, "words": {"type": "integer", "minimum": 0}},
    "required": ["topic", "words"],
}


def test_a_pydantic_schema_gives_its_fields_as_columns(orch: AgentOrchestrator) -> None:
    out = agentnb.map("writer", REVIEWS, "Review: {{text}}", schema=Review, orchestrator=orch)
    assert list(out.columns) == ["sentiment", "score", "cached", "latency_ms", "cost_usd", "error"]
    assert out.index.equals(REVIEWS.index) and out["error"].isna().all()
    assert set(out["sentiment"]) <= {"positive", "negative", "mixed"}
    assert out["score"].between(1, 5).all()


def test_a_json_schema_gives_its_fields_in_its_order(orch: AgentOrchestrator) -> None:
    out = agentnb.map("writer", ["apples", "pears"], "About {{value}}", schema=TOPICS,
                      orchestrator=orch)  # fmt: skip
    assert list(out.columns[:2]) == ["topic", "words"]
    assert out["words"].ge(0).all() and out["topic"].str.len().gt(0).all()


def test_an_invalid_answer_is_repaired_once_or_reported(orch: AgentOrchestrator) -> None:
    sim(orch).inject("invalid_output", times=1)
    repaired = agentnb.map("writer", ["good"], "Review {{value}}", schema=Review, orchestrator=orch)
    assert repaired["error"].isna().all() and repaired["score"].between(1, 5).all()
    assert sim(orch).call_count == 2  # the answer, then its repair turn

    sim(orch).inject("invalid_output", times=2)  # the repair is invalid too
    failed = agentnb.map("writer", ["bad"], "Review {{value}}", schema=Review, orchestrator=orch)
    error = failed.loc[0, "error"]
    assert error.startswith("SchemaError: ") and "answer." in error
    assert failed.loc[0, ["sentiment", "score"]].isna().all()
    before = sim(orch).call_count
    again = agentnb.map("writer", ["bad"], "Review {{value}}", schema=Review, orchestrator=orch)
    assert again["error"].isna().all() and not again["cached"].any()  # never cached
    assert sim(orch).call_count == before + 1


def test_a_field_may_not_hide_a_result_column(orch: AgentOrchestrator) -> None:
    clash = {"type": "object", "properties": {"error": {"type": "string"}}}
    with pytest.raises(AgentnbError, match="field 'error'"):
        agentnb.map("writer", ["a"], "{{value}}", schema=clash, orchestrator=orch)
    assert sim(orch).call_count == 0
