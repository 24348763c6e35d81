"""What the magics show while they work: streamed answers, live workflow progress, plans, plots.

In a kernel (a frontend is attached) the live outputs are display_data outputs updated in place
(`display(..., display_id=True)` then `update_display_data` messages), at most ten times a
second. When the magic ends normally the live output gives way to the cell's value (the
`AgentResult` or `WorkflowRun`), which shows the final state, and leaves no empty output behind:

- when the magic is alone in its cell (a cell magic, or one `%agent ...` / `r = %agent ...`
  line), the live output shows the value's own display (with its provenance metadata) and is
  then cleared with `clear_output(wait=True)`, so the cell's value takes its place; if the value
  is not displayed (an assignment), the live output stays as its final display;
- when other code shares the cell, clearing would erase that code's outputs too, so the live
  output is emptied instead (updated to a bundle without data, which frontends show as nothing).

After an error or an interrupt the last state stays visible. In a terminal shell updates cannot
be made in place, so a stream is printed as it comes and a workflow prints one line per finished
step.

Example:
    >>> progress = WorkflowProgress(workflow, live=True)          # doctest: +SKIP
    >>> run = orch.run_workflow(workflow, progress=progress.on_event)   # doctest: +SKIP
    >>> progress.finish()                                          # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import html
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from IPython.display import clear_output, display

from ..workflow import StepEvent, Workflow, WorkflowRun

if TYPE_CHECKING:
    from ..orchestrator import AgentStream
    from ..result import AgentResult

__all__ = [
    "WorkflowPlan",
    "WorkflowProgress",
    "settings_frame",
    "show_figure",
    "stream_answer",
]

#: Shortest time between two in-place updates of a live output, in seconds.
UPDATE_INTERVAL_S = 0.1
#: While steps run, their elapsed time is refreshed this often, in seconds.
TICK_S = 1.0
FINAL_STATUSES = ("succeeded", "cached", "failed", "skipped", "budget")
_COLOURS = {
    "waiting": "#777777",
    "running": "#b8860b",
    "succeeded": "#2a7a2a",
    "cached": "#1f5fa8",
    "failed": "#b22222",
    "skipped": "#777777",
    "budget": "#9a6700",
}


#: How the shell displays a value: `(data, metadata)`, as `shell.display_formatter.format`.
Render = Callable[[Any], tuple[dict[str, Any], dict[str, Any]]]


class _Output:
    """One display_data output that is updated in place (IPython's DisplayHandle, typed)."""

    def __init__(self, bundle: dict[str, str], metadata: dict[str, Any] | None = None) -> None:
        self._metadata = metadata or {}
        self._handle: Any = _display(bundle, raw=True, display_id=True, metadata=self._metadata)

    def update(self, bundle: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        """Replace what the output shows (and its metadata: the initial one unless given)."""
        shown = self._metadata if metadata is None else metadata
        self._handle.update(bundle, raw=True, metadata=shown)

    def give_way(self, value: Any, render: Render | None) -> None:
        """The magic ended normally: make room for `value`, the cell's value (module docstring).

        `render` is given when the magic is alone in its cell: the output then shows `value`
        and is cleared when the next output (normally `value` itself) arrives. Without it the
        output is emptied, so that the cell's other outputs stay.
        """
        if render is None:
            self.update({}, {})
            return
        data, metadata = render(value)
        self.update(data, metadata)
        _clear_output(wait=True)


_display: Callable[..., Any] = display  # IPython's display() has no annotations
_clear_output: Callable[..., None] = clear_output


# -- one streamed answer -------------------------------------------------------------------------
def stream_answer(stream: AgentStream, *, live: bool, render: Render | None = None) -> AgentResult:
    """Show `stream` as it arrives and return its result.

    `live`: update one text output in place (a kernel), which then gives way to the result
    (`render`: see `_Output.give_way`); otherwise print the chunks to stdout. Text that arrived
    before an error or an interrupt stays visible.
    """
    if not live:
        for chunk in stream:
            sys.stdout.write(chunk)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        handle: _Output | None = None  # made with the first text, so an early error shows alone
        parts: list[str] = []
        last = 0.0
        try:
            for chunk in stream:
                parts.append(chunk)
                now = time.monotonic()
                if handle is None:
                    handle = _Output({"text/plain": "".join(parts)})
                    last = now
                elif now - last >= UPDATE_INTERVAL_S:
                    handle.update({"text/plain": "".join(parts)})
                    last = now
        except BaseException:
            if handle is not None:
                handle.update({"text/plain": "".join(parts)})
            raise
    assert stream.result is not None  # the stream ended with "done"
    if live and handle is not None:
        handle.give_way(stream.result, render)
    return stream.result


# -- live workflow progress ----------------------------------------------------------------------
class WorkflowProgress:
    """Follows a workflow run through its `StepEvent`s and shows one row per step.

    `on_event` is the `progress=` callback of `run_workflow`; it is called on agentnb's loop
    thread, so rendering is throttled and guarded by a lock. `finish(run)` (after a normal end)
    makes the live output give way to the run (`render`: see `_Output.give_way`); `stop()`
    (after an interrupt or error) leaves the last state shown.
    """

    def __init__(
        self,
        workflow: Workflow,
        *,
        live: bool,
        quiet: bool = False,
        render: Render | None = None,
    ) -> None:
        self.workflow = workflow
        self.live = live and not quiet
        self.quiet = quiet
        self.render = render
        self._t0 = time.perf_counter()  # corrected to the scheduler's own start by its events
        self._events: dict[str, StepEvent] = {}
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._last = time.monotonic()  # the first render shows the initial state
        self._timer: asyncio.TimerHandle | None = None
        self._width = max(len(s.id) for s in workflow.steps)
        # Made with the first event, so a workflow refused before it starts leaves no output.
        self._handle: _Output | None = None

    # -- events (agentnb's loop thread) -------------------------------------------------------
    def on_event(self, event: StepEvent) -> None:
        with self._lock:
            if not self._events:
                self._t0 = time.perf_counter() - event.at
            self._events[event.step_id] = event
            if event.status == "running":
                self._started[event.step_id] = event.at
            if self._closed or self.quiet:
                return
            line = None if self.live else self._line(event.step_id)
        if self.live:
            self._schedule()
        elif event.status in FINAL_STATUSES:
            print(line, flush=True)

    def _schedule(self) -> None:
        wait = self._last + UPDATE_INTERVAL_S - time.monotonic()
        if wait <= 0 or self._handle is None:
            self._render()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._render()

    def _render(self) -> None:
        with self._lock:
            if self._closed or not self.live:
                return
            if self._handle is None:
                metadata = {"agentnb": {"workflow": self.workflow.name, "live": True}}
                self._handle = _Output(self._bundle(), metadata)
            else:
                self._handle.update(self._bundle())
            self._last = time.monotonic()
            running = any(e.status == "running" for e in self._events.values())
        if running and self._timer is None:  # keep the elapsed times of running steps moving
            self._timer = asyncio.get_running_loop().call_later(TICK_S, self._tick)

    # -- the end (the cell's thread) ----------------------------------------------------------
    def finish(self, run: WorkflowRun) -> None:
        """The run ended normally: the live output gives way to `run`, the cell's value."""
        with self._lock:
            self._closed = True
            if self._handle is not None:
                self._handle.give_way(run, self.render)

    def stop(self, note: str) -> None:
        """The run was interrupted or failed: show its last state with `note`, stop updating."""
        with self._lock:
            self._closed = True
            if self._handle is not None:
                self._handle.update(self._bundle(note))

    # -- rendering ----------------------------------------------------------------------------
    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def _row(self, step_id: str) -> tuple[str, str, float | None, str]:
        step = self.workflow.step(step_id)
        event = self._events.get(step_id)
        status = event.status if event is not None else "waiting"
        start = self._started.get(step_id)
        elapsed: float | None = None
        if status == "running" and start is not None:
            elapsed = max(0.0, self._now() - start)
        elif event is not None and status in FINAL_STATUSES:
            elapsed = max(0.0, event.at - start) if start is not None else 0.0
        detail = ""
        if event is not None and event.error is not None:
            detail = f"{type(event.error).__name__}: {event.error}"
        elif event is not None and event.reason:
            detail = event.reason
        return step.agent, status, elapsed, detail

    def _line(self, step_id: str) -> str:
        _, status, elapsed, detail = self._row(step_id)
        seconds = f"{elapsed:6.2f} s" if elapsed is not None else " " * 8
        return f"  {step_id:<{self._width}}  {status:<9} {seconds}  {detail}".rstrip()

    def _headline(self) -> str:
        done = sum(1 for e in self._events.values() if e.status in FINAL_STATUSES)
        return (
            f"workflow {self.workflow.name!r}: {done}/{len(self.workflow.steps)} steps finished, "
            f"{self._now():.1f} s"
        )

    def _bundle(self, note: str = "") -> dict[str, str]:
        head = self._headline() + (f" - {note}" if note else "")
        text = "\n".join([head, *(self._line(s.id) for s in self.workflow.steps)])
        esc = html.escape
        rows = []
        for step in self.workflow.steps:
            agent, status, elapsed, detail = self._row(step.id)
            seconds = f"{elapsed:.2f} s" if elapsed is not None else ""
            rows.append(
                f"<tr><td><code>{esc(step.id)}</code></td><td>{esc(agent)}</td>"
                f"<td style='color:{_COLOURS.get(status, '#000')}'>{esc(status)}</td>"
                f"<td style='text-align:right'>{seconds}</td><td>{esc(detail)}</td></tr>"
            )
        table = (
            f"<div><p>{esc(head)}</p><table><thead><tr><th>step</th><th>agent</th>"
            f"<th>status</th><th>elapsed</th><th>detail</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )
        return {"text/plain": text, "text/html": table}


# -- --dry-run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkflowPlan:
    """What `%%workflow --dry-run` shows: the checked workflow's stages and dependencies."""

    workflow: Workflow

    def _rows(self) -> list[tuple[int, str, str, str, str]]:
        wf = self.workflow
        rows = []
        for stage, ids in enumerate(wf.order(), 1):
            for step_id in ids:
                step = wf.step(step_id)
                rows.append(
                    (
                        stage,
                        step_id,
                        step.agent,
                        ", ".join(step.dependencies),
                        ", ".join(wf.free_names(step_id)),
                    )
                )
        return rows

    def _headline(self) -> str:
        wf = self.workflow
        stages = len(wf.order())
        return (
            f"workflow {wf.name!r} is valid: {len(wf.steps)} steps in {stages} "
            f"stage{'s' if stages != 1 else ''}; nothing was run (--dry-run)"
        )

    def __repr__(self) -> str:
        lines = [self._headline()]
        for stage, ids in enumerate(self.workflow.order(), 1):
            parts = []
            for step_id in ids:
                step = self.workflow.step(step_id)
                after = f" <- {', '.join(step.dependencies)}" if step.dependencies else ""
                parts.append(f"{step_id} ({step.agent}){after}")
            lines.append(f"  stage {stage}: " + "; ".join(parts))
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        esc = html.escape
        body = "".join(
            f"<tr><td>{stage}</td><td><code>{esc(step)}</code></td><td>{esc(agent)}</td>"
            f"<td>{esc(deps)}</td><td>{esc(names)}</td></tr>"
            for stage, step, agent, deps, names in self._rows()
        )
        return (
            f"<div><p>{esc(self._headline())}</p><table><thead><tr><th>stage</th><th>step</th>"
            f"<th>agent</th><th>after</th><th>uses</th></tr></thead><tbody>{body}</tbody>"
            f"</table></div>"
        )


# -- helpers for %agentnb -----------------------------------------------------------------------
def show_figure(fig: Any) -> None:
    """Display a pyplot figure once (the inline backend would show it again at cell end)."""
    import matplotlib.pyplot as plt

    _display(fig)
    plt.close(fig)


def settings_frame(settings: Mapping[str, tuple[Any, str]]) -> Any:
    """`%agentnb config`: one row per setting, its value and where it came from."""
    import pandas as pd

    rows = [{"setting": n, "value": str(v), "source": src} for n, (v, src) in settings.items()]
    return pd.DataFrame(rows).set_index("setting")
