"""The call pipeline's seams: prepare once, one single-flight for streams and calls, no hop for a
blocking cache hit, a bounded number of live calls, the `system` option on every surface."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import pytest

from agentnb import (
    AgentOrchestrator,
    AgentRegistry,
    AsyncAgentOrchestrator,
    BackendRequest,
    BackendResponse,
    Config,
    SimulatedBackend,
    Workflow,
)
from agentnb.cache.keys import make_key
from agentnb.loop import get_home_loop
from agentnb.progress import Progress


class RecordingSimulator(SimulatedBackend):
    """The simulator, keeping every request it was sent and the tasks alive on its loop."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requests: list[BackendRequest] = []
        self.live_tasks: list[int] = []

    async def create(self, request: BackendRequest) -> BackendResponse:
        self.requests.append(request)
        self.live_tasks.append(len(asyncio.all_tasks()))
        return await super().create(request)

    def stream(self, request: BackendRequest) -> AsyncGenerator[str | BackendResponse, None]:
        self.requests.append(request)
        return super().stream(request)


def make(cache: str = "none", **config: Any) -> tuple[AgentOrchestrator, RecordingSimulator]:
    sim = RecordingSimulator(latency_s=config.pop("latency_s", 0.0), jitter=0.0)
    cfg = Config.load(
        env={}, backend="simulated", cache_backend=cache, cache_enabled=cache != "none", **config
    )
    orch = AgentOrchestrator(cfg, backend=sim, agents=AgentRegistry(include_default_dirs=False))
    return orch, sim


@pytest.fixture
def memory_orch() -> Iterator[tuple[AgentOrchestrator, RecordingSimulator]]:
    orch, sim = make("memory", latency_s=0.05)
    yield orch, sim
    orch.close()


# -- the system option, on every surface --------------------------------------------------------
def test_system_option_reaches_the_request_and_the_key() -> None:
    orch, sim = make()
    with orch:
        prompt = orch.agents.get("writer").system_prompt
        orch.execute_agent("writer", "A haiku", system="Answer in French.")
        assert sim.requests[-1].system == f"{prompt}\n\nAnswer in French."
        list(orch.stream_agent("writer", "A haiku", system="Be brief."))
        assert sim.requests[-1].system.endswith("\n\nBe brief.")
        orch.execute_multiple([("writer", "x")], system="In one line.")
        assert sim.requests[-1].system.endswith("\n\nIn one line.")
        assert orch.prepare("writer", "t", system="a").key != orch.prepare("writer", "t").key


def test_system_option_in_a_workflow_step_and_its_defaults() -> None:
    orch, sim = make()
    wf = Workflow.from_yaml(
        "name: w\ndefaults: {system: Use British spelling.}\nsteps:\n"
        "  - {id: a, agent: writer, task: one}\n"
        "  - {id: b, agent: writer, task: two, system: Use American spelling.}\n"
    )
    with orch:
        run = orch.run_workflow(wf)
    assert run.status == "succeeded"
    systems = {r.task: r.system for r in sim.requests}
    assert systems["one"].endswith("\n\nUse British spelling.")
    assert systems["two"].endswith("\n\nUse American spelling.")


def test_system_option_in_the_magic(tmp_path: Path) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from agentnb.orchestrator import facade

    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "agentnb")
        ip.run_line_magic("config", "AgentNB.backend = 'simulated'")
        ip.run_line_magic("config", "AgentNB.sim_latency_s = 0.0")
        ip.run_line_magic("config", f"AgentNB.cache_dir = {str(tmp_path)!r}")
        plain = ip.run_line_magic("agent", "--no-stream writer Same task")
        french = ip.run_line_magic(
            "agent", '--no-stream --system "Answer in French." writer Same task'
        )
        again = ip.run_line_magic(
            "agent", '--no-stream --system "Answer in French." writer Same task'
        )
        assert plain.text != french.text  # another request: another answer, not the cached one
        assert again.cached and again.text == french.text
    finally:
        ip.run_line_magic("unload_ext", "agentnb")
        if facade._default is not None:
            facade._default.close()
        InteractiveShell.clear_instance()


