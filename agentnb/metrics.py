"""Call records and what they add up to: what the orchestrator measured, as pandas DataFrames.

One `CallRecord` per agent call (success or failure, cache hit or not; retries are counted in
`attempts`). `PerformanceTracker` keeps them in memory; it is appended to on the home loop and
read from any thread. `summary(by=...)` aggregates them per agent, model or workflow. With a
`path` (the `metrics_path` setting) every record is also appended to a JSONL file by a
background thread (`agentnb._jsonl`), so a session's metrics survive a kernel restart. Costs
come from `agentnb.prices` (`agentnb.pricing`; `PriceTable` and `prices` are importable from
here too).

Example:
    >>> tracker = PerformanceTracker()
    >>> len(tracker), list(tracker.to_dataframe().columns[:3])
    (0, ['run_id', 'workflow', 'step'])
"""

from __future__ import annotations

import json
import math
import os
import weakref
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._jsonl import RESET, JsonlWriter, read_jsonl
from .errors import AgentnbError
from .pricing import PriceTable, prices

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "COLUMNS",
    "SUMMARY_COLUMNS",
    "CallRecord",
    "PerformanceTracker",
    "PriceTable",
    "prices",
    "summarize",
]


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


#: Column order of `PerformanceTracker.to_dataframe()`; pinned by the tests.
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CallRecord))

_DTYPES: dict[str, str] = {
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
}


#: Columns of `PerformanceTracker.summary()` after the grouping column; pinned by the tests.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "calls",
    "p50_latency_ms",
    "p95_latency_ms",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "cost_saved_usd",
    "unknown_cost_calls",
    "hit_rate",
    "error_rate",
)
_SUMMARY_DTYPES: dict[str, str] = {
    "calls": "int64",
    "p50_latency_ms": "float64",
    "p95_latency_ms": "float64",
    "input_tokens": "int64",
    "output_tokens": "int64",
    "cache_read_tokens": "int64",
    "cache_write_tokens": "int64",
    "cost_usd": "float64",
    "cost_saved_usd": "float64",
    "unknown_cost_calls": "int64",
    "hit_rate": "float64",
    "error_rate": "float64",
}
#: The columns `summary(by=...)` may group by.
SUMMARY_KEYS = ("agent", "model", "workflow", "step", "backend", "run_id")
_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
_NONE_LABEL = "(none)"


