"""The progress display: counts, throttling, the terminal and notebook views, threads, the end."""

from __future__ import annotations

import asyncio
import io
import logging
import math
import re
import threading
from typing import Any

import pytest
from cache_helpers import FakeClock

from agentnb import progress as progress_module
from agentnb.errors import OptionError
from agentnb.progress import TIMES, Progress, ProgressSnapshot, job_progress


class TTY(io.StringIO):
    """A terminal that keeps what was written to it."""

    def isatty(self) -> bool:
        return True


class Handle:
    """IPython's DisplayHandle, keeping every update."""

    def __init__(self, bundle: dict[str, str]) -> None:
        self.updates = [bundle]

    def update(self, bundle: dict[str, str], *, raw: bool) -> None:
        assert raw
        self.updates.append(bundle)


class Frontend:
    """Stands for IPython's `display`: the outputs made, and the live handles."""

    def __init__(self) -> None:
        self.outputs: list[dict[str, str] | Handle] = []

    def __call__(self, bundle: dict[str, str], *, raw: bool, display_id: bool = False) -> Any:
        assert raw
        shown: dict[str, str] | Handle = Handle(bundle) if display_id else bundle
        self.outputs.append(shown)
        return shown


@pytest.fixture
def frontend(monkeypatch: pytest.MonkeyPatch) -> Frontend:
    shown = Frontend()
    monkeypatch.setattr(progress_module, "_display", shown)
    return shown


def terminal(total: int | None = 10, **kwargs: Any) -> tuple[Progress, io.StringIO, FakeClock]:
    clock = FakeClock(0.0)
    out = io.StringIO()
    return Progress(total, mode="terminal", file=out, clock=clock, **kwargs), out, clock


def lines(out: io.StringIO) -> list[str]:
    """The lines drawn so far, one per render (a final newline ends the last one)."""
    return [line.rstrip() for line in out.getvalue().split("\r")[1:]]


# -- counts --------------------------------------------------------------------------------------
def test_counts_and_cost_accumulate_and_unknown_costs_are_not_added() -> None:
    p = Progress(7, mode="off")
    p.started(4)
    p.finished(cost_usd=0.25)
    p.finished(cached=True, was_in_flight=False)  # say, reused from an earlier run
    assert p.snapshot.in_flight == 3
    p.finished(failed=True, cost_usd=math.nan)
    p.finished(failed=True, was_in_flight=False)  # cancelled before it began
    p.finished(cached=True, cost_usd=math.inf)
    assert p.snapshot.in_flight == 1
    p.finished(cost_usd=0.5)
    p.finished()  # one more than went in flight: in flight stays at 0
    snap = p.snapshot
    assert (snap.done, snap.cached, snap.failed, snap.in_flight) == (7, 2, 2, 0)
    assert snap.cost_usd == 0.75
    assert (snap.total, snap.status) == (7, "running")


def test_notes_are_shown_and_removed_with_none() -> None:
    p, out, _ = terminal()
    p.note(queued=12, batch_state="in_progress", share=0.25)
    assert p.snapshot.notes == {"queued": 12, "batch_state": "in_progress", "share": 0.25}
    assert "queued 12  batch state in_progress  share 0.25" in lines(out)[-1]
    p.note(queued=None)
    assert "queued" not in p.snapshot.notes


def test_the_total_grows_with_add_total_and_expect_keeps_a_given_one() -> None:
    unknown = Progress(None, mode="off")
    assert unknown.snapshot.eta_s is None
    unknown.expect(3)
    unknown.expect(4)
    unknown.add_total(1)
    assert unknown.total == 8
    given = Progress(5, mode="off")
    given.expect(3)
    assert given.total == 5


def test_snapshot_rate_and_eta_follow_the_clock() -> None:
    clock = FakeClock(100.0)
    p = Progress(20, mode="off", clock=clock)
    assert (p.snapshot.rate_per_s, p.snapshot.eta_s) == (0.0, None)  # no time, no rate yet
    for _ in range(5):
        p.finished()
    clock.advance(10.0)
    snap = p.snapshot
    assert (snap.elapsed_s, snap.rate_per_s, snap.eta_s) == (10.0, 0.5, 30.0)
    p.close()
    clock.advance(50.0)
    assert p.snapshot.elapsed_s == 10.0  # frozen at close


def test_snapshot_is_frozen() -> None:
    snap = Progress(1, mode="off").snapshot
    assert isinstance(snap, ProgressSnapshot)
    with pytest.raises(AttributeError):
        snap.done = 3  # type: ignore[misc]


