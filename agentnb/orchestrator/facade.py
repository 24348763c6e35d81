"""`AgentOrchestrator`: the blocking twin of the async core, for scripts and notebook cells.

It works inside a running event loop (a Jupyter cell) because the work runs on agentnb's own
loop thread. A call whose answer is in the cache's memory tier is answered on the caller's own
thread, with no hop to the home loop. `KeyboardInterrupt` (the kernel's stop button) cancels the
calls in flight. The methods take the same arguments as the async core's (`CallOptions` fields
as keywords, declared once in `OptionArgs`).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, Unpack, overload

from .._fork import at_fork_in_child
from ..agents import AgentRegistry
from ..backends import Backend
from ..config import Config
from ..metrics import PerformanceTracker, PriceTable
from ..options import CallOptions, OptionArgs
from ..result import AgentResult
from .batching import BatchJob
from .batchsend import check_wait
from .calls import CallLike, options_of
from .core import AsyncAgentOrchestrator, ProgressArg

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import pandas as pd

    from ..backends.batch import BatchCounts
    from ..cache import ResponseCache
    from .budget import Budget
    from .prepare import PreparedCall

__all__ = ["AgentOrchestrator", "BlockingBatchJob", "current_default", "default_orchestrator"]

T = TypeVar("T")
P = ParamSpec("P")


def _blocking(
    method: Callable[Concatenate[AsyncAgentOrchestrator, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[AgentOrchestrator, P], T]:
    """The blocking twin of a core method: same signature (help and editors show it, through
    `__wrapped__`), run on the home loop until done."""

    @functools.wraps(method)
    def blocking(self: AgentOrchestrator, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self.aio, *args, **kwargs))

    doc = inspect.cleandoc(method.__doc__ or "")
    blocking.__doc__ = f"Blocking `AsyncAgentOrchestrator.{method.__name__}`.\n\n{doc}"
    return blocking


def _delegated(
    method: Callable[Concatenate[AsyncAgentOrchestrator, P], T],
) -> Callable[Concatenate[AgentOrchestrator, P], T]:
    """A core method that needs no loop (or is a coroutine for the caller to await), as is."""

    @functools.wraps(method)
    def delegated(self: AgentOrchestrator, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return method(self.aio, *args, **kwargs)

    return delegated


class AgentOrchestrator:
    """The blocking twin of `AsyncAgentOrchestrator` (same arguments, same results).

    Example:
        >>> from agentnb import Config
        >>> with AgentOrchestrator(Config.load(backend="simulated", sim_latency_s=0,
        ...                                    cache_enabled=False, env={})) as orch:
        ...     orch.execute_agent("writer", "A haiku", max_tokens=64).simulated
        True
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

    @property
    def closed(self) -> bool:
        return self.aio.closed

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        self.aio.check_open(coro)
        return self.aio.home.run_sync(coro)

    #: `AsyncAgentOrchestrator.prepare`: check a call, run nothing.
    prepare = _delegated(AsyncAgentOrchestrator.prepare)

    def execute_agent(
        self,
        agent_name: str,
        task: str,
        options: CallOptions | None = None,
        *,
        max_cost_usd: float | None = None,
        **overrides: Unpack[OptionArgs],
    ) -> AgentResult:
        """Blocking `AsyncAgentOrchestrator.execute_agent`."""
        aio = self.aio
        p = aio.preparer.prepare(agent_name, task, options_of(options, overrides, "execute_agent"))
        budget = aio.single_budget(max_cost_usd, "execute_agent")
        hit = aio.cached_result(p)  # a memory hit is answered here: no hop to the home loop
        if hit is not None:
            return hit
        return self._run(aio.call(p, budget=budget))

    @overload
    def execute_multiple(
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
    def execute_multiple(
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
    ) -> BlockingBatchJob: ...

    def execute_multiple(
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
    ) -> list[AgentResult | BaseException] | BlockingBatchJob:
        """Blocking `AsyncAgentOrchestrator.execute_multiple` (same arguments); with
        `batch=True, wait=False` a `BlockingBatchJob`. `KeyboardInterrupt` while a batch job
        waits detaches it (nothing is cancelled) and its note says how to pick it up."""
        check_wait(batch, wait)
        if not batch:
            return self._run(
                self.aio.execute_multiple(
                    calls,
                    options,
                    max_concurrency=max_concurrency,
                    return_exceptions=return_exceptions,
                    progress=progress,
                    max_cost_usd=max_cost_usd,
                    **overrides,
                )
            )
        submitted = self.aio.execute_multiple(
            calls,
            options,
            max_concurrency=max_concurrency,
            return_exceptions=return_exceptions,
            progress=progress,
            max_cost_usd=max_cost_usd,
            batch=True,
            wait=False,
            **overrides,
        )
        job = BlockingBatchJob(self, self._run(submitted))
        return job.results() if wait else job

    def submit_batch(
        self,
        prepared: Sequence[PreparedCall],
        *,
        budget: Budget | None = None,
        return_exceptions: bool = True,
        max_concurrency: int | None = None,
        progress: ProgressArg = None,
    ) -> BlockingBatchJob:
        """Blocking `AsyncAgentOrchestrator.submit_batch` (same arguments): a
        `BlockingBatchJob` once the batches are created."""
        submitted = self.aio.submit_batch(
            prepared,
            budget=budget,
            return_exceptions=return_exceptions,
            max_concurrency=max_concurrency,
            progress=progress,
        )
        return BlockingBatchJob(self, self._run(submitted))

    #: Blocking `AsyncAgentOrchestrator.batches`: the ledger's batches with their state.
    batches = _blocking(AsyncAgentOrchestrator.batches)
    #: Blocking `AsyncAgentOrchestrator.collect`: wait for a batch and fill the cache from it.
    collect = _blocking(AsyncAgentOrchestrator.collect)
    #: Blocking `AsyncAgentOrchestrator.cancel_batch`: the only way a batch is cancelled.
    cancel_batch = _blocking(AsyncAgentOrchestrator.cancel_batch)
    #: `AsyncAgentOrchestrator.execute_multiple` itself, for callers already on an event loop.

    execute_multiple_async = _delegated(AsyncAgentOrchestrator.execute_multiple)
    #: An `AgentStream`: `for chunk in orch.stream_agent(...)` blocks per chunk.
    stream_agent = _delegated(AsyncAgentOrchestrator.stream_agent)
    #: Blocking `AsyncAgentOrchestrator.run_workflow` (same arguments).
    run_workflow = _blocking(AsyncAgentOrchestrator.run_workflow)
    #: Blocking `AsyncAgentOrchestrator.reconfigure`: apply a config in place.
    reconfigure = _blocking(AsyncAgentOrchestrator.reconfigure)
    #: Blocking `AsyncAgentOrchestrator.estimate`: what a job would cost and take, run nothing.
    estimate = _blocking(AsyncAgentOrchestrator.estimate)
    #: `AsyncAgentOrchestrator.spend`: what the session's calls have cost so far.
    spend = _delegated(AsyncAgentOrchestrator.spend)

    def metrics(self) -> pd.DataFrame:
        """Every call so far, one row each."""
        return self.aio.metrics()

    def quota(self, history: bool = False) -> pd.DataFrame:
        """The quotas met so far; see `AsyncAgentOrchestrator.quota`."""
        return self.aio.quota(history)

    def close(self) -> None:
        """Close the backend's connections and the cache."""
        if not self.aio.closed:
            self.aio.home.run_sync(self.aio.aclose())

    def __enter__(self) -> AgentOrchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self.aio).replace("AsyncAgentOrchestrator", "AgentOrchestrator")


