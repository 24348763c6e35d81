"""Running a workflow in waves: every step ready at one moment sent at once, as one job.

This is how `run_workflow(batch=True)` runs, and the one place agentnb runs in stages: a Message
Batch is answered as a whole, minutes to hours later, so a step's dependents can only go once
its batch's results are in. A wave is every step ready when it is sent; the steps whose
dependencies it completes make the next wave. While a wave is gathered, the steps the response
cache already answers (`lookup`) finish at once as `cached`, are never sent, and the steps they
release join the same wave; a wave that is all cache hits sends nothing. So a DAG of three
levels makes three jobs (fewer when the cache holds a whole level), in dependency order.

Each step's `wave` (in its `StepResult` and its `StepEvent`s) is the wave it was ready in; a
sent step's start and end are when its wave was sent and when the wave's results came, so
`WorkflowRun.timeline()` draws the run as its waves. What a step's outcome does is as in the
progressive scheduler (`scheduler.py`): a failure skips its dependents (`on_error: continue`)
or stops the run after this wave (`fail_fast`: the wave's other answers are kept, they are paid
for), a `BudgetExceededError` stops it with status `budget`. Reuse from `resume=` is the same.

Interrupting the run while a wave is out cancels nothing at the provider (the job detaches): the
wave's steps end `skipped`, their reason naming its batches, and `on_interrupt` gets the partial
run. Collect the batches (`orch.collect(id)`) and run again with `resume=` that run: the
finished steps are reused and the wave's steps are then cache hits, never sent again.

Example:
    >>> run = await execute_waves(wf, submit, lookup=lookup, prepare=prepare)  # doctest: +SKIP
    >>> [s.wave for s in run.steps.values()]                                   # doctest: +SKIP
    [1, 1, 2]
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from ..errors import BudgetExceededError
from ..result import AgentResult
from .events import StepEvent
from .model import Step, Workflow
from .run import StepStatus, WorkflowRun
from .scheduler import StepPreparer, _Scheduler, drive

__all__ = ["WaveJob", "WaveLookup", "WaveSender", "execute_waves"]

#: A ready step: (step, task as sent, what `prepare` made of it, the error preparing it raised).
_Ready = tuple[Step, str, Any, Exception | None]


class WaveJob(Protocol):
    """A wave once sent (a `BatchJob`): its batches' ids, and its steps' outcomes in order."""

    @property
    def ids(self) -> tuple[str, ...]: ...

    def results(self) -> Awaitable[Sequence[AgentResult | BaseException]]: ...


#: Sends one wave: `(wave number, what prepare made of each step) -> its WaveJob`.
WaveSender = Callable[[int, list[Any]], Awaitable[WaveJob]]
#: Answers from the cache what it holds: `(prepared) -> an AgentResult (a hit) or None each`.
WaveLookup = Callable[[list[Any]], Awaitable[Sequence[AgentResult | None]]]


async def execute_waves(
    workflow: Workflow,
    submit: WaveSender,
    *,
    lookup: WaveLookup | None = None,
    prepare: StepPreparer | None = None,
    variables: Mapping[str, Any] | None = None,
    progress: Callable[[StepEvent], None] | None = None,
    resume: WorkflowRun | None = None,
    agents: Container[str] | None = None,
    on_interrupt: Callable[[WorkflowRun], None] | None = None,
) -> WorkflowRun:
    """Run every step of `workflow` in waves (see the module docstring); the `WorkflowRun`.

    Arguments as for `execute_workflow`, but there is no concurrency limit (a wave holds every
    ready step) and `submit(wave, prepared)` sends a wave's steps not answered by `lookup`.
    """
    workflow.validate(agents=agents, variables=variables)
    waves = _Waves(workflow, submit, lookup, variables or {}, progress, resume, prepare)
    return await drive(waves, on_interrupt)


async def _unused(step: Step, prepared: Any) -> AgentResult:  # pragma: no cover - never called
    raise AssertionError("a run in waves sends its steps a wave at a time")


class _Waves(_Scheduler):
    """The progressive scheduler's state, started a wave at a time: ready steps collect in
    `pending` (`_launch` starts none) until `run` sends them together."""

    def __init__(
        self,
        workflow: Workflow,
        submit: WaveSender,
        lookup: WaveLookup | None,
        variables: Mapping[str, Any],
        progress: Callable[[StepEvent], None] | None,
        resume: WorkflowRun | None,
        prepare: StepPreparer | None,
    ) -> None:
        super().__init__(workflow, _unused, variables, None, progress, resume, None, prepare)
        self.submit = submit
        self.lookup = lookup

    def _launch(self) -> None:
        """Nothing starts on its own: `run` sends what is pending as the next wave."""

    async def run(self) -> WorkflowRun:
        for step in self.steps:
            self._emit(step.id, "waiting")
        number = self.wave = 1
        self._advance([p for p, n in enumerate(self.waiting) if n == 0])
        while self.pending and not self.stopping:
            wave: list[_Ready] = []
            while self.pending:  # the cache's answers release steps that join this wave
                ready = list(self.pending)
                self.pending.clear()
                wave += await self._answer_cached(ready)
            if wave and not self.stopping:
                await self._send(wave, number)
                number = self.wave = number + 1
        if self.refused is not None:
            return self.build_run(f"not started: {self.refused}", "budget")
        first = next((k for k, r in self.results.items() if r.status == "failed"), None)
        return self.build_run(f"not started: step {first!r} failed (on_error: fail_fast)")

    async def _answer_cached(self, ready: list[_Ready]) -> list[_Ready]:
        """Finish the steps that failed to prepare and those the cache answers; the rest."""
        asked = [item for item in ready if item[3] is None]
        answered: dict[str, AgentResult | None] = {}
        if asked and self.lookup is not None:
            hits = await self.lookup([prepared for _, _, prepared, _ in asked])
            answered = dict(zip((step.id for step, *_ in asked), hits, strict=True))
        rest: list[_Ready] = []
        for step, task, prepared, failure in ready:
            if failure is not None:
                self._ended(step, task, failure, None)
            elif (hit := answered.get(step.id)) is not None:
                self._ended(step, task, hit, (self._now(), datetime.now(UTC)))
            else:
                rest.append((step, task, prepared, failure))
        return rest

    async def _send(self, wave: list[_Ready], number: int) -> None:
        """Send `wave` (wave `number`) as one job and finish its steps with its outcomes."""
        started = (self._now(), datetime.now(UTC))
        for step, *_ in wave:
            self.started[step.id] = started
            self._emit(step.id, "running")
        job: WaveJob | None = None
        try:
            job = await self.submit(number, [prepared for _, _, prepared, _ in wave])
            outcomes = await job.results()
        except asyncio.CancelledError:
            reason = _detached(number, job)
            for step, task, _, _ in wave:
                self._finish(step, "skipped", task=task, started=started, reason=reason)
            raise
        for (step, task, _, _), outcome in zip(wave, outcomes, strict=True):
            self._ended(step, task, outcome, started)

    def _ended(
        self,
        step: Step,
        task: str,
        outcome: AgentResult | BaseException,
        started: tuple[float, datetime] | None,
    ) -> None:
        """Step `step` has its outcome: finish it, then release its dependents, stop the run
        or skip what depends on it, as the progressive scheduler does."""
        if isinstance(outcome, AgentResult):
            status: StepStatus = "cached" if outcome.cached else "succeeded"
            self._finish(step, status, result=outcome, task=task, started=started)
            if not self.stopping:
                self._advance(self._released(step))
        elif isinstance(outcome, BudgetExceededError):  # not sent: nothing more will be
            self.refused = self.refused or outcome
            self.stopping = True
            self._finish(
                step, "budget", error=outcome, task=task, reason="not started: over budget"
            )
        else:
            self._finish(step, "failed", error=outcome, task=task, started=started)
            if self.workflow.on_error == "fail_fast":
                self.stopping = True
            else:
                self._skip_downstream(step)


def _detached(wave: int, job: WaveJob | None) -> str:
    """Why an interrupted wave's steps have no result, and how to get it without paying again."""
    if job is None or not job.ids:  # a batch created before the interrupt is in the ledger
        return f"interrupted while wave {wave} was being sent (orch.batches() lists its batch)"
    ids = ", ".join(job.ids)
    return (
        f"interrupted in wave {wave}: message batch {ids} detached, not cancelled; collect it "
        f"(orch.collect({job.ids[0]!r})), then resume= this run to reuse its answers"
    )
