"""Message Batches through the SDK (`client.messages.batches`), for `AnthropicBackend`.

Each request's params are those `AnthropicBackend.create` sends; results are read from the
API's JSON Lines as they arrive and mapped to `BatchResult`s (an errored request's error type
becomes the matching `BackendError`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BadRequestError, error_for_status
from .anthropic_errors import STATUS_OF_ERROR_TYPE
from .batch import BatchCounts, BatchInfo, BatchRequest, BatchResult

if TYPE_CHECKING:
    from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

    from .anthropic import AnthropicBackend

__all__ = ["batch_info", "cancel", "create", "listed", "results", "retrieve"]


async def create(backend: AnthropicBackend, requests: Sequence[BatchRequest]) -> BatchInfo:
    """Submit a batch; each request's params are those `create` sends (the API checks
    them, the custom ids and the batch's size)."""
    client = backend._client or await backend._get_client()
    body: list[Any] = [
        {"custom_id": custom_id, "params": backend._params(request, batched=True)}
        for custom_id, request in requests
    ]
    try:
        batch = await client.messages.batches.create(requests=body)
    except Exception as exc:
        raise backend._translated(exc) from None
    return batch_info(batch)


async def retrieve(backend: AnthropicBackend, batch_id: str) -> BatchInfo:
    client = backend._client or await backend._get_client()
    try:
        batch = await client.messages.batches.retrieve(batch_id)
    except Exception as exc:
        raise backend._translated(exc) from None
    return batch_info(batch)


async def cancel(backend: AnthropicBackend, batch_id: str) -> BatchInfo:
    client = backend._client or await backend._get_client()
    try:
        batch = await client.messages.batches.cancel(batch_id)
    except Exception as exc:
        raise backend._translated(exc) from None
    return batch_info(batch)


async def listed(backend: AnthropicBackend, limit: int = 100) -> list[BatchInfo]:
    client = backend._client or await backend._get_client()
    infos: list[BatchInfo] = []
    try:
        async for batch in client.messages.batches.list(limit=max(1, min(limit, 1000))):
            if len(infos) >= limit:
                break
            infos.append(batch_info(batch))
    except Exception as exc:
        raise backend._translated(exc) from None
    return infos


async def results(backend: AnthropicBackend, batch_id: str) -> AsyncGenerator[BatchResult, None]:
    """The results of an ended batch, read from the API's JSON Lines as they arrive."""
    import anthropic

    client = backend._client or await backend._get_client()
    try:
        lines = await client.messages.batches.results(batch_id)
    except anthropic.APIError as exc:
        raise backend._translated(exc) from None
    except anthropic.AnthropicError:  # the SDK's own: the batch has no results_url yet
        raise BadRequestError(
            f"batch {batch_id} has not ended yet: its results are not ready"
        ) from None
    try:
        async for line in lines:
            yield _result(backend, line)
    except Exception as exc:
        raise backend._translated(exc) from None
    finally:
        await lines.close()


def _result(backend: AnthropicBackend, line: MessageBatchIndividualResponse) -> BatchResult:
    result = line.result
    if result.type == "succeeded":
        return BatchResult(
            line.custom_id, "succeeded", backend._response(result.message, None, None)
        )
    if result.type == "errored":
        error = result.error.error
        error_type = str(error.type)
        status = STATUS_OF_ERROR_TYPE.get(error_type, 500)
        failure = error_for_status(
            status,
            backend._scrub(f"Anthropic API error in a batch ({error_type}): {error.message}"),
            request_id=result.error.request_id,
        )
        return BatchResult(line.custom_id, "errored", error=failure)
    return BatchResult(line.custom_id, result.type)


def batch_info(batch: MessageBatch) -> BatchInfo:
    """The SDK's `MessageBatch` as a `BatchInfo`."""
    counts = batch.request_counts

    def seconds(when: _dt.datetime | None) -> float | None:
        return None if when is None else when.timestamp()

    return BatchInfo(
        batch.id,
        batch.processing_status,
        BatchCounts(
            counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired
        ),
        batch.created_at.timestamp(),
        seconds(batch.ended_at),
        seconds(batch.expires_at),
        seconds(batch.cancel_initiated_at),
    )
