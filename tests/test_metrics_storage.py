"""The tracker's storage at scale: `add`, spilling past the memory bound, threads, snapshots."""

from __future__ import annotations

import json
import logging
import math
import threading
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_metrics import T0, known_records, rec

from agentnb import PerformanceTracker, _columns, _jsonl, _rows, metrics
from agentnb.errors import AgentnbError
from agentnb.metrics import COLUMNS

# -- add: the hot path, and what it keeps -------------------------------------------------------

T0_S = T0.timestamp()
AGENTS = ("writer", "critic", "python-expert")
# Row i takes its values from these 256-entry tables at `i & 255`: a small int, so building a
# row allocates nothing but the row (tracemalloc, tracing every allocation, stays fast).
_K = range(256)
RUNS = [f"run-{k}" for k in _K]  # at `i >> 10`: a run every 1,024 rows
WORKFLOWS = ["wf" if k % 2 else None for k in _K]
AGENT_OF = [AGENTS[k % 3] for k in _K]
SECONDS = [T0_S + k for k in _K]
LATENCY = [float(k) for k in _K]
COST = [math.nan if k % 11 == 0 else k / 1e6 for k in _K]
ERROR = ["ServerError" if k % 11 == 0 else None for k in _K]


def add_rows(tracker: PerformanceTracker, start: int, stop: int, agent: str | None = None) -> None:
    """Synthetic calls `start..stop` through `add`: row i has `input_tokens == i`."""
    add = tracker.add
    for i in range(start, stop):
        k = i & 255
        add(
            RUNS[i >> 10],
            WORKFLOWS[k],
            None,
            agent or AGENT_OF[k],
            "m1",
            "simulated",
            SECONDS[k],
            LATENCY[k],
            0.5,
            1,
            k % 5 == 0,
            i,
            k,
            0,
            0,
            COST[k],
            k % 11 != 0,
            ERROR[k],
            0.0,
        )


def expected_row(i: int) -> dict[str, Any]:
    """Row i of `add_rows`, as `to_dataframe()` gives it."""
    k = i & 255
    return {
        "run_id": f"run-{i >> 10}",
        "workflow": "wf" if k % 2 else pd.NA,
        "step": pd.NA,
        "agent": AGENTS[k % 3],
        "started_at": pd.Timestamp(T0) + pd.Timedelta(seconds=k),
        "latency_ms": float(k),
        "cache_hit": k % 5 == 0,
        "input_tokens": i,
        "output_tokens": k,
        "cost_usd": math.nan if k % 11 == 0 else k / 1e6,
        "success": k % 11 != 0,
        "error_type": "ServerError" if k % 11 == 0 else pd.NA,
    }


def assert_row(df: pd.DataFrame, i: int) -> None:
    got = df.iloc[i]
    for name, want in expected_row(i).items():
        if want is pd.NA:
            assert pd.isna(got[name]), (i, name)
        elif isinstance(want, float) and math.isnan(want):
            assert math.isnan(got[name]), (i, name)
        else:
            assert got[name] == want, (i, name, got[name])


def test_add_and_record_keep_the_same_row() -> None:
    by_add, by_record = PerformanceTracker(), PerformanceTracker()
    for r in known_records():
        by_add.add(
            r.run_id, r.workflow, r.step, r.agent, r.model, r.backend, r.started_at.timestamp(),
            r.latency_ms, r.queue_ms, r.attempts, r.cache_hit, r.input_tokens, r.output_tokens,
            r.cache_read_tokens, r.cache_write_tokens, r.cost_usd, r.success, r.error_type,
            r.cost_saved_usd, r.quota_wait_ms, r.concurrency, r.rate_limited, r.batch_id,
        )  # fmt: skip
        by_record.record(r)
    pd.testing.assert_frame_equal(by_add.to_dataframe(), by_record.to_dataframe())
    # Field by field: a NaN cost is not equal to itself, so records holding one never compare ==.
    for records in (by_add.records, by_record.records, list(by_add)):
        for got, want in zip(records, known_records(), strict=True):
            for name in COLUMNS:
                a, b = getattr(got, name), getattr(want, name)
                assert a == b or (a != a and b != b), name


