"""Budgets: a job stops before the call that could pass its limit, calls in flight counted."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentnb import AgentRegistry, AsyncAgentOrchestrator, Config
from agentnb.backends import SimulatedBackend
from agentnb.errors import BudgetExceededError, OptionError
from agentnb.orchestrator import Budget, worst_cost
from agentnb.orchestrator.budget import check_budget

# Every task has the same length, so every call has the same worst case; 32 tokens of output
# is less than any simulated answer, so each call writes exactly max_tokens and, with prompt
# caching off, costs its worst case (within one input token).
TASKS = [f"Write tip number {i:02d} about tidy notebooks" for i in range(12)]
MAX_TOKENS = 32
FAN = """
name: fan
max_concurrency: 1
defaults: {max_tokens: 32}
steps:
  - {id: a, agent: writer, task: "first tip about {{topic}}"}
  - {id: b, agent: writer, task: "other tip about {{topic}}"}
  - {id: c, agent: writer, task: "third tip about {{topic}}"}
  - {id: d, agent: writer, task: "merge {{a}} {{b}} {{c}}"}
"""


def make(**config: Any) -> AsyncAgentOrchestrator:
    settings: dict[str, Any] = {
        "backend": "simulated",
        "cache_backend": "memory",
        "sim_latency_s": 0.002,
        "sim_jitter": 0.0,
        "max_concurrency": 4,
        "prompt_caching": False,
    }
    settings.update(config)
    cfg = Config.load(env={}, **settings)
    sim = SimulatedBackend(latency_s=0.002, jitter=0.0)
    return AsyncAgentOrchestrator(
        cfg, backend=sim, agents=AgentRegistry(include_default_dirs=False)
    )


@pytest.fixture
async def orch() -> AsyncIterator[AsyncAgentOrchestrator]:
    o = make()
    yield o
    await o.aclose()


def sim_of(orch: AsyncAgentOrchestrator) -> SimulatedBackend:
    backend = orch.backend
    assert isinstance(backend, SimulatedBackend)
    return backend


def worst(orch: AsyncAgentOrchestrator, task: str = TASKS[0]) -> float:
    return worst_cost(orch.prepare("writer", task, max_tokens=MAX_TOKENS), orch.prices)


def calls(n: int = len(TASKS), start: int = 0) -> list[tuple[str, str]]:
    return [("writer", t) for t in TASKS[start : start + n]]


def spent(orch: AsyncAgentOrchestrator) -> float:
    return float(orch.metrics()["cost_usd"].sum())


# -- the Budget itself ---------------------------------------------------------------------------
async def test_a_call_waits_for_calls_in_flight_then_is_refused_in_one_line() -> None:
    budget = Budget(1.0, total=5)
    await budget.admit(0.4)
    await budget.admit(0.4)  # 0.8 held
    waiting = asyncio.ensure_future(budget.admit(0.4))
    await asyncio.sleep(0)
    assert not waiting.done()  # 0.8 + 0.4 > 1.0, and calls are in flight: it waits
    budget.settle(0.4, 0.1)  # 0.1 spent, 0.4 held: 0.9 with it, it fits
    await waiting
    assert budget.in_flight == 2 and budget.reserved_usd == pytest.approx(0.8)
    budget.settle(0.4, 0.35)
    budget.settle(0.4, 0.3)
    assert budget.in_flight == 0 and budget.reserved_usd == 0.0
    budget.finish()
    budget.finish()
    with pytest.raises(BudgetExceededError) as refused:
        await budget.admit(0.4)  # 0.75 + 0.4 > 1.0 with nothing in flight
    message = str(refused.value)
    assert message == (
        "budget of $1.0000 reached: $0.7500 spent, the next call could cost up to $0.4000; "
        "2 of 5 calls finished"
    )
    assert refused.value.budget_usd == 1.0 and refused.value.spent_usd == pytest.approx(0.75)
    await budget.admit(0.2)  # a smaller call still fits


async def test_a_call_must_fit_its_parent_too() -> None:
    session = Budget(1.0, label="session budget")
    job = Budget(None, session)
    assert job.limited and not Budget(None).limited
    await job.admit(0.7)
    assert session.reserved_usd == pytest.approx(0.7)
    job.settle(0.7, 0.7, "m")
    with pytest.raises(BudgetExceededError, match=r"^session budget of \$1\.0000 reached"):
        await job.admit(0.5)
    assert session.by_model == {"m": 0.7} and job.snapshot().total_usd == pytest.approx(0.7)
    assert session.snapshot().remaining_usd == pytest.approx(0.3)


async def test_a_batch_reserves_at_once_or_is_refused_without_waiting() -> None:
    session = Budget(1.0, label="session budget")
    job = Budget(0.5, session)
    job.admit_now(0.3, "batch 1")  # held by both until it settles
    assert job.in_flight == 1 and session.reserved_usd == pytest.approx(0.3)
    with pytest.raises(BudgetExceededError, match="batch 2 could cost up to"):
        job.admit_now(0.3, "batch 2")  # a call in flight would make admit() wait; a batch not
    with pytest.raises(BudgetExceededError, match="model with no price"):
        job.admit_now(math.nan, "batch 3")
    job.settle_batch(0.3, [(0.1, "m1"), (0.05, "m2"), (0.0, "m1"), (math.nan, "m3")])
    for level in (job, session):
        assert (level.in_flight, level.reserved_usd) == (0, 0.0)
        assert level.spent_usd == pytest.approx(0.15) and level.sent_calls == 4
        assert level.by_model == pytest.approx({"m1": 0.1, "m2": 0.05})
        assert level.unpriced_calls == 1
    session.settle_batch(None, [(0.2, "m1")])  # collected later: nothing was held
    assert session.in_flight == 0 and session.spent_usd == pytest.approx(0.35)


@pytest.mark.parametrize("value", [-1, -0.01, math.nan, math.inf, "abc", "-2", True, [1]])
def test_bad_budgets_are_one_line_naming_the_flag(value: object) -> None:
    with pytest.raises(OptionError) as bad:
        check_budget(value, source="%agent", name="--budget")
    assert str(bad.value).startswith("%agent --budget: must be a finite amount of US dollars")
    assert "\n" not in str(bad.value) and bad.value.option == "--budget"


def test_good_budgets() -> None:
    assert check_budget(None, source="x") is None
    assert check_budget("0.5", source="x") == 0.5
    assert check_budget(0, source="x") == 0.0


# -- jobs --------------------------------------------------------------------------------------
async def test_the_budget_stops_a_job_before_the_call_that_would_pass_it(
    orch: AsyncAgentOrchestrator,
) -> None:
    w = worst(orch)
    limit = 5.5 * w  # five worst cases fit, six do not
    with pytest.raises(BudgetExceededError) as refused:
        await orch.execute_multiple(
            calls(), max_tokens=MAX_TOKENS, max_cost_usd=limit, progress=False
        )
    assert "5 of 12 calls finished" in str(refused.value)
    assert sim_of(orch).call_count == 5  # never more started than fit
    assert spent(orch) <= limit
    # The calls that were waiting for room were refused too, and none of them was sent.
    ran = orch.metrics()
    refused_rows = ran[~ran["success"]]
    assert set(refused_rows["error_type"]) == {"BudgetExceededError"}
    assert (refused_rows["attempts"] == 0).all() and (refused_rows["cost_usd"] == 0).all()

    # The finished calls were kept and cached: running the job again pays only for the rest.
    results = await orch.execute_multiple(
        calls(), max_tokens=MAX_TOKENS, max_cost_usd=7.5 * w, progress=False
    )
    assert sum(1 for r in results if not isinstance(r, BaseException) and r.cached) == 5
    assert sim_of(orch).call_count == 12


async def test_calls_in_flight_hold_their_worst_case(orch: AsyncAgentOrchestrator) -> None:
    w = worst(orch)
    with pytest.raises(BudgetExceededError):
        await orch.execute_multiple(
            calls(), max_tokens=MAX_TOKENS, max_cost_usd=3.5 * w, progress=False
        )
    sim = sim_of(orch)
    assert sim.peak_in_flight == 3  # concurrency 4, but only three worst cases fit at once
    assert sim.call_count == 3 and spent(orch) <= 3.5 * w


async def test_with_return_exceptions_the_refused_calls_hold_the_error(
    orch: AsyncAgentOrchestrator,
) -> None:
    w = worst(orch)
    results = await orch.execute_multiple(
        calls(),
        max_tokens=MAX_TOKENS,
        max_cost_usd=5.5 * w,
        return_exceptions=True,
        progress=False,
    )
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(refused) == 7 and len(results) == 12
    assert sim_of(orch).call_count == 5 and spent(orch) <= 5.5 * w


async def test_the_budget_default_is_the_setting_and_cache_hits_never_reserve() -> None:
    orch = make(max_cost_usd=0.0)
    try:
        with pytest.raises(BudgetExceededError, match=r"budget of \$0\.0000 reached"):
            await orch.execute_multiple(calls(2), max_tokens=MAX_TOKENS, progress=False)
        assert sim_of(orch).call_count == 0
        await orch.execute_multiple(
            calls(2), max_tokens=MAX_TOKENS, max_cost_usd=1.0, progress=False
        )
        # Everything is cached now: a budget of nothing is enough.
        results = await orch.execute_multiple(calls(2), max_tokens=MAX_TOKENS, progress=False)
        assert all(not isinstance(r, BaseException) and r.cached for r in results)
    finally:
        await orch.aclose()


async def test_a_bad_budget_is_refused_before_anything_runs(orch: AsyncAgentOrchestrator) -> None:
    with pytest.raises(OptionError, match=r"^execute_multiple max_cost_usd: must be a finite"):
        await orch.execute_multiple(calls(2), max_cost_usd=-1.0)
    with pytest.raises(OptionError, match=r"^run_workflow max_cost_usd"):
        await orch.run_workflow(FAN, {"topic": "x"}, max_cost_usd=math.nan)
    assert sim_of(orch).call_count == 0


async def test_a_single_call_may_have_its_own_budget(orch: AsyncAgentOrchestrator) -> None:
    w = worst(orch)
    with pytest.raises(BudgetExceededError, match="0 of 1 calls finished"):
        await orch.execute_agent("writer", TASKS[0], max_tokens=MAX_TOKENS, max_cost_usd=w / 2)
    result = await orch.execute_agent("writer", TASKS[0], max_tokens=MAX_TOKENS, max_cost_usd=w)
    assert result.cost_usd <= w
    stream = orch.stream_agent("writer", TASKS[1], max_tokens=MAX_TOKENS, max_cost_usd=w / 2)
    with pytest.raises(BudgetExceededError):
        async for _ in stream:
            pass
    assert sim_of(orch).call_count == 1


# -- workflows ---------------------------------------------------------------------------------
async def test_a_workflow_stopped_by_its_budget_has_status_budget(
    orch: AsyncAgentOrchestrator,
) -> None:
    w = worst_cost(orch.prepare("writer", "first tip about caches", max_tokens=32), orch.prices)
    run = await orch.run_workflow(FAN, {"topic": "caches"}, max_cost_usd=2.5 * w, progress=False)
    assert run.status == "budget"
    statuses = {k: s.status for k, s in run.steps.items()}
    assert statuses == {"a": "succeeded", "b": "succeeded", "c": "budget", "d": "budget"}
    assert isinstance(run.steps["c"].error, BudgetExceededError)
    assert run.steps["c"].attempts == 0 and run.steps["d"].reason is not None
    assert run.over_budget == ["c", "d"] and "budget" in repr(run)
    assert "budget" in run._repr_html_() and run.metrics["status"].tolist()[-1] == "budget"
    assert sim_of(orch).call_count == 2 and spent(orch) <= 2.5 * w

    # What finished is cached: the next run pays only for c and d.
    again = await orch.run_workflow(FAN, {"topic": "caches"}, progress=False)
    assert again.status == "succeeded"
    order = [s.status for s in again.steps.values()]
    assert order == ["cached", "cached", "succeeded", "succeeded"]
    assert sim_of(orch).call_count == 4


# -- the session -------------------------------------------------------------------------------
async def test_the_session_budget_spans_jobs() -> None:
    orch = make()
    try:
        w = worst(orch)
        await orch.reconfigure(orch.config.replace(session_budget_usd=3.5 * w))
        await orch.execute_multiple(calls(2), max_tokens=MAX_TOKENS, progress=False)
        with pytest.raises(BudgetExceededError, match=r"^session budget of"):
            await orch.execute_multiple(
                calls(4, start=2), max_tokens=MAX_TOKENS, max_cost_usd=1.0, progress=False
            )
        assert sim_of(orch).call_count == 3
        spend = orch.spend()
        assert spend.total_usd == pytest.approx(spent(orch)) and spend.total_usd <= 3.5 * w
        assert spend.calls == 3 and spend.limit_usd == pytest.approx(3.5 * w)
        assert list(spend.by_model) == ["claude-sonnet-5-5"]
        assert spend.frame["cost_usd"].sum() == pytest.approx(spend.total_usd)
        assert repr(spend).startswith("session spend: $")
    finally:
        await orch.aclose()


async def test_spend_counts_without_a_limit(orch: AsyncAgentOrchestrator) -> None:
    assert orch.spend().total_usd == 0 and orch.spend().limit_usd is None
    await orch.execute_multiple(calls(3), max_tokens=MAX_TOKENS, progress=False)
    await orch.execute_agent("writer", TASKS[0], max_tokens=MAX_TOKENS)  # a hit: free
    spend = orch.spend()
    assert spend.total_usd == pytest.approx(spent(orch)) and spend.calls == 3
    assert spend.remaining_usd is None and orch.session_budget.finished == 4
