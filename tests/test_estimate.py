"""`estimate()`: tokens, cost and time predicted before a job runs, with nothing run or recorded."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentnb import AgentOrchestrator, AgentRegistry, AsyncAgentOrchestrator, Config
from agentnb.backends import BackendRequest, SimulatedBackend
from agentnb.errors import AgentnbError
from agentnb.orchestrator import Estimate, estimate_input_tokens

# Tasks of different lengths, so that each call counts its own tokens.
TASKS = [f"Suggest improvement #{i} for this function: " + "x = 1; " * (i * 7) for i in range(8)]
FAN = """
name: fan
steps:
  - {id: a, agent: writer, task: "first about {{topic}}"}
  - {id: b, agent: code-reviewer, task: "second about {{topic}}"}
  - {id: d, agent: python-expert, task: "merge {{a}} and {{b}}, then {{a}} again"}
"""


def make(backend: SimulatedBackend | None = None, **config: Any) -> AsyncAgentOrchestrator:
    settings: dict[str, Any] = {
        "backend": "simulated",
        "cache_backend": "memory",
        "sim_latency_s": 0.002,
        "sim_jitter": 0.0,
        "max_concurrency": 4,
    }
    settings.update(config)
    cfg = Config.load(env={}, **settings)
    sim = backend if backend is not None else SimulatedBackend(latency_s=0.002, jitter=0.0)
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


async def cannot_count(request: BackendRequest) -> int | None:
    """What a backend without `count_tokens` answers."""
    return None


@pytest.mark.parametrize("counted", [True, False], ids=["counted", "estimated-locally"])
async def test_the_estimate_predicts_what_the_run_records(
    counted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    orch = make()
    if not counted:
        monkeypatch.setattr(sim_of(orch), "count_tokens", cannot_count)
    try:
        calls = [("writer", t) for t in TASKS[:4]] + [("python-expert", t) for t in TASKS[4:]]
        est = await orch.estimate(calls, max_tokens=200)
        assert est.tokens_basis.startswith("counted" if counted else "estimated locally")
        # Nothing ran, nothing was recorded, the cache saw no lookup.
        assert sim_of(orch).call_count == 0 and len(orch.tracker) == 0
        assert orch.cache is not None
        stats = orch.cache.stats()
        assert stats["misses"] == 0 and stats["hits_memory"] == 0

        results = await orch.execute_multiple(calls, max_tokens=200, progress=False)
        assert len(results) == len(calls)
        ran = orch.metrics()
        prompt = ran["input_tokens"] + ran["cache_read_tokens"] + ran["cache_write_tokens"]
        table = est.table
        assert list(table["agent"]) == list(ran["agent"])
        for predicted, actual in zip(table["input_tokens"], prompt, strict=True):
            assert abs(predicted - actual) <= 0.1 * actual
        assert abs(est.input_tokens - prompt.sum()) <= 0.1 * prompt.sum()
        assert (table["output_low"] <= ran["output_tokens"]).all()
        assert (ran["output_tokens"] <= table["output_high"]).all()
        assert (table["output_high"] == 200).all()
        assert (table["cost_low_usd"] <= ran["cost_usd"] + 1e-12).all()
        assert (ran["cost_usd"] <= table["cost_high_usd"] + 1e-12).all()
        assert est.cost_low_usd <= ran["cost_usd"].sum() <= est.cost_high_usd + 1e-12
    finally:
        await orch.aclose()


async def test_the_local_estimate_is_the_simulators_count() -> None:
    sim = SimulatedBackend(latency_s=0)
    for system, task in [("", "hi"), ("y" * 9, "x" * 41), ("a" * 400, "b" * 3)]:
        request = BackendRequest(model="claude-sonnet-5-5", task=task, system=system)
        counted = await sim.count_tokens(request)
        assert counted <= estimate_input_tokens(request) <= counted + 1


async def test_cached_calls_are_estimated_free_and_looking_counts_no_hit(
    orch: AsyncAgentOrchestrator,
) -> None:
    done = [("writer", t) for t in TASKS[:3]]
    await orch.execute_multiple(done, max_tokens=64, progress=False)
    assert orch.cache is not None
    before = orch.cache.stats()
    calls_before, records_before = sim_of(orch).call_count, len(orch.tracker)

    new = [("writer", TASKS[5]), ("writer", TASKS[5])]  # a call and its repeat
    est = await orch.estimate(done + new, max_tokens=64)

    assert orch.cache.stats() == before  # no hit, no miss counted
    assert (sim_of(orch).call_count, len(orch.tracker)) == (calls_before, records_before)
    assert list(est.table["cached"]) == [True, True, True, False, True]
    cached = est.table[est.table["cached"]]
    assert (cached["cost_low_usd"] == 0).all() and (cached["cost_high_usd"] == 0).all()
    assert est.table.loc[3, "cost_low_usd"] > 0
    assert est.cached_calls == 4 and est.cost_high_usd == est.table.loc[3, "cost_high_usd"]
    # A cached answer's tokens are those it holds.
    ran = orch.metrics()
    assert list(est.table["output_low"][:3]) == list(ran["output_tokens"])


async def test_output_range_follows_the_history(orch: AsyncAgentOrchestrator) -> None:
    first = await orch.estimate([("writer", TASKS[0])])
    assert first.output_low == 1 and first.output_high == orch.config.max_tokens
    results = await orch.execute_multiple(
        [("writer", t) for t in TASKS[:4]], return_exceptions=False, progress=False
    )
    mean = sum(r.usage.output_tokens for r in results if not isinstance(r, BaseException)) / 4
    est = await orch.estimate([("writer", TASKS[6]), ("python-expert", TASKS[6])])
    writer, expert = est.table.iloc[0], est.table.iloc[1]
    assert writer["output_low"] == round(mean) and writer["output_high"] == orch.config.max_tokens
    assert expert["output_low"] == 1  # no history for this agent yet
    assert "latency history" in est.time_basis


async def test_time_follows_latency_concurrency_and_quota() -> None:
    orch = make(sim_latency_s=0.5)  # nothing runs: the latency is only what is predicted
    try:
        calls = [("writer", t) for t in TASKS]
        assert (await orch.estimate(calls, max_concurrency=4)).wall_s == pytest.approx(1.0)
        assert (await orch.estimate(calls, max_concurrency=3)).wall_s == pytest.approx(1.5)
        assert (await orch.estimate(calls, max_concurrency=8)).wall_s == pytest.approx(0.5)
        await orch.reconfigure(orch.config.replace(rate_limits={"sonnet": {"rpm": 60}}))
        limited = await orch.estimate(calls, max_concurrency=8)
        assert limited.quota_s == pytest.approx(7.0)  # 8 requests, a burst of 1, 1 a second
        assert limited.wall_s == pytest.approx(7.0)
        assert sim_of(orch).call_count == 0
    finally:
        await orch.aclose()


async def test_a_workflow_estimate_has_its_critical_path_and_then_is_free() -> None:
    orch = make(sim_latency_s=0.5)
    try:
        est = await orch.estimate(FAN, variables={"topic": "caches"})
        assert list(est.table["step"]) == ["a", "b", "d"]
        assert est.workflow == "fan" and est.critical_path[-1] == "d"
        assert est.wall_s == pytest.approx(1.0) and est.critical_path_s == pytest.approx(1.0)
        one = await orch.estimate(FAN, variables={"topic": "caches"}, max_concurrency=1)
        assert one.wall_s == pytest.approx(1.5)
        # The merging step's prompt holds its upstream answers: a twice, b once.
        a, b, d = (est.table.iloc[i] for i in range(3))
        assert d["input_tokens"] > 3 * orch.config.max_tokens
        assert d["cost_high_usd"] > d["cost_low_usd"] > 0 and not est.table["cached"].any()
        assert sim_of(orch).call_count == 0 and len(orch.tracker) == 0
        assert a["output_high"] == b["output_high"] == orch.config.max_tokens

        await orch.reconfigure(orch.config.replace(sim_latency_s=0.002))
        sim_of(orch).latency_s = 0.002
        run = await orch.run_workflow(FAN, {"topic": "caches"}, progress=False)
        assert run.status == "succeeded"
        again = await orch.estimate(FAN, variables={"topic": "caches"})
        assert again.cached_calls == 3 and again.cost_high_usd == 0 and again.wall_s == 0
        ran = orch.metrics()
        prompt = ran["input_tokens"] + ran["cache_read_tokens"] + ran["cache_write_tokens"]
        assert list(again.table["input_tokens"]) == list(prompt)
    finally:
        await orch.aclose()


async def test_a_workflow_estimate_takes_only_use_cache(orch: AsyncAgentOrchestrator) -> None:
    with pytest.raises(AgentnbError, match="only use_cache applies"):
        await orch.estimate(FAN, variables={"topic": "x"}, max_tokens=10)
    est = await orch.estimate(FAN, variables={"topic": "x"}, use_cache=False)
    assert est.calls == 3


async def test_unknown_prices_are_counted_apart(orch: AsyncAgentOrchestrator) -> None:
    est = await orch.estimate([("writer", "hi"), ("writer", "hello")], model="no-such-model")
    assert est.unknown_cost_calls == 2 and est.cost_high_usd == 0
    assert math.isnan(est.table.loc[0, "cost_high_usd"])
    assert "2 of unknown price" in repr(est)
    assert est.to_dict()["rows"][0]["cost_high_usd"] is None


def test_the_blocking_twin_and_the_display() -> None:
    cfg = Config.load(
        env={}, backend="simulated", cache_backend="memory", sim_latency_s=0.25, sim_jitter=0.0
    )
    with AgentOrchestrator(cfg, agents=AgentRegistry(include_default_dirs=False)) as orch:
        est = orch.estimate([("writer", "A haiku"), ("python-expert", "Review x = 1")])
        assert isinstance(est, Estimate)
        text = repr(est)
        assert text.startswith("estimate of 2 calls: cost $")
        assert "about 0.25 s at concurrency 10" in text and "nothing was run" in text
        assert "writer" in text and "python-expert" in text
        html = est._repr_html_()
        assert "<table>" in html and "python-expert" in html
        assert est.to_dict()["calls"] == 2
        assert len(orch.tracker) == 0
