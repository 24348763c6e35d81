"""The simulator's Message Batches: kept in files, so that any process can collect a batch.

`SimBatches` is the batch engine behind `SimulatedBackend.batch_*` and the simulator's HTTP
endpoints (`sim_batch_http`). A batch is two files under its `root`
(`state_dir/simulator/batches/`): `<id>.jsonl`, one request a line, and `<id>.json`, a small
header written last (a batch exists once its header does) saying everything else: when it was
made, how long it takes, the seed its answers come from, and how many requests had ended at
each of its ticks. Results are never stored: they are made again from the requests, line by
line, when they are read, so a batch of 100,000 requests is read in bounded memory, by this
process or another one.

What happens to a batch over its time, and how each request ends, is `sim_batch_plan`'s:
everything is decided on submission and kept in the header (a `BatchPlan`), so that the results
read later, by any process, are the answers `create()` gives the same requests.
Batches take nothing from the simulator's rate limits (the API's batches have limits of their
own). The API's rules hold: 1 to 100,000 requests, custom ids as `batch.CUSTOM_ID` and unique,
at most 256 MB (of the requests as stored here), each refused with `BadRequestError`; an unknown
id is `NotFoundError`. Batches are kept 29 days, as the API keeps results.

`cpu_s` is the CPU time this process spent on batch work (storing requests, reading them back,
composing results, and the HTTP layer's parsing and encoding), so that a benchmark can take the
simulator's own cost out of what it measures.

Example:
    >>> import asyncio, tempfile
    >>> from pathlib import Path
    >>> from agentnb.backends.base import BackendRequest
    >>> store = SimBatches(Path(tempfile.mkdtemp()), latency_s=0)
    >>> req = BackendRequest(model="claude-sonnet-5-5", task="Sort a list")
    >>> info = asyncio.run(store.create([BatchRequest("a-1", req)], seed=0))
    >>> store.retrieve(info.id).counts
    BatchCounts(processing=0, succeeded=1, errored=0, canceled=0, expired=0)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadRequestError, ConfigError, NotFoundError
from .batch import (
    MAX_BATCH_BYTES,
    MAX_BATCH_REQUESTS,
    BatchInfo,
    BatchRequest,
    BatchResult,
    check_custom_id,
)
from .sim_batch_plan import BatchPlan, ResultComposer, Tally, draw_key, request_line

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["RETENTION_S", "SimBatches"]

RETENTION_S = 29 * 86_400.0  # the API keeps a batch's results 29 days
_PER_LATENCY = 1000  # requests a batch of `latency_s` holds; larger ones take longer
_READ_BYTES = 256 * 1024  # of request lines read per chunk of results
_ID = re.compile(r"msgbatch_sim_[0-9a-f]{24}")


class SimBatches:
    """The simulator's Message Batches under `root`; see the module docstring.

    `latency_s`, `error_rate` and `expire_rate` apply to batches created from now on (each
    batch keeps its own in its header); `clock` gives POSIX seconds (shared between processes).
    """

    def __init__(
        self,
        root: Path,
        *,
        latency_s: float = 2.0,
        error_rate: float = 0.0,
        expire_rate: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (0.0 <= error_rate <= 1.0 and 0.0 <= expire_rate <= 1.0 - error_rate):
            raise ValueError(
                f"error_rate {error_rate!r} and expire_rate {expire_rate!r} must be shares "
                "between 0 and 1 together"
            )
        self.root = Path(root)
        self.latency_s = latency_s
        self.error_rate = error_rate
        self.expire_rate = expire_rate
        self.clock = clock
        self.cpu_s = 0.0
        self._cpu_lock = threading.Lock()  # creating runs in a worker thread

    @classmethod
    def from_config(cls, cfg: Config) -> SimBatches:
        """The store under `cfg.state_dir`, with the `sim_batch_*` settings (the expired share
        cut to what the errored one leaves)."""
        return cls(
            Path(cfg.state_dir).expanduser() / "simulator" / "batches",
            latency_s=cfg.sim_batch_latency_s,
            error_rate=cfg.sim_batch_error_rate,
            expire_rate=min(cfg.sim_batch_expire_rate, 1.0 - cfg.sim_batch_error_rate),
        )

    def __repr__(self) -> str:
        return f"SimBatches({str(self.root)!r}, latency_s={self.latency_s})"

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Count the CPU time of the block (this thread's) in `cpu_s`."""
        start = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - start
            with self._cpu_lock:
                self.cpu_s += spent

    # -- the API's operations ---------------------------------------------------------------
    async def create(self, requests: Sequence[BatchRequest], *, seed: int) -> BatchInfo:
        """Store a new batch (checked as the API checks it) and return it as created."""
        if not 0 < len(requests) <= MAX_BATCH_REQUESTS:
            raise BadRequestError(
                f"a batch holds 1 to {MAX_BATCH_REQUESTS:,} requests, not {len(requests):,}"
            )
        header = await asyncio.to_thread(self._store, requests, seed)
        return header.info(header.created_at)

    def retrieve(self, batch_id: str) -> BatchInfo:
        """The batch `batch_id` now (`NotFoundError` for an unknown id)."""
        return self._header(batch_id).info(self.clock())

    def cancel(self, batch_id: str) -> BatchInfo:
        """Cancel `batch_id` (nothing changes once it has ended or is being canceled)."""
        header = self._header(batch_id)
        now = self.clock()
        if header.cancel_initiated_at is None and not header.info(now).ended:
            header = header._replace(cancel_initiated_at=now)
            self._write_header(header)
        return header.info(now)

    def list_batches(
        self, limit: int = 20, *, after_id: str | None = None, before_id: str | None = None
    ) -> tuple[list[BatchInfo], bool]:
        """Up to `limit` batches, newest first, after (older than) `after_id` or before (newer
        than) `before_id`; and whether there are more beyond them."""
        now = self.clock()
        headers = sorted(self._headers(), key=lambda h: (h.created_at, h.id), reverse=True)
        ids = [h.id for h in headers]
        if before_id is not None:
            end = ids.index(before_id) if before_id in ids else 0
            page, more = headers[max(0, end - limit) : end], end > limit
        else:
            start = (
                0 if after_id is None else ids.index(after_id) + 1 if after_id in ids else len(ids)
            )
            page, more = headers[start : start + limit], len(ids) > start + limit
        return [h.info(now) for h in page], more

    async def results(self, batch_id: str) -> AsyncGenerator[BatchResult, None]:
        """The results of an ended batch, one per request in the order they were given."""
        with contextlib.closing(self.result_chunks(batch_id)) as chunks:
            for chunk in chunks:
                for result in chunk:
                    yield result
                await asyncio.sleep(0)  # a long batch lets the loop run between chunks

    def result_chunks(self, batch_id: str) -> Generator[list[BatchResult], None, None]:
        """The results of an ended batch in chunks, made from the stored requests as they are
        read (`NotFoundError` for an unknown id, `BadRequestError` while it is processing)."""
        header = self._header(batch_id)
        if not header.info(self.clock()).ended:
            raise BadRequestError(f"batch {batch_id} has not ended yet: its results are not ready")
        return self._chunks(header)

    def _chunks(self, header: BatchPlan) -> Generator[list[BatchResult], None, None]:
        compose = ResultComposer(header)
        with (self.root / f"{header.id}.jsonl").open("rb") as lines:
            while True:
                with self.timed():
                    chunk = [compose(line) for line in lines.readlines(_READ_BYTES)]
                if not chunk:
                    return
                yield chunk

    # -- files ------------------------------------------------------------------------------
    def _store(self, requests: Sequence[BatchRequest], seed: int) -> BatchPlan:
        """Write the requests, then the header (in a worker thread)."""
        with self.timed():
            root = self._ready_root()
            now = self.clock()
            ordinal = self._prune(now)
            batch_id = f"msgbatch_sim_{secrets.token_hex(12)}"
            n = len(requests)
            tally = Tally(n, draw_key(seed, ordinal), self.error_rate, self.expire_rate)
            path = root / f"{batch_id}.jsonl"
            try:
                self._write_requests(path, requests, tally)
                header = BatchPlan(
                    batch_id,
                    now,
                    self.latency_s * max(1.0, n / _PER_LATENCY),
                    n,
                    seed,
                    tally.key,
                    self.error_rate,
                    self.expire_rate,
                    *tally.counts,
                )
                self._write_header(header)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            return header

    @staticmethod
    def _write_requests(path: Path, requests: Sequence[BatchRequest], tally: Tally) -> None:
        """Check each request's custom id, store it, and count its fate."""
        seen: set[str] = set()
        size = 0
        with path.open("wb") as out:
            for custom_id, request in requests:
                if custom_id in seen:
                    raise BadRequestError(f"custom_id {custom_id!r} is used more than once")
                seen.add(check_custom_id(custom_id))
                try:
                    line = request_line(custom_id, request)
                except TypeError as exc:
                    raise BadRequestError(f"request {custom_id!r} cannot be sent: {exc}") from None
                size += len(line)
                if size > MAX_BATCH_BYTES:
                    raise BadRequestError(
                        f"a batch's requests take at most {MAX_BATCH_BYTES:,} bytes (256 MB)"
                    )
                out.write(line)
                tally.add(custom_id)

    def _ready_root(self) -> Path:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the simulator's batch directory {self.root}: "
                f"{exc.strerror or exc}; choose another state_dir"
            ) from None
        return self.root

    def _prune(self, now: float) -> int:
        """Delete the batches past their retention; the number of batches left."""
        left = 0
        for header in self._headers():
            if now - header.created_at > RETENTION_S:
                for suffix in (".json", ".jsonl"):
                    (self.root / f"{header.id}{suffix}").unlink(missing_ok=True)
            else:
                left += 1
        return left

    def _headers(self) -> Iterator[BatchPlan]:
        if not self.root.is_dir():
            return
        for path in self.root.glob("msgbatch_sim_*.json"):
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                yield BatchPlan.from_json(path.read_bytes())

    def _header(self, batch_id: str) -> BatchPlan:
        # The id is checked before it becomes a file name: a path never comes from a caller.
        if _ID.fullmatch(batch_id):
            with contextlib.suppress(FileNotFoundError):
                return BatchPlan.from_json((self.root / f"{batch_id}.json").read_bytes())
        raise NotFoundError(f"no Message Batch {batch_id[:80]!r}", status_code=404)

    def _write_header(self, header: BatchPlan) -> None:
        path = self.root / f"{header.id}.json"
        temporary = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        temporary.write_bytes(header.to_json())
        temporary.replace(path)  # atomic: a reader sees the old header or the new one
