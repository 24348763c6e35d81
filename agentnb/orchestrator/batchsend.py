"""Sending a batch job: which calls need sending, cut into batches within the API's limits.

`plan` answers from the response cache what it holds (`ResponseCache.get_many`, a chunk at a
time) and numbers the distinct requests left, 0, 1, ... in input order: identical calls (one
cache key) send one request. `cut` makes batches (`Part`s) of them; `send` sends one: its
worst case at the batch price reserved in the job's budget (`Budget.admit_now`, refused before
anything is done), its intent written to the ledger, the batch created (429/529 retried as a
call's are), its id written to the ledger.

A part's custom ids are `<job>-<part>-<n>` (`n` the request's number): within the API's rule
(`CUSTOM_ID`), unique in the batch, and unique across jobs, which lets the ledger find any
result's request by its custom id alone. `cut` keeps each part within `MAX_BATCH_REQUESTS`
requests and `MAX_BATCH_BYTES` of JSON, the size estimated from the texts (`json_size`, never
under what the SDK sends).

Example:
    >>> part = Part("0123456789abcdef", 1, [4, 5], 1)
    >>> part.custom_id(4), part.request_of("0123456789abcdef-1-5"), part.request_of("x-1-5")
    ('0123456789abcdef-1-4', 5, -1)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from ..backends import BackendRequest
from ..backends.batch import (
    MAX_BATCH_BYTES,
    MAX_BATCH_REQUESTS,
    BatchCounts,
    BatchInfo,
    BatchRequest,
)
from ..errors import AgentnbError, BatchRequestError, OptionError
from ..pricing import BATCH_FACTOR
from ..result import AgentResult
from .budget import Budget, usd, worst_cost
from .caching import cache_for
from .codec import from_payload
from .ledger import CHUNK
from .records import CallState

if TYPE_CHECKING:
    from .core import AsyncAgentOrchestrator
    from .prepare import PreparedCall

__all__ = [
    "Part",
    "add_batch_arguments",
    "check_wait",
    "cut",
    "json_size",
    "notes",
    "plan",
    "send",
    "totals",
]

logger = logging.getLogger("agentnb.batch")

#: Bytes of a request's JSON besides its texts: keys, model, parameters, custom id.
OVERHEAD = 256


class Part:
    """One batch of a job: the requests it holds (`members`, by number) and what became of it.

    `round` is the attempt it is for its requests (1: the first; a follow-up batch retries).
    """

    __slots__ = ("batch_id", "costs", "info", "job_id", "members", "number", "over", "pending",
                 "prefix", "reserved", "round", "state", "worst")  # fmt: skip

    def __init__(self, job_id: str, number: int, members: list[int], round_: int) -> None:
        self.job_id = job_id
        self.number = number
        self.members = members
        self.round = round_
        self.prefix = f"{job_id}-{number}-"
        self.pending = set(members)  # requests whose result is not in yet
        self.batch_id: str | None = None
        self.info: BatchInfo | None = None
        self.state = CallState()  # remade when sent: when its requests started, attempts
        self.worst = 0.0  # its worst case at the batch price (NaN: a model with no price)
        self.reserved: float | None = None  # held in the budget until settled
        self.costs: list[tuple[float, str]] = []  # (cost, model) of each request answered
        self.over = False  # every result read, or following it failed

    @property
    def live(self) -> bool:
        """Sent, and the job not over with it yet."""
        return self.batch_id is not None and not self.over

    def custom_id(self, n: int) -> str:
        return f"{self.prefix}{n}"

    def request_of(self, custom_id: str) -> int:
        """The number of the request `custom_id` names in this part, or -1."""
        if not custom_id.startswith(self.prefix):
            return -1
        tail = custom_id[len(self.prefix) :]
        return int(tail) if tail.isdigit() else -1

    def where(self, n: int) -> str:
        """`<custom id> of <batch id>`: what a request's error names."""
        return f"{self.custom_id(n)} of {self.batch_id or 'a batch not created'}"

    def missing(self, n: int) -> BatchRequestError:
        """The error of a request the provider never gave a result for (or that was never sent:
        a wait interrupted before its batch was created)."""
        why = (
            f"batch {self.batch_id} ended without a result for request {self.custom_id(n)}"
            if self.batch_id is not None
            else f"request {self.custom_id(n)} was never sent (its wait was interrupted first)"
        )
        return BatchRequestError(
            why,
            kind="missing",
            batch_id=self.batch_id or "",
            custom_id=self.custom_id(n),
        )


