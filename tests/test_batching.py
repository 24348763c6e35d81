"""The batch path: `execute_multiple(batch=True)` on the simulator's Message Batches (and through
the real SDK over the simulator's HTTP transport), the ledger, recovery, cancel and errors."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentnb import (
    AgentCallError,
    AgentOrchestrator,
    AgentRegistry,
    AgentResult,
    AnthropicBackend,
    AsyncAgentOrchestrator,
    Backend,
    Config,
    SimulatedBackend,
    prices,
)
from agentnb.backends import BackendRequest, Message, simulator_transport
from agentnb.backends.batch import (
    CUSTOM_ID,
    BatchCounts,
    BatchInfo,
    BatchRequest,
    BatchResult,
    BatchStatus,
)
from agentnb.backends.sim_batches import SimBatches
from agentnb.errors import (
    AgentnbError,
    BadRequestError,
    BatchRequestError,
    BudgetExceededError,
    OptionError,
    SchemaError,
)
from agentnb.orchestrator import batchsend, follow
from agentnb.orchestrator.batchsend import json_size
from agentnb.progress import Progress

CALLS = [("writer", f"Name colour number {i}") for i in range(6)]


class Spy(SimulatedBackend):
    """The real simulator, noting the batches it is asked to create."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.created: list[list[BatchRequest]] = []

    async def batch_create(self, requests: Sequence[BatchRequest]) -> BatchInfo:
        self.created.append(list(requests))
        return await super().batch_create(requests)


def config(tmp_path: Path, **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "backend": "simulated",
        "cache_dir": tmp_path / "cache",
        "state_dir": tmp_path / "state",
        "sim_latency_s": 0.0,
        "sim_jitter": 0.0,
        "sim_batch_latency_s": 0.02,
        "batch_poll_s": 0.005,
        "batch_poll_max_s": 0.02,
        "backoff_base_s": 0.001,
        "backoff_cap_s": 0.005,
        "progress": False,
    }
    values.update(overrides)
    return Config.load(env={}, **values)


def store(cfg: Config, **overrides: Any) -> SimBatches:
    """The simulator's batches in `cfg`'s state dir (shared by every process that looks)."""
    made = SimBatches.from_config(cfg)
    for name, value in overrides.items():
        setattr(made, name, value)
    return made


def orchestrator(
    tmp_path: Path, backend: Backend | None = None, **overrides: Any
) -> tuple[AsyncAgentOrchestrator, Spy]:
    cfg = config(tmp_path, **overrides)
    spy = Spy(latency_s=0.0, jitter=0.0, batches=store(cfg))
    orch = AsyncAgentOrchestrator(
        cfg, backend=backend or spy, agents=AgentRegistry(include_default_dirs=False)
    )
    return orch, spy


@pytest.fixture
async def orch_spy(tmp_path: Path) -> AsyncIterator[tuple[AsyncAgentOrchestrator, Spy]]:
    orch, spy = orchestrator(tmp_path)
    yield orch, spy
    await orch.aclose()


def answers(results: Sequence[AgentResult | BaseException]) -> list[tuple[str, str, int]]:
    out = []
    for r in results:
        assert isinstance(r, AgentResult), r
        out.append((r.text, r.model, r.usage.output_tokens))
    return out


# -- the round trip ------------------------------------------------------------------------------


