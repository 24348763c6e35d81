"""Shared fixtures: the offline simulator, and the real SDK backend answered by it over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentnb.backends import AnthropicBackend, Backend, SimulatedBackend, simulator_transport


@pytest.fixture
def sim_backend() -> SimulatedBackend:
    """A fast, fault-free simulator: 10 ms per call, no jitter, seed 0."""
    return SimulatedBackend(latency_s=0.01, jitter=0.0, seed=0)


@pytest.fixture
async def sdk_backend(sim_backend: SimulatedBackend) -> AsyncIterator[AnthropicBackend]:
    """`AnthropicBackend` (the real SDK path) whose HTTP requests `sim_backend` answers."""
    backend = AnthropicBackend(
        api_key="sk-test-not-a-real-key",
        base_url="http://simulator.invalid",
        transport=simulator_transport(sim_backend),
    )
    yield backend
    await backend.aclose()


@pytest.fixture(params=["simulated", "anthropic-sdk"])
def any_backend(
    request: pytest.FixtureRequest, sim_backend: SimulatedBackend, sdk_backend: AnthropicBackend
) -> Backend:
    """Each backend in turn; both are driven by the same `sim_backend` (inject faults there)."""
    return sim_backend if request.param == "simulated" else sdk_backend
