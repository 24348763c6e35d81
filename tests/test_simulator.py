"""The simulator's own parts: its answers (sim_answer), its bounded call log, and its cost."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from agentnb.backends import (
    SIMULATED_NOTE,
    BackendRequest,
    BackendResponse,
    CallLog,
    CallRecord,
    Message,
    SimulatedBackend,
)
from agentnb.backends import simulated as simulated_module
from agentnb.backends.sim_answer import plan_answer, voice_for

MODEL = "claude-sonnet-5-5"


def req(task: str = "Review the function parse_config for bugs", **kw: Any) -> BackendRequest:
    kw.setdefault("model", MODEL)
    kw.setdefault("agent", "python-expert")
    return BackendRequest(task=task, **kw)


def test_public_names_stay_importable_from_the_simulated_module() -> None:
    for name in ("SimulatedBackend", "SimulatedCall", "CallRecord", "FAULT_KINDS"):
        assert hasattr(simulated_module, name) and name in simulated_module.__all__
    assert simulated_module.SIMULATED_NOTE == SIMULATED_NOTE


# -- answers -------------------------------------------------------------------------------


def test_fresh_tasks_get_different_answers_using_their_own_words() -> None:
    tasks = [f"Explain how queue_{i} handles retries" for i in range(300)]
    texts = [plan_answer(0, req(task)).text for task in tasks]
    assert len(set(texts)) == len(texts)
    assert all(f"queue_{i}" in text for i, text in enumerate(texts))
    assert all(text.startswith(SIMULATED_NOTE + "\n") for text in texts)


def test_answers_do_not_depend_on_the_voice_cache() -> None:
    request = req("Tune the parser", system="You write Python code. 100% precise.")
    first = plan_answer(3, request)
    voice_for.cache_clear()
    assert plan_answer(3, request) == first
    assert voice_for.cache_info().maxsize is not None  # bounded


def test_answers_are_the_same_in_another_process() -> None:
    """No per-process salt (e.g. `hash()` of a str) goes into an answer."""
    code = (
        "from agentnb.backends import BackendRequest\n"
        "from agentnb.backends.sim_answer import plan_answer\n"
        "r = BackendRequest(model='m', task='Sort the records by date', agent='writer')\n"
        "print(plan_answer(5, r).text)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # this process has another (or a random) one
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    request = BackendRequest(model="m", task="Sort the records by date", agent="writer")
    assert out.stdout.rstrip("\n") == plan_answer(5, request).text


def test_the_history_and_a_long_tasks_head_tail_and_length_change_the_answer() -> None:
    long = "Summarise this log. " + "line of text\n" * 1000
    base = plan_answer(0, req(long))
    assert plan_answer(0, req(long + "!")).digest != base.digest  # the tail and the length
    assert plan_answer(0, req("Summarise that log. " + long[20:])).digest != base.digest
    with_history = req(long, history=(Message("user", "hi"), Message("assistant", "hello")))
    swapped = req(long, history=(Message("assistant", "hi"), Message("user", "hello")))
    assert (
        len({base.digest, plan_answer(0, with_history).digest, plan_answer(0, swapped).digest}) == 3
    )


def test_percent_signs_in_names_and_tasks_are_plain_text() -> None:
    text = plan_answer(0, req("Raise the rate by 10%s %d", agent="100%-coder")).text
    assert "_100%-coder on" in text and "(simulated answer #" in text


def test_a_task_without_keywords_still_gets_an_answer() -> None:
    text = plan_answer(0, req("?! 1 2 3", agent="python-expert")).text
    assert text.startswith(SIMULATED_NOTE) and "check_task" in text


def test_a_stop_sequence_inside_the_note_does_not_cut_it() -> None:
    plan = plan_answer(0, req(stop_sequences=("Simulated",)))
    assert plan.text.startswith(SIMULATED_NOTE) and plan.stop_reason == "end_turn"
    at_once = plan_answer(0, req(stop_sequences=("\n",)))
    assert at_once.text == SIMULATED_NOTE and at_once.stop_reason == "stop_sequence"


def test_max_tokens_wins_over_a_stop_sequence_it_cuts_off() -> None:
    full = plan_answer(0, req()).text
    late = full[-12:]
    plan = plan_answer(0, req(max_tokens=60, stop_sequences=(late,)))
    assert plan.stop_reason == "max_tokens" and plan.stop_sequence is None
    assert plan.text == full[:240]
    early = plan_answer(0, req(max_tokens=60, stop_sequences=("\n## ",)))
    assert (early.stop_reason, early.stop_sequence) == ("stop_sequence", "\n## ")


async def test_a_streamed_answer_stops_where_a_created_one_does() -> None:
    sim = SimulatedBackend(latency_s=0)
    request = req(stop_sequences=("\n- ",))
    items = [item async for item in sim.stream(request)]
    created = await sim.create(request)
    streamed = items[-1]
    assert isinstance(streamed, BackendResponse)
    assert "".join(str(i) for i in items[:-1]) == streamed.text == created.text
    assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", "\n- ")
    assert streamed.usage == created.usage


# -- the call log --------------------------------------------------------------------------


async def test_the_call_log_keeps_the_last_calls_and_the_counters_stay_exact() -> None:
    sim = SimulatedBackend(latency_s=0.01, jitter=0, log_limit=3)
    async with asyncio.TaskGroup() as tg:
        for i in range(5):
            tg.create_task(sim.create(req(f"task {i}")))
    assert [c.task for c in sim.calls] == ["task 2", "task 3", "task 4"]
    assert (sim.call_count, sim.peak_in_flight, sim.in_flight) == (5, 5, 0)
    assert sim.calls[-1].task == "task 4" and [c.task for c in sim.calls[:2]] == [
        "task 2",
        "task 3",
    ]
    assert sim.calls.appended == 5 and sim.calls.limit == 3
    assert [c.task for c in sim.calls.since(3)] == ["task 3", "task 4"]
    assert [c.task for c in sim.calls.since(0)] == ["task 2", "task 3", "task 4"]  # 2 dropped
    assert sim.calls.since(5) == []
    sim.reset_log()
    assert sim.calls == [] and sim.call_count == 0 and sim.calls.since(3) == []
    await sim.create(req("after the reset"))
    assert [c.task for c in sim.calls.since(5)] == ["after the reset"]


def test_the_call_log_reads_like_a_list() -> None:
    log = CallLog(limit=10)
    records = [CallRecord("a", MODEL, f"t{i}", float(i)) for i in range(4)]
    for record in records:
        log.append(record)
    assert log == records and list(reversed(log)) == records[::-1] and log[1:3] == records[1:3]
    assert log != records[:3] and log != tuple(records) and log[-1] is records[-1]
    other = CallLog(limit=2)
    for record in records[2:]:
        other.append(record)
    assert log[-2:] == list(other) and "kept=4" in repr(log)
    with pytest.raises(TypeError):
        hash(log)


def test_the_call_log_limit_is_checked_and_defaults_to_ten_thousand() -> None:
    assert SimulatedBackend().calls.limit == 10_000
    silent = SimulatedBackend(latency_s=0, log_limit=0)
    asyncio.run(silent.create(req()))
    assert len(silent.calls) == 0 and silent.call_count == 1
    with pytest.raises(ValueError, match="log_limit"):
        SimulatedBackend(log_limit=-1)


async def test_the_prompt_cache_forgets_the_oldest_system_prompts() -> None:
    sim = SimulatedBackend(latency_s=0)
    first = req(system="System prompt 0", prompt_caching=True)
    assert (await sim.create(first)).usage.cache_write_tokens > 0
    assert (await sim.create(first)).usage.cache_read_tokens > 0
    for i in range(1, 1025):
        await sim.create(req(system=f"System prompt {i}", prompt_caching=True))
    assert (await sim.create(first)).usage.cache_write_tokens > 0  # written again


# -- cost ----------------------------------------------------------------------------------


async def test_fresh_tasks_are_cheap_to_answer() -> None:
    """Every call a new task, as in a benchmark: no answer cache can make this cheap."""
    sim = SimulatedBackend(latency_s=0)
    system = "You are a careful Python expert. " * 10
    requests = [req(f"Review parse_config_{i} for bugs", system=system) for i in range(2000)]
    started = time.process_time()
    for request in requests:
        await sim.create(request)
    assert (time.process_time() - started) / len(requests) < 500e-6  # ~5 µs expected
