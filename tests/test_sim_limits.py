"""The simulator's quotas (sim_limits): token buckets, headers, ITPM/OTPM rules, spend limit,
acceleration after idle, count_tokens, and faults that come in runs. A fake clock: no waiting."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from agentnb import AgentCallError, AgentOrchestrator, AgentRegistry, Config
from agentnb.backends import (
    AnthropicBackend,
    BackendRequest,
    BackendResponse,
    Message,
    SimulatedBackend,
    simulator_transport,
)
from agentnb.backends.sim_faults import FaultRuns
from agentnb.backends.sim_limits import SimQuota, retry_after_seconds
from agentnb.errors import BackendError, RateLimitError, SpendLimitError, is_spend_limit
from agentnb.quota import RateLimits, model_class, parse_rate_limits

SONNET = "claude-sonnet-5-5"
HAIKU = "claude-haiku-5-5"
SYSTEM = "You are a careful Python expert. Answer briefly and precisely. " * 60  # ~900 tokens
AUTH = {"x-api-key": "sk-test"}


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def req(task: str = "Review parse_config for bugs", **kw: Any) -> BackendRequest:
    kw.setdefault("model", SONNET)
    kw.setdefault("agent", "python-expert")
    return BackendRequest(task=task, **kw)


def sim(
    clock: Clock, limits: dict[str, dict[str, float]] | None = None, **kw: Any
) -> SimulatedBackend:
    return SimulatedBackend(latency_s=0, jitter=0, clock=clock, limits=limits, **kw)


async def refused(backend: SimulatedBackend, request: BackendRequest) -> RateLimitError:
    with pytest.raises(RateLimitError) as info:
        await backend.create(request)
    return info.value


@pytest.fixture
async def sdk_over(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """`make(sim)`: the real SDK backend answered by `sim` through the in-process transport."""
    made: list[AnthropicBackend] = []

    def make(backend: SimulatedBackend) -> AnthropicBackend:
        made.append(
            AnthropicBackend(
                api_key="sk-test", base_url="http://sim", transport=simulator_transport(backend)
            )
        )
        return made[-1]

    yield make
    for backend in made:
        await backend.aclose()


# -- the buckets ---------------------------------------------------------------------------


async def test_60_rpm_is_one_request_a_second_after_the_burst() -> None:
    clock = Clock()
    backend = sim(clock, {"*": {"rpm": 60}})
    assert (await backend.create(req("a"))).text
    error = await refused(backend, req("b"))
    assert error.retry_after == 1.0 and error.status_code == 429 and error.retryable
    assert "60 requests per minute" in str(error) and "sonnet" in str(error)
    assert error.limits is not None and error.limits.requests is not None
    assert error.limits.requests.remaining == 0 and error.limits.requests.limit == 60
    for step in range(1, 6):  # then exactly one a second, never two
        clock.now = 1000.0 + step
        assert (await backend.create(req(f"ok {step}"))).text
        clock.now += 0.5
        assert (await refused(backend, req(f"early {step}"))).retry_after == 1.0
    assert [c.error for c in backend.calls].count("rate_limit") == 6


async def test_each_model_class_has_its_own_buckets() -> None:
    clock = Clock()
    backend = sim(clock, {"haiku": {"rpm": 60}, "*": {"rpm": 120}})
    await backend.create(req(model=HAIKU))
    await refused(backend, req("again", model=HAIKU))
    await backend.create(req(model=SONNET))  # another class: untouched by haiku's
    await backend.create(req("second", model="claude-sonnet-4-5"))  # 120 rpm: a burst of two
    error = await refused(backend, req("third", model=SONNET))
    assert "120 requests per minute" in str(error) and model_class(SONNET) in str(error)


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    waits = (1e-6, 0.5, 1.0, 1.0 + 1e-12, 1.01, 2.2, 59.0)  # 1 + 1e-12: float noise, not a wait
    assert [retry_after_seconds(x) for x in waits] == [1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 59.0]


async def test_a_tokens_per_minute_refusal_waits_for_the_refill() -> None:
    clock = Clock()
    backend = sim(clock, {"*": {"itpm": 600}})  # 10 tokens a second, a burst of 10
    await backend.create(req("x" * 32))  # 8 tokens
    error = await refused(backend, req("y" * 32))
    assert "600 input tokens per minute" in str(error)
    assert error.retry_after == 1.0  # 6 more tokens at 10 a second: 0.6 s, rounded up


# -- what responses say --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["create", "stream"])
async def test_every_response_carries_the_limits_of_its_class(mode: str) -> None:
    clock = Clock()
    backend = sim(clock, {"sonnet": {"rpm": 600, "itpm": 60_000, "otpm": 6000}})
    assert backend.reports_rate_limits
    request = req(max_tokens=100)

    async def call(r: BackendRequest) -> BackendResponse:
        if mode == "create":
            return await backend.create(r)
        items = [item async for item in backend.stream(r)]
        assert isinstance(items[-1], BackendResponse)
        return items[-1]

    response = await call(request)
    limits = response.limits
    assert isinstance(limits, RateLimits) and limits.requests and limits.input_tokens
    assert limits.output_tokens is not None
    assert (limits.requests.limit, limits.requests.remaining) == (600, 9)
    assert limits.input_tokens.remaining == 1000 - response.usage.input_tokens
    assert limits.output_tokens.remaining == 100 - response.usage.output_tokens  # refunded
    assert limits.requests.reset_s == pytest.approx(0.1)  # one request at 10 a second
    assert (await call(req(model=HAIKU))).limits is None  # a class without limits


async def test_no_limits_no_headers_and_the_lean_path() -> None:
    backend = SimulatedBackend(latency_s=0)
    assert not backend.reports_rate_limits and backend.quota is None
    assert (await backend.create(req())).limits is None and backend.rate_limits(SONNET) is None
    assert backend.quota_scope.startswith("local:simulated:")
    assert backend.quota_scope != SimulatedBackend().quota_scope  # each its own quota
    spend_only = SimulatedBackend(latency_s=0, spend_limit_usd=5.0)
    assert not spend_only.reports_rate_limits and spend_only.quota is not None


async def test_faults_after_admission_carry_limits_and_give_the_output_back() -> None:
    clock = Clock()
    backend = sim(clock, {"*": {"otpm": 6000}})  # a burst of 100 output tokens
    backend.inject("overloaded")
    with pytest.raises(BackendError) as info:
        await backend.create(req(max_tokens=100))
    assert info.value.limits is not None and info.value.limits.output_tokens is not None
    assert info.value.limits.output_tokens.remaining == 100  # nothing answered: all back
    assert (await backend.create(req(max_tokens=100))).text


# -- the API's token rules -------------------------------------------------------------------


async def test_cache_reads_do_not_count_toward_itpm() -> None:
    clock = Clock()
    backend = sim(clock, {"*": {"itpm": 60 * 1000}})  # a burst of 1,000 input tokens
    cold = await backend.create(req("first", system=SYSTEM, prompt_caching=True))
    assert cold.usage.cache_write_tokens > 800
    counted = cold.usage.input_tokens + cold.usage.cache_write_tokens
    for i in range(5):  # each reads ~900 cached tokens: only the few uncached ones count
        warm = await backend.create(req(f"again {i}", system=SYSTEM, prompt_caching=True))
        assert warm.usage.cache_read_tokens == cold.usage.cache_write_tokens
        counted += warm.usage.input_tokens
    assert warm.limits is not None and warm.limits.input_tokens is not None
    assert warm.limits.input_tokens.remaining == 1000 - counted
    error = await refused(backend, req("uncached", system=SYSTEM))  # the same prompt, uncached
    assert "input tokens per minute" in str(error)


async def test_output_tokens_are_reserved_by_max_tokens_and_the_rest_given_back() -> None:
    clock = Clock()
    backend = sim(clock, {"*": {"otpm": 60 * 1000}})  # a burst of 1,000 output tokens
    first = await backend.begin(req("first", max_tokens=800))
    assert backend.rate_limits(SONNET).output_tokens.remaining == 200  # type: ignore[union-attr]
    error = await refused(backend, req("second", max_tokens=800))
    assert "60000 output tokens per minute" in str(error)
    response = await first.wait()  # ~75 tokens written: the other ~725 come back
    assert response.limits is not None and response.limits.output_tokens is not None
    assert response.limits.output_tokens.remaining == 1000 - response.usage.output_tokens
    assert (await backend.create(req("second", max_tokens=800))).text


async def test_a_cancelled_call_gives_its_unused_output_back() -> None:
    clock = Clock()
    backend = SimulatedBackend(
        latency_s=0.05, jitter=0, clock=clock, limits={"*": {"otpm": 60 * 1000}}
    )
    stream = backend.stream(req(max_tokens=900))
    assert isinstance(await anext(stream), str)
    await stream.aclose()  # cancelled mid-answer: its own output counts, the rest comes back
    remaining = backend.rate_limits(SONNET).output_tokens.remaining  # type: ignore[union-attr]
    assert 800 < remaining < 1000 and backend.in_flight == 0


# -- acceleration after idle -----------------------------------------------------------------


async def test_a_sudden_ramp_from_idle_is_refused_until_it_ramps_up() -> None:
    clock = Clock()
    backend = sim(clock, {"*": {"rpm": 600, "ramp_s": 10}})  # 10/s, a burst of 10
    await backend.create(req("1"))  # idle until now: a ramp begins, at a quarter of the rate
    await backend.create(req("2"))  # a quarter of the burst, 2.5 requests, may go at once
    error = await refused(backend, req("3"))
    assert "rose too sharply" in str(error) and "ramp up gradually" in str(error)
    assert error.retry_after == 1.0 and error.limits is not None
    clock.now += 0.5  # allowed by then: 2.5 + 10 * (0.5/4 + 3 * 0.25 / 80) = 3.84
    await backend.create(req("3"))
    clock.now += 9.6  # the ramp is over (not idle long enough for another): a full burst
    for i in range(10):
        await backend.create(req(f"steady {i}"))
    assert "requests per minute" in str(await refused(backend, req("past the burst")))
    clock.now += 30  # idle again: the next traffic ramps once more
    await backend.create(req("a"))
    await backend.create(req("b"))
    assert "rose too sharply" in str(await refused(backend, req("c")))


def test_a_ramp_gives_the_wait_until_the_request_fits() -> None:
    quota = SimQuota({"*": {"rpm": 60, "ramp_s": 60}})  # one a second, a burst of one
    quota.admit(SONNET, 1, 1, now=0.0, request_id="r")
    # allowed(t) = 0.25 + t/4 + 3 t^2 / 480 reaches 2 at t = 6.08 s (the buckets alone: 1 s)
    with pytest.raises(RateLimitError) as info:
        quota.admit(SONNET, 1, 1, now=0.0, request_id="r")
    assert info.value.retry_after == 7.0
    with pytest.raises(RateLimitError):
        quota.admit(SONNET, 1, 1, now=6.0, request_id="r")
    quota.admit(SONNET, 1, 1, now=6.1, request_id="r")


# -- the spend limit -----------------------------------------------------------------------


async def test_the_spend_limit_is_a_429_without_retry_after(sdk_over: Any) -> None:
    backend = SimulatedBackend(latency_s=0, spend_limit_usd=1e-9, limits={"*": {"rpm": 6000}})
    assert (await backend.create(req())).text  # the first answer passes the limit
    assert backend.quota is not None and backend.quota.spent_usd > 1e-9
    for client in (backend, sdk_over(backend)):
        with pytest.raises(SpendLimitError) as info:
            await client.create(req("next"))
        error = info.value
        assert error.status_code == 429 and not error.retryable
        assert not hasattr(error, "retry_after") and is_spend_limit(str(error))
        assert error.limits is not None  # the headers still say where the quota stands
    assert backend.calls[-1].error == "spend_limit"


async def test_the_spend_limit_http_response_has_no_retry_after() -> None:
    backend = SimulatedBackend(latency_s=0, spend_limit_usd=0.0)
    async with httpx2.AsyncClient(
        transport=simulator_transport(backend), base_url="http://sim"
    ) as http:
        body = {"model": SONNET, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
        r = await http.post("/v1/messages", json=body, headers=AUTH)
    assert r.status_code == 429 and "retry-after" not in r.headers
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert "usage limits" in r.json()["error"]["message"] and r.headers["request-id"]


async def test_an_injected_spend_limit_fault(sdk_over: Any) -> None:
    backend = SimulatedBackend(latency_s=0)
    for client in (backend, sdk_over(backend)):
        backend.inject("spend_limit")
        with pytest.raises(SpendLimitError) as info:
            await client.create(req())
        assert info.value.status_code == 429 and not info.value.retryable
    assert "spend_limit" not in SimulatedBackend().fault_kinds  # never drawn at random


def test_the_orchestrator_fails_a_spend_limit_in_one_attempt() -> None:
    backend = SimulatedBackend(latency_s=0, spend_limit_usd=0.0)
    cfg = Config.load(
        env={}, backend="simulated", cache_enabled=False, max_attempts=5, backoff_base_s=0.001
    )
    agents = AgentRegistry(include_default_dirs=False)
    with (
        AgentOrchestrator(cfg, backend=backend, agents=agents) as orch,
        pytest.raises(AgentCallError) as info,
    ):
        orch.execute_agent("writer", "Write a haiku")
    assert info.value.attempts == 1 and isinstance(info.value.last_error, SpendLimitError)
    assert backend.call_count == 1


# -- count_tokens --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        req(),
        req(system="Be brief.", prompt_caching=True),  # cache write, then read
        req(system="x" * 7, prompt_caching=False),
        req("follow up", history=(Message("user", "hi"), Message("assistant", "hello"))),
    ],
)
async def test_count_tokens_is_what_create_reports_in_all(
    request_: BackendRequest, sdk_over: Any
) -> None:
    backend = SimulatedBackend(latency_s=0)
    sdk = sdk_over(backend)
    for _ in range(2):  # cold, then warm prompt cache: the total is the same
        u = (await backend.create(request_)).usage
        total = u.input_tokens + u.cache_read_tokens + u.cache_write_tokens
        assert await backend.count_tokens(request_) == total
        assert await sdk.count_tokens(request_) == total
    assert backend.call_count == 2  # counting is not a call


# -- configuration -------------------------------------------------------------------------


async def test_from_config_reads_the_quota_settings(sdk_over: Any) -> None:
    cfg = Config.load(
        env={"AGENTNB_SIM_LIMITS": '{"*": {"rpm": 3000}}'},
        sim_spend_limit_usd=2.5,
        sim_fault_burst=4.0,
        sim_latency_s=0,
    )
    backend = SimulatedBackend.from_config(cfg)
    assert backend.reports_rate_limits and backend.quota is not None
    assert backend.quota.spend_limit_usd == 2.5
    response = await backend.create(req())
    assert response.limits is not None and response.limits.requests is not None
    assert response.limits.requests.limit == 3000
    assert sdk_over(backend).reports_rate_limits
    assert not sdk_over(SimulatedBackend()).reports_rate_limits
    with pytest.raises(ValueError, match="unknown keys"):
        SimQuota({"*": {"rpx": 1}})


async def test_the_sdk_backend_reads_limits_from_headers_and_errors(sdk_over: Any) -> None:
    clock = Clock()
    backend = sim(clock, {"*": {"rpm": 60, "otpm": 6000}})
    sdk = sdk_over(backend)
    created = await sdk.create(req(max_tokens=50))
    assert created.limits is not None and created.limits.requests is not None
    assert (created.limits.requests.limit, created.limits.requests.remaining) == (60, 0)
    with pytest.raises(RateLimitError) as info:
        await sdk.create(req("again"))
    assert info.value.retry_after == 1.0 and info.value.limits is not None
    clock.now += 1
    items = [item async for item in sdk.stream(req("streamed"))]
    final = items[-1]
    assert isinstance(final, BackendResponse) and final.limits is not None
    assert final.limits.output_tokens is not None and final.limits.output_tokens.limit == 6000


def test_the_sdk_backends_quota_scope_hashes_the_key() -> None:
    key = "sk-ant-very-secret"
    scope = AnthropicBackend(api_key=key, base_url="https://gw.example/").quota_scope
    assert scope.startswith("anthropic:https://gw.example:") and key not in scope
    assert len(scope.rsplit(":", 1)[1]) == 16
    other = AnthropicBackend(api_key=key + "2", base_url="https://gw.example").quota_scope
    assert other != scope
    assert parse_rate_limits({}) is None


# -- faults in runs ------------------------------------------------------------------------


def runs_of(faults: list[bool]) -> list[int]:
    lengths, run = [], 0
    for faulty in faults:
        if faulty:
            run += 1
        elif run:
            lengths.append(run)
            run = 0
    return lengths + ([run] if run else [])


async def pattern(seed: int, burst: float, n: int = 3000, rate: float = 0.2) -> list[bool]:
    backend = SimulatedBackend(
        latency_s=0, seed=seed, fault_rate=rate, fault_kinds=["overloaded"], fault_burst=burst
    )
    out = []
    for i in range(n):
        try:
            await backend.create(req(f"task {i}"))
            out.append(False)
        except BackendError:
            out.append(True)
    return out


async def test_random_faults_come_in_runs_when_configured() -> None:
    bursty = await pattern(1, burst=5.0)
    assert bursty == await pattern(1, burst=5.0)  # deterministic per seed
    assert bursty != await pattern(2, burst=5.0)
    assert 0.15 < sum(bursty) / len(bursty) < 0.25  # the share stays the rate
    lengths = runs_of(bursty)
    assert 3.5 < sum(lengths) / len(lengths) < 7.0
    coin_flips = await pattern(1, burst=1.0)
    assert 0.15 < sum(coin_flips) / len(coin_flips) < 0.25
    mean = sum(runs_of(coin_flips)) / len(runs_of(coin_flips))
    assert mean < 1.5  # independent draws: 1 / (1 - rate) = 1.25


def test_fault_runs_keep_the_share_at_high_rates() -> None:
    for rate in (0.5, 0.9, 1.0):
        runs = FaultRuns(burst=3.0)
        faults = [runs.draw(0xABC, n, rate, ("overloaded", "server_error")) for n in range(4000)]
        share = sum(f is not None for f in faults) / len(faults)
        assert math.isclose(share, rate, abs_tol=0.05)
        kinds_of_runs, run = [], set()
        for fault in [*faults, None]:
            if fault is not None:
                run.add(fault[0])
            elif run:
                kinds_of_runs.append(run)
                run = set()
        assert all(len(kinds) == 1 for kinds in kinds_of_runs)  # one kind a run
        if rate < 1.0:
            assert set().union(*kinds_of_runs) == {"overloaded", "server_error"}
    with pytest.raises(ValueError, match="fault_burst"):
        FaultRuns(burst=0.5)