class BlockingBatchJob:
    """The blocking twin of `BatchJob`: the same handle, each method blocking until done.

    `KeyboardInterrupt` (the kernel's stop button) while it waits detaches: the batches go on at
    the provider, nothing is cancelled, and the interrupt's note says how to pick them up
    (`orch.collect(batch_id)`, or `wait()` again).
    """

    def __init__(self, orch: AgentOrchestrator, job: BatchJob) -> None:
        self._orch = orch
        self.aio = job

    @property
    def ids(self) -> tuple[str, ...]:
        """The ids of the job's batches."""
        return self.aio.ids

    @property
    def done(self) -> bool:
        """True once every call has its result."""
        return self.aio.done

    def status(self) -> BatchCounts:
        """`BatchJob.status`: the requests' counts now."""
        return self._orch._run(self.aio.status())

    def wait(self, progress: ProgressArg = None) -> BatchCounts:
        """`BatchJob.wait`: wait for the batches and collect their results."""
        return self._waiting(self.aio.wait(progress))

    def results(self, progress: ProgressArg = None) -> list[AgentResult | BaseException]:
        """`BatchJob.results`: the calls' results in input order, waiting first if need be."""
        return self._waiting(self.aio.results(progress))

    def _waiting(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return self._orch._run(coro)
        except KeyboardInterrupt as exc:
            exc.add_note(self.aio.detached_message())
            raise

    def __repr__(self) -> str:
        return repr(self.aio)


_default_lock = threading.Lock()
_default: AgentOrchestrator | None = None


def _after_fork_in_child() -> None:
    # Another thread may have held the lock at the fork; the child's copy would never be freed.
    global _default_lock
    _default_lock = threading.Lock()


at_fork_in_child(_after_fork_in_child)


def current_default() -> AgentOrchestrator | None:
    """The session's shared orchestrator if one was made (and not closed), without making one."""
    current = _default
    return None if current is None or current.closed else current


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
        if _default is None or _default.closed:
            _default = AgentOrchestrator(config)
        return _default
