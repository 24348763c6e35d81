"""`AsyncAgentOrchestrator`: the call pipeline's async core.

Each call: prepare (`prepare.py`: agent + task + options -> request and cache key, all checked
before anything runs) -> cache (memory, then the persistent tier; identical concurrent misses,
streams included, make one call) -> for a structured answer (`schema=`), validation
(`structured.py`: checked against the schema, one repair turn, never cached if invalid) ->
budget (`budget.py`: on a miss the call holds its worst-case cost in its job's budget and the
session's while it runs) -> attempts (`attempts.py`: retries with backoff) and, inside each
attempt, admission (`admission.py`: a concurrency slot) -> the backend, bounded by the
attempt's timeout -> one row in the tracker, success or not.
`estimate()` works a job out without running it (`estimate.py`).

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
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Unpack, overload

from ..agents import AgentRegistry
from ..backends import Backend, BackendResponse, make_backend
from ..config import Config
from ..errors import AgentnbError, BackendError, RateLimitError
from ..loop import HomeLoop, get_home_loop
from ..metrics import PerformanceTracker, PriceTable, prices
from ..options import CallOptions, OptionArgs
from ..progress import Progress, job_progress
from ..quota.gate import Quotas
from ..result import AgentResult
from .admission import Admission, ConcurrencyLimit
from .attempts import Deadline, Retrying, sleep_at_least, timed_out
from .batching import BatchJob
from .batchsend import check_wait
from .budget import Budget, Spend, check_budget
from .caching import answer, memory_hit
from .calls import CallLike, options_of
from .estimate import Estimate, estimate_calls, estimate_workflow
from .fanout import Batch, run_pool
from .follow import BatchCollection, cancel, collect, list_batches
from .gcpolicy import LARGE_JOB, young_generation
from .lifecycle import changed, make_cache
from .prepare import PreparedCall, Preparer
from .records import CallState, Recorder
from .stream import AgentStream, stream_chunks
from .structured import validated
from .workflows import run_steps

if TYPE_CHECKING:
    import pandas as pd

    from ..backends.batch import BatchInfo
    from ..cache import ResponseCache
    from ..workflow import StepEvent, Workflow, WorkflowRun
    from .ledger import BatchLedger

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
    temperature, system, stop_sequences, schema, prefix, sample, use_cache, timeout_s,
    max_attempts) as keyword arguments, or a `CallOptions` as `options`; they are checked
    before anything runs.
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
        self._ledger: BatchLedger | None = None  # made on first use (`ledger`)
        self._closed = False
        # The parent of every job's budget: counts the session's spend, limited or not.
        self.session_budget = Budget(self.config.session_budget_usd, label="session budget")
        self._setup(self.config)

    def _setup(self, config: Config) -> None:
        self.admission: Admission = ConcurrencyLimit(config.max_concurrency)
        self.quotas = Quotas(config, lambda: self.backend) if config.rate_limiting else None
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
    def ledger(self) -> BatchLedger:
        """The batch ledger (`batches.db` in `state_dir`), opened on first use."""
        if self._ledger is None:
            from ..cache.integrity import Signer, load_secret
            from .ledger import BatchLedger

            self._ledger = BatchLedger.open(self.config.state_dir, Signer(load_secret()))
        return self._ledger

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
        *,
        max_cost_usd: float | None = None,
        **overrides: Unpack[OptionArgs],
    ) -> AgentResult:
        """Run one agent on one task and return its `AgentResult`.

        Raises `AgentCallError` when every attempt failed, and the validation errors
        (`InvalidAgentNameError`, `AgentNotFoundError`, `TaskTooLongError`, `OptionError`)
        before any call. `max_cost_usd`: refuse the call (`BudgetExceededError`) if it could
        cost more (a single call is held only to the session's budget otherwise).
        """
        p = self.preparer.prepare(agent_name, task, options_of(options, overrides, "execute_agent"))
        budget = self.single_budget(max_cost_usd, "execute_agent")
        return await self.on_home(self.call(p, budget=budget))

    @overload
    async def execute_multiple(
        self,
        calls: Iterable[CallLike],
        options: CallOptions | None = None,
        *,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
        progress: ProgressArg = None,
        max_cost_usd: float | None = None,
        batch: bool = False,
        wait: Literal[True] = True,
        **overrides: Unpack[OptionArgs],
    ) -> list[AgentResult | BaseException]: ...

    @overload
    async def execute_multiple(
        self,
        calls: Iterable[CallLike],
        options: CallOptions | None = None,
        *,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
        progress: ProgressArg = None,
        max_cost_usd: float | None = None,
        batch: Literal[True],
        wait: Literal[False],
        **overrides: Unpack[OptionArgs],
    ) -> BatchJob: ...

    async def execute_multiple(
        self,
        calls: Iterable[CallLike],
        options: CallOptions | None = None,
        *,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
        progress: ProgressArg = None,
        max_cost_usd: float | None = None,
        batch: bool = False,
        wait: bool = True,
        **overrides: Unpack[OptionArgs],
    ) -> list[AgentResult | BaseException] | BatchJob:
        """Run many calls concurrently, at most `max_concurrency` at once; results in input order.

        Every call is checked before any runs (errors name the call's position). `options` and
        keyword options apply to every call under each call's own. With
        `return_exceptions=False` the first failure cancels the calls still running and is
        raised; with True each failed call's exception takes its place in the list. At most
        `max_concurrency` calls exist at once (a pool of workers), whatever the number of calls.
        `progress`: see `agentnb.progress` (shown for two calls or more).

        `max_cost_usd` (default: the `max_cost_usd` setting) is the job's budget, under the
        session's (`agentnb.orchestrator.budget`): a call starts only if its worst case fits
        beside what was spent and what the calls in flight may cost. Once one does not fit, no
        call starts, the calls in flight finish (their answers are kept and cached), and
        `BudgetExceededError` is raised; with `return_exceptions=True` the refused calls hold
        it instead. `estimate(calls)` says beforehand what the job should cost.

        `batch=True` sends the calls as Message Batches (`agentnb.orchestrator.batching`): the
        same results at half the price, in minutes to hours. Cached calls are answered from the
        cache, identical ones sent once, every answer cached; `max_concurrency` then bounds the
        online retries of requests that errored. With `wait=False` it returns a `BatchJob` at
        once, its batches created (`.ids`, `.status()`, `.wait()`, `.results()`). Interrupting
        the wait detaches without cancelling (`collect(batch_id)` picks a batch up later,
        `cancel_batch(batch_id)` cancels it).
        """
        _check_concurrency(max_concurrency)
        common = options_of(options, overrides, "execute_multiple")
        checked = Batch(self.preparer, calls, common)
        budget = self.job_budget(max_cost_usd, len(checked), "execute_multiple")
        if batch:
            prepared = [checked.take(i) for i in range(len(checked))]
            job = BatchJob(
                self,
                prepared,
                budget,
                return_exceptions=return_exceptions,
                max_concurrency=max_concurrency,
                progress=progress,
            )
            await self.on_home(job.submit())
            return await job.results() if wait else job
        check_wait(batch, wait)
        show = self.progress_for(progress, len(checked))
        return await self.on_home(
            self._run_many(checked, max_concurrency, return_exceptions, show, budget)
        )

    async def submit_batch(
        self,
        prepared: Sequence[PreparedCall],
        *,
        budget: Budget | None = None,
        return_exceptions: bool = True,
        max_concurrency: int | None = None,
        progress: ProgressArg = None,
    ) -> BatchJob:
        """Send prepared calls (`prepare`, or a workflow's wave of ready steps) as Message
        Batches; the `BatchJob` once they are created (`await job.results()`: their results in
        order, as `execute_multiple(batch=True)` gives them).

        `budget`: the job's (default: a job budget of the `max_cost_usd` setting under the
        session's). `max_concurrency` bounds the online retries; `progress` is shown while
        waiting (a caller's `Progress` is reported to and left open).
        """
        if budget is None:
            budget = self.job_budget(None, len(prepared), "submit_batch")
        job = BatchJob(
            self,
            prepared,
            budget,
            return_exceptions=return_exceptions,
            max_concurrency=max_concurrency,
            progress=progress,
        )
        return await self.on_home(job.submit())

    async def batches(self) -> pd.DataFrame:
        """The Message Batches in the ledger, newest first, one row each: `batch_id`, `state`
        in the ledger (intent, sent, collected, cancelled, failed), the provider's `status`
        and request counts (asked for the batches not yet collected that this backend can
        see), `requests`, when it was recorded, sent and ended, its `job`, `part` and `scope`
        (see `agentnb.orchestrator.follow.BATCH_COLUMNS`)."""
        return await self.on_home(list_batches(self))

    async def collect(self, batch_id: str, *, progress: ProgressArg = None) -> BatchCollection:
        """Wait for Message Batch `batch_id` to end and fill the response cache from its
        results, from the ledger alone (so in a new kernel too): re-running the same calls
        then costs nothing. Each answer is recorded at the batch price (once: a batch
        collected before only fills the cache). Returns a `BatchCollection` (counts, answers
        cached, results refused by the ledger, cost)."""
        show = self.progress_for(progress, 2)
        return await self.on_home(collect(self, batch_id, show))

    async def cancel_batch(self, batch_id: str) -> BatchInfo:
        """Cancel Message Batch `batch_id` (the only way one is cancelled: an interrupted wait
        only detaches). Requests not yet processed end `canceled`; what it answered before
        stays paid for, and collectable (`collect`)."""
        return await self.on_home(cancel(self, batch_id))

    def stream_agent(
        self,
        agent_name: str,
        task: str,
        options: CallOptions | None = None,
        *,
        max_cost_usd: float | None = None,
        **overrides: Unpack[OptionArgs],
    ) -> AgentStream:
        """Stream one agent's answer: iterate for text chunks; `.result` holds the final result.

        `max_cost_usd`: as for `execute_agent`."""
        p = self.preparer.prepare(agent_name, task, options_of(options, overrides, "stream_agent"))
        return AgentStream(self, p, self.single_budget(max_cost_usd, "stream_agent"))

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
        max_cost_usd: float | None = None,
        batch: bool = False,
    ) -> WorkflowRun:
        """Run a workflow (a `Workflow`, YAML text or path, or a dict); see `agentnb.workflow`.

        At most `max_concurrency` steps run at once: the argument, else the workflow's own
        `max_concurrency:`, else the config's (when both are given, the smaller). The scheduler
        holds that limit, so a step is "running" only while it really runs. Each step is
        prepared (and its cache key made) once. `progress`: a callback given every
        `StepEvent`, or a progress switch as for `execute_multiple`. If the run is interrupted,
        `on_interrupt` gets the partial run (usable as `resume=`) before the cancellation
        propagates.

        `max_cost_usd` (default: the `max_cost_usd` setting) is the run's budget, as for
        `execute_multiple`: once a step's call does not fit, no step starts, the running ones
        finish, and the run ends with status `budget` (the steps not started have status
        `budget`; the finished ones are kept, and cached).

        `batch=True` runs it in waves, the one place agentnb runs in stages
        (`agentnb.workflow.waves`): every step ready at one moment goes in one Message Batch
        (`submit_batch`, half the price), and a step's dependents go in a later batch once its
        result is in, so a DAG of three levels makes three batches, one after the other. Steps
        the cache answers are never sent (the steps they release join the same wave). Each
        step's `wave` is in its result, and its start and end are its wave's, so `timeline()`
        draws the waves; `max_concurrency` then bounds the online retries of errored requests.
        Interrupting it detaches the wave's batch (nothing is cancelled): collect it
        (`collect(batch_id)`), then run again with `resume=` the partial run, and the wave's
        steps are cache hits.
        """
        from ..workflow import Workflow

        wf = workflow if isinstance(workflow, Workflow) else _load_workflow(workflow)
        budget = self.job_budget(max_cost_usd, len(wf.steps), "run_workflow")
        return await run_steps(
            self,
            wf,
            variables,
            max_concurrency=max_concurrency,
            use_cache=use_cache,
            progress=progress,
            resume=resume,
            on_interrupt=on_interrupt,
            budget=budget,
            batch=batch,
        )

    async def estimate(
        self,
        work: Iterable[CallLike] | Workflow | str | Mapping[str, Any],
        options: CallOptions | None = None,
        *,
        variables: Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
        batch: bool = False,
        **overrides: Unpack[OptionArgs],
    ) -> Estimate:
        """What a job would cost and take, worked out without running anything.

        `work` is what `execute_multiple` takes (calls; `options` and keyword options apply to
        every call), or what `run_workflow` takes (a `Workflow`, YAML text or path, or a dict,
        with `variables`; of the options only `use_cache`). Returns an `Estimate`: `.table`
        has one row per call (input tokens, output and cost ranges, cached), the totals and the
        predicted time are attributes. Nothing runs and nothing is recorded: no model call
        (the backend may be asked to count tokens), no metrics row, no cache hit. See
        `agentnb.orchestrator.estimate` for how each figure is worked out. `batch=True`: the
        costs at the Message Batches price (half), as `execute_multiple(batch=True)` pays.
        """
        from ..workflow import Workflow

        _check_concurrency(max_concurrency)
        common = options_of(options, overrides, "estimate")
        if isinstance(work, (Workflow, str, Mapping)):
            wf = work if isinstance(work, Workflow) else _load_workflow(work)
            other = sorted(set(common.set_fields()) - {"use_cache"})
            if other:
                raise AgentnbError(
                    f"estimate: a workflow's steps carry their own options; of the options only "
                    f"use_cache applies to a workflow, got {', '.join(other)}"
                )
            return await self.on_home(
                estimate_workflow(
                    self,
                    wf,
                    variables,
                    use_cache=common.use_cache is not False,
                    max_concurrency=max_concurrency,
                    batch_price=batch,
                )
            )
        checked = Batch(self.preparer, work, common)
        return await self.on_home(estimate_calls(self, checked, max_concurrency, batch_price=batch))

    def spend(self) -> Spend:
        """What this orchestrator's calls have cost so far (cache hits cost nothing).

        A `Spend`: `.total_usd`, `.limit_usd` (the `session_budget_usd` setting, None for
        none), `.remaining_usd`, `.calls`, `.by_model` (a dict, model -> USD) and `.frame`
        (the same as a DataFrame). Counted from the calls' actual usage at the price table's
        prices since the orchestrator was made.
        """
        return self.session_budget.snapshot()

    def job_budget(self, max_cost_usd: float | None, total: int, source: str) -> Budget:
        """The budget of a job of `total` calls: `max_cost_usd` (checked; errors name `source`),
        else the `max_cost_usd` setting, under the session's budget."""
        limit = check_budget(max_cost_usd, source=source)
        if limit is None:
            limit = self.config.max_cost_usd
        return Budget(limit, self.session_budget, total=total)

    def single_budget(self, max_cost_usd: float | None, source: str) -> Budget | None:
        """The budget of one call given `max_cost_usd`; None (the session's only) without it."""
        if max_cost_usd is None:
            return None
        return Budget(check_budget(max_cost_usd, source=source), self.session_budget, total=1)

    def metrics(self) -> pd.DataFrame:
        """Every call so far, one row each (see `agentnb.metrics.COLUMNS`)."""
        return self.tracker.to_dataframe()

    def quota(self, history: bool = False) -> pd.DataFrame:
        """The quotas met so far (`agentnb.quota`), one row each: state (learning, known, none),
        where the buckets live, the limits per minute, calls sent, 429s, time waited and the
        adaptive concurrency. `history=True`: every change of each quota's concurrency."""
        import pandas as pd

        if self.quotas is None:
            return pd.DataFrame()
        return self.quotas.history() if history else self.quotas.table()

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
        if self.quotas is not None:
            await self.quotas.aclose()
        if old.state_dir != config.state_dir and self._ledger is not None:
            ledger, self._ledger = self._ledger, None
            await ledger.aclose()
        self.session_budget.limit_usd = config.session_budget_usd  # its spend is kept
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
    async def call(
        self, p: PreparedCall, admission: Admission | None = None, budget: Budget | None = None
    ) -> AgentResult:
        """Run one prepared call through cache -> budget -> attempts -> admission -> backend
        (a structured call: cache -> validation -> budget -> ..., see `structured`).

        Runs on the home loop (use `execute_agent` from elsewhere). `admission` defaults to
        the orchestrator's own concurrency limit, `budget` to the session's budget (a job's
        budget has it as parent): see `budgeted`. A cache hit passes no budget.
        """
        state = CallState()
        limit = self.admission if admission is None else admission
        spend = self.session_budget if budget is None else budget
        try:
            if p.use_cache and self._cache is not None:
                response, hit = await self._cached(p, limit, state, spend)
            elif p.request.schema is None:  # the lean path: no cache stage (and no closure)
                response, hit = await self.budgeted(p, limit, state, spend), False
            else:
                response, hit = await self._validated(p, limit, state, spend), False
        except BaseException as exc:
            self.recorder.failed(p, state, exc)
            raise
        spend.finish()
        return self.recorder.succeeded(p, response, state, hit)

    def _cached(
        self, p: PreparedCall, limit: Admission, state: CallState, budget: Budget
    ) -> Awaitable[tuple[BackendResponse, bool]]:
        if p.request.schema is None:
            return self.answer(p, lambda: self.budgeted(p, limit, state, budget))
        return self.answer(p, lambda: self._validated(p, limit, state, budget))

    def _validated(
        self, p: PreparedCall, limit: Admission, state: CallState, budget: Budget
    ) -> Awaitable[BackendResponse]:
        """A structured call's validation stage (`structured.validated`) around its attempts;
        inside the cache's computation, so an answer it refuses is never stored."""
        return validated(p, lambda q: self.budgeted(q, limit, state, budget))

    async def budgeted(
        self,
        p: PreparedCall,
        admission: Admission,
        state: CallState,
        budget: Budget,
        attempt: Callable[[], Coroutine[Any, Any, BackendResponse]] | None = None,
        final: Callable[[], bool] | None = None,
    ) -> BackendResponse:
        """The budget stage, once per call around its `attempts`: the call holds its worst-case
        cost in `budget` while it runs (it may wait for calls in flight to settle, or be refused
        with `BudgetExceededError` before anything is sent), then its actual cost replaces it.
        A call that fails or is cancelled settles at no cost."""
        worst = budget.worst_for(p, self.prices)
        if not budget.try_admit(worst):
            await budget.admit(worst)
        cost, model = 0.0, p.request.model
        try:
            response = await self.attempts(p, admission, state, attempt, final)
            cost, model = self.prices.cost(response.model, response.usage), response.model
            return response
        finally:
            budget.settle(worst, cost, model)

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
        if self.quotas is not None:  # behind the call's quota, when it has one
            slot = self.quotas.wrap(slot, p, state)
        timeout_s = p.timeout_s
        perf = time.perf_counter
        while True:
            if not slot.try_acquire():  # else wait, and count the time queued
                t = perf()
                try:
                    await slot.acquire()
                except BackendError as refused:  # the quota knows it would fail (spend limit)
                    retrying.give_up_if_final(
                        p.spec.name, state.attempts, p.max_attempts, refused, True
                    )
                    raise  # pragma: no cover - give_up_if_final raised
                state.queue_s += perf() - t
            outcome: object = None  # what the slot is told when the attempt ends
            try:
                n = state.attempts = state.attempts + 1
                deadline = Deadline(timeout_s)
                deadline.start()
                try:
                    if attempt is None:
                        outcome = await backend.create(request)
                    else:
                        outcome = await attempt()
                    return outcome
                except asyncio.CancelledError:
                    if deadline.stop_cancelled():  # this attempt's time is up
                        error: BackendError = timed_out(n, timeout_s)
                    else:
                        raise
                except BackendError as exc:
                    error = exc
                finally:
                    deadline.stop()
                outcome = error
                if isinstance(error, RateLimitError):
                    state.rate_limited += 1
            finally:
                slot.release(outcome)
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
        budget: Budget,
    ) -> list[AgentResult | BaseException]:
        # A batch's own limit replaces the orchestrator's; the pool has one worker per slot.
        limit = self.admission if max_concurrency is None else ConcurrencyLimit(max_concurrency)
        workers = max_concurrency or self.config.max_concurrency

        def call(p: PreparedCall) -> Awaitable[AgentResult]:
            return self.call(p, limit, budget)

        threshold = self.config.job_gc_threshold if len(batch) >= LARGE_JOB else 0
        with (
            young_generation(threshold),
            job_progress(progress, len(batch), label="execute_multiple") as show,
        ):
            shown = None if progress is False else show
            if shown is not None and self.quotas is not None:
                shown.watch(self.quotas.live)
            return await run_pool(call, batch, workers, return_exceptions, shown)

    def stream_chunks(
        self, p: PreparedCall, budget: Budget | None = None
    ) -> AsyncIterator[str | AgentResult]:
        """Text chunks of one prepared call as they arrive, then its `AgentResult` (home loop);
        see `agentnb.orchestrator.stream.stream_chunks`."""
        return stream_chunks(self, p, self.session_budget if budget is None else budget)

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
            if self.quotas is not None:
                await self.quotas.aclose()
            if self._backend is not None:
                await self._backend.aclose()
        finally:
            try:
                if self._cache is not None:
                    await self._cache.aclose()
                if self._ledger is not None:
                    await self._ledger.aclose()
            finally:
                # Flushes pending records and stops the writer thread (a no-op without a file).
                self.tracker.close()


def _check_concurrency(max_concurrency: int | None) -> None:
    if max_concurrency is not None and (
        type(max_concurrency) is not int or not 1 <= max_concurrency <= 100_000
    ):
        raise AgentnbError(
            f"max_concurrency must be a whole number from 1 to 100,000, got {max_concurrency!r}"
        )


def _load_workflow(source: str | Mapping[str, Any]) -> Workflow:
    from ..workflow import Workflow

    if isinstance(source, Mapping):
        return Workflow.from_dict(source)
    return Workflow.from_yaml(source)
