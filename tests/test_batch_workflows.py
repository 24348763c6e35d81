"""Workflows in batch mode: `run_workflow(batch=True)` sends each wave of ready steps as one
Message Batch, on the simulator's batches (fast: a batch ends in a few milliseconds)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import pytest

from agentnb import AgentRegistry, AsyncAgentOrchestrator, Config, SimulatedBackend
from agentnb.backends.batch import BatchInfo, BatchRequest
from agentnb.backends.sim_batches import SimBatches
from agentnb.progress import Progress
from agentnb.workflow import StepEvent, WorkflowRun

matplotlib.use("Agg")

# Three levels: a and b, then c (needs both), then d; e needs a only.
WAVES = """\
name: waves
steps:
  - {id: a, agent: writer, task: "first about caches"}
  - {id: b, agent: writer, task: "second about caches"}
  - {id: c, agent: python-expert, task: "merge {{a}} and {{b}}"}
  - {id: d, agent: writer, task: "polish {{c}}"}
  - {id: e, agent: writer, task: "a title for {{a}}"}
"""


class Spy(SimulatedBackend):
    """The real simulator, noting the batches it is asked to create (`created`, their `ids`)
    and those asked about (`polled`); from batch number `slow_from` on (1-based), a batch
    takes `slow_s` to end."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.created: list[list[BatchRequest]] = []
        self.ids: list[str] = []
        self.polled: set[str] = set()
        self.slow_from: int | None = None
        self.slow_s = 0.0

    async def batch_create(self, requests: Sequence[BatchRequest]) -> BatchInfo:
        self.created.append(list(requests))
        if self.slow_from is not None and len(self.created) >= self.slow_from:
            self.batches.latency_s = self.slow_s
        info = await super().batch_create(requests)
        self.ids.append(info.id)
        return info

    async def batch_retrieve(self, batch_id: str) -> BatchInfo:
        self.polled.add(batch_id)
        return await super().batch_retrieve(batch_id)

    def waves(self) -> list[list[str]]:
        """The tasks of each batch created, in order (sorted within a batch)."""
        return [sorted(r.request.task for r in batch) for batch in self.created]


def config(tmp_path: Path, **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "backend": "simulated",
        "cache_dir": tmp_path / "cache",
        "state_dir": tmp_path / "state",
        "sim_latency_s": 0.0,
        "sim_jitter": 0.0,
        "sim_batch_latency_s": 0.01,
        "batch_poll_s": 0.002,
        "batch_poll_max_s": 0.01,
        "progress": False,
    }
    values.update(overrides)
    return Config.load(env={}, **values)


@pytest.fixture
async def orch_spy(tmp_path: Path) -> AsyncIterator[tuple[AsyncAgentOrchestrator, Spy]]:
    cfg = config(tmp_path)
    spy = Spy(latency_s=0.0, jitter=0.0, batches=SimBatches.from_config(cfg))
    orch = AsyncAgentOrchestrator(
        cfg, backend=spy, agents=AgentRegistry(include_default_dirs=False)
    )
    yield orch, spy
    await orch.aclose()


def texts(run: WorkflowRun) -> dict[str, str | None]:
    return {k: s.text for k, s in run.steps.items()}