def test_system_option_in_the_cli(tmp_path: Path) -> None:
    def answer(*extra: str) -> dict[str, Any]:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "agentnb",
                "--simulate",
                "agent",
                "--json",
                *extra,
                "writer",
                "Hi",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "", "XDG_CACHE_HOME": str(tmp_path), "AGENTNB_SIM_LATENCY_S": "0"},
        )
        assert proc.returncode == 0, proc.stderr
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    plain, french = answer(), answer("--system", "Answer in French.")
    assert plain["text"] != french["text"] and not french["cached"]
    assert answer("--system", "Answer in French.")["cached"]


# -- prepare once, validate once ----------------------------------------------------------------
def test_a_workflow_step_is_prepared_and_hashed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    orch, sim = make("memory")
    prepared: list[str] = []
    hashed: list[str] = []
    real_prepare = orch.aio.preparer.prepare

    def count_prepare(agent: str, task: str, *args: Any) -> Any:
        prepared.append(task)
        return real_prepare(agent, task, *args)

    def count_key(**fields: Any) -> str:
        hashed.append(fields["messages"][-1]["content"])
        return make_key(**fields)

    monkeypatch.setattr(orch.aio.preparer, "prepare", count_prepare)
    monkeypatch.setattr("agentnb.orchestrator.prepare.make_key", count_key)
    wf = Workflow.from_yaml(
        "name: w\nsteps:\n  - {id: a, agent: writer, task: one}\n"
        "  - {id: b, agent: writer, task: 'two {{a}}'}\n  - {id: c, agent: writer, task: three}\n"
    )
    with orch:
        run = orch.run_workflow(wf)
        assert run.status == "succeeded" and len(sim.requests) == 3
        assert sorted(prepared) == sorted(hashed) and len(prepared) == 3
        first_keys = {s: r.fingerprint for s, r in run.steps.items()}
        rerun = orch.run_workflow(wf, resume=run)  # reused steps are prepared once too
        assert len(prepared) == 6 and len(hashed) == 6 and len(sim.requests) == 3
        assert {s: r.fingerprint for s, r in rerun.steps.items()} == first_keys


def test_the_workflow_magic_validates_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from agentnb.orchestrator import facade

    calls: list[int] = []
    real = Workflow.validate

    def counting(self: Workflow, **kwargs: Any) -> Workflow:
        calls.append(1)
        return real(self, **kwargs)

    monkeypatch.setattr(Workflow, "validate", counting)
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "agentnb")
        ip.run_line_magic("config", "AgentNB.backend = 'simulated'")
        ip.run_line_magic("config", "AgentNB.sim_latency_s = 0.0")
        ip.run_line_magic("config", f"AgentNB.cache_dir = {str(tmp_path)!r}")
        body = "name: once\nsteps:\n  - {id: a, agent: writer, task: hi}\n"
        run = ip.run_cell_magic("workflow", "--quiet", body)  # type: ignore[no-untyped-call]
        assert run.status == "succeeded" and calls == [1]
    finally:
        ip.run_line_magic("unload_ext", "agentnb")
        if facade._default is not None:
            facade._default.close()
        InteractiveShell.clear_instance()


# -- one single-flight for streams and plain calls -----------------------------------------------
async def test_a_stream_and_a_call_for_the_same_request_make_one_backend_call() -> None:
    sim = RecordingSimulator(latency_s=0.05, jitter=0.0)
    cfg = Config.load(env={}, backend="simulated", cache_backend="memory")
    orch = AsyncAgentOrchestrator(
        cfg, backend=sim, agents=AgentRegistry(include_default_dirs=False)
    )
    try:
        stream = orch.stream_agent("writer", "One request")

        async def consume() -> str:
            return "".join([chunk async for chunk in stream])

        streamed, called, streamed_again = await asyncio.gather(
            consume(),
            orch.execute_agent("writer", "One request"),
            _collect(orch.stream_agent("writer", "One request")),
        )
        assert sim.call_count == 1
        assert streamed == called.text == streamed_again
        results = [stream.result, called]
        assert sum(1 for r in results if r is not None and not r.cached) <= 1
    finally:
        await orch.aclose()


