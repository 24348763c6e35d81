"""The workflow scheduler, runs, resume, progress and timeline, driven by a sleep executor.

The executor below is the scheduler's real contract (an async function from step and task to an
`AgentResult`); it sleeps a per-step latency, can wait for another step's start or end, and
records the order of starts and ends and how many steps were in flight. Assertions are on
recorded order and overlap, never on wall time; where an order matters, a step waits for the
event it must come after instead of relying on a sleep being long enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentnb.errors import AgentCallError, ServerError, WorkflowError
from agentnb.result import AgentResult
from agentnb.workflow import (
    Step,
    StepEvent,
    Workflow,
    WorkflowRun,
    execute_workflow,
    iter_workflow,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "workflows"
BUILTIN_AGENTS = {"python-expert", "code-reviewer", "data-analyst", "writer"}


#: How long a step waits for the event named in `Recorder(until=...)` before ending anyway.
UNTIL_TIMEOUT_S = 5.0


class Recorder:
    """A step executor that sleeps, records order and concurrency, and fails on request.

    `until={"B": ("end", "D")}` makes B, after its latency, wait until D has ended (at most
    `UNTIL_TIMEOUT_S`): a scheduler that let B finish first would show it in the log.
    """

    def __init__(
        self,
        latencies: Mapping[str, float] | None = None,
        *,
        fail: Iterable[str] = (),
        cached: Iterable[str] = (),
        until: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self.latencies = dict(latencies or {})
        self.fail = set(fail)
        self.cached = set(cached)
        self.until = dict(until or {})
        self.seen: defaultdict[tuple[str, str], asyncio.Event] = defaultdict(asyncio.Event)
        self.log: list[tuple[str, str]] = []
        self.tasks: dict[str, str] = {}
        self.calls: Counter[str] = Counter()
        self.cancelled: list[str] = []
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, step: Step, task: str) -> AgentResult:
        self.calls[step.id] += 1
        self.tasks[step.id] = task
        self._record("start", step.id)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.latencies.get(step.id, 0.0))
            if step.id in self.until:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.seen[self.until[step.id]].wait(), UNTIL_TIMEOUT_S)
        except asyncio.CancelledError:
            self.cancelled.append(step.id)
            raise
        finally:
            self.in_flight -= 1
            self._record("end", step.id)
        if step.id in self.fail:
            raise AgentCallError(
                f"{step.id} broke",
                agent=step.agent,
                attempts=3,
                last_error=ServerError("boom", status_code=500),
            )
        return AgentResult(
            agent=step.agent,
            model=step.model or "test-model",
            text=f"<{step.id}>",
            backend="test",
            cached=step.id in self.cached,
        )

    def _record(self, kind: str, step_id: str) -> None:
        self.log.append((kind, step_id))
        self.seen[kind, step_id].set()

    def at(self, kind: str, step_id: str) -> int:
        """Position of an event in the log."""
        return self.log.index((kind, step_id))


def workflow(*steps: tuple[str, str], **options: Any) -> Workflow:
    """A workflow of (id, task) steps, all run by `writer`."""
    return Workflow.from_dict(
        {
            "name": options.pop("name", "test"),
            "steps": [{"id": i, "agent": "writer", "task": t} for i, t in steps],
            **options,
        }
    )


def diamond(**options: Any) -> Workflow:
    return workflow(
        ("A", "a"), ("B", "{{A}}"), ("C", "{{A}}"), ("D", "{{C}}"), ("E", "{{B}} {{D}}"), **options
    )


# -- progressive scheduling -----------------------------------------------------------------


async def test_diamond_starts_each_step_when_its_own_dependencies_are_done() -> None:
    # B runs until D has ended: with supersteps D could only start once B had ended (B giving
    # up after UNTIL_TIMEOUT_S), and the order below would show it.
    ex = Recorder(until={"B": ("end", "D")})
    run = await execute_workflow(diamond(), ex)
    assert run.status == "succeeded"
    # D waits only for C, not for B (which shares C's "level"): no supersteps.
    assert ex.at("start", "D") < ex.at("end", "D") < ex.at("end", "B")
    assert ex.at("end", "A") < min(ex.at("start", "B"), ex.at("start", "C"))
    assert ex.at("start", "E") > max(ex.at("end", "B"), ex.at("end", "D"))
    assert ex.tasks["E"] == "<B> <D>"
    assert run.critical_path == ["A", "B", "E"]


async def test_wide_fan_out_overlaps_and_grandchildren_start_early() -> None:
    n = 16
    steps = [("root", "go")]
    steps += [(f"c{i}", "{{root}}") for i in range(n)]
    steps += [(f"g{i}", f"{{{{c{i}}}}}") for i in range(n)]
    steps += [("join", " ".join(f"{{{{g{i}}}}}" for i in range(n)))]
    latencies = {f"c{i}": 0.001 * i for i in range(n - 1)}
    # the last child runs until g0 has ended (which only progressive scheduling allows)
    ex = Recorder(latencies, until={f"c{n - 1}": ("end", "g0")})
    run = await execute_workflow(workflow(*steps), ex)
    assert run.status == "succeeded"
    assert ex.peak >= n  # all children overlapped
    # the fast branches' grandchildren ran while the slowest child was still running
    assert ex.at("end", "g0") < ex.at("end", f"c{n - 1}")
    assert ex.at("start", "join") > max(ex.at("end", f"g{i}") for i in range(n))


@pytest.mark.parametrize(("argument", "own", "expected"), [(3, None, 3), (None, 2, 2), (5, 2, 2)])
async def test_concurrency_limit_is_reached_and_never_exceeded(
    argument: int | None, own: int | None, expected: int
) -> None:
    steps = [(f"s{i}", "t") for i in range(12)]
    ex = Recorder({f"s{i}": 0.01 for i in range(12)})
    wf = workflow(*steps, max_concurrency=own)
    run = await execute_workflow(wf, ex, max_concurrency=argument)
    assert ex.peak == expected
    assert run.max_concurrency == expected
    assert run.status == "succeeded"


# -- failures ---------------------------------------------------------------------------------


async def test_continue_skips_dependents_and_finishes_independent_branches() -> None:
    wf = workflow(
        ("A", "a"), ("B", "{{A}}"), ("C", "{{B}}"), ("X", "x"), ("Y", "{{X}}"), on_error="continue"
    )
    ex = Recorder({"A": 0.005, "X": 0.02, "Y": 0.01}, fail={"A"})
    run = await execute_workflow(wf, ex)
    assert [run.steps[k].status for k in "ABCXY"] == [
        "failed",
        "skipped",
        "skipped",
        "succeeded",
        "succeeded",
    ]
    assert run.steps["B"].reason == "dependency 'A' failed"
    assert run.steps["C"].reason == "upstream step 'A' failed"
    assert run.status == "partial"
    assert run.outputs == {"X": "<X>", "Y": "<Y>"}
    assert run.steps["A"].attempts == 3
    assert isinstance(run.steps["A"].error, AgentCallError)
    assert set(ex.calls) == {"A", "X", "Y"}
    with pytest.raises(WorkflowError, match=r"failed: A .*skipped: B, C") as info:
        run.raise_for_status()
    assert isinstance(info.value.__cause__, AgentCallError)


async def test_fail_fast_cancels_running_steps_and_starts_nothing_new() -> None:
    wf = workflow(
        ("quick", "q"),
        ("A", "a"),
        ("slow", "s"),
        ("after", "{{slow}}"),
        ("queued", "z"),
        on_error="fail_fast",
        max_concurrency=3,
    )
    # A fails once `queued` (started when `quick` freed a slot) is done; `slow` is still running
    ex = Recorder({"slow": 5.0}, fail={"A"}, until={"A": ("end", "queued")})
    run = await execute_workflow(wf, ex)
    assert run.steps["quick"].status == "succeeded"
    assert run.steps["A"].status == "failed"
    assert ex.cancelled == ["slow"]
    assert run.steps["slow"].status == "skipped"
    assert run.steps["slow"].reason == "cancelled while running"
    assert run.steps["slow"].started_s is not None
    for never in ("after",):
        assert run.steps[never].status == "skipped"
        assert "step 'A' failed (on_error: fail_fast)" in (run.steps[never].reason or "")
    assert "after" not in ex.calls
    assert run.status == "partial"
    assert run.outputs["quick"] == "<quick>"


async def test_fail_fast_with_nothing_succeeded_is_failed() -> None:
    ex = Recorder(fail={"A"})
    run = await execute_workflow(diamond(on_error="fail_fast"), ex)
    assert run.status == "failed"
    assert run.failed == ["A"] and run.skipped == ["B", "C", "D", "E"]
    assert list(ex.calls) == ["A"]


async def test_an_unexpected_exception_in_a_step_is_recorded_not_raised() -> None:
    async def broken(step: Step, task: str) -> AgentResult:
        raise ValueError("bug in executor")

    run = await execute_workflow(workflow(("a", "t")), broken)
    assert run.status == "failed"
    assert run.steps["a"].detail == "ValueError: bug in executor"


async def test_cancelling_the_run_cancels_running_steps_and_propagates() -> None:
    ex = Recorder({"A": 0.0, "B": 5.0, "C": 5.0})
    wf = workflow(("A", "a"), ("B", "{{A}}"), ("C", "{{A}}"), ("D", "{{B}}"))
    events: list[StepEvent] = []
    task = asyncio.ensure_future(execute_workflow(wf, ex, progress=events.append))
    while ex.in_flight < 2:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(ex.cancelled) == ["B", "C"]
    assert "D" not in ex.calls
    finals = {(e.step_id, e.status) for e in events if e.status not in ("waiting", "running")}
    assert finals == {("A", "succeeded"), ("B", "skipped"), ("C", "skipped")}


async def test_an_interrupted_run_hands_out_its_partial_run_for_resume() -> None:
    ex = Recorder({"A": 0.0, "B": 5.0, "C": 0.0})
    wf = workflow(("A", "a"), ("B", "{{A}}"), ("C", "{{A}}"), ("D", "{{B}} {{C}}"))
    partial: list[WorkflowRun] = []
    task = asyncio.ensure_future(
        execute_workflow(
            wf, ex, on_interrupt=partial.append, fingerprint=lambda step, task: f"fp:{task}"
        )
    )
    while "C" not in {s for kind, s in ex.log if kind == "end"}:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (run,) = partial
    status = {k: (s.status, s.reason) for k, s in run.steps.items()}
    assert status["A"][0] == "succeeded" and status["C"][0] == "succeeded"
    assert status["B"] == ("skipped", "cancelled while running")
    assert status["D"] == ("skipped", "interrupted before it finished")
    assert run.steps["C"].fingerprint == "fp:<A>"
    # The partial run resumes: only the unfinished steps call the executor again.
    again = Recorder()
    done = await execute_workflow(
        wf, again, resume=run, fingerprint=lambda step, task: f"fp:{task}"
    )
    assert done.status == "succeeded" and set(again.calls) == {"B", "D"}


def test_keyboard_interrupt_in_a_step_propagates_after_cancelling_the_others() -> None:
    ex = Recorder({"slow": 5.0, "boom": 0.01})

    async def execute(step: Step, task: str) -> AgentResult:
        if step.id == "boom":
            await asyncio.sleep(0.01)
            raise KeyboardInterrupt
        return await ex(step, task)

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(execute_workflow(workflow(("slow", "s"), ("boom", "b")), execute))
    assert ex.cancelled == ["slow"]
    # asyncio logs the interrupted task as "never retrieved" when it is collected: do it here
    gc.collect()


# -- resume ---------------------------------------------------------------------------------


async def test_resume_runs_only_failed_and_skipped_steps() -> None:
    wf = workflow(("A", "a"), ("B", "{{A}}"), ("C", "{{B}}"), ("X", "x"), ("Y", "{{X}} {{A}}"))
    first = await execute_workflow(wf, Recorder(fail={"B"}))
    assert first.failed == ["B"] and first.skipped == ["C"]

    ex = Recorder()
    events: list[StepEvent] = []
    second = await execute_workflow(wf, ex, resume=first, progress=events.append)
    assert second.status == "succeeded"
    assert sorted(ex.calls) == ["B", "C"]
    for reused in ("A", "X", "Y"):
        assert second.steps[reused].status == "cached"
        assert second.steps[reused].reused and second.steps[reused].attempts == 0
        assert second.steps[reused].result is first.steps[reused].result
    assert [e.status for e in events if e.step_id == "A"] == ["waiting", "cached"]
    assert second.outputs == {k: f"<{k}>" for k in "ABCXY"}


async def test_resume_reruns_steps_whose_task_or_options_changed() -> None:
    wf = workflow(("A", "a {{topic}}"), ("B", "{{A}}"), ("X", "x"), ("Y", "y"))
    first = await execute_workflow(wf, Recorder(), variables={"topic": "cats"})
    changed = Workflow.from_dict(
        {
            "name": "test",
            "steps": [
                {"id": "A", "agent": "writer", "task": "a {{topic}}"},
                {"id": "B", "agent": "writer", "task": "{{A}}"},
                {"id": "X", "agent": "writer", "task": "x"},
                {"id": "Y", "agent": "writer", "task": "y", "temperature": 0.9},
            ],
        }
    )
    ex = Recorder()
    await execute_workflow(changed, ex, variables={"topic": "dogs"}, resume=first)
    # A's task and Y's options changed; B's task did not, because A's new output is the same
    assert sorted(ex.calls) == ["A", "Y"]


async def test_resume_reruns_steps_whose_fingerprint_changed() -> None:
    # The fingerprint stands for what the task does not show: the agent's prompt, the backend.
    prompts = {"A": "v1", "B": "v1", "C": "v1", "X": "v1"}

    def fingerprint(step: Step, task: str) -> str:
        return f"{prompts[step.id]}|{task}"

    wf = workflow(("A", "a"), ("B", "{{A}}"), ("C", "{{B}}"), ("X", "x"))
    first = await execute_workflow(wf, Recorder(), fingerprint=fingerprint)
    assert first.steps["B"].fingerprint == "v1|<A>"
    restored = WorkflowRun.from_dict(json.loads(first.to_json()), wf)
    assert restored.steps["B"].fingerprint == "v1|<A>"

    prompts["B"] = "v2"  # B's agent was edited
    for before in (first, restored):
        ex = Recorder()
        second = await execute_workflow(wf, ex, resume=before, fingerprint=fingerprint)
        # C's task is unchanged (B's new output is the same text) and so is its fingerprint
        assert sorted(ex.calls) == ["B"]
        assert second.steps["B"].fingerprint == "v2|<A>" and not second.steps["B"].reused
        assert second.steps["C"].reused and second.steps["C"].fingerprint == "v1|<B>"


async def test_fingerprints_missing_on_either_side_or_failing() -> None:
    wf = workflow(("A", "a"), ("B", "{{A}}"))
    plain = await execute_workflow(wf, Recorder())
    assert plain.steps["A"].fingerprint is None
    # An older run without fingerprints is still reused; the new fingerprints are recorded.
    ex = Recorder()
    marked = await execute_workflow(wf, ex, resume=plain, fingerprint=lambda s, t: s.id)
    assert not ex.calls and marked.steps["A"].fingerprint == "A"
    # A caller without a fingerprint reuses too, and keeps what the answers came from.
    ex = Recorder()
    again = await execute_workflow(wf, ex, resume=marked)
    assert not ex.calls and again.steps["B"].fingerprint == "B"

    def broken(step: Step, task: str) -> str:
        if step.id == "B":
            raise LookupError("no such agent")
        return step.id

    ex = Recorder()
    run = await execute_workflow(wf, ex, resume=marked, fingerprint=broken)
    assert list(ex.calls) == ["B"] and run.status == "succeeded"  # not reused: run instead
    assert run.steps["B"].fingerprint is None


async def test_a_run_restored_from_json_can_be_resumed() -> None:
    wf = diamond()
    first = await execute_workflow(wf, Recorder(fail={"D"}))
    restored = WorkflowRun.from_dict(json.loads(first.to_json()), wf)
    assert restored.steps["D"].status == "failed"
    assert "AgentCallError: D broke" in restored.steps["D"].detail
    ex = Recorder()
    again = await execute_workflow(wf, ex, resume=restored)
    assert sorted(ex.calls) == ["D", "E"] and again.status == "succeeded"


async def test_response_cache_hits_are_reported_as_cached() -> None:
    run = await execute_workflow(diamond(), Recorder(cached={"B"}))
    assert run.steps["B"].status == "cached" and not run.steps["B"].reused
    assert run.steps["B"].attempts == 1
    assert run.status == "succeeded"


# -- placeholders and variables -------------------------------------------------------------


async def test_braces_heavy_tasks_pass_through_untouched() -> None:
    code = (
        "def f(d: dict[str, int]) -> str:\n"
        "    return f\"{d!r} {{literal}} {d['k']:>{width}}\"\n"
        'CONFIG = {"a": {"b": [1, {"c": null}]}}\n'
        "{% raw %}{{ jinja.expr }}{% endraw %} ${HOME} \\{{src}}"
    )
    wf = workflow(
        ("gen", 'Answer as JSON {"ok": true}'),
        ("review", "Review:\n{{ src }}\nwith {{gen}} and {single}"),
    )
    ex = Recorder()
    # `literal` inside the f-string above is a placeholder by the rules, so provide it
    run = await execute_workflow(wf, ex, variables={"src": code, "literal": "LIT"})
    assert ex.tasks["gen"] == 'Answer as JSON {"ok": true}'
    assert ex.tasks["review"] == f"Review:\n{code}\nwith <gen> and {{single}}"
    assert run.status == "succeeded"


async def test_step_output_is_never_rescanned_for_placeholders() -> None:
    async def execute(step: Step, task: str) -> AgentResult:
        text = "{{secret}} {{A}}" if step.id == "A" else task
        return AgentResult(agent=step.agent, model="m", text=text)

    wf = workflow(("A", "a"), ("B", "got {{A}}"), inputs={"secret": "s3cr3t"})
    run = await execute_workflow(wf, execute)
    assert run.outputs["B"] == "got {{secret}} {{A}}"


async def test_names_resolve_step_then_variable_then_input_with_str() -> None:
    import pandas as pd

    frame = pd.DataFrame({"x": [1, 2]})
    wf = workflow(
        ("lang", "l"),
        ("use", "{{lang}} {{audience}} {{df}} {{n}} {{tone}}"),
        inputs={"audience": "devs", "tone": "dry"},
    )
    ex = Recorder()
    await execute_workflow(
        wf, ex, variables={"lang": "ignored", "audience": "managers", "df": frame, "n": 3}
    )
    # A step's output beats a variable; a caller's variable beats an input (inputs are defaults).
    assert ex.tasks["use"] == f"<lang> managers {frame} 3 dry"


# -- progress -------------------------------------------------------------------------------


async def test_progress_sees_every_state_change_in_order() -> None:
    events: list[StepEvent] = []
    await execute_workflow(diamond(), Recorder(fail={"C"}), progress=events.append)
    by_step: dict[str, list[str]] = {}
    for e in events:
        by_step.setdefault(e.step_id, []).append(e.status)
    assert by_step["A"] == ["waiting", "running", "succeeded"]
    assert by_step["C"] == ["waiting", "running", "failed"]
    assert by_step["D"] == ["waiting", "skipped"]
    assert [e.status for e in events[:5]] == ["waiting"] * 5
    assert all(a.at <= b.at for a, b in itertools.pairwise(events))
    failed = next(e for e in events if e.status == "failed")
    assert isinstance(failed.error, AgentCallError)
    done = next(e for e in events if e.status == "succeeded")
    assert done.result is not None and done.result.text == "<A>"


async def test_a_broken_progress_callback_does_not_break_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: StepEvent) -> None:
        raise RuntimeError("display bug")

    run = await execute_workflow(diamond(), Recorder(), progress=broken)
    assert run.status == "succeeded"
    assert "progress callback failed" in caplog.text


async def test_iter_workflow_yields_events_then_the_run() -> None:
    items = [item async for item in iter_workflow(diamond(), Recorder({"B": 0.01}))]
    assert isinstance(items[-1], WorkflowRun) and items[-1].status == "succeeded"
    events = [i for i in items[:-1] if isinstance(i, StepEvent)]
    assert len(events) == len(items) - 1 == 15  # waiting, running, succeeded x 5


# -- the run --------------------------------------------------------------------------------


async def test_run_summaries_serialisation_and_display() -> None:
    ex = Recorder({"A": 0.005, "B": 0.02, "C": 0.005, "D": 0.005, "E": 0.005}, fail={"E"})
    run = await execute_workflow(diamond(name="dia<mond>"), ex)
    assert run.status == "partial"
    assert list(run.steps) == ["A", "B", "C", "D", "E"]
    assert 0 < run.critical_path_s <= run.wall_s
    assert 0 < run.efficiency <= 1.0
    step = run.steps["B"]
    assert step.started_at is not None and step.ended_at is not None
    assert step.started_s is not None and step.ended_s is not None
    assert step.duration_s == pytest.approx(step.ended_s - step.started_s)

    metrics = run.metrics
    assert list(metrics["step"]) == ["A", "B", "C", "D", "E"]
    assert {
        "status",
        "agent",
        "model",
        "duration_s",
        "attempts",
        "cached",
        "start_s",
        "end_s",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "detail",
    } <= set(metrics.columns)
    assert metrics.set_index("step").loc["E", "status"] == "failed"

    data = json.loads(run.to_json())
    assert data["status"] == "partial" and data["outputs"]["B"] == "<B>"
    assert data["steps"]["E"]["error"]["type"] == "AgentCallError"
    assert data["critical_path"] == run.critical_path

    page = run._repr_html_()
    assert "dia&lt;mond&gt;" in page and "<code>D</code>" in page and "AgentCallError" in page
    assert "partial" in repr(run) and "dia<mond>" in repr(run)


async def test_skipped_steps_have_no_duration_and_count_zero_on_the_critical_path() -> None:
    run = await execute_workflow(diamond(), Recorder({"A": 0.01}, fail={"A"}))
    assert run.steps["E"].duration_s == 0.0 and run.steps["E"].started_s is None
    assert run.critical_path_s == pytest.approx(run.steps["A"].duration_s)
    assert not math.isnan(run.efficiency)


# -- the timeline ---------------------------------------------------------------------------


async def test_timeline_draws_one_bar_per_step() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = await execute_workflow(diamond(), Recorder({"B": 0.02, "C": 0.01}, fail={"D"}))
    run = await execute_workflow(diamond(), Recorder({"D": 0.01}), resume=first)
    ax = run.timeline()
    try:
        from matplotlib.patches import Rectangle

        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(bars) == len(ax.patches) == 5
        assert [t.get_text() for t in ax.get_yticklabels()] == ["A", "B", "C", "D", "E"]
        for bar, (step_id, step) in zip(bars, run.steps.items(), strict=True):
            assert bar.get_width() == pytest.approx(step.duration_s), step_id
            assert bar.get_x() == pytest.approx(step.started_s)
            assert (bar.get_hatch() == "//") == step.cached
        assert sum(t.get_text().strip() == "cached" for t in ax.texts) == 3  # A, B, C reused
        fig, own = plt.subplots()
        assert run.timeline(ax=own) is own
        plt.close(fig)
    finally:
        plt.close("all")


def test_timeline_accepts_the_metrics_frame() -> None:
    pd = pytest.importorskip("pandas")
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agentnb.plots import plot_timeline

    frame = pd.DataFrame(
        {
            "step": ["a", "b"],
            "status": ["succeeded", "skipped"],
            "start_s": [0.0, math.nan],
            "end_s": [0.5, 0.5],
            "cached": [False, False],
        }
    )
    ax = plot_timeline(frame)
    try:
        from matplotlib.patches import Rectangle

        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert [round(b.get_width(), 3) for b in bars] == [0.5, 0.0]
        assert any("skipped" in t.get_text() for t in ax.texts)
    finally:
        plt.close("all")


# -- random DAGs ----------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[tuple[str, list[str]]], int | None, bool]:
    n = draw(st.integers(min_value=1, max_value=25))
    deps = [
        sorted(draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=4))) if i else []
        for i in range(n)
    ]
    order = draw(st.permutations(range(n)))  # steps may be listed before their dependencies
    steps = [(f"s{i}", [f"s{d}" for d in deps[i]]) for i in order]
    limit = draw(st.one_of(st.none(), st.integers(min_value=1, max_value=5)))
    use_placeholders = draw(st.booleans())
    return steps, limit, use_placeholders


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_random_dags_run_every_step_once_after_its_dependencies(
    dag: tuple[list[tuple[str, list[str]]], int | None, bool],
) -> None:
    steps, limit, use_placeholders = dag
    raw: list[dict[str, Any]] = []
    for step_id, deps in steps:
        if use_placeholders:
            raw.append(
                {
                    "id": step_id,
                    "agent": "w",
                    "task": " ".join(f"{{{{{d}}}}}" for d in deps) or "start",
                }
            )
        else:
            raw.append({"id": step_id, "agent": "w", "task": "t", "dependencies": deps})
    wf = Workflow.from_dict({"name": "random", "steps": raw, "max_concurrency": limit})
    ex = Recorder()
    run = asyncio.run(execute_workflow(wf, ex))
    assert run.status == "succeeded"
    assert ex.calls == Counter({step_id: 1 for step_id, _ in steps})
    for step_id, deps in steps:
        for dep in deps:
            assert ex.at("end", dep) < ex.at("start", step_id)
    if limit is not None:
        assert ex.peak <= limit
    levels = wf.order()
    assert sorted(s for level in levels for s in level) == sorted(s for s, _ in steps)


# -- the shipped examples -------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
async def test_examples_validate_and_run(path: Path) -> None:
    wf = Workflow.from_yaml(path)
    variables = {"src": "def add(a, b):\n    return a - b\n", "data": "x: 1..9", "question": "why?"}
    wf.validate(agents=BUILTIN_AGENTS, variables=variables)
    run = await execute_workflow(wf, Recorder(), variables=variables, agents=BUILTIN_AGENTS)
    assert run.status == "succeeded"
    assert len({s.agent for s in wf.steps} - BUILTIN_AGENTS) == 0


def test_there_are_examples() -> None:
    assert len(list(EXAMPLES.glob("*.yaml"))) >= 2


def test_bench_scheduler_reports_its_figures() -> None:
    from agentnb.bench_suite._scheduler_micro import bench_scheduler

    figures = bench_scheduler(
        overhead_steps=50,
        dag_steps=10,
        latency_range=(0.0, 0.002),
        skew_s=(0.0, 0.01, 0.004, 0.004, 0.0),
        repeat=1,
    )
    assert figures["overhead_steps"] == 50 and figures["dag_steps"] == 10
    assert figures["total_us_per_step"] > 0
    assert figures["dag_wall_over_critical_path"] >= 0.99
    assert figures["skewed_superstep_s"] == pytest.approx(0.014)


async def test_a_wide_dag_keeps_at_most_the_limit_of_step_tasks_alive() -> None:
    # 300 independent steps under a limit of 4: tasks are made as slots free up, not up front.
    alive: list[int] = []

    async def execute(step: Step, task: str) -> AgentResult:
        alive.append(len(asyncio.all_tasks()))
        await asyncio.sleep(0)
        return AgentResult(agent=step.agent, model="m", text=task)

    steps = [{"id": f"s{i}", "agent": "writer", "task": f"t{i}"} for i in range(300)]
    wf = Workflow.from_dict({"name": "wide", "steps": steps})
    run = await execute_workflow(wf, execute, max_concurrency=4)
    assert run.status == "succeeded" and len(alive) == 300
    assert max(alive) <= 4 + 2  # the steps, the test's own task and the run's
