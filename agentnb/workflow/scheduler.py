"""The progressive scheduler: run a workflow's steps as soon as their own dependencies are done.

There are no supersteps: when a step finishes, each dependent whose dependencies have now all
succeeded is started at once, limited only by the concurrency limit (ready steps wait in a queue;
slots are handed out first come, first served). All steps run as tasks of one
`asyncio.TaskGroup`, so nothing outlives the call.

Failures never raise out of `execute_workflow`; they are recorded in the `WorkflowRun`:

- `on_error: continue` marks every step downstream of a failure `skipped` (naming the failed
  step) and lets independent branches run to the end;
- `on_error: fail_fast` cancels the running steps at the first failure and starts nothing new;
  cancelled and unstarted steps are `skipped`;
- a step whose executor raises `BudgetExceededError` (its call did not fit the run's budget)
  stops the run whatever `on_error` says: nothing new starts, the running steps finish, and that
  step and every step not started end with status `budget` (the run's status is `budget`).

Cancelling the call (or a `KeyboardInterrupt` raised inside a step) cancels the running steps and
propagates; results already completed stay in the orchestrator's response cache, so running
again (or passing `resume=`) does not repeat them.

Example:
    >>> async def execute(step, task):        # doctest: +SKIP
    ...     return await orchestrator.call(step.agent, task)
    >>> run = await execute_workflow(wf, execute, variables={"src": code}, max_concurrency=4)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Container, Mapping
from datetime import UTC, datetime
from typing import Any

from ..errors import BudgetExceededError
from ..options import check_text
from ..result import AgentResult
from .events import StepEvent
from .model import Step, Workflow
from .parse import invalid
from .run import StepResult, StepStatus, WorkflowRun
from .template import render

__all__ = [
    "StepEvent",
    "StepExecutor",
    "StepFingerprint",
    "StepPreparer",
    "execute_workflow",
]

log = logging.getLogger(__name__)

#: Runs one step: `(step, task with placeholders filled) -> result`; raising marks it failed.
#: With `prepare=`, it is given what `prepare(step, task)` made instead of the task.
StepExecutor = Callable[[Step, Any], Awaitable[AgentResult]]
#: Prepares one step once (`(step, task) -> prepared`); the prepared value's `fingerprint`
#: attribute, if any, is the step's fingerprint.
StepPreparer = Callable[[Step, str], Any]
#: Names everything a step's answer depends on: `(step, task with placeholders filled) -> str`.
StepFingerprint = Callable[[Step, str], str]


class _FailFast(Exception):
    """Raised inside the task group to cancel the other steps after a failure."""


async def execute_workflow(
    workflow: Workflow,
    execute: StepExecutor,
    *,
    variables: Mapping[str, Any] | None = None,
    max_concurrency: int | None = None,
    progress: Callable[[StepEvent], None] | None = None,
    resume: WorkflowRun | None = None,
    agents: Container[str] | None = None,
    fingerprint: StepFingerprint | None = None,
    on_interrupt: Callable[[WorkflowRun], None] | None = None,
    prepare: StepPreparer | None = None,
) -> WorkflowRun:
    """Run every step of `workflow` through `execute` and return the `WorkflowRun`.

    The workflow is validated first (against `agents` when given, and `variables`); a
    `WorkflowValidationError` is the only error raised before anything runs. Variables are
    turned into text with `str()`. The concurrency limit is the smaller of `max_concurrency`
    and the workflow's own (unlimited when neither is set). `progress` is called on the event
    loop for every `StepEvent`: `waiting` for all steps first, then `running`, then the final
    state. With `resume=`, a step that has an output in that run, the same agent and options,
    and the same task after filling in placeholders is reused (status `cached`, `reused=True`)
    without calling `execute`.

    `fingerprint(step, task)` names what else the answer depends on (the orchestrator passes
    the step's cache key: agent prompt, backend, model, ...). It is called before a step is
    reused or run and kept in `StepResult.fingerprint`; when both runs have one, a step is
    reused only if they are equal. If it raises, the step is not reused but run (where the
    same problem surfaces as the step's failure).

    `prepare(step, task)`, when given, is called exactly once per step that is not reused,
    before it runs: `execute` then gets what it returned, and its `fingerprint` attribute (the
    orchestrator's cache key) serves as the fingerprint. If it raises, the step fails with that
    error without `execute` being called.

    When the run is cancelled (an interrupt), the `CancelledError` propagates; first
    `on_interrupt` is given the partial `WorkflowRun`: finished steps as they ended, the rest
    `skipped`. It works as `resume=` for the next run.

    Example:
        >>> run = await execute_workflow(wf, execute, resume=last,       # doctest: +SKIP
        ...                              fingerprint=lambda step, task: key_for(step, task))
    """
    workflow.validate(agents=agents, variables=variables)
    limits = [n for n in (max_concurrency, workflow.max_concurrency) if n is not None]
    if any(n < 1 for n in limits):
        raise invalid(f"must be at least 1, got {min(limits)}", field="max_concurrency")
    scheduler = _Scheduler(
        workflow,
        execute,
        variables or {},
        min(limits) if limits else None,
        progress,
        resume,
        fingerprint,
        prepare,
    )
    return await drive(scheduler, on_interrupt)


async def drive(
    scheduler: _Scheduler, on_interrupt: Callable[[WorkflowRun], None] | None
) -> WorkflowRun:
    """Run `scheduler`; when cancelled, give `on_interrupt` the partial run first."""
    try:
        return await scheduler.run()
    except asyncio.CancelledError:
        if on_interrupt is not None:
            try:
                on_interrupt(scheduler.build_run("interrupted before it finished"))
            except Exception:
                log.exception("workflow on_interrupt callback failed")
        raise


class _Scheduler:
    """The state of one run; lives only for the duration of `execute_workflow`."""

    def __init__(
        self,
        workflow: Workflow,
        execute: StepExecutor,
        variables: Mapping[str, Any],
        limit: int | None,
        progress: Callable[[StepEvent], None] | None,
        resume: WorkflowRun | None,
        fingerprint: StepFingerprint | None,
        prepare: StepPreparer | None = None,
    ) -> None:
        self.workflow = workflow
        self.prepare = prepare
        self.execute = execute
        self.limit = limit
        self.progress = progress
        self.resume = resume
        self.fingerprint = fingerprint
        self.fingerprints: dict[str, str | None] = {}
        self.steps = workflow.steps
        self.index = workflow._graph.index
        self.dependents = workflow._graph.dependents
        self.waiting = [len(step.dependencies) for step in self.steps]
        # Ready steps wait here for a slot; a task is made only when its step can start, so at
        # most `limit` step tasks exist at once, however wide the DAG (first come, first served).
        self.pending: deque[tuple[Step, str, Any, Exception | None]] = deque()
        self.active = 0
        # Each variable a placeholder uses is turned into text once, not once per step.
        names = {n for free in workflow._graph.free for n in free}
        # `inputs:` are the workflow's defaults; the caller's variables override them.
        self.values: dict[str, str] = dict(workflow.inputs)
        self.values.update({n: str(variables[n]) for n in names if n in variables})
        for name, value in self.values.items():
            try:
                check_text(value, f"variable {name!r}")
            except ValueError as exc:  # it could never be sent: refuse it before anything runs
                raise invalid(str(exc), field="variables") from None
        self.results: dict[str, StepResult] = {}
        self.started: dict[str, tuple[float, datetime]] = {}
        self.stopping = False
        self.refused: BudgetExceededError | None = None  # the budget stopped the run
        self.wave: int | None = None  # in waves (`waves.py`): the wave being gathered or sent
        self.group: asyncio.TaskGroup | None = None
        self.t0 = time.perf_counter()
        self.started_at = datetime.now(UTC)

    # -- the run ----------------------------------------------------------------------------
    async def run(self) -> WorkflowRun:
        for step in self.steps:
            self._emit(step.id, "waiting")
        try:
            async with asyncio.TaskGroup() as group:
                self.group = group
                self._advance([p for p, n in enumerate(self.waiting) if n == 0])
        except* _FailFast:
            pass
        if self.refused is not None:
            return self.build_run(f"not started: {self.refused}", "budget")
        first = next((k for k, r in self.results.items() if r.status == "failed"), None)
        return self.build_run(f"not started: step {first!r} failed (on_error: fail_fast)")

    def build_run(self, unfinished: str, status: StepStatus = "skipped") -> WorkflowRun:
        """The run as it stands; steps without a result get `status` because `unfinished`."""
        for step in self.steps:
            if step.id not in self.results:
                self._finish(step, status, reason=unfinished)
        wall = time.perf_counter() - self.t0
        return WorkflowRun(
            workflow=self.workflow,
            steps={step.id: self.results[step.id] for step in self.steps},
            started_at=self.started_at,
            wall_s=wall,
            max_concurrency=self.limit,
        )

    def _advance(self, ready: list[int]) -> None:
        """Start (or reuse) each ready step; reused ones make their dependents ready in turn."""
        queue = deque(ready)
        while queue:
            step = self.steps[queue.popleft()]
            if step.id in self.results or self.stopping:
                continue
            task = self._render(step)
            prepared: Any = task
            failure: Exception | None = None
            if self.prepare is not None:
                try:
                    prepared = self.prepare(step, task)
                except Exception as exc:
                    failure = exc
                self.fingerprints[step.id] = getattr(prepared, "fingerprint", None)
            else:
                self.fingerprints[step.id] = self._fingerprint(step, task)
            reused = self._reusable(step, task)
            if reused is not None:
                now = self._now()
                self._finish(
                    step,
                    "cached",
                    result=reused,
                    task=task,
                    reused=True,
                    started=(now, datetime.now(UTC)),
                )
                queue.extend(self._released(step))
            else:
                self.pending.append((step, task, prepared, failure))
        self._launch()

    def _launch(self) -> None:
        """Start waiting steps while there are free slots."""
        limit = self.limit
        while self.pending and not self.stopping and (limit is None or self.active < limit):
            step, task, prepared, failure = self.pending.popleft()
            self.active += 1
            assert self.group is not None
            self.group.create_task(
                self._run_step(step, task, prepared, failure), name=f"step:{step.id}"
            )

    def _released(self, step: Step) -> list[int]:
        """Dependents of a finished step that now have all their dependencies done."""
        ready = []
        for child in self.dependents[self.index[step.id]]:
            self.waiting[child] -= 1
            if self.waiting[child] == 0:
                ready.append(child)
        return ready

    async def _run_step(
        self, step: Step, task: str, prepared: Any, failure: Exception | None
    ) -> None:
        try:
            self.started[step.id] = (self._now(), datetime.now(UTC))
            self._emit(step.id, "running")
            try:
                if failure is not None:
                    raise failure
                result = await self.execute(step, prepared)
            except Exception as exc:
                error: Exception | None = exc
            except BaseException:
                self._finish(
                    step,
                    "skipped",
                    task=task,
                    started=self.started[step.id],
                    reason="cancelled while running",
                )
                raise
            else:
                error = None
        finally:
            self.active -= 1
        if error is None:
            status: StepStatus = "cached" if result.cached else "succeeded"
            self._finish(step, status, result=result, task=task, started=self.started[step.id])
            if not self.stopping:
                self._advance(self._released(step))
            return
        if isinstance(error, BudgetExceededError):  # not started: and nothing else will be
            self.refused = self.refused or error
            self.stopping = True
            self._finish(step, "budget", error=error, task=task, reason="not started: over budget")
            return
        self._finish(step, "failed", error=error, task=task, started=self.started[step.id])
        self._launch()  # its slot is free
        if self.workflow.on_error == "fail_fast":
            if not self.stopping:
                self.stopping = True
                raise _FailFast(step.id)
            return
        self._skip_downstream(step)

    def _skip_downstream(self, failed: Step) -> None:
        direct = self.dependents[self.index[failed.id]]
        stack = list(direct)
        while stack:
            position = stack.pop()
            step = self.steps[position]
            if step.id in self.results:
                continue
            how = "dependency" if position in direct else "upstream step"
            self._finish(step, "skipped", reason=f"{how} {failed.id!r} failed")
            stack.extend(self.dependents[position])

    # -- helpers ----------------------------------------------------------------------------
    def _render(self, step: Step) -> str:
        names = step.placeholders
        if not names:
            return step.task
        values = {}
        for name in names:
            own = self.results.get(name)
            if name in self.index and own is not None and own.result is not None:
                values[name] = own.result.text
            else:
                values[name] = self.values[name]
        return render(step.task, values)

    def _fingerprint(self, step: Step, task: str) -> str | None:
        if self.fingerprint is None:
            return None
        try:
            return self.fingerprint(step, task)
        except Exception:
            log.debug("workflow step %s: no fingerprint, so not reused", step.id, exc_info=True)
            return None

    def _reusable(self, step: Step, task: str) -> AgentResult | None:
        if self.resume is None:
            return None
        before = self.resume.steps.get(step.id)
        if before is None or not before.ok or before.result is None or before.task != task:
            return None
        now = self.fingerprints.get(step.id)
        if (self.fingerprint is not None or self.prepare is not None) and now is None:
            return None  # the fingerprint failed: nothing says the old answer still holds
        if now is not None and before.fingerprint is not None and now != before.fingerprint:
            return None
        try:
            old = self.resume.workflow.step(step.id)
        except KeyError:
            return None
        same = (old.agent, old.options) == (step.agent, step.options)
        return before.result if same else None

    def _now(self) -> float:
        return time.perf_counter() - self.t0

    def _finish(
        self,
        step: Step,
        status: StepStatus,
        *,
        result: AgentResult | None = None,
        error: BaseException | None = None,
        task: str | None = None,
        reason: str | None = None,
        started: tuple[float, datetime] | None = None,
        reused: bool = False,
    ) -> None:
        ended = self._now()
        attempts = 0
        if result is not None and not reused:
            attempts = result.attempts
        elif error is not None and status != "budget":
            attempts = int(getattr(error, "attempts", 1))
        elif started is not None and not reused:
            attempts = 1
        fingerprint = self.fingerprints.get(step.id)
        if reused and fingerprint is None and self.resume is not None:
            fingerprint = self.resume.steps[step.id].fingerprint  # what the answer came from
        self.results[step.id] = StepResult(
            step_id=step.id,
            agent=step.agent,
            status=status,
            result=result,
            error=error,
            task=task,
            reason=reason,
            started_s=started[0] if started else None,
            ended_s=ended,
            started_at=started[1] if started else None,
            ended_at=datetime.now(UTC),
            attempts=attempts,
            reused=reused,
            fingerprint=fingerprint,
            wave=self.wave,
        )
        self._emit(step.id, status, result=result, error=error, reason=reason)

    def _emit(
        self,
        step_id: str,
        status: StepStatus,
        *,
        result: AgentResult | None = None,
        error: BaseException | None = None,
        reason: str | None = None,
    ) -> None:
        if self.progress is None:
            return
        try:
            self.progress(StepEvent(step_id, status, self._now(), result, error, reason, self.wave))
        except Exception:
            # A broken progress display must not break the run it displays.
            log.exception("workflow progress callback failed on %s %s", step_id, status)
