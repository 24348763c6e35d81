"""The Message Batches interface every backend that has one shares, and the API's batch rules.

A batch is up to `MAX_BATCH_REQUESTS` requests (`MAX_BATCH_BYTES` of JSON) sent at once, each
named by a custom id (`CUSTOM_ID`: 1 to 64 characters of `[A-Za-z0-9_-]`, unique in the batch),
processed by the provider within 24 hours at half the price; its results are read later as a
stream, one `BatchResult` per request, in no particular order. A backend offers batches by
overriding the `batch_*` methods of `agentnb.backends.Backend` (`supports_batches` is then True):
the SDK backend through `client.messages.batches`, the simulator natively.

Example:
    >>> check_custom_id("call-0001")
    'call-0001'
    >>> BatchCounts(processing=2).total
    2
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

from ..errors import BackendError, BadRequestError
from .base import BackendRequest, BackendResponse

__all__ = [
    "BATCH_STATUSES",
    "CUSTOM_ID",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_REQUESTS",
    "RESULT_KINDS",
    "BatchCounts",
    "BatchInfo",
    "BatchRequest",
    "BatchResult",
    "check_custom_id",
]

#: The most requests one batch may hold, and the most bytes its JSON body may take (the API's).
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
#: A custom id: 1 to 64 characters of letters, digits, `_` and `-`, unique within its batch.
CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: A batch's `processing_status`, as the API says it.
BATCH_STATUSES = ("in_progress", "canceling", "ended")
#: How one request of a batch ended, as the API says it.
RESULT_KINDS = ("succeeded", "errored", "canceled", "expired")

BatchStatus = Literal["in_progress", "canceling", "ended"]
ResultKind = Literal["succeeded", "errored", "canceled", "expired"]


def check_custom_id(custom_id: str) -> str:
    """`custom_id` if it follows the API's rule, else `BadRequestError` naming it."""
    if not CUSTOM_ID.fullmatch(custom_id):
        raise BadRequestError(
            f"custom_id {custom_id[:80]!r} must be 1 to 64 characters of letters, digits, "
            "'_' and '-'"
        )
    return custom_id


class BatchRequest(NamedTuple):
    """One request of a batch: its custom id and the request itself."""

    custom_id: str
    request: BackendRequest


class BatchCounts(NamedTuple):
    """How many requests of a batch are in each state (`request_counts`)."""

    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @property
    def total(self) -> int:
        return sum(self)


class BatchInfo(NamedTuple):
    """A batch as the provider describes it; times are POSIX seconds (None: not yet)."""

    id: str
    status: BatchStatus
    counts: BatchCounts
    created_at: float
    ended_at: float | None = None
    expires_at: float | None = None
    cancel_initiated_at: float | None = None

    @property
    def ended(self) -> bool:
        return self.status == "ended"


class BatchResult(NamedTuple):
    """How one request of a batch ended: `response` when it succeeded, `error` when it errored
    (a `BackendError` whose `retryable` says whether trying again may help), neither when it
    was canceled or expired."""

    custom_id: str
    kind: ResultKind
    response: BackendResponse | None = None
    error: BackendError | None = None
