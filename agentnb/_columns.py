"""Rows kept compactly in typed columns, and spilled to a temporary file past a bound.

A `ColumnStore` takes rows (tuples, one value per column) and keeps them in `array.array`
columns: floats and ints as 8 bytes, bools as 1, and a string column as 4-byte codes into its
chunk's table of distinct values (names like the agent or model repeat on every row). Kinds:
`"s"` str or None, `"d"` float, `"q"` int, `"?"` bool.

`append` only puts the row on a short list; a full list is moved into the columns one column at
a time, in C. When the chunk in memory holds `max_rows` rows it is written to a temporary file
(made on first need, gone when the store is cleared or collected) and memory starts over, so
the bytes held stay bounded however many rows arrive. `snapshot()` hands out the chunks so far,
in order, reading spilled ones back as they are iterated. A store is not thread-safe: its
owner serialises `append`, `clear` and `snapshot` (reading a snapshot needs no lock). A forked
child spills to a file of its own: the parent's stays the parent's to write, and is read at given
offsets, not through the file position the two processes share.

Example:
    >>> store = ColumnStore("sd", max_rows=2)
    >>> for row in [("a", 1.0), (None, 2.0), ("a", 3.0)]:
    ...     store.append(row)
    >>> len(store), store.spilled_rows
    (3, 2)
    >>> [chunk.values(0) for chunk in store.snapshot()]
    [['a', None], ['a']]
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import os
import struct
import sys
import tempfile
import threading
import weakref
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ._fork import at_fork_in_child

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Chunk", "ColumnStore", "Snapshot"]

logger = logging.getLogger("agentnb.metrics")

Row = tuple[Any, ...]

_TYPECODES = {"s": "I", "d": "d", "q": "q", "?": "B"}
# What packing a value of the wrong type raises: the row goes through `_fitting`.
_UNFIT = (TypeError, ValueError, OverflowError, struct.error)
_BATCH = 256  # rows waiting as tuples: big enough to amortise a pass, small enough to not matter
_HEADER = struct.Struct("<I")  # the length of a spilled chunk's JSON header
_PREAD: Callable[[int, int, int], bytes] | None = getattr(os, "pread", None)  # not on Windows


def _checked_str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a str or None, got {type(value).__name__}")


def _as_float(value: Any) -> float:
    if isinstance(value, str | bytes):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)  # e.g. a Decimal


def _as_bool(value: Any) -> bool:
    # True, False, 0, 1, and NumPy's bools (equal to 0 or 1), without importing NumPy.
    if not isinstance(value, str | bytes) and value in (0, 1):
        return bool(value)
    raise TypeError(f"expected a bool, got {value!r}")


# How a value that did not fit its column on the fast path is made to fit (a NumPy scalar, a
# Decimal), or refused: never by guessing (no "1.5" for a float, no 2.5 for an int).
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "s": _checked_str,
    "d": _as_float,
    "q": operator.index,
    "?": _as_bool,
}


@functools.lru_cache(maxsize=64)
def _packer(typecode: str, count: int) -> Callable[..., bytes]:
    # "=": native byte order as in `array`, standard sizes (I 4 bytes, d and q 8), no padding.
    return struct.Struct(f"={count}{typecode}").pack


class _Interner(dict[str | None, int]):
    """Codes for a chunk's distinct strings; code 0 is None. `table[value]` adds a new one."""

    def __init__(self) -> None:
        super().__init__({None: 0})
        self.strings: list[str | None] = [None]

    def __missing__(self, value: str | None) -> int:
        # Only new values get here, so checking the type costs the hot path nothing.
        self.strings.append(_checked_str(value))
        self[value] = code = len(self.strings) - 1
        return code