async def _collect(stream: Any) -> str:
    return "".join([chunk async for chunk in stream])


# -- a blocking cache hit stays on the caller's thread ------------------------------------------
def test_a_blocking_cached_hit_does_not_touch_the_home_loop(
    memory_orch: tuple[AgentOrchestrator, RecordingSimulator],
) -> None:
    orch, sim = memory_orch
    first = orch.execute_agent("writer", "Cache me")
    home = get_home_loop()
    before, rows = home.submissions, len(orch.tracker)
    hit = orch.execute_agent("writer", "Cache me")
    assert home.submissions == before  # answered on this thread: no hop
    assert hit.cached and hit.text == first.text and hit.cost_usd == 0
    assert len(orch.tracker) == rows + 1 and orch.metrics()["cache_hit"].iloc[-1]
    assert sim.call_count == 1
    orch.execute_agent("writer", "Not cached yet")
    assert home.submissions == before + 1  # a miss goes to the home loop


def test_blocking_hits_from_many_threads_while_the_loop_records(
    memory_orch: tuple[AgentOrchestrator, RecordingSimulator],
) -> None:
    orch, _ = memory_orch
    orch.execute_agent("writer", "Shared")
    rows, hits_before = len(orch.tracker), orch.cache.stats()["hits_memory"]  # type: ignore[union-attr]
    threads, per_thread, errors = 8, 300, []

    def hammer() -> None:
        try:
            for _ in range(per_thread):
                assert orch.execute_agent("writer", "Shared").cached
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for w in workers:
        w.start()
    misses = orch.execute_multiple([("writer", f"miss {i}") for i in range(50)])  # the loop records
    for w in workers:
        w.join()
    assert not errors and len(misses) == 50
    assert len(orch.tracker) == rows + threads * per_thread + 50
    stats = orch.cache.stats()  # type: ignore[union-attr]
    assert stats["hits_memory"] - hits_before == threads * per_thread
    frame = orch.metrics()
    assert int(frame["cache_hit"].sum()) == threads * per_thread


# -- a bounded number of live calls -------------------------------------------------------------
def test_execute_multiple_keeps_at_most_max_concurrency_calls_alive() -> None:
    orch, sim = make(latency_s=0.001, max_concurrency=4)
    with orch:
        results = orch.execute_multiple([("writer", f"task {i}") for i in range(400)])
    assert len(results) == 400 and [r.agent for r in results] == ["writer"] * 400  # type: ignore[union-attr]
    # Tasks alive on the home loop while a call runs: the workers and the caller's, not 400.
    assert max(sim.live_tasks) <= 4 + 3
    assert sim.peak_in_flight <= 4


def test_results_keep_input_order_and_failures_their_place() -> None:
    orch, sim = make(latency_s=0.0, max_concurrency=3, max_attempts=1)
    sim.inject("bad_request", agent="code-reviewer")
    calls = [("writer", "a"), ("code-reviewer", "b"), ("writer", "c")]
    with orch:
        out = orch.execute_multiple(calls, return_exceptions=True)
    assert [type(r).__name__ for r in out] == ["AgentResult", "AgentCallError", "AgentResult"]


