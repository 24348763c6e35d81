"""What the persistent tiers (SQLite, Redis) share: the entry they return and their interface.

The async methods are called from the event loop and do their I/O on the tier's own threads; the
plain methods are user-facing commands that block the calling thread (any thread) until done.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

__all__ = ["LogOnce", "PersistentTier", "StoredEntry"]


class StoredEntry(NamedTuple):
    """One verified entry read back from a persistent tier."""

    payload: dict[str, Any]
    agent: str
    size: int
    expires_at: float | None


class PersistentTier(Protocol):
    """The interface `ResponseCache` needs from a tier behind the memory tier."""

    name: str
    evictions: int
    expirations: int
    integrity_failures: int
    errors: int

    async def get(self, key: str) -> StoredEntry | None: ...

    async def set(
        self, key: str, *, agent: str, value: bytes, expires_at: float | None
    ) -> None: ...

    async def get_many(self, keys: Sequence[str]) -> list[StoredEntry | None]: ...

    async def set_many(self, entries: Sequence[tuple[str, str, bytes, float | None]]) -> None: ...

    def touch(self, key: str) -> None: ...

    def clear(self) -> int: ...

    def invalidate(self, *, agent: str | None, key: str | None) -> int: ...

    def counts(self) -> tuple[int, int]: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


class LogOnce:
    """Logs a warning the first time a topic comes up, and at debug level after that.

    A notebook should see one line when, say, the secret changed and a thousand entries fail
    their check, not a thousand lines; the counters in `stats()` carry the totals.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[str] = set()

    def warning(self, topic: str, msg: str, *args: object) -> None:
        level = logging.DEBUG if topic in self._seen else logging.WARNING
        self._seen.add(topic)
        self._logger.log(level, msg, *args)

    def reset(self, topic: str) -> None:
        """Let `topic` warn again (e.g. a new Redis outage after a recovery)."""
        self._seen.discard(topic)
