"""Message Batches: agentnb's own CPU per batch request, its memory, the SDK's share, the price.

Each job runs in a fresh Python process (so that its peak RSS is its own, as in `_scale`;
quick and smoke runs put them all in one), with the bench's cache secret in its environment and
every file in a temporary directory (the user's key file, cache and state are never touched):
- `native`: `execute_multiple(calls, batch=True)` of N requests on the simulator's own
  batches (1 ms of processing per 1,000 requests, polled from 1 ms), with the default SQLite
  response cache, or with the cache off. `agentnb_us` is the process's CPU time (every thread)
  around the job, less the simulator's own (`SimBatches.cpu_s`: storing the requests, composing
  the results), per request; its cache writer's and ledger's threads are shown apart.
- `sdk`: the bare `AsyncAnthropic` client over the simulator's HTTP transport: one
  `messages.batches.create` of M requests (the body built beforehand) and reading the results
  (`batches.results`, each line parsed by the SDK), each timed alone, the simulator's own work
  excluded; then the same job through agentnb's `AnthropicBackend` (cache off), whose CPU less
  the SDK's is agentnb's own on that path. Best of two of each, alternating (that difference
  is of two figures the machine's load moves), the bare runs with the collector setting
  agentnb's large jobs have (`job_gc_threshold`: else a full collection of the SDK's modules
  lands in one run or the other).
- `price`: the same calls online, and as a batch with some of them cached beforehand: the
  batch's cost must be half the online price of its answers (`BATCH_FACTOR`), hits free.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..agents import AgentRegistry
from ..backends import AnthropicBackend, SimulatedBackend, simulator_transport
from ..cache import ResponseCache
from ..config import Config
from ..loop import run_sync
from ..orchestrator import AgentCall, AsyncAgentOrchestrator
from ..orchestrator.gcpolicy import young_generation
from ..pricing import BATCH_FACTOR
from ..result import AgentResult
from ._common import _SECRET, Profile, Row, _config, _goal, fresh_tasks
from ._profile import profile_top
from ._scale import _peak_rss_mb

__all__ = ["bench_batch"]

#: The goals: agentnb's CPU per request with the SQLite cache, and the job's peak RSS.
CPU_GOAL_US = 50.0
RSS_GOAL_MB = 300.0
_URL = "http://sim.local"
_WARM = 200  # requests of the warm-up job (imports, code paths, databases made)


def bench_batch(
    requests: int = 100_000,
    *,
    sdk_requests: int = 10_000,
    price_calls: int = 1_000,
    cached: int = 100,
    separate: bool = True,
) -> list[Row]:
    """The `batch` section's rows (see the module docstring): `requests` through the simulator
    with the SQLite cache and with none, `sdk_requests` through the bare SDK and through
    agentnb over it, and the price of `price_calls` calls (`cached` of them cached first).
    `separate`: each in a process of its own; else all in one (quicker: one start-up, one
    import of each module), whose peak RSS is then the first job's only.

    Goals: agentnb's CPU <= 50 µs per request with the SQLite cache and a peak RSS <= 300 MB
    (at `requests`); the batch's cost = half the online price of its answers, hits free.
    """
    jobs: list[Job] = [
        ("native", (requests, "sqlite")),
        ("native", (requests, "none")),
        ("price", (price_calls, cached)),
        ("sdk", (sdk_requests,)),  # last: the SDK's modules are in no other job's memory
    ]
    if separate:
        sqlite, off, price, sdk = (_child([job])[0] for job in jobs)
    else:
        sqlite, off, price, sdk = _child(jobs)
    rows = [_native_row(sqlite, requests), _native_row(off, requests)]
    profile: Profile = functools.cache(lambda: _child([jobs[0]], profile=True)[0])
    scaled = "" if sdk_requests == requests else f", scaled from {requests:,}"
    _goal(
        rows[0],
        f"<= {CPU_GOAL_US:g} µs/request",
        sqlite["agentnb_us"] <= CPU_GOAL_US and sqlite["ok"] == requests,
        measured=f"{sqlite['agentnb_us']:.1f} µs/request{_short(sqlite, requests)}",
        bare=f"cache off {off['agentnb_us']:.1f} µs; the SDK's create + results "
        f"{sdk['create_us'] + sdk['results_us']:.0f} µs ({sdk_requests:,}{scaled})",
        what=f"agentnb CPU per request, {requests:,} requests, SQLite cache",
        profile=profile,
    )
    _goal(
        rows[0],
        f"peak RSS <= {RSS_GOAL_MB:g} MB",
        sqlite["peak_rss_mb"] <= RSS_GOAL_MB and sqlite["ok"] == requests,
        measured=f"{sqlite['peak_rss_mb']:.0f} MB{_short(sqlite, requests)}",
        bare="" if off["peak_rss_mb"] is None else f"cache off {off['peak_rss_mb']:.0f} MB",
        what=f"peak RSS, {requests:,} requests",
        profile=profile,
    )
    _goal(rows[1], "", None)
    rows += _sdk_rows(sdk, sdk_requests, scaled, off["agentnb_us"])
    rows.append(_price_row(price, price_calls))
    return rows


def _mb(rss: float | None) -> float | None:
    return None if rss is None else round(rss, 1)


def _short(f: dict[str, Any], requests: int) -> str:
    return "" if f["ok"] == requests else f", only {f['ok']:,} of {requests:,} answered"


def _row(run: str, requests: int, cache: str, **values: Any) -> Row:
    row: Row = {
        "run": run,
        "requests": requests,
        "cache": cache,
        "wall_s": None,
        "agentnb_us": None,
        "sim_us": None,
        "sdk_us": None,
        "peak_rss_mb": None,
        "detail": "",
    }
    row.update(values)
    return row


def _native_row(f: dict[str, Any], requests: int) -> Row:
    us = f["agentnb_us"]
    threads = f["threads_us"]
    rest = us - threads["cache"] - threads["ledger"]
    return _row(
        "agentnb, the simulator's batches",
        requests,
        f["cache"],
        wall_s=round(f["wall_s"], 2),
        agentnb_us=round(us, 1),
        sim_us=round(f["sim_us"], 1),
        peak_rss_mb=_mb(f["peak_rss_mb"]),
        detail=f"{f['ok']:,} answered in {f['batches']} batch{'es' if f['batches'] > 1 else ''}; "
        f"per request: cache writer "
        f"thread {threads['cache']:.1f} µs, ledger thread {threads['ledger']:.1f} µs, the rest "
        f"(home loop) {rest:.1f} µs; garbage collector {f['gc_us']:.1f} µs",
    )


def _sdk_rows(f: dict[str, Any], requests: int, scaled: str, native_us: float) -> list[Row]:
    sdk_us = f["create_us"] + f["results_us"]
    own = f["agentnb_us"] - sdk_us
    rows = [
        _row(
            "bare SDK: messages.batches.create",
            requests,
            "",
            sdk_us=round(f["create_us"], 1),
            detail=f"one body of {requests:,} requests{scaled} (the SDK holds it whole), "
            "built beforehand; best of 2, with the collector setting of agentnb's large jobs",
        ),
        _row(
            "bare SDK: batches.results, every line parsed",
            requests,
            "",
            sdk_us=round(f["results_us"], 1),
            detail="the simulator's encoding of the results excluded; best of 2",
        ),
        _row(
            "agentnb over the SDK (AnthropicBackend)",
            requests,
            "none",
            wall_s=round(f["wall_s"], 2),
            agentnb_us=round(own, 1),
            sim_us=round(f["sim_us"], 1),
            sdk_us=round(sdk_us, 1),
            peak_rss_mb=_mb(f["peak_rss_mb"]),
            detail=f"{f['ok']:,} answered; best of 2: {f['agentnb_us']:.1f} µs/request in all, "
            f"the SDK's create + results {sdk_us:.1f} of it ({sdk_us / f['agentnb_us']:.0%}), "
            f"agentnb's own the rest (natively, cache off: {native_us:.1f})",
        ),
    ]
    for row in rows:
        _goal(row, "", None)
    return rows


def _price_row(f: dict[str, Any], calls: int) -> Row:
    online, batch, hits = f["online_price_usd"], f["batch_usd"], f["hits"]
    paid = online - f["hits_online_price_usd"]  # the online price of the answers not cached
    expected = BATCH_FACTOR * paid
    ok = abs(batch - expected) <= 1e-12 * max(1.0, expected) and f["hits_cost_usd"] == 0.0
    share = batch / online if online else float("nan")
    return _goal(
        _row(
            f"price of {calls:,} calls: online vs batch ({hits} cached)",
            calls,
            "memory",
            detail=f"batch ${batch:.4f} = {share:.1%} of ${online:.4f}, the online price of "
            f"the same answers (price file): half of the ${paid:.4f} not cached, {hits} hits "
            f"$0; the same job run online: ${f['online_run_usd']:.4f}",
        ),
        "batch = half the online price, cache hits free",
        ok,
        measured=f"${batch:.4f} vs ${expected:.4f} ({share:.1%} of ${online:.4f} online)",
        bare=f"online run ${f['online_run_usd']:.4f}",
        what=f"batch cost of {calls:,} calls, {hits} cached",
    )


# -- the child processes -------------------------------------------------------------------------
#: A job of a child process: its kind ("native", "sdk", "price") and its arguments.
Job = tuple[str, tuple[Any, ...]]


def _child(jobs: list[Job], *, profile: bool = False) -> list[Any]:
    """What `_run_child(jobs)` returns, run in a fresh Python process."""
    code = (
        "import json; from agentnb.bench_suite._batch import _run_child; "
        f"print(json.dumps(_run_child({jobs!r}, profile={profile})))"
    )
    env = {**os.environ, "AGENTNB_CACHE_SECRET": _SECRET.decode("ascii")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the batch runs {jobs} failed:\n{done.stderr[-2000:]}")
    figures: list[Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _run_child(jobs: list[Job], *, profile: bool = False) -> list[Any]:
    """In the child of `_child`: each job's figures (its files in a temporary directory of
    its own); a peak RSS only for the first (later ones would report the process's)."""
    import gc

    out = []
    for i, (kind, args) in enumerate(jobs):
        gc.collect()  # no job pays for the garbage of the one before
        with tempfile.TemporaryDirectory(prefix="agentnb-bench-batch-") as tmp:
            if kind == "native":
                figures = _native(Path(tmp), *args, profile=profile)
            elif kind == "sdk":
                figures = _sdk(Path(tmp), *args)
            else:
                figures = _price(Path(tmp), *args)
        if i and isinstance(figures, dict) and "peak_rss_mb" in figures:
            figures["peak_rss_mb"] = None
        out.append(figures)
    return out


def _settings(tmp: Path, cache: str, **extra: Any) -> Config:
    return _config(
        0.0,
        100,
        state_dir=tmp / "state",
        cache_dir=tmp / "cache",
        cache_enabled=cache != "none",
        cache_backend="memory" if cache == "none" else cache,
        sim_batch_latency_s=0.001,
        batch_poll_s=0.001,
        batch_poll_max_s=0.05,
        **extra,
    )


def _orchestrator(cfg: Config, backend: Any) -> AsyncAgentOrchestrator:
    cache = ResponseCache(cfg, secret=_SECRET) if cfg.cache_enabled else None
    agents = AgentRegistry(include_default_dirs=False)
    return AsyncAgentOrchestrator(cfg, backend=backend, agents=agents, cache=cache)


def _batch(aio: AsyncAgentOrchestrator, n: int) -> list[AgentResult | BaseException]:
    calls = [AgentCall("writer", t) for t in fresh_tasks(n)]
    return run_sync(aio.execute_multiple(calls, batch=True, return_exceptions=True))


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each of this process's threads, by name (their own clocks)."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        if t.ident is not None:
            with contextlib.suppress(OSError, AttributeError):  # AttributeError: not on Unix
                out[t.name] = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
    return out


def _spent(before: dict[str, float], after: dict[str, float], prefix: str) -> float:
    return sum(s - before.get(name, 0.0) for name, s in after.items() if name.startswith(prefix))


def _native(tmp: Path, n: int, cache: str, *, profile: bool = False) -> Any:
    import gc

    cfg = _settings(tmp, cache)
    sim = SimulatedBackend.from_config(cfg)
    store = sim.batches
    aio = _orchestrator(cfg, sim)
    _batch(aio, _WARM)
    calls = [AgentCall("writer", t) for t in fresh_tasks(n)]

    async def job() -> tuple[list[AgentResult | BaseException], int]:
        sent = await aio.execute_multiple(calls, batch=True, wait=False, return_exceptions=True)
        return await sent.results(), len(sent.ids)

    if profile:
        return profile_top(lambda: run_sync(job()))
    collected: list[float] = []
    started: list[float] = []

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.thread_time())
        elif started:
            collected.append(time.thread_time() - started.pop())

    gc.collect()
    threads, sim0 = _thread_cpu(), store.cpu_s
    gc.callbacks.append(on_gc)
    c0, t0 = time.process_time(), time.perf_counter()
    results, batches = run_sync(job())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    gc.callbacks.remove(on_gc)
    sim_s, after = store.cpu_s - sim0, _thread_cpu()
    per = 1e6 / n
    figures = {
        "cache": cache,
        "ok": sum(1 for r in results if isinstance(r, AgentResult)),
        "batches": batches,
        "wall_s": wall,
        "agentnb_us": (cpu - sim_s) * per,
        "sim_us": sim_s * per,
        "gc_us": sum(collected) * per,
        "threads_us": {
            "cache": _spent(threads, after, "agentnb-cache-sqlite") * per,
            "ledger": _spent(threads, after, "agentnb-batch-ledger") * per,
        },
        "peak_rss_mb": _peak_rss_mb(),
    }
    run_sync(aio.aclose())
    return figures


