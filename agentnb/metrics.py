"""Call records and what they add up to: what the orchestrator measured, as pandas DataFrames.

One row per agent call (success or failure, cache hit or not; retries are counted in
`attempts`), a `CallRecord` when asked for one (`agentnb._rows`). `PerformanceTracker` keeps
the rows compactly in columns (`agentnb._columns`), spilling to a temporary file past a bound,
so a session of any length holds a bounded amount of memory; it is appended to from the home
loop and any other thread, and read from any thread. `summary(by=...)` aggregates per agent,
model or workflow. With a `path` (the `metrics_path` setting) every row is also appended to a
JSONL file by a background thread (`agentnb._jsonl`), so a session's metrics survive a kernel
restart; forked children (a `multiprocessing` pool's workers) append theirs to the same file.
Costs come from `agentnb.prices` (`agentnb.pricing`; `PriceTable` and `prices` are importable
from here too).

Example:
    >>> tracker = PerformanceTracker()
    >>> len(tracker), list(tracker.to_dataframe().columns[:3])
    (0, ['run_id', 'workflow', 'step'])
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._columns import ColumnStore
from ._fork import at_fork_in_child
from ._jsonl import RESET, JsonlWriter, read_jsonl
from ._rows import COLUMNS, DTYPES, KINDS, CallRecord, Row, from_json, records_of, row_of, to_json
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
    """Keeps every call of a session, compactly, and hands them out as DataFrames.

    `add(...)` takes one call's values in `COLUMNS` order, `started_at` as POSIX seconds
    (`time.time()`); it is the orchestrator's hot path (1 to 2 µs) and safe from any thread.
    `record(CallRecord)` does the same for a record. Rows are held in typed columns (about 115
    bytes a row); past `max_rows_in_memory` rows, full chunks go to a temporary file,
    so memory stays bounded however many calls a session makes. `records`, iteration and
    `to_dataframe()` give every row back, in order.

    With `path`, the records already in that JSONL file are loaded first (everything after its
    last `reset()`), and every new record is appended to it by a background thread: `add()`
    only puts the row on a queue, so the home loop never waits for the disk. `flush()` waits
    until the queue is written; `close()` (also run at interpreter exit or when the tracker is
    garbage-collected) flushes and stops the thread. A line cut short by a crash is skipped on
    load (counted in `skipped_lines`).

    Example:
        >>> tracker = PerformanceTracker()
        >>> tracker.add("r1", None, None, "writer", "m1", "simulated", 1.8e9, 120.0, 0.0, 1,
        ...             False, 10, 20, 0, 0, 0.01, True, None, 0.0)
        >>> tracker.to_dataframe().shape
        (1, 23)
        >>> list(tracker.summary(by="agent").columns[:2])
        ['agent', 'calls']
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, max_rows_in_memory: int = 50_000
    ) -> None:
        if max_rows_in_memory < 1:
            raise AgentnbError(f"max_rows_in_memory must be at least 1, not {max_rows_in_memory}")
        self.path = Path(path).expanduser() if path is not None else None
        self.skipped_lines = 0
        self._lock = threading.Lock()
        self._store = ColumnStore(KINDS, max_rows_in_memory)
        self._append = self._store.append  # bound once: `add` is the hot path
        self._writer: JsonlWriter[Row] | None = None
        if self.path is not None:
            if self.path.exists():
                self._read(self.path)
            self._writer = JsonlWriter(self.path, to_json)
            weakref.finalize(self, self._writer.close)
        at_fork_in_child(self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        # A thread of the parent may have held the lock, in the middle of changing the rows:
        # then the child starts with none of them (they are the parent's, and in its file).
        if self._lock.locked():
            self._store = ColumnStore(KINDS, self._store.max_rows)
            self._append = self._store.append
        self._lock = threading.Lock()

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
        tracker._read(p)
        return tracker

    def _read(self, path: Path) -> None:
        def add(data: dict[str, Any]) -> None:
            self._append(from_json(data))

        self.skipped_lines = read_jsonl(path, add, self._store.clear)

    def add(
        self,
        run_id: str | None,
        workflow: str | None,
        step: str | None,
        agent: str,
        model: str,
        backend: str,
        started_at: float,
        latency_ms: float,
        queue_ms: float,
        attempts: int,
        cache_hit: bool,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int,
        cache_write_tokens: int,
        cost_usd: float,
        success: bool,
        error_type: str | None,
        cost_saved_usd: float = 0.0,
        quota_wait_ms: float = 0.0,
        concurrency: int = 0,
        rate_limited: int = 0,
        batch_id: str | None = None,
    ) -> None:
        """Add one call, its values in `COLUMNS` order; `started_at` in POSIX seconds.

        Cheap and safe from any thread: no I/O, no conversion, it never waits for the disk.
        The values are checked when their batch is packed: a row that does not fit the
        columns (a datetime for `started_at`, say) is dropped with a logged warning.

        Example:
            >>> tracker = PerformanceTracker()
            >>> tracker.add("r1", "wf", "draft", "writer", "m1", "simulated", 1.8e9,
            ...             120.0, 0.0, 1, False, 10, 20, 0, 0, float("nan"), True, None, 0.0)
            >>> len(tracker)
            1
        """
        row = (run_id, workflow, step, agent, model, backend, started_at, latency_ms, queue_ms,
               attempts, cache_hit, input_tokens, output_tokens, cache_read_tokens,
               cache_write_tokens, cost_usd, success, error_type, cost_saved_usd,
               quota_wait_ms, concurrency, rate_limited, batch_id)  # fmt: skip
        with self._lock:
            # Both under the lock, so the file keeps the order the memory has.
            self._append(row)
            if self._writer is not None:
                self._writer.put(row)

    def record(self, rec: CallRecord) -> None:
        """Add one record (cheap: no I/O, never blocks); `add` skips making the record."""
        self.add(*row_of(rec))

    def extend(self, recs: Iterable[CallRecord]) -> None:
        """Add several records, in order."""
        for rec in recs:
            self.add(*row_of(rec))

    @property
    def records(self) -> list[CallRecord]:
        """A snapshot of the records so far (made on demand, a few µs a record)."""
        return list(self)

    def __iter__(self) -> Iterator[CallRecord]:
        """The records so far, made one chunk at a time; later calls are not included."""
        with self._lock:
            snapshot = self._store.snapshot()
        return records_of(snapshot)

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)

    @property
    def memory_bytes(self) -> int:
        """About how many bytes the rows take in memory (the spilled ones take none)."""
        with self._lock:
            return self._store.memory_bytes

    @property
    def spilled_rows(self) -> int:
        """How many rows are in the temporary file rather than in memory."""
        return self._store.spilled_rows

    def reset(self) -> None:
        """Forget every record. With a path, a reset marker is appended: loading starts after it."""
        with self._lock:
            self._store.clear()
            if self._writer is not None:
                self._writer.put(RESET)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every record so far is in the file; False if `timeout` passed first.

        Call it from a notebook cell or a script, not from a coroutine on the home loop.
        """
        writer = self._writer
        return True if writer is None else writer.flush(timeout)

    def close(self) -> None:
        """Flush and stop writing; later records are kept in memory only.

        The records stay readable: the temporary file of spilled rows goes with the tracker
        (or at `reset()`), not here.
        """
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"PerformanceTracker(records={len(self)}{where})"

    def to_dataframe(self) -> pd.DataFrame:
        """One row per call, columns `COLUMNS`, stable dtypes even when empty."""
        import numpy as np
        import pandas as pd

        with self._lock:
            snapshot = self._store.snapshot()
        parts: list[list[np.ndarray[Any, Any]]] = [[] for _ in COLUMNS]
        for chunk in snapshot:  # one spilled chunk in memory at a time
            for i, part in enumerate(parts):
                part.append(chunk.to_numpy(i))
        data = dict(zip(COLUMNS, map(np.concatenate, parts), strict=True))
        # Whole microseconds rounded as `datetime.fromtimestamp` does, so the frame, the records
        # and the file agree: split off the fraction first (seconds * 1e6 would lose digits).
        fraction, whole = np.modf(data["started_at"])
        micros = whole.astype(np.int64) * 1_000_000 + np.rint(fraction * 1e6).astype(np.int64)
        data["started_at"] = micros.astype("datetime64[us]")
        df = pd.DataFrame(data, columns=list(COLUMNS)).astype(DTYPES)
        df["started_at"] = df["started_at"].dt.tz_localize("UTC")  # a fixed dtype, even empty
        return df

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