class Chunk:
    """Some consecutive rows, read-only: one array per column, string columns as codes.

    Example:
        >>> chunk = Chunk("s?", [array("I", [1, 0]), array("B", [1, 0])], [None, "x"])
        >>> chunk.rows, chunk.values(0), chunk.values(1)
        (2, ['x', None], [True, False])
    """

    __slots__ = ("columns", "kinds", "rows", "strings")

    def __init__(self, kinds: str, columns: list[array[Any]], strings: list[str | None]) -> None:
        self.kinds = kinds
        self.columns = columns
        self.strings = strings
        self.rows = len(columns[0]) if columns else 0

    def load(self) -> Chunk:
        return self

    def values(self, i: int) -> list[Any]:
        """Column `i` as Python values."""
        kind, column = self.kinds[i], self.columns[i]
        if kind == "s":
            return list(map(self.strings.__getitem__, column))
        if kind == "?":
            return list(map(bool, column))
        return column.tolist()

    def to_numpy(self, i: int) -> np.ndarray[Any, Any]:
        """Column `i` as a NumPy array: float64, int64, bool, or object (str or None)."""
        import numpy as np

        kind, column = self.kinds[i], self.columns[i]
        if kind == "s":
            return np.asarray(self.strings, dtype=object)[np.frombuffer(column, np.uint32)]
        if kind == "?":
            return np.frombuffer(column, np.uint8).astype(bool)
        return np.frombuffer(column, np.float64 if kind == "d" else np.int64)

    def nbytes(self) -> int:
        return sum(map(sys.getsizeof, self.columns)) + _table_bytes(self.strings)


class _Spilled:
    """Where one chunk lies in the spill file."""

    __slots__ = ("file", "offset", "rows", "size")

    def __init__(self, file: _SpillFile, offset: int, size: int, rows: int) -> None:
        self.file, self.offset, self.size, self.rows = file, offset, size, rows

    def load(self) -> Chunk:
        return self.file.read(self)


class _SpillFile:
    """An anonymous temporary file of chunks: a JSON header, then each column's bytes.

    Closed (so deleted) when no store or snapshot refers to it any more. Its own lock lets a
    snapshot read while the owner appends.
    """

    def __init__(self, kinds: str) -> None:
        self.kinds = kinds
        # Open for the object's life, closed by the finalizer below: no `with` can span that.
        self._file = tempfile.TemporaryFile(prefix="agentnb-metrics-")  # noqa: SIM115
        self._lock = threading.Lock()
        self._end = 0
        weakref.finalize(self, self._file.close)

    def write(self, chunk: Chunk) -> _Spilled:
        header = json.dumps(
            {"rows": chunk.rows, "strings": chunk.strings, "sizes": [len(c) for c in chunk.columns]}
        ).encode()
        with self._lock:
            f = self._file
            f.seek(self._end)
            size = f.write(_HEADER.pack(len(header))) + f.write(header)
            for column in chunk.columns:
                size += f.write(memoryview(column).cast("B"))
            f.flush()  # a write error surfaces here, before the chunk counts as spilled
            spilled = _Spilled(self, self._end, size, chunk.rows)
            self._end += size
        return spilled

    def read(self, where: _Spilled) -> Chunk:
        if _PREAD is not None:  # no seek: a forked child and its parent share the position
            data = _PREAD(self._file.fileno(), where.size, where.offset)
        else:
            with self._lock:
                self._file.seek(where.offset)
                data = self._file.read(where.size)
        (length,) = _HEADER.unpack_from(data)
        pos = _HEADER.size + length
        header = json.loads(data[_HEADER.size : pos])
        columns: list[array[Any]] = []
        for kind, count in zip(self.kinds, header["sizes"], strict=True):
            column = array(_TYPECODES[kind])
            end = pos + count * column.itemsize
            column.frombytes(data[pos:end])
            columns.append(column)
            pos = end
        return Chunk(self.kinds, columns, header["strings"])


class Snapshot:
    """The rows of a store at one moment, as chunks; spilled chunks are read while iterating."""

    def __init__(self, parts: Sequence[Chunk | _Spilled]) -> None:
        self._parts = parts

    def __iter__(self) -> Iterator[Chunk]:
        for part in self._parts:
            yield part.load()