# -- throttling and the terminal -----------------------------------------------------------------
def test_many_events_in_one_interval_render_once_and_the_next_interval_again() -> None:
    p, out, clock = terminal(100)
    for _ in range(50):
        p.finished()
    assert len(lines(out)) == 1  # the first event shows at once, the rest wait
    assert lines(out)[0].startswith("agentnb  1/100")
    clock.advance(0.05)
    p.finished()
    assert len(lines(out)) == 1
    clock.advance(0.05)
    p.finished()
    assert len(lines(out)) == 2
    assert lines(out)[1].startswith("agentnb  52/100")


def test_terminal_redraws_one_line_and_ends_it_at_close() -> None:
    p, out, clock = terminal(4, label="review")
    p.started(4)
    clock.advance(1.0)
    p.finished(cost_usd=0.0123)
    clock.advance(1.0)
    p.note(queued=2)
    clock.advance(1.0)
    p.note(queued=None)  # a shorter line blanks what the longer one left
    assert "\n" not in out.getvalue()
    live = lines(out)
    assert live[0] == "review  0/4  [--------------------]  0%  0.0 s  $0.0000  4 in flight"
    assert "ETA 3.0 s" in live[1] and "$0.0123" in live[1] and "3 in flight" in live[1]
    assert out.getvalue().split("\r")[-1].endswith(" " * len("  queued 2"))
    p.close()
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1
    final = lines(out)[-1]
    assert final.startswith("review  1/4  [#####---------------]  25%  3.0 s  0.3 calls/s")
    assert final.endswith("done") and "in flight" not in final and "ETA" not in final


def test_off_mode_writes_nothing() -> None:
    out = io.StringIO()
    with Progress(3, mode="off", file=out) as p:
        p.started(3)
        for _ in range(3):
            p.finished(cost_usd=1.0)
    assert out.getvalue() == ""
    assert p.mode == "off" and p.snapshot.cost_usd == 3.0


def test_close_is_idempotent_and_shows_its_status() -> None:
    p, out, _ = terminal(3)
    p.finished()
    p.close("interrupted")
    p.close("done")
    p.finished()  # counted, no longer shown
    assert p.snapshot.status == "interrupted" and p.snapshot.done == 2
    assert out.getvalue().count("\n") == 1
    assert lines(out)[-1].endswith("interrupted")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (KeyboardInterrupt, "interrupted"),
        (asyncio.CancelledError, "interrupted"),
        (ValueError, "failed"),
    ],
)
def test_an_exception_out_of_the_with_block_closes_with_what_happened(
    error: type[BaseException], status: str
) -> None:
    p, out, _ = terminal(2)
    with pytest.raises(error), p:
        p.finished()
        raise error
    assert p.snapshot.status == status
    assert lines(out)[-1].endswith(status) and out.getvalue().endswith("\n")


def test_times_in_the_output_are_what_TIMES_matches() -> None:
    def shown(elapsed: float) -> str:
        p, out, clock = terminal(1000)
        p.started(10)
        for _ in range(7):
            p.finished(cached=True, cost_usd=0.002)
        clock.advance(elapsed)
        p.close("budget")
        return lines(out)[-1]

    quick, slow, slower = shown(2.5), shown(754.0), shown(7300.0)
    assert "2.5 s" in quick and "12 min 34 s" in slow and "2 h 01 min" in slower
    assert quick != slow
    same = {re.sub(TIMES, "<t>", line) for line in (quick, slow, slower)}
    assert same == {
        "agentnb  7/1000  [--------------------]  0%  <t>  <t>  $0.0140  7 cached  budget"
    }


# -- the notebook --------------------------------------------------------------------------------
def test_notebook_updates_one_output_in_place_then_shows_the_final_state(
    frontend: Frontend,
) -> None:
    clock = FakeClock(0.0)
    p = Progress(3, label="batch", mode="notebook", clock=clock)
    assert len(frontend.outputs) == 1
    handle = frontend.outputs[0]
    assert isinstance(handle, Handle) and handle.updates == [{}]  # made empty (for nbval)
    p.started(3)
    for _ in range(2):
        clock.advance(0.2)
        p.finished(cost_usd=0.01)
    p.finished(failed=True)  # in the same interval: not shown live
    assert len(frontend.outputs) == 1  # still the one live output
    live = handle.updates[1:]
    assert [set(b) for b in live] == [{"text/plain", "text/html"}] * 3
    assert "batch" in live[-1]["text/html"] and "2/3" in live[-1]["text/html"]
    p.close()
    assert handle.updates[-1] == {}  # the live output gives way to the final one
    assert len(frontend.outputs) == 2
    final = frontend.outputs[1]
    assert isinstance(final, dict)
    assert "3/3" in final["text/html"] and "1 failed" in final["text/html"]
    assert final["text/plain"].startswith("batch  3/3  [####################]  100%")
    assert final["text/plain"].endswith("done")
    p.close()
    assert len(frontend.outputs) == 2 and handle.updates[-1] == {}


