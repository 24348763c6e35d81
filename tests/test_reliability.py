"""The reliability probes of the benchmark suite (`bench --reliability`).

Whether the goals are met is the benchmark's business, not these tests': they check that the
smoke run prints every row, and that each probe's checking code can fail, by feeding it a
deliberately broken condition (a row served untampered, a key in a log line, a bad input that
runs a call, a retry policy that ignores the server's hint, a worker that hangs) and seeing its
row report met=False. No wall-clock assertion.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from agentnb.__main__ import main
from agentnb.backends.simulated import CallRecord
from agentnb.bench_suite import _reliability, _reliability_fork, _reliability_redis
from agentnb.bench_suite._common import Section
from agentnb.bench_suite._reliability_cases import BadInput, InputContext
from agentnb.bench_suite._reliability_faults import bench_faults, retry_after_margins
from agentnb.bench_suite._reliability_fork import bench_fork
from agentnb.bench_suite._reliability_inputs import bench_inputs
from agentnb.bench_suite._reliability_kill import bench_kills
from agentnb.bench_suite._reliability_secrets import bench_secrets
from agentnb.bench_suite._reliability_tamper import TAMPERS, bench_tamper
from agentnb.bench_suite._suite import SuiteRun, render
from agentnb.errors import AgentnbError, BackendError
from agentnb.orchestrator import Retrying

#: The rows of the reliability table, in order (the figure column).
FIGURES = [
    "calls completed under 20 % mixed faults",
    "retry-after undercut",
    "SIGKILLs survived",
    "tampered rows refused",
    "Redis kills survived",
    "bad inputs refused with one clear message, nothing run",
    "forked children that completed",
    "fake-key occurrences across every output surface",
]
HEADER = "| figure | tried | n | held | detail | goal | met |"


def test_the_smoke_run_completes_and_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--reliability", "--smoke"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("## agentnb bench (smoke: reliability)")
    headings = [line for line in out.splitlines() if line.startswith("### ")]
    assert len(headings) == 2 and headings[0].startswith("### Reliability:")
    assert headings[1].startswith("### Goals:")
    lines = out.splitlines()
    at = lines.index(HEADER)
    rows = [line for line in lines[at + 2 : at + 2 + len(FIGURES)] if line.startswith("| ")]
    assert [r.split(" | ")[0].removeprefix("| ") for r in rows] == FIGURES
    for row in rows:
        assert row.count(" | ") == HEADER.count(" | ")
        met = row.rstrip(" |").rsplit(" | ", 1)[1]
        assert met in {"yes", "**NO**"}, row
    goals = out.split("### Goals:")[1]
    assert re.match(r" (\d+) of 8 met", goals)
    for figure in FIGURES:
        assert f"| reliability | {figure} |" in goals
    if "**NO**" in out.split("### Goals:")[0]:
        assert "Did not hold:" in out  # a missed goal names what did not hold
    assert "reliability: bad inputs ..." in err  # progress, per probe


def test_what_did_not_hold_is_listed_under_the_table() -> None:
    rows: list[dict[str, Any]] = [
        {"figure": "f", "n": 2, "goal": "all", "met": False, "_failures": ["case a", "case b"]},
        {"figure": "g", "n": 1, "goal": "all", "met": True},
    ]
    where = {"implementation": "CPython", "python": "3", "home_loop": "asyncio", "cpus": 2}
    environment = {"mode": "smoke", "platform": "Linux", **where}
    run = SuiteRun("smoke", [Section("reliability", "R", "note", rows)], environment)
    text = render(run)
    table_end = text.index("| g | 1 | all | yes |")
    listed = text.index("Did not hold:\n\n- f:\n  - case a\n  - case b")
    assert table_end < listed < text.index("### Goals:")
    assert "_failures" not in text


# -- each probe's checking code can fail ----------------------------------------------------------


def test_a_row_that_is_served_untampered_is_reported() -> None:
    def nothing(conn: sqlite3.Connection, key: str, other: str) -> None:
        pass

    kinds = {"no tampering at all": nothing, "HMAC NULL": TAMPERS["HMAC NULL"]}
    [row] = bench_tamper(kinds, unsigned={})
    assert row["met"] is False and row["n"] == 2
    assert row["_failures"] == ["no tampering at all: served 1 of 1, 0 integrity failures counted"]
    [good] = bench_tamper({"HMAC NULL": TAMPERS["HMAC NULL"]}, unsigned={})
    assert good["met"] is True and "_failures" not in good


def test_a_key_planted_in_a_log_record_is_found() -> None:
    def plant(key: str) -> None:
        # Nested in a field of the record, which a structured (JSON) formatter would write out;
        # the message and string fields are redacted (agentnb and the SDK never log such a
        # structure, so the redactor does not walk into one).
        logging.getLogger("agentnb.bench").debug("calling", extra={"auth": {"header": key}})

    [row] = bench_secrets(plant=plant)
    assert row["met"] is False
    assert [f.split(":")[0] for f in row["_failures"]] == ["log records"]


def test_a_bad_input_that_runs_a_call_is_reported_by_name() -> None:
    def multi_line(c: InputContext) -> None:
        raise AgentnbError("first line\nsecond line")

    def not_ours(c: InputContext) -> None:
        raise ValueError("a bug")

    cases = [
        BadInput("an empty task", "task", lambda c: c.orch.execute_agent("writer", "")),
        BadInput("a fine call", "task", lambda c: c.orch.execute_agent("writer", "fine")),
        BadInput("a two-line message", "task", multi_line),
        BadInput("a ValueError", "task", not_ours),
        BadInput("cli empty task", "cli", argv=["--simulate", "agent", "writer", ""]),
        BadInput("cli fine call", "cli", argv=["--simulate", "agent", "writer", "fine"]),
    ]
    [row] = bench_inputs(cases, at_least=1)
    assert row["met"] is False and row["n"] == 6 and row["held"] == "2 of 6 held"
    failures = dict(f.split(": ", 1) for f in row["_failures"])
    assert failures == {
        "a fine call": "accepted; 1 call(s) ran",
        "a two-line message": "AgentnbError with a message of 2 lines",
        "a ValueError": "ValueError (not an AgentnbError): a bug",
        "cli fine call": failures["cli fine call"],
    }
    assert failures["cli fine call"].startswith("exit status 0; stderr of ")
    assert failures["cli fine call"].endswith("printed to stdout; 1 call(s) ran")
    [held] = bench_inputs(cases[:1] + cases[4:5], at_least=1)
    assert held["met"] is True and "_failures" not in held


def test_the_corpus_holds_at_least_100_inputs_of_every_kind(tmp_path: Path) -> None:
    from agentnb.bench_suite._reliability_inputs import corpus

    cases = corpus(tmp_path)
    assert len(cases) >= 100 and len({c.name for c in cases}) == len(cases)
    kinds = {c.kind for c in cases}
    assert kinds == {"option", "task", "agent name", "workflow", "agent file", "config", "cli"}
    assert all((c.call is None) == (c.kind == "cli") for c in cases)


class IgnoresHints(Retrying):
    """A retry policy that never waits for the server's retry-after."""

    def backoff(self, attempt: int, error: BackendError) -> float:
        return 0.001


