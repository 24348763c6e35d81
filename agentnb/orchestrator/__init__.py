"""The call pipeline: run agents one at a time, many at once, as streams and as workflows.

prepare (`prepare.py`) -> cache (`agentnb.cache`, single-flight) -> validation of a structured
answer (`structured.py`: checked, repaired once, never cached invalid) -> budget (`budget.py`: the
call's worst case held while it runs) -> attempts (`attempts.py`: retries, backoff, timeouts) ->
admission inside each attempt (`admission.py`) -> the backend. `AsyncAgentOrchestrator`
(`core.py`) is the async core; `AgentOrchestrator` (`facade.py`) its blocking twin; `AgentStream`
(`stream.py`) a streamed answer; `AgentCall` (`calls.py`) one call of a batch; `Estimate`
(`estimate.py`) what a job would cost and take, before it runs. Options travel as one
`agentnb.options.CallOptions`. With `batch=True` calls go as Message Batches (`batching.py`,
followed and collected by `follow.py`, recorded in the ledger, `ledger.py`): a `BatchJob`.
"""

from __future__ import annotations

from typing import Any

from .admission import Admission, ConcurrencyLimit, Unlimited
from .attempts import Deadline, Retrying, bounded
from .batching import BatchJob
from .budget import Budget, Spend, worst_cost
from .calls import AgentCall, Tags
from .core import AsyncAgentOrchestrator
from .estimate import Estimate
from .facade import AgentOrchestrator, BlockingBatchJob, current_default, default_orchestrator
from .follow import BatchCollection
from .ledger import BatchLedger
from .prepare import PreparedCall, Preparer
from .stream import AgentStream
from .tokens import estimate_input_tokens


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
    "BatchCollection",
    "BatchJob",
    "BatchLedger",
    "BlockingBatchJob",
    "Budget",
    "ConcurrencyLimit",
    "Deadline",
    "Estimate",
    "PreparedCall",
    "Preparer",
    "Retrying",
    "Spend",
    "Tags",
    "Unlimited",
    "bounded",
    "current_default",
    "default_orchestrator",
    "estimate_input_tokens",
    "worst_cost",
]
