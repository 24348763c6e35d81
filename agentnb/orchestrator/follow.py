"""Following a Message Batch once it is sent: polling it, reading its results, and picking up
the batches the ledger knows (`orch.batches()`, `orch.collect(id)`, `orch.cancel_batch(id)`).

`poll` asks for a batch's state until it ended, `batch_poll_s` first and each wait half as long
again, up to `batch_poll_max_s` (a batch takes minutes to hours: asking every second for an
hour is 3,600 requests, growing waits a few dozen). `read_results` reads an ended batch's
results as a stream, `CHUNK` at a time, reading again from the start after a retryable failure.

`collect` needs nothing but the ledger: in a new kernel it waits for the batch, then fills the
response cache from its results, finding each answer's cache key by its custom id (a row refused
by the ledger's HMAC fills nothing), and records each answer at the batch price. So a kernel
restart between submitting and collecting loses no paid result, and re-running the same calls
afterwards, online or as a batch, costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..backends import Backend
from ..backends.batch import RESULT_KINDS, BatchCounts, BatchInfo, BatchResult
from ..config import Config
from ..errors import BackendError
from ..progress import Progress, job_progress
from .attempts import sleep_at_least
from .budget import usd
from .codec import to_payload
from .ledger import CHUNK

if TYPE_CHECKING:
    import pandas as pd

    from .core import AsyncAgentOrchestrator

__all__ = [
    "BATCH_COLUMNS",
    "BatchCollection",
    "cancel",
    "collect",
    "detached_message",
    "list_batches",
    "poll",
    "read_results",
]

logger = logging.getLogger("agentnb.batch")

#: Columns of `orch.batches()`.
BATCH_COLUMNS = (
    "batch_id",
    "state",
    "status",
    "requests",
    *BatchCounts._fields,
    "created_at",
    "sent_at",
    "ended_at",
    "job",
    "part",
    "scope",
)
_ASK_AT_ONCE = 8  # batches asked about at the same time by `list_batches`


async def poll(
    backend: Backend, batch_id: str, config: Config, seen: Callable[[BatchInfo], None]
) -> BatchInfo:
    """Ask for batch `batch_id` until it ended (each answer given to `seen`), waiting
    `batch_poll_s`, then half as long again each time, up to `batch_poll_max_s`. A retryable
    failure to ask is waited out like a poll; another is raised."""
    interval = config.batch_poll_s
    while True:
        try:
            info = await backend.batch_retrieve(batch_id)
        except BackendError as exc:
            if not exc.retryable:
                raise
            logger.debug("batch %s: asking for its state failed (%s); asking again", batch_id, exc)
        else:
            seen(info)
            if info.ended:
                return info
        await asyncio.sleep(interval)
        interval = min(interval * 1.5, config.batch_poll_max_s)


async def read_results(
    orch: AsyncAgentOrchestrator,
    batch_id: str,
    take: Callable[[Sequence[BatchResult]], Awaitable[None]],
) -> None:
    """Give the results of ended batch `batch_id` to `take`, `CHUNK` at a time, as they stream
    in. After a retryable failure the stream is read again from its start (up to
    `max_attempts` times): `take` must skip what it already has."""
    attempt = 0
    while True:
        attempt += 1
        chunk: list[BatchResult] = []
        try:
            async for result in orch.backend.batch_results(batch_id):
                chunk.append(result)
                if len(chunk) >= CHUNK:
                    await take(chunk)
                    chunk = []
            if chunk:
                await take(chunk)
            return
        except BackendError as exc:
            if not exc.retryable or attempt >= orch.config.max_attempts:
                raise
            await sleep_at_least(orch.retrying.backoff(attempt, exc))


def detached_message(ids: Sequence[str]) -> str:
    """What an interrupted wait says about the batches it leaves running."""
    if not ids:
        return "no message batch of this job is still running"
    many = len(ids) > 1
    shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    return (
        f"message batch{'es' if many else ''} {shown} detached, not cancelled: the provider goes "
        f"on with {'them' if many else 'it'}. Pick up the results with orch.collect({ids[0]!r})"
        f"{' (one call per batch; orch.batches() lists them)' if many else ''} or job.wait() "
        "again; orch.cancel_batch(id) cancels."
    )


@dataclass(frozen=True)
class BatchCollection:
    """What `orch.collect(batch_id)` did: the batch's results by kind (`counts`; `processing`
    is 0), how many answers it wrote to the response cache (`cached`), how many results it
    refused (`refused`: no ledger row, or one failing its HMAC: they fill nothing), and what
    the answers cost at the batch price (`cost_usd`; 0 when `already` collected before, whose
    answers were counted then)."""

    batch_id: str
    counts: BatchCounts
    cached: int
    refused: int
    cost_usd: float
    already: bool = False

    def __repr__(self) -> str:
        c = self.counts
        kinds = ", ".join(f"{n} {k}" for k, n in zip(RESULT_KINDS, c[1:], strict=True) if n)
        again = " (collected before: nothing recorded again)" if self.already else ""
        refused = f", {self.refused} refused by the ledger" if self.refused else ""
        return (
            f"batch {self.batch_id}: {kinds or 'no results'}; {self.cached} answers cached"
            f"{refused}; cost {usd(self.cost_usd)}{again}"
        )


async def collect(
    orch: AsyncAgentOrchestrator, batch_id: str, progress: Progress | bool
) -> BatchCollection:
    """`orch.collect(batch_id)` on the home loop: see the module docstring."""
    backend, ledger, cache = orch.backend, orch.ledger, orch.cache
    entry = await ledger.batch(batch_id)
    record = entry is None or entry.state != "collected"
    kinds: Counter[str] = Counter()
    costs: list[tuple[float, str]] = []
    cached = refused = 0
    total = entry.requests if entry is not None else None
    with job_progress(progress, total, label=f"collect {batch_id}") as show:

        def seen(info: BatchInfo) -> None:
            show.note(**info.counts._asdict())

        info = await poll(backend, batch_id, orch.config, seen)
        started = (entry.sent_at or entry.created_at) if entry is not None else info.created_at

        async def take(chunk: Sequence[BatchResult]) -> None:
            nonlocal cached, refused
            rows = await ledger.lookup([r.custom_id for r in chunk])
            entries = []
            for r in chunk:
                kinds[r.kind] += 1
                row = rows.get(r.custom_id)
                if row is None:  # unknown here, or refused by its HMAC: it fills nothing
                    refused += 1
                    show.finished(failed=True, was_in_flight=False)
                    continue
                response = r.response
                if r.kind != "succeeded" or response is None:
                    show.finished(failed=True, was_in_flight=False)
                    continue
                if row.cache and cache is not None and not cache.is_excluded(row.agent):
                    entries.append((row.key, to_payload(response), row.agent))
                cost = 0.0
                if record:
                    cost = orch.recorder.collected(row.agent, response, batch_id, row.job, started)
                    costs.append((cost, response.model))
                show.finished(cost_usd=cost, was_in_flight=False)
            if entries and cache is not None:
                await cache.set_many(entries, fresh=True)  # to_payload made each
                cached += len(entries)

        await read_results(orch, batch_id, take)
    if record:
        orch.session_budget.settle_batch(None, costs)
    if entry is not None:
        await ledger.update(entry.job, entry.part, "collected")
    counts = BatchCounts(0, *(kinds[k] for k in RESULT_KINDS))
    done = BatchCollection(
        batch_id, counts, cached, refused, sum(c for c, _ in costs), already=not record
    )
    if counts.errored or counts.expired or counts.canceled:
        logger.info(
            "%r: run the same calls again to retry the others (the answers are cached)", done
        )
    return done


async def cancel(orch: AsyncAgentOrchestrator, batch_id: str) -> BatchInfo:
    """`orch.cancel_batch(batch_id)` on the home loop: ask the provider to cancel it (what it
    answered before stays collectable), and note it in the ledger."""
    info = await orch.backend.batch_cancel(batch_id)
    entry = await orch.ledger.batch(batch_id)
    if entry is not None and entry.state != "collected":
        await orch.ledger.update(entry.job, entry.part, "cancelled")
    return info


async def list_batches(orch: AsyncAgentOrchestrator) -> pd.DataFrame:
    """`orch.batches()` on the home loop: the ledger's batches, newest first, with the
    provider's live state of those not yet collected that this backend can see."""
    import pandas as pd

    entries = await orch.ledger.batches()
    backend = orch.backend
    live: dict[str, BatchInfo | BackendError] = {}
    if backend.supports_batches:
        scope = backend.cache_identity
        ask = [
            e.batch_id
            for e in entries
            if e.batch_id is not None and e.state in ("sent", "cancelled") and e.scope == scope
        ]
        gate = asyncio.Semaphore(_ASK_AT_ONCE)

        async def one(batch_id: str) -> None:
            async with gate:
                try:
                    live[batch_id] = await backend.batch_retrieve(batch_id)
                except BackendError as exc:
                    live[batch_id] = exc

        async with asyncio.TaskGroup() as tg:
            for batch_id in ask:
                tg.create_task(one(batch_id))
    rows = []
    for e in entries:
        info = live.get(e.batch_id or "")
        if isinstance(info, BatchInfo):
            status: str | None = info.status
            counts: tuple[int | None, ...] = tuple(info.counts)
        else:
            status = None if info is None else f"unknown ({type(info).__name__})"
            counts = (None,) * len(BatchCounts._fields)
        rows.append(
            (
                e.batch_id,
                e.state,
                status,
                e.requests,
                *counts,
                _when(e.created_at),
                _when(e.sent_at),
                _when(e.ended_at),
                e.job,
                e.part,
                e.scope,
            )
        )
    frame = pd.DataFrame(rows, columns=list(BATCH_COLUMNS))
    ints = {name: "Int64" for name in ("requests", *BatchCounts._fields, "part")}
    times = {name: "datetime64[us, UTC]" for name in ("created_at", "sent_at", "ended_at")}
    strings = {name: "string" for name in ("batch_id", "state", "status", "job", "scope")}
    return frame.astype({**ints, **times, **strings})


def _when(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)
