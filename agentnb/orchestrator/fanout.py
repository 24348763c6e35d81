"""Many calls at once: a pool of workers, so at most `workers` calls exist at any moment.

A worker pulls the next call when its own finishes, so memory and the loop's work per call stay
flat however many calls there are (a `gather` of N tasks holds N coroutines from the start).
Results keep the input order; the first failure cancels the rest unless `return_exceptions`,
except a call the budget refused: then no call starts, the calls in flight finish (what they
paid for is kept, and cached), and the refusal is raised after them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from ..errors import AgentnbError, BudgetExceededError
from ..options import CallOptions
from ..progress import Progress
from ..result import AgentResult
from .calls import AgentCall, CallLike, Tags
from .prepare import PreparedCall, Preparer

if TYPE_CHECKING:
    from ..agents import AgentSpec

if TYPE_CHECKING:
    from ..workflow import StepEvent

__all__ = ["Batch", "first_error", "run_pool", "step_progress"]


async def run_pool(
    call: Callable[[PreparedCall], Awaitable[AgentResult]],
    batch: Batch,
    workers: int,
    return_exceptions: bool,
    progress: Progress | None,
) -> list[AgentResult | BaseException]:
    """Run every call of `batch` through `call` with `workers` workers; results in input order."""
    results: list[AgentResult | BaseException | None] = [None] * len(batch)
    todo = iter(range(len(batch)))
    take = batch.take
    refused: list[BudgetExceededError] = []  # without return_exceptions: the job stops

    async def worker() -> None:
        for i in todo:
            if refused:
                return
            if progress is not None:
                progress.started()
            try:
                result = await call(take(i))
            except BudgetExceededError as exc:
                if progress is not None:
                    progress.finished(failed=True)
                if not return_exceptions:
                    refused.append(exc)
                    return
                results[i] = exc
            except Exception as exc:
                if progress is not None:
                    progress.finished(failed=True)
                if not return_exceptions:
                    raise
                results[i] = exc
            else:
                results[i] = result
                if progress is not None:
                    progress.finished(cached=result.cached, cost_usd=result.cost_usd)

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(min(workers, len(batch))):
                tg.create_task(worker())
    except BaseExceptionGroup as group:
        # Surface the first real failure, not a group wrapper: callers catch AgentnbError.
        raise first_error(group) from None
    if refused:
        raise refused[0]
    return results  # type: ignore[return-value]  # every slot was filled


class Batch:
    """The calls of one job, checked before any runs and prepared one by one as they start.

    Checking everything first means a bad call stops the job before anything is spent;
    preparing each call only when a worker takes it means a job of 100,000 calls never holds
    100,000 requests at once.
    """

    def __init__(self, preparer: Preparer, calls: Iterable[CallLike], common: CallOptions) -> None:
        self.preparer = preparer
        self.tags = Tags(run_id=uuid.uuid4().hex[:12])
        self.items: list[tuple[AgentSpec, str, CallOptions] | None] = []
        check = preparer.check
        append = self.items.append
        for i, call in enumerate(calls):
            try:
                if type(call) is tuple and len(call) == 2:  # the common spelling, made cheap
                    agent, task = call
                    append((check(agent, task), task, common))
                else:
                    c = AgentCall.coerce(call, i)
                    append((check(c.agent, c.task), c.task, common.merged(c.options)))
            except AgentnbError as exc:
                where = f"call #{i}: "
                first = exc.args[0] if exc.args else None
                if isinstance(first, str) and not first.startswith(where):  # say which call
                    exc.args = (where + first, *exc.args[1:])
                raise

    def __len__(self) -> int:
        return len(self.items)

    def take(self, i: int) -> PreparedCall:
        """Prepare call `i` (and let go of what was kept for it)."""
        item = self.items[i]
        assert item is not None, f"call #{i} taken twice"
        self.items[i] = None
        spec, task, options = item
        return self.preparer.build(spec, task, options, self.tags)


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception of a group that is not a cancellation (nested groups searched)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    first: BaseException = group.exceptions[0]
    return first


def step_progress(show: Progress) -> Callable[[StepEvent], None]:
    """A workflow's step events, counted on a `Progress` (a step counts when it ends)."""
    running: set[str] = set()  # reused and skipped steps finish without having run

    def on_event(event: StepEvent) -> None:
        if event.status == "running":
            running.add(event.step_id)
            show.started()
        elif event.status in ("succeeded", "cached", "failed", "skipped", "budget"):
            result = event.result
            show.finished(
                cached=event.status == "cached",
                failed=event.status in ("failed", "skipped", "budget"),
                cost_usd=result.cost_usd if result is not None else 0.0,
                was_in_flight=event.step_id in running,
            )

    return on_event
