"""The benchmark suite behind `python -m agentnb bench`: figures against goals, not tests.

`run_suite()` returns `Section`s (a title, a note, rows, and figures to draw); the CLI prints
each as a Markdown table, then one table of every goal, and with `--out DIR` writes
`results.json` and the PNGs (`write_outputs`). Everything runs on the offline simulator, so the
figures measure agentnb itself, not the network. Rows that have a goal carry `goal` (text) and
`met` (True/False); the goals come from the project's issues.

Sections (full / `--quick`; `smoke=True` shrinks every size and latency, for the tests only):
- fanout: N independent calls at 200 ms, concurrent vs sequential and the ideal (one latency),
  N = 5, 20, 100, 1000 (sequential up to 100 / up to 20).
- overhead: µs per call the orchestrator adds over the bare `backend.create`, zero latency.
- cache: tier latencies from `agentnb.cache.bench` at 10k and 100k entries (quick: 10k), with
  `diskcache` on the same data when it is installed, and a cached `execute_agent` end to end.
- workflow: `agentnb.workflow.bench` (scheduler overhead, wall / critical path, the skewed
  DAG), and the skewed DAG again through the orchestrator and the simulator.
- scale: 10,000 calls at concurrency 200 and 50 ms, in a child process so that its peak RSS
  is its own.
- sdk_baseline: the same 100-call fan-out through a hand-written `asyncio.gather` over the bare
  `AsyncAnthropic` client and through agentnb's `AnthropicBackend`, both on the simulator's
  HTTP transport.
- cached_rerun: a 20-call batch at 200 ms, first run vs fully cached re-runs.
- speedup: `compare_speedup` (sequential, concurrent, cached) on 20 calls at 200 ms.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .agents import AgentRegistry
from .backends import Backend, BackendRequest, SimulatedBackend
from .config import Config
from .loop import run_sync
from .orchestrator import AgentCall, AsyncAgentOrchestrator

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "Section",
    "bench_cache_tiers",
    "bench_cached_rerun",
    "bench_fanout",
    "bench_overhead",
    "bench_scale",
    "bench_sdk_baseline",
    "bench_speedup",
    "bench_workflow",
    "goals_table",
    "run_suite",
    "to_markdown",
    "write_outputs",
]

Row = dict[str, Any]
Draw = Callable[["Axes"], "Axes"]
_SECRET = b"agentnb-bench-secret-0123456789ab"  # the bench never touches the user's key file


@dataclass
class Section:
    """One table of the suite, and the figures (name -> draw on an Axes) that go with it."""

    key: str
    title: str
    note: str
    rows: list[Row]
    figures: dict[str, Draw] = field(default_factory=dict)


def _goal(row: Row, goal: str, met: bool | None) -> Row:
    row["goal"] = goal
    row["met"] = met
    return row


def _config(latency_s: float, max_concurrency: int, **extra: Any) -> Config:
    # Config() and replace(), not Config.load(): no agentnb.yaml or environment in the figures.
    values: dict[str, Any] = {
        "backend": "simulated",
        "cache_enabled": False,
        "max_concurrency": max_concurrency,
        "sim_latency_s": latency_s,
        "sim_jitter": 0.0,
        "timeout_s": 600.0,
    }
    return Config().replace(**{**values, **extra})


def _parts(
    latency_s: float,
    max_concurrency: int,
    *,
    backend: Backend | None = None,
    cache_backend: str | None = None,
    **extra: Any,
) -> tuple[Config, dict[str, Any]]:
    """Config and keyword arguments of a bench orchestrator: the simulator (or `backend`),
    built-in agents only, no cache unless `cache_backend` is given (with the bench's secret)."""
    if cache_backend is not None:
        extra.update(cache_enabled=True, cache_backend=cache_backend)
    cfg = _config(latency_s, max_concurrency, **extra)
    cache = None
    if cache_backend is not None:
        from .cache import ResponseCache

        cache = ResponseCache(cfg, secret=_SECRET)
    kwargs = {
        "backend": backend if backend is not None else SimulatedBackend.from_config(cfg),
        "agents": AgentRegistry(include_default_dirs=False),
        "cache": cache,
    }
    return cfg, kwargs


def _orchestrator(latency_s: float, max_concurrency: int, **options: Any) -> AsyncAgentOrchestrator:
    cfg, kwargs = _parts(latency_s, max_concurrency, **options)
    return AsyncAgentOrchestrator(cfg, **kwargs)


def _timed(coro: Coroutine[Any, Any, Any]) -> float:
    """Seconds `coro` took on the home loop (timed there, without the thread hop)."""

    async def run() -> float:
        t0 = time.perf_counter()
        await coro
        return time.perf_counter() - t0

    return run_sync(run())


# -- fan-out and overhead ------------------------------------------------------------------


def bench_fanout(
    sizes: tuple[int, ...] = (5, 20, 100, 1000),
    *,
    latency_s: float = 0.2,
    sequential_up_to: int = 100,
) -> list[Row]:
    """Wall time of N independent calls, concurrent and (up to `sequential_up_to`) sequential.

    `bare_sim_efficiency` is the same for `asyncio.gather` over the simulator's own `create`
    (other tasks of the same length, so neither run reuses the other's answers): the floor
    the simulator itself sets, since it composes each answer's text before it sleeps.
    Goals: efficiency (one latency / measured wall) >= 0.95 at every size; speedup over
    sequential >= 4.9x for 5 calls and >= 90x for 100 calls.
    """
    rows: list[Row] = []
    for n in sizes:
        aio = _orchestrator(latency_s, max_concurrency=n)
        calls = [AgentCall("writer", f"Summarise document {i}") for i in range(n)]
        bare_sim = SimulatedBackend.from_config(aio.config)
        requests = [_request(aio, f"Summarise document {-i - 1}") for i in range(n)]

        async def bare(sim: SimulatedBackend, reqs: list[BackendRequest]) -> None:
            await asyncio.gather(*(sim.create(r) for r in reqs))

        run_sync(aio.execute_multiple(calls[:1]))  # warm the agent registry and code paths
        repeats = 3 if n <= 100 else 1
        wall = min(_timed(aio.execute_multiple(calls)) for _ in range(repeats))
        bare_wall = min(_timed(bare(bare_sim, requests)) for _ in range(repeats))
        seq = _timed(_sequential(aio, calls)) if n <= sequential_up_to else None
        efficiency = latency_s / wall  # the ideal: every call overlaps, one latency in all
        speedup = None if seq is None else seq / wall
        goals, met = ["efficiency >= 0.95"], [efficiency >= 0.95]
        target = {5: 4.9, 100: 90.0}.get(n)
        if target is not None and speedup is not None:
            goals.append(f"speedup >= {target:g}x")
            met.append(speedup >= target)
        row = {
            "calls": n,
            "latency_ms": latency_s * 1000,
            "concurrent_s": round(wall, 4),
            "sequential_s": None if seq is None else round(seq, 3),
            "speedup": None if speedup is None else round(speedup, 1),
            "ideal_speedup": n,
            "efficiency": round(efficiency, 3),
            "bare_sim_efficiency": round(latency_s / bare_wall, 3),
            "peak_in_flight": getattr(aio.backend, "peak_in_flight", None),
        }
        rows.append(_goal(row, "; ".join(goals), all(met)))
        run_sync(aio.aclose())
    return rows


def _request(aio: AsyncAgentOrchestrator, task: str, agent: str = "writer") -> BackendRequest:
    """The request the orchestrator would send for `agent` on `task`."""
    return aio._prepare(AgentCall(agent, task)).request


async def _sequential(aio: AsyncAgentOrchestrator, calls: list[AgentCall]) -> None:
    for c in calls:
        await aio.execute_agent(c.agent, c.task)


def bench_overhead(n: int = 5000, repeats: int = 5) -> list[Row]:
    """µs per call added by `execute_agent`/`execute_multiple` over the bare backend call.

    Goal: at most 50 µs per call.
    """
    aio = _orchestrator(0.0, max_concurrency=n)
    backend = aio.backend
    spec = aio.agents.get("writer")
    request = BackendRequest(
        model=aio.config.resolve_model(spec.model),
        task="Summarise",
        system=spec.system_prompt,
        agent=spec.name,
        max_tokens=aio.config.max_tokens,
    )
    calls = [AgentCall("writer", "Summarise")] * n

    async def bare_seq() -> None:
        for _ in range(n):
            await backend.create(request)

    async def orch_seq() -> None:
        for _ in range(n):
            await aio.execute_agent("writer", "Summarise")

    async def bare_batch() -> None:
        await asyncio.gather(*(backend.create(request) for _ in range(n)))

    async def orch_batch() -> None:
        await aio.execute_multiple(calls)

    def per_call_us(fn: Callable[[], Coroutine[Any, Any, None]]) -> float:
        return statistics.median(_timed(fn()) for _ in range(repeats)) / n * 1e6

    run_sync(orch_seq())  # warm-up
    rows: list[Row] = []
    for label, bare, orch in (
        ("one after another", bare_seq, orch_seq),
        ("one concurrent batch", bare_batch, orch_batch),
    ):
        b, o = per_call_us(bare), per_call_us(orch)
        row = {
            "mode": label,
            "calls": n,
            "bare_backend_us": round(b, 1),
            "orchestrator_us": round(o, 1),
            "overhead_us": round(o - b, 1),
        }
        rows.append(_goal(row, "overhead <= 50 us", o - b <= 50))
        aio.tracker.reset()
    run_sync(aio.aclose())
    return rows


# -- cache tiers ----------------------------------------------------------------------------

_CACHE_GOALS = {
    ("memory", "hit"): 10.0,
    ("sqlite", "get"): 50.0,
    ("sqlite", "set"): 100.0,
    ("orchestrator", "execute_agent hit (awaited)"): 200.0,
    ("orchestrator", "execute_agent hit (blocking)"): 200.0,
}


def bench_cache_tiers(
    entries: tuple[int, ...] = (10_000, 100_000), *, samples: int = 2000
) -> list[Row]:
    """Cache latencies (p50/p99 µs) per tier and entry count, then a cached call end to end.

    Tier rows come from `agentnb.cache.bench.bench_cache` (diskcache included when installed).
    The last rows time a cache hit through the whole orchestrator: `await execute_agent` on the
    home loop, and the blocking `AgentOrchestrator.execute_agent` a notebook cell uses (which
    adds the hop to the loop thread). Goals: memory hit <= 10 µs, SQLite get <= 50 µs and
    set <= 100 µs, a cached `execute_agent` <= 200 µs (all p50).
    """
    from .cache.bench import bench_cache

    # End to end first: after the 100k-entry tier run frees its few hundred MB, thread
    # hand-offs are slower for a while, which would be the allocator's figure, not agentnb's.
    end_to_end = _cached_call_latency(samples)
    rows: list[Row] = []
    for n in entries:
        rows.extend(bench_cache(n, samples=samples))
    rows.extend(end_to_end)
    for row in rows:
        limit = _CACHE_GOALS.get((row["store"], row["op"]))
        if limit is None:
            _goal(row, "", None)
        else:
            _goal(row, f"p50 <= {limit:g} us", row["p50_us"] <= limit)
    return rows


def _cached_call_latency(samples: int) -> list[Row]:
    from .cache.bench import _row
    from .orchestrator import AgentOrchestrator

    cfg, kwargs = _parts(0.0, 10, cache_backend="memory")
    orch = AgentOrchestrator(cfg, **kwargs)
    aio = orch.aio
    task = "Summarise " + "x" * 2000  # a 2 KB task, as in the cache issue's goal
    orch.execute_agent("writer", task)  # the one miss
    for _ in range(max(50, samples // 4)):  # warm-up: steady state, not first calls
        orch.execute_agent("writer", task)

    async def awaited() -> list[int]:
        clock = time.perf_counter_ns
        out = []
        for _ in range(samples):
            t0 = clock()
            await aio.execute_agent("writer", task)
            out.append(clock() - t0)
        return out

    on_loop = run_sync(awaited())
    blocking = []
    for _ in range(samples):
        t0 = time.perf_counter_ns()
        orch.execute_agent("writer", task)
        blocking.append(time.perf_counter_ns() - t0)
    df = orch.metrics()
    orch.close()
    misses = int((~df["cache_hit"]).sum())
    note = "memory tier" if misses == 1 else f"memory tier, {misses} misses (expected 1)"
    return [
        _row("orchestrator", "execute_agent hit (awaited)", 1, on_loop, note),
        _row("orchestrator", "execute_agent hit (blocking)", 1, blocking, note + ", thread hop"),
    ]


# -- workflows -------------------------------------------------------------------------------

_SKEW_AGENTS = {"A": "writer", "B": "code-reviewer", "C": "python-expert", "D": "python-expert"}


def bench_workflow(
    *,
    overhead_steps: int = 1000,
    dag_steps: int = 200,
    latency_range: tuple[float, float] = (0.005, 0.05),
    skew_s: tuple[float, float, float, float, float] = (0.02, 0.5, 0.2, 0.2, 0.02),
) -> tuple[list[Row], dict[str, Draw]]:
    """The scheduler's figures, and the skewed DAG run through the orchestrator + simulator.

    Goals: <= 100 µs of scheduler overhead per step; wall <= 1.03 x critical path on the random
    DAG; the skewed DAG A -> {B, C -> D} -> E within 1.05 x (max(B, C + D) + A + E). In the
    orchestrator run, A and E are `writer`, B `code-reviewer`, C and D `python-expert`, whose
    simulated latencies are set per agent (so A and E share one).
    """
    from .workflow import Workflow
    from .workflow.bench import bench_scheduler

    f = bench_scheduler(
        overhead_steps=overhead_steps,
        dag_steps=dag_steps,
        latency_range=latency_range,
        skew_s=skew_s,
    )
    a, b, c, d, e = skew_s
    skew_goal = 1.05 * (max(b, c + d) + a + e)
    lo, hi = (round(x * 1000) for x in latency_range)
    rows = [
        _goal(
            {
                "figure": f"scheduler overhead, {overhead_steps}-step random DAG, zero latency",
                "value": round(f["overhead_us_per_step"], 1),
                "unit": "us/step",
            },
            "<= 100 us/step",
            f["overhead_us_per_step"] <= 100,
        ),
        _goal(
            {
                "figure": f"wall / critical path, {dag_steps}-step random DAG, {lo}-{hi} ms",
                "value": round(f["dag_wall_over_critical_path"], 3),
                "unit": "x",
            },
            "<= 1.03",
            f["dag_wall_over_critical_path"] <= 1.03,
        ),
        _goal(
            {
                "figure": "skewed DAG, scheduler alone (superstep scheduler: "
                f"{f['skewed_superstep_s']:.2f} s)",
                "value": round(f["skewed_wall_s"], 3),
                "unit": "s",
            },
            f"<= {skew_goal:.3f} s",
            f["skewed_wall_s"] <= skew_goal,
        ),
    ]
    latencies = {"writer": a, "code-reviewer": b, "python-expert": c}
    aio = _orchestrator(0.0, 10, backend=SimulatedBackend(latencies=latencies, jitter=0.0))
    skewed = Workflow.from_dict(
        {
            "name": "skewed",
            "steps": [
                {"id": "A", "agent": "writer", "task": "Outline a short report"},
                {"id": "B", "agent": "code-reviewer", "task": "Review: {{A}}"},
                {"id": "C", "agent": "python-expert", "task": "Prototype: {{A}}"},
                {"id": "D", "agent": "python-expert", "task": "Refine: {{C}}"},
                {"id": "E", "agent": "writer", "task": "Merge: {{B}} {{D}}"},
            ],
        }
    )
    run_sync(aio.run_workflow(skewed, max_concurrency=10))  # warm-up
    aio.tracker.reset()
    run = run_sync(aio.run_workflow(skewed, max_concurrency=10))
    rows.append(
        _goal(
            {
                "figure": f"skewed DAG through the orchestrator + simulator "
                f"(critical path {run.critical_path_s:.3f} s)",
                "value": round(run.wall_s, 3),
                "unit": "s",
            },
            f"<= {skew_goal:.3f} s",
            run.wall_s <= skew_goal and run.status == "succeeded",
        )
    )
    tracker = aio.tracker
    run_sync(aio.aclose())
    from .plots import plot_cost, plot_latency

    figures: dict[str, Draw] = {
        "skewed_timeline": run.timeline,
        "skewed_latency": lambda ax: plot_latency(tracker, ax),
        "skewed_cost": lambda ax: plot_cost(tracker, ax),
    }
    return rows, figures


# -- scale: a child process, so the peak RSS is the run's own -------------------------------


def bench_scale(
    calls: int = 10_000, *, max_concurrency: int = 200, latency_s: float = 0.05
) -> list[Row]:
    """`calls` calls at `max_concurrency` and `latency_s`, run in a fresh Python process.

    Goals: wall <= 1.1 x ideal (ceil(calls / concurrency) latencies) and peak RSS < 200 MB.
    `rss_before_mb` is the child's peak RSS after imports and a warm-up, before the run;
    `bare_sim_over_ideal` is the same load through `asyncio.gather` + a semaphore over the bare
    simulator (run after the RSS is read): the floor the simulator itself sets.
    """
    code = (
        "import json, sys; from agentnb.bench_suite import _scale_child; "
        f"print(json.dumps(_scale_child({calls}, {max_concurrency}, {latency_s!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the scale run failed:\n{done.stderr[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    ideal = math.ceil(calls / max_concurrency) * latency_s
    ratio = figures["wall_s"] / ideal
    row = {
        "calls": calls,
        "concurrency": max_concurrency,
        "latency_ms": latency_s * 1000,
        "wall_s": round(figures["wall_s"], 3),
        "ideal_s": round(ideal, 3),
        "wall_over_ideal": round(ratio, 3),
        "bare_sim_over_ideal": round(figures["bare_sim_wall_s"] / ideal, 3),
        "calls_per_s": round(calls / figures["wall_s"]),
        "peak_in_flight": figures["peak_in_flight"],
        "rss_before_mb": round(figures["rss_before_mb"], 1),
        "peak_rss_mb": round(figures["peak_rss_mb"], 1),
    }
    met = ratio <= 1.1 and figures["peak_rss_mb"] < 200 and figures["ok"] == calls
    return [_goal(row, "wall <= 1.1 x ideal; peak RSS < 200 MB", met)]


def _peak_rss_mb() -> float:
    """This process's peak RSS in MB.

    On Linux, `VmHWM` of /proc/self/status: `getrusage` there would report the parent's RSS at
    fork time when that was larger (the figure survives exec). Elsewhere `getrusage`.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def _scale_child(calls: int, max_concurrency: int, latency_s: float) -> dict[str, Any]:
    """Run in the child process of `bench_scale`; returns its figures."""
    aio = _orchestrator(latency_s, max_concurrency)
    batch = [AgentCall("writer", f"Summarise document {i}") for i in range(calls)]
    run_sync(aio.execute_multiple(batch[:max_concurrency]))  # warm-up
    aio.tracker.reset()
    before = _peak_rss_mb()
    t0 = time.perf_counter()
    results = run_sync(aio.execute_multiple(batch))
    wall = time.perf_counter() - t0
    figures = {
        "wall_s": wall,
        "ok": sum(1 for r in results if not isinstance(r, BaseException)),
        "peak_in_flight": getattr(aio.backend, "peak_in_flight", None),
        "rss_before_mb": before,
        "peak_rss_mb": _peak_rss_mb(),
    }
    del results
    # The simulator's own floor, after the RSS is read: the same number of calls (other tasks)
    # through asyncio.gather + a semaphore over a fresh simulator's `create`.
    sim = SimulatedBackend.from_config(aio.config)
    requests = [_request(aio, f"Summarise document {-i - 1}") for i in range(calls)]

    async def bare() -> None:
        limit = asyncio.Semaphore(max_concurrency)

        async def one(r: BackendRequest) -> None:
            async with limit:
                await sim.create(r)

        await asyncio.gather(*(one(r) for r in requests))

    figures["bare_sim_wall_s"] = _timed(bare())
    run_sync(aio.aclose())
    return figures


# -- agentnb vs the bare SDK ------------------------------------------------------------------


def bench_sdk_baseline(calls: int = 100, *, latency_s: float = 0.2, repeats: int = 5) -> list[Row]:
    """The same fan-out through the bare `AsyncAnthropic` client and through agentnb.

    Both go over the simulator's HTTP transport (the real SDK code path, no network), run on
    the same event loop, alternate repeat by repeat, and send the same model, system prompt,
    task and max_tokens. Bare: `asyncio.gather` over `client.messages.create`. agentnb:
    `execute_multiple` with an `AnthropicBackend` (retries, timeouts, metrics, no cache).
    Goal: agentnb's median wall <= 1.10 x the bare client's.
    """
    import anthropic
    import httpx2

    from .backends import AnthropicBackend, simulator_transport

    sim = SimulatedBackend(latency_s=latency_s, jitter=0.0)
    backend = AnthropicBackend(
        api_key="sk-test", base_url="http://sim.local", transport=simulator_transport(sim)
    )
    aio = _orchestrator(latency_s, calls, backend=backend)
    spec = aio.agents.get("writer")
    model = aio.config.resolve_model(spec.model)
    tasks = [f"Summarise document {i}" for i in range(calls)]
    batch = [AgentCall("writer", t, use_cache=False) for t in tasks]

    async def bare() -> list[Any]:
        client = anthropic.AsyncAnthropic(
            api_key="sk-test",
            max_retries=0,
            base_url="http://sim.local",
            http_client=httpx2.AsyncClient(transport=simulator_transport(sim)),
        )
        return await asyncio.gather(
            *(
                client.messages.create(
                    model=model,
                    max_tokens=aio.config.max_tokens,
                    system=spec.system_prompt,
                    messages=[{"role": "user", "content": t}],
                )
                for t in tasks
            )
        )

    walls: dict[str, list[float]] = {"bare": [], "agentnb": []}
    run_sync(bare())  # warm-up: imports, client construction, code paths
    run_sync(aio.execute_multiple(batch))
    for _ in range(repeats):
        walls["bare"].append(_timed(bare()))
        walls["agentnb"].append(_timed(aio.execute_multiple(batch)))
    run_sync(aio.aclose())
    med = {k: statistics.median(v) for k, v in walls.items()}
    rows: list[Row] = []
    for label, key in (
        ("bare AsyncAnthropic + asyncio.gather", "bare"),
        ("agentnb execute_multiple (AnthropicBackend)", "agentnb"),
    ):
        rows.append(
            {
                "client": label,
                "calls": calls,
                "latency_ms": latency_s * 1000,
                "wall_s_median": round(med[key], 4),
                "wall_s_min": round(min(walls[key]), 4),
                "vs_bare": round(med[key] / med["bare"], 3),
                "goal": "",
                "met": None,
            }
        )
    rows[-1].update(goal="<= 1.10 x bare", met=med["agentnb"] / med["bare"] <= 1.10)
    return rows


# -- the cache end to end ---------------------------------------------------------------------


def bench_cached_rerun(calls: int = 20, *, latency_s: float = 0.2, repeats: int = 20) -> list[Row]:
    """A batch's first run (empty cache) against re-runs answered wholly by the cache.

    The cache is the default kind (memory in front of SQLite) in a temporary directory; a
    re-run is answered by the memory tier. Goal: re-run >= 100x faster than the first run.
    """
    with tempfile.TemporaryDirectory() as tmp:
        aio = _orchestrator(latency_s, calls, cache_backend="sqlite", cache_dir=tmp)
        batch = [AgentCall("writer", f"Summarise document {i}") for i in range(calls)]
        first = _timed(aio.execute_multiple(batch))
        reruns = [_timed(aio.execute_multiple(batch)) for _ in range(repeats)]
        df = aio.metrics()
        hits = int(df["cache_hit"].iloc[calls:].sum())
        run_sync(aio.aclose())
    rerun = statistics.median(reruns)
    row = {
        "calls": calls,
        "latency_ms": latency_s * 1000,
        "first_run_s": round(first, 4),
        "rerun_ms_median": round(rerun * 1000, 3),
        "rerun_hit_rate": hits / (calls * repeats),
        "speedup": round(first / rerun, 1),
        "backend_calls_in_reruns": int(getattr(aio.backend, "call_count", calls)) - calls,
    }
    met = first / rerun >= 100 and hits == calls * repeats
    return [_goal(row, ">= 100x, every re-run call a hit", met)]


def bench_speedup(
    calls: int = 20, *, latency_s: float = 0.2, repeats: int = 3
) -> tuple[list[Row], dict[str, Draw]]:
    """`compare_speedup` on the simulator: its table, and its plot as a figure.

    Goals: concurrent speedup >= 0.95 x ideal; cached: every call a hit, no backend call.
    """
    from .bench import compare_speedup

    aio = _orchestrator(latency_s, calls, cache_backend="memory")
    batch = [AgentCall("writer", f"Summarise document {i}") for i in range(calls)]
    report = compare_speedup(batch, repeats=repeats, orchestrator=aio)
    run_sync(aio.aclose())
    rows: list[Row] = []
    for rec in report.table.to_dict(orient="records"):
        row = {
            k: (round(v, 4) if isinstance(v, float) and not math.isnan(v) else v)
            for k, v in rec.items()
        }
        if row["mode"] == "concurrent":
            _goal(row, ">= 0.95 x ideal speedup", rec["speedup"] >= 0.95 * rec["ideal_speedup"])
        elif row["mode"] == "cached":
            _goal(
                row, "100% hits, 0 backend calls", rec["hit_rate"] == 1 and not rec["backend_calls"]
            )
        else:
            _goal(row, "", None)
        rows.append(row)
    return rows, {"speedup": report.plot}


# -- the suite ---------------------------------------------------------------------------------


def run_suite(
    *, quick: bool = False, smoke: bool = False, progress: Callable[[str], None] | None = None
) -> list[Section]:
    """Run every section. `quick` keeps the whole suite under a minute; `smoke` makes every
    size and latency tiny (a few seconds in all; only for the tests: its figures mean nothing).
    `progress` is told each section's title before it runs."""
    say = progress or (lambda _title: None)
    lat = 0.01 if smoke else 0.2
    sections: list[Section] = []

    def add(key: str, title: str, note: str, fn: Callable[[], Any]) -> None:
        say(title)
        out = fn()
        rows, figures = out if isinstance(out, tuple) else (out, {})
        sections.append(Section(key, title, note, rows, figures))

    ms = f"{lat * 1000:g} ms"
    add(
        "fanout",
        f"Fan-out speedup ({ms} simulated latency)",
        "efficiency = ideal wall (one latency) / measured wall",
        lambda: bench_fanout(
            (5, 20) if smoke else (5, 20, 100, 1000),
            latency_s=lat,
            sequential_up_to=20 if quick or smoke else 100,
        ),
    )
    add(
        "overhead",
        "Orchestrator overhead per call (zero latency)",
        "µs per call over the bare simulator call (median of 5 runs)",
        lambda: bench_overhead(n=200 if smoke else 1000 if quick else 5000),
    )
    add(
        "cache",
        "Cache latencies (µs)",
        "p50/p99 of one call of each tier; diskcache on the same data when installed",
        lambda: bench_cache_tiers(
            (500,) if smoke else (10_000,) if quick else (10_000, 100_000),
            samples=100 if smoke else 1000 if quick else 2000,
        ),
    )
    add(
        "workflow",
        "Workflow scheduler",
        "sleep executor (the scheduler alone), then the skewed DAG through the orchestrator",
        lambda: bench_workflow(
            overhead_steps=100 if smoke else 1000,
            dag_steps=20 if smoke else 200,
            skew_s=(0.002, 0.05, 0.02, 0.02, 0.002) if smoke else (0.02, 0.5, 0.2, 0.2, 0.02),
        ),
    )
    add(
        "scale",
        "Scale run (child process)",
        "ideal = ceil(calls / concurrency) x latency; RSS from getrusage in the child",
        lambda: (
            bench_scale(300, max_concurrency=30, latency_s=0.005)
            if smoke
            else bench_scale(10_000, max_concurrency=200, latency_s=0.05)
        ),
    )
    add(
        "sdk_baseline",
        f"agentnb vs the bare Anthropic SDK ({ms}, simulator HTTP transport)",
        "same calls, same loop, alternating runs; vs_bare = median wall / bare median wall",
        lambda: bench_sdk_baseline(
            20 if smoke else 100, latency_s=lat, repeats=2 if smoke else 3 if quick else 5
        ),
    )
    add(
        "cached_rerun",
        f"Fully cached re-run vs first run ({ms})",
        "memory + SQLite cache in a temporary directory; re-runs answered from memory",
        lambda: bench_cached_rerun(20, latency_s=lat, repeats=5 if smoke else 10 if quick else 20),
    )
    add(
        "speedup",
        f"compare_speedup: sequential vs concurrent vs cached (20 calls, {ms})",
        "repeats: 1 (quick) or 3; error bars in speedup.png span the repeats",
        lambda: bench_speedup(20, latency_s=lat, repeats=1 if quick or smoke else 3),
    )
    return sections


def goals_table(sections: list[Section]) -> list[Row]:
    """Every row that has a goal, in one table: section, what, goal, met."""
    out: list[Row] = []
    for s in sections:
        for row in s.rows:
            if row.get("goal"):
                what = next(
                    (
                        f"{k}={row[k]}"
                        for k in ("figure", "mode", "client", "op", "calls")
                        if k in row
                    ),
                    "",
                )
                if "store" in row:
                    what = f"{row['store']} {row['op']}"
                    if row["store"] != "orchestrator":
                        what += f" ({row['entries']:,} entries)"
                out.append({"section": s.key, "what": what, "goal": row["goal"], "met": row["met"]})
    return out


def to_markdown(rows: list[Row]) -> str:
    """A Markdown table of `rows` (columns from the first row; `met` shown as yes/NO)."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])

    def cell(value: Any, col: str) -> str:
        if value is None:
            return ""
        if col == "met" and isinstance(value, bool):
            return "yes" if value else "**NO**"
        return str(value)

    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(cell(r.get(c), c) for c in cols) + " |")
    return "\n".join(out)


def write_outputs(sections: list[Section], out: Path) -> list[Path]:
    """Write `results.json` and one PNG per figure into `out`; returns the paths written."""
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "sections": [
            {"key": s.key, "title": s.title, "note": s.note, "rows": s.rows} for s in sections
        ],
        "goals": goals_table(sections),
    }
    written = [out / "results.json"]
    written[0].write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    for s in sections:
        for name, draw in s.figures.items():
            fig = Figure(figsize=(7, 4))  # no pyplot: no GUI backend, no global figure list
            draw(fig.subplots())
            fig.tight_layout()
            path = out / f"{name}.png"
            fig.savefig(path, dpi=120)
            written.append(path)
    return written
