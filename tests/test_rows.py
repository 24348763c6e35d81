"""A call as a row: record <-> row <-> metrics-file object, exact to the microsecond."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentnb._columns import ColumnStore
from agentnb._rows import COLUMNS, KINDS, CallRecord, from_json, records_of, row_of, to_json

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def record(**changes: Any) -> CallRecord:
    values: dict[str, Any] = {
        "run_id": "r1", "workflow": "wf", "step": None, "agent": "a", "model": "m1",
        "backend": "simulated", "started_at": T0, "latency_ms": 100.0, "queue_ms": 1.5,
        "attempts": 1, "cache_hit": False, "input_tokens": 10, "output_tokens": 20,
        "cache_read_tokens": 3, "cache_write_tokens": 4, "cost_usd": math.nan,
        "success": True, "error_type": None, "cost_saved_usd": 0.25,
    }  # fmt: skip
    return CallRecord(**{**values, **changes})


def through_the_store(*recs: CallRecord) -> list[CallRecord]:
    store = ColumnStore(KINDS, max_rows=2)
    for rec in recs:
        store.append(row_of(rec))
    return list(records_of(store.snapshot()))


def same(a: CallRecord, b: CallRecord) -> bool:
    """Equal field by field, a NaN equal to a NaN."""
    pairs = ((getattr(a, n), getattr(b, n)) for n in COLUMNS)
    return all(x == y or (x != x and y != y) for x, y in pairs)


def test_kinds_follow_the_columns() -> None:
    assert KINDS == "ssssssdddq?qqqqd?sddqqs" and len(KINDS) == len(COLUMNS)


def test_a_record_comes_back_from_the_store_unchanged() -> None:
    recs = [record(), record(agent="b", cache_hit=True, cost_usd=0.0), record(step="s"),
            record(quota_wait_ms=40.0, concurrency=3, rate_limited=2),
            record(batch_id="msgbatch_01")]  # fmt: skip
    assert all(same(a, b) for a, b in zip(through_the_store(*recs), recs, strict=True))


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7, minutes=-30))]),
    )
)
def test_started_at_survives_to_the_microsecond(when: datetime) -> None:
    (back,) = through_the_store(record(started_at=when))
    assert back.started_at == when and back.started_at.tzinfo is UTC
    assert from_json(to_json(row_of(record(started_at=when))))[6] == when.timestamp()


def test_the_file_object_is_the_old_format() -> None:
    data = to_json(row_of(record()))
    assert list(data) == list(COLUMNS)
    assert data["started_at"] == T0.isoformat() and math.isnan(data["cost_usd"])
    assert data["cache_hit"] is False and data["input_tokens"] == 10


def test_lines_of_older_files_still_load() -> None:
    old = to_json(row_of(record()))
    del old["cost_saved_usd"]  # before cost_saved_usd existed
    old["started_at"] = "2026-11-01T14:00:00+02:00"  # a local offset
    old["cost_usd"] = None  # how a NaN is written
    row = from_json(old)
    assert row[6] == T0.timestamp() and row[-5] == 0.0 and math.isnan(row[15])
    del old["batch_id"]  # before batch_id existed
    assert from_json(old)[-1] is None


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"agent": 5}, TypeError),
        ({"cache_hit": 1}, TypeError),
        ({"started_at": "yesterday"}, ValueError),
        ({"input_tokens": "many"}, ValueError),
    ],
)
def test_an_unfit_line_is_refused(change: dict[str, Any], error: type[Exception]) -> None:
    data = {**to_json(row_of(record())), **change}
    with pytest.raises(error):
        from_json(data)
    del data["agent"]
    with pytest.raises(KeyError):
        from_json(data)
