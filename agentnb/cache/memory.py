"""The memory tier: an in-process LRU bounded by entries and bytes, with a TTL per entry.

Every operation is O(1) (an `OrderedDict` moved to the end on a hit, popped from the front on
eviction) and guarded by one lock, so the user-facing methods may run from any thread while the
event loop reads it (a forked child makes a new lock: a thread of the parent may have held the
old one). An entry larger than the byte bound is not kept at all (the persistent tier
still has it) rather than flushing everything else out.

Example:
    >>> tier = MemoryTier(max_entries=2, max_bytes=1000)
    >>> tier.set("a", {"text": "hi"}, agent="writer", size=15, expires_at=None)
    True
    >>> tier.get("a")
    {'text': 'hi'}
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .._fork import at_fork_in_child

__all__ = ["MemoryTier", "copy_json"]


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON-shaped value (dicts and lists copied, scalars shared)."""
    kind = type(value)
    if kind is dict:
        out = value.copy()
        for k, v in out.items():
            if type(v) is dict or type(v) is list:
                out[k] = copy_json(v)  # same keys: changing values while iterating is safe
        return out
    if kind is list:
        return [copy_json(v) if type(v) is dict or type(v) is list else v for v in value]
    return value


class _Entry:
    __slots__ = ("agent", "expires_at", "payload", "size")

    def __init__(
        self, payload: dict[str, Any], agent: str, size: int, expires_at: float | None
    ) -> None:
        self.payload = payload
        self.agent = agent
        self.size = size
        self.expires_at = expires_at


class MemoryTier:
    """LRU + TTL map of payloads; callers get copies, so they may change what they get."""

    name = "memory"

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.evictions = 0
        self.expirations = 0
        self.oversize = 0
        at_fork_in_child(self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        if self._lock.locked():  # a change was cut short: recount the bytes it may have left off
            self.bytes = sum(entry.size for entry in self._data.values())
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def keys(self) -> list[str]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._data)

    def get(self, key: str, *, copy: bool = True) -> dict[str, Any] | None:
        """A copy of the payload under `key` (the payload itself with `copy=False`: read it,
        do not change it), or None when absent or expired. A hit is counted in `hits`."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry.expires_at is not None and entry.expires_at <= self._clock():
                del self._data[key]
                self.bytes -= entry.size
                self.expirations += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            payload = entry.payload
        return copy_json(payload) if copy else payload

    def peek(self, key: str) -> dict[str, Any] | None:
        """The payload under `key` (the tier's own: read it, do not change it), or None when
        absent or expired; neither a hit nor a use (the LRU order stays)."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None or (
                entry.expires_at is not None and entry.expires_at <= self._clock()
            ):
                return None
            return entry.payload

    def set(
        self,
        key: str,
        payload: dict[str, Any],
        *,
        agent: str,
        size: int,
        expires_at: float | None,
    ) -> bool:
        """Keep `payload` (not copied: pass one nobody else holds); False if it is too large."""
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.bytes -= old.size
            if size > self.max_bytes:
                self.oversize += 1
                return False
            self._data[key] = _Entry(payload, agent, size, expires_at)
            self.bytes += size
            while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
                _, evicted = self._data.popitem(last=False)
                self.bytes -= evicted.size
                self.evictions += 1
            return True

    def delete(self, key: str, *, agent: str | None = None) -> int:
        """Remove `key` (only if it belongs to `agent`, when given); 1 if removed, else 0."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None or (agent is not None and entry.agent != agent):
                return 0
            del self._data[key]
            self.bytes -= entry.size
            return 1

    def delete_agent(self, agent: str) -> int:
        """Remove every entry of `agent` (O(n): a user-facing command, not a hot path)."""
        with self._lock:
            doomed = [k for k, e in self._data.items() if e.agent == agent]
            for k in doomed:
                self.bytes -= self._data.pop(k).size
            return len(doomed)

    def clear(self) -> int:
        """Remove everything; returns how many entries there were."""
        with self._lock:
            n = len(self._data)
            self._data.clear()
            self.bytes = 0
            return n