async def test_each_wave_is_one_batch_in_dependency_order(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    orch, spy = orch_spy
    events: list[StepEvent] = []
    run = await orch.run_workflow(WAVES, batch=True, progress=events.append)
    assert run.status == "succeeded" and spy.call_count == 0  # nothing went online
    a, b = (run.steps[k].text for k in "ab")
    c = run.steps["c"].text
    assert spy.waves() == [
        ["first about caches", "second about caches"],
        [f"a title for {a}", f"merge {a} and {b}"],
        [f"polish {c}"],
    ]
    assert {k: s.wave for k, s in run.steps.items()} == {"a": 1, "b": 1, "c": 2, "d": 3, "e": 2}
    assert {(e.step_id, e.wave) for e in events if e.status == "running"} == {
        ("a", 1),
        ("b", 1),
        ("c", 2),
        ("e", 2),
        ("d", 3),
    }
    # A wave's steps start when it is sent and end when its results are in: the timeline's waves.
    steps = run.steps
    assert steps["a"].started_s == steps["b"].started_s
    assert steps["c"].started_s == steps["e"].started_s
    c_start, a_end, b_end = steps["c"].started_s, steps["a"].ended_s, steps["b"].ended_s
    assert c_start is not None and a_end is not None and b_end is not None
    assert c_start >= max(a_end, b_end)
    frame = orch.metrics()
    assert frame["batch_id"].notna().all() and frame["batch_id"].nunique() == 3
    assert list(run.metrics["wave"]) == [1, 1, 2, 3, 2]
    # The same answers as the online run's.
    online = await orch.run_workflow(WAVES, use_cache=False)
    assert texts(online) == texts(run) and spy.call_count == 5


async def test_steps_the_cache_answers_are_never_sent(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    orch, spy = orch_spy
    first = await orch.execute_agent("writer", "first about caches")  # step a's very call
    run = await orch.run_workflow(WAVES, batch=True)
    assert run.steps["a"].status == "cached" and run.steps["a"].text == first.text
    a = first.text
    # e needed only a: it goes with b in the first batch, instead of waiting for it.
    assert spy.waves()[0] == sorted(["second about caches", f"a title for {a}"])
    assert len(spy.waves()) == 3
    sent = len(spy.created)
    again = await orch.run_workflow(WAVES, batch=True)
    assert {s.status for s in again.steps.values()} == {"cached"}
    assert len(spy.created) == sent and texts(again) == texts(run)


async def test_an_interrupted_wave_detaches_and_resume_reuses_its_collected_answers(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    orch, spy = orch_spy
    spy.slow_from, spy.slow_s = 2, 0.3  # the second wave waits: the interrupt lands there
    partial: list[WorkflowRun] = []
    running = asyncio.create_task(orch.run_workflow(WAVES, batch=True, on_interrupt=partial.append))
    while len(spy.ids) < 2 or spy.ids[1] not in spy.polled:  # the second wave is waited for
        await asyncio.sleep(0.002)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    for _ in range(500):  # the run unwinds on agentnb's loop after this one saw the cancel
        if partial:
            break
        await asyncio.sleep(0.005)
    (run,) = partial
    statuses = {k: s.status for k, s in run.steps.items()}
    assert statuses == {"a": "succeeded", "b": "succeeded", "c": "skipped", "d": "skipped",
                        "e": "skipped"}  # fmt: skip
    frame = await orch.batches()
    assert frame.set_index("batch_id")["state"].to_dict() == {
        spy.ids[0]: "collected",
        spy.ids[1]: "sent",
    }
    batch_id = spy.ids[1]
    reason = run.steps["c"].reason or ""
    assert batch_id in reason and "detached, not cancelled" in reason
    assert (await spy.batch_retrieve(batch_id)).cancel_initiated_at is None
    # Collect what the detached wave paid for; the resumed run sends only what is left.
    assert (await orch.collect(batch_id)).cached == 2
    spy.slow_from = None
    spy.batches.latency_s = 0.01
    done = await orch.run_workflow(WAVES, batch=True, resume=run)
    assert done.status == "succeeded" and len(spy.created) == 3
    assert [r.request.task for r in spy.created[2]] == [f"polish {done.steps['c'].text}"]
    assert done.steps["a"].reused and done.steps["c"].cached and not done.steps["c"].reused


async def test_the_budget_and_the_progress_as_for_an_online_run(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    orch, spy = orch_spy
    stopped = await orch.run_workflow(WAVES, batch=True, max_cost_usd=0)
    assert stopped.status == "budget" and spy.created == []
    assert set(stopped.over_budget) == {"a", "b", "c", "d", "e"}
    shown = Progress(None, mode="off")
    run = await orch.run_workflow(WAVES, batch=True, progress=shown)
    snap = shown.snapshot
    assert run.status == "succeeded" and snap.done == 5 and snap.failed == 0
    assert snap.notes["wave"] == 3 and str(snap.notes["batch"]).startswith("msgbatch_")
    assert snap.cost_usd == pytest.approx(run.metrics["cost_usd"].sum())


async def test_the_timeline_shows_the_waves(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    import matplotlib.pyplot as plt

    orch, _ = orch_spy
    run = await orch.run_workflow(WAVES, batch=True)
    labels = {t.get_text() for t in run.timeline().texts}
    assert {"wave 1", "wave 2", "wave 3"} <= labels
    online = await orch.run_workflow(WAVES, use_cache=False)  # no waves: nothing shaded
    assert not any(t.get_text().startswith("wave") for t in online.timeline().texts)
    assert online.metrics["wave"].isna().all()
    plt.close("all")
