"""Call records, prices and cost: what the orchestrator measured, as pandas DataFrames.

One `CallRecord` per agent call (success or failure, cache hit or not; retries are counted in
`attempts`). `PerformanceTracker` keeps them in memory; it is appended to on the home loop and
read from any thread. `summary(by=...)` aggregates them per agent, model or workflow. With a
`path` (the `metrics_path` setting) every record is also appended to a JSONL file by a
background thread, so a session's metrics survive a kernel restart. Prices live in
`agentnb/data/prices.yaml`, loaded into `agentnb.prices` (a `PriceTable`), which a user may
update without code changes.

Example:
    >>> from agentnb.backends.base import Usage
    >>> prices = PriceTable.default()
    >>> round(prices.cost("claude-sonnet-5-5", Usage(input_tokens=1_000_000)), 2)
    2.0
    >>> prices.cost("some-unknown-model", Usage(input_tokens=10))
    nan
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .backends.base import Usage
from .errors import AgentnbError, ConfigError

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

logger = logging.getLogger("agentnb.metrics")

PRICE_FIELDS = ("input", "output", "cache_write", "cache_read")


class PriceTable:
    """Per-model prices (USD per million tokens) and the cost of a call's usage."""

    def __init__(self, table: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self._table: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        if table:
            self.update(table)

    @classmethod
    def default(cls) -> PriceTable:
        """The prices shipped in `agentnb/data/prices.yaml`."""
        text = resources.files("agentnb").joinpath("data/prices.yaml").read_text(encoding="utf-8")
        return cls(_parse_prices(yaml.safe_load(text), source="agentnb/data/prices.yaml"))

    def load(self, path: str | os.PathLike[str]) -> None:
        """Merge prices from a YAML file shaped like the shipped one (`models: {id: {...}}`)."""
        p = Path(path)
        self.update(_parse_prices(yaml.safe_load(p.read_text(encoding="utf-8")), source=str(p)))

    def update(self, table: Mapping[str, Mapping[str, float]]) -> None:
        """Set or replace the prices of some models: `{model: {input, output, ...}}`."""
        parsed = _parse_prices({"models": dict(table)}, source="PriceTable.update")
        with self._lock:
            self._table.update(parsed)

    def get(self, model: str) -> dict[str, float] | None:
        """The prices of `model`, or None when it is not known."""
        return self._table.get(model)

    def __contains__(self, model: object) -> bool:
        return model in self._table

    def cost(self, model: str, usage: Usage) -> float:
        """USD cost of `usage` on `model`; NaN (never 0) for a model with no price."""
        p = self._table.get(model)
        if p is None:
            return math.nan
        return (
            usage.input_tokens * p["input"]
            + usage.output_tokens * p["output"]
            + usage.cache_write_tokens * p["cache_write"]
            + usage.cache_read_tokens * p["cache_read"]
        ) / 1_000_000

    def to_dataframe(self) -> pd.DataFrame:
        import pandas as pd

        rows = [{"model": m, **p} for m, p in sorted(self._table.items())]
        return pd.DataFrame(rows, columns=["model", *PRICE_FIELDS])


def _parse_prices(data: Any, *, source: str) -> dict[str, dict[str, float]]:
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ConfigError(f"{source}: expected a mapping with a 'models' mapping")
    out: dict[str, dict[str, float]] = {}
    for model, entry in data["models"].items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{source}: prices of {model!r} must be a mapping")
        unknown = set(entry) - set(PRICE_FIELDS)
        if unknown:
            raise ConfigError(
                f"{source}: model {model!r} has unknown price fields {sorted(unknown)}"
            )
        try:
            input_price = float(entry["input"])
            output_price = float(entry["output"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"{source}: model {model!r} needs numeric 'input' and 'output'"
            ) from None
        out[str(model)] = {
            "input": input_price,
            "output": output_price,
            # Anthropic bills 5-minute cache writes at 1.25x and reads at 0.1x the input price.
            "cache_write": float(entry.get("cache_write", input_price * 1.25)),
            "cache_read": float(entry.get("cache_read", input_price * 0.1)),
        }
    return out


#: The process-wide price table used by every orchestrator unless given another.
prices = PriceTable.default()


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
        self._writer: _JsonlWriter | None = None
        if self.path is not None:
            if self.path.exists():
                self._records, self.skipped_lines = _read_jsonl(self.path)
            self._writer = _JsonlWriter(self.path)
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
        tracker._records, tracker.skipped_lines = _read_jsonl(p)
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
            self._writer.put(_RESET)

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


# -- persistence: one JSON object per line, appended by a background thread -------------------

_RESET = object()  # queued by reset(): written as a marker line
_STOP = object()  # queued by close(): the writer thread ends after it
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


def _read_jsonl(path: Path) -> tuple[list[CallRecord], int]:
    """The records after the last reset marker, and how many lines could not be read."""
    records: list[CallRecord] = []
    skipped = 0
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise AgentnbError(f"cannot read metrics file {path}: {exc.strerror}") from None
    with handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if isinstance(data, dict) and "reset" in data and "agent" not in data:
                    records.clear()
                    continue
                if not isinstance(data, dict):
                    raise TypeError("not an object")
                records.append(_decode(data))
            except (ValueError, TypeError, KeyError):
                skipped += 1  # e.g. the last line of a process killed mid-write
    if skipped:
        logger.warning("metrics file %s: skipped %d unreadable line(s)", path, skipped)
    return records, skipped


class _JsonlWriter:
    """Appends queued records to a file from its own daemon thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("ab")
            if self._file.tell() > 0:
                with path.open("rb") as f:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        # A crash left half a line: end it, so the next record starts clean.
                        self._file.write(b"\n")
        except OSError as exc:
            raise AgentnbError(f"cannot write metrics file {path}: {exc.strerror}") from None
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.put = self._queue.put  # SimpleQueue.put never blocks
        self._lock = threading.Lock()
        self._closed = False
        self._warned = False
        self._thread = threading.Thread(
            target=self._run, name="agentnb-metrics-writer", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            batch = [get()]
            while True:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            chunks: list[bytes] = []
            done: list[threading.Event] = []
            stop = False
            for item in batch:
                if isinstance(item, CallRecord):
                    chunks.append(_encode(item))
                elif item is _RESET:
                    chunks.append(
                        json.dumps({"reset": datetime.now().astimezone().isoformat()}).encode()
                        + b"\n"
                    )
                elif isinstance(item, threading.Event):
                    done.append(item)
                elif item is _STOP:
                    stop = True
            if chunks:
                self._write(b"".join(chunks))
            for event in done:
                event.set()
            if stop:
                self._file.close()
                return

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
            self._file.flush()
        except OSError as exc:
            if not self._warned:  # once: a full disk must not flood the log
                self._warned = True
                logger.warning(
                    "metrics file %s: write failed (%s); records kept in memory only",
                    self.path,
                    exc.strerror,
                )

    def flush(self, timeout: float | None) -> bool:
        if self._closed:
            return True
        event = threading.Event()
        self.put(event)
        return event.wait(timeout)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
