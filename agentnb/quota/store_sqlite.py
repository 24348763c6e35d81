"""The quota's buckets in SQLite: every process on this machine paces itself against one quota.

One table in `quota.db` (in `state_dir`), a row per key: its limits, the three levels, when
they were last brought up to date, and the pause. Each step is one short write transaction,
`BEGIN IMMEDIATE` (the lock taken up front, waited for up to `busy_timeout`), read the row,
refill, check, take, write it back, `COMMIT`, so two processes never both take the last of a
bucket. WAL mode with `synchronous=NORMAL`: a commit does not wait for the disk, and loses
nothing on a process crash (only on power loss, where the quota has moved on anyway).

Threading: the connection lives on one worker thread of the store (an executor of 1); the event
loop awaits each step there. A step's wall time is read once the lock is held, so the rows'
times only move forward whoever waited longest.

Fork: the child gets a thread of its own and opens its own connection on first use, having
closed the copy of the parent's first (for why, see `agentnb.cache.sqlite`, whose rule this
follows). A child forked while the store's thread was inside SQLite can use neither safely: it
paces itself with its own buckets (`Fallback`) and says so once.

Rows not written for a day are deleted when a store opens the file: by then their buckets are
full, which is what a missing row means too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .._fork import abandon, at_fork_in_child
from ..cache.sqlite import connect_patiently
from ..errors import ConfigError
from .buckets import Buckets, Costs, Limits
from .stores import RETRY_S, Fallback, Remaining, snapshot_of

__all__ = ["SqliteStore"]

logger = logging.getLogger("agentnb")

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    key TEXT PRIMARY KEY,
    rpm REAL, itpm REAL, otpm REAL, burst_s REAL NOT NULL,
    requests REAL NOT NULL, input_tokens REAL NOT NULL, output_tokens REAL NOT NULL,
    updated REAL NOT NULL,
    paused_until REAL NOT NULL
) WITHOUT ROWID
"""
_SELECT = (
    "SELECT rpm, itpm, otpm, burst_s, requests, input_tokens, output_tokens, updated, "
    "paused_until FROM buckets WHERE key = ?"
)
_WRITE = "INSERT OR REPLACE INTO buckets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_FORGET_AFTER_S = 24 * 3600.0


class SqliteStore:
    """The buckets in one SQLite file, shared by the processes of one machine."""

    name = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 5.0,
        retry_s: float = RETRY_S,
    ) -> None:
        self.path = path
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._executor = self._new_executor()
        self._conn: sqlite3.Connection | None = None
        self._busy = False  # the store's thread is inside SQLite (read after a fork)
        self._usable = True  # False: closed, or forked mid-step (see the module docstring)
        self._fallback = Fallback(f"the quota database {path}", retry_s=retry_s)
        try:
            self._executor.submit(self._run, self._connection).result()
        except sqlite3.Error as exc:
            self._executor.shutdown(wait=False)
            raise ConfigError(
                f"cannot open the quota database {path}: {exc}; choose another state_dir "
                "or set ratelimit_backend: local"
            ) from None
        at_fork_in_child(self._after_fork_in_child)

    @staticmethod
    def _new_executor() -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="agentnb-quota-sqlite"
        )

    # -- the interface -------------------------------------------------------------------
    async def take(self, key: str, limits: Limits, costs: Costs) -> float:
        return await self._apply(key, limits, lambda b, now: b.take(costs, now))

    async def give(self, key: str, limits: Limits, amounts: Costs) -> None:
        await self._apply(key, limits, lambda b, now: b.give(amounts, now))

    async def lower_to(self, key: str, limits: Limits, remaining: Remaining) -> None:
        await self._apply(key, limits, lambda b, now: b.lower_to(remaining, now))

    async def pause(self, key: str, limits: Limits, until: float) -> None:
        await self._apply(key, limits, lambda b, now: b.pause(until))

    async def snapshot(self, key: str, limits: Limits) -> tuple[tuple[float, float, float], float]:
        return await self._apply(key, limits, snapshot_of)

    async def aclose(self) -> None:
        if not self._usable:
            return
        self._usable = False
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    # -- on the loop -----------------------------------------------------------------------
    async def _apply(self, key: str, limits: Limits, step: Callable[[Buckets, float], T]) -> T:
        fallback = self._fallback
        if self._usable and fallback.try_shared():
            loop = asyncio.get_running_loop()
            try:
                future: asyncio.Future[T] = loop.run_in_executor(
                    self._executor, self._run, self._step, key, limits, step
                )
            except RuntimeError:  # the executor shut down by a concurrent aclose()
                return fallback.apply(key, limits, step)
            try:
                result = await future
            except (sqlite3.Error, OSError) as exc:
                fallback.failed(exc)
            else:
                fallback.succeeded()
                return result
        return fallback.apply(key, limits, step)

    # -- on the store's thread -------------------------------------------------------------
    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        self._busy = True
        try:
            return fn(*args)
        finally:
            self._busy = False

    def _step(self, key: str, limits: Limits, step: Callable[[Buckets, float], T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = self._clock()
            row = conn.execute(_SELECT, (key,)).fetchone()
            if row is None:
                buckets = Buckets(limits, now)
            else:
                rpm, itpm, otpm, burst_s, *levels, updated, paused_until = row
                stored = Limits(rpm, itpm, otpm, burst_s)
                buckets = Buckets(stored, updated, levels)
                buckets.paused_until = paused_until
                if stored != limits:
                    buckets.set_limits(limits, now)
            result = step(buckets, now)
            conn.execute(
                _WRITE,
                (key, *buckets.limits, *buckets.levels, buckets.updated, buckets.paused_until),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        return result

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect_patiently()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) or not self.path.is_file():
                raise
        # Not a database (overwritten, truncated): its state is worth nothing, so start anew.
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        logger.warning(
            "quota database %s is not a usable SQLite database; moved it to %s and started "
            "a new one",
            self.path,
            aside,
        )
        self.path.replace(aside)
        for suffix in ("-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        return self._connect_patiently()

    def _connect_patiently(self) -> sqlite3.Connection:
        return connect_patiently(self._connect, self._busy_timeout_s)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,  # so that a forked child can close the parent's copy
        )
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning(
                    "quota database %s cannot use WAL mode; processes sharing it wait longer "
                    "on each other",
                    self.path,
                )
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_SCHEMA)
            conn.execute(
                "DELETE FROM buckets WHERE updated < ? AND paused_until < ?",
                (self._clock() - _FORGET_AFTER_S, self._clock()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- fork ------------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        conn, self._conn = self._conn, None
        if self._busy:  # inside SQLite at the fork: neither closing it nor a new one is safe
            abandon(conn)
            if self._usable:
                self._usable = False
                logger.warning(
                    "quota database %s: this process was forked while it was being used; "
                    "it paces itself alone, with buckets in memory",
                    self.path,
                )
            return
        if conn is not None:
            conn.close()
        if self._usable:
            self._executor = self._new_executor()