class PerformanceTracker:
    """Keeps every `CallRecord` of a session and hands them out as DataFrames.

    With `path`, the records already in that JSONL file are loaded first (everything after its
    last `reset()`), and every new record is appended to it by a background thread: `record()`
    only puts the record on a queue, so the home loop never waits for the disk. `flush()` waits
    until the queue is written; `close()` (also run at interpreter exit or when the tracker is
    garbage-collected) flushes and stops the thread. A line cut short by a crash is skipped on
    load (counted in `skipped_lines`).

    Example:
        >>> tracker = PerformanceTracker()
        >>> tracker.to_dataframe().shape
        (0, 19)
        >>> list(tracker.summary(by="agent").columns[:2])
        ['agent', 'calls']
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else None
        self.skipped_lines = 0
        self._records: list[CallRecord] = []
        self._writer: JsonlWriter[CallRecord] | None = None
        if self.path is not None:
            if self.path.exists():
                self._records, self.skipped_lines = read_jsonl(self.path, _decode)
            self._writer = JsonlWriter(self.path, _encode)
            weakref.finalize(self, self._writer.close)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PerformanceTracker:
        """A tracker holding the records of a metrics file, for analysis; it writes nothing.

        To go on appending to the file after a kernel restart, use `PerformanceTracker(path)`
        (or set `metrics_path`, which the orchestrator passes on).

        Example:
            >>> PerformanceTracker.load("metrics.jsonl").summary("model")   # doctest: +SKIP
        """
        p = Path(path).expanduser()
        if not p.is_file():
            raise AgentnbError(f"no metrics file at {p}")
        tracker = cls()
        tracker._records, tracker.skipped_lines = read_jsonl(p, _decode)
        return tracker

    def record(self, rec: CallRecord) -> None:
        """Add one record (called on the home loop; cheap: no I/O, never blocks)."""
        self._records.append(rec)
        if self._writer is not None:
            self._writer.put(rec)

    def extend(self, recs: Iterable[CallRecord]) -> None:
        """Add several records, in order."""
        for rec in recs:
            self.record(rec)

    @property
    def records(self) -> list[CallRecord]:
        """A snapshot of the records so far."""
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def reset(self) -> None:
        """Forget every record. With a path, a reset marker is appended: loading starts after it."""
        self._records = []
        if self._writer is not None:
            self._writer.put(RESET)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every record so far is in the file; False if `timeout` passed first.

        Call it from a notebook cell or a script, not from a coroutine on the home loop.
        """
        return True if self._writer is None else self._writer.flush(timeout)

    def close(self) -> None:
        """Flush and stop writing; later records are kept in memory only."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"PerformanceTracker(records={len(self._records)}{where})"

    def to_dataframe(self) -> pd.DataFrame:
        """One row per call, columns `COLUMNS`, stable dtypes even when empty."""
        import pandas as pd

        rows = [asdict(r) for r in self.records]
        df = pd.DataFrame(rows, columns=list(COLUMNS))
        # A fixed resolution: pandas would infer seconds for an empty column, µs otherwise.
        df["started_at"] = pd.to_datetime(df["started_at"], utc=True).astype("datetime64[us, UTC]")
        return df.astype(_DTYPES)

    def summary(self, by: str = "agent") -> pd.DataFrame:
        """One row per agent (or model, workflow, ...): see `summarize`.

        Example:
            >>> orch.tracker.summary(by="model")   # doctest: +SKIP
        """
        return summarize(self.to_dataframe(), by)


def summarize(metrics: pd.DataFrame, by: str = "agent") -> pd.DataFrame:
    """Aggregate a metrics frame (`PerformanceTracker.to_dataframe()`) per value of `by`.

    Columns: `by`, then `SUMMARY_COLUMNS`:
    - `calls`; `p50_latency_ms`, `p95_latency_ms` over every call (cache hits included: they
      are what the user waited for);
    - token sums over the calls that reached the backend (a cache hit bills nothing; what it
      saved is in `cost_saved_usd`);
    - `cost_usd`: sum of the known costs (NaN when none is known), with `unknown_cost_calls`
      counting the calls whose cost is NaN (a model with no price, or a failed call);
    - `hit_rate`, `error_rate`: shares of the calls.

    Calls with no workflow (or step, run) are grouped under "(none)". Rows are sorted by key.
    """
    import pandas as pd

    if by not in SUMMARY_KEYS:
        raise AgentnbError(f"summary(by={by!r}): choose one of {', '.join(SUMMARY_KEYS)}")
    key = metrics[by].astype("string").fillna(_NONE_LABEL)
    billed = ~metrics["cache_hit"].astype(bool)
    frame = pd.DataFrame(
        {
            "key": key,
            "latency_ms": metrics["latency_ms"],
            **{t: metrics[t].where(billed, 0) for t in _TOKENS},
            "cost_usd": metrics["cost_usd"],
            "cost_saved_usd": metrics["cost_saved_usd"],
            "unknown": metrics["cost_usd"].isna(),
            "hit": metrics["cache_hit"].astype(bool),
            "error": ~metrics["success"].astype(bool),
        }
    )
    g = frame.groupby("key", sort=True)
    out = pd.DataFrame(
        {
            "calls": g.size(),
            "p50_latency_ms": g["latency_ms"].quantile(0.5),
            "p95_latency_ms": g["latency_ms"].quantile(0.95),
            **{t: g[t].sum() for t in _TOKENS},
            "cost_usd": g["cost_usd"].sum(min_count=1),
            "cost_saved_usd": g["cost_saved_usd"].sum(),
            "unknown_cost_calls": g["unknown"].sum(),
            "hit_rate": g["hit"].mean(),
            "error_rate": g["error"].mean(),
        },
        columns=list(SUMMARY_COLUMNS),
    )
    out = out.rename_axis(by).reset_index()
    return out.astype({by: "string", **_SUMMARY_DTYPES})


# -- a record as one line of the metrics file ---------------------------------------------------

_FLOAT_FIELDS = frozenset(k for k, v in _DTYPES.items() if v == "float64")


def _encode(rec: CallRecord) -> bytes:
    data: dict[str, Any] = {}
    for name in COLUMNS:
        value = getattr(rec, name)
        if name == "started_at":
            value = value.isoformat()
        elif name in _FLOAT_FIELDS and math.isnan(value):
            value = None  # strict JSON has no NaN
        data[name] = value
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _decode(data: dict[str, Any]) -> CallRecord:
    values: dict[str, Any] = {}
    for name in COLUMNS:
        if name not in data:
            if name == "cost_saved_usd":
                continue  # older files; the dataclass default applies
            raise KeyError(name)
        value = data[name]
        kind = _DTYPES.get(name)
        if name == "started_at":
            value = datetime.fromisoformat(value)
        elif kind == "float64":
            value = math.nan if value is None else float(value)
        elif kind == "int64":
            value = int(value)
        elif kind == "bool":
            if not isinstance(value, bool):
                raise TypeError(name)
        elif value is not None and not isinstance(value, str):
            raise TypeError(name)
        values[name] = value
    return CallRecord(**values)
