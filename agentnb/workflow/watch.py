"""A workflow run as an async iterator of its `StepEvent`s, then the `WorkflowRun`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from .events import StepEvent
from .model import Workflow
from .run import WorkflowRun
from .scheduler import StepExecutor, execute_workflow

__all__ = ["iter_workflow"]


async def iter_workflow(
    workflow: Workflow,
    execute: StepExecutor,
    **options: Any,
) -> AsyncIterator[StepEvent | WorkflowRun]:
    """`execute_workflow` as an async iterator: every `StepEvent`, then the `WorkflowRun` last.

    Leaving the loop early cancels the run.

    Example:
        >>> async for item in iter_workflow(wf, execute):      # doctest: +SKIP
        ...     if isinstance(item, WorkflowRun): run = item
        ...     else: show(item.step_id, item.status)
    """
    queue: asyncio.Queue[StepEvent] = asyncio.Queue()
    running = asyncio.ensure_future(
        execute_workflow(workflow, execute, progress=queue.put_nowait, **options)
    )
    getter: asyncio.Future[StepEvent] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, running}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
                continue
            while not queue.empty():
                yield queue.get_nowait()
            yield running.result()
            return
    finally:
        for future in (getter, running):
            if future is not None and not future.done():
                future.cancel()
                await asyncio.gather(future, return_exceptions=True)
