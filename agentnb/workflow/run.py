"""`WorkflowRun` and `StepResult`: what running a workflow gives back, and how it shows itself.

Step statuses: `waiting` and `running` (seen only in progress events), then one of `succeeded`,
`cached` (no model call this time: reused from `resume=`, or served by the response cache),
`failed`, `skipped` (a dependency failed, or `fail_fast` stopped the run; `reason` says which),
or `budget` (not started: the run's budget could not take its call; `reason` says so).
A run is `budget` when its budget stopped it, else `succeeded` when every step succeeded or was
cached, `failed` when none did, else `partial`. Times: `started_s`/`ended_s` are
`time.perf_counter` seconds from the run's start; `started_at`/`ended_at` are wall-clock UTC
datetimes.

Example:
    >>> run = WorkflowRun(workflow=wf, steps=steps, started_at=now, wall_s=1.2)  # doctest: +SKIP
    >>> run.status, run.outputs["summary"], run.efficiency                       # doctest: +SKIP
    ('succeeded', '...', 0.98)
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from ..errors import WorkflowError
from ..result import AgentResult
from .model import Workflow

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["RunStatus", "StepResult", "StepStatus", "WorkflowRun"]

StepStatus = Literal["waiting", "running", "succeeded", "cached", "failed", "skipped", "budget"]
RunStatus = Literal["succeeded", "failed", "partial", "budget"]
OK_STATUSES = ("succeeded", "cached")


@dataclass(frozen=True)
class StepResult:
    """The outcome of one step in a run.

    `task` is the task as sent (placeholders filled); `result` is set when the step succeeded or
    was cached; `error` when it failed; `reason` when it was skipped. `reused` marks a result
    taken from the run passed as `resume=`. `attempts` counts calls made in this run.
    `fingerprint` is what the scheduler's `fingerprint=` named for the step (the orchestrator's
    cache key), or None; `resume=` reuses a result only while it still matches. `wave`: in a run
    in waves (`run_workflow(batch=True)`), the wave the step was ready in (1, 2, ...; its
    `started_s`/`ended_s` are when that wave was sent and when its results came); else None.
    """

    step_id: str
    agent: str
    status: StepStatus
    result: AgentResult | None = None
    error: BaseException | None = None
    task: str | None = None
    reason: str | None = None
    started_s: float | None = None
    ended_s: float | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempts: int = 0
    reused: bool = False
    fingerprint: str | None = None
    wave: int | None = None

    @property
    def ok(self) -> bool:
        """True when the step has an output (succeeded or cached)."""
        return self.status in OK_STATUSES

    @property
    def cached(self) -> bool:
        """True when no model call was made for this step in this run."""
        return self.status == "cached"

    @property
    def text(self) -> str | None:
        """The step's output text, if it has one."""
        return self.result.text if self.result is not None else None

    @property
    def duration_s(self) -> float:
        """Seconds from start to end (0 for a step that never started)."""
        if self.started_s is None or self.ended_s is None:
            return 0.0
        return max(0.0, self.ended_s - self.started_s)

    @property
    def detail(self) -> str:
        """One line on what went wrong, or `""`."""
        if self.error is not None:
            return f"{type(self.error).__name__}: {self.error}"
        return self.reason or ""

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready values (the error as its type and message)."""
        return {
            "step_id": self.step_id,
            "agent": self.agent,
            "status": self.status,
            "task": self.task,
            "reason": self.reason,
            "error": None
            if self.error is None
            else {"type": type(self.error).__name__, "message": str(self.error)},
            "started_s": self.started_s,
            "ended_s": self.ended_s,
            "duration_s": self.duration_s,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "attempts": self.attempts,
            "reused": self.reused,
            "fingerprint": self.fingerprint,
            "wave": self.wave,
            "result": self.result.to_dict() if self.result is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepResult:
        """Rebuild a step result from `to_dict` output (an error comes back as `WorkflowError`)."""
        error = data.get("error")
        result = data.get("result")
        return cls(
            step_id=data["step_id"],
            agent=data["agent"],
            status=data["status"],
            result=AgentResult.from_dict(dict(result)) if result else None,
            error=WorkflowError(f"{error['type']}: {error['message']}") if error else None,
            task=data.get("task"),
            reason=data.get("reason"),
            started_s=data.get("started_s"),
            ended_s=data.get("ended_s"),
            started_at=_datetime(data.get("started_at")),
            ended_at=_datetime(data.get("ended_at")),
            attempts=int(data.get("attempts", 0)),
            reused=bool(data.get("reused", False)),
            fingerprint=data.get("fingerprint"),
            wave=data.get("wave"),
        )


def _datetime(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True, eq=False)
class WorkflowRun:
    """The result of running a workflow: every step's outcome, timings and summaries.

    Example:
        >>> run.status, list(run.outputs)          # doctest: +SKIP
        ('partial', ['style', 'bugs'])
        >>> run.metrics[["step", "status", "duration_s"]]   # doctest: +SKIP
        >>> run.timeline()                           # doctest: +SKIP
        >>> run.raise_for_status()                   # doctest: +SKIP
    """

    workflow: Workflow
    steps: Mapping[str, StepResult]
    started_at: datetime
    wall_s: float
    max_concurrency: int | None = None
    _summary: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    # -- summaries --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.workflow.name

    @property
    def status(self) -> RunStatus:
        """`budget` (the budget stopped the run), else `succeeded` (every step has an output),
        `failed` (none has) or `partial`."""
        if any(s.status == "budget" for s in self.steps.values()):
            return "budget"
        ok = sum(1 for s in self.steps.values() if s.ok)
        if ok == len(self.steps):
            return "succeeded"
        return "failed" if ok == 0 else "partial"

    @property
    def outputs(self) -> dict[str, str]:
        """Output text of every step that has one, in workflow order."""
        return {k: s.result.text for k, s in self.steps.items() if s.ok and s.result is not None}

    @property
    def failed(self) -> list[str]:
        return [k for k, s in self.steps.items() if s.status == "failed"]

    @property
    def skipped(self) -> list[str]:
        return [k for k, s in self.steps.items() if s.status == "skipped"]

    @property
    def over_budget(self) -> list[str]:
        """The steps not started because the run's budget could not take them."""
        return [k for k, s in self.steps.items() if s.status == "budget"]

    @property
    def simulated(self) -> bool:
        """True when any answer came from the offline simulator."""
        return any(s.result is not None and s.result.simulated for s in self.steps.values())

    @property
    def critical_path(self) -> list[str]:
        """The chain of dependent steps whose measured durations add up to the most."""
        return list(self._critical()[1])

    @property
    def critical_path_s(self) -> float:
        """Sum of measured durations along the critical path: the least wall time possible."""
        return float(self._critical()[0])

    @property
    def efficiency(self) -> float:
        """`critical_path_s / wall_s`: 1.0 means the scheduler added no waiting at all."""
        if self.wall_s <= 0:
            return 1.0
        return self.critical_path_s / self.wall_s

    def _critical(self) -> tuple[float, tuple[str, ...]]:
        if "critical" not in self._summary:
            finish: dict[str, float] = {}
            best_dep: dict[str, str | None] = {}
            for level in self.workflow.order():
                for step_id in level:
                    deps = self.workflow.step(step_id).dependencies
                    before = max(deps, key=lambda d: finish[d], default=None)
                    own = self.steps[step_id].duration_s if step_id in self.steps else 0.0
                    finish[step_id] = own + (finish[before] if before is not None else 0.0)
                    best_dep[step_id] = before
            end = max(finish, key=lambda k: finish[k])
            path: list[str] = []
            node: str | None = end
            while node is not None:
                path.append(node)
                node = best_dep[node]
            self._summary["critical"] = (finish[end], tuple(reversed(path)))
        result: tuple[float, tuple[str, ...]] = self._summary["critical"]
        return result

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per step: status, agent, model, timings, attempts, tokens, cost, error, wave."""
        import pandas as pd

        rows = []
        for step_id, s in self.steps.items():
            r = s.result
            rows.append(
                {
                    "step": step_id,
                    "agent": s.agent,
                    "model": r.model if r is not None else self.workflow.step(step_id).model,
                    "status": s.status,
                    "cached": s.cached,
                    "reused": s.reused,
                    "attempts": s.attempts,
                    "start_s": s.started_s if s.started_s is not None else math.nan,
                    "end_s": s.ended_s if s.ended_s is not None else math.nan,
                    "duration_s": s.duration_s,
                    "started_at": s.started_at,
                    "ended_at": s.ended_at,
                    "input_tokens": r.usage.input_tokens if r is not None else 0,
                    "output_tokens": r.usage.output_tokens if r is not None else 0,
                    "cache_read_tokens": r.usage.cache_read_tokens if r is not None else 0,
                    "cache_write_tokens": r.usage.cache_write_tokens if r is not None else 0,
                    "cost_usd": r.cost_usd
                    if r is not None and not s.reused
                    else (0.0 if r is not None else math.nan),
                    "backend": r.backend if r is not None else "",
                    "detail": s.detail,
                    "wave": s.wave,
                }
            )
        return pd.DataFrame(rows).astype({"wave": "Int64"})

    def timeline(self, ax: Axes | None = None) -> Axes:
        """A Gantt chart of the run (see `agentnb.plots.plot_timeline`)."""
        from ..plots import plot_timeline

        return plot_timeline(self, ax=ax)

    def raise_for_status(self) -> WorkflowRun:
        """Raise `WorkflowError` unless every step succeeded; return the run otherwise.

        The message lists the failed and skipped steps; `__cause__` is the first step error.
        """
        if self.status == "succeeded":
            return self
        failed = self.failed
        parts = []
        if failed:
            first = self.steps[failed[0]]
            parts.append(f"failed: {', '.join(failed)} (first: {first.detail})")
        if self.skipped:
            parts.append(f"skipped: {', '.join(self.skipped)}")
        if self.over_budget:
            parts.append(f"not started (budget): {', '.join(self.over_budget)}")
        cause = next((s.error for s in self.steps.values() if s.error is not None), None)
        raise WorkflowError(f"workflow {self.name!r} {self.status}; " + "; ".join(parts)) from cause

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready values: summary, outputs and every step."""
        return {
            "workflow": self.name,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "wall_s": self.wall_s,
            "critical_path_s": self.critical_path_s,
            "critical_path": self.critical_path,
            "efficiency": self.efficiency,
            "max_concurrency": self.max_concurrency,
            "simulated": self.simulated,
            "outputs": self.outputs,
            "steps": {k: s.to_dict() for k, s in self.steps.items()},
        }

    def to_json(self, **kwargs: Any) -> str:
        """`to_dict()` as JSON text (keyword arguments go to `json.dumps`; indent 2 by default)."""
        kwargs.setdefault("indent", 2)
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], workflow: Workflow) -> WorkflowRun:
        """Rebuild a run from `to_dict` output, e.g. to pass as `resume=` in a later session."""
        return cls(
            workflow=workflow,
            steps={k: StepResult.from_dict(v) for k, v in data["steps"].items()},
            started_at=datetime.fromisoformat(data["started_at"]),
            wall_s=float(data["wall_s"]),
            max_concurrency=data.get("max_concurrency"),
        )

    # -- display ----------------------------------------------------------------------------
    def _headline(self) -> str:
        counts: dict[str, int] = {}
        for s in self.steps.values():
            counts[s.status] = counts.get(s.status, 0) + 1
        tally = ", ".join(f"{n} {status}" for status, n in counts.items())
        sim = ", simulated" if self.simulated else ""
        return (
            f"workflow {self.name!r} {self.status}: {len(self.steps)} steps ({tally}); "
            f"wall {self.wall_s:.2f} s, critical path {self.critical_path_s:.2f} s, "
            f"efficiency {self.efficiency:.0%}{sim}"
        )

    def __repr__(self) -> str:
        return f"<WorkflowRun {self._headline()}>"

    def _text(self) -> str:
        lines = [self._headline()]
        width = max((len(k) for k in self.steps), default=0)
        for k, s in self.steps.items():
            detail = f"  {s.detail}" if s.detail else ""
            lines.append(f"  {k:<{width}}  {s.status:<9} {s.duration_s:7.2f} s{detail}")
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self) if cycle else self._text())

    def metadata(self) -> dict[str, Any]:
        """Provenance for display metadata and logs (like `AgentResult.metadata()`).

        `backend` is the backend that answered (several are joined with ", "; None when no
        step has an answer); each step has its agent, model, status and whether it was cached.
        """
        backends = sorted({s.result.backend for s in self.steps.values() if s.result is not None})
        return {
            "workflow": self.name,
            "backend": ", ".join(backends) if backends else None,
            "simulated": self.simulated,
            "steps": {
                k: {
                    "agent": s.agent,
                    "model": s.result.model
                    if s.result is not None
                    else self.workflow.step(k).model,
                    "cached": s.cached,
                    "status": s.status,
                }
                for k, s in self.steps.items()
            },
        }

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """The HTML table and the text, with `metadata()` as the display's `agentnb` metadata."""
        data = {"text/html": self._repr_html_(), "text/plain": self._text()}
        return data, {"agentnb": self.metadata()}

    def _repr_html_(self) -> str:
        esc = html.escape
        colours = {
            "succeeded": "#2a7a2a",
            "cached": "#1f5fa8",
            "failed": "#b22222",
            "skipped": "#777777",
            "budget": "#9a6700",
        }
        rows = []
        for k, s in self.steps.items():
            r = s.result
            tokens = f"{r.usage.input_tokens:,} / {r.usage.output_tokens:,}" if r else ""
            colour = colours.get(s.status, "#000000")
            rows.append(
                f"<tr><td><code>{esc(k)}</code></td><td>{esc(s.agent)}</td>"
                f"<td style='color:{colour}'>{esc(s.status)}</td>"
                f"<td style='text-align:right'>{s.duration_s:.2f} s</td>"
                f"<td style='text-align:right'>{s.attempts}</td>"
                f"<td style='text-align:right'>{tokens}</td><td>{esc(s.detail)}</td></tr>"
            )
        head = "".join(
            f"<th>{h}</th>"
            for h in (
                "step",
                "agent",
                "status",
                "duration",
                "attempts",
                "tokens in / out",
                "detail",
            )
        )
        return (
            f"<div><p>{esc(self._headline())}</p><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )
