"""A workflow through the pipeline: each step prepared once, run without a second limit.

The scheduler (`agentnb.workflow.execute_workflow`) holds the concurrency limit, so a step's call
passes no admission slot of the orchestrator's (a step is "running" only while it really runs);
each step is prepared (request and cache key) once, when it becomes ready. Every step's call
holds its worst case in the run's budget; a refused one stops the run (status `budget`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from ..options import CallOptions
from ..progress import Progress, job_progress
from ..result import AgentResult
from .admission import Unlimited
from .calls import Tags
from .fanout import step_progress
from .prepare import PreparedCall

if TYPE_CHECKING:
    from ..workflow import StepEvent, Workflow, WorkflowRun
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
) -> WorkflowRun:
    """`AsyncAgentOrchestrator.run_workflow` once the workflow is loaded."""
    from ..workflow import execute_workflow

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

    def run(events: Callable[[StepEvent], None] | None) -> Coroutine[Any, Any, WorkflowRun]:
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
        done = await orch.on_home(run(step_progress(shown)))
        if done.status != "succeeded" and not isinstance(show, Progress):
            shown.close(done.status)
        return done
