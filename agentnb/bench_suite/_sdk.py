"""agentnb against a hand-written `asyncio.gather` over the bare Anthropic SDK."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from typing import Any

from ..backends import AnthropicBackend, SimulatedBackend, simulator_transport
from ..loop import run_sync
from ..orchestrator import AsyncAgentOrchestrator
from ._common import Row, _calls, _goal, _orchestrator, _timed, fresh_tasks
from ._profile import profiled

_URL = "http://sim.local"


def bench_sdk_baseline(
    sizes: tuple[int, ...] = (100, 1000), *, latency_s: float = 0.2, repeats: int = 5
) -> list[Row]:
    """The same fan-out through the bare `AsyncAnthropic` client and through agentnb.

    Both go over the simulator's HTTP transport (the real SDK code path, no network), run on
    the home loop, alternate repeat by repeat (tasks never used before in each run), and send
    the same model, system prompt (marked for prompt caching, as agentnb marks it), task and
    max_tokens. Bare: one `AsyncAnthropic(max_retries=0, http_client=
    DefaultAsyncHttpxClient(transport=...))`, and `asyncio.gather` over
    `client.messages.create`. agentnb: `execute_multiple` with an `AnthropicBackend` (retries,
    timeouts, metrics, no cache). Goal: agentnb's median wall <= 1.05 x the bare client's
    (stretch: <= 1.0 x).
    """
    import anthropic

    sim = SimulatedBackend(latency_s=latency_s, jitter=0.0)
    client = anthropic.AsyncAnthropic(
        api_key="sk-test",
        max_retries=0,
        base_url=_URL,
        http_client=anthropic.DefaultAsyncHttpxClient(transport=simulator_transport(sim)),
    )
    aio = _agentnb(latency_s, max(sizes), sim)
    spec = aio.agents.get("writer")
    model = aio.config.resolve_model(spec.model)
    system = [{"type": "text", "text": spec.system_prompt, "cache_control": {"type": "ephemeral"}}]

    async def bare(tasks: list[str]) -> list[Any]:
        return await asyncio.gather(
            *(
                client.messages.create(
                    model=model,
                    max_tokens=aio.config.max_tokens,
                    system=system,  # type: ignore[arg-type]  # a list of text blocks
                    messages=[{"role": "user", "content": t}],
                )
                for t in tasks
            )
        )

    run_sync(bare(fresh_tasks(10)))  # warm-up: imports, both clients, code paths
    run_sync(aio.execute_multiple(_calls(fresh_tasks(10))))
    rows: list[Row] = []
    for n in sizes:
        walls: dict[str, list[float]] = {"bare": [], "agentnb": []}
        for _ in range(repeats):
            walls["bare"].append(_timed(bare(fresh_tasks(n))))
            walls["agentnb"].append(_timed(aio.execute_multiple(_calls(fresh_tasks(n)))))
            aio.tracker.reset()
        med = {k: statistics.median(v) for k, v in walls.items()}
        ratio = med["agentnb"] / med["bare"]
        for label, key in (
            ("bare AsyncAnthropic + asyncio.gather", "bare"),
            ("agentnb execute_multiple (AnthropicBackend)", "agentnb"),
        ):
            rows.append(
                {
                    "client": label,
                    "calls": n,
                    "latency_ms": latency_s * 1000,
                    "repeats": repeats,
                    "wall_s_median": round(med[key], 4),
                    "wall_s_min": round(min(walls[key]), 4),
                    "vs_bare": round(med[key] / med["bare"], 3),
                    "goal": "",
                    "met": None,
                }
            )
        _goal(
            rows[-1],
            "wall <= 1.05 x bare (stretch <= 1.0 x)",
            ratio <= 1.05,
            measured=f"{ratio:.3f} x ({med['agentnb']:.3f} s)",
            bare=f"{med['bare']:.3f} s",
            what=f"wall vs bare SDK at {n:,} calls",
            stretch=ratio <= 1.0,
            profile=profiled(_sdk_setup(n, latency_s)),
        )
    run_sync(aio.aclose())
    run_sync(client.close())
    return rows


def _agentnb(
    latency_s: float, max_concurrency: int, sim: SimulatedBackend
) -> AsyncAgentOrchestrator:
    backend = AnthropicBackend(api_key="sk-test", base_url=_URL, transport=simulator_transport(sim))
    return _orchestrator(latency_s, max_concurrency, backend=backend)


def _sdk_setup(n: int, latency_s: float) -> Callable[[], Callable[[], object]]:
    def setup() -> Callable[[], object]:
        sim = SimulatedBackend(latency_s=latency_s, jitter=0.0)
        aio = _agentnb(latency_s, n, sim)
        run_sync(aio.execute_multiple(_calls(fresh_tasks(10))))
        calls = _calls(fresh_tasks(n))
        return lambda: run_sync(aio.execute_multiple(calls))

    return setup
