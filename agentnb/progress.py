"""A live progress display for long jobs: done/total, a bar, rate, ETA, cost, cache hits, failures.

A job reports to one `Progress`: `started(n)` when calls go in flight, `finished(...)` as each
ends, `note(queued=...)` for extra live fields. Where it shows is its `mode`:

- "notebook": an HTML output updated in place, at most once per `min_interval_s`;
- "terminal": one line on `file` (stderr) rewritten with `\\r`, ended by a newline at close;
- "off": it counts (`snapshot` works) and shows nothing;
- "auto": notebook in a Jupyter kernel, terminal when `file` is a TTY, otherwise off.

Calls end on agentnb's loop thread and may end on others, so the counters sit behind a lock;
between two renders an event costs a clock read and a comparison. On an event loop a timer
shows what a burst's last events changed and keeps the elapsed time moving while calls run; off
a loop the display catches up at the next event or at `close()`. A render that fails is logged
once and the display stops there: the job never sees it.

In a notebook the live output starts empty and is emptied again at `close()`, which displays the
final state as an output of its own. That is for nbval, which records an output as first shown
while the saved notebook holds it as last updated: both then hold the same two outputs (their
times differ from run to run; `TIMES` matches them, for a sanitizer).

Example:
    >>> with Progress(2, mode="off") as p:
    ...     p.started(2)
    ...     p.finished(cost_usd=0.01)
    ...     p.finished(cached=True)
    >>> p.snapshot.done, p.snapshot.cached, p.snapshot.status
    (2, 1, 'done')
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TextIO, TypeVar

from ._fork import at_fork_in_child
from .errors import OptionError

__all__ = ["TIMES", "Progress", "ProgressSnapshot", "job_progress"]

logger = logging.getLogger("agentnb.progress")

MODES = ("auto", "notebook", "terminal", "off")
#: While calls run and nothing else happens, the elapsed time is refreshed this often (seconds).
TICK_S = 1.0
#: The times a progress shows (elapsed, rate, ETA), as a regex for nbval's sanitizer.
TIMES = r"\b\d+(?:\.\d+)? (?:s|calls/s)\b|\b\d+ min \d\d s\b|\b\d+ h \d\d min\b"
_BAR = 20  # characters of the terminal bar
_INF = math.inf

Note = int | float | str
T = TypeVar("T")


@dataclass(frozen=True)
class ProgressSnapshot:
    """A job's state at one moment; `status` is "running" until `Progress.close`."""

    total: int | None
    done: int  # calls ended, whatever their outcome: cached and failed ones count here too
    cached: int
    failed: int
    in_flight: int
    cost_usd: float
    elapsed_s: float
    status: str
    notes: Mapping[str, Note] = field(default_factory=dict)

    @property
    def rate_per_s(self) -> float:
        """Calls ended per second so far."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds until the rest is done at the rate so far (None: no total, or no rate yet)."""
        rate = self.rate_per_s
        return None if self.total is None or rate <= 0 else max(0, self.total - self.done) / rate


