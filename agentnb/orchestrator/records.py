"""The record stage: a call's `AgentResult` and its row in the tracker, success or not.

`CallState` is what one call measured while it ran (start, time queued for admission, attempts);
`Recorder` turns it, with the response, into the result the caller gets and the metrics row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from ..backends import BackendResponse
from ..errors import AgentCallError
from ..metrics import PerformanceTracker, PriceTable
from ..result import AgentResult
from .prepare import PreparedCall

__all__ = ["CallState", "Recorder"]


class CallState:
    """What one call measured while it ran, shared by its stages and its record."""

    __slots__ = ("attempts", "concurrency", "queue_s", "quota_s", "rate_limited", "started", "t0")

    def __init__(self) -> None:
        self.started = time.time()
        self.t0 = time.perf_counter()
        self.queue_s = 0.0  # waiting for admission, the quota's share included
        self.attempts = 0
        self.quota_s = 0.0  # waiting for the quota's buckets
        self.concurrency = 0  # the quota's window when the last attempt was sent (0: none)
        self.rate_limited = 0  # 429s met


class Recorder:
    """Makes results and tracker rows; `backend_kind()` names the backend of a failed call."""

    def __init__(
        self,
        tracker: PerformanceTracker,
        prices: PriceTable,
        backend_kind: Callable[[], str],
    ) -> None:
        self.tracker = tracker
        self.prices = prices
        self.backend_kind = backend_kind

    def succeeded(
        self,
        p: PreparedCall,
        response: BackendResponse,
        state: CallState,
        hit: bool,
        batch_id: str | None = None,
        started_at: datetime | None = None,
    ) -> AgentResult:
        """The result of a call that got its answer (from the backend or the cache), recorded.

        `batch_id`: the Message Batch that answered it, whose price it pays (`PriceTable.cost`).
        `started_at`: `state.started` as a datetime, if the caller has it (a batch's requests
        share one state, and one conversion).
        """
        latency_ms = (time.perf_counter() - state.t0) * 1000
        usage = response.usage
        if batch_id is None:
            full_cost = self.prices.cost(response.model, usage)
        else:
            full_cost = self.prices.cost(response.model, usage, batch=True)
        cost = 0.0 if hit else full_cost
        attempts = 0 if hit else state.attempts
        backend = response.backend or self.backend_kind()
        tags = p.tags
        self.tracker.add(
            tags.run_id,
            tags.workflow,
            tags.step,
            p.spec.name,
            response.model,
            backend,
            state.started,
            latency_ms,
            state.queue_s * 1000,
            attempts,
            hit,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            cost,
            True,
            None,
            full_cost if hit and not math.isnan(full_cost) else 0.0,
            state.quota_s * 1000,
            state.concurrency,
            state.rate_limited,
            batch_id,
        )
        return AgentResult.make(
            p.spec.name,
            response.model,
            response.text,
            usage,
            cost,
            latency_ms,
            attempts,
            response.stop_reason,
            hit,
            backend,
            response.request_id,
            started_at or datetime.fromtimestamp(state.started, UTC),
            response.data,
        )

    def failed(
        self, p: PreparedCall, state: CallState, exc: BaseException, batch_id: str | None = None
    ) -> None:
        """Record a call that ended without an answer (its cost unknown if it was sent); a
        request of a Message Batch (`batch_id`) that ended without one cost nothing."""
        cause = exc.last_error if isinstance(exc, AgentCallError) else exc
        tags = p.tags
        self.tracker.add(
            tags.run_id,
            tags.workflow,
            tags.step,
            p.spec.name,
            p.request.model,
            self.backend_kind(),
            state.started,
            (time.perf_counter() - state.t0) * 1000,
            state.queue_s * 1000,
            state.attempts,
            False,
            0,
            0,
            0,
            0,
            math.nan if state.attempts and batch_id is None else 0.0,
            False,
            type(cause).__name__,
            0.0,
            state.quota_s * 1000,
            state.concurrency,
            state.rate_limited,
            batch_id,
        )

    def collected(
        self,
        agent: str,
        response: BackendResponse,
        batch_id: str,
        run_id: str | None,
        started: float,
    ) -> float:
        """Record a Message Batch's answer collected with no call of this process behind it
        (`orch.collect`: from the ledger); returns its cost, at the batch price."""
        usage = response.usage
        cost = self.prices.cost(response.model, usage, batch=True)
        self.tracker.add(
            run_id,
            None,
            None,
            agent,
            response.model,
            response.backend or self.backend_kind(),
            started,
            max(0.0, time.time() - started) * 1000,
            0.0,
            1,
            False,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            cost,
            True,
            None,
            0.0,
            0.0,
            0,
            0,
            batch_id,
        )
        return cost