# -- progress ----------------------------------------------------------------------------------
def test_execute_multiple_reports_progress_and_can_be_silenced() -> None:
    orch, _ = make(latency_s=0.0)
    out = io.StringIO()
    with orch:
        with Progress(None, label="batch", mode="terminal", file=out, min_interval_s=0.0) as shown:
            orch.execute_multiple([("writer", f"t {i}") for i in range(5)], progress=shown)
            orch.execute_multiple([("writer", f"u {i}") for i in range(3)], progress=shown)
        snap = shown.snapshot  # one display followed both jobs; the caller closed it
        assert (snap.total, snap.done, snap.in_flight, snap.status) == (8, 8, 0, "done")
        assert "8/8" in out.getvalue() and out.getvalue().endswith("\n")
        silent = io.StringIO()
        with redirect_stderr(silent):
            orch.execute_multiple([("writer", f"v {i}") for i in range(5)], progress=False)
            orch.execute_multiple([("writer", f"w {i}") for i in range(5)])  # auto: no TTY here
        assert silent.getvalue() == ""


def test_a_workflow_feeds_the_progress_component() -> None:
    orch, _ = make(latency_s=0.0)
    out = io.StringIO()
    wf = Workflow.from_yaml(
        "name: w\nsteps:\n  - {id: a, agent: writer, task: one}\n"
        "  - {id: b, agent: writer, task: two}\n"
    )
    with orch:
        shown = Progress(2, label="workflow w", mode="terminal", file=out, min_interval_s=0.0)
        orch.run_workflow(wf, progress=shown)
    assert shown.snapshot.done == 2 and "2/2" in out.getvalue()


# -- the attempt's deadline -----------------------------------------------------------------
async def test_a_deadline_times_out_its_own_work_only() -> None:
    from agentnb.orchestrator import Deadline

    async with Deadline(10) as roomy:
        await asyncio.sleep(0)
    assert not roomy.expired
    with pytest.raises(TimeoutError):
        async with Deadline(0.01) as tight:
            await asyncio.sleep(5)
    assert tight.expired

    async def cancelled_from_outside() -> None:
        async with Deadline(10):
            await asyncio.sleep(5)

    task = asyncio.ensure_future(cancelled_from_outside())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):  # the caller's cancel stays a cancel
        await task


# -- the garbage collector during a large job -------------------------------------------------
def test_a_large_job_runs_with_a_larger_young_generation_then_restores_it() -> None:
    import gc

    from agentnb.orchestrator.gcpolicy import LARGE_JOB

    seen: list[int] = []

    class Watching(RecordingSimulator):
        async def create(self, request: BackendRequest) -> BackendResponse:
            seen.append(gc.get_threshold()[0])
            return await super().create(request)

    before = gc.get_threshold()
    sim = Watching(latency_s=0.0, jitter=0.0)
    cfg = Config.load(env={}, backend="simulated", cache_enabled=False, job_gc_threshold=50_000)
    with AgentOrchestrator(cfg, backend=sim, agents=AgentRegistry(include_default_dirs=False)) as o:
        o.execute_multiple([("writer", f"small {i}") for i in range(10)])
        assert set(seen) == {before[0]}  # a small job leaves the collector alone
        seen.clear()
        o.execute_multiple([("writer", f"large {i}") for i in range(LARGE_JOB)])
        assert set(seen) == {50_000}
        assert gc.get_threshold() == before
        seen.clear()
        o.reconfigure(o.config.replace(job_gc_threshold=0))
        o.execute_multiple([("writer", f"off {i}") for i in range(LARGE_JOB)])
        assert set(seen) == {before[0]}


async def test_a_retry_never_comes_before_the_servers_retry_after() -> None:
    # On the home loop (uvloop where installed, whose timers may fire a millisecond early).
    from agentnb.loop import run_async
    from agentnb.orchestrator.attempts import sleep_at_least

    async def early_wakeups() -> int:
        early = 0
        for i in range(40):
            delay = 0.001 + (i % 7) * 0.0003
            start = time.monotonic()
            await sleep_at_least(delay)
            early += time.monotonic() - start < delay
        return early

    assert await run_async(early_wakeups()) == 0
