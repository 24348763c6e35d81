"""The column store: typed columns, string codes per chunk, spilling, snapshots, odd values."""

from __future__ import annotations

import gc
import logging
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentnb import _columns
from agentnb._columns import ColumnStore

KINDS = "sdq?"


def stored(store: ColumnStore) -> list[tuple[Any, ...]]:
    """Every row of the store, as Python values, in order."""
    rows: list[tuple[Any, ...]] = []
    for chunk in store.snapshot():
        rows.extend(zip(*(chunk.values(i) for i in range(len(store.kinds))), strict=True))
    return rows


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_rows_come_back_in_order_across_spilled_chunks() -> None:
    store = ColumnStore(KINDS, max_rows=300)
    rows = [(f"name-{i % 7}" if i % 4 else None, i / 3, i * 1_000_003, i % 2 == 0)
            for i in range(1_000)]  # fmt: skip
    for row in rows:
        store.append(row)
    assert len(store) == 1_000 and store.spilled_rows in (600, 900)  # full chunks only
    assert stored(store) == rows


def test_each_chunk_has_its_own_string_table() -> None:
    # A value on every row (a run id per call, say) stays bounded: its table spills with its chunk.
    store = ColumnStore("s", max_rows=100)
    for i in range(1_000):
        store.append((f"unique-{i}",))
    tables = [len(chunk.strings) for chunk in store.snapshot()]
    assert max(tables) <= _columns._BATCH + 1  # None, and what one batch brought
    assert [v for (v,) in stored(store)] == [f"unique-{i}" for i in range(1_000)]


def test_numpy_columns_have_the_right_dtypes() -> None:
    store = ColumnStore(KINDS, max_rows=2)
    for row in [("a", 1.5, 2, True), (None, -0.5, -3, False), ("a", 2.0, 4, True)]:
        store.append(row)
    chunks = list(store.snapshot())
    column = [np.concatenate([c.to_numpy(i) for c in chunks]) for i in range(4)]
    assert [str(c.dtype) for c in column] == ["object", "float64", "int64", "bool"]
    assert list(column[0]) == ["a", None, "a"] and list(column[3]) == [True, False, True]
    assert list(column[2]) == [2, -3, 4]


def test_values_that_fit_after_conversion_are_kept() -> None:
    store = ColumnStore(KINDS)
    store.append(("a", np.float32(1.5), np.int64(7), np.True_))
    store.append(("b", Decimal("2.25"), True, 1))
    assert stored(store) == [("a", 1.5, 7, True), ("b", 2.25, 1, True)]


@pytest.mark.parametrize(
    "bad",
    [
        (1, 1.0, 1, True),  # not a str
        ("a", "1.5", 1, True),  # a str where a number belongs
        ("a", 1.0, 2.5, True),  # a float where an int belongs
        ("a", 1.0, 2**63, True),  # too big for 8 bytes
        ("a", 1.0, 1, None),  # not a bool
        ("a", 1.0, 1),  # a value short
    ],
)
def test_a_row_that_does_not_fit_is_dropped_and_the_others_kept(
    bad: tuple[Any, ...], caplog: pytest.LogCaptureFixture
) -> None:
    store = ColumnStore(KINDS)
    with caplog.at_level(logging.WARNING, logger="agentnb.metrics"):
        for row in [("x", 0.0, 0, False), bad, ("y", 1.0, 1, True)]:
            store.append(row)
        rows = stored(store)
    assert rows == [("x", 0.0, 0, False), ("y", 1.0, 1, True)]
    assert "dropped a row" in caplog.text


def test_a_spill_that_cannot_be_written_keeps_the_rows_in_memory(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def disk_full(self: object, chunk: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_columns._SpillFile, "write", disk_full)
    store = ColumnStore("q", max_rows=10)
    with caplog.at_level(logging.WARNING, logger="agentnb.metrics"):
        for i in range(100):
            store.append((i,))
        rows = stored(store)
    assert rows == [(i,) for i in range(100)] and store.spilled_rows == 0
    assert caplog.text.count("cannot spill") == 1  # once, not per chunk
    assert store.memory_bytes > 100 * 8


def test_a_snapshot_outlives_clear_and_the_spill_file_goes_with_the_last_reader() -> None:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("counts open files through /proc")
    gc.collect()
    before = open_files()
    store = ColumnStore("q", max_rows=10)
    for i in range(25):
        store.append((i,))
    snapshot = store.snapshot()
    assert open_files() == before + 1  # the spill file, made on the first spill
    store.clear()
    assert len(store) == 0 and store.spilled_rows == 0 and stored(store) == []
    assert [v for chunk in snapshot for v in chunk.values(0)] == list(range(25))
    del snapshot
    gc.collect()
    assert open_files() == before


def test_memory_bytes_tracks_the_rows_in_memory() -> None:
    bound = 4 * _columns._BATCH
    store = ColumnStore(KINDS, max_rows=bound)
    empty = store.memory_bytes
    packed = 3 * _columns._BATCH  # whole batches: every row is in the columns
    for i in range(packed):
        store.append(("a", float(i), i, True))
    full = store.memory_bytes
    assert packed * 21 <= full - empty <= packed * 30  # 4 + 8 + 8 + 1 bytes a row, and slack
    store.append(("a", 1.0, 1, True))  # a row waiting as a tuple costs more, for a moment
    assert store.memory_bytes > full
    for i in range(bound - packed - 1):
        store.append(("a", float(i), i, True))
    assert store.spilled_rows == bound and store.memory_bytes < full / 4


def test_kinds_and_bound_are_checked() -> None:
    with pytest.raises(ValueError, match="kinds"):
        ColumnStore("sx")
    with pytest.raises(ValueError, match="max_rows"):
        ColumnStore("s", max_rows=0)