def test_started_at_keeps_whole_microseconds_and_utc() -> None:
    tracker = PerformanceTracker()
    when = datetime(2026, 11, 1, 12, 0, 0, 123457, tzinfo=UTC)
    tracker.record(rec(started_at=when))
    tracker.record(rec(started_at=when.replace(tzinfo=None)))  # naive: taken as UTC
    row = list(_rows.row_of(rec()))
    row[COLUMNS.index("started_at")] = T0_S + 4e-7  # time.time() has sub-microsecond digits
    tracker.add(*row)
    assert [r.started_at for r in tracker.records] == [when, when, T0]
    assert all(r.started_at.tzinfo is UTC for r in tracker.records)
    assert list(tracker.to_dataframe()["started_at"]) == [pd.Timestamp(when)] * 2 + [
        pd.Timestamp(T0)
    ]


@given(st.lists(st.floats(min_value=0, max_value=2**33), min_size=1, max_size=20))
def test_the_frame_the_records_and_the_file_round_started_at_alike(seconds: list[float]) -> None:
    tracker = PerformanceTracker()
    row = list(_rows.row_of(rec()))
    for t in seconds:
        row[COLUMNS.index("started_at")] = t  # time.time() has digits past the microsecond
        tracker.add(*row)
    in_records = [r.started_at for r in tracker.records]
    assert [ts.to_pydatetime() for ts in tracker.to_dataframe()["started_at"]] == in_records
    in_file = []
    for t in seconds:
        row[COLUMNS.index("started_at")] = t
        in_file.append(json.loads(_jsonl.dumps_line(_rows.to_json(tuple(row))))["started_at"])
    assert in_file == [when.isoformat() for when in in_records]


def test_rows_past_the_memory_bound_spill_and_come_back_in_order() -> None:
    tracker = PerformanceTracker(max_rows_in_memory=1_000)
    add_rows(tracker, 0, 4_321)
    assert len(tracker) == 4_321
    assert 3_000 <= tracker.spilled_rows < 4_321  # full chunks went to the file
    df = tracker.to_dataframe()
    assert list(df["input_tokens"]) == list(range(4_321))
    for i in (0, 999, 1_000, 2_500, 4_320):
        assert_row(df, i)
    records = tracker.records
    assert [r.input_tokens for r in records] == list(range(4_321))
    k = 1_234 & 255
    assert records[1_234].agent == AGENTS[k % 3] and records[1_234].run_id == "run-1"
    assert records[1_234].started_at == T0 + pd.Timedelta(seconds=k)
    tracker.reset()  # the spilled rows go too
    assert len(tracker) == 0 and tracker.spilled_rows == 0 and tracker.to_dataframe().empty
    add_rows(tracker, 0, 1_500)
    assert list(tracker.to_dataframe()["input_tokens"]) == list(range(1_500))


def test_a_snapshot_is_not_changed_by_later_calls_or_a_reset() -> None:
    tracker = PerformanceTracker(max_rows_in_memory=500)
    add_rows(tracker, 0, 1_200)
    records = iter(tracker)  # taken now, read below
    add_rows(tracker, 1_200, 1_300)
    tracker.reset()
    add_rows(tracker, 5_000, 5_010)
    assert [r.input_tokens for r in records] == list(range(1_200))
    assert [r.input_tokens for r in tracker] == list(range(5_000, 5_010))


