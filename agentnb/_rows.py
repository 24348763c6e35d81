"""One agent call as a row: the `CallRecord` dataclass, and the forms the tracker keeps it in.

The tracker's hot path takes a call as a plain tuple of values in `COLUMNS` order, `started_at`
as POSIX seconds (a `Row`); `CallRecord` (with a `datetime`) is made only when asked for. This
module turns one form into the other: `row_of(record)`, `records_of(chunks)`, and a row to and
from its object in the metrics file (`to_json`, `from_json`, whose format is that of every
earlier version). `KINDS` is each column's kind in the `ColumnStore` (`agentnb._columns`).

Example:
    >>> row = from_json({"run_id": None, "workflow": None, "step": None, "agent": "a",
    ...     "model": "m", "backend": "simulated", "started_at": "2026-11-01T12:00:00+00:00",
    ...     "latency_ms": 5.0, "queue_ms": 0.0, "attempts": 1, "cache_hit": False,
    ...     "input_tokens": 1, "output_tokens": 2, "cache_read_tokens": 0,
    ...     "cache_write_tokens": 0, "cost_usd": None, "success": True, "error_type": None})
    >>> row[3], row[6], row[-2], row[-1], to_json(row)["started_at"]
    ('a', 1793534400.0, 0, None, '2026-11-01T12:00:00+00:00')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from ._columns import Chunk

__all__ = ["COLUMNS", "DTYPES", "KINDS", "CallRecord", "Row", "from_json", "records_of",
           "row_of", "to_json"]  # fmt: skip


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One agent call as measured by the orchestrator."""

    run_id: str | None
    workflow: str | None
    step: str | None
    agent: str
    model: str
    backend: str
    started_at: datetime
    latency_ms: float
    queue_ms: float
    attempts: int
    cache_hit: bool
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    success: bool
    error_type: str | None
    cost_saved_usd: float = 0.0
    quota_wait_ms: float = 0.0
    concurrency: int = 0
    rate_limited: int = 0
    batch_id: str | None = None


#: Column order of a row and of `PerformanceTracker.to_dataframe()`; pinned by the tests.
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CallRecord))

#: The pandas dtype of each column but `started_at` (datetime64[us, UTC]).
DTYPES: dict[str, str] = {
    "run_id": "string",
    "workflow": "string",
    "step": "string",
    "agent": "string",
    "model": "string",
    "backend": "string",
    "latency_ms": "float64",
    "queue_ms": "float64",
    "attempts": "int64",
    "cache_hit": "bool",
    "input_tokens": "int64",
    "output_tokens": "int64",
    "cache_read_tokens": "int64",
    "cache_write_tokens": "int64",
    "cost_usd": "float64",
    "success": "bool",
    "error_type": "string",
    "cost_saved_usd": "float64",
    "quota_wait_ms": "float64",
    "concurrency": "int64",
    "rate_limited": "int64",
    "batch_id": "string",
}


#: One call's values in `COLUMNS` order, `started_at` in POSIX seconds.
Row = tuple[Any, ...]
_STARTED = COLUMNS.index("started_at")
_KIND_OF = {"string": "s", "float64": "d", "int64": "q", "bool": "?"}
#: Each column's kind in the store: "s" str or None, "d" float, "q" int, "?" bool.
KINDS = "".join("d" if name == "started_at" else _KIND_OF[DTYPES[name]] for name in COLUMNS)
_fields_of = attrgetter(*COLUMNS)


def _timestamp(when: datetime) -> float:
    # A naive datetime is taken as UTC, as pandas did with the datetimes themselves.
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


def row_of(rec: CallRecord) -> Row:
    """The row of a record."""
    values = list(_fields_of(rec))
    values[_STARTED] = _timestamp(values[_STARTED])
    return tuple(values)


def records_of(chunks: Iterable[Chunk]) -> Iterator[CallRecord]:
    """The records of some chunks of rows, made one chunk at a time."""
    for chunk in chunks:
        columns = [chunk.values(i) for i in range(len(COLUMNS))]
        # The same whole microseconds as `to_dataframe` (fromtimestamp rounds to the nearest).
        columns[_STARTED] = [datetime.fromtimestamp(t, UTC) for t in columns[_STARTED]]
        yield from map(CallRecord, *columns)


def to_json(row: Row) -> dict[str, Any]:
    """A row as its object in the metrics file (`agentnb._jsonl.dumps_line` writes it)."""
    data = dict(zip(COLUMNS, row, strict=True))
    data["started_at"] = datetime.fromtimestamp(row[_STARTED], UTC).isoformat()
    return data  # a NaN cost becomes null: strict JSON has no NaN


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _strict_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("not a bool")
    return value


def _float_or_nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _iso_timestamp(value: Any) -> float:
    return _timestamp(datetime.fromisoformat(value))


_PARSE: dict[str, Callable[[Any], Any]] = {
    "s": _optional_str,
    "d": _float_or_nan,
    "q": int,
    "?": _strict_bool,
}
_DECODERS = tuple(
    (name, _iso_timestamp if name == "started_at" else _PARSE[kind])
    for name, kind in zip(COLUMNS, KINDS, strict=True)
)


#: Columns added after the first metrics files were written, with the value older rows get.
_LATER_DEFAULTS: dict[str, Any] = {
    "cost_saved_usd": 0.0,
    "quota_wait_ms": 0.0,
    "concurrency": 0,
    "rate_limited": 0,
    "batch_id": None,
}


def from_json(data: dict[str, Any]) -> Row:
    """A row from its object in the metrics file; ValueError, TypeError or KeyError if unfit."""
    if "batch_id" not in data or "cost_saved_usd" not in data:  # older files: the defaults
        data = {**_LATER_DEFAULTS, **data}
    return tuple(parse(data[name]) for name, parse in _DECODERS)
