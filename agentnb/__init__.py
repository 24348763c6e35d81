"""agentnb: Claude agents in Jupyter, with an offline simulator, a response cache and benchmarks.

The public API is re-exported here; `tests/test_public_api.py` pins `__all__`.

Example:
    >>> import agentnb
    >>> orch = agentnb.AgentOrchestrator(agentnb.Config.load(backend="simulated", env={},
    ...                                                      sim_latency_s=0, cache_enabled=False))
    >>> orch.execute_agent("writer", "Say hello").simulated
    True
    >>> orch.close()
"""

from __future__ import annotations

from typing import Any

from . import _accessor
from .agents import AgentRegistry, AgentSpec, list_agents
from .backends import (
    AnthropicBackend,
    Backend,
    BackendRequest,
    BackendResponse,
    SimulatedBackend,
    Usage,
)
from .bench import SpeedupReport, compare_speedup
from .cache import ResponseCache
from .config import Config
from .errors import (
    AgentCallError,
    AgentError,
    AgentnbError,
    AgentNotFoundError,
    BackendError,
    BudgetExceededError,
    CacheError,
    ConfigError,
    InvalidAgentNameError,
    RateLimitError,
    SchemaError,
    TaskTooLongError,
    WorkflowError,
    WorkflowValidationError,
)
from .frames import amap, map
from .grids import GridResult, grid
from .metrics import PerformanceTracker, PriceTable, prices
from .orchestrator import (
    AgentCall,
    AgentOrchestrator,
    AgentStream,
    AsyncAgentOrchestrator,
    default_orchestrator,
)
from .result import AgentResult
from .workflow import Step, StepEvent, StepResult, Workflow, WorkflowRun

__version__ = "0.1.0"

_accessor.install()  # `df.agentnb`, once pandas is imported (agentnb does not import it)


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext agentnb`: register the magics (see `agentnb.magics`)."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext agentnb`: remove everything `load_ipython_extension` added."""
    from .magics import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "AgentCall",
    "AgentCallError",
    "AgentError",
    "AgentNotFoundError",
    "AgentOrchestrator",
    "AgentRegistry",
    "AgentResult",
    "AgentSpec",
    "AgentStream",
    "AgentnbError",
    "AnthropicBackend",
    "AsyncAgentOrchestrator",
    "Backend",
    "BackendError",
    "BackendRequest",
    "BackendResponse",
    "BudgetExceededError",
    "CacheError",
    "Config",
    "ConfigError",
    "GridResult",
    "InvalidAgentNameError",
    "PerformanceTracker",
    "PriceTable",
    "RateLimitError",
    "ResponseCache",
    "SchemaError",
    "SimulatedBackend",
    "SpeedupReport",
    "Step",
    "StepEvent",
    "StepResult",
    "TaskTooLongError",
    "Usage",
    "Workflow",
    "WorkflowError",
    "WorkflowRun",
    "WorkflowValidationError",
    "__version__",
    "amap",
    "compare_speedup",
    "default_orchestrator",
    "grid",
    "list_agents",
    "load_ipython_extension",
    "map",
    "prices",
    "unload_ipython_extension",
]