class ColumnStore:
    """Rows in typed columns, at most about `max_rows` of them in memory; see the module doc."""

    def __init__(self, kinds: str, max_rows: int = 50_000) -> None:
        if not kinds or set(kinds) - set(_TYPECODES):
            raise ValueError(f"column kinds must be among {''.join(_TYPECODES)}: {kinds!r}")
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, not {max_rows}")
        self.kinds = kinds
        self.max_rows = max_rows
        self._batch = min(_BATCH, max_rows)
        self._convert = [_CONVERT[k] for k in kinds]
        self._pending: list[Row] = []
        # Chunks done with: spilled, or kept in memory if the spill file could not be written.
        self._done: list[Chunk | _Spilled] = []
        self._spill: _SpillFile | None = None
        self._warned_spill = False
        self.spilled_rows = 0
        self._start_chunk()
        at_fork_in_child(self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._spill = None  # the next chunk goes to a file of the child's own

    def _start_chunk(self) -> None:
        self._columns: list[array[Any]] = [array(_TYPECODES[k]) for k in self.kinds]
        self._table = _Interner()
        self._rows = 0

    def append(self, row: Row) -> None:
        """Add one row (a tuple in column order); it is checked when its batch is packed."""
        pending = self._pending
        pending.append(row)
        if len(pending) >= self._batch:
            self._pack()

    def __len__(self) -> int:
        done = sum(part.rows for part in self._done)
        return done + self._rows + len(self._pending)

    def clear(self) -> None:
        """Forget every row; the spill file goes when no snapshot still reads it."""
        self._pending = []
        self._done = []
        self._spill = None
        self.spilled_rows = 0
        self._start_chunk()

    def snapshot(self) -> Snapshot:
        """The rows so far; later appends do not change it."""
        self._pack()
        current = Chunk(self.kinds, [c[:] for c in self._columns], self._table.strings[:])
        return Snapshot([*self._done, current])

    @property
    def memory_bytes(self) -> int:
        """About how many bytes the rows take in memory (not counting the spill file)."""
        columns = sum(map(sys.getsizeof, self._columns)) + _table_bytes(self._table.strings)
        table = sys.getsizeof(self._table)
        # A waiting row: its tuple and the number objects it alone holds (strings are shared).
        row_bytes = 56 + 8 * len(self.kinds) + 24 * sum(k != "s" for k in self.kinds)
        pending = sys.getsizeof(self._pending) + row_bytes * len(self._pending)
        kept = sum(p.nbytes() for p in self._done if isinstance(p, Chunk))
        return columns + table + pending + kept + 64 * len(self._done)

    def _pack(self) -> None:
        rows, self._pending = self._pending, []
        while rows:
            room = self.max_rows - self._rows  # a chunk holds `max_rows` rows, no more
            self._extend(rows[:room])
            rows = rows[room:]
            if self._rows >= self.max_rows:
                self._spill_chunk()

    def _extend(self, rows: list[Row]) -> None:
        try:
            fresh = self._to_bytes(rows)
        except _UNFIT:
            rows = self._fitting(rows)
            fresh = self._to_bytes(rows)
        # Every column of the batch is built before any is extended: the columns stay aligned.
        for column, part in zip(self._columns, fresh, strict=True):
            column.frombytes(part)
        self._rows += len(rows)

    def _to_bytes(self, rows: list[Row]) -> list[bytes]:
        """The rows' values, column by column, in the columns' machine format."""
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(self.kinds)
        if len(columns) != len(self.kinds):
            raise ValueError(f"a row has {len(columns)} values, not {len(self.kinds)}")
        code, count = self._table.__getitem__, len(rows)
        out: list[bytes] = []
        # struct packs a whole column in one call, several times faster than array(code, values).
        for kind, values in zip(self.kinds, columns, strict=True):
            if kind == "s":
                out.append(_packer("I", count)(*map(code, values)))
            elif kind == "?":
                out.append(bytes(values))  # True and False are 1 and 0
            else:
                out.append(_packer(_TYPECODES[kind], count)(*values))
        return out

    def _fitting(self, rows: list[Row]) -> list[Row]:
        """The rows converted value by value to their columns' types; the others are dropped."""
        kept: list[Row] = []
        for row in rows:
            try:
                if len(row) != len(self.kinds):
                    raise ValueError(f"{len(row)} values, not {len(self.kinds)}")
                fitted = tuple(f(v) for f, v in zip(self._convert, row, strict=True))
                self._to_bytes([fitted])  # e.g. an int too big for 8 bytes
            except _UNFIT as exc:
                # A caller's bug; raising here would fail whichever call filled the batch.
                logger.warning("metrics: dropped a row that does not fit the columns (%s)", exc)
            else:
                kept.append(fitted)
        return kept

    def _spill_chunk(self) -> None:
        chunk = Chunk(self.kinds, self._columns, self._table.strings)
        try:
            if self._spill is None:
                self._spill = _SpillFile(self.kinds)
            self._done.append(self._spill.write(chunk))
            self.spilled_rows += chunk.rows
        except OSError as exc:
            # Keep the rows in memory rather than lose them (a full disk, say).
            self._done.append(chunk)
            if not self._warned_spill:
                self._warned_spill = True
                logger.warning("metrics: cannot spill rows to a temporary file (%s)", exc)
        self._start_chunk()


def _table_bytes(strings: list[str | None]) -> int:
    return sys.getsizeof(strings) + sum(map(sys.getsizeof, strings))
