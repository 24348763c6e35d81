"""Run agents: one call, many calls at once, streams and workflows, with retries and a cache.

`AsyncAgentOrchestrator` is the async core; `AgentOrchestrator` is its blocking twin for scripts
and notebook cells. Both run every call on the process's home event loop (`agentnb.loop`), so
they work inside a running loop (a Jupyter cell), from plain scripts, and when awaited from any
other loop (pytest-asyncio, top-level `await` in Jupyter).

Each call: validate (agent name, task length) -> look up the agent -> response cache (hits cost
nothing and skip the concurrency limit) -> concurrency slot -> attempts, each bounded by
`asyncio.timeout(timeout_s)`, retried with exponential backoff and full jitter (`retry-after`
honoured; only retryable errors) -> one `CallRecord` in the tracker, success or not.

Example:
    >>> from agentnb import AgentOrchestrator, Config
    >>> with AgentOrchestrator(Config.load(backend="simulated", sim_latency_s=0,
    ...                                    cache_enabled=False, env={})) as orch:
    ...     result = orch.execute_agent("writer", "Name three colours")
    >>> result.simulated
    True
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import queue
import random
import threading
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from .agents import AgentRegistry, AgentSpec
from .backends import Backend, BackendRequest, BackendResponse, Usage, make_backend
from .config import Config
from .errors import (
    AgentCallError,
    AgentnbError,
    BackendError,
    BackendTimeoutError,
    TaskTooLongError,
)
from .loop import HomeLoop, get_home_loop
from .metrics import CallRecord, PerformanceTracker, PriceTable, prices
from .result import AgentResult

if TYPE_CHECKING:
    import pandas as pd

    from .cache import ResponseCache
    from .workflow import StepEvent, Workflow, WorkflowRun

__all__ = [
    "AgentCall",
    "AgentOrchestrator",
    "AgentStream",
    "AsyncAgentOrchestrator",
    "default_orchestrator",
]

logger = logging.getLogger("agentnb")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AgentCall:
    """One call for `execute_multiple`: an agent, a task, and optional overrides.

    Tuples `(agent, task)` and dicts `{"agent": ..., "task": ..., ...}` are accepted too.
    """

    agent: str
    task: str
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    use_cache: bool = True

    @classmethod
    def coerce(cls, call: AgentCall | tuple[str, str] | Mapping[str, Any], index: int) -> AgentCall:
        if isinstance(call, AgentCall):
            return call
        if isinstance(call, tuple) and len(call) == 2:
            return cls(agent=call[0], task=call[1])
        if isinstance(call, Mapping):
            unknown = set(call) - set(cls.__dataclass_fields__)
            if unknown or "agent" not in call or "task" not in call:
                raise AgentnbError(
                    f"call #{index}: expected keys agent, task (and optionally model, max_tokens, "
                    f"temperature, use_cache); got {sorted(call)}"
                )
            return cls(**call)
        raise AgentnbError(
            f"call #{index}: expected AgentCall, (agent, task) or a dict, got {call!r}"
        )


@dataclass(frozen=True, slots=True)
class _Tags:
    """Where a call belongs, for the metrics."""

    run_id: str | None = None
    workflow: str | None = None
    step: str | None = None


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A validated call, ready to run: everything resolved before anything runs."""

    spec: AgentSpec
    request: BackendRequest
    use_cache: bool
    timeout_s: float
    max_attempts: int
    tags: _Tags


