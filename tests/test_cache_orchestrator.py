"""The response cache wired into the orchestrator: hits, single-flight, exclusions, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentnb import (
    AgentCallError,
    AgentRegistry,
    AgentSpec,
    AsyncAgentOrchestrator,
    Config,
    SimulatedBackend,
)
from agentnb.backends import AnthropicBackend, simulator_transport


def make(
    tmp_path: Path, backend: Any = None, agents: AgentRegistry | None = None, **overrides: Any
) -> tuple[AsyncAgentOrchestrator, Any]:
    settings: dict[str, Any] = {
        "backend": "simulated",
        "cache_dir": tmp_path / "cache",
        "sim_latency_s": 0.002,
        "sim_jitter": 0.0,
        "backoff_base_s": 0.001,
        "backoff_cap_s": 0.002,
    }
    settings.update(overrides)
    cfg = Config.load(env={}, **settings)
    backend = backend or SimulatedBackend(latency_s=0.002, jitter=0.0)
    orch = AsyncAgentOrchestrator(
        cfg, backend=backend, agents=agents or AgentRegistry(include_default_dirs=False)
    )
    return orch, backend


async def test_second_call_is_a_hit_with_zero_cost(tmp_path: Path) -> None:
    orch, backend = make(tmp_path)
    first = await orch.execute_agent("writer", "A title for a talk on caching")
    second = await orch.execute_agent("writer", "A title for a talk on caching")
    assert backend.call_count == 1
    assert not first.cached and second.cached
    assert second.text == first.text and second.usage == first.usage
    assert second.cost_usd == 0.0 and second.attempts == 0
    df = orch.metrics()
    assert df["cache_hit"].tolist() == [False, True]
    assert df["cost_usd"].iloc[1] == 0.0
    assert df["cost_saved_usd"].iloc[1] == pytest.approx(first.cost_usd)
    assert df["output_tokens"].iloc[1] == first.usage.output_tokens  # tokens saved
    await orch.aclose()


async def test_disk_tier_survives_a_new_orchestrator(tmp_path: Path) -> None:
    orch, _ = make(tmp_path)
    first = await orch.execute_agent("writer", "persist me")
    await orch.aclose()
    again, backend2 = make(tmp_path)
    second = await again.execute_agent("writer", "persist me")
    assert second.cached and second.text == first.text
    assert backend2.call_count == 0
    assert again.cache is not None and again.cache.stats()["hits_disk"] == 1
    await again.aclose()


async def test_100_identical_concurrent_calls_make_one_backend_call(tmp_path: Path) -> None:
    orch, backend = make(tmp_path, backend=SimulatedBackend(latency_s=0.05, jitter=0.0))
    results = await orch.execute_multiple([("writer", "same question")] * 100)
    assert backend.call_count == 1
    assert len({r.text for r in results}) == 1  # type: ignore[union-attr]
    assert sum(not r.cached for r in results) == 1  # type: ignore[union-attr]
    await orch.aclose()


async def test_no_cache_per_call(tmp_path: Path) -> None:
    orch, backend = make(tmp_path)
    await orch.execute_agent("writer", "x")
    again = await orch.execute_agent("writer", "x", use_cache=False)
    assert not again.cached and backend.call_count == 2
    await orch.aclose()


async def test_agent_front_matter_cache_false(tmp_path: Path) -> None:
    registry = AgentRegistry(include_default_dirs=False)
    registry.register(
        AgentSpec(name="fresh", description="d", system_prompt="Be fresh.", cache=False)
    )
    orch, backend = make(tmp_path, agents=registry)
    await orch.execute_agent("fresh", "x")
    assert not (await orch.execute_agent("fresh", "x")).cached
    assert backend.call_count == 2
    await orch.aclose()


async def test_cache_exclude_globs(tmp_path: Path) -> None:
    orch, backend = make(tmp_path, cache_exclude=["writ*"])
    await orch.execute_agent("writer", "x")
    await orch.execute_agent("writer", "x")
    await orch.execute_agent("python-expert", "x")
    assert (await orch.execute_agent("python-expert", "x")).cached
    assert backend.call_count == 3
    await orch.aclose()


async def test_failed_calls_are_never_cached(tmp_path: Path) -> None:
    orch, backend = make(tmp_path)
    backend.inject("bad_request", times=1)
    with pytest.raises(AgentCallError):
        await orch.execute_agent("writer", "fails first")
    ok = await orch.execute_agent("writer", "fails first")
    assert not ok.cached and backend.call_count == 2
    assert (await orch.execute_agent("writer", "fails first")).cached
    await orch.aclose()


async def test_editing_the_agent_prompt_invalidates(tmp_path: Path) -> None:
    registry = AgentRegistry(include_default_dirs=False)
    registry.register(AgentSpec(name="critic", description="d", system_prompt="Be harsh."))
    orch, backend = make(tmp_path, agents=registry)
    await orch.execute_agent("critic", "Review my poem")
    registry.register(AgentSpec(name="critic", description="d", system_prompt="Be kind."))
    again = await orch.execute_agent("critic", "Review my poem")
    assert not again.cached and backend.call_count == 2
    await orch.aclose()


@pytest.mark.parametrize("change", [{"model": "haiku"}, {"max_tokens": 99}, {"temperature": 0.5}])
async def test_call_options_are_part_of_the_key(tmp_path: Path, change: dict[str, Any]) -> None:
    orch, backend = make(tmp_path)
    await orch.execute_agent("writer", "same task")
    other = await orch.execute_agent("writer", "same task", **change)
    assert not other.cached and backend.call_count == 2
    await orch.aclose()


async def test_simulated_answers_never_served_to_the_real_api_path(tmp_path: Path) -> None:
    orch, _ = make(tmp_path)
    await orch.execute_agent("writer", "which backend?")
    await orch.aclose()
    sdk_sim = SimulatedBackend(latency_s=0.002, jitter=0.0)
    sdk = AnthropicBackend(
        api_key="sk-test", base_url="http://sim.local", transport=simulator_transport(sdk_sim)
    )
    real, _ = make(tmp_path, backend=sdk)
    result = await real.execute_agent("writer", "which backend?")
    assert not result.cached and sdk_sim.call_count == 1
    await real.aclose()


async def test_cache_entries_hold_no_api_key(tmp_path: Path) -> None:
    key = "sk-ant-api03-NEVER-IN-THE-CACHE"
    sim = SimulatedBackend(latency_s=0.001, jitter=0.0)
    sdk = AnthropicBackend(
        api_key=key, base_url="http://sim.local", transport=simulator_transport(sim)
    )
    orch, _ = make(tmp_path, backend=sdk)
    await orch.execute_agent("writer", "hello")
    await orch.aclose()
    blobs = b"".join(p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert blobs and key.encode() not in blobs


async def test_workflow_rerun_calls_only_failed_and_skipped_steps(tmp_path: Path) -> None:
    yaml_text = """