def test_notebook_html_has_nothing_that_changes_between_runs(frontend: Frontend) -> None:
    def final_html() -> str:
        p = Progress(2, label="<x>", mode="notebook", clock=FakeClock(0.0))
        p.finished()
        p.finished(cached=True)
        p.close()
        shown = frontend.outputs[-1]
        assert isinstance(shown, dict)
        return shown["text/html"]

    first, second = final_html(), final_html()
    assert first == second
    assert "&lt;x&gt;" in first and "<x>" not in first


def test_auto_mode_picks_the_kernel_then_a_tty_then_nothing(
    monkeypatch: pytest.MonkeyPatch, frontend: Frontend
) -> None:
    assert Progress(1, file=io.StringIO()).mode == "off"
    assert Progress(1).mode == "off"  # pytest's stderr is no terminal
    assert Progress(1, file=TTY()).mode == "terminal"
    monkeypatch.setattr(progress_module, "_in_kernel", lambda: True)
    assert Progress(1).mode == "notebook" and len(frontend.outputs) == 1
    assert Progress(1, file=TTY()).mode == "terminal"  # a file given is where it goes
    with pytest.raises(OptionError, match="progress mode"):
        Progress(1, mode="widget")


def test_job_progress_makes_and_closes_its_own_and_lends_a_given_one() -> None:
    with job_progress(False, 3) as off:
        off.finished()
    assert (off.mode, off.snapshot.status, off.total) == ("off", "done", 3)
    with pytest.raises(KeyboardInterrupt), job_progress(True, 3) as auto:
        raise KeyboardInterrupt
    assert (auto.mode, auto.snapshot.status) == ("off", "interrupted")  # auto, no terminal
    mine = Progress(None, mode="off")
    for size in (2, 3):
        with job_progress(mine, size, label="ignored") as lent:
            assert lent is mine
    assert (mine.total, mine.snapshot.status) == (5, "running")


# -- threads, timers, failures -------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["off", "terminal"])
def test_four_threads_count_exactly(mode: str) -> None:
    out = io.StringIO()
    p = Progress(40_000, mode=mode, file=out, min_interval_s=0.0)  # every event renders

    def work() -> None:
        for _ in range(10_000):
            p.started()
            p.finished(cached=True, cost_usd=0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = p.snapshot
    assert (snap.done, snap.cached, snap.in_flight, snap.cost_usd) == (40_000, 40_000, 0, 20_000.0)
    if mode == "terminal":
        drawn = [int(line.split()[1].split("/")[0]) for line in lines(out)]
        assert drawn == sorted(drawn) and drawn[-1] == 40_000  # never out of order


async def test_a_timer_shows_the_last_events_of_a_burst() -> None:
    p, out, _ = terminal(10, min_interval_s=0.01)
    p.started(2)  # shown at once
    p.finished()  # same instant by the fake clock: waits for the timer
    async with asyncio.timeout(10):  # a guard against a hang, not a speed limit
        while len(lines(out)) < 2:
            await asyncio.sleep(0.005)
    assert lines(out)[1].startswith("agentnb  1/10") and "1 in flight" in lines(out)[1]


async def test_the_elapsed_time_moves_while_calls_run() -> None:
    p, out, clock = terminal(10, min_interval_s=0.01)
    p.started()
    clock.advance(progress_module.TICK_S)  # no event: only the timer can show this
    async with asyncio.timeout(10):  # a guard against a hang, not a speed limit
        while "1.0 s" not in lines(out)[-1]:
            await asyncio.sleep(0.005)
    p.close()
    assert lines(out)[-1].startswith("agentnb  0/10") and lines(out)[-1].endswith("done")


def test_a_failing_display_is_logged_once_and_the_job_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("stderr is gone")

    clock = FakeClock(0.0)
    p = Progress(5, mode="terminal", file=Broken(), clock=clock)
    with caplog.at_level(logging.WARNING, logger="agentnb.progress"):
        for _ in range(5):
            p.finished()
            clock.advance(1.0)
        p.close()
    assert p.snapshot.done == 5 and p.snapshot.status == "done"
    assert len(caplog.records) == 1 and "stops here" in caplog.records[0].getMessage()


def test_a_failing_notebook_display_does_not_stop_the_job(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_frontend(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no frontend")

    monkeypatch.setattr(progress_module, "_display", no_frontend)
    with (
        caplog.at_level(logging.WARNING, logger="agentnb.progress"),
        Progress(2, mode="notebook") as p,
    ):
        p.finished()
    assert p.snapshot.done == 1 and len(caplog.records) == 1
