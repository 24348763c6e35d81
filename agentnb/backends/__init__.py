"""Model backends: the Anthropic API and the offline simulator, behind one interface.

`make_backend(config)` picks one from `config.resolved_backend` in the `BACKENDS` registry
(`register_backend` adds one). Importing this package is cheap:
the SDK (`anthropic`) is imported on the first API call, and `httpx2` only when
the simulator's transport is first used.

Example:
    >>> from agentnb.config import Config
    >>> make_backend(Config.load(backend="simulated", env={})).label
    'simulated'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .anthropic import AnthropicBackend, parse_retry_after
from .base import Backend, BackendRequest, BackendResponse, Message, Usage
from .registry import BACKENDS, BackendFactory, make_backend, register_backend
from .simulated import (
    FAULT_KINDS,
    SIMULATED_NOTE,
    CallLog,
    CallRecord,
    SimulatedBackend,
    SimulatedCall,
)

if TYPE_CHECKING:
    from .sim_http import SimulatorTransport, simulator_transport

__all__ = [
    "BACKENDS",
    "FAULT_KINDS",
    "SIMULATED_NOTE",
    "AnthropicBackend",
    "Backend",
    "BackendFactory",
    "BackendRequest",
    "BackendResponse",
    "CallLog",
    "CallRecord",
    "Message",
    "SimulatedBackend",
    "SimulatedCall",
    "SimulatorTransport",
    "Usage",
    "make_backend",
    "parse_retry_after",
    "register_backend",
    "simulator_transport",
]


def __getattr__(name: str) -> Any:
    # httpx2 costs ~0.1 s to import; only the transport needs it.
    if name in ("simulator_transport", "SimulatorTransport"):
        from . import sim_http

        return getattr(sim_http, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