def test_the_trackers_memory_stays_bounded_over_200000_synthetic_records() -> None:
    tracker = PerformanceTracker()  # as sessions get it: 50,000 rows in memory at most
    own = [tracemalloc.Filter(True, m.__file__ or "") for m in (metrics, _columns)]

    def held() -> int:
        """Bytes the tracker's own code allocated and still holds."""
        snapshot = tracemalloc.take_snapshot().filter_traces(own)
        return sum(stat.size for stat in snapshot.statistics("filename"))

    tracemalloc.start()
    try:
        add_rows(tracker, 0, 100_000)
        at_100k, peak_100k = held(), tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        add_rows(tracker, 100_000, 200_000)
        at_200k, peak_200k = held(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    in_memory = len(tracker) - tracker.spilled_rows
    assert tracker.spilled_rows >= 150_000 and in_memory <= 50_000 + 256
    # ~114 bytes a row in memory (7 string codes, 10 numbers, 2 bools); a CallRecord was ~3 KB.
    assert at_200k < 8_000_000 and at_200k / in_memory < 150
    assert at_200k <= 1.1 * at_100k and peak_200k <= 1.1 * peak_100k
    assert abs(tracker.memory_bytes - at_200k) <= 0.2 * at_200k  # the estimate is honest

    df = tracker.to_dataframe()
    assert len(df) == 200_000
    np.testing.assert_array_equal(df["input_tokens"].to_numpy(), np.arange(200_000))
    for i in (0, 1, 49_999, 50_000, 100_000, 150_000, 199_999):  # a chunk holds 50,000
        assert_row(df, i)


def test_threads_add_concurrently_and_lose_nothing() -> None:
    threads, per_thread = 4, 50_000
    tracker = PerformanceTracker(max_rows_in_memory=7_000)  # many spills while they race
    start = threading.Barrier(threads + 1)
    sizes: list[int] = []

    def writer(k: int) -> None:
        start.wait()
        add_rows(tracker, 0, per_thread, agent=f"thread-{k}")

    def reader() -> None:
        start.wait()
        while len(sizes) < 50 and (n := len(tracker)) < threads * per_thread:
            sizes.append(n)

    workers = [threading.Thread(target=writer, args=(k,)) for k in range(threads)]
    workers.append(threading.Thread(target=reader))
    for w in workers:
        w.start()
    mid = tracker.to_dataframe()  # a snapshot while they race: every thread's rows a prefix
    for w in workers:
        w.join(timeout=60)
    assert sizes == sorted(sizes)
    for _, rows in mid.groupby("agent"):
        assert list(rows["input_tokens"]) == list(range(len(rows)))

    assert len(tracker) == threads * per_thread
    df = tracker.to_dataframe()
    assert len(df) == threads * per_thread
    for k in range(threads):
        mine = df[df["agent"] == f"thread-{k}"]
        np.testing.assert_array_equal(mine["input_tokens"].to_numpy(), np.arange(per_thread))
        # and each row's values stayed together
        np.testing.assert_array_equal(mine["output_tokens"], np.arange(per_thread) & 255)


def test_a_row_that_does_not_fit_is_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker = PerformanceTracker()
    add_rows(tracker, 0, 3)
    row = list(_rows.row_of(rec(agent="bad")))
    row[_rows.COLUMNS.index("started_at")] = T0  # a datetime where POSIX seconds belong
    with caplog.at_level(logging.WARNING, logger="agentnb.metrics"):
        tracker.add(*row)
        add_rows(tracker, 3, 5)
        df = tracker.to_dataframe()
    assert list(df["input_tokens"]) == [0, 1, 2, 3, 4]  # the others are kept, in order
    assert "dropped a row" in caplog.text


def test_max_rows_in_memory_must_be_positive() -> None:
    with pytest.raises(AgentnbError, match="max_rows_in_memory"):
        PerformanceTracker(max_rows_in_memory=0)


# -- the metrics file ---------------------------------------------------------------------------


def test_added_rows_persist_and_reload_past_the_memory_bound(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    tracker = PerformanceTracker(path, max_rows_in_memory=1_000)
    add_rows(tracker, 0, 2_500)
    assert tracker.flush()
    again = PerformanceTracker(path, max_rows_in_memory=1_000)  # as after a kernel restart
    assert again.spilled_rows >= 1_000  # loading streams through the store: bounded too
    pd.testing.assert_frame_equal(again.to_dataframe(), tracker.to_dataframe())
    tracker.close()
    again.close()


def test_a_file_written_before_add_existed_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    line = {name: getattr(rec(), name) for name in COLUMNS if name != "cost_saved_usd"}
    line["started_at"] = "2026-11-01T13:00:00+01:00"  # the same instant as T0
    line["cost_usd"] = None  # a NaN, as json wrote it
    path.write_text(json.dumps(line) + "\n" + json.dumps({"x": 1}) + "\n")
    loaded = PerformanceTracker.load(path)
    (only,) = loaded.records
    assert only.started_at == T0 and math.isnan(only.cost_usd) and only.cost_saved_usd == 0.0
    assert loaded.skipped_lines == 1