name: resume-demo
steps:
  - {id: a, agent: python-expert, task: "Start"}
  - {id: b, agent: code-reviewer, task: "Review {{a}}"}
  - {id: c, agent: data-analyst, task: "Numbers for {{a}}"}
  - {id: d, agent: writer, task: "Merge {{b}} and {{c}}"}
"""
    orch, backend = make(tmp_path)
    backend.inject("bad_request", times=1, agent="code-reviewer")
    run = await orch.run_workflow(yaml_text)
    assert run.status == "partial"
    assert run.steps["b"].status == "failed" and run.steps["d"].status == "skipped"
    await orch.aclose()
    # A new session (new orchestrator, same cache dir) re-runs the same workflow.
    again, backend2 = make(tmp_path)
    rerun = await again.run_workflow(yaml_text)
    assert rerun.status == "succeeded"
    assert sorted(c.agent for c in backend2.calls) == ["code-reviewer", "writer"]
    assert rerun.steps["a"].cached and rerun.steps["c"].cached
    await again.aclose()


async def test_sdk_over_the_simulator_never_shares_keys_with_the_real_api(tmp_path: Path) -> None:

    sim = SimulatedBackend(latency_s=0.001, jitter=0.0)
    over_sim = AnthropicBackend(
        api_key="sk-test", base_url="http://sim.local", transport=simulator_transport(sim)
    )
    real = AnthropicBackend(api_key="sk-test")  # never called: only its key is computed
    gateway = AnthropicBackend(api_key="sk-test", base_url="https://gateway.example")
    keys = set()
    for backend in (sim, over_sim, real, gateway):
        orch, _ = make(tmp_path, backend=backend)
        keys.add(orch.prepare("writer", "same request").key)
        await orch.aclose()
    assert len(keys) == 4
    assert not real.client_created


def test_cache_dir_that_is_a_file_fails_when_the_orchestrator_is_made(tmp_path: Path) -> None:
    from agentnb import CacheError

    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("I am a file")
    with pytest.raises(CacheError, match="is a file"):
        make(tmp_path)


async def test_resume_reruns_a_step_whose_agent_prompt_changed(tmp_path: Path) -> None:
    registry = AgentRegistry(include_default_dirs=False)
    registry.register(AgentSpec(name="critic", description="d", system_prompt="Be harsh."))
    orch, backend = make(tmp_path, agents=registry, cache_enabled=False)
    text = """
name: edit-then-resume
steps:
  - {id: draft, agent: writer, task: "Draft a note"}
  - {id: review, agent: critic, task: "Review {{draft}}"}
"""
    first = await orch.run_workflow(text)
    assert first.status == "succeeded" and backend.call_count == 2
    same = await orch.run_workflow(text, resume=first)
    assert backend.call_count == 2 and same.steps["review"].cached  # nothing changed: reused
    registry.register(AgentSpec(name="critic", description="d", system_prompt="Be kind."))
    edited = await orch.run_workflow(text, resume=first)
    assert [c.agent for c in backend.calls[2:]] == ["critic"]  # only the edited agent ran
    assert not edited.steps["review"].cached and edited.steps["draft"].cached
    await orch.aclose()
