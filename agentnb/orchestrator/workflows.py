"""A workflow through the pipeline: each step prepared once, run without a second limit.

The scheduler (`agentnb.workflow.execute_workflow`) holds the concurrency limit, so a step's call
passes no admission slot of the orchestrator's (a step is "running" only while it really runs);
each step is prepared (request and cache key) once, when it becomes ready. Every step's call
holds its worst case in the run's budget; a refused one stops the run (status `budget`).

With `batch=True` the steps go in waves (`agentnb.workflow.execute_waves`), each wave one
`submit_batch` job under the run's budget: the cache's answers are found while a wave is
gathered (`_BatchWaves.lookup`, the batch path's own `plan`), and the run's progress display shows
the wave and its batch's counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from ..options import CallOptions
from ..progress import Note, Progress, job_progress
from ..result import AgentResult
from .admission import Unlimited
from .batchsend import plan
from .calls import Tags
from .fanout import step_progress
from .prepare import PreparedCall

if TYPE_CHECKING:
    from ..workflow import StepEvent, Workflow, WorkflowRun
    from .batching import BatchJob
    from .budget import Budget
    from .core import AsyncAgentOrchestrator, ProgressArg

__all__ = ["run_steps"]

_UNLIMITED = Unlimited()


async def run_steps(
    orch: AsyncAgentOrchestrator,
    wf: Workflow,
    variables: Mapping[str, Any] | None,
    *,
    max_concurrency: int | None,
    use_cache: bool,
    progress: ProgressArg | Callable[[StepEvent], None],
    resume: WorkflowRun | None,
    on_interrupt: Callable[[WorkflowRun], None] | None,
    budget: Budget | None = None,
    batch: bool = False,
) -> WorkflowRun:
    """`AsyncAgentOrchestrator.run_workflow` once the workflow is loaded."""
    from ..workflow import execute_waves, execute_workflow

    run_id = uuid.uuid4().hex[:12]
    no_cache = None if use_cache else CallOptions(use_cache=False)
    prepare_call = orch.preparer.prepare

    def prepare(step: Any, task: str) -> PreparedCall:
        options: CallOptions = step.options
        if no_cache is not None:
            options = options.merged(no_cache)
        return prepare_call(step.agent, task, options, Tags(run_id, wf.name, step.id))

    async def execute(step: Any, p: PreparedCall) -> AgentResult:
        return await orch.call(p, _UNLIMITED, budget)

    if max_concurrency is None and wf.max_concurrency is None:
        max_concurrency = orch.config.max_concurrency
    on_event: Callable[[StepEvent], None] | None = None
    show: Progress | bool = False
    if callable(progress) and not isinstance(progress, Progress):
        on_event = progress
    else:
        show = orch.progress_for(progress, len(wf.steps))

    waves = None
    if batch:
        run_budget = budget or orch.job_budget(None, len(wf.steps), "run_workflow")
        waves = _BatchWaves(orch, run_budget, max_concurrency)

    def run(events: Callable[[StepEvent], None] | None) -> Coroutine[Any, Any, WorkflowRun]:
        if waves is not None:
            return execute_waves(
                wf,
                waves.submit,
                lookup=waves.lookup,
                prepare=prepare,
                variables=variables,
                progress=events,
                resume=resume,
                agents=orch.agents,
                on_interrupt=on_interrupt,
            )
        return execute_workflow(
            wf,
            execute,
            prepare=prepare,
            variables=variables,
            max_concurrency=max_concurrency,
            progress=events,
            resume=resume,
            agents=orch.agents,
            on_interrupt=on_interrupt,
        )

    if show is False:
        return await orch.on_home(run(on_event))
    with job_progress(show, len(wf.steps), label=f"workflow {wf.name}") as shown:
        if orch.quotas is not None:
            shown.watch(orch.quotas.live)
        if waves is not None:
            shown.watch(waves.live)
        done = await orch.on_home(run(step_progress(shown)))
        if done.status != "succeeded" and not isinstance(show, Progress):
            shown.close(done.status)
        return done


class _BatchWaves:
    """A run's waves as Message Batches: the cache asked while a wave is gathered, then the
    rest sent as one `submit_batch` job under the run's budget."""

    def __init__(
        self, orch: AsyncAgentOrchestrator, budget: Budget, max_concurrency: int | None
    ) -> None:
        self.orch = orch
        self.budget = budget
        self.max_concurrency = max_concurrency  # bounds the online retries of errored requests
        self.wave = 0
        self.counts: Progress | None = None  # the wave's job reports here; `live` shows it

    async def lookup(self, prepared: list[PreparedCall]) -> list[AgentResult | None]:
        """The steps the response cache answers (recorded as hits), None for the others.

        `submit_batch` asks the cache again for the others: a few keys a wave, while answering
        every hit here lets the steps it releases join this wave instead of waiting a batch."""
        found: list[AgentResult | BaseException | None] = [None] * len(prepared)
        if self.orch.cache is not None:
            await plan(self.orch, prepared, found, self.budget)
        return [r if isinstance(r, AgentResult) else None for r in found]

    async def submit(self, wave: int, prepared: list[PreparedCall]) -> BatchJob:
        self.wave = wave
        self.counts = Progress(len(prepared), mode="off")
        return await self.orch.submit_batch(
            prepared,
            budget=self.budget,
            max_concurrency=self.max_concurrency,
            progress=self.counts,
        )

    def live(self) -> dict[str, Note]:
        """What the run's progress display shows of its waves: the wave, its batch's counts."""
        if self.counts is None:
            return {}
        return {"wave": self.wave, **self.counts.snapshot.notes}
