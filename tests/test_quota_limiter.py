"""The quota's admission stage (`agentnb.quota.limiter`) against the simulator's own quota.

The simulator enforces the API's rules (token buckets, 429 with retry-after, the spend-limit
429); these tests assert what it counted — 429s, calls accepted, which calls overlapped — never
how long anything took.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from agentnb import AgentOrchestrator, Config
from agentnb.backends import SimulatedBackend
from agentnb.errors import AgentCallError, SpendLimitError
from agentnb.quota import Level, RateLimits
from agentnb.quota.buckets import Limits
from agentnb.quota.limiter import QuotaLimiter
from agentnb.quota.stores import LocalStore

MODEL_CLASS = "sonnet"


def orchestrator(backend: SimulatedBackend, **settings: Any) -> AgentOrchestrator:
    values: dict[str, Any] = {
        "backend": "simulated",
        "cache_enabled": False,
        "max_concurrency": 64,
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.05,
        "max_attempts": 6,
        "progress": False,
        **settings,
    }
    return AgentOrchestrator(Config.load(env={}, **values), backend=backend)


def tight(rpm: float = 12_000, burst_s: float = 0.1, **more: float) -> SimulatedBackend:
    return SimulatedBackend(
        latency_s=0.005,
        jitter=0.0,
        limits={MODEL_CLASS: {"rpm": rpm, "burst_s": burst_s, **more}},
    )


def calls(n: int) -> list[tuple[str, str]]:
    return [("writer", f"task {i}") for i in range(n)]


def accepted_and_refused(backend: SimulatedBackend) -> tuple[int, int]:
    log = backend.calls.since(0)
    return sum(1 for r in log if r.ok), sum(1 for r in log if r.error == "rate_limit")


def test_a_200_call_job_against_a_tight_quota_meets_almost_no_429s() -> None:
    backend = tight()
    with orchestrator(backend) as orch:
        results = orch.execute_multiple(calls(200))
        quota = orch.quota()
        metrics = orch.metrics()
    ok, refused = accepted_and_refused(backend)
    assert len(results) == 200 and ok == 200
    assert refused <= 2  # ≤ 1 % of the calls
    (row,) = quota.to_dict("records")
    assert row["state"] == "known" and row["rpm"] == 12_000 and row["sent"] == 200
    assert row["store"] == "local"  # an in-process simulator's quota is its own
    assert (metrics["quota_wait_ms"] > 0).sum() > 100  # most calls waited for the buckets
    assert (metrics["concurrency"] >= 1).all()


def test_without_the_limiter_the_same_job_meets_a_storm_of_429s() -> None:
    backend = tight()
    with orchestrator(backend, rate_limiting=False, max_attempts=1) as orch:
        results = orch.execute_multiple(calls(200), return_exceptions=True)
    failed = sum(isinstance(r, AgentCallError) for r in results)
    _, refused = accepted_and_refused(backend)
    assert refused > 100 and failed == refused  # what the limiter saves a job from


def test_the_first_request_goes_alone_and_the_limits_are_learned_from_its_headers() -> None:
    backend = tight(rpm=6000, burst_s=1.0)
    with orchestrator(backend) as orch:  # no rate_limits: the limits are learned
        orch.execute_multiple(calls(12))
        (row,) = orch.quota().to_dict("records")
    log = backend.calls.since(0)
    first = log[0]
    assert first.ended is not None
    assert all(r.started >= first.ended for r in log[1:])  # nothing overlapped the first
    assert backend.peak_in_flight > 1  # then the fan-out
    assert row["state"] == "known" and row["rpm"] == 6000


def test_learned_limits_follow_the_headers_and_configured_ones_only_lower_them() -> None:
    limiter = QuotaLimiter("x|sonnet", LocalStore, limits=Limits(rpm=100), learn=True, ceiling=8)
    seen = RateLimits(Level(3000, 10, 0.5), Level(80_000, 900, 0.2), None, received=0.0)
    limiter.learn(seen)
    assert limiter.limits == Limits(rpm=100, itpm=80_000, otpm=None)
    limiter.learn(seen._replace(input_tokens=Level(160_000, 900, 0.2)))
    assert limiter.limits is not None and limiter.limits.itpm == 160_000  # a tier upgrade


def test_a_simulator_without_limits_takes_the_lean_path() -> None:
    backend = SimulatedBackend(latency_s=0.02, jitter=0.0)
    with orchestrator(backend, max_concurrency=8) as orch:
        orch.execute_multiple(calls(8))
        assert orch.quota().empty  # no quota was ever made
    assert backend.peak_in_flight == 8  # no first request held back


def test_a_429_pauses_every_waiting_call_for_its_retry_after() -> None:
    backend = tight(rpm=60_000, burst_s=1.0)
    with orchestrator(backend, max_concurrency=4) as orch:
        orch.execute_agent("writer", "warm up")  # the limits are known from here
        backend.inject("rate_limit", times=1, retry_after=1.0)
        orch.execute_multiple(calls(6))
        metrics = orch.metrics()
    log = backend.calls.since(0)
    refused = [r for r in log if r.error == "rate_limit"]
    assert len(refused) == 1
    heard = refused[0].ended
    assert heard is not None
    after = [r for r in log if r.started > heard]
    assert len(after) >= 3  # the job went on: the retry and the calls not yet sent
    # The 429 paused the quota: every call sent after it was heard waited out the retry-after.
    assert min(r.started for r in after) >= heard + 1.0 - 0.01
    assert metrics["rate_limited"].sum() == 1


def test_a_spend_limit_fails_in_one_attempt_and_stops_the_calls_after_it() -> None:
    backend = SimulatedBackend(latency_s=0.0, spend_limit_usd=1e-9, limits={"*": {"rpm": 6000}})
    with orchestrator(backend) as orch:
        orch.execute_agent("writer", "spends the budget")
        with pytest.raises(AgentCallError) as info:
            orch.execute_agent("writer", "refused")
        assert info.value.attempts == 1 and isinstance(info.value.last_error, SpendLimitError)
        sent = backend.call_count
        with pytest.raises(AgentCallError) as info:
            orch.execute_agent("writer", "not even sent")
        assert backend.call_count == sent  # stopped before the backend
        assert info.value.attempts == 0 and isinstance(info.value.last_error, SpendLimitError)


def test_the_input_estimate_learns_what_the_api_counts(caplog: pytest.LogCaptureFixture) -> None:
    backend = tight(rpm=60_000, itpm=600_000, burst_s=1.0)
    with orchestrator(backend, prompt_caching=False) as orch:
        caplog.set_level(logging.WARNING, "agentnb")
        orch.execute_multiple(calls(20))
        (row,) = orch.quota().to_dict("records")
    assert row["input_ratio"] == pytest.approx(1.0, abs=0.05)  # the simulator counts as we do
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_prompt_cache_reads_do_not_count_toward_the_input_quota() -> None:
    backend = tight(rpm=60_000, itpm=600_000, burst_s=1.0)
    with orchestrator(backend, prompt_caching=True) as orch:
        orch.execute_multiple(calls(20))
        (row,) = orch.quota().to_dict("records")
        metrics = orch.metrics()
    assert metrics["cache_read_tokens"].sum() > 0
    # The system prompt is read from the prompt cache: only the task counts, so the estimate
    # (system + task) learns to expect far fewer counted tokens.
    assert row["input_ratio"] < 0.5
