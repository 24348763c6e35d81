"""Shared fixtures: the offline simulator, and the real SDK backend answered by it over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config as TraitletsConfig

from agentnb.backends import AnthropicBackend, Backend, SimulatedBackend, simulator_transport


@pytest.fixture(autouse=True)
def _isolated_user_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test touches the real ~/.cache, ~/.config, ~/.local/state, or calls the real API."""
    root: Path = tmp_path_factory.mktemp("userdirs")
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(root / "state"))
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "AGENTNB_CONFIG"):
        monkeypatch.delenv(var, raising=False)


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


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> InteractiveShell:
    """The process's InteractiveShell, its profile and history kept out of the home directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
        cfg = TraitletsConfig()
        cfg.HistoryManager.hist_file = ":memory:"
        return InteractiveShell.instance(config=cfg)
