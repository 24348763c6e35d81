"""The simulator's call log: one record per call, the last N of them kept.

Example:
    >>> log = CallLog(limit=2)
    >>> for task in "abc":
    ...     log.append(CallRecord("writer", "m", task, 0.0))
    >>> [r.task for r in log], log.appended, [r.task for r in log.since(1)]
    (['b', 'c'], 3, ['b', 'c'])
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

__all__ = ["CallLog", "CallRecord"]


@dataclass(slots=True)
class CallRecord:
    """One simulated call: who asked, when it ran (monotonic clock), and how it ended."""

    agent: str
    model: str
    task: str
    started: float
    ended: float | None = None
    ok: bool | None = None
    error: str | None = None  # the fault kind, or "cancelled"
    streamed: bool = False
    request_id: str = ""


class CallLog(Sequence[CallRecord]):
    """The last `limit` call records, oldest first; older ones are dropped as new ones come.

    It reads like a list (index, slice, iterate, `len`, `==` to a list). `appended` counts every
    record ever logged, dropped or cleared or not, so `since(mark)` finds the records logged after
    a moment even once the log has started dropping.
    """

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"log_limit must be at least 0, got {limit!r}")
        self._records: collections.deque[CallRecord] = collections.deque(maxlen=limit)
        self.appended = 0

    @property
    def limit(self) -> int:
        """The most records kept."""
        return self._records.maxlen or 0

    def append(self, record: CallRecord) -> None:
        self._records.append(record)
        self.appended += 1

    def clear(self) -> None:
        """Drop every record (`appended` goes on counting)."""
        self._records.clear()

    def since(self, mark: int) -> list[CallRecord]:
        """The records logged after `appended` was `mark` (those still kept), oldest first."""
        n = min(self.appended - mark, len(self._records))
        return list(self._records)[len(self._records) - n :] if n > 0 else []

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[CallRecord]:
        return iter(self._records)

    def __reversed__(self) -> Iterator[CallRecord]:
        return reversed(self._records)

    @overload
    def __getitem__(self, index: int) -> CallRecord: ...
    @overload
    def __getitem__(self, index: slice) -> list[CallRecord]: ...
    def __getitem__(self, index: int | slice) -> CallRecord | list[CallRecord]:
        if isinstance(index, slice):
            return list(self._records)[index]
        return self._records[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (CallLog, list)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by content, like a list

    def __repr__(self) -> str:
        return f"CallLog(limit={self.limit}, appended={self.appended}, kept={len(self)})"