async def test_batch_results_equal_online_results(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    orch, spy = orch_spy
    batched = await orch.execute_multiple(CALLS, batch=True)
    online = await orch.execute_multiple(CALLS, use_cache=False)
    assert answers(batched) == answers(online)
    assert len(spy.created) == 1 and len(spy.created[0]) == len(CALLS)
    for request in spy.created[0]:
        assert CUSTOM_ID.fullmatch(request.custom_id)
    assert len({r.custom_id for r in spy.created[0]}) == len(CALLS)


async def test_round_trip_through_the_sdk_over_the_simulator_transport(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    sim = SimulatedBackend(latency_s=0.0, jitter=0.0, batches=store(cfg))
    sdk = AnthropicBackend(
        api_key="sk-test-not-a-real-key",
        base_url="http://simulator.invalid",
        transport=simulator_transport(sim),
    )
    assert sdk.supports_batches
    orch = AsyncAgentOrchestrator(
        cfg, backend=sdk, agents=AgentRegistry(include_default_dirs=False)
    )
    try:
        job = await orch.execute_multiple(CALLS, batch=True, wait=False)
        assert (await job.status()).total == len(CALLS)
        batched = await job.results()
        online = await orch.execute_multiple(CALLS, use_cache=False)
        assert answers(batched) == answers(online)
        assert sim.call_count == len(CALLS)  # the online run only: the batch was one request
        frame = await orch.batches()
        assert frame.loc[0, "batch_id"] == job.ids[0] and frame.loc[0, "state"] == "collected"
    finally:
        await orch.aclose()


def test_the_blocking_facade_and_its_handle(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    sim = SimulatedBackend(latency_s=0.0, jitter=0.0, batches=store(cfg))
    with AgentOrchestrator(cfg, backend=sim, agents=AgentRegistry(include_default_dirs=False)) as o:
        job = o.execute_multiple(CALLS, batch=True, wait=False)
        assert len(job.ids) == 1 and not job.done
        assert job.status().total == len(CALLS)
        assert len(job.results()) == len(CALLS) and job.done
        assert job.wait().succeeded == len(CALLS)
        again = o.execute_multiple(CALLS, batch=True)
        assert all(isinstance(r, AgentResult) and r.cached for r in again)
        assert list(o.batches()["state"]) == ["collected"]
        with pytest.raises(OptionError, match="batch=True"):
            o.execute_multiple(CALLS, wait=False)


# -- the cache -----------------------------------------------------------------------------------


async def test_cache_hits_are_never_submitted_and_every_answer_is_cached(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    orch, spy = orch_spy
    await orch.execute_multiple(CALLS[:2])  # online: cached
    online_calls = spy.call_count
    results = await orch.execute_multiple(CALLS, batch=True)
    assert [r.cached for r in results if isinstance(r, AgentResult)] == [True] * 2 + [False] * 4
    assert [r.request.task for r in spy.created[0]] == [task for _, task in CALLS[2:]]
    # A re-run, online or as a batch, makes no backend call at all.
    again = await orch.execute_multiple(CALLS)
    job = await orch.execute_multiple(CALLS, batch=True, wait=False)
    assert job.ids == () and all(isinstance(r, AgentResult) and r.cached for r in again)
    assert all(isinstance(r, AgentResult) and r.cached for r in await job.results())
    assert spy.call_count == online_calls and len(spy.created) == 1


async def test_identical_requests_in_one_job_are_sent_once(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    orch, spy = orch_spy
    calls = [CALLS[i % 2] for i in range(7)]
    results = await orch.execute_multiple(calls, batch=True)
    assert len(spy.created[0]) == 2
    texts = answers(results)
    assert texts[0::2] == [texts[0]] * 4 and texts[1::2] == [texts[1]] * 3
    assert sum(isinstance(r, AgentResult) and not r.cached for r in results) == 2
    metrics = orch.metrics()
    assert metrics["batch_id"].notna().all() and metrics["cost_usd"].gt(0).sum() == 2


async def test_with_the_cache_off_the_ledger_is_still_written(tmp_path: Path) -> None:
    orch, spy = orchestrator(tmp_path, cache_enabled=False)
    try:
        results = await orch.execute_multiple([*CALLS, CALLS[0]], batch=True)
        assert len(spy.created[0]) == len(CALLS) + 1  # no cache: nothing shared, as online
        assert all(isinstance(r, AgentResult) for r in results)
        assert list((await orch.batches())["state"]) == ["collected"]
        assert (tmp_path / "state" / "batches.db").is_file()
    finally:
        await orch.aclose()


# -- cost, metrics, budget, progress -------------------------------------------------------------


async def test_cost_is_recorded_at_the_batch_price_with_the_batch_id(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    orch, _ = orch_spy
    job = await orch.execute_multiple(CALLS, batch=True, wait=False)
    results = await job.results()
    metrics = orch.metrics()
    assert set(metrics["batch_id"]) == {job.ids[0]}
    for r in results:
        assert isinstance(r, AgentResult)
        full = prices.cost(r.model, r.usage)
        assert r.cost_usd == pytest.approx(full / 2) and r.cost_usd > 0
    assert metrics["cost_usd"].sum() == pytest.approx(sum(r.cost_usd for r in answered(results)))
    assert orch.spend().total_usd == pytest.approx(metrics["cost_usd"].sum())
    assert orch.spend().calls == len(CALLS)
    online = await orch.execute_multiple(CALLS, use_cache=False)
    assert orch.metrics()["batch_id"].isna().sum() == len(online)


def answered(results: Sequence[AgentResult | BaseException]) -> list[AgentResult]:
    return [r for r in results if isinstance(r, AgentResult)]


async def test_the_estimate_of_a_batch_job_is_at_the_batch_price(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    orch, _ = orch_spy
    online = await orch.estimate(CALLS)
    batched = await orch.estimate(CALLS, batch=True)
    assert batched.cost_high_usd == pytest.approx(online.cost_high_usd / 2)
    assert batched.cost_low_usd == pytest.approx(online.cost_low_usd / 2)
    assert "at the batch price" in repr(batched) and batched.to_dict()["batch"] is True
    results = await orch.execute_multiple(CALLS, batch=True)
    assert sum(r.cost_usd for r in answered(results)) <= batched.cost_high_usd


async def test_a_batch_that_would_pass_the_budget_is_not_sent(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    orch, spy = orch_spy
    with pytest.raises(BudgetExceededError, match="batch 1 of this job"):
        await orch.execute_multiple(CALLS, batch=True, max_cost_usd=0.000001)
    assert spy.created == [] and await orch.ledger.batches() == []
    held = orch.session_budget
    assert held.in_flight == 0 and held.reserved_usd == 0.0
    # The same job fits a budget of its worst case at the batch price (half the online one).
    worst = sum(worst_online(orch, c) for c in CALLS)
    results = await orch.execute_multiple(CALLS, batch=True, max_cost_usd=worst * 0.51)
    assert len(answered(results)) == len(CALLS)


def worst_online(orch: AsyncAgentOrchestrator, call: tuple[str, str]) -> float:
    from agentnb.orchestrator import worst_cost

    return worst_cost(orch.prepare(*call), orch.prices)


async def test_the_progress_shows_the_batch_counts_and_cost(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    orch, _ = orch_spy
    show = Progress(None, mode="off")
    await orch.execute_multiple([*CALLS, CALLS[0]], batch=True, progress=show)
    snap = show.snapshot
    assert snap.total == len(CALLS) + 1 and snap.done == len(CALLS) + 1 and snap.cached == 1
    assert snap.notes["succeeded"] == len(CALLS) and snap.notes["processing"] == 0
    assert str(snap.notes["batch"]).startswith("msgbatch_")
    assert str(snap.notes["cost_up_to"]).startswith("$") and snap.cost_usd > 0


async def test_polling_waits_longer_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    class Slow(SimulatedBackend):
        asked = 0

        async def batch_retrieve(self, batch_id: str) -> BatchInfo:
            self.asked += 1
            status: BatchStatus = "ended" if self.asked == 8 else "in_progress"
            return BatchInfo(batch_id, status, BatchCounts(processing=1), 0.0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    cfg = Config.load(env={}, batch_poll_s=1.0, batch_poll_max_s=4.0)
    info = await follow.poll(Slow(), "msgbatch_x", cfg, lambda info: None)
    assert info.ended and waits == [1.0, 1.5, 2.25, 3.375, 4.0, 4.0, 4.0]


# -- splitting -----------------------------------------------------------------------------------


async def test_a_job_over_the_request_limit_is_split_in_two(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy], monkeypatch: pytest.MonkeyPatch
) -> None:
    orch, spy = orch_spy
    monkeypatch.setattr(batchsend, "MAX_BATCH_REQUESTS", 4)
    job = await orch.execute_multiple(CALLS, batch=True, wait=False)
    assert [len(b) for b in spy.created] == [4, 2] and len(job.ids) == 2
    results = await job.results()
    assert answers(results) == answers(await orch.execute_multiple(CALLS, use_cache=False))
    assert set(orch.metrics()["batch_id"].dropna()) == set(job.ids)


async def test_a_job_over_the_size_limit_is_split(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy], monkeypatch: pytest.MonkeyPatch
) -> None:
    orch, spy = orch_spy
    one = json_size(orch.prepare(*CALLS[0]).request, {})
    monkeypatch.setattr(batchsend, "MAX_BATCH_BYTES", int(one * 2.5))
    await orch.execute_multiple(CALLS, batch=True)
    assert [len(b) for b in spy.created] == [2, 2, 2]


texts = st.text(st.characters(codec="utf-8"), max_size=200)


@given(texts, texts, st.lists(texts, max_size=3), st.lists(texts.filter(bool), max_size=2))
def test_the_size_estimate_is_never_under_the_json(
    task: str, system: str, history: list[str], stops: list[str]
) -> None:
    request = BackendRequest(
        model="claude-sonnet-5-5",
        task=task,
        system=system,
        history=tuple(Message("user", h) for h in history),
        stop_sequences=tuple(stops),
        temperature=0.5,
        max_tokens=1024,
    )
    body = {
        "custom_id": "0123456789abcdef-12-123456",
        "params": {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
            "messages": request.messages,
            "stop_sequences": list(stops),
        },
    }
    for ascii_only in (True, False):
        assert len(json.dumps(body, ensure_ascii=ascii_only).encode()) <= json_size(request, {})


# -- errors, expiry, cancel ----------------------------------------------------------------------


async def test_retryable_errors_are_retried_online_and_the_others_reported(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    orch, spy = orch_spy
    spy.batches.error_rate = 1.0  # every request errors: mostly retryably, a fifth for good
    calls = [("writer", f"Errand {i}") for i in range(50)]
    results = await orch.execute_multiple(calls, batch=True, return_exceptions=True)
    (sent,) = spy.created
    retried = [r for r in results if isinstance(r, AgentResult)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert retried and failed and len(retried) + len(failed) == len(calls)
    assert spy.call_count == len(retried)  # each retryable one went online once
    ids = {r.custom_id for r in sent}
    for exc in failed:
        assert isinstance(exc, AgentCallError) and isinstance(exc.last_error, BadRequestError)
        (named,) = re.findall(r"\b[0-9a-f]{16}-\d+-\d+\b", str(exc))
        assert named in ids  # by custom id
    metrics = orch.metrics()
    online = metrics[metrics["batch_id"].isna()]
    assert len(online) == len(retried) and online["success"].all()
    assert (metrics["batch_id"].notna() & ~metrics["success"]).sum() == len(failed)


async def test_retryable_errors_can_go_in_a_follow_up_batch(tmp_path: Path) -> None:
    orch, spy = orchestrator(tmp_path, batch_retry="batch")
    try:
        spy.batches.error_rate = 1.0
        calls = [("writer", f"Errand {i}") for i in range(30)]
        job = await orch.execute_multiple(calls, batch=True, wait=False, return_exceptions=True)
        spy.batches.error_rate = 0.0  # the follow-up batch answers
        results = await job.results()
        assert len(job.ids) == 2 and spy.call_count == 0
        retried = answered(results)
        assert len(retried) == len(spy.created[1]) and 0 < len(retried) < len(calls)
        metrics = orch.metrics()
        good = metrics[metrics["success"]]
        assert set(good["batch_id"]) == {job.ids[1]} and set(good["attempts"]) == {2}
    finally:
        await orch.aclose()


async def test_expired_requests_are_reported_by_custom_id(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    orch, spy = orch_spy
    spy.batches.expire_rate = 1.0
    results = await orch.execute_multiple(CALLS, batch=True, return_exceptions=True)
    ids = [r.custom_id for r in spy.created[0]]
    for exc, custom_id in zip(results, ids, strict=True):
        assert isinstance(exc, AgentCallError) and isinstance(exc.last_error, BatchRequestError)
        assert exc.last_error.kind == "expired" and exc.last_error.custom_id == custom_id
        assert custom_id in str(exc)
    metrics = orch.metrics()
    assert (~metrics["success"]).all() and set(metrics["error_type"]) == {"BatchRequestError"}
    assert (metrics["cost_usd"] == 0).all() and orch.cache is not None
    assert orch.cache.stats()["entries"] == 0
    with pytest.raises(AgentCallError, match="expired"):  # without return_exceptions: raised
        await orch.execute_multiple(CALLS[:1], batch=True)


async def test_cancelling_is_explicit_and_reported(tmp_path: Path) -> None:
    orch, spy = orchestrator(tmp_path, sim_batch_latency_s=1.0)
    spy.batches.latency_s = 1.0
    try:
        calls = [("writer", f"Long job {i}") for i in range(20)]
        job = await orch.execute_multiple(calls, batch=True, wait=False, return_exceptions=True)
        info = await orch.cancel_batch(job.ids[0])
        assert info.status in ("canceling", "ended") and info.cancel_initiated_at is not None
        results = await job.results()
        canceled = [r for r in results if isinstance(r, AgentCallError)]
        assert canceled and len(canceled) + len(answered(results)) == len(calls)
        for exc in canceled:
            assert isinstance(exc.last_error, BatchRequestError)
            assert exc.last_error.kind == "canceled" and exc.last_error.custom_id in str(exc)
    finally:
        await orch.aclose()


# -- detaching and recovery ----------------------------------------------------------------------


def batch_ids(cfg: Config) -> list[str]:
    return [info.id for info in store(cfg).list_batches(100)[0]]


async def test_an_interrupted_wait_detaches_without_cancelling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    orch, spy = orchestrator(tmp_path)
    spy.batches.latency_s = 0.5
    try:
        waiting = asyncio.create_task(orch.execute_multiple(CALLS, batch=True))
        while not spy.created:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        with caplog.at_level(logging.WARNING, logger="agentnb.batch"):
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            # The wait unwinds on agentnb's loop after this one has seen the cancellation.
            for _ in range(500):
                if "detached" in caplog.text:
                    break
                await asyncio.sleep(0.01)
        (batch_id,) = batch_ids(orch.config)
        assert f"orch.collect({batch_id!r})" in caplog.text and "not cancelled" in caplog.text
        info = await spy.batch_retrieve(batch_id)
        assert info.cancel_initiated_at is None and info.status != "canceling"
        assert orch.session_budget.in_flight == 0  # what the wait held is released
        done = await orch.collect(batch_id)
        assert (done.counts.succeeded, done.cached, done.refused) == (len(CALLS), len(CALLS), 0)
        assert all(r.cached for r in answered(await orch.execute_multiple(CALLS)))
        assert spy.call_count == 0
    finally:
        await orch.aclose()


def test_a_keyboard_interrupt_detaches_and_says_how_to_collect(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    sim = SimulatedBackend(latency_s=0.0, jitter=0.0, batches=store(cfg, latency_s=1.0))
    orch = AgentOrchestrator(cfg, backend=sim, agents=AgentRegistry(include_default_dirs=False))

    def sent() -> bool:  # the job is past its submission, into its wait
        ledger = tmp_path / "state" / "batches.db"
        if not ledger.exists():
            return False
        try:
            with sqlite3.connect(ledger) as conn:
                return bool(conn.execute("SELECT 1 FROM batches WHERE state = 'sent'").fetchall())
        except sqlite3.Error:  # not made yet
            return False

    def interrupt() -> None:
        deadline = time.monotonic() + 10
        while not sent() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt) as caught:
        orch.execute_multiple(CALLS, batch=True)
    (batch_id,) = batch_ids(cfg)
    assert any(f"orch.collect({batch_id!r})" in note for note in caught.value.__notes__)
    assert sim.batches.retrieve(batch_id).cancel_initiated_at is None
    assert orch.collect(batch_id).counts.succeeded == len(CALLS)
    orch.close()


SUBMIT = """
import json, sys
from pathlib import Path
from agentnb import AgentOrchestrator, AgentRegistry, Config
tmp = Path(sys.argv[1])
cfg = Config.load(env={}, backend="simulated", cache_dir=tmp / "cache", state_dir=tmp / "state",
                  sim_batch_latency_s=0.3, progress=False)
orch = AgentOrchestrator(cfg, agents=AgentRegistry(include_default_dirs=False))
calls = [("writer", f"Name colour number {i}") for i in range(6)]
job = orch.execute_multiple(calls, batch=True, wait=False)
print(json.dumps(job.ids))
"""


async def test_a_new_process_collects_what_another_submitted(tmp_path: Path) -> None:
    # The kernel that submitted exits at once: its job is never waited for.
    done = subprocess.run(
        [sys.executable, "-c", SUBMIT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (batch_id,) = json.loads(done.stdout)
    orch, spy = orchestrator(tmp_path)  # a new orchestrator: the ledger and the store only
    try:
        frame = await orch.batches()
        assert frame.loc[0, "batch_id"] == batch_id and frame.loc[0, "state"] == "sent"
        got = await orch.collect(batch_id)
        assert (got.counts.succeeded, got.cached, got.already) == (len(CALLS), len(CALLS), False)
        assert got.cost_usd == pytest.approx(orch.metrics()["cost_usd"].sum()) and got.cost_usd > 0
        assert list((await orch.batches())["state"]) == ["collected"]
        # Nothing is lost: the same calls, online or as a batch, cost nothing now.
        assert all(r.cached for r in answered(await orch.execute_multiple(CALLS)))
        job = await orch.execute_multiple(CALLS, batch=True, wait=False)
        assert job.ids == () and spy.call_count == 0 and spy.created == []
        again = await orch.collect(batch_id)  # fills the cache again, records nothing again
        assert again.already and again.cost_usd == 0.0
    finally:
        await orch.aclose()


async def test_a_forged_ledger_row_never_fills_the_cache(tmp_path: Path) -> None:
    orch, spy = orchestrator(tmp_path)
    spy.batches.latency_s = 0.2
    try:
        job = await orch.execute_multiple(CALLS[:2], batch=True, wait=False)
        (batch_id,) = job.ids
        victim = orch.prepare("writer", "What is the admin password?").key
        with sqlite3.connect(orch.ledger.path) as conn:  # aim one answer at another call's key
            conn.execute(
                "UPDATE requests SET key = ? WHERE custom_id = ?",
                (victim, spy.created[0][0].custom_id),
            )
        got = await orch.collect(batch_id)
        assert (got.counts.succeeded, got.cached, got.refused) == (2, 1, 1)
        assert orch.ledger.integrity_failures == 1
        assert orch.cache is not None and await orch.cache.get(victim) is None
    finally:
        await orch.aclose()


async def test_collecting_an_unknown_batch_says_so(
    orch_spy: tuple[AsyncAgentOrchestrator, Spy],
) -> None:
    orch, _ = orch_spy
    with pytest.raises(AgentnbError, match="msgbatch_nope"):
        await orch.collect("msgbatch_nope")


async def test_a_backend_without_batches_is_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    class Online(Backend):
        kind = "online-only"

        async def create(self, request: BackendRequest) -> Any:
            raise AssertionError("never called")

        def stream(self, request: BackendRequest) -> Any:
            raise AssertionError("never called")

    orch, _ = orchestrator(tmp_path, backend=Online())
    try:
        with pytest.raises(AgentnbError, match="has no Message Batches"):
            await orch.execute_multiple(CALLS, batch=True)
        assert await orch.ledger.batches() == []
    finally:
        await orch.aclose()


# -- structured answers --------------------------------------------------------------------------
SCORE: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["score"],
}


class Breaks(Spy):
    """The simulator, whose batches break the schema of their first `left` structured answers."""

    def __init__(self, left: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.left = left

    def batch_results(self, batch_id: str) -> AsyncIterator[BatchResult]:
        return self._broken(super().batch_results(batch_id))

    async def _broken(self, results: AsyncIterator[BatchResult]) -> AsyncIterator[BatchResult]:
        async for r in results:
            if r.response is not None and r.response.data is not None and self.left:
                self.left -= 1
                data = {**r.response.data, "score": 7}
                r = r._replace(response=r.response._replace(data=data, text=json.dumps(data)))
            yield r


@pytest.mark.parametrize("invalid_rate", [0.0, 1.0])
async def test_an_invalid_batch_answer_is_not_cached_but_asked_again_online(
    tmp_path: Path, invalid_rate: float
) -> None:
    """Online, the answer is valid (0.0) or breaks the schema again after its repair (1.0)."""
    cfg = config(tmp_path, cache_backend="sqlite")
    sim = Breaks(2, latency_s=0.0, jitter=0.0, batches=store(cfg), invalid_rate=invalid_rate)
    agents = AgentRegistry(include_default_dirs=False)
    orch = AsyncAgentOrchestrator(cfg, backend=sim, agents=agents)
    calls = [("writer", f"Rate poem {i}") for i in range(5)]
    try:
        results = await orch.execute_multiple(
            calls, batch=True, schema=SCORE, return_exceptions=True
        )
        assert len(sim.created) == 1 and sim.left == 0
        online = orch.metrics()["batch_id"].isna()
        assert online.sum() == 2  # the two broken ones were asked again online
        failed = [r for r in results if not isinstance(r, AgentResult)]
        if invalid_rate:
            assert len(failed) == 2 and all(isinstance(r, SchemaError) for r in failed)
            assert sim.call_count == 2 * 2  # online: the answer and its repair turn, each
        else:
            assert not failed and sim.call_count == 2
        for r in results:
            if isinstance(r, AgentResult):
                assert r.data is not None and 1 <= r.data["score"] <= 5
        again = await orch.execute_multiple(calls, schema=SCORE, return_exceptions=True)
        hits = sum(isinstance(r, AgentResult) and r.cached for r in again)
        assert hits == 3 + (0 if invalid_rate else 2)  # nothing invalid was stored
    finally:
        await orch.aclose()
