"""An append-only JSON Lines file written by a background thread: the metrics file.

`JsonlWriter` appends one JSON object per line without ever blocking the caller (the home
loop): the caller only queues its record, and the writer's thread turns it into a line.
`read_jsonl` streams the records back. A `{"reset": <time>}` line marks a reset: what comes
before the last one is forgotten, and the lines stay in the file. A line cut short by a crash
is skipped (and counted); the next writer starts on a fresh line. What a record is, and which
object it becomes, is the caller's: `agentnb.metrics` queues its row tuples and passes the
functions between rows and objects.

Several processes may append to one file (a `multiprocessing` pool's workers, forked from a
writing parent, go on writing to it): the file is opened for appending and unbuffered, and each
write is whole lines, so lines never mix. A forked child starts a writer thread of its own (the
records queued in the parent are the parent's to write); a `multiprocessing` worker, which ends
without running `atexit`, has its writer flushed by multiprocessing's own exit hook.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import orjson

from ._fork import at_fork_in_child
from .errors import AgentnbError

__all__ = ["RESET", "JsonlWriter", "dumps_line", "read_jsonl"]

logger = logging.getLogger("agentnb.metrics")

T = TypeVar("T")

RESET = object()  # put by PerformanceTracker.reset(): written as a marker line
_STOP = object()  # put by close(): the writer thread ends after it


def read_jsonl(path: Path, add: Callable[[dict[str, Any]], None], reset: Callable[[], None]) -> int:
    """Feeds each line's object to `add` and each reset marker to `reset`; returns lines skipped.

    Rows stream through, so a file of any length loads in bounded memory if `add` stores
    compactly. A ValueError, TypeError or KeyError from `add` marks the line unreadable (e.g.
    the last line of a process killed mid-write); `add` must raise before storing anything.
    """
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
                data = orjson.loads(line)
                if not isinstance(data, dict):
                    raise TypeError("not an object")
                if data.keys() == {"reset"}:
                    reset()
                    continue
                add(data)
            except (ValueError, TypeError, KeyError):
                skipped += 1  # e.g. the last line of a process killed mid-write
    if skipped:
        logger.warning("metrics file %s: skipped %d unreadable line(s)", path, skipped)
    return skipped


def dumps_line(data: dict[str, Any]) -> bytes:
    """One JSON line: strict JSON (a NaN or infinity becomes null), ending in a newline.

    Example:
        >>> dumps_line({"cost_usd": float("nan"), "agent": "a"})
        b'{"cost_usd":null,"agent":"a"}\\n'
    """
    try:
        return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        # What orjson refuses (an int past 64 bits, a lone surrogate) the json module can write.
        finite = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in data.items()
        }
        return json.dumps(finite, separators=(",", ":"), allow_nan=False).encode() + b"\n"


class JsonlWriter(Generic[T]):
    """Appends queued records to a file from its own daemon thread, one `encode(record)` a line.

    `put(record)` never blocks; `put(RESET)` appends a reset marker. `flush()` waits until
    everything put so far is written; `close()` flushes and ends the thread. A record `encode`
    cannot turn into JSON is logged and left out, and the thread goes on.
    """

    def __init__(self, path: Path, encode: Callable[[T], dict[str, Any]]) -> None:
        self.path = path
        self._encode = encode
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("ab", buffering=0)  # a write is whole lines: see the doc
            if self._file.tell() > 0:
                with path.open("rb") as f:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        # A crash left half a line: end it, so the next record starts clean.
                        self._file.write(b"\n")
        except OSError as exc:
            raise AgentnbError(f"cannot write metrics file {path}: {exc.strerror}") from None
        self._warned = False
        self._closed = False
        self._start()
        at_fork_in_child(self._after_fork_in_child)
        from multiprocessing.util import register_after_fork

        register_after_fork(self, JsonlWriter._flush_at_worker_exit)

    def _start(self) -> None:
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.put = self._queue.put  # SimpleQueue.put never blocks
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name="agentnb-metrics-writer", daemon=True
        )
        self._thread.start()

    def _after_fork_in_child(self) -> None:
        # The parent's thread is gone and the records on its queue are the parent's to write;
        # the file (opened for appending, unbuffered) is shared as it is.
        if not self._closed:
            self._start()

    def _flush_at_worker_exit(self) -> None:
        # In a multiprocessing child, which ends with os._exit (no atexit): its own exit hook
        # closes the writer, so what was queued is written. Registered here, in the child, as
        # multiprocessing drops the exit hooks the parent registered.
        from multiprocessing.util import Finalize

        Finalize(self, self.close, exitpriority=0)

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
                if item is RESET:
                    chunks.append(
                        json.dumps({"reset": datetime.now().astimezone().isoformat()}).encode()
                        + b"\n"
                    )
                elif isinstance(item, threading.Event):
                    done.append(item)
                elif item is _STOP:
                    stop = True
                else:
                    chunks.append(self._line(cast(T, item)))
            if chunks:
                self._write(b"".join(chunks))
            for event in done:
                event.set()
            if stop:
                self._file.close()
                return

    def _line(self, record: T) -> bytes:
        try:
            return dumps_line(self._encode(record))
        except (TypeError, ValueError, OverflowError) as exc:
            # A caller's bug must not end the thread: the records after it still get written.
            logger.warning("metrics file %s: left out a record (%s)", self.path, exc)
            return b""

    def _write(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:  # one write but for a short one (a full disk, a signal)
                view = view[self._file.write(view) :]
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
