"""`AgentStream`: one answer as it is generated, iterated from a thread or from any loop.

The chunks are produced on the home loop (`AsyncAgentOrchestrator.stream_chunks`) and carried
over by `HomeLoop.iterate` / `aiterate`; leaving the loop early cancels the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from ..backends import BackendResponse
from ..errors import AgentnbError
from ..result import AgentResult
from .records import CallState
from .structured import validated

if TYPE_CHECKING:
    from .budget import Budget
    from .core import AsyncAgentOrchestrator
    from .prepare import PreparedCall

__all__ = ["AgentStream", "stream_chunks"]


class AgentStream:
    """A streamed answer: iterate (sync or async) for text chunks; `.result` when done.

    Example:
        >>> stream = orch.stream_agent("writer", "Tell a story")      # doctest: +SKIP
        >>> for chunk in stream: print(chunk, end="")                 # doctest: +SKIP
        >>> stream.result.cached                                       # doctest: +SKIP
    """

    def __init__(
        self, orchestrator: AsyncAgentOrchestrator, call: PreparedCall, budget: Budget | None = None
    ) -> None:
        self._orch = orchestrator
        self.call = call
        self.budget = budget  # None: the orchestrator's session budget
        self.result: AgentResult | None = None
        self._started = False

    def _items(self) -> AsyncIterator[str | AgentResult]:
        if self._started:
            raise AgentnbError("a stream can be iterated only once")
        self._orch.check_open()
        self._started = True
        return self._orch.stream_chunks(self.call, self.budget)

    async def __aiter__(self) -> AsyncIterator[str]:
        async for item in self._orch.home.aiterate(self._items()):
            if isinstance(item, AgentResult):
                self.result = item
            else:
                yield item

    def __iter__(self) -> Iterator[str]:
        for item in self._orch.home.iterate(self._items()):
            if isinstance(item, AgentResult):
                self.result = item
            else:
                yield item

    def text(self) -> str:
        """Consume the stream (blocking) and return the whole answer."""
        return "".join(self)

    def __repr__(self) -> str:
        state = "done" if self.result is not None else "started" if self._started else "new"
        return f"<AgentStream {self.call.spec.name} ({state})>"


async def stream_chunks(
    orch: AsyncAgentOrchestrator, p: PreparedCall, budget: Budget
) -> AsyncIterator[str | AgentResult]:
    """Text chunks of one prepared call as they arrive, then its `AgentResult` (home loop).

    A stream shares the cache and its single-flight with every other call: an identical
    call in flight, or a cached answer, arrives as one chunk. A failed attempt that already
    showed text is not retried (a retry would show it again). On a cache miss the call holds
    its worst case in `budget` while it runs, as a plain call does. A structured answer
    (`schema=`) is validated before it is shown, so it arrives whole, as one chunk.
    """
    state = CallState()
    limit = orch.admission
    chunks: asyncio.Queue[str | None] = asyncio.Queue()
    sent = False
    backend = orch.backend

    async def one_stream() -> BackendResponse:
        nonlocal sent
        final: BackendResponse | None = None
        async for item in backend.stream(p.request):
            if isinstance(item, str):
                sent = True
                chunks.put_nowait(item)
            else:
                final = item
        if final is None:  # pragma: no cover - a backend contract violation
            raise AgentnbError("backend stream ended without a final response")
        return final

    async def attempts() -> BackendResponse:
        if p.request.schema is not None:
            return await validated(p, lambda q: orch.budgeted(q, limit, state, budget))
        return await orch.budgeted(p, limit, state, budget, one_stream, lambda: sent)

    async def produce() -> tuple[BackendResponse, bool]:
        try:
            return await orch.answer(p, attempts)
        finally:
            chunks.put_nowait(None)

    producer = asyncio.ensure_future(produce())
    try:
        while (chunk := await chunks.get()) is not None:
            yield chunk
        response, hit = await producer
    except BaseException as exc:
        producer.cancel()
        orch.recorder.failed(p, state, exc)
        raise
    if not sent:  # answered by the cache or an identical call: the whole text at once
        yield response.text
    budget.finish()
    yield orch.recorder.succeeded(p, response, state, hit)