class AsyncAgentOrchestrator:
    """The async core: `await` its methods from any event loop.

    Args:
        config: settings (default `Config.load()`: agentnb.yaml, then the environment).
        backend: a `Backend` to use instead of the one `config` selects.
        agents: an `AgentRegistry` (default: the config's search path).
        cache: a `ResponseCache`, or None for the one `config` describes (none when disabled).
            It is made here, so an unusable cache directory is a `CacheError` at once.
        price_table: prices for cost figures (default `agentnb.prices`).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        backend: Backend | None = None,
        agents: AgentRegistry | None = None,
        cache: ResponseCache | None = None,
        price_table: PriceTable | None = None,
    ) -> None:
        self.config = config if config is not None else Config.load()
        self._backend = backend
        # Parts given by the caller are theirs: `reconfigure` never replaces or closes them.
        self._own_backend = backend is None
        self._own_cache = cache is None
        self._own_agents = agents is None
        self.agents = agents if agents is not None else AgentRegistry.from_config(self.config)
        if cache is None and self.config.cache_enabled and self.config.cache_backend != "none":
            from .cache import ResponseCache

            cache = ResponseCache.from_config(self.config)
        self._cache = cache
        self.prices = price_table if price_table is not None else prices
        self.tracker = PerformanceTracker(path=self.config.metrics_path)
        self._semaphore = asyncio.Semaphore(self.config.max_concurrency)
        self._rng = random.Random()
        self._closed = False

    # -- parts made on first use ------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The backend answering calls (made from the config on first use)."""
        if self._backend is None:
            self._backend = make_backend(self.config)
        return self._backend

    @property
    def cache(self) -> ResponseCache | None:
        """The response cache, or None when caching is off."""
        return self._cache

    @property
    def _home(self) -> HomeLoop:
        # Looked up each time, not kept: after a fork the child gets a loop thread of its own.
        return get_home_loop()

    # -- public API ---------------------------------------------------------------------------
    async def execute_agent(
        self,
        agent_name: str,
        task: str,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        use_cache: bool = True,
    ) -> AgentResult:
        """Run one agent on one task and return its `AgentResult`.

        Raises `AgentCallError` when every attempt failed, and the validation errors
        (`InvalidAgentNameError`, `AgentNotFoundError`, `TaskTooLongError`) before any call.
        """
        call = AgentCall(agent_name, task, model, max_tokens, temperature, use_cache)
        return await self._on_home(self._run_one(call, self._semaphore))

    async def execute_multiple(
        self,
        calls: Iterable[AgentCall | tuple[str, str] | Mapping[str, Any]],
        *,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
    ) -> list[AgentResult | BaseException]:
        """Run many calls concurrently, at most `max_concurrency` at once; results in input order.

        Every call is validated before any runs. With `return_exceptions=False` the first
        failure cancels the calls still running and is raised; with True each failed call's
        exception takes its place in the list.
        """
        batch = [AgentCall.coerce(c, i) for i, c in enumerate(calls)]
        if max_concurrency is not None and max_concurrency < 1:
            raise AgentnbError(f"max_concurrency must be at least 1, got {max_concurrency}")
        return await self._on_home(self._run_many(batch, max_concurrency, return_exceptions))

    def stream_agent(
        self,
        agent_name: str,
        task: str,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        use_cache: bool = True,
    ) -> AgentStream:
        """Stream one agent's answer: iterate for text chunks; `.result` holds the final result."""
        call = AgentCall(agent_name, task, model, max_tokens, temperature, use_cache)
        return AgentStream(self, call)

    async def run_workflow(
        self,
        workflow: Workflow | str | Mapping[str, Any],
        variables: Mapping[str, Any] | None = None,
        *,
        max_concurrency: int | None = None,
        use_cache: bool = True,
        progress: Callable[[StepEvent], None] | None = None,
        resume: WorkflowRun | None = None,
        on_interrupt: Callable[[WorkflowRun], None] | None = None,
    ) -> WorkflowRun:
        """Run a workflow (a `Workflow`, YAML text or path, or a dict); see `agentnb.workflow`.

        At most `max_concurrency` steps run at once: the argument, else the workflow's own
        `max_concurrency:`, else the config's (when both are given, the smaller). The scheduler
        holds that limit, so a step is "running" only while it really runs. If the run is
        interrupted, `on_interrupt` gets the partial run (usable as `resume=`) before the
        cancellation propagates.
        """
        from .workflow import Workflow, execute_workflow

        wf = workflow if isinstance(workflow, Workflow) else _load_workflow(workflow)
        run_id = uuid.uuid4().hex[:12]

        def prepare(step: Any, task: str) -> _Prepared:
            call = AgentCall(
                step.agent,
                task,
                step.model,
                step.max_tokens,
                step.temperature,
                use_cache and step.cache is not False,
            )
            tags = _Tags(run_id=run_id, workflow=wf.name, step=step.id)
            return self._prepare(
                call, tags, timeout_s=step.timeout_s, max_attempts=step.max_attempts
            )

        async def execute(step: Any, task: str) -> AgentResult:
            return await self._execute(prepare(step, task), None)

        if max_concurrency is None and wf.max_concurrency is None:
            max_concurrency = self.config.max_concurrency
        coro = execute_workflow(
            wf,
            execute,
            variables=variables,
            max_concurrency=max_concurrency,
            progress=progress,
            resume=resume,
            agents=self.agents,
            # A step is reused from `resume` only if its cache key (prompt, backend, model, ...)
            # is unchanged, so an edited agent or a switch to Claude runs it again.
            fingerprint=lambda step, task: self._cache_key(prepare(step, task)),
            on_interrupt=on_interrupt,
        )
        return await self._on_home(coro)

    def metrics(self) -> pd.DataFrame:
        """Every call so far, one row each (see `agentnb.metrics.COLUMNS`)."""
        return self.tracker.to_dataframe()

    async def reconfigure(self, config: Config) -> None:
        """Switch to `config` in place, keeping what its changes do not touch.

        The backend is remade only if a backend setting changed (backend, base_url, the key,
        prompt_caching, sim_*), the cache only if a cache setting did (cache_*, redis_url; its
        entries survive otherwise), the agents only if agents_dirs did, and the metrics file only
        if metrics_path did. The call records so far are kept. Handles to this orchestrator stay
        valid: this is how `%config AgentNB.<setting>` takes effect.
        """
        await self._on_home(self._reconfigure_on_home(config))

    async def _reconfigure_on_home(self, config: Config) -> None:
        old, self.config = self.config, config
        self._semaphore = asyncio.Semaphore(config.max_concurrency)
        if self._own_backend and _changed(old, config, _BACKEND_FIELDS, "sim_"):
            backend, self._backend = self._backend, None
            if backend is not None:
                await backend.aclose()
        if self._own_cache and _changed(old, config, _CACHE_FIELDS, "cache_"):
            cache = self._cache
            self._cache = None
            if config.cache_enabled and config.cache_backend != "none":
                from .cache import ResponseCache

                self._cache = ResponseCache.from_config(config)
            if cache is not None:
                await cache.aclose()
        if self._own_agents and old.agents_dirs != config.agents_dirs:
            self.agents = AgentRegistry.from_config(config)
        if old.metrics_path != config.metrics_path:
            records, self.tracker = self.tracker, PerformanceTracker(path=config.metrics_path)
            records.close()
            if config.metrics_path is None:
                self.tracker.extend(records.records)

    async def aclose(self) -> None:
        """Close the backend's connections and the cache; the orchestrator is done after this."""
        if self._closed:
            return
        self._closed = True
        await self._home.run_async(self._aclose_on_home())

    async def __aenter__(self) -> AsyncAgentOrchestrator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        backend = self._backend.label if self._backend is not None else self.config.resolved_backend
        return (
            f"{type(self).__name__}(backend={backend!r}, max_concurrency="
            f"{self.config.max_concurrency}, calls={len(self.tracker)})"
        )

    # -- internals: everything below runs on the home loop ------------------------------------
    async def _on_home(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise AgentnbError("this orchestrator is closed")
        return await self._home.run_async(coro)

    async def _aclose_on_home(self) -> None:
        try:
            if self._backend is not None:
                await self._backend.aclose()
        finally:
            try:
                if self._cache is not None:
                    await self._cache.aclose()
            finally:
                # Flushes pending records and stops the writer thread (a no-op without a file).
                self.tracker.close()

    def _prepare(
        self,
        call: AgentCall,
        tags: _Tags = _Tags(),
        *,
        timeout_s: float | None = None,
        max_attempts: int | None = None,
    ) -> _Prepared:
        """Validate one call and resolve everything it needs; raises before anything runs."""
        cfg = self.config
        spec = self.agents.get(call.agent)  # checks the name first (no path tricks) then finds it
        name = spec.name
        if not isinstance(call.task, str):
            raise AgentnbError(
                f"agent {name!r}: task must be a string, got {type(call.task).__name__}"
            )
        if len(call.task) > cfg.max_task_chars:
            raise TaskTooLongError(
                f"agent {name!r}: task is {len(call.task):,} characters, more than "
                f"max_task_chars={cfg.max_task_chars:,}"
            )
        temperature = call.temperature if call.temperature is not None else spec.temperature
        request = BackendRequest(
            model=cfg.resolve_model(call.model or spec.model),
            task=call.task,
            system=spec.system_prompt,
            agent=spec.name,
            max_tokens=call.max_tokens or spec.max_tokens or cfg.max_tokens,
            temperature=temperature if temperature is not None else cfg.temperature,
            prompt_caching=cfg.prompt_caching and spec.cache is not False,
        )
        return _Prepared(
            spec=spec,
            request=request,
            use_cache=call.use_cache,
            timeout_s=timeout_s if timeout_s is not None else cfg.timeout_s,
            max_attempts=max_attempts if max_attempts is not None else cfg.max_attempts,
            tags=tags,
        )

    async def _run_one(self, call: AgentCall, limiter: asyncio.Semaphore) -> AgentResult:
        return await self._execute(self._prepare(call), limiter)

    async def _run_many(
        self, batch: list[AgentCall], max_concurrency: int | None, return_exceptions: bool
    ) -> list[AgentResult | BaseException]:
        run_id = uuid.uuid4().hex[:12]
        prepared = [self._prepare(c, _Tags(run_id=run_id)) for c in batch]  # all checked first
        limiter = self._semaphore if max_concurrency is None else asyncio.Semaphore(max_concurrency)
        results: list[AgentResult | BaseException | None] = [None] * len(prepared)

        async def one(i: int, p: _Prepared) -> None:
            try:
                results[i] = await self._execute(p, limiter)
            except Exception as exc:
                if not return_exceptions:
                    raise
                results[i] = exc

        try:
            async with asyncio.TaskGroup() as tg:
                for i, p in enumerate(prepared):
                    tg.create_task(one(i, p))
        except BaseExceptionGroup as group:
            # Surface the first real failure, not a group wrapper: callers catch AgentnbError.
            first = _first_error(group)
            raise first from None
        return [r for r in results if r is not None]

    async def _execute(self, p: _Prepared, limiter: asyncio.Semaphore | None) -> AgentResult:
        """Cache lookup, then a slot and the attempts; one CallRecord whatever happens."""
        timing = _Timing()
        cache = self._cache_for(p)
        try:
            if cache is None:
                response, attempts = await self._attempts(p, limiter, timing)
                tier: str | None = None
            else:

                async def compute() -> dict[str, Any]:
                    resp, n = await self._attempts(p, limiter, timing)
                    return _payload(resp, n)

                key = self._cache_key(p)
                payload, tier = await cache.get_or_compute(key, compute, agent=p.spec.name)
                response, attempts = _from_payload(payload)
        except BaseException as exc:
            self._record_failure(p, timing, exc)
            raise
        return self._succeeded(p, response, attempts, tier is not None, timing)

    def _cache_for(self, p: _Prepared) -> ResponseCache | None:
        cache = self._cache if p.use_cache else None
        if cache is not None and cache.is_excluded(p.spec.name, p.spec.cache):
            return None
        return cache

    def _succeeded(
        self, p: _Prepared, response: BackendResponse, attempts: int, hit: bool, timing: _Timing
    ) -> AgentResult:
        """The result of a call that got its answer, and its CallRecord."""
        latency_ms = (time.perf_counter() - timing.t0) * 1000
        full_cost = self.prices.cost(response.model, response.usage)
        result = AgentResult(
            agent=p.spec.name,
            model=response.model,
            text=response.text,
            usage=response.usage,
            cost_usd=0.0 if hit else full_cost,
            latency_ms=latency_ms,
            attempts=0 if hit else attempts,
            stop_reason=response.stop_reason,
            cached=hit,
            backend=response.backend or self.backend.kind,
            request_id=response.request_id,
            started_at=timing.started_at,
        )
        self.tracker.record(
            CallRecord(
                run_id=p.tags.run_id,
                workflow=p.tags.workflow,
                step=p.tags.step,
                agent=p.spec.name,
                model=response.model,
                backend=result.backend,
                started_at=timing.started_at,
                latency_ms=latency_ms,
                queue_ms=timing.queue_ms,
                attempts=result.attempts,
                cache_hit=hit,
                input_tokens=response.usage.input_tokens,
                output_tokens=response.usage.output_tokens,
                cache_read_tokens=response.usage.cache_read_tokens,
                cache_write_tokens=response.usage.cache_write_tokens,
                cost_usd=result.cost_usd,
                success=True,
                error_type=None,
                cost_saved_usd=full_cost if hit and not math.isnan(full_cost) else 0.0,
            )
        )
        return result

    def _cache_key(self, p: _Prepared) -> str:
        from .cache import make_key

        r = p.request
        return make_key(
            backend=self.backend.cache_identity,
            agent=p.spec.name,
            prompt_hash=p.spec.prompt_hash,
            model=r.model,
            system=r.system,
            messages=r.messages,
            max_tokens=r.max_tokens,
            temperature=r.temperature,
        )

    async def _attempts(
        self,
        p: _Prepared,
        limiter: asyncio.Semaphore | None,
        timing: _Timing,
        attempt_once: Callable[[], Awaitable[BackendResponse]] | None = None,
        shown: Callable[[], bool] | None = None,
    ) -> tuple[BackendResponse, int]:
        """Hold a concurrency slot and try up to `max_attempts` times.

        `attempt_once` makes one attempt (default: `backend.create`); `shown` tells whether a
        failed attempt already showed text (a stream), after which a retry would repeat it.
        """
        if attempt_once is None:
            backend, request = self.backend, p.request

            def attempt_once() -> Awaitable[BackendResponse]:
                return backend.create(request)

        async with limiter if limiter is not None else _NO_LIMIT:
            timing.queue_ms = (time.perf_counter() - timing.t0) * 1000
            attempt = 0
            while True:
                attempt += 1
                timing.attempts = attempt
                try:
                    async with asyncio.timeout(p.timeout_s) as scope:
                        return await attempt_once(), attempt
                except TimeoutError:
                    if not scope.expired():
                        raise
                    error: BackendError = BackendTimeoutError(
                        f"attempt {attempt} timed out after {p.timeout_s:g} s"
                    )
                except BackendError as exc:
                    error = exc
                self._give_up_if_final(p, attempt, error, final=shown is not None and shown())
                delay = self._backoff(attempt, error)
                logger.info(
                    "retrying agent %s after %s (attempt %d of %d, waiting %.2f s)",
                    p.spec.name,
                    type(error).__name__,
                    attempt,
                    p.max_attempts,
                    delay,
                    extra={
                        "agent": p.spec.name,
                        "attempt": attempt,
                        "error_type": type(error).__name__,
                        "delay_s": delay,
                    },
                )
                await asyncio.sleep(delay)

    def _give_up_if_final(
        self, p: _Prepared, attempt: int, error: BackendError, *, final: bool = False
    ) -> None:
        """Raise the call's final `AgentCallError` unless `error` is worth another attempt."""
        retry_after = getattr(error, "retry_after", None)
        why = ""
        if retry_after is not None and retry_after > self.config.max_retry_wait_s:
            # A notebook should not hang for an hour on a server's hint: say so and stop.
            why = (
                f" (the server asked to wait {retry_after:g} s, more than "
                f"max_retry_wait_s={self.config.max_retry_wait_s:g})"
            )
        if final or why or not error.retryable or attempt >= p.max_attempts:
            raise AgentCallError(
                f"agent {p.spec.name!r} failed after {attempt} attempt"
                f"{'s' if attempt != 1 else ''}: {type(error).__name__}: {error}{why}",
                agent=p.spec.name,
                attempts=attempt,
                last_error=error,
            ) from error

    def _backoff(self, attempt: int, error: BackendError) -> float:
        """Seconds to wait before the next attempt: retry-after if given, else full jitter."""
        cfg = self.config
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            # Honour the server's hint; a little extra spreads a burst of retries apart.
            return float(retry_after) + self._rng.uniform(0, 0.1 * cfg.backoff_base_s)
        ceiling = min(cfg.backoff_cap_s, cfg.backoff_base_s * 2 ** (attempt - 1))
        return self._rng.uniform(ceiling / 2, ceiling)

    def _record_failure(self, p: _Prepared, timing: _Timing, exc: BaseException) -> None:
        cause = exc.last_error if isinstance(exc, AgentCallError) else exc
        self.tracker.record(
            CallRecord(
                run_id=p.tags.run_id,
                workflow=p.tags.workflow,
                step=p.tags.step,
                agent=p.spec.name,
                model=p.request.model,
                backend=self.backend.kind,
                started_at=timing.started_at,
                latency_ms=(time.perf_counter() - timing.t0) * 1000,
                queue_ms=timing.queue_ms,
                attempts=timing.attempts,
                cache_hit=False,
                input_tokens=0,
                output_tokens=0,
                cache_read_tokens=0,
                cache_write_tokens=0,
                cost_usd=math.nan if timing.attempts else 0.0,
                success=False,
                error_type=type(cause).__name__,
            )
        )

    # -- streaming (runs on the home loop, pushes to the consumer) ------------------------------
    async def _produce_stream(
        self, call: AgentCall, push: Callable[[tuple[str, Any]], None]
    ) -> None:
        try:
            p = self._prepare(call)
            result = await self._stream_execute(p, push)
            push(("done", result))
        except BaseException as exc:
            push(("error", exc))
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _stream_execute(
        self, p: _Prepared, push: Callable[[tuple[str, Any]], None]
    ) -> AgentResult:
        timing = _Timing()
        cache = self._cache_for(p)
        if cache is not None:
            hit = await cache.get(self._cache_key(p))
            if hit is not None:  # a cached answer arrives at once, as one chunk
                response, attempts = _from_payload(hit[0])
                push(("chunk", response.text))
                return self._succeeded(p, response, attempts, True, timing)
        sent_any = False

        async def one_stream() -> BackendResponse:
            nonlocal sent_any
            final: BackendResponse | None = None
            async for item in self.backend.stream(p.request):
                if isinstance(item, str):
                    sent_any = True
                    push(("chunk", item))
                else:
                    final = item
            if final is None:  # pragma: no cover - a backend contract violation
                raise AgentnbError("backend stream ended without a final response")
            return final

        try:
            # The timeout covers the whole stream of one attempt.
            response, attempts = await self._attempts(
                p, self._semaphore, timing, one_stream, lambda: sent_any
            )
        except BaseException as exc:
            self._record_failure(p, timing, exc)
            raise
        if cache is not None:
            await cache.set(self._cache_key(p), _payload(response, attempts), agent=p.spec.name)
        return self._succeeded(p, response, attempts, False, timing)


class _NoLimit:
    """An `async with` that never waits: for calls whose caller already limits concurrency."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_LIMIT = _NoLimit()


class _Timing:
    """Mutable timing of one call, shared between the call and its record."""

    __slots__ = ("attempts", "queue_ms", "started_at", "t0")

    def __init__(self) -> None:
        self.started_at = datetime.now(UTC)
        self.t0 = time.perf_counter()
        self.queue_ms = 0.0
        self.attempts = 0


_BACKEND_FIELDS = ("backend", "base_url", "prompt_caching", "api_key")
_CACHE_FIELDS = ("redis_url",)


def _changed(old: Config, new: Config, names: tuple[str, ...], prefix: str) -> bool:
    """Whether any setting in `names` or starting with `prefix` differs."""
    fields = [f for f in dataclasses.fields(Config) if f.name in names or f.name.startswith(prefix)]
    return any(getattr(old, f.name) != getattr(new, f.name) for f in fields)


def _payload(resp: BackendResponse, attempts: int) -> dict[str, Any]:
    """What the cache stores for a response: plain JSON values."""
    return {
        "text": resp.text,
        "model": resp.model,
        "stop_reason": resp.stop_reason,
        "usage": resp.usage.to_dict(),
        "backend": resp.backend,
        "request_id": resp.request_id,
        "attempts": attempts,
    }


def _from_payload(payload: Mapping[str, Any]) -> tuple[BackendResponse, int]:
    response = BackendResponse(
        text=payload["text"],
        model=payload["model"],
        stop_reason=payload.get("stop_reason"),
        usage=Usage.from_dict(payload.get("usage") or {}),
        backend=payload.get("backend") or "",
        request_id=payload.get("request_id"),
    )
    return response, int(payload.get("attempts", 1))


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    first: BaseException = group.exceptions[0]
    return first


def _load_workflow(source: str | Mapping[str, Any]) -> Workflow:
    from .workflow import Workflow

    if isinstance(source, Mapping):
        return Workflow.from_dict(source)
    return Workflow.from_yaml(source)


class AgentStream:
    """A streamed answer: iterate (sync or async) for text chunks; `.result` when done.

    Example:
        >>> stream = orch.stream_agent("writer", "Tell a story")      # doctest: +SKIP
        >>> for chunk in stream: print(chunk, end="")                 # doctest: +SKIP
        >>> stream.result.cached                                       # doctest: +SKIP
    """

    def __init__(self, orchestrator: AsyncAgentOrchestrator, call: AgentCall) -> None:
        self._orch = orchestrator
        self._call = call
        self.result: AgentResult | None = None
        self._started = False

    def _start(self) -> None:
        if self._started:
            raise AgentnbError("a stream can be iterated only once")
        self._started = True

    # async iteration, from any loop
    async def __aiter__(self) -> AsyncIterator[str]:
        self._start()
        home = self._orch._home
        consumer = asyncio.get_running_loop()
        q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        if home.is_current():
            task = asyncio.ensure_future(self._orch._produce_stream(self._call, q.put_nowait))
            cancel: Callable[[], Any] = task.cancel
        else:

            def push(item: tuple[str, Any]) -> None:
                consumer.call_soon_threadsafe(q.put_nowait, item)

            future = home.submit(self._orch._produce_stream(self._call, push))
            cancel = future.cancel
        try:
            while True:
                kind, value = await q.get()
                if kind == "chunk":
                    yield value
                elif kind == "done":
                    self.result = value
                    return
                else:
                    raise value
        finally:
            cancel()

    # blocking iteration, for scripts and cells
    def __iter__(self) -> Iterator[str]:
        self._start()
        home = self._orch._home
        q: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        future = home.submit(self._orch._produce_stream(self._call, q.put))
        try:
            while True:
                kind, value = q.get()
                if kind == "chunk":
                    yield value
                elif kind == "done":
                    self.result = value
                    return
                else:
                    raise value
        finally:
            future.cancel()

    def text(self) -> str:
        """Consume the stream (blocking) and return the whole answer."""
        return "".join(self)


class AgentOrchestrator:
    """The blocking twin of `AsyncAgentOrchestrator`, for scripts and notebook cells.

    It works inside a running event loop (a Jupyter cell) because the work runs on agentnb's own
    loop thread. `KeyboardInterrupt` (the kernel's stop button) cancels the calls in flight.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        backend: Backend | None = None,
        agents: AgentRegistry | None = None,
        cache: ResponseCache | None = None,
        price_table: PriceTable | None = None,
    ) -> None:
        self.aio = AsyncAgentOrchestrator(
            config, backend=backend, agents=agents, cache=cache, price_table=price_table
        )

    @property
    def config(self) -> Config:
        return self.aio.config

    @property
    def agents(self) -> AgentRegistry:
        return self.aio.agents

    @property
    def backend(self) -> Backend:
        return self.aio.backend

    @property
    def cache(self) -> ResponseCache | None:
        return self.aio.cache

    @property
    def tracker(self) -> PerformanceTracker:
        return self.aio.tracker

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.aio._home.run_sync(coro)

    def execute_agent(
        self,
        agent_name: str,
        task: str,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        use_cache: bool = True,
    ) -> AgentResult:
        """Blocking `AsyncAgentOrchestrator.execute_agent`."""
        return self._run(
            self.aio.execute_agent(
                agent_name,
                task,
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                use_cache=use_cache,
            )
        )

    def execute_multiple(
        self,
        calls: Iterable[AgentCall | tuple[str, str] | Mapping[str, Any]],
        *,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
    ) -> list[AgentResult | BaseException]:
        """Blocking `AsyncAgentOrchestrator.execute_multiple`."""
        return self._run(
            self.aio.execute_multiple(
                calls, max_concurrency=max_concurrency, return_exceptions=return_exceptions
            )
        )

    async def execute_multiple_async(
        self,
        calls: Iterable[AgentCall | tuple[str, str] | Mapping[str, Any]],
        *,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
    ) -> list[AgentResult | BaseException]:
        """`execute_multiple` as a coroutine, for callers that already run an event loop."""
        return await self.aio.execute_multiple(
            calls, max_concurrency=max_concurrency, return_exceptions=return_exceptions
        )

    def stream_agent(
        self,
        agent_name: str,
        task: str,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        use_cache: bool = True,
    ) -> AgentStream:
        """An `AgentStream`: `for chunk in orch.stream_agent(...)` blocks per chunk."""
        return self.aio.stream_agent(
            agent_name,
            task,
            model=model,
            max_tokens=max_tokens,
            temperature=temperature,
            use_cache=use_cache,
        )

    def run_workflow(
        self,
        workflow: Workflow | str | Mapping[str, Any],
        variables: Mapping[str, Any] | None = None,
        *,
        max_concurrency: int | None = None,
        use_cache: bool = True,
        progress: Callable[[StepEvent], None] | None = None,
        resume: WorkflowRun | None = None,
        on_interrupt: Callable[[WorkflowRun], None] | None = None,
    ) -> WorkflowRun:
        """Blocking `AsyncAgentOrchestrator.run_workflow`."""
        return self._run(
            self.aio.run_workflow(
                workflow,
                variables,
                max_concurrency=max_concurrency,
                use_cache=use_cache,
                progress=progress,
                resume=resume,
                on_interrupt=on_interrupt,
            )
        )

    def metrics(self) -> pd.DataFrame:
        """Every call so far, one row each."""
        return self.aio.metrics()

    def reconfigure(self, config: Config) -> None:
        """Blocking `AsyncAgentOrchestrator.reconfigure`: apply `config` in place."""
        self._run(self.aio.reconfigure(config))

    def close(self) -> None:
        """Close the backend's connections and the cache."""
        if not self.aio._closed:
            self._run(self.aio.aclose())

    def __enter__(self) -> AgentOrchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self.aio).replace("AsyncAgentOrchestrator", "AgentOrchestrator")


_default_lock = threading.Lock()
_default: AgentOrchestrator | None = None


def default_orchestrator(config: Config | None = None, *, reset: bool = False) -> AgentOrchestrator:
    """The session's shared orchestrator (the magics and `compare_speedup` use it).

    Made from `Config.load()` on first use (and again after it was closed); `reset=True` (or a
    new `config`) closes the old one and makes another.
    """
    global _default
    with _default_lock:
        if _default is not None and (reset or config is not None):
            _default.close()
            _default = None
        if _default is None or _default.aio._closed:
            _default = AgentOrchestrator(config)
        return _default
