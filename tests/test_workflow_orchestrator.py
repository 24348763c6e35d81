"""Workflows run through the orchestrator and the offline simulator, end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from agentnb import AgentOrchestrator, AgentRegistry, AsyncAgentOrchestrator, Config
from agentnb.backends import SimulatedBackend
from agentnb.errors import AgentCallError, WorkflowValidationError
from agentnb.workflow import StepEvent, Workflow

# Latency is per agent in the simulator, so each branch of the diamond gets its own agent:
# A (writer) -> {B (python-expert, slow), C (code-reviewer) -> D (data-analyst)} -> E (writer)
DIAMOND = """
name: diamond
steps:
  - {id: A, agent: writer, task: "Outline a review of {{src}}"}
  - {id: B, agent: python-expert, task: "Find bugs following {{A}}"}
  - {id: C, agent: code-reviewer, task: "Check style following {{A}}"}
  - {id: D, agent: data-analyst, task: "Count the issues in {{C}}"}
  - {id: E, agent: writer, task: "Merge {{B}} and {{D}}; keep {'json': {'as': 'is'}}"}
"""
LATENCIES = {"writer": 0.005, "python-expert": 0.05, "code-reviewer": 0.005, "data-analyst": 0.005}


def make(
    latencies: Mapping[str, float] = LATENCIES, **config: Any
) -> tuple[AsyncAgentOrchestrator, SimulatedBackend]:
    cfg = Config.load(
        env={}, backend="simulated", cache_enabled=False, backoff_base_s=0.001,
        backoff_cap_s=0.002, **config,
    )  # fmt: skip
    backend = SimulatedBackend(latency_s=0.005, jitter=0.0, latencies=latencies)
    orch = AsyncAgentOrchestrator(
        cfg, backend=backend, agents=AgentRegistry(include_default_dirs=False)
    )
    return orch, backend


@pytest.fixture
async def orch_backend() -> AsyncIterator[tuple[AsyncAgentOrchestrator, SimulatedBackend]]:
    orch, backend = make()
    yield orch, backend
    await orch.aclose()


async def test_diamond_runs_progressively_through_the_orchestrator() -> None:
    # B takes 1.5 s, the C -> D branch a few ms: D starting before B ends is a margin of more
    # than a second, not a race (a superstep scheduler would start D only after B ended).
    slow_b = {"writer": 0.001, "python-expert": 1.5, "code-reviewer": 0.001, "data-analyst": 0.001}
    orch, backend = make(slow_b)
    events: list[StepEvent] = []
    try:
        run = await orch.run_workflow(DIAMOND, {"src": "def f(): ..."}, progress=events.append)
    finally:
        await orch.aclose()
    assert run.status == "succeeded" and run.simulated
    calls = {c.agent if c.agent != "writer" else c.task[:5]: c for c in backend.calls}
    bugs, data = calls["python-expert"], calls["data-analyst"]
    assert bugs.ended is not None
    assert data.started < bugs.ended  # D started before the slow B finished
    merge = next(c for c in backend.calls if c.task.startswith("Merge"))
    assert run.outputs["B"] in merge.task and run.outputs["D"] in merge.task
    assert merge.task.endswith("keep {'json': {'as': 'is'}}")
    assert "def f(): ..." in backend.calls[0].task
    assert backend.peak_in_flight == 2
    assert {e.step_id for e in events if e.status == "succeeded"} == set("ABCDE")
    assert run.metrics["output_tokens"].gt(0).all()


async def test_failure_continue_then_resume_reruns_only_what_failed(
    orch_backend: tuple[AsyncAgentOrchestrator, SimulatedBackend],
) -> None:
    orch, backend = orch_backend
    wf = Workflow.from_yaml(DIAMOND)
    # every attempt at B fails this time, and only this time
    backend.inject("server_error", times=orch.config.max_attempts, agent="python-expert")
    first = await orch.run_workflow(wf, {"src": "x"}, resume=None)
    assert first.steps["B"].status == "failed"
    assert isinstance(first.steps["B"].error, AgentCallError)
    assert first.steps["B"].attempts == orch.config.max_attempts
    assert first.steps["E"].status == "skipped"
    assert first.status == "partial" and set(first.outputs) == {"A", "C", "D"}

    backend.reset_log()
    second = await orch.run_workflow(wf, {"src": "x"}, resume=first)
    assert second.status == "succeeded"
    assert sorted(c.agent for c in backend.calls) == ["python-expert", "writer"]  # B and E
    assert [k for k, s in second.steps.items() if s.reused] == ["A", "C", "D"]


async def test_validation_errors_come_before_any_call(
    orch_backend: tuple[AsyncAgentOrchestrator, SimulatedBackend],
) -> None:
    orch, backend = orch_backend
    with pytest.raises(WorkflowValidationError) as info:
        await orch.run_workflow(DIAMOND.replace("data-analyst", "data-analyts"), {"src": "x"})
    assert info.value.step == "D" and info.value.field == "agent" and info.value.line == 7
    assert "did you mean 'data-analyst'" in str(info.value)
    with pytest.raises(WorkflowValidationError, match="unresolved placeholder"):
        await orch.run_workflow(DIAMOND, {})
    assert backend.calls == []


def test_blocking_twin_with_the_workflow_concurrency_limit() -> None:
    _, backend = make(latencies={})
    wide = {
        "name": "wide",
        "max_concurrency": 3,
        "steps": [{"id": f"s{i}", "agent": "writer", "task": f"Say {i}"} for i in range(9)],
    }
    with AgentOrchestrator(
        Config.load(env={}, backend="simulated", cache_enabled=False),
        backend=backend,
        agents=AgentRegistry(include_default_dirs=False),
    ) as orch:
        run = orch.run_workflow(wide)
    assert run.status == "succeeded" and len(run.outputs) == 9
    assert backend.peak_in_flight == 3
