"""`AsyncAgentOrchestrator`: the call pipeline's async core.

Each call: prepare (`prepare.py`: agent + task + options -> request and cache key, all checked
before anything runs) -> cache (memory, then the persistent tier; identical concurrent misses,
streams included, make one call) -> attempts (`attempts.py`: retries with backoff) and, inside
each attempt, admission (`admission.py`: a concurrency slot) -> the backend, bounded by the
attempt's timeout -> one row in the tracker, success or not.

Every call runs on the process's home event loop (`agentnb.loop`), so the methods can be awaited
from any loop (pytest-asyncio, top-level `await` in Jupyter); `AgentOrchestrator` is the
blocking twin.

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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from ..agents import AgentRegistry
from ..backends import Backend, BackendResponse, make_backend
from ..config import Config
from ..errors import AgentnbError, BackendError
from ..loop import HomeLoop, get_home_loop
from ..metrics import PerformanceTracker, PriceTable, prices
from ..options import CallOptions, OptionArgs
from ..progress import Progress, job_progress
from ..result import AgentResult
from .admission import Admission, ConcurrencyLimit
from .attempts import Deadline, Retrying, sleep_at_least, timed_out
from .caching import answer, memory_hit
from .calls import CallLike, options_of
from .fanout import Batch, run_pool
from .gcpolicy import LARGE_JOB, young_generation
from .lifecycle import changed, make_cache
from .prepare import PreparedCall, Preparer
from .records import CallState, Recorder
from .stream import AgentStream, stream_chunks
from .workflows import run_steps

if TYPE_CHECKING:
    import pandas as pd

    from ..cache import ResponseCache
    from ..workflow import StepEvent, Workflow, WorkflowRun

__all__ = ["AsyncAgentOrchestrator", "ProgressArg"]

T = TypeVar("T")
#: `progress=`: True/None (the `progress` setting decides), False (off), or a `Progress`.
ProgressArg = bool | Progress | None


class AsyncAgentOrchestrator:
    """The async core: `await` its methods from any event loop.

    Args:
        config: settings (default `Config.load()`: agentnb.yaml, then the environment).
        backend: a `Backend` to use instead of the one `config` selects.
        agents: an `AgentRegistry` (default: the config's search path).
        cache: a `ResponseCache`, or None for the one `config` describes (none when disabled).
            It is made here, so an unusable cache directory is a `CacheError` at once.
        price_table: prices for cost figures (default `agentnb.prices`).

    Every call method takes the call options (`CallOptions` fields: model, max_tokens,
    temperature, system, stop_sequences, use_cache, timeout_s, max_attempts) as keyword
    arguments, or a `CallOptions` as `options`; they are checked before anything runs.
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
        if cache is None:
            cache = make_cache(self.config)
        self._cache = cache
        self.prices = price_table if price_table is not None else prices
        self.tracker = PerformanceTracker(path=self.config.metrics_path)
        self._closed = False
        self._setup(self.config)

    def _setup(self, config: Config) -> None:
        self.admission: Admission = ConcurrencyLimit(config.max_concurrency)
        self.retrying = Retrying.from_config(config)
        self.preparer = Preparer(config, self.agents, self._identity)
        self.recorder = Recorder(self.tracker, self.prices, lambda: self.backend.kind)

    def _identity(self) -> str:
        return self.backend.cache_identity

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
    def home(self) -> HomeLoop:
        """The home loop the calls run on (looked up each time: a forked child has its own)."""
        return get_home_loop()

    @property
    def closed(self) -> bool:
        """True after `aclose()`."""
        return self._closed

    # -- public API ---------------------------------------------------------------------------
    def prepare(
        self,
        agent_name: str,
        task: str,
        options: CallOptions | None = None,
        **overrides: Unpack[OptionArgs],
    ) -> PreparedCall:
        """Check one call and resolve its request and cache key, without running it."""
        opts = options_of(options, overrides, "prepare")
        return self.preparer.prepare(agent_name, task, opts)

    async def execute_agent(
        self,
        agent_name: str,
        task: str,
        options: CallOptions | None = None,
        **overrides: Unpack[OptionArgs],
    ) -> AgentResult:
        """Run one agent on one task and return its `AgentResult`.

        Raises `AgentCallError` when every attempt failed, and the validation errors
        (`InvalidAgentNameError`, `AgentNotFoundError`, `TaskTooLongError`, `OptionError`)
        before any call.
        """
        p = self.preparer.prepare(agent_name, task, options_of(options, overrides, "execute_agent"))
        return await self.on_home(self.call(p))

    async def execute_multiple(
        self,
        calls: Iterable[CallLike],
        options: CallOptions | None = None,
        *,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
        progress: ProgressArg = None,
        **overrides: Unpack[OptionArgs],
    ) -> list[AgentResult | BaseException]:
        """Run many calls concurrently, at most `max_concurrency` at once; results in input order.

        Every call is checked before any runs (errors name the call's position). `options` and
        keyword options apply to every call under each call's own. With
        `return_exceptions=False` the first failure cancels the calls still running and is
        raised; with True each failed call's exception takes its place in the list. At most
        `max_concurrency` calls exist at once (a pool of workers), whatever the number of calls.
        `progress`: see `agentnb.progress` (shown for two calls or more).
        """
        if max_concurrency is not None and (
            type(max_concurrency) is not int or not 1 <= max_concurrency <= 100_000
        ):
            raise AgentnbError(
                f"max_concurrency must be a whole number from 1 to 100,000, got {max_concurrency!r}"
            )
        common = options_of(options, overrides, "execute_multiple")
        batch = Batch(self.preparer, calls, common)
        show = self.progress_for(progress, len(batch))
        return await self.on_home(self._run_many(batch, max_concurrency, return_exceptions, show))

    def stream_agent(
        self,
        agent_name: str,
        task: str,
        options: CallOptions | None = None,
        **overrides: Unpack[OptionArgs],
    ) -> AgentStream:
        """Stream one agent's answer: iterate for text chunks; `.result` holds the final result."""
        p = self.preparer.prepare(agent_name, task, options_of(options, overrides, "stream_agent"))
        return AgentStream(self, p)

    async def run_workflow(
        self,
        workflow: Workflow | str | Mapping[str, Any],
        variables: Mapping[str, Any] | None = None,
        *,
        max_concurrency: int | None = None,
        use_cache: bool = True,
        progress: ProgressArg | Callable[[StepEvent], None] = None,
        resume: WorkflowRun | None = None,
        on_interrupt: Callable[[WorkflowRun], None] | None = None,
    ) -> WorkflowRun:
        """Run a workflow (a `Workflow`, YAML text or path, or a dict); see `agentnb.workflow`.

        At most `max_concurrency` steps run at once: the argument, else the workflow's own
        `max_concurrency:`, else the config's (when both are given, the smaller). The scheduler
        holds that limit, so a step is "running" only while it really runs. Each step is
        prepared (and its cache key made) once. `progress`: a callback given every
        `StepEvent`, or a progress switch as for `execute_multiple`. If the run is interrupted,
        `on_interrupt` gets the partial run (usable as `resume=`) before the cancellation
        propagates.
        """
        from ..workflow import Workflow

        wf = workflow if isinstance(workflow, Workflow) else _load_workflow(workflow)
        return await run_steps(
            self,
            wf,
            variables,
            max_concurrency=max_concurrency,
            use_cache=use_cache,
            progress=progress,
            resume=resume,
            on_interrupt=on_interrupt,
        )

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
        await self.on_home(self._reconfigure_on_home(config))

    async def _reconfigure_on_home(self, config: Config) -> None:
        old, self.config = self.config, config
        if self._own_backend and changed(old, config, "backend"):
            backend, self._backend = self._backend, None
            if backend is not None:
                await backend.aclose()
        if self._own_cache and changed(old, config, "cache"):
            cache, self._cache = self._cache, make_cache(config)
            if cache is not None:
                await cache.aclose()
        if self._own_agents and old.agents_dirs != config.agents_dirs:
            self.agents = AgentRegistry.from_config(config)
        if old.metrics_path != config.metrics_path:
            records, self.tracker = self.tracker, PerformanceTracker(path=config.metrics_path)
            records.close()
            if config.metrics_path is None:
                self.tracker.extend(records)
        self._setup(config)

    async def aclose(self) -> None:
        """Close the backend's connections and the cache; the orchestrator is done after this."""
        if self._closed:
            return
        self._closed = True
        await self.home.run_async(self._aclose_on_home())

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

    # -- the pipeline (on the home loop) ------------------------------------------------------
    async def call(self, p: PreparedCall, admission: Admission | None = None) -> AgentResult:
        """Run one prepared call through cache -> attempts -> admission -> backend.

        Runs on the home loop (use `execute_agent` from elsewhere). `admission` defaults to
        the orchestrator's own concurrency limit.
        """
        state = CallState()
        limit = self.admission if admission is None else admission
        try:
            if p.use_cache and self._cache is not None:
                response, hit = await self._cached(p, limit, state)
            else:  # the lean path: no cache stage (and no closure: see `attempts`)
                response, hit = await self.attempts(p, limit, state), False
        except BaseException as exc:
            self.recorder.failed(p, state, exc)
            raise
        return self.recorder.succeeded(p, response, state, hit)

    def _cached(
        self, p: PreparedCall, limit: Admission, state: CallState
    ) -> Awaitable[tuple[BackendResponse, bool]]:
        return self.answer(p, lambda: self.attempts(p, limit, state))

    async def answer(
        self, p: PreparedCall, compute: Callable[[], Awaitable[BackendResponse]]
    ) -> tuple[BackendResponse, bool]:
        """The cache stage (`caching.answer`): `(response, from the cache)`."""
        return await answer(self._cache, p, compute)

    def cached_result(self, p: PreparedCall) -> AgentResult | None:
        """The answer of `p` if the memory tier holds it, recorded as a hit; else None.

        Safe from any thread (the memory tier and the tracker are locked): a blocking caller
        uses it to answer a hit on its own thread, with no hop to the home loop.
        """
        state = CallState()
        response = memory_hit(self._cache, p)
        return None if response is None else self.recorder.succeeded(p, response, state, True)

    async def attempts(
        self,
        p: PreparedCall,
        admission: Admission,
        state: CallState,
        attempt: Callable[[], Coroutine[Any, Any, BackendResponse]] | None = None,
        final: Callable[[], bool] | None = None,
    ) -> BackendResponse:
        """The attempts stage: retry `attempt` (default: `backend.create`), each one admitted
        (`admission.slot`), then bounded by the call's timeout."""
        # One coroutine for the whole stage, with no closure, bound method or context manager
        # object per attempt: at 1,000 calls in flight every object a call keeps alive is work
        # for the garbage collector, whose young collections then dominate a large job.
        backend, request, retrying = self.backend, p.request, self.retrying
        slot = admission.slot(p)
        timeout_s = p.timeout_s
        perf = time.perf_counter
        while True:
            if not slot.try_acquire():  # else wait, and count the time queued
                t = perf()
                await slot.acquire()
                state.queue_s += perf() - t
            try:
                n = state.attempts = state.attempts + 1
                deadline = Deadline(timeout_s)
                deadline.start()
                try:
                    if attempt is None:
                        return await backend.create(request)
                    return await attempt()
                except asyncio.CancelledError:
                    if deadline.stop_cancelled():  # this attempt's time is up
                        error: BackendError = timed_out(n, timeout_s)
                    else:
                        raise
                except BackendError as exc:
                    error = exc
                finally:
                    deadline.stop()
            finally:
                slot.release()
            delay = retrying.after_failure(
                p.spec.name, n, p.max_attempts, error, final is not None and final()
            )
            await sleep_at_least(delay)

    # -- results and records ------------------------------------------------------------------
    async def _run_many(
        self,
        batch: Batch,
        max_concurrency: int | None,
        return_exceptions: bool,
        progress: Progress | bool,
    ) -> list[AgentResult | BaseException]:
        # A batch's own limit replaces the orchestrator's; the pool has one worker per slot.
        limit = self.admission if max_concurrency is None else ConcurrencyLimit(max_concurrency)
        workers = max_concurrency or self.config.max_concurrency

        def call(p: PreparedCall) -> Awaitable[AgentResult]:
            return self.call(p, limit)

        threshold = self.config.job_gc_threshold if len(batch) >= LARGE_JOB else 0
        with (
            young_generation(threshold),
            job_progress(progress, len(batch), label="execute_multiple") as show,
        ):
            shown = None if progress is False else show
            return await run_pool(call, batch, workers, return_exceptions, shown)

    def stream_chunks(self, p: PreparedCall) -> AsyncIterator[str | AgentResult]:
        """Text chunks of one prepared call as they arrive, then its `AgentResult` (home loop);
        see `agentnb.orchestrator.stream.stream_chunks`."""
        return stream_chunks(self, p)

    def progress_for(self, arg: ProgressArg, total: int) -> Progress | bool:
        """What a job's `progress=` means: a caller's `Progress`; True to show one where it can
        be (the `progress` setting, two calls or more); False for none at all."""
        if isinstance(arg, Progress):
            return arg
        return not (arg is False or (arg is None and not self.config.progress) or total < 2)

    # -- lifecycle ----------------------------------------------------------------------------
    def check_open(self, coro: Coroutine[Any, Any, Any] | None = None) -> None:
        """Raise `AgentnbError` once the orchestrator is closed (closing `coro`, never run)."""
        if self._closed:
            if coro is not None:
                coro.close()
            raise AgentnbError("this orchestrator is closed")

    async def on_home(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the home loop (refused once the orchestrator is closed)."""
        self.check_open(coro)
        return await self.home.run_async(coro)

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


def _load_workflow(source: str | Mapping[str, Any]) -> Workflow:
    from ..workflow import Workflow

    if isinstance(source, Mapping):
        return Workflow.from_dict(source)
    return Workflow.from_yaml(source)
