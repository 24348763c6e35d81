"""The offline simulator: deterministic answers, token counts, latency, faults and rate limits.

`SimulatedBackend` answers every request without a network: the text is Markdown derived from
(seed, model, agent, system prompt, history, task), so the same request always gets the same
answer whatever the concurrency or call order, and every answer says it is simulated. It models
latency (`asyncio.sleep`), prompt-cache writes/reads, stop sequences, `max_tokens`, the API's
quotas (`limits`: per model class, token buckets for requests, input and output tokens, an
acceleration limit, a spend limit; every response then carries its `limits`), a simple
requests-per-minute limit, and faults, either at random (`fault_rate`, seeded, in runs of mean
length `fault_burst`) or scripted with `inject()` for tests. A structured call (`schema`) is
answered with schema-valid data as a `tool_use` (`sim_structured`), except a share
`invalid_rate` of them, and those `inject("invalid_output")` names, which break the schema.
Prompt caching covers the system prompt (with the tool schema) and the shared `prefix`: the first
call writes what it marks, later ones within the TTL read it. Its own work is under ~10 µs of CPU
a call whatever the task's length (see `sim_answer`), a few more with quotas, so a benchmark on
it measures agentnb, not the simulator.

The answer is written by `agentnb.backends.sim_answer`, the faults and the rpm limit live in
`agentnb.backends.sim_faults`, the quotas in `agentnb.backends.sim_limits`, the call log in
`agentnb.backends.sim_log`, Message Batches (the same answers, kept in files that any process
can collect; outside the quotas) in `agentnb.backends.sim_batches`. The same simulation is
served over HTTP as a Messages-API transport by `agentnb.backends.sim_http` (and as a server
by `agentnb.backends.sim_server`), which drives it through `begin()` / `SimulatedCall`, so every
path shares one behaviour.

Example:
    >>> import asyncio
    >>> sim = SimulatedBackend(latency_s=0)
    >>> req = BackendRequest(model="claude-sonnet-5-5", task="Sort a list", agent="python-expert")
    >>> asyncio.run(sim.create(req)).text.startswith("> *Simulated answer")
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..errors import BackendError, RateLimitError, SpendLimitError
from .base import Backend, BackendRequest, BackendResponse, Usage
from .sim_answer import SIMULATED_NOTE, AnswerPlan, chunks, plan_answer
from .sim_faults import (
    DEFAULT_FAULTS,
    FAULT_KINDS,
    FaultRuns,
    FaultScript,
    RpmWindow,
    check_fault_kinds,
    fail,
)
from .sim_limits import SimQuota, Ticket
from .sim_log import CallLog, CallRecord

if TYPE_CHECKING:
    from ..config import Config
    from ..quota import RateLimits
    from .batch import BatchInfo, BatchRequest, BatchResult
    from .sim_batches import SimBatches

__all__ = [
    "FAULT_KINDS",
    "SIMULATED_NOTE",
    "CallLog",
    "CallRecord",
    "SimulatedBackend",
    "SimulatedCall",
]

PROMPT_CACHE_TTL_S = 300.0  # the API's default ephemeral cache lifetime
_PROMPT_CACHE_ENTRIES = 1024  # (model, system) pairs remembered; the oldest is forgotten first
# Token counts repeat from call to call, and a frozen dataclass costs ~1 µs to build: share them.
_usage = functools.lru_cache(maxsize=1024)(Usage)


@dataclass(slots=True)
class SimulatedCall:
    """A call that passed the fault and rate-limit checks; `wait()` or `deltas()` plays it out.

    `chunks` are the stream deltas (groups of words; joined they give `response.text`). Under a
    quota, `response` gains its `limits` when the call ends (what the quota's headers say then).
    """

    _backend: SimulatedBackend
    record: CallRecord
    response: BackendResponse
    delay: float
    ticket: Ticket | None = None  # the call's hold on the quota, until it ends

    @property
    def chunks(self) -> tuple[str, ...]:
        # Made on demand: only streamed calls need them.
        return chunks(self.response.text)

    async def wait(self) -> BackendResponse:
        """Sleep until the call's latency has passed since it started, then return the response.

        Measured from the start (not from now), so the simulator's own work composing the answer
        is not added to the latency it models: a server composes its answer in parallel.
        """
        if self.delay > 0:
            remaining = self.record.started + self.delay - self._backend.clock()
            if remaining > 0:
                try:
                    await asyncio.sleep(remaining)
                except BaseException:
                    self._end("cancelled")
                    raise
        self._backend._finish(self.record, None)
        if self.ticket is not None:
            self._settle()
        return self.response

    async def deltas(self) -> AsyncGenerator[str, None]:
        """Yield the text in chunks, the latency spread evenly across them."""
        pieces = self.chunks
        step = self.delay / len(pieces)
        error: str | None = "cancelled"
        try:
            for piece in pieces:
                if step > 0:
                    await asyncio.sleep(step)
                yield piece
            error = None
        finally:
            self._end(error)

    def _end(self, error: str | None) -> None:
        self._backend._finish(self.record, error)
        if self.ticket is not None:
            self._settle()

    def _settle(self) -> None:
        # Cancelled mid-answer counts as answered: the tokens were generated (and billed).
        ticket, self.ticket = self.ticket, None
        assert ticket is not None
        self.response = self._backend._settle(ticket, self.response)


class SimulatedBackend(Backend):
    """An offline stand-in for the Anthropic API; see the module docstring.

    Latency of a call: `latencies[agent]` if given, else `latency_fn(request)`, else
    `latency_s + latency_per_token_s * output_tokens`; then scaled by `1 ± jitter` (seeded per
    request). `clock` times the call log, the rpm window and the prompt cache; sleeping always
    uses `asyncio.sleep`.

    `calls` keeps the last `log_limit` calls (a `CallLog`; 0 keeps none), so a long benchmark
    does not grow it without end; `call_count`, `in_flight` and `peak_in_flight` count every call.

    `limits` (per model class or "*": `{rpm, itpm, otpm, burst_s, ramp_s}`) and
    `spend_limit_usd` are the API's quotas, enforced as `agentnb.backends.sim_limits` says;
    `fault_burst` is the mean length of a run of random faults (`sim_faults.FaultRuns`).
    `batches` keeps its Message Batches (default: under the configured `state_dir`).
    """

    kind: ClassVar[str] = "simulated"

    def __init__(
        self,
        *,
        latency_s: float = 0.2,
        latency_per_token_s: float = 0.0,
        jitter: float = 0.1,
        seed: int = 0,
        fault_rate: float = 0.0,
        fault_kinds: Iterable[str] = DEFAULT_FAULTS,
        rpm_limit: int | None = None,
        latencies: Mapping[str, float] | None = None,
        latency_fn: Callable[[BackendRequest], float] | None = None,
        retry_after_s: float = 1.0,
        hang_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        log_limit: int = 10_000,
        limits: Mapping[str, Mapping[str, float]] | None = None,
        spend_limit_usd: float | None = None,
        fault_burst: float = 1.0,
        batches: SimBatches | None = None,
        invalid_rate: float = 0.0,
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be between 0 and 1, got {fault_rate!r}")
        if not 0.0 <= invalid_rate <= 1.0:
            raise ValueError(f"invalid_rate must be between 0 and 1, got {invalid_rate!r}")
        self.invalid_rate = invalid_rate
        self.latency_s = latency_s
        self.latency_per_token_s = latency_per_token_s
        self.jitter = jitter
        self.seed = seed
        self.fault_rate = fault_rate
        self.fault_kinds = check_fault_kinds(fault_kinds)
        self.latencies = dict(latencies) if latencies else None
        self.latency_fn = latency_fn
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.clock = clock
        self._rpm = RpmWindow(rpm_limit) if rpm_limit is not None else None
        self._quota = (
            SimQuota(limits or {}, spend_limit_usd)
            if limits or spend_limit_usd is not None
            else None
        )
        self._runs = FaultRuns(fault_burst)
        self._script = FaultScript()
        self._prompt_cache: dict[tuple[str, ...], float] = {}
        self.calls = CallLog(log_limit)
        self.call_count = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self._batches = batches

    @classmethod
    def from_config(cls, cfg: Config) -> SimulatedBackend:
        """A simulator set up from the `sim_*` settings."""
        from .sim_batches import SimBatches  # orjson and the batch engine: only when asked for

        return cls(
            latency_s=cfg.sim_latency_s,
            latency_per_token_s=cfg.sim_latency_per_token_s,
            jitter=cfg.sim_jitter,
            seed=cfg.sim_seed,
            fault_rate=cfg.sim_fault_rate,
            fault_kinds=cfg.sim_fault_kinds,
            rpm_limit=cfg.sim_rpm_limit,
            limits=cfg.sim_limits,
            spend_limit_usd=cfg.sim_spend_limit_usd,
            fault_burst=cfg.sim_fault_burst,
            batches=SimBatches.from_config(cfg),
            invalid_rate=cfg.sim_invalid_rate,
        )

    @property
    def rpm_limit(self) -> int | None:
        """The most calls started in any minute, or None for no limit."""
        return self._rpm.limit if self._rpm is not None else None

    @property
    def quota(self) -> SimQuota | None:
        """The quotas it enforces (`limits`, `spend_limit_usd`), or None."""
        return self._quota

    @property
    def quota_scope(self) -> str:
        """This simulator's own: its quota lives in this object, shared with no other process
        (the `local:` prefix), nor with another simulator."""
        return f"local:simulated:{id(self):x}"

    @property
    def reports_rate_limits(self) -> bool:
        """True when it enforces rate limits: its responses then say where the quota stands."""
        return self._quota is not None and self._quota.limited

    def rate_limits(self, model: str) -> RateLimits | None:
        """What the rate-limit headers of a response for `model` would say now (None: `model`'s
        class has no limits)."""
        quota = self._quota
        return None if quota is None else quota.rate_limits(model, self.clock())

    def __repr__(self) -> str:
        return (
            f"SimulatedBackend(latency_s={self.latency_s}, jitter={self.jitter}, seed={self.seed}, "
            f"fault_rate={self.fault_rate}, rpm_limit={self.rpm_limit})"
        )

    # -- the interface ---------------------------------------------------------------------
    async def create(self, request: BackendRequest) -> BackendResponse:
        call = await self.begin(request)
        return await call.wait()

    async def stream(self, request: BackendRequest) -> AsyncGenerator[str | BackendResponse, None]:
        call = await self.begin(request, streamed=True)
        async with contextlib.aclosing(call.deltas()) as deltas:
            async for delta in deltas:
                yield delta
        yield call.response

    async def count_tokens(self, request: BackendRequest) -> int:
        """The input tokens `create(request)` reports in all (input + cache read + cache write).

        Example:
            >>> sim = SimulatedBackend(latency_s=0)
            >>> req = BackendRequest(model="claude-sonnet-5-5", task="Sort a list")
            >>> u = asyncio.run(sim.create(req)).usage
            >>> asyncio.run(sim.count_tokens(req)) == u.input_tokens + u.cache_read_tokens
            True
        """
        return _input_total(request, plan_answer(self.seed, request))

    # -- Message Batches (`sim_batches`) ----------------------------------------------------
    @property
    def batches(self) -> SimBatches:
        """Where its Message Batches are kept (made from the configuration on first use)."""
        if self._batches is None:
            from ..config import Config
            from .sim_batches import SimBatches

            self._batches = SimBatches.from_config(Config.load())
        return self._batches

    async def batch_create(self, requests: Sequence[BatchRequest]) -> BatchInfo:
        return await self.batches.create(requests, seed=self.seed)

    async def batch_retrieve(self, batch_id: str) -> BatchInfo:
        return self.batches.retrieve(batch_id)

    async def batch_cancel(self, batch_id: str) -> BatchInfo:
        return self.batches.cancel(batch_id)

    async def batch_list(self, limit: int = 100) -> list[BatchInfo]:
        return self.batches.list_batches(limit)[0]

    def batch_results(self, batch_id: str) -> AsyncIterator[BatchResult]:
        return self.batches.results(batch_id)

    # -- test hooks and the call log -------------------------------------------------------
    def inject(
        self,
        kind: str,
        times: int = 1,
        *,
        retry_after: float | None = None,
        agent: str | None = None,
    ) -> None:
        """Make the next `times` calls (only `agent`'s, if given) fail with fault `kind`.

        `retry_after` is the server's hint the error carries (kinds with a retryable HTTP
        status only: rate_limit, overloaded, server_error); a `rate_limit` without one carries
        `retry_after_s`. `spend_limit` is the API's spend-limit 429 (no retry-after).
        `invalid_output` is no error: the call answers, but a structured answer breaks its
        schema (an answer in prose is unchanged).

        Example:
            >>> sim = SimulatedBackend(latency_s=0)
            >>> sim.inject("rate_limit", retry_after=2.0)
        """
        self._script.inject(kind, times, retry_after, agent)

    def reset_log(self) -> None:
        """Forget the call log and counters (the rpm window and prompt cache stay)."""
        self.calls.clear()
        self.call_count = 0
        self.peak_in_flight = self.in_flight

    # -- one call ----------------------------------------------------------------------------
    async def begin(self, request: BackendRequest, *, streamed: bool = False) -> SimulatedCall:
        """Start a call: log it, apply the quotas and faults, and return it to be played out.

        Faults raise here (a `BackendError`) after a fraction of the latency; a `timeout`
        fault hangs for `hang_s` first. Under `limits`, an error carries the quota's `limits`.
        """
        self.call_count = n = self.call_count + 1
        now = self.clock()
        request_id = f"req_sim_{n:08d}"
        record = CallRecord(
            request.agent, request.model, request.task, now, None, None, None, streamed, request_id
        )
        self.calls.append(record)
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        quota, ticket = self._quota, None
        try:
            plan = plan_answer(self.seed, request, self.invalid_rate)
            delay = self._latency(request, plan)
            if self._rpm is not None:
                try:
                    self._rpm.admit(now, request_id)
                except RateLimitError:
                    record.error = "rate_limit"
                    raise
            if quota is not None:
                ticket = self._admit(quota, request, plan, now, record)
            if self._script.entries or self.fault_rate:
                fault = self._script.pick(request.agent) or self._runs.draw(
                    plan.digest, n, self.fault_rate, self.fault_kinds
                )
                if fault is not None and fault[0] == "invalid_output":
                    if request.schema is not None:
                        plan = plan_answer(self.seed, request, 1.0)
                elif fault is not None:
                    record.error = fault[0]
                    await fail(
                        fault,
                        delay=delay,
                        request_id=request_id,
                        hang_s=self.hang_s,
                        retry_after_s=self.retry_after_s,
                    )
            usage = self._usage(request, plan, now)
        except BaseException as exc:
            if quota is not None:
                if ticket is not None:  # failed before answering: its max_tokens come back
                    quota.settle(ticket, None, self.clock())
                if isinstance(exc, BackendError) and exc.limits is None:
                    exc.limits = quota.rate_limits(request.model, self.clock())
            self._finish(record, record.error or "cancelled")
            raise
        response = BackendResponse(
            plan.text,
            request.model,
            plan.stop_reason,
            usage,
            self.kind,
            request_id,
            plan.stop_sequence,
            None,
            plan.data,
        )
        return SimulatedCall(self, record, response, delay, ticket)

    def _admit(
        self,
        quota: SimQuota,
        request: BackendRequest,
        plan: AnswerPlan,
        now: float,
        record: CallRecord,
    ) -> Ticket | None:
        # Cache reads do not count toward ITPM: only uncached input and cache writes do.
        counted = plan.input_tokens
        if request.prompt_caching and (request.system or request.prefix):
            counted = plan.message_tokens + self._prompt_split(request, plan, now, False)[1]
        try:
            return quota.admit(
                request.model,
                counted,
                request.max_tokens,
                now=now,
                request_id=record.request_id,
            )
        except BackendError as exc:
            record.error = "spend_limit" if isinstance(exc, SpendLimitError) else "rate_limit"
            raise

    def _settle(self, ticket: Ticket, response: BackendResponse) -> BackendResponse:
        """End a call's hold on the quota; its response, with the `limits` of that moment."""
        quota = self._quota
        assert quota is not None
        now = self.clock()
        quota.settle(ticket, response.usage, now)
        limits = quota.rate_limits(response.model, now) if ticket.quota is not None else None
        return response if limits is None else response._replace(limits=limits)

    def _finish(self, record: CallRecord, error: str | None) -> None:
        if record.ended is not None:
            return
        record.ended = self.clock()
        record.ok = error is None
        record.error = error
        self.in_flight -= 1

    def _latency(self, request: BackendRequest, plan: AnswerPlan) -> float:
        if self.latencies is not None and request.agent in self.latencies:
            base = self.latencies[request.agent]
        elif self.latency_fn is not None:
            base = self.latency_fn(request)
        else:
            base = self.latency_s + self.latency_per_token_s * plan.output_tokens
        if base <= 0:
            return 0.0
        return max(0.0, base * (1.0 + self.jitter * (2.0 * plan.jitter_u - 1.0)))

    def _usage(self, request: BackendRequest, plan: AnswerPlan, now: float) -> Usage:
        if not (request.prompt_caching and (request.system or request.prefix)):
            return _usage(plan.input_tokens, plan.output_tokens)
        if request.prefix or request.schema is not None:
            read, write = self._prompt_split(request, plan, now, True)
            return _usage(plan.message_tokens, plan.output_tokens, read, write)
        # The common case, one mark on the system prompt (as `_warm`, inline: it is every call's
        # path): the first call with a (model, system) writes it, later ones within the TTL read.
        key = (request.model, request.system)
        cache = self._prompt_cache
        last = cache.pop(key, None)
        cache[key] = now
        if len(cache) > _PROMPT_CACHE_ENTRIES:
            del cache[next(iter(cache))]
        if last is None or now - last > PROMPT_CACHE_TTL_S:
            return _usage(plan.message_tokens, plan.output_tokens, 0, plan.system_tokens)
        return _usage(plan.message_tokens, plan.output_tokens, plan.system_tokens, 0)

    def _prompt_split(
        self, request: BackendRequest, plan: AnswerPlan, now: float, mark: bool
    ) -> tuple[int, int]:
        """The prompt-cache tokens of a call as `(read, written)`; `mark`: the call is made.

        Each mark caches what precedes it: the system prompt (with the tool schema) under
        (model, system[, schema]), and with a prefix all of that and the prefix under the same
        key and the prefix. The longest part cached within the TTL is read, the rest written.
        """
        head: tuple[str, ...] = (request.model, request.system)
        if request.schema is not None:
            head = (*head, request.schema.digest)
        parts = [(head, plan.system_tokens)] if request.system else []
        if request.prefix:
            parts.append(((*head, request.prefix), plan.system_tokens + plan.prefix_tokens))
        read = 0
        for key, tokens in parts:
            if self._warm(key, now, mark):
                read = tokens
        return read, parts[-1][1] - read

    def _warm(self, key: tuple[str, ...], now: float, mark: bool) -> bool:
        """Whether prompt `key` is cached within the TTL; `mark`: a call writes or reads it now.

        Marked when the call starts, so concurrent twins read what the first wrote.
        """
        cache = self._prompt_cache
        if mark:
            last = cache.pop(key, None)
            cache[key] = now  # moved to the end: the dict is oldest-first
            if len(cache) > _PROMPT_CACHE_ENTRIES:
                del cache[next(iter(cache))]
        else:
            last = cache.get(key)
        return last is not None and now - last <= PROMPT_CACHE_TTL_S


def _input_total(request: BackendRequest, plan: AnswerPlan) -> int:
    """All the input tokens a call reports (input + cache read + cache write), as `_usage`
    splits them."""
    if request.prompt_caching and (request.system or request.prefix):
        return plan.message_tokens + plan.system_tokens + plan.prefix_tokens
    return plan.input_tokens
