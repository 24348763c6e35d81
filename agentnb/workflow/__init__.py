"""Workflows: YAML DAGs of agent steps, checked before they run and scheduled progressively.

`Workflow` (`model.py`) is the checked, immutable DAG; `execute_workflow` (`scheduler.py`) runs
it through any step executor (the orchestrator passes one that calls the model), or
`execute_waves` (`waves.py`) a wave of ready steps at a time, as Message Batches; the result is a
`WorkflowRun` (`run.py`). `{{name}}` placeholders are described in `template.py`.

Example:
    >>> wf = Workflow.from_yaml("examples/workflows/code-review.yaml")   # doctest: +SKIP
    >>> run = await orchestrator.run_workflow(wf, variables={"src": code})  # doctest: +SKIP
    >>> run.status, run.efficiency                                          # doctest: +SKIP
"""

from __future__ import annotations

from .events import StepEvent
from .model import OnError, Step, Workflow
from .run import RunStatus, StepResult, StepStatus, WorkflowRun
from .scheduler import StepExecutor, StepFingerprint, execute_workflow
from .watch import iter_workflow
from .waves import WaveJob, execute_waves

__all__ = [
    "OnError",
    "RunStatus",
    "Step",
    "StepEvent",
    "StepExecutor",
    "StepFingerprint",
    "StepResult",
    "StepStatus",
    "WaveJob",
    "Workflow",
    "WorkflowRun",
    "execute_waves",
    "execute_workflow",
    "iter_workflow",
]