def _sdk(tmp: Path, n: int) -> Any:
    import gc

    import anthropic

    cfg = _settings(tmp, "none")
    sim = SimulatedBackend.from_config(cfg)
    store = sim.batches
    backend = AnthropicBackend(api_key="sk-test", base_url=_URL, transport=simulator_transport(sim))
    aio = _orchestrator(cfg, backend)
    client = anthropic.AsyncAnthropic(
        api_key="sk-test",
        max_retries=0,
        base_url=_URL,
        http_client=anthropic.DefaultAsyncHttpxClient(transport=simulator_transport(sim)),
    )
    spec = aio.agents.get("writer")
    model = cfg.resolve_model(spec.model)
    system = [{"type": "text", "text": spec.system_prompt, "cache_control": {"type": "ephemeral"}}]

    def body(size: int) -> list[Any]:
        return [
            {
                "custom_id": f"r-{i}",
                "params": {
                    "model": model,
                    "max_tokens": cfg.max_tokens,
                    "system": system,
                    "messages": [{"role": "user", "content": task}],
                },
            }
            for i, task in enumerate(fresh_tasks(size))
        ]

    async def bare(requests: list[Any]) -> tuple[float, float]:
        gc.collect()
        c0, s0 = time.process_time(), store.cpu_s
        batch = await client.messages.batches.create(requests=requests)
        create = time.process_time() - c0 - (store.cpu_s - s0)
        while (await client.messages.batches.retrieve(batch.id)).processing_status != "ended":
            await asyncio.sleep(0.005)
        gc.collect()
        c0, s0 = time.process_time(), store.cpu_s
        async for _ in await client.messages.batches.results(batch.id):
            pass
        return create, time.process_time() - c0 - (store.cpu_s - s0)

    def through_agentnb() -> tuple[float, float, float, int]:
        calls = [AgentCall("writer", t) for t in fresh_tasks(n)]
        gc.collect()
        c0, t0, s0 = time.process_time(), time.perf_counter(), store.cpu_s
        answers = run_sync(aio.execute_multiple(calls, batch=True, return_exceptions=True))
        wall, sim = time.perf_counter() - t0, store.cpu_s - s0
        ok = sum(1 for r in answers if isinstance(r, AgentResult))
        return time.process_time() - c0 - sim, sim, wall, ok

    run_sync(bare(body(_WARM)))
    _batch(aio, _WARM)
    # Best of two of each, alternating: agentnb's own share is a difference of figures that
    # each vary with the machine's load. The bare runs have the collector's setting agentnb's
    # job runs with (`job_gc_threshold`), so that the SDK's code costs the same in both.
    bare_runs, ours = [], []
    for _ in range(2):
        with young_generation(cfg.job_gc_threshold):
            bare_runs.append(run_sync(bare(body(n))))
        ours.append(through_agentnb())
    create, results = min(c for c, _ in bare_runs), min(r for _, r in bare_runs)
    cpu, sim_s, wall, ok = min(ours)
    per = 1e6 / n
    run_sync(aio.aclose())
    run_sync(client.close())
    return {
        "create_us": create * per,
        "results_us": results * per,
        "agentnb_us": cpu * per,
        "sim_us": sim_s * per,
        "wall_s": wall,
        "ok": ok,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _price(tmp: Path, n: int, cached: int) -> Any:
    tasks = fresh_tasks(n)
    calls = [AgentCall("writer", t) for t in tasks]
    online_cfg = _settings(tmp / "online", "memory")
    online = _orchestrator(online_cfg, SimulatedBackend.from_config(online_cfg))
    online_run = _answers(run_sync(online.execute_multiple(calls)))
    cfg = _settings(tmp / "batch", "memory")
    aio = _orchestrator(cfg, SimulatedBackend.from_config(cfg))
    run_sync(aio.execute_multiple(calls[:cached]))  # answered before: the batch's cache hits
    results = _answers(run_sync(aio.execute_multiple(calls, batch=True)))
    price = aio.prices.cost
    hits = [r for r in results if r.cached]
    figures = {
        "online_run_usd": sum(r.cost_usd for r in online_run),
        "batch_usd": sum(r.cost_usd for r in results),
        "online_price_usd": sum(price(r.model, r.usage) for r in results),
        "hits": len(hits),
        "hits_online_price_usd": sum(price(r.model, r.usage) for r in hits),
        "hits_cost_usd": sum(r.cost_usd for r in hits),
    }
    run_sync(online.aclose())
    run_sync(aio.aclose())
    return figures


def _answers(results: list[AgentResult | BaseException]) -> list[AgentResult]:
    """`results`, each an answer (a failure is raised: the price needs every one)."""
    for r in results:
        if not isinstance(r, AgentResult):
            raise r
    return [r for r in results if isinstance(r, AgentResult)]
