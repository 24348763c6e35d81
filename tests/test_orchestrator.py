"""The orchestrator: results, retries, timeouts, concurrency, cancellation, streaming, metrics."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pandas as pd
import pytest

from agentnb import (
    AgentCall,
    AgentCallError,
    AgentNotFoundError,
    AgentOrchestrator,
    AgentRegistry,
    AsyncAgentOrchestrator,
    Config,
    InvalidAgentNameError,
    SimulatedBackend,
    TaskTooLongError,
    prices,
)
from agentnb.errors import (
    AuthenticationError,
    BackendTimeoutError,
    BadRequestError,
    OverloadedError,
    RateLimitError,
    ServerError,
)
from agentnb.loop import run_sync
from agentnb.metrics import COLUMNS
from agentnb.orchestrator import ConcurrencyLimit


def make_config(**overrides: Any) -> Config:
    base: dict[str, Any] = {
        "backend": "simulated",
        "cache_enabled": False,
        "sim_latency_s": 0.002,
        "sim_jitter": 0.0,
        "backoff_base_s": 0.001,
        "backoff_cap_s": 0.005,
        "timeout_s": 5.0,
    }
    base.update(overrides)
    return Config.load(env={}, **base)


def make(**overrides: Any) -> tuple[AsyncAgentOrchestrator, SimulatedBackend]:
    backend_kw = overrides.pop("backend_kw", {})
    cfg = make_config(**overrides)
    backend = SimulatedBackend(latency_s=cfg.sim_latency_s, jitter=0.0, **backend_kw)
    orch = AsyncAgentOrchestrator(
        cfg, backend=backend, agents=AgentRegistry(include_default_dirs=False)
    )
    return orch, backend


@pytest.fixture
async def orch_backend() -> AsyncIterator[tuple[AsyncAgentOrchestrator, SimulatedBackend]]:
    orch, backend = make()
    yield orch, backend
    await orch.aclose()


def home_task_count() -> int:
    async def count() -> int:
        return len(asyncio.all_tasks()) - 1  # minus this one

    return run_sync(count())


# -- one call ------------------------------------------------------------------------------------


async def test_execute_agent_returns_a_full_result(orch_backend: Any) -> None:
    orch, backend = orch_backend
    result = await orch.execute_agent("writer", "Write a haiku about caches")
    assert result.agent == "writer"
    assert result.model == orch.config.resolve_model(orch.agents.get("writer").model)
    assert result.simulated and "simulated" in result.text.lower()
    assert str(result) == result.text
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.attempts == 1 and not result.cached
    assert result.cost_usd == pytest.approx(prices.cost(result.model, result.usage))
    assert result.latency_ms > 0
    assert "writer" in result._repr_markdown_() and "simulated" in result.footer()
    assert backend.call_count == 1


async def test_overrides_reach_the_backend(orch_backend: Any) -> None:
    orch, backend = orch_backend
    result = await orch.execute_agent("writer", "Hi", model="haiku", max_tokens=77, temperature=0.3)
    assert result.model == orch.config.model_aliases["haiku"]
    assert backend.calls[-1].model == result.model


async def test_unknown_model_costs_nan(orch_backend: Any) -> None:
    orch, _ = orch_backend
    result = await orch.execute_agent("writer", "Hi", model="model-from-the-future")
    assert result.model == "model-from-the-future"
    assert math.isnan(result.cost_usd)


# -- validation happens before anything runs -------------------------------------------------------


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a/b", "a\\b", "bad\x00name", ".."])
async def test_bad_agent_names_refused(orch_backend: Any, name: str) -> None:
    orch, backend = orch_backend
    with pytest.raises(InvalidAgentNameError):
        await orch.execute_agent(name, "task")
    assert backend.call_count == 0


async def test_unknown_agent_lists_close_matches(orch_backend: Any) -> None:
    orch, backend = orch_backend
    with pytest.raises(AgentNotFoundError, match="writer"):
        await orch.execute_agent("writter", "task")
    assert backend.call_count == 0


async def test_task_too_long_refused() -> None:
    orch, backend = make(max_task_chars=10)
    with pytest.raises(TaskTooLongError, match="max_task_chars=10"):
        await orch.execute_agent("writer", "x" * 11)
    assert backend.call_count == 0
    await orch.aclose()


async def test_batch_is_validated_before_any_call(orch_backend: Any) -> None:
    orch, backend = orch_backend
    calls = [("writer", "ok")] * 5 + [("no/such", "task")]
    with pytest.raises(InvalidAgentNameError):
        await orch.execute_multiple(calls)
    assert backend.call_count == 0


# -- retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rate_limit", "server_error", "overloaded", "connection"])
async def test_retryable_errors_are_retried(orch_backend: Any, kind: str) -> None:
    orch, backend = orch_backend
    backend.inject(kind, times=2)
    result = await orch.execute_agent("writer", "retry me")
    assert result.attempts == 3
    assert backend.call_count == 3
    row = orch.metrics().iloc[-1]
    assert row["attempts"] == 3 and bool(row["success"])


async def test_retry_after_is_honoured(orch_backend: Any) -> None:
    orch, backend = orch_backend
    backend.inject("rate_limit", times=1, retry_after=0.15)
    result = await orch.execute_agent("writer", "slow down")
    assert result.attempts == 2
    first, second = backend.calls[-2], backend.calls[-1]
    assert not first.ok and second.ok
    assert second.started - first.ended >= 0.15


@pytest.mark.parametrize(
    ("kind", "error"), [("bad_request", BadRequestError), ("authentication", AuthenticationError)]
)
async def test_non_retryable_errors_fail_at_once(orch_backend: Any, kind: str, error: type) -> None:
    orch, backend = orch_backend
    backend.inject(kind, times=1)
    with pytest.raises(AgentCallError) as info:
        await orch.execute_agent("writer", "bad")
    assert info.value.attempts == 1
    assert isinstance(info.value.last_error, error)
    assert isinstance(info.value.__cause__, error)
    assert not info.value.retryable
    assert backend.call_count == 1


async def test_exhausted_retries_name_agent_attempts_and_cause() -> None:
    orch, backend = make(max_attempts=3)
    backend.inject("overloaded", times=10)
    with pytest.raises(AgentCallError) as info:
        await orch.execute_agent("writer", "never works")
    message = str(info.value)
    assert "'writer'" in message and "3 attempts" in message and "OverloadedError" in message
    assert isinstance(info.value.last_error, OverloadedError)
    assert backend.call_count == 3
    row = orch.metrics().iloc[-1]
    assert not row["success"] and row["error_type"] == "OverloadedError" and row["attempts"] == 3
    await orch.aclose()


async def test_per_attempt_timeout_then_success() -> None:
    orch, backend = make(timeout_s=0.05)
    backend.inject("timeout", times=1)
    result = await orch.execute_agent("writer", "hang once")
    assert result.attempts == 2
    assert backend.in_flight == 0
    await orch.aclose()


async def test_per_attempt_timeout_exhausted() -> None:
    orch, backend = make(timeout_s=0.03, max_attempts=2)
    backend.inject("timeout", times=5)
    with pytest.raises(AgentCallError) as info:
        await orch.execute_agent("writer", "hang always")
    assert isinstance(info.value.last_error, BackendTimeoutError)
    assert "timed out after 0.03 s" in str(info.value)
    assert backend.in_flight == 0
    await orch.aclose()


def test_backoff_grows_and_is_capped() -> None:
    orch, _ = make(backoff_base_s=0.1, backoff_cap_s=0.5)
    err = ServerError("x", status_code=500)
    delays = [[orch.retrying.backoff(a, err) for _ in range(50)] for a in (1, 2, 3, 6)]
    assert all(0.05 <= d <= 0.1 for d in delays[0])
    assert all(0.1 <= d <= 0.2 for d in delays[1])
    assert all(0.2 <= d <= 0.4 for d in delays[2])
    assert all(0.25 <= d <= 0.5 for d in delays[3])  # capped
    assert len(set(delays[0])) > 1  # jittered
    hinted = orch.retrying.backoff(1, RateLimitError("x", retry_after=2.0))
    assert 2.0 <= hinted <= 2.01


async def test_a_retry_after_longer_than_allowed_fails_at_once() -> None:
    orch, backend = make(max_retry_wait_s=5.0)
    backend.inject("rate_limit", times=1, retry_after=3600)
    t0 = time.monotonic()
    with pytest.raises(AgentCallError) as info:
        await orch.execute_agent("writer", "patience")
    assert time.monotonic() - t0 < 30  # it did not wait the hour
    assert "asked to wait 3600 s" in str(info.value) and info.value.attempts == 1
    assert backend.call_count == 1
    await orch.aclose()


async def test_retry_after_on_overloaded_is_honoured(orch_backend: Any) -> None:
    orch, backend = orch_backend
    backend.inject("overloaded", times=1, retry_after=0.15)
    result = await orch.execute_agent("writer", "busy server")
    first, second = backend.calls[-2], backend.calls[-1]
    assert result.attempts == 2 and second.started - first.ended >= 0.15


# -- concurrency ---------------------------------------------------------------------------------


async def test_100_calls_peak_in_flight_equals_limit() -> None:
    orch, backend = make(max_concurrency=10, sim_latency_s=0.01)
    calls = [AgentCall("writer", f"task number {i}") for i in range(100)]
    results = await orch.execute_multiple(calls)
    assert len(results) == 100
    assert backend.peak_in_flight == 10
    assert backend.call_count == 100
    # Results keep input order: each matches the same call made on its own.
    solo, _ = make()
    for i in (0, 37, 99):
        alone = await solo.execute_agent("writer", f"task number {i}")
        assert results[i].text == alone.text  # type: ignore[union-attr]
    await orch.aclose()
    await solo.aclose()


async def test_explicit_batch_limit(orch_backend: Any) -> None:
    orch, backend = orch_backend
    await orch.execute_multiple([("writer", f"t{i}") for i in range(12)], max_concurrency=3)
    assert backend.peak_in_flight == 3


async def test_first_failure_cancels_the_rest() -> None:
    orch, backend = make(backend_kw={"latencies": {"writer": 30.0}})
    backend.inject("bad_request", times=1, agent="python-expert")
    before = home_task_count()
    calls = [("writer", f"slow {i}") for i in range(5)] + [("python-expert", "fails")]
    t0 = time.monotonic()
    with pytest.raises(AgentCallError):
        await orch.execute_multiple(calls)
    assert time.monotonic() - t0 < 15  # did not wait for the 30 s calls
    assert backend.in_flight == 0
    assert home_task_count() == before
    failures = orch.metrics().query("not success")
    assert set(failures["error_type"]) == {"BadRequestError", "CancelledError"}
    await orch.aclose()


async def test_return_exceptions_keeps_going(orch_backend: Any) -> None:
    orch, backend = orch_backend
    backend.inject("bad_request", times=1, agent="python-expert")
    results = await orch.execute_multiple(
        [("writer", "a"), ("python-expert", "b"), ("writer", "c")], return_exceptions=True
    )
    assert isinstance(results[1], AgentCallError)
    assert [type(r).__name__ for r in results] == ["AgentResult", "AgentCallError", "AgentResult"]


async def test_cancelling_the_caller_leaves_nothing_running() -> None:
    orch, backend = make(backend_kw={"latencies": {"writer": 5.0}})
    before = home_task_count()
    task = asyncio.ensure_future(orch.execute_multiple([("writer", f"x{i}") for i in range(8)]))
    for _ in range(400):
        if backend.in_flight == 8:
            break
        await asyncio.sleep(0.005)
    assert backend.in_flight == 8
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(400):
        if backend.in_flight == 0 and home_task_count() == before:
            break
        await asyncio.sleep(0.005)
    assert backend.in_flight == 0
    assert home_task_count() == before
    assert (orch.metrics()["error_type"] == "CancelledError").sum() == 8
    await orch.aclose()


# -- the sync facade and foreign loops ------------------------------------------------------------


def sync_orch(**overrides: Any) -> tuple[AgentOrchestrator, SimulatedBackend]:
    cfg = make_config(**overrides)
    backend = SimulatedBackend(latency_s=cfg.sim_latency_s, jitter=0.0)
    return (
        AgentOrchestrator(cfg, backend=backend, agents=AgentRegistry(include_default_dirs=False)),
        backend,
    )


def test_sync_facade_inside_a_running_loop() -> None:
    """The Jupyter case: a blocking call made while an event loop runs in this thread."""
    orch, backend = sync_orch()

    async def cell() -> list[Any]:
        one = orch.execute_agent("writer", "inside a loop")
        many = orch.execute_multiple([("writer", "a"), ("writer", "b")])
        also = await orch.execute_multiple_async([("writer", "c")])
        return [one, *many, *also]

    results = asyncio.run(cell())
    assert [r.agent for r in results] == ["writer"] * 4
    assert backend.call_count == 4
    orch.close()


def test_sync_facade_from_plain_threads() -> None:
    orch, backend = sync_orch()
    out: list[str] = []
    threads = [
        threading.Thread(target=lambda i=i: out.append(orch.execute_agent("writer", f"t{i}").agent))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == ["writer"] * 8 and backend.call_count == 8
    orch.close()


def test_keyboard_interrupt_cancels_in_flight_calls_and_next_call_works() -> None:
    orch, backend = sync_orch()
    backend.latencies = {"writer": 10.0}

    def interrupt() -> None:
        for _ in range(1000):
            if backend.in_flight >= 4:
                break
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        orch.execute_multiple([("writer", f"long {i}") for i in range(4)])
    assert backend.in_flight == 0
    assert orch.execute_agent("python-expert", "still works?").agent == "python-expert"
    orch.close()


def test_orchestrator_works_in_a_forked_child() -> None:
    """After fork the child has no home-loop thread; the orchestrator makes a new one."""
    import select
    import warnings

    orch, _ = sync_orch()
    orch.execute_agent("writer", "parent first")  # the parent's loop thread exists now
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, then leave without pytest's cleanup
        try:
            os.write(write_end, orch.execute_agent("writer", "from the child").agent.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], 30)
    answer = os.read(read_end, 100).decode() if ready else "<no answer: the child hung>"
    os.close(read_end)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert answer == "writer"
    orch.close()


def test_closed_orchestrator_refuses_work() -> None:
    orch, _ = sync_orch()
    orch.close()
    with pytest.raises(Exception, match="closed"):
        orch.execute_agent("writer", "x")


# -- streaming -------------------------------------------------------------------------------------


def test_stream_sync() -> None:
    orch, _ = sync_orch()
    stream = orch.stream_agent("writer", "stream please")
    chunks = list(stream)
    assert len(chunks) >= 2
    assert stream.result is not None and "".join(chunks) == stream.result.text
    assert orch.metrics().iloc[-1]["success"]
    orch.close()


async def test_stream_async_from_another_loop(orch_backend: Any) -> None:
    orch, _ = orch_backend
    stream = orch.stream_agent("writer", "stream please")
    chunks = [c async for c in stream]
    assert stream.result is not None and "".join(chunks) == stream.result.text


async def test_stream_retries_before_the_first_chunk(orch_backend: Any) -> None:
    orch, backend = orch_backend
    backend.inject("server_error", times=1)
    stream = orch.stream_agent("writer", "retry then stream")
    text = "".join([c async for c in stream])
    assert stream.result is not None and stream.result.attempts == 2 and text == stream.result.text


# -- metrics and secrets ---------------------------------------------------------------------------


async def test_metrics_frame_has_one_row_per_call(orch_backend: Any) -> None:
    orch, backend = orch_backend
    backend.inject("bad_request", times=1, agent="python-expert")
    await orch.execute_multiple([("writer", "a"), ("python-expert", "b")], return_exceptions=True)
    df = orch.metrics()
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 2
    ok = df[df["agent"] == "writer"].iloc[0]
    bad = df[df["agent"] == "python-expert"].iloc[0]
    assert ok["success"] and pd.isna(ok["error_type"])
    assert not bad["success"] and bad["error_type"] == "BadRequestError"
    assert ok["cost_usd"] > 0 and ok["input_tokens"] > 0


async def test_api_key_never_appears(caplog: pytest.LogCaptureFixture) -> None:
    from agentnb.backends import AnthropicBackend
    from agentnb.backends.sim_http import simulator_transport

    key = "sk-ant-api03-TOPSECRET-0123456789"
    sim = SimulatedBackend(latency_s=0.001, jitter=0.0)
    backend = AnthropicBackend(
        api_key=key, base_url="http://sim.local", transport=simulator_transport(sim)
    )
    cfg = make_config()
    orch = AsyncAgentOrchestrator(
        cfg, backend=backend, agents=AgentRegistry(include_default_dirs=False)
    )
    sim.inject("rate_limit", times=1, retry_after=0.01)
    sim.inject("authentication", times=1, agent="python-expert")
    with caplog.at_level(logging.DEBUG):
        ok = await orch.execute_agent("writer", "hello")
        with pytest.raises(AgentCallError) as info:
            await orch.execute_agent("python-expert", "denied")
    shown = [
        caplog.text,
        repr(orch),
        repr(backend),
        str(backend),
        repr(ok),
        str(ok.to_dict()),
        ok._repr_markdown_(),
        orch.metrics().to_string(),
        str(info.value),
        repr(info.value.last_error),
    ]
    for text in shown:
        assert key not in text
    assert ok.attempts == 2
    await orch.aclose()


def test_default_orchestrator_is_shared_and_remade_after_close() -> None:
    from agentnb import default_orchestrator

    cfg = make_config()
    first = default_orchestrator(cfg)
    assert default_orchestrator() is first
    first.close()
    second = default_orchestrator()
    assert second is not first and not second.aio._closed
    third = default_orchestrator(reset=True)
    assert third is not second and second.aio._closed
    third.close()


async def test_workflow_limit_above_the_config_limit_is_honoured() -> None:
    """A workflow's own max_concurrency (6) wins over the config's (2); steps never queue."""
    orch, backend = make(max_concurrency=2, backend_kw={"latencies": {"writer": 0.05}})
    steps = "\n".join(f"  - {{id: s{i}, agent: writer, task: 'part {i}'}}" for i in range(6))
    run = await orch.run_workflow(f"name: wide\nmax_concurrency: 6\nsteps:\n{steps}\n")
    assert run.status == "succeeded"
    assert backend.peak_in_flight == 6  # above the config's 2: no global slot was taken
    await orch.aclose()


def test_reconfigure_in_place_keeps_what_did_not_change(tmp_path: Any) -> None:
    cfg = make_config(cache_enabled=True, cache_backend="memory")
    orch = AgentOrchestrator(cfg, agents=AgentRegistry(include_default_dirs=False))
    handle = orch  # e.g. what a notebook cell kept from default_orchestrator()
    first = orch.execute_agent("writer", "keep me")
    backend, cache = orch.backend, orch.cache
    orch.reconfigure(cfg.replace(max_concurrency=3))  # nothing the backend or cache use
    assert handle.execute_agent("writer", "keep me").cached  # still works, cache kept
    assert orch.backend is backend and orch.cache is cache
    assert isinstance(orch.aio.admission, ConcurrencyLimit) and orch.aio.admission.limit == 3
    orch.reconfigure(orch.config.replace(sim_latency_s=0.001))  # a backend setting
    assert orch.backend is not backend and orch.cache is cache
    orch.reconfigure(orch.config.replace(cache_ttl_s=60.0))  # a cache setting
    assert orch.cache is not cache
    assert not handle.execute_agent("writer", "keep me").cached
    assert len(orch.metrics()) == 3 and first.text
    orch.close()
