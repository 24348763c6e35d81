"""What a running workflow tells its watchers: one `StepEvent` per change of a step's state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..result import AgentResult
from .run import StepStatus

if TYPE_CHECKING:
    pass

__all__ = ["StepEvent"]


@dataclass(frozen=True, slots=True)
class StepEvent:
    """A step changing state: `at` is seconds since the run started.

    `result` comes with `succeeded`/`cached`, `error` with `failed`, `reason` with `skipped`;
    `wave` is the step's wave in a run in waves (`run_workflow(batch=True)`), else None.
    """

    step_id: str
    status: StepStatus
    at: float
    result: AgentResult | None = None
    error: BaseException | None = None
    reason: str | None = None
    wave: int | None = None