class GivesUpAtOnce(Retrying):
    """A retry policy that never retries."""

    def give_up_if_final(
        self, agent: str, attempt: int, max_attempts: int, error: BackendError, final: bool
    ) -> None:
        super().give_up_if_final(agent, attempt, 1, error, final)


def policy(cls: type[Retrying]) -> Retrying:
    return cls(backoff_base_s=0.01, backoff_cap_s=0.05, max_retry_wait_s=5.0)


def test_a_retry_that_undercuts_the_hint_is_reported() -> None:
    completed, undercut = bench_faults(30, retrying=policy(IgnoresHints))
    assert completed["met"] is True  # every call completes all the same
    assert undercut["met"] is False and undercut["held"].split()[0] != "0"
    assert undercut["_failures"][0].startswith("retry ")


def test_calls_that_fail_before_their_attempts_are_used_up_are_reported() -> None:
    completed, _ = bench_faults(30, retrying=policy(GivesUpAtOnce))
    assert completed["met"] is False
    # The first six calls get the injected faults: each fails after one attempt of ten.
    assert len(completed["_failures"]) >= 6
    assert "AgentCallError" in completed["_failures"][0]


def test_retry_after_margins_of_a_call_log() -> None:
    def rec(task: str, started: float, ended: float, request_id: str) -> CallRecord:
        return CallRecord(
            "writer", "m", task, started, ended, False, "rate_limit", False, request_id
        )

    log = [
        rec("t1", 0.0, 0.1, "r1"),
        rec("t2", 0.0, 0.1, "r2"),
        rec("t1", 0.35, 0.4, "r3"),  # 0.25 s after r1 ended, r1 asked for 0.2 s
        rec("t2", 0.25, 0.3, "r4"),  # 0.15 s after r2 ended, r2 asked for 0.2 s: undercut
        rec("t1", 0.5, 0.6, "r5"),  # r3 carried no hint
    ]
    margins = retry_after_margins(log, {"r1": 0.2, "r2": 0.2, "r5": 0.2})
    assert margins == pytest.approx([0.05, -0.05])


def test_a_spoilt_row_after_a_kill_is_reported() -> None:
    def spoil(cache_dir: Path) -> None:
        conn = sqlite3.connect(cache_dir / "responses.db", isolation_level=None)
        try:
            conn.execute("UPDATE entries SET value = substr(value, 2)")  # every row, cut
        finally:
            conn.close()

    [row] = bench_kills(1, after_kill=spoil, seed=1)
    assert row["met"] is False and row["n"] == 2
    assert any("rows dropped as bad" in f for f in row["_failures"]), row["_failures"]


def hang(task: str) -> dict[str, Any]:
    time.sleep(30)
    return {}


def test_a_worker_that_hangs_shows_as_did_not_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_reliability_fork, "fork_call", hang)
    [row] = bench_fork(2, timeout_s=0.5)
    assert row["met"] is False and row["held"] == "0 of 2 completed"
    assert row["_failures"] == [f"task {i}: did not complete within 0.5 s" for i in range(2)]


def test_no_redis_server_is_a_row_that_is_not_met(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_reliability_redis, "find_redis_server", lambda: None)
    [row] = _reliability_redis.bench_redis(5)
    assert row["met"] is False and row["held"].startswith("not run: no redis-server")


def test_a_probe_that_raises_is_a_row_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ["bench_faults", "bench_kills", "bench_redis", "bench_inputs", "bench_fork"]
    for name in names:
        monkeypatch.setattr(_reliability, name, lambda *a, **k: [{"figure": "stub"}])

    def broken(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise RuntimeError("probe bug")

    monkeypatch.setattr(_reliability, "bench_tamper", broken)
    monkeypatch.setattr(_reliability, "bench_secrets", broken)
    rows = _reliability.bench_reliability(smoke=True)
    assert [r["figure"] for r in rows] == [
        "stub",
        "stub",
        "tampered rows",
        "stub",
        "stub",
        "stub",
        "a fake key on every output surface",
    ]
    assert rows[2]["met"] is False
    assert rows[2]["held"] == "the probe raised RuntimeError: probe bug"
