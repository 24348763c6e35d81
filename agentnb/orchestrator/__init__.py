"""The call pipeline: run agents one at a time, many at once, as streams and as workflows.

prepare (`prepare.py`) -> cache (`agentnb.cache`, single-flight) -> attempts (`attempts.py`:
retries, backoff, timeouts) -> admission inside each attempt (`admission.py`) -> the backend.
`AsyncAgentOrchestrator` (`core.py`) is the async core; `AgentOrchestrator` (`facade.py`) its
blocking twin; `AgentStream` (`stream.py`) a streamed answer; `AgentCall` (`calls.py`) one call
of a batch. Options travel as one `agentnb.options.CallOptions`.
"""

from __future__ import annotations

from typing import Any

from .admission import Admission, ConcurrencyLimit, Unlimited
from .attempts import Deadline, Retrying, bounded
from .calls import AgentCall, Tags
from .core import AsyncAgentOrchestrator
from .facade import AgentOrchestrator, current_default, default_orchestrator
from .prepare import PreparedCall, Preparer
from .stream import AgentStream


def __getattr__(name: str) -> Any:
    # `_default` lives in `facade`; read it there so it is never a stale copy.
    if name == "_default":
        from . import facade

        return facade._default
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Admission",
    "AgentCall",
    "AgentOrchestrator",
    "AgentStream",
    "AsyncAgentOrchestrator",
    "ConcurrencyLimit",
    "Deadline",
    "PreparedCall",
    "Preparer",
    "Retrying",
    "Tags",
    "Unlimited",
    "bounded",
    "current_default",
    "default_orchestrator",
]