def cut(
    job_id: str,
    first: int,
    requests: Iterable[int],
    request_of: Callable[[int], BackendRequest],
    round_: int,
) -> list[Part]:
    """`requests` in parts numbered from `first`, each within the API's limits (this module's
    `MAX_BATCH_REQUESTS` and `MAX_BATCH_BYTES`, read when called: a test may lower them)."""
    most, biggest = MAX_BATCH_REQUESTS, MAX_BATCH_BYTES
    groups: list[list[int]] = [[]]
    size, sizes = 0, dict[str, int]()
    for n in requests:
        bytes_ = json_size(request_of(n), sizes)
        if groups[-1] and (len(groups[-1]) >= most or size + bytes_ > biggest):
            groups.append([])
            size = 0
        groups[-1].append(n)
        size += bytes_
    return [Part(job_id, first + i, g, round_) for i, g in enumerate(groups) if g]


def json_size(request: BackendRequest, sizes: dict[str, int]) -> int:
    """The most bytes `request` takes in a batch's JSON body, worked out cheaply from its texts
    (`sizes` keeps each system prompt's: a job repeats a few of them).

    A text counts what JSON makes of it with every non-ASCII character escaped, never less than
    its UTF-8 form. Example:

        >>> json_size(BackendRequest(model="m", task='say "hi"\\n'), {})
        273
    """
    system = sizes.get(request.system)
    if system is None:
        system = sizes[request.system] = _text_size(request.system)
    n = OVERHEAD + len(request.model) + system + _text_size(request.task)
    for turn in request.history:
        n += 32 + _text_size(turn.content)
    for stop in request.stop_sequences:
        n += 4 + _text_size(stop)
    return n


def _text_size(text: str) -> int:
    if text.isascii() and text.isprintable():  # the common case: only quotes and \ escaped
        return len(text) + 2 + text.count('"') + text.count("\\")
    return len(encode_basestring_ascii(text))


def totals(parts: Iterable[Part]) -> BatchCounts:
    """The request counts of `parts`, summed (as last seen)."""
    sums = [0] * len(BatchCounts._fields)
    for part in parts:
        if part.info is not None:
            for i, n in enumerate(part.info.counts):
                sums[i] += n
    return BatchCounts(*sums)


def notes(parts: Sequence[Part]) -> dict[str, int | str | None]:
    """What the progress display shows of a job's batches: the batch (or how many), the
    requests' counts and the cost at most (empty before any is sent)."""
    sent = [p for p in parts if p.batch_id is not None]
    if not sent:
        return {}
    worst = sum(p.worst for p in sent)
    batch = sent[0].batch_id if len(sent) == 1 else f"{len(sent)} batches"
    return {
        "batch": batch,
        **totals(sent)._asdict(),
        "cost_up_to": None if math.isnan(worst) else usd(worst),
    }