class Progress:
    """A live progress display for a job of `total` calls (None: unknown, or grown by `add_total`).

    Example:
        >>> p = Progress(3, mode="off", clock=iter([0.0, 2.0]).__next__)  # 0 s, then 2 s
        >>> p.finished(cost_usd=0.5)
        >>> now = p.snapshot
        >>> now.rate_per_s, now.eta_s
        (0.5, 4.0)
    """

    def __init__(
        self,
        total: int | None,
        *,
        label: str = "agentnb",
        mode: str = "auto",
        file: TextIO | None = None,
        min_interval_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in MODES:
            message = f"progress mode must be one of {', '.join(MODES)}, got {mode!r}"
            raise OptionError(message, option="mode", source="Progress")
        self.label = label
        self.mode = _resolve(mode, file)
        self._lock = threading.Lock()
        self._clock = clock
        self._interval = min_interval_s
        self._total = total
        self._grows = total is None  # see `expect`
        self._done = self._cached = self._failed = self._in_flight = 0
        self._cost = 0.0
        self._notes: dict[str, Note] = {}
        self._sources: list[Callable[[], Mapping[str, Note]]] = []
        self._status = "running"
        self._t0 = self._last = clock()
        self._t_end: float | None = None
        self._next = -math.inf  # the first event shows at once
        self._dirty = False  # something changed since the last render
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._view: _TerminalView | _NotebookView | None = None  # None: nothing (more) to show
        if self.mode != "off":
            self._view = self._guard(lambda: _VIEWS[self.mode](file))
        at_fork_in_child(self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a thread of the parent may have held it
        self._timer_loop = None  # its timer was on the parent's loop: the next event arms one

    # -- events (any thread) -------------------------------------------------------------------
    def started(self, n: int = 1) -> None:
        """`n` calls went in flight."""
        with self._lock:
            self._in_flight += n
            if self._view is not None:
                self._changed()

    def finished(
        self,
        *,
        cached: bool = False,
        failed: bool = False,
        cost_usd: float = 0.0,
        was_in_flight: bool = True,
    ) -> None:
        """One call ended; `cost_usd` is what it spent (NaN, unknown, is not added).

        `was_in_flight=False`: the call was never counted by `started` (a step reused from an
        earlier run, one skipped or cancelled before it began), so in flight stays as it is.
        """
        with self._lock:
            self._done += 1
            if cached:
                self._cached += 1
            if failed:
                self._failed += 1
            if was_in_flight and self._in_flight:  # never below 0, whatever the caller does
                self._in_flight -= 1
            if 0.0 < cost_usd < _INF:  # False for NaN
                self._cost += cost_usd
            if self._view is not None:
                self._changed()

    def note(self, **fields: Note | None) -> None:
        """Set extra live fields, shown as "name value" (`queued=12`); None removes one."""
        with self._lock:
            for name, value in fields.items():
                if value is None:
                    self._notes.pop(name, None)
                else:
                    self._notes[name] = value
            if self._view is not None:
                self._changed()

    def watch(self, source: Callable[[], Mapping[str, Note]]) -> None:
        """Show the fields `source()` returns with the notes, asked at each render (never when
        nothing shows): live state the job does not report as events, such as a quota's."""
        with self._lock:
            if source not in self._sources:  # a job of many chunks watches one source once
                self._sources.append(source)

    def add_total(self, n: int) -> None:
        """The job grew by `n` calls."""
        with self._lock:
            self._total = (self._total or 0) + n
            if self._view is not None:
                self._changed()

    def expect(self, n: int) -> None:
        """A job of `n` calls reports here: added to the total unless one was given at the start."""
        if self._grows:
            self.add_total(n)

    @property
    def total(self) -> int | None:
        """How many calls the job has (None: not known)."""
        return self._total

    @property
    def snapshot(self) -> ProgressSnapshot:
        """The state now (frozen by `close`)."""
        with self._lock:
            return self._snapshot(self._clock())

    # -- the end -------------------------------------------------------------------------------
    def close(self, status: str = "done") -> None:
        """Stop, and show the final state with `status` ("done", "interrupted", ...); only once."""
        with self._lock:
            if self._t_end is not None:
                return
            self._status = status
            self._t_end = end = self._clock()
            view, self._view = self._view, None
            if view is not None:
                self._guard(lambda: view.end(self.label, self._snapshot(end)))

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stopped = isinstance(exc, KeyboardInterrupt | asyncio.CancelledError)
        self.close("done" if exc is None else "interrupted" if stopped else "failed")

    # -- rendering (under the lock) ------------------------------------------------------------
    def _changed(self) -> None:  # callers test `self._view` first: all that "off" pays
        self._dirty = True
        now = self._clock()
        if now >= self._next:
            self._render(now)
        if self._timer_loop is None:
            self._arm()

    def _render(self, now: float) -> None:
        self._dirty = False
        self._next = now + self._interval
        self._last = now
        if (view := self._view) is not None:
            self._guard(lambda: view.show(self.label, self._snapshot(now)))

    def _arm(self) -> None:
        # The non-raising lookup: a thread without a loop asks on every event.
        loop = asyncio.events._get_running_loop()
        if loop is not None:  # without one, the next event or close() catches up
            self._timer_loop = loop
            loop.call_later(self._interval, self._on_timer)

    def _on_timer(self) -> None:
        with self._lock:
            self._timer_loop = None
            if self._view is None:
                return
            now = self._clock()
            if self._dirty or (self._in_flight and now >= self._last + TICK_S):
                self._render(now)
            if self._in_flight:
                self._arm()

    def _guard(self, work: Callable[[], T]) -> T | None:
        try:
            return work()
        except Exception:
            # A display that failed once (a closed file, a gone frontend) would fail ten times
            # a second and flood the log: it stops, and the counting goes on.
            logger.warning("progress display %r failed; it stops here", self.label, exc_info=True)
            self._view = None
            return None

    def _snapshot(self, now: float) -> ProgressSnapshot:
        end = now if self._t_end is None else self._t_end
        return ProgressSnapshot(
            total=self._total,
            done=self._done,
            cached=self._cached,
            failed=self._failed,
            in_flight=self._in_flight,
            cost_usd=self._cost,
            elapsed_s=max(0.0, end - self._t0),
            status=self._status,
            notes=self._live_notes(),
        )

    def _live_notes(self) -> dict[str, Note]:
        notes = dict(self._notes)
        for source in self._sources:
            try:
                notes.update(source())
            except Exception:  # a display never fails the job: the source stops showing
                logger.warning("progress source %r failed", source, exc_info=True)
                self._sources = [s for s in self._sources if s is not source]
        return notes


@contextmanager
def job_progress(
    progress: Progress | bool, total: int | None, *, label: str = "agentnb"
) -> Iterator[Progress]:
    """The `Progress` a job of `total` calls reports to, from its `progress=` argument.

    False: one that shows nothing; True: one shown where it can be ("auto"); both are closed
    with the job's status when it ends. A caller's own `Progress` is used as it is (see
    `Progress.expect`) and left open, so that one can follow several jobs.

    Example:
        >>> with job_progress(False, 2) as p:
        ...     p.finished()
        >>> p.snapshot.status
        'done'
    """
    if isinstance(progress, Progress):
        if total is not None:
            progress.expect(total)
        yield progress
        return
    with Progress(total, label=label, mode="auto" if progress else "off") as made:
        yield made


# -- where it shows ------------------------------------------------------------------------------
class _TerminalView:
    """One line on `file` (stderr by default), rewritten in place with a carriage return."""

    def __init__(self, file: TextIO | None) -> None:
        self._file = file
        self._width = 0  # of the last line: a shorter one blanks what that one leaves

    def show(self, label: str, snap: ProgressSnapshot, end: str = "") -> None:
        f = self._file or sys.stderr  # looked up each time: pytest and IPython swap sys.stderr
        line = _text(label, snap)
        if (columns := _columns(f)) and not end:  # a wrapped line cannot be redrawn with "\r"
            line = line[: columns - 1]
        f.write("\r" + line + " " * (self._width - len(line)) + end)
        f.flush()
        self._width = len(line)

    def end(self, label: str, snap: ProgressSnapshot) -> None:
        self.show(label, snap, "\n")


class _NotebookView:
    """A display_data output updated in place, which starts and ends empty (module docstring)."""

    def __init__(self, file: TextIO | None) -> None:
        self._handle = _display({}, raw=True, display_id=True)

    def show(self, label: str, snap: ProgressSnapshot) -> None:
        self._handle.update(_bundle(label, snap), raw=True)

    def end(self, label: str, snap: ProgressSnapshot) -> None:
        self._handle.update({}, raw=True)
        _display(_bundle(label, snap), raw=True)


_VIEWS: dict[str, type[_TerminalView | _NotebookView]] = {
    "terminal": _TerminalView,
    "notebook": _NotebookView,
}


def _display(*objs: Any, **kwargs: Any) -> Any:
    """IPython's `display`, imported only when a notebook view is made."""
    from IPython.display import display

    show: Callable[..., Any] = display  # it has no annotations
    return show(*objs, **kwargs)


def _resolve(mode: str, file: TextIO | None) -> str:
    if mode != "auto":
        return mode
    if file is None and _in_kernel():
        return "notebook"
    try:
        tty = (file or sys.stderr).isatty()
    except (AttributeError, ValueError):  # no stream at all, or a closed one
        tty = False
    return "terminal" if tty else "off"


def _in_kernel() -> bool:
    if "IPython" not in sys.modules:  # nothing imported it, so no kernel (and no import cost)
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


def _columns(f: TextIO) -> int:
    try:
        return os.get_terminal_size(f.fileno()).columns
    except (AttributeError, OSError, ValueError):  # not a terminal (io.UnsupportedOperation too)
        return 0


# -- what it shows -------------------------------------------------------------------------------
def _fraction(snap: ProgressSnapshot) -> float | None:
    if snap.total is None:
        return None
    return min(1.0, snap.done / snap.total) if snap.total > 0 else 1.0


def _fields(snap: ProgressSnapshot) -> list[str]:
    """What follows the count and the bar: times, cost, outcomes, notes, the final status."""
    fraction, running = _fraction(snap), snap.status == "running"
    out = [] if fraction is None else [f"{int(fraction * 100 + 1e-9)}%"]  # 0.29 * 100 < 29
    out.append(_duration(snap.elapsed_s))
    if snap.done:
        out.append(f"{snap.rate_per_s:.1f} calls/s")
    if running and snap.eta_s:  # None (unknown) or 0 (all done) would say nothing
        out.append(f"ETA {_duration(snap.eta_s)}")
    out.append(f"${snap.cost_usd:.4f}")
    counts = [(snap.cached, "cached"), (snap.failed, "failed"), (snap.in_flight, "in flight")]
    out += [f"{n} {what}" for n, what in counts[: 3 if running else 2] if n]
    out += [f"{name.replace('_', ' ')} {_value(v)}" for name, v in snap.notes.items()]
    return out if running else [*out, snap.status]


def _text(label: str, snap: ProgressSnapshot) -> str:
    parts = [label, _count(snap)]
    if (fraction := _fraction(snap)) is not None:
        filled = int(fraction * _BAR + 1e-9)
        parts.append("[" + "#" * filled + "-" * (_BAR - filled) + "]")
    return "  ".join(parts + _fields(snap))


def _bundle(label: str, snap: ProgressSnapshot) -> dict[str, str]:
    bar = ""
    if (fraction := _fraction(snap)) is not None:
        colour = {"running": "#1f5fa8", "done": "#2a7a2a"}.get(snap.status, "#b22222")
        bar = (
            "<span style='display:inline-block;width:12em;height:0.8em;background:#e0e0e0;"
            f"vertical-align:middle'><span style='display:block;height:100%;"
            f"width:{fraction * 100:.1f}%;background:{colour}'></span></span> "
        )
    fields = " &middot; ".join(html.escape(f) for f in _fields(snap))
    head = f"<b>{html.escape(label)}</b> {_count(snap)} "
    shown = f"<div style='font-family:monospace'>{head}{bar}{fields}</div>"
    return {"text/plain": _text(label, snap), "text/html": shown}


def _count(snap: ProgressSnapshot) -> str:
    return f"{snap.done}/{'?' if snap.total is None else snap.total}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _value(value: Note) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
