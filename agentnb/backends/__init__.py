"""Model backends: the Anthropic API and the offline simulator, behind one interface.

`make_backend(config)` picks one from `config.resolved_backend`. Importing this package is cheap:
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
from .simulated import FAULT_KINDS, SIMULATED_NOTE, CallRecord, SimulatedBackend, SimulatedCall

if TYPE_CHECKING:
    from ..config import Config
    from .sim_http import SimulatorTransport, simulator_transport

__all__ = [
    "FAULT_KINDS",
    "SIMULATED_NOTE",
    "AnthropicBackend",
    "Backend",
    "BackendRequest",
    "BackendResponse",
    "CallRecord",
    "Message",
    "SimulatedBackend",
    "SimulatedCall",
    "SimulatorTransport",
    "Usage",
    "make_backend",
    "parse_retry_after",
    "simulator_transport",
]


def make_backend(config: Config) -> Backend:
    """The backend `config` asks for: the Anthropic API if it resolves to it, else the simulator."""
    if config.resolved_backend == "anthropic":
        return AnthropicBackend.from_config(config)
    return SimulatedBackend.from_config(config)


def __getattr__(name: str) -> Any:
    # httpx2 costs ~0.1 s to import; only the transport needs it.
    if name in ("simulator_transport", "SimulatorTransport"):
        from . import sim_http

        return getattr(sim_http, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
