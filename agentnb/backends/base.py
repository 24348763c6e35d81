"""The backend interface and the request/response types every backend shares.

A backend turns one `BackendRequest` into one `BackendResponse` (`create`), or into a stream of
text deltas followed by the final `BackendResponse` (`stream`). It raises only the
`agentnb.errors.BackendError` family and never retries: retries, timeouts and caching belong to
the orchestrator, so that every attempt is visible in the metrics.

Example:
    >>> import asyncio
    >>> from agentnb.backends import SimulatedBackend, BackendRequest
    >>> backend = SimulatedBackend(latency_s=0)
    >>> req = BackendRequest(model="claude-sonnet-5-5", task="Say hi", agent="writer")
    >>> asyncio.run(backend.create(req)).usage.output_tokens > 0
    True
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from ..errors import BadRequestError

if TYPE_CHECKING:
    from ..quota import RateLimits
    from ..schema import AnswerSchema
    from .batch import BatchInfo, BatchRequest, BatchResult

__all__ = [
    "Backend",
    "BackendRequest",
    "BackendResponse",
    "Message",
    "Usage",
]


class Usage(NamedTuple):
    """Token counts of one call, including prompt-cache reads and writes.

    Requests, responses and usages are named tuples, not frozen dataclasses: one of each is
    made per call, and a tuple is built in a third of the time (immutable and hashable alike).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(*(int(data.get(k, 0) or 0) for k in cls._fields))


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation."""

    role: Literal["user", "assistant"]
    content: str


class BackendRequest(NamedTuple):
    """Everything a backend needs for one Messages-API call.

    `task` is the user turn; `history` holds earlier turns, if any. `agent` is carried so the
    simulator can answer in character and logs can name the caller; it is not sent to the API.
    `stop_sequences` end the answer where the model would write one of them (the sequence itself
    is not part of the text; `stop_reason` is then "stop_sequence").

    `prefix` opens the conversation's first user turn (the task, or `history[0]`): text many
    calls share, sent as a block of its own, marked for prompt caching when `prompt_caching` is
    on; `messages` leaves it out. `schema` asks for a structured answer: one tool
    (`agentnb.schema.TOOL_NAME`) the model must use, whose input is the answer
    (`BackendResponse.data`). `sample` tells repeats of one request apart (a grid's repeat
    index): not sent to the API, where a new sample is simply a new call; the simulator varies
    its answer with it.
    """

    model: str
    task: str
    system: str = ""
    agent: str = ""
    max_tokens: int = 1024
    temperature: float | None = None
    history: tuple[Message, ...] = ()
    prompt_caching: bool = False
    stop_sequences: tuple[str, ...] = ()
    prefix: str = ""
    schema: AnswerSchema | None = None
    sample: int = 0

    @property
    def messages(self) -> list[dict[str, str]]:
        """The Messages-API `messages` list: history, then the task as the last user turn (the
        `prefix` left out)."""
        turns = [{"role": m.role, "content": m.content} for m in self.history]
        turns.append({"role": "user", "content": self.task})
        return turns


class BackendResponse(NamedTuple):
    """The final answer of one call.

    `stop_sequence` is the request's stop sequence that ended the answer, when `stop_reason` is
    "stop_sequence". `limits` is what the response's rate-limit headers said of the quota.
    `data` is a structured answer's fields (the input of the schema's tool; `text` is then its
    JSON), None for an answer in prose.
    """

    text: str
    model: str
    stop_reason: str | None
    usage: Usage = Usage()
    backend: str = ""
    request_id: str | None = None
    stop_sequence: str | None = None
    limits: RateLimits | None = None
    data: dict[str, Any] | None = None


class Backend(abc.ABC):
    """A source of model answers: the Anthropic API or the offline simulator.

    Subclasses set `kind` ("anthropic", "simulated", ...), the family of backend; the cache key
    records `cache_identity`, which a subclass narrows when one kind can reach different sources
    of answers (another server, the simulator behind the SDK).
    """

    kind: ClassVar[str] = "abstract"

    @abc.abstractmethod
    async def create(self, request: BackendRequest) -> BackendResponse:
        """Make one call and return its final response."""

    @abc.abstractmethod
    def stream(self, request: BackendRequest) -> AsyncIterator[str | BackendResponse]:
        """Yield text deltas (`str`) as they arrive, then exactly one final `BackendResponse`."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections; the backend must not be used afterwards."""

    # -- Message Batches (`agentnb.backends.batch`): a backend that has them overrides these --
    @property
    def supports_batches(self) -> bool:
        """Whether this backend can run Message Batches (the `batch_*` methods)."""
        return type(self).batch_create is not Backend.batch_create

    async def batch_create(self, requests: Sequence[BatchRequest]) -> BatchInfo:
        """Submit one batch (at most `MAX_BATCH_REQUESTS` requests, custom ids unique and
        following `CUSTOM_ID`) and return it as created."""
        raise BadRequestError(f"the {self.kind} backend has no Message Batches")

    async def batch_retrieve(self, batch_id: str) -> BatchInfo:
        """The batch `batch_id` now (`NotFoundError` for an unknown id)."""
        raise BadRequestError(f"the {self.kind} backend has no Message Batches")

    async def batch_cancel(self, batch_id: str) -> BatchInfo:
        """Ask the provider to cancel `batch_id` (requests not yet processed end `canceled`)."""
        raise BadRequestError(f"the {self.kind} backend has no Message Batches")

    async def batch_list(self, limit: int = 100) -> list[BatchInfo]:
        """The most recent batches, newest first."""
        raise BadRequestError(f"the {self.kind} backend has no Message Batches")

    def batch_results(self, batch_id: str) -> AsyncIterator[BatchResult]:
        """The results of an ended batch, one per request, read as a stream (never whole)."""
        raise BadRequestError(f"the {self.kind} backend has no Message Batches")

    async def count_tokens(self, request: BackendRequest) -> int | None:
        """The input tokens `request` would count (the API's `count_tokens`), or None when this
        backend cannot say (then callers use a local estimate)."""
        return None

    @property
    def quota_scope(self) -> str:
        """Who shares a quota with this backend: calls with the same scope and model class count
        against one set of rate limits (so kernels and machines pace themselves as one). A
        scope starting with "local:" is this process's alone (its buckets are never shared)."""
        return self.cache_identity

    @property
    def reports_rate_limits(self) -> bool:
        """Whether responses may carry rate-limit headers. When False the admission stage never
        holds a first request back to learn the limits (there is nothing to learn)."""
        return True

    @property
    def cache_identity(self) -> str:
        """What the cache key records as the backend: answers are never shared across identities.

        Example:
            >>> from agentnb.backends import SimulatedBackend
            >>> SimulatedBackend().cache_identity
            'simulated'
        """
        return self.kind

    @property
    def label(self) -> str:
        """A short human label for displays ("simulated", "claude")."""
        return self.kind