async def plan(
    orch: AsyncAgentOrchestrator,
    calls: Sequence[PreparedCall],
    results: list[AgentResult | BaseException | None],
    budget: Budget,
) -> tuple[list[int], dict[int, list[int]]]:
    """Answer the calls the cache holds (into `results`, recorded as hits), a chunk at a time,
    and number the distinct requests left. Returns, by request number, the position of the
    call that sends it and those of its twins (identical calls, answered with it)."""
    cache, recorder = orch.cache, orch.recorder
    sent: list[int] = []
    twins: dict[int, list[int]] = {}
    first: dict[str, int] = {}
    for start in range(0, len(calls), CHUNK):
        chunk = calls[start : start + CHUNK]
        shared = [cache_for(cache, p) is not None for p in chunk]
        keys = [p.key for p, ok in zip(chunk, shared, strict=True) if ok]
        found = iter(await cache.get_many(keys) if cache is not None and keys else ())
        for pos, p in enumerate(chunk, start):
            if shared[pos - start]:
                hit = next(found)
                if hit is not None:
                    results[pos] = recorder.succeeded(p, from_payload(hit[0]), CallState(), True)
                    budget.finish()
                    continue
                n = first.setdefault(p.key, len(sent))
                if n < len(sent):  # the same request as an earlier call's
                    twins.setdefault(n, []).append(pos)
                    continue
            sent.append(pos)
    return sent, twins


async def send(
    orch: AsyncAgentOrchestrator, part: Part, calls: Sequence[PreparedCall], budget: Budget
) -> None:
    """Send `part` (its requests made by `calls`, in order): reserve its worst case at the
    batch price in `budget`, write its intent to the ledger, create it, write its id.

    Raises `BudgetExceededError` when it does not fit (nothing done), or the `AgentnbError` of
    a batch that could not be created (its intent marked failed, its reservation released).
    """
    cache, prices = orch.cache, orch.prices
    rows, requests, worst = [], [], 0.0
    for n, p in zip(part.members, calls, strict=True):
        custom_id = part.custom_id(n)
        worst += worst_cost(p, prices)
        rows.append((custom_id, p.key, p.spec.name, p.request.model, bool(cache_for(cache, p))))
        requests.append(BatchRequest(custom_id, p.request))
    part.worst = worst * BATCH_FACTOR
    reserve = part.worst if budget.limited else 0.0
    budget.admit_now(reserve, f"batch {part.number + 1} of this job ({len(rows):,} requests)")
    part.reserved = reserve
    ledger, backend = orch.ledger, orch.backend
    written = False
    try:
        await ledger.intent(part.job_id, part.number, backend.cache_identity, rows)
        written = True
        info, _ = await orch.retrying.run(
            lambda: backend.batch_create(requests),
            agent="message batch",
            max_attempts=orch.config.max_attempts,
        )
    except AgentnbError:
        budget.settle_batch(reserve, [])
        part.reserved = None
        if written:
            await ledger.update(part.job_id, part.number, "failed")
        raise
    part.batch_id, part.info, part.state = info.id, info, CallState()
    part.state.attempts = part.round
    try:
        await ledger.update(part.job_id, part.number, "sent", batch_id=info.id)
    except AgentnbError as exc:  # its requests' rows are there: collect finds them anyway
        logger.warning("batch %s: %s", info.id, exc)
    logger.info("sent message batch %s: %d requests", info.id, len(requests))


def check_wait(batch: bool, wait: bool) -> None:
    """Refuse `wait=False` without `batch=True` (an online job is always awaited)."""
    if not wait and not batch:
        raise OptionError(
            "execute_multiple: wait=False needs batch=True (a job sent online is awaited)",
            option="wait",
            source="execute_multiple",
        )


def add_batch_arguments(add: Callable[..., Any], *, workflow: bool = False) -> None:
    """Declare `--batch` through `add` (the magics and the CLI alike). It is the job's way of
    sending, like its budget, not a call option: it changes neither a request nor its cache
    key, so it is not in `CallOptions`."""
    what = (
        "run in waves, each wave of ready steps one Message Batch"
        if workflow
        else "send it as a Message Batch"
    )
    add(
        "--batch",
        action="store_true",
        help=f"{what}: half the price, answered within minutes to hours (with --estimate: "
        "the cost at the batch price)",
    )
