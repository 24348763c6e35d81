"""The disk tier: one SQLite database in WAL mode, driven from a thread of its own.

Threading: a SQLite connection may only be used on the thread that made it, so each tier owns
a one-thread executor; the connection is opened, used and closed there. The event loop awaits
`get`/`set` (never blocking on disk I/O), and user-facing commands from any thread (`clear`,
`invalidate`, `counts`) queue behind them on the same thread and wait for their answer.

The database (`responses.db` in the cache dir; tables in `schema`) keeps a `totals` row exact
through triggers. Eviction runs when the bytes pass the bound: inside one write transaction it
deletes expired rows through the expiry index, then the least recently used rows in batches,
`DELETE ... WHERE rowid IN (SELECT rowid FROM entries ORDER BY accessed_at LIMIT n)`, which walks
the `accessed_at` index from its start (no scan, no sort), until the bytes are under 90% of the
bound. Reads do not write: the keys they (and memory-tier hits) touch are queued and their
`accessed_at` written in one batch later. The writes a read does make (that batch, dropping an
expired or bad row) only happen if the write lock is free at once: a read never waits for, or
fails because of, another kernel's writer.

Two processes (two kernels) may share the directory: WAL lets readers and one writer work at once
and `busy_timeout` makes writers wait their turn (opening also retries while another connection
switches a fresh file to WAL, which SQLite refuses without waiting). A writer killed mid-transaction
leaves nothing half-written (SQLite rolls the WAL back on the next open), and a row that still
fails its HMAC or does not parse is deleted, counted and logged, never served. A file that is not
a database at all is moved aside to `responses.db.corrupt-<time>` and a fresh one started.

After `fork` (`agentnb._fork`) the child gets a thread of its own and opens its own connection
on first use, having closed the copy of the parent's first. SQLite keeps one record of a file's
locks per process, shared by every connection to the file: while the inherited connection is
open, a new one counts the parent's locks as its own and takes none, so the parent's close can
checkpoint and delete the WAL under it, and the child's writes are lost. Closing the inherited
copy of an idle connection does not touch the parent's data: the cleanup a close may do needs
the exclusive lock, which the parent's open connection (holding a shared one) denies. If the
tier's thread was inside SQLite at the fork, neither is safe: the child leaves the connection
alone and uses the memory tier only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .._fork import abandon, at_fork_in_child
from .._sqlrows import write_rows
from ..errors import CacheError
from .base import LogOnce, StoredEntry
from .integrity import Signer
from .schema import (
    DB_NAME,
    DELETE_EXPIRED,
    EVICT_LRU,
    SCHEMA_VERSION,
    SELECT,
    SELECT_MANY,
    TOTALS,
    TOUCH,
    UPSERT,
    schema_statements,
)

__all__ = ["DB_NAME", "SQLiteTier", "connect_patiently"]

logger = logging.getLogger("agentnb.cache")

T = TypeVar("T")

#: Queued LRU touches are written once this many have gathered (and before any eviction).
TOUCH_BATCH = 128
#: Expired rows are swept every this many writes even when the size bound is not reached.
SWEEP_EVERY = 1024
#: Keys looked up by one `SELECT ... IN` of `get_many` (under SQLite's parameter limit).
READ_AT_ONCE = 500
_ROW = 8  # values of one row of `UPSERT`
#: SQLite's page cache for the connection, in KiB (its default is 2,000): enough for the index
#: pages a `write_many` of a few thousand entries touches.
PAGE_CACHE_KIB = 16 * 1024


class _BadRow(Exception):
    pass


class SQLiteTier:
    """Entries in one SQLite database; every SQL statement runs on the tier's own thread."""

    name = "disk"

    def __init__(
        self,
        path: Path,
        *,
        signer: Signer,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 5.0,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._signer = signer
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="agentnb-cache-sqlite"
        )
        self._conn: sqlite3.Connection | None = None
        self._thread = 0  # the ident of the thread the connection was opened on
        self._busy = False  # a call is running on the tier's thread (read after a fork)
        # deque.append/popleft are atomic: the loop thread queues, the tier thread drains.
        self._touches: deque[tuple[float, str]] = deque(maxlen=16 * TOUCH_BATCH)
        self._writes = 0
        self._log = LogOnce(logger)
        self._closed = False
        self.evictions = 0
        self.expirations = 0
        self.integrity_failures = 0
        self.errors = 0
        self.oversize = 0
        try:
            self.call(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            raise
        at_fork_in_child(self._after_fork_in_child)

    # -- thread plumbing ------------------------------------------------------------------
    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the tier's thread and wait for it (any thread but that one)."""
        return self._executor.submit(self._run, fn, *args).result()

    async def _acall(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, fn, *args)

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        self._busy = True
        try:
            return fn(*args)
        finally:
            self._busy = False

    @property
    def connection(self) -> sqlite3.Connection:
        """The open connection (only usable on the tier's thread, e.g. inside `call`); in a
        forked child, opened on first use."""
        if self._conn is None:
            if self._closed:
                raise CacheError(f"the cache database {self.path} is closed")
            self._open()
            assert self._conn is not None
        elif threading.get_ident() != self._thread:
            # What `check_same_thread` would say; it is off so that a forked child can close
            # the parent's connection (see the module docstring).
            raise sqlite3.ProgrammingError(
                "the cache's SQLite connection is only usable on the tier's own thread (`call`)"
            )
        return self._conn

    def _after_fork_in_child(self) -> None:
        # Only the forking thread exists here; see the module docstring for the connection.
        conn, self._conn = self._conn, None
        self._touches.clear()  # the parent writes its own
        if self._busy:  # inside SQLite at the fork: not even closing it is safe
            abandon(conn)
            if not self._closed:
                self._closed = True
                logger.warning(
                    "response cache %s: this process was forked while the cache was reading "
                    "or writing it; it uses the memory cache only",
                    self.path,
                )
            return
        if conn is not None:
            conn.close()
        if not self._closed:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="agentnb-cache-sqlite"
            )

    # -- async API for the event loop ---------------------------------------------------------
    async def get(self, key: str) -> StoredEntry | None:
        """The verified entry under `key`, or None (absent, expired, bad, or the DB failing)."""
        if self._closed:
            return None
        try:
            return await self._acall(self._guarded, self.read, None, key)
        except RuntimeError:  # executor shut down by a concurrent close()
            return None

    async def set(self, key: str, *, agent: str, value: bytes, expires_at: float | None) -> None:
        """Store `value` (payload JSON) under `key`; failures are logged and counted."""
        if self._closed:
            return
        try:
            await self._acall(self._guarded, self.write, None, key, agent, value, expires_at)
        except RuntimeError:
            return

    async def get_many(self, keys: Sequence[str]) -> list[StoredEntry | None]:
        """`get` of several keys, in one trip to the tier's thread."""
        missing: list[StoredEntry | None] = [None] * len(keys)
        if self._closed or not keys:
            return missing
        try:
            return await self._acall(self._guarded, self._read_many, missing, keys)
        except RuntimeError:
            return missing

    async def set_many(self, entries: Sequence[tuple[str, str, bytes, float | None]]) -> None:
        """`set` of several `(key, agent, value, expires_at)`, in one transaction."""
        if self._closed or not entries:
            return
        try:
            await self._acall(self._guarded, self.write_many, None, entries)
        except RuntimeError:
            return

    def touch(self, key: str) -> None:
        """Note that `key` was used (a memory-tier hit), for LRU order; cheap, any thread."""
        self._touches.append((self._clock(), key))

    async def aclose(self) -> None:
        """Flush pending touches and close the connection and its thread."""
        if self._closed:
            return
        self._closed = True
        await self._acall(self._close)
        self._executor.shutdown(wait=True)

    # -- user-facing commands (any thread) ----------------------------------------------------
    def clear(self) -> int:
        """Delete every entry; returns how many there were."""
        return self._command(self._clear)

    def invalidate(self, *, agent: str | None, key: str | None) -> int:
        """Delete the entry `key` and/or every entry of `agent`; returns how many."""
        return self._command(self._invalidate, agent, key)

    def counts(self) -> tuple[int, int]:
        """(entries, bytes) in the database, from the `totals` row (no scan)."""
        if self._closed:
            return (0, 0)
        counts: tuple[int, int] = self.call(self._guarded, self._counts, (0, 0))
        return counts

    def close(self) -> None:
        """Like `aclose`, blocking the calling thread."""
        if self._closed:
            return
        self._closed = True
        self.call(self._close)
        self._executor.shutdown(wait=True)

    def _command(self, fn: Callable[..., int], *args: Any) -> int:
        if self._closed:
            return 0
        try:
            return self.call(fn, *args)
        except sqlite3.Error as exc:
            raise CacheError(f"response cache {self.path}: {exc}") from exc

    # -- on the tier's thread -------------------------------------------------------------------
    def _guarded(self, fn: Callable[..., T], default: T, *args: Any) -> T:
        """Run `fn`; a database failure becomes `default`, one warning and a count."""
        try:
            return fn(*args)
        except (sqlite3.Error, CacheError) as exc:  # CacheError: a forked child cannot open it
            self.errors += 1
            self._log.warning(
                f"sqlite:{type(exc).__name__}:{exc}",
                "response cache %s: %s (%s); carrying on without it for this call",
                self.path,
                exc,
                type(exc).__name__,
            )
            conn = self._conn
            if conn is not None and conn.in_transaction:
                conn.rollback()
            return default

    def _open(self) -> None:
        self._thread = threading.get_ident()
        try:
            self._conn = self._connect_patiently()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) or not self.path.is_file():
                raise CacheError(f"cannot open the cache database {self.path}: {exc}") from None
            # Not a database (overwritten, truncated header): keep it for inspection, start anew.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            logger.warning(
                "response cache %s is not a usable SQLite database (%s); moved it to %s "
                "and started a new one",
                self.path,
                exc,
                aside,
            )
            self.path.replace(aside)
            for suffix in ("-wal", "-shm"):
                self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
            try:
                self._conn = self._connect_patiently()
            except sqlite3.Error as exc2:
                raise CacheError(f"cannot open the cache database {self.path}: {exc2}") from None

    def _connect_patiently(self) -> sqlite3.Connection:
        return connect_patiently(self._connect, self._busy_timeout_s)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,  # see `connection`
        )
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning(
                    "response cache %s could not use WAL mode (got %r); two kernels sharing "
                    "it will wait on each other",
                    self.path,
                    mode,
                )
            # In WAL mode NORMAL loses nothing on a process crash (only on power loss).
            conn.execute("PRAGMA synchronous=NORMAL")
            # An UPSERT fires the totals trigger, so SQLite keeps a statement journal for each
            # row written: in a temporary file by default, several system calls a row. And
            # a transaction of many rows at random keys touches index pages all over the
            # file: with SQLite's default 2 MB page cache they are read again and again.
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
            with _transaction(conn):
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise CacheError(
                        f"the cache database {self.path} was written by a newer agentnb "
                        f"(schema {version}); use another cache_dir or upgrade"
                    )
                for statement in schema_statements():
                    conn.execute(statement)
                self._ensure_totals(conn)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._sweep(conn)  # expired rows, and a bound lowered since the last run
        except BaseException:
            conn.close()
            raise
        return conn

    def read(self, key: str) -> StoredEntry | None:
        """The verified entry under `key` (call on the tier's thread; the tier's own get)."""
        conn = self.connection
        rows = conn.execute(SELECT, (key,)).fetchall()
        return self._entry(conn, key, rows[0]) if rows else None

    def _entry(self, conn: sqlite3.Connection, key: str, row: Sequence[Any]) -> StoredEntry | None:
        """The entry `row` (value, mac, agent, expires_at) holds under `key`, checked: None
        when it expired or is bad (then dropped, if the write lock is free, and counted)."""
        value, mac, agent, expires_at = row
        now = self._clock()
        drop = "DELETE FROM entries WHERE key = ? AND mac IS ?"
        try:
            if expires_at is not None and float(expires_at) <= now:
                # Not deleted now (another writer busy)? The next read or sweep does it.
                if self._write_if_free("dropping an expired entry", conn, drop, (key, mac)):
                    self.expirations += 1
                return None
            if not self._signer.verify(key, value, mac, agent, expires_at):
                raise _BadRow("its HMAC does not match (tampered, truncated or another secret)")
            payload = orjson.loads(value)
            if not isinstance(payload, dict) or not isinstance(agent, str):
                raise _BadRow("it does not parse as a cache entry")
        except (_BadRow, ValueError, TypeError) as exc:
            reason = str(exc) if isinstance(exc, _BadRow) else "it does not parse"
            self._write_if_free("dropping a bad entry", conn, drop, (key, mac))
            self.integrity_failures += 1
            self._log.warning(
                "integrity",
                "response cache %s: dropped entry %s… because %s; further failures are "
                "counted in stats()['integrity_failures']",
                self.path,
                key[:12],
                reason,
            )
            return None
        self._touches.append((now, key))
        if len(self._touches) >= TOUCH_BATCH:
            self._write_if_free("writing LRU touches", conn, None, ())
        return StoredEntry(
            payload, agent, len(value), None if expires_at is None else float(expires_at)
        )

    def write(self, key: str, agent: str, value: bytes, expires_at: float | None) -> None:
        """Store an entry, keep the size bound (on the tier's thread; the tier's own set).

        The row and any eviction it calls for commit together, so the bound holds at every
        commit, even for a writer killed right after this one.
        """
        conn = self.connection
        size = len(value)
        if size > self.max_bytes:
            self.oversize += 1
            return
        now = self._clock()
        mac = self._signer.sign(key, value, agent, expires_at)
        with _transaction(conn):
            conn.execute(UPSERT, (key, agent, value, mac, size, now, now, expires_at))
            self._writes += 1
            _, total = self._ensure_totals(conn)
            if total > self.max_bytes or self._writes % SWEEP_EVERY == 0:
                self._evict(conn)
            elif len(self._touches) >= TOUCH_BATCH:
                self._apply_touches(conn)

    def write_many(self, entries: Sequence[tuple[str, str, bytes, float | None]]) -> None:
        """`write` of several entries in one transaction (on the tier's thread)."""
        conn = self.connection
        now = self._clock()
        sign = self._signer.sign
        values: list[Any] = []  # the rows' values one after the other, as `write_rows` takes
        for key, agent, value, expires_at in entries:
            size = len(value)
            if size > self.max_bytes:
                self.oversize += 1
                continue
            mac = sign(key, value, agent, expires_at)
            values += (key, agent, value, mac, size, now, now, expires_at)
        if not values:
            return
        with _transaction(conn):
            write_rows(conn, UPSERT, values)
            before, self._writes = self._writes, self._writes + len(values) // _ROW
            _, total = self._ensure_totals(conn)
            if total > self.max_bytes or before // SWEEP_EVERY != self._writes // SWEEP_EVERY:
                self._evict(conn)
            elif len(self._touches) >= TOUCH_BATCH:
                self._apply_touches(conn)

    def _read_many(self, keys: Sequence[str]) -> list[StoredEntry | None]:
        """`read` of several keys, `READ_AT_ONCE` a query (a batch job's keys mostly miss:
        one statement a key cost more than the rest of the lookup)."""
        conn = self.connection
        out: list[StoredEntry | None] = []
        for start in range(0, len(keys), READ_AT_ONCE):
            some = keys[start : start + READ_AT_ONCE]
            marks = ",".join("?" * len(some))
            found = {
                row[0]: row[1:]
                for row in conn.execute(SELECT_MANY.format(marks=marks), some).fetchall()
            }
            for key in some:
                row = found.get(key)
                if row is None:
                    out.append(None)
                    continue
                entry = self._entry(conn, key, row)
                if entry is None:  # dropped (or left for later): a repeated key finds nothing
                    del found[key]
                out.append(entry)
        return out

    def _write_if_free(
        self, what: str, conn: sqlite3.Connection, sql: str | None, args: tuple[Any, ...]
    ) -> bool:
        """Run `sql` (None: flush the touches) unless another connection holds the write lock.

        For the read path, whose answer is already verified: it must neither wait the busy
        timeout for a writer in another kernel nor fail because of one. So the lock is tried
        once (busy timeout 0 for the statement); on failure the work is left for later (queued
        touches stay queued, the deque dropping the oldest past its bound) and the read goes on.
        Returns whether the write happened.
        """
        (previous,) = conn.execute("PRAGMA busy_timeout").fetchone()
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            if sql is None:
                self._flush_touches(conn)
            else:
                conn.execute(sql, args)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            logger.debug("response cache %s: %s deferred (%s)", self.path, what, exc)
            return False
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(previous)}")
        return True

    def _flush_touches(self, conn: sqlite3.Connection) -> None:
        if self._touches:
            with _transaction(conn):
                self._apply_touches(conn)

    def _apply_touches(self, conn: sqlite3.Connection) -> None:
        batch: dict[str, float] = {}
        while self._touches:
            at, key = self._touches.popleft()
            batch[key] = at
        conn.executemany(TOUCH, ((at, key, at) for key, at in batch.items()))

    def _sweep(self, conn: sqlite3.Connection) -> None:
        with _transaction(conn):
            self._evict(conn)

    def _evict(self, conn: sqlite3.Connection) -> None:
        """Delete expired rows, then (if over the bound) LRU rows down to 90% of it.

        Runs inside the caller's write transaction; pending touches are applied first so the
        least recently used really go first.
        """
        self._apply_touches(conn)
        self.expirations += conn.execute(DELETE_EXPIRED, (self._clock(),)).rowcount
        entries, total = self._ensure_totals(conn)
        if total <= self.max_bytes:
            return
        target = int(self.max_bytes * 0.9)
        while total > target and entries > 0:
            per_row = max(1, total // entries)
            batch = min(1000, max(1, math.ceil((total - target) / per_row)))
            removed = conn.execute(EVICT_LRU, (batch,)).rowcount
            if removed <= 0:
                break
            self.evictions += removed
            entries, total = self._ensure_totals(conn)

    @staticmethod
    def _ensure_totals(conn: sqlite3.Connection) -> tuple[int, int]:
        row = conn.execute(TOTALS).fetchone()
        if row is None:  # someone deleted it: rebuild once, O(n)
            conn.execute(
                "INSERT OR REPLACE INTO totals SELECT 0, count(*), coalesce(sum(size), 0) "
                "FROM entries"
            )
            row = conn.execute(TOTALS).fetchone()
        return int(row[0]), int(row[1])

    def _counts(self) -> tuple[int, int]:
        return self._ensure_totals(self.connection)

    def _clear(self) -> int:
        conn = self.connection
        self._touches.clear()
        return int(conn.execute("DELETE FROM entries").rowcount)

    def _invalidate(self, agent: str | None, key: str | None) -> int:
        conn = self.connection
        if key is not None and agent is not None:
            cur = conn.execute("DELETE FROM entries WHERE key = ? AND agent = ?", (key, agent))
        elif key is not None:
            cur = conn.execute("DELETE FROM entries WHERE key = ?", (key,))
        else:
            cur = conn.execute("DELETE FROM entries WHERE agent = ?", (agent,))
        return int(cur.rowcount)

    def _close(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            self._guarded(self._flush_touches, None, conn)
        finally:
            conn.close()
            self._conn = None


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction: the lock is taken up front, so it waits (busy_timeout) instead of
    failing to upgrade a read later."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


def connect_patiently(
    connect: Callable[[], sqlite3.Connection], busy_timeout_s: float
) -> sqlite3.Connection:
    """`connect()`, tried again while the database is locked, for up to `busy_timeout_s`.

    Switching a new database to WAL takes an exclusive lock and does not wait for one: when two
    processes open a fresh file at the same moment, one of them gets "locked" straight away.
    """
    deadline = time.monotonic() + busy_timeout_s
    pause = 0.005
    while True:
        try:
            return connect()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
