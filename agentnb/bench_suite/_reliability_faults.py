"""Calls under mixed faults: do they complete, and is every server retry-after honoured?

The simulator fails 20 % of attempts at random (rate_limit, server_error, overloaded,
connection, and timeout: a hang past the attempt's `timeout_s`), and a few injected faults carry
their own retry-after hints. Whether a call's faults "ended within the attempts" is read from the
simulator's call log: a call whose every one of `max_attempts` attempts failed is excluded, any
other must complete. The gap before each retry is measured on the same log (the failed attempt's
end to the next attempt's start, both on the simulator's clock) against the hint the error
carried, which a thin wrapper notes by request id.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping

from ..backends import Backend, BackendRequest, BackendResponse, SimulatedBackend
from ..backends.simulated import CallRecord
from ..errors import RetryableError
from ..loop import run_sync
from ..orchestrator import AsyncAgentOrchestrator, Retrying
from ._common import Row, _calls, _parts, fresh_tasks
from ._reliability_common import probe_row

__all__ = ["FAULT_MIX", "bench_faults", "retry_after_margins"]

FAULT_MIX = ("rate_limit", "server_error", "overloaded", "connection", "timeout")
#: Injected faults with hints of their own (random ones carry none, but a rate limit's default).
_HINTED = (("overloaded", 0.03), ("server_error", 0.025), ("rate_limit", 0.035))


class _HintNotes(Backend):
    """The simulator, noting the retry-after hint of each failed attempt by its request id."""

    kind = "simulated"

    def __init__(self, sim: SimulatedBackend) -> None:
        self.sim = sim
        self.hints: dict[str, float] = {}

    async def create(self, request: BackendRequest) -> BackendResponse:
        try:
            return await self.sim.create(request)
        except RetryableError as exc:
            if exc.retry_after is not None and exc.request_id:
                self.hints[exc.request_id] = exc.retry_after
            raise

    def stream(self, request: BackendRequest) -> AsyncIterator[str | BackendResponse]:
        return self.sim.stream(request)

    @property
    def quota_scope(self) -> str:
        return self.sim.quota_scope

    @property
    def reports_rate_limits(self) -> bool:
        return self.sim.reports_rate_limits


def retry_after_margins(records: Iterable[CallRecord], hints: Mapping[str, float]) -> list[float]:
    """For each attempt that failed with a retry-after hint and was tried again: seconds from
    its end to the next attempt's start, minus the hint (negative: the hint was undercut).

    Attempts of one call are the records of one (agent, task), in order of their start.
    """
    by_call: dict[tuple[str, str], list[CallRecord]] = defaultdict(list)
    for record in records:
        by_call[record.agent, record.task].append(record)
    margins = []
    for attempts in by_call.values():
        attempts.sort(key=lambda r: r.started)
        for failed, retry in itertools.pairwise(attempts):
            hint = hints.get(failed.request_id)
            if hint is not None and failed.ended is not None:
                margins.append(retry.started - failed.ended - hint)
    return margins


def bench_faults(
    calls: int,
    *,
    max_concurrency: int = 50,
    latency_s: float = 0.005,
    max_attempts: int = 10,
    retrying: Retrying | None = None,
) -> list[Row]:
    """`calls` fresh calls under `fault_rate=0.2`; two rows: completed, retry-after undercut.

    `retrying` replaces the orchestrator's retry policy (the tests give one that ignores the
    server's hints, to see the undercut reported).
    """
    timeout_s, hang_s = 0.1, 0.3
    sim = SimulatedBackend(
        latency_s=latency_s,
        jitter=0.0,
        fault_rate=0.2,
        fault_kinds=FAULT_MIX,
        retry_after_s=0.02,
        hang_s=hang_s,
    )
    for kind, hint in _HINTED:
        sim.inject(kind, 2, retry_after=hint)
    notes = _HintNotes(sim)
    cfg, kwargs = _parts(
        latency_s,
        max_concurrency,
        backend=notes,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
        max_retry_wait_s=5.0,
    )
    aio = AsyncAgentOrchestrator(cfg, **kwargs)
    if retrying is not None:
        aio.retrying = retrying
    tasks = fresh_tasks(calls, "Reliability under faults")
    mark = sim.calls.appended
    try:
        results = run_sync(aio.execute_multiple(_calls(tasks), return_exceptions=True))
    finally:
        run_sync(aio.aclose())
    records = sim.calls.since(mark)
    failed_attempts: Counter[str] = Counter(r.task for r in records if r.ok is False)
    exhausted = completed = 0
    not_completed = []
    for task, result in zip(tasks, results, strict=True):
        if not isinstance(result, BaseException):
            completed += 1
        elif failed_attempts[task] >= max_attempts:
            exhausted += 1
        else:
            not_completed.append(f"{task}: {type(result).__name__}: {str(result)[:160]}")
    eligible = calls - exhausted
    kinds = Counter(r.error for r in records if r.ok is False)
    faults = ", ".join(f"{k} {kinds[k]}" for k in (*FAULT_MIX, "cancelled") if kinds[k])
    rows = [
        probe_row(
            "calls completed under 20 % mixed faults",
            f"fault_rate 0.2 ({', '.join(FAULT_MIX)}), max_attempts {max_attempts}, "
            f"timeout_s {timeout_s:g} vs hang_s {hang_s:g}",
            calls,
            f"{completed} of {eligible} completed ({exhausted} failed every attempt)",
            "100 % of the calls whose faults end within the attempts",
            completed == eligible and eligible > 0,
            detail=f"{len(records)} attempts; faults: {faults or 'none'}",
            failures=not_completed,
        )
    ]
    margins = retry_after_margins(records, notes.hints)
    undercut = [m for m in margins if m < 0]
    smallest = f"{min(margins) * 1000:.2f} ms" if margins else "n/a"
    rows.append(
        probe_row(
            "retry-after undercut",
            "gap before the next attempt (simulator's call log) vs the error's retry-after",
            len(margins),
            f"{len(undercut)} undercut; smallest margin {smallest}",
            "0 undercut (and at least one hinted retry)",
            bool(margins) and not undercut,
            detail=f"hints {sorted({round(h, 3) for h in notes.hints.values()})} s",
            failures=[f"retry {m * 1000:.3f} ms early" for m in sorted(undercut)[:10]]
            + ([f"... and {len(undercut) - 10} more"] if len(undercut) > 10 else []),
        )
    )
    return rows
