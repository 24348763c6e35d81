"""An append-only JSON Lines file written by a background thread: the metrics file.

`JsonlWriter` appends one JSON object per line without ever blocking the caller (the home
loop); `read_jsonl` reads the records back. A `{"reset": <time>}` line marks a reset: reading
starts after the last one, and the lines before it stay in the file. A line cut short by a crash
is skipped (and counted); the next writer starts on a fresh line. What a record is, and how it
becomes JSON, is the caller's: `agentnb.metrics` passes its `CallRecord` encoder and decoder.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from .errors import AgentnbError

__all__ = ["RESET", "JsonlWriter", "read_jsonl"]

logger = logging.getLogger("agentnb.metrics")

T = TypeVar("T")

RESET = object()  # put by PerformanceTracker.reset(): written as a marker line
_STOP = object()  # put by close(): the writer thread ends after it


def read_jsonl(path: Path, decode: Callable[[dict[str, Any]], T]) -> tuple[list[T], int]:
    """The records after the last reset marker, and how many lines could not be read.

    `decode` makes a record of one line's object; its ValueError, TypeError or KeyError marks
    the line unreadable (e.g. the last line of a process killed mid-write).
    """
    records: list[T] = []
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
                if isinstance(data, dict) and set(data) == {"reset"}:
                    records.clear()
                    continue
                if not isinstance(data, dict):
                    raise TypeError("not an object")
                records.append(decode(data))
            except (ValueError, TypeError, KeyError):
                skipped += 1  # e.g. the last line of a process killed mid-write
    if skipped:
        logger.warning("metrics file %s: skipped %d unreadable line(s)", path, skipped)
    return records, skipped


class JsonlWriter(Generic[T]):
    """Appends queued records (as `encode` makes them) to a file from its own daemon thread.

    `put(record)` never blocks; `put(RESET)` appends a reset marker. `flush()` waits until
    everything put so far is written; `close()` flushes and ends the thread.
    """

    def __init__(self, path: Path, encode: Callable[[T], bytes]) -> None:
        self.path = path
        self._encode = encode
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
                    chunks.append(self._encode(cast(T, item)))
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
