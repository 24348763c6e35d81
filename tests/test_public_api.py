"""The public API is exactly what `agentnb.__all__` says, and every name in it exists."""

from __future__ import annotations

import importlib
import subprocess
import sys

import agentnb

EXPECTED = {
    # orchestration
    "AgentOrchestrator",
    "AsyncAgentOrchestrator",
    "AgentCall",
    "AgentStream",
    "AgentResult",
    "default_orchestrator",
    "Config",
    # agents
    "AgentRegistry",
    "AgentSpec",
    "list_agents",
    # backends
    "Backend",
    "BackendRequest",
    "BackendResponse",
    "Usage",
    "SimulatedBackend",
    "AnthropicBackend",
    # cache, workflows, metrics, benchmarks
    "ResponseCache",
    "Workflow",
    "WorkflowRun",
    "Step",
    "StepEvent",
    "StepResult",
    "PerformanceTracker",
    "PriceTable",
    "prices",
    "compare_speedup",
    "SpeedupReport",
    # agents over data
    "map",
    "amap",
    "grid",
    "GridResult",
    # errors
    "AgentnbError",
    "ConfigError",
    "AgentError",
    "AgentNotFoundError",
    "InvalidAgentNameError",
    "TaskTooLongError",
    "WorkflowError",
    "WorkflowValidationError",
    "CacheError",
    "AgentCallError",
    "BackendError",
    "RateLimitError",
    "SchemaError",
    "BudgetExceededError",
    # IPython extension
    "load_ipython_extension",
    "unload_ipython_extension",
    "__version__",
}


def test_all_is_pinned() -> None:
    assert set(agentnb.__all__) == EXPECTED
    assert len(agentnb.__all__) == len(set(agentnb.__all__))


def test_every_exported_name_exists_and_errors_share_one_root() -> None:
    for name in agentnb.__all__:
        assert hasattr(agentnb, name), name
    for name in EXPECTED:
        obj = getattr(agentnb, name)
        if isinstance(obj, type) and name.endswith("Error"):
            assert issubclass(obj, agentnb.AgentnbError), name


def test_submodules_declare_all() -> None:
    for module in (
        "config",
        "errors",
        "loop",
        "agents",
        "orchestrator",
        "metrics",
        "bench",
        "result",
        "plots",
        "backends",
        "cache",
        "workflow",
        "frames",
        "grids",
    ):
        mod = importlib.import_module(f"agentnb.{module}")
        assert isinstance(getattr(mod, "__all__", None), list), module
        for name in mod.__all__:
            assert hasattr(mod, name), f"agentnb.{module}.{name}"


def test_import_is_light() -> None:
    """`import agentnb` (and so %load_ext) loads neither the SDK, matplotlib nor IPython."""
    code = (
        "import sys, agentnb; heavy = ('anthropic', 'httpx2', 'matplotlib', 'IPython'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
