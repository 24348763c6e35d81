"""The batch path: prepared calls sent as Message Batches, at half the price, results streamed.

`BatchJob.submit()` (what `execute_multiple(calls, batch=True)` and `submit_batch` run) sends
the job (`batchsend.py`): the calls the response cache holds are answered at once and never
submitted, identical requests are sent once (their twins get the answer as cache hits, as the
cache's single-flight gives them online), and the rest goes in batches within the API's limits,
each reserved in the job's budget at the batch price and written to the ledger (`ledger.py`)
before it is created.

`BatchJob.wait()` follows each batch (`follow.py`: polled at `batch_poll_s`, each wait half as
long again, up to `batch_poll_max_s`; its counts, the elapsed time and the cost on the progress
display) and reads its results as a stream once it ended, `CHUNK` at a time: the answers go to
the cache (one `set_many` a chunk) and are recorded at the batch price with their `batch_id`.
A structured answer that breaks its schema is paid for but never cached: its call goes again
online, where the validation stage gives it its repair turn (or its `SchemaError`).
A request that errored retryably is tried again (`batch_retry`: "online", through the normal
pipeline, or "batch", in a follow-up batch, until its `max_attempts`); one that errored for
good, expired or was canceled becomes its call's `AgentCallError`, naming its custom id and
batch. None is dropped. `results()` gives what `execute_multiple` returns, in input order.

Interrupting a wait (`CancelledError`; `KeyboardInterrupt` in the blocking facade) cancels
nothing at the provider: the job detaches, releases its budget reservation and logs how to pick
the batches up (`orch.collect(batch_id)`, or `wait()` again). `orch.cancel_batch` cancels.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..backends import BackendResponse
from ..backends.batch import BatchCounts, BatchInfo, BatchResult
from ..errors import (
    AgentCallError,
    AgentnbError,
    BackendError,
    BatchRequestError,
    BudgetExceededError,
)
from ..progress import Progress, job_progress
from ..result import AgentResult
from .admission import Admission, ConcurrencyLimit
from .batchsend import Part, cut, notes, plan, send, totals
from .budget import Budget
from .caching import cache_for
from .codec import to_payload
from .follow import detached_message, poll, read_results
from .gcpolicy import LARGE_JOB, young_generation
from .records import CallState
from .structured import problem

if TYPE_CHECKING:
    from .core import AsyncAgentOrchestrator, ProgressArg
    from .prepare import PreparedCall

__all__ = ["BatchJob"]

logger = logging.getLogger("agentnb.batch")

Outcome = AgentResult | BaseException


class BatchJob:
    """Calls sent as Message Batches: their results once the batches end.

    Made, with every batch created, by `execute_multiple(calls, batch=True, wait=False)` or
    `submit_batch(prepared)`. `ids` are the batches' ids; `await status()` their counts now;
    `await wait()` waits for them to end and collects their results; `await results()` gives
    the calls' results in input order (waiting first if need be), as `execute_multiple` does.
    Interrupting a wait detaches (the batches go on; `orch.collect(id)` or `wait()` again picks
    them up); `orch.cancel_batch(id)` cancels one. See the module docstring.

    Example:
        >>> job = await orch.execute_multiple(calls, batch=True, wait=False)  # doctest: +SKIP
        >>> job.ids, await job.status()                                     # doctest: +SKIP
        >>> results = await job.results()                                   # doctest: +SKIP
    """

    def __init__(
        self,
        orch: AsyncAgentOrchestrator,
        calls: Sequence[PreparedCall],
        budget: Budget,
        *,
        return_exceptions: bool = True,
        max_concurrency: int | None = None,
        progress: ProgressArg = None,
    ) -> None:
        self.job_id = uuid.uuid4().hex[:16]
        self.calls = calls
        self._orch = orch
        self._budget = budget
        self._return_exceptions = return_exceptions
        self._max_concurrency = max_concurrency
        self._progress_arg = progress
        self._progress: Progress | None = None  # while a wait shows one
        self._results: list[Outcome | None] = [None] * len(calls)
        self._sent: list[int] = []  # request n -> the position of the call that sends it
        self._twins: dict[int, list[int]] = {}  # request n -> positions of identical calls
        self._parts: list[Part] = []
        self._again: list[tuple[int, int]] = []  # (request, round) for a follow-up batch
        self._online: list[int] = []  # requests to retry through the normal pipeline
        self._lock = asyncio.Lock()
        self._done = False

    # -- the handle --------------------------------------------------------------------------
    @property
    def ids(self) -> tuple[str, ...]:
        """The ids of the job's batches (follow-up batches included once sent)."""
        return tuple(p.batch_id for p in self._parts if p.batch_id is not None)

    @property
    def done(self) -> bool:
        """True once every call has its result."""
        return self._done

    async def status(self) -> BatchCounts:
        """The job's requests by state now, summed over its batches (the provider is asked
        about those not yet ended)."""
        return await self._orch.on_home(self._status())

    async def wait(self, progress: ProgressArg = None) -> BatchCounts:
        """Wait for every batch to end and collect its results; the final counts.

        `progress`: as for `execute_multiple` (default: what the job was made with)."""
        if not self._done:
            await self._orch.on_home(self._wait(progress))
        return totals(self._parts)

    async def results(self, progress: ProgressArg = None) -> list[Outcome]:
        """The calls' results in input order (waiting first if need be): an `AgentResult`, or
        with `return_exceptions=True` the call's exception; without it the first is raised."""
        await self.wait(progress)
        outcomes: list[Outcome] = []
        for outcome in self._results:
            assert outcome is not None  # every call has its result once done
            if isinstance(outcome, BaseException) and not self._return_exceptions:
                raise outcome
            outcomes.append(outcome)
        return outcomes

    def detached_message(self) -> str:
        """What to do about the job's batches still running after an interrupt."""
        return detached_message([p.batch_id for p in self._parts if p.live and p.batch_id])

    def __repr__(self) -> str:
        state = "done" if self._done else "running"
        return (
            f"<BatchJob {self.job_id}: {len(self.calls)} calls, batches {list(self.ids)}, {state}>"
        )

    # -- submitting (home loop) --------------------------------------------------------------
    async def submit(self) -> BatchJob:
        """Answer the cache hits and send the rest as batches (see the module docstring)."""
        with young_generation(self._gc_threshold()):
            self._sent, self._twins = await plan(
                self._orch, self.calls, self._results, self._budget
            )
            backend = self._orch.backend
            if self._sent and not backend.supports_batches:
                raise AgentnbError(
                    f"the {backend.label} backend has no Message Batches; run the calls without "
                    "batch=True"
                )
            try:
                await self._send_all(range(len(self._sent)), 1)
            except asyncio.CancelledError:  # the batches created so far go on: say so
                self._detach()
                raise
        return self

    def _gc_threshold(self) -> int:
        # As for a large online job (`gcpolicy`): a large job's objects (requests, ledger and
        # cache rows, results) would otherwise be promoted and rescanned, chunk after chunk.
        return self._orch.config.job_gc_threshold if len(self.calls) >= LARGE_JOB else 0

    async def _send_all(self, requests: Sequence[int], round_: int) -> None:
        calls, sent, budget, show = self.calls, self._sent, self._budget, self._progress
        parts = cut(
            self.job_id, len(self._parts), requests, lambda n: calls[sent[n]].request, round_
        )
        self._parts += parts
        for i, part in enumerate(parts):
            try:
                await send(self._orch, part, [calls[sent[n]] for n in part.members], budget)
            except BudgetExceededError as refused:  # no later batch goes either
                for later in parts[i:]:
                    self._fail_all(later, refused)
                return
            except AgentnbError as exc:  # not created: its calls fail
                self._fail_all(part, exc)
                continue
            if show is not None and round_ == 1:  # a retry's request was in flight already
                show.started(len(part.members))

    # -- waiting (home loop) -----------------------------------------------------------------
    async def _wait(self, progress: ProgressArg) -> None:
        async with self._lock:
            if self._done:
                return
            orch, total = self._orch, len(self.calls)
            arg = self._progress_arg if progress is None else progress
            with (
                young_generation(self._gc_threshold()),
                job_progress(orch.progress_for(arg, total), total, label="message batch") as show,
            ):
                self._progress = show
                self._catch_up(show)
                try:
                    await self._collect_all()
                except asyncio.CancelledError:
                    self._detach()
                    raise
                finally:
                    self._progress = None
            self._done = True

    async def _collect_all(self) -> None:
        while True:
            live = [p for p in self._parts if p.live]
            if live:
                async with asyncio.TaskGroup() as tg:
                    for part in live:
                        tg.create_task(self._follow(part))
            if not self._again:
                break
            again, self._again = self._again, []
            for round_ in sorted({r for _, r in again}):
                await self._send_all([n for n, r in again if r == round_], round_)
        if self._online:  # kept until done: a wait interrupted here goes on with the rest
            await self._retry_online(self._online)
            self._online = []
        for part in self._parts:  # a request the provider never reported is not dropped either
            for n in list(part.pending):
                self._fail(n, part, part.missing(n))

    async def _follow(self, part: Part) -> None:
        """Wait for one batch to end and read its results; its failure fails its requests."""
        orch = self._orch
        assert part.batch_id is not None
        try:
            part.info = await poll(orch.backend, part.batch_id, orch.config, self._seen(part))
            await read_results(orch, part.batch_id, lambda chunk: self._take(part, chunk))
        except AgentnbError as exc:
            gone = AgentnbError(
                f"message batch {part.batch_id}: {exc}; its results may still be collected "
                f"with orch.collect({part.batch_id!r})"
            )
            part.over = True
            self._fail_all(part, gone)
            self._settle(part)
            return
        part.over = True
        self._settle(part)
        try:
            await orch.ledger.update(self.job_id, part.number, "collected")
        except AgentnbError as exc:  # the results are in: only the ledger's note is missing
            logger.warning("batch %s: %s", part.batch_id, exc)

    async def _take(self, part: Part, chunk: Sequence[BatchResult]) -> None:
        """One chunk of a batch's results: the answers cached (one write), then recorded."""
        mine: list[tuple[int, BatchResult]] = []
        pending, request_of = part.pending, part.request_of
        for r in chunk:
            n = request_of(r.custom_id)
            if n in pending:
                mine.append((n, r))
            else:  # not ours, or read before (a stream read again after a failure)
                logger.debug("batch %s: result %r skipped", part.batch_id, r.custom_id)
        cache, calls, sent = self._orch.cache, self.calls, self._sent
        entries = []
        invalid: set[int] = set()
        for n, r in mine:
            p = calls[sent[n]]
            if r.response is None or r.kind != "succeeded":
                continue
            schema = p.request.schema
            if schema is not None and problem(schema, r.response) is not None:
                invalid.add(n)  # never cached: the online retry validates (and repairs) it
            elif cache_for(cache, p):
                entries.append((p.key, to_payload(r.response), p.spec.name))
        if entries and cache is not None:
            await cache.set_many(entries, fresh=True)  # to_payload made each, for this call
        started_at = datetime.fromtimestamp(part.state.started, UTC)  # the part's requests' own
        for n, r in mine:
            if n in invalid and r.response is not None:
                self._invalid(n, part, r.response)
            elif r.kind == "succeeded" and r.response is not None:
                self._answer(n, part, r.response, started_at)
            else:
                self._failed_request(n, part, r)

    def _invalid(self, n: int, part: Part, response: BackendResponse) -> None:
        """A structured answer that breaks its schema: paid for, then asked again online, where
        the validation stage gives it its repair turn (or its `SchemaError`)."""
        part.pending.discard(n)
        cost = self._orch.prices.cost(response.model, response.usage, batch=True)
        part.costs.append((cost, response.model))
        self._online.append(n)

    def _answer(self, n: int, part: Part, response: BackendResponse, started_at: datetime) -> None:
        part.pending.discard(n)
        recorder, show, budget = self._orch.recorder, self._progress, self._budget
        calls, pos = self.calls, self._sent[n]
        result = self._results[pos] = recorder.succeeded(
            calls[pos], response, part.state, False, part.batch_id, started_at
        )
        part.costs.append((result.cost_usd, response.model))
        budget.finish()
        if show is not None:
            show.finished(cost_usd=result.cost_usd)
        for twin in self._twins.get(n, ()):
            self._results[twin] = recorder.succeeded(
                calls[twin], response, part.state, True, part.batch_id, started_at
            )
            budget.finish()
            if show is not None:
                show.finished(cached=True, was_in_flight=False)

    def _failed_request(self, n: int, part: Part, r: BatchResult) -> None:
        """A request that errored, expired or was canceled: retried, or its calls' error."""
        p = self.calls[self._sent[n]]
        if r.kind != "errored":
            error: BackendError = BatchRequestError(
                f"request {r.custom_id} of batch {part.batch_id} {r.kind}",
                kind=r.kind,
                batch_id=part.batch_id or "",
                custom_id=r.custom_id,
            )
        else:
            part.costs.append((0.0, p.request.model))  # reached the provider, billed nothing
            error = r.error or BackendError(f"request {r.custom_id} errored, saying nothing more")
            if error.retryable and part.round < p.max_attempts:
                part.pending.discard(n)  # still in flight, in the next round
                if self._orch.config.batch_retry == "online":
                    self._online.append(n)
                else:
                    self._again.append((n, part.round + 1))
                return
        self._fail(n, part, error)

    async def _retry_online(self, requests: list[int]) -> None:
        """Try `requests` again through the normal pipeline (their twins then hit the cache)."""
        orch, show, results, calls = self._orch, self._progress, self._results, self.calls
        limit: Admission = orch.admission
        if self._max_concurrency is not None:
            limit = ConcurrencyLimit(self._max_concurrency)
        gate = asyncio.Semaphore(self._max_concurrency or orch.config.max_concurrency)

        async def call(pos: int, in_flight: bool) -> Outcome:
            try:
                outcome: Outcome = await orch.call(calls[pos], limit, self._budget)
            except Exception as exc:
                outcome = exc
            results[pos] = outcome
            if show is not None:
                _finished(show, outcome, in_flight)
            return outcome

        async def one(n: int) -> None:
            async with gate:
                first = await call(self._sent[n], True)
                for twin in self._twins.get(n, ()):
                    if isinstance(first, AgentResult):
                        await call(twin, False)
                        continue
                    results[twin] = first  # failed alike, as single-flight's waiters do
                    orch.recorder.failed(calls[twin], CallState(), first)
                    if show is not None:
                        show.finished(failed=True, was_in_flight=False)

        async with asyncio.TaskGroup() as tg:
            for n in requests:
                if results[self._sent[n]] is None:  # not answered by an earlier, interrupted wait
                    tg.create_task(one(n))

    # -- outcomes ----------------------------------------------------------------------------
    def _fail(self, n: int, part: Part, error: BaseException) -> None:
        """Request `n` of `part` ended without an answer: `error` for its calls, recorded."""
        part.pending.discard(n)
        recorder, show = self._orch.recorder, self._progress
        sent = part.batch_id is not None or part.round > 1  # in flight since it was sent
        for i, pos in enumerate((self._sent[n], *self._twins.get(n, ()))):
            p = self.calls[pos]
            exc = error
            if isinstance(error, BackendError):  # the call's own error names it and its request
                exc = AgentCallError(
                    f"agent {p.spec.name!r}: batch request {part.where(n)}: "
                    f"{type(error).__name__}: {error}",
                    agent=p.spec.name,
                    attempts=part.round,
                    last_error=error,
                )
                exc.__cause__ = error
            self._results[pos] = exc
            recorder.failed(p, part.state, exc, part.batch_id)
            if show is not None:
                show.finished(failed=True, was_in_flight=sent and i == 0)

    def _fail_all(self, part: Part, error: BaseException) -> None:
        for n in list(part.pending):
            self._fail(n, part, error)

    def _settle(self, part: Part) -> None:
        if part.reserved is not None or part.costs:
            self._budget.settle_batch(part.reserved, part.costs)
        part.reserved, part.costs = None, []

    def _detach(self) -> None:
        for part in self._parts:  # what they held is released; their spend counts when read
            if part.reserved is not None:
                self._budget.settle_batch(part.reserved, [])
                part.reserved = None
        if any(p.live for p in self._parts):
            logger.warning("%s", self.detached_message())

    # -- what shows ----------------------------------------------------------------------------
    def _catch_up(self, show: Progress) -> None:
        """Show what happened before this wait: calls answered, and requests in flight."""
        for outcome in self._results:
            if outcome is not None:
                _finished(show, outcome, False)
        flying = sum(len(p.pending) for p in self._parts if p.batch_id is not None)
        if flying:
            show.started(flying)
        show.note(**notes(self._parts))

    def _seen(self, part: Part) -> Callable[[BatchInfo], None]:
        def seen(info: BatchInfo) -> None:
            part.info = info
            if self._progress is not None:
                self._progress.note(**notes(self._parts))

        return seen

    async def _status(self) -> BatchCounts:
        backend = self._orch.backend
        for part in self._parts:
            if part.batch_id is not None and not (part.info is not None and part.info.ended):
                part.info = await backend.batch_retrieve(part.batch_id)
        return totals(self._parts)


def _finished(show: Progress, outcome: Outcome, in_flight: bool) -> None:
    """Count a call's outcome on a progress display."""
    if isinstance(outcome, AgentResult):
        show.finished(cached=outcome.cached, cost_usd=outcome.cost_usd, was_in_flight=in_flight)
    else:
        show.finished(failed=True, was_in_flight=in_flight)
