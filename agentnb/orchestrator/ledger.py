"""The batch ledger: every Message Batch agentnb sends, written down before it is sent.

A batch is paid for once it is created, and its results come back minutes or hours later, perhaps
to another kernel. So `batches.db` in `state_dir` (made 0700; whatever the cache backend, and even
with the cache off) records, *before* a batch is created, its intent: the job, the part (a job over
the API's limits is several batches), who can see it (the backend's cache identity) and one row
per request: its custom id, cache key, agent, model and whether its answer may be cached. Once
created, the batch's id and when it was sent are added; then whether it was collected, cancelled
or could not be created. A restart at any point loses no paid result: `orch.collect(batch_id)`
reads the batch's results and finds each answer's cache key here by its custom id. Custom ids are
unique across jobs (the job's id starts each), so even a batch whose id never reached the ledger
(a crash right after it was created) is collected by its custom ids alone.

Integrity: every row carries an HMAC made with the response cache's `Signer` and secret
(`agentnb.cache.integrity`; the secret is not kept in `state_dir`). A request row signs its custom
id, job, part, cache key, agent, model and cache flag; a batch row every one of its fields. A row
whose MAC does not match (edited, forged, or written with another secret) is refused: it never
fills the cache, it is never re-signed by an update, it is counted in `integrity_failures` and
logged once.

Cost: request rows are signed and written on the ledger's thread, `CHUNK` rows a transaction
(`agentnb._sqlrows.write_rows`), a few µs a request; the event loop only awaits.

Threading and fork, as `agentnb.cache.sqlite`: the connection lives on one worker thread of the
ledger. A forked child closes its copy of the parent's connection and opens its own on first use;
one forked while the ledger's thread was inside SQLite cannot use it at all and says so.

Example:
    >>> import asyncio, tempfile
    >>> from pathlib import Path
    >>> from agentnb.cache.integrity import Signer
    >>> ledger = BatchLedger(Path(tempfile.mkdtemp()) / DB_NAME, Signer(b"secret"))
    >>> async def demo():
    ...     row = ("job1-0-0", "k" * 64, "writer", "m", True)  # custom id, key, agent, model, cache
    ...     await ledger.intent("job1", 0, "simulated", [row])
    ...     await ledger.update("job1", 0, "sent", batch_id="msgbatch_1")
    ...     return (await ledger.lookup(["job1-0-0"]))["job1-0-0"].agent
    >>> asyncio.run(demo())
    'writer'
    >>> ledger.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from .._fork import abandon, at_fork_in_child
from .._sqlrows import write_rows
from ..cache.base import LogOnce
from ..cache.integrity import Signer
from ..errors import AgentnbError, ConfigError

__all__ = ["CHUNK", "DB_NAME", "STATES", "BatchLedger", "LedgerBatch", "LedgerRequest"]

logger = logging.getLogger("agentnb.batch")

T = TypeVar("T")

DB_NAME = "batches.db"
#: Request rows written per transaction (and looked up per query).
CHUNK = 2_000
#: A batch's state in the ledger: intent (written, not yet created), sent, collected (its
#: results read into the cache), cancelled (cancelling asked; still collectable), failed (its
#: creation failed: nothing was sent).
STATES = ("intent", "sent", "collected", "cancelled", "failed")
#: Rows older than this are dropped when the ledger opens: the API keeps results 29 days.
KEEP_S = 30 * 24 * 3600.0
_LOOKUP = 500  # custom ids per SELECT ... IN (...), under SQLite's parameter limit

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS batches (
        job TEXT NOT NULL,
        part INTEGER NOT NULL,
        scope TEXT NOT NULL,
        requests INTEGER NOT NULL,
        created_at REAL NOT NULL,
        batch_id TEXT,
        sent_at REAL,
        state TEXT NOT NULL,
        ended_at REAL,
        mac BLOB NOT NULL,
        PRIMARY KEY (job, part)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS batches_by_id ON batches(batch_id)",
    """CREATE TABLE IF NOT EXISTS requests (
        custom_id TEXT PRIMARY KEY,
        job TEXT NOT NULL,
        part INTEGER NOT NULL,
        key TEXT NOT NULL,
        agent TEXT NOT NULL,
        model TEXT NOT NULL,
        cache INTEGER NOT NULL,
        mac BLOB NOT NULL
    ) WITHOUT ROWID""",
)
_BATCH_FIELDS = "job, part, scope, requests, created_at, batch_id, sent_at, state, ended_at, mac"
_REQUEST_FIELDS = "custom_id, job, part, key, agent, model, cache, mac"
_INSERT_REQUEST = f"INSERT OR REPLACE INTO requests ({_REQUEST_FIELDS}) VALUES (?,?,?,?,?,?,?,?)"


class LedgerRequest(NamedTuple):
    """One request of a batch, as the ledger holds it (verified)."""

    custom_id: str
    job: str
    part: int
    key: str
    agent: str
    model: str
    cache: bool


class LedgerBatch(NamedTuple):
    """One batch (a part of a job), as the ledger holds it (verified); times in POSIX seconds."""

    job: str
    part: int
    scope: str
    requests: int
    created_at: float
    batch_id: str | None
    sent_at: float | None
    state: str
    ended_at: float | None


#: What `intent` takes per request: (custom_id, cache key, agent, model, may be cached).
IntentRow = tuple[str, str, str, str, bool]


class BatchLedger:
    """The ledger in one SQLite file; every statement runs on the ledger's own thread.

    `path` is `state_dir / DB_NAME` (see `open`); `signer` the response cache's (same secret).
    Methods are awaited on the event loop; `close()` blocks (any thread but the ledger's).
    """

    def __init__(
        self,
        path: Path,
        signer: Signer,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 10.0,
    ) -> None:
        self.path = path
        self._signer = signer
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._executor = _executor()
        self._conn: sqlite3.Connection | None = None
        self._thread = 0
        self._busy = False  # the ledger's thread is inside SQLite (read after a fork)
        self._closed = False
        self._unusable: str | None = None  # why, in a child forked mid-statement
        self._log = LogOnce(logger)
        self.integrity_failures = 0
        at_fork_in_child(self._after_fork_in_child)

    @classmethod
    def open(cls, state_dir: Path, signer: Signer) -> BatchLedger:
        """The ledger in `state_dir` (created 0700 if needed)."""
        from ..quota.stores import prepare_state_dir

        return cls(prepare_state_dir(state_dir, "") / DB_NAME, signer)

    # -- the interface (event loop) --------------------------------------------------------
    async def intent(self, job: str, part: int, scope: str, requests: Sequence[IntentRow]) -> None:
        """Record a batch about to be created: its row, then its requests, `CHUNK` a
        transaction. Raises `AgentnbError` when it cannot be written (then do not create it)."""
        await self._call(self._intent, job, part, scope, requests)

    async def update(self, job: str, part: int, state: str, *, batch_id: str | None = None) -> None:
        """Move a batch to `state` ("sent" with its `batch_id`, "collected", "cancelled",
        "failed"); a row that fails its MAC is left alone (and counted)."""
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        await self._call(self._update, job, part, state, batch_id)

    async def batch(self, batch_id: str) -> LedgerBatch | None:
        """The batch with id `batch_id`, or None (unknown, or its row refused)."""
        found: list[LedgerBatch] = await self._call(self._batches, batch_id)
        return found[0] if found else None

    async def batches(self) -> list[LedgerBatch]:
        """Every batch the ledger holds (refused rows left out), newest first."""
        found: list[LedgerBatch] = await self._call(self._batches, None)
        return found

    async def lookup(self, custom_ids: Sequence[str]) -> dict[str, LedgerRequest]:
        """The verified requests of `custom_ids` that the ledger holds, by custom id."""
        found: dict[str, LedgerRequest] = await self._call(self._lookup, custom_ids)
        return found

    async def aclose(self) -> None:
        """Close the connection and the ledger's thread."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def close(self) -> None:
        """Like `aclose`, blocking the calling thread."""
        if self._closed:
            return
        self._closed = True
        self._executor.submit(self._close).result()
        self._executor.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"<BatchLedger {self.path}>"

    # -- thread plumbing ------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise AgentnbError(f"the batch ledger {self.path} is closed")
        if self._unusable is not None:
            raise AgentnbError(self._unusable)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._run, fn, *args)
        except sqlite3.Error as exc:
            raise AgentnbError(f"batch ledger {self.path}: {exc}") from exc

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        self._busy = True
        try:
            return fn(*args)
        finally:
            self._busy = False

    def _after_fork_in_child(self) -> None:
        conn, self._conn = self._conn, None
        if self._busy:  # inside SQLite at the fork: not even closing it is safe
            abandon(conn)
            self._unusable = (
                f"this process was forked while the batch ledger {self.path} was in use; "
                "use the ledger from the parent, or from a new process"
            )
            return
        if conn is not None:
            conn.close()
        if not self._closed:
            self._executor = _executor()

    # -- on the ledger's thread -------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        """The connection, opened on first use (on the ledger's thread, like every statement)."""
        conn = self._conn
        if conn is not None:
            return conn
        self._thread = threading.get_ident()
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                conn = self._connect()
                break
            except sqlite3.OperationalError as exc:
                # Two kernels switching a new file to WAL at once: one is refused at once.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise ConfigError(
                        f"cannot open the batch ledger {self.path}: {exc}; choose another state_dir"
                    ) from None
                time.sleep(0.01)
        self._conn = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,  # a forked child closes the parent's copy (see the doc)
        )
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            with _transaction(conn):
                for statement in _SCHEMA:
                    conn.execute(statement)
                old = self._clock() - KEEP_S
                if conn.execute("SELECT 1 FROM batches WHERE created_at < ?", (old,)).fetchone():
                    conn.execute(
                        "DELETE FROM requests WHERE job IN "
                        "(SELECT job FROM batches WHERE created_at < ?)",
                        (old,),
                    )
                    conn.execute("DELETE FROM batches WHERE created_at < ?", (old,))
        except BaseException:
            conn.close()
            raise
        return conn

    def _intent(self, job: str, part: int, scope: str, requests: Sequence[IntentRow]) -> None:
        conn = self._connection()
        row = LedgerBatch(
            job, part, scope, len(requests), self._clock(), None, None, "intent", None
        )
        sign = self._signer.sign
        start = 0
        with _transaction(conn):
            conn.execute(
                f"INSERT OR REPLACE INTO batches ({_BATCH_FIELDS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (*row, self._batch_mac(row)),
            )
            start = self._write_requests(conn, job, part, requests, 0, sign)
        while start < len(requests):
            with _transaction(conn):
                start = self._write_requests(conn, job, part, requests, start, sign)

    @staticmethod
    def _write_requests(
        conn: sqlite3.Connection,
        job: str,
        part: int,
        requests: Sequence[IntentRow],
        start: int,
        sign: Callable[..., bytes],
    ) -> int:
        end = min(len(requests), start + CHUNK)
        values: list[Any] = []  # the rows' values one after the other, as `write_rows` takes
        for custom_id, key, agent, model, cache in requests[start:end]:
            mac = sign(key, _request_value(custom_id, job, part, model, cache), agent)
            values += (custom_id, job, part, key, agent, model, int(cache), mac)
        write_rows(conn, _INSERT_REQUEST, values)
        return end

    def _update(self, job: str, part: int, state: str, batch_id: str | None) -> None:
        conn = self._connection()
        with _transaction(conn):
            found = conn.execute(
                f"SELECT {_BATCH_FIELDS} FROM batches WHERE job = ? AND part = ?", (job, part)
            ).fetchall()
            row = self._verified_batch(found[0]) if found else None
            if row is None:
                return
            now = self._clock()
            if state == "sent":
                row = row._replace(batch_id=batch_id, sent_at=now, state=state)
            else:
                row = row._replace(state=state, ended_at=now)
            conn.execute(
                "UPDATE batches SET batch_id = ?, sent_at = ?, state = ?, ended_at = ?, mac = ? "
                "WHERE job = ? AND part = ?",
                (
                    row.batch_id,
                    row.sent_at,
                    row.state,
                    row.ended_at,
                    self._batch_mac(row),
                    job,
                    part,
                ),
            )

    def _batches(self, batch_id: str | None) -> list[LedgerBatch]:
        conn = self._connection()
        if batch_id is None:
            rows = conn.execute(
                f"SELECT {_BATCH_FIELDS} FROM batches ORDER BY created_at DESC, part DESC"
            ).fetchall()
        else:
            rows = conn.execute(
                f"SELECT {_BATCH_FIELDS} FROM batches WHERE batch_id = ?", (batch_id,)
            ).fetchall()
        out = []
        for row in rows:
            batch = self._verified_batch(row)
            if batch is not None:
                out.append(batch)
        return out

    def _lookup(self, custom_ids: Sequence[str]) -> dict[str, LedgerRequest]:
        conn = self._connection()
        found: dict[str, LedgerRequest] = {}
        verify = self._signer.verify
        for start in range(0, len(custom_ids), _LOOKUP):
            some = custom_ids[start : start + _LOOKUP]
            marks = ",".join("?" * len(some))
            rows = conn.execute(
                f"SELECT {_REQUEST_FIELDS} FROM requests WHERE custom_id IN ({marks})", some
            ).fetchall()
            for custom_id, job, part, key, agent, model, cache, mac in rows:
                ok = (
                    isinstance(custom_id, str)
                    and isinstance(job, str)
                    and isinstance(part, int)
                    and isinstance(key, str)
                    and isinstance(model, str)
                    and cache in (0, 1)
                    and verify(key, _request_value(custom_id, job, part, model, cache), mac, agent)
                )
                if ok:
                    found[custom_id] = LedgerRequest(
                        custom_id, job, part, key, agent, model, bool(cache)
                    )
                else:
                    self._refused(f"request {str(custom_id)[:80]!r}")
        return found

    def _verified_batch(self, row: Sequence[Any]) -> LedgerBatch | None:
        try:
            batch = LedgerBatch(*row[:-1])
            good = self._signer.verify(
                f"{batch.job}:{batch.part}", _batch_value(batch), row[-1], "", None
            )
        except (TypeError, ValueError):
            good = False
        if not good:
            self._refused(f"batch {str(row[5] or row[0])[:80]!r}")
            return None
        return batch

    def _batch_mac(self, batch: LedgerBatch) -> bytes:
        return self._signer.sign(f"{batch.job}:{batch.part}", _batch_value(batch))

    def _refused(self, what: str) -> None:
        self.integrity_failures += 1
        self._log.warning(
            "integrity",
            "batch ledger %s: refused the row of %s: its HMAC does not match (edited, forged or "
            "written with another secret); it fills nothing. Further refusals are counted in "
            "integrity_failures",
            self.path,
            what,
        )

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="agentnb-batch-ledger"
    )


def _request_value(custom_id: str, job: str, part: int, model: str, cache: bool | int) -> bytes:
    # Domain-separated from a cache entry's value (JSON), so neither MAC passes for the other.
    return f"ledger:request\0{custom_id}\0{job}\0{part}\0{model}\0{int(cache)}".encode()


def _batch_value(b: LedgerBatch) -> bytes:
    fields = (b.scope, b.requests, b.created_at, b.batch_id, b.sent_at, b.state, b.ended_at)
    return ("ledger:batch\0" + "\0".join(map(repr, fields))).encode()


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction with the lock taken up front (it waits, up to the busy timeout)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
