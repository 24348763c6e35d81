"""agentnb against a hand-written `asyncio.gather` over the bare Anthropic SDK."""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from ..backends import SimulatedBackend
from ..loop import run_sync
from ..orchestrator import AgentCall
from ._common import Row, _orchestrator, _timed


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

    from ..backends import AnthropicBackend, simulator_transport

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
