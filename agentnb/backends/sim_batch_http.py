"""The simulator's Message Batches endpoints, as the API shapes them (served by `sim_http`).

- `POST /v1/messages/batches` with `{"requests": [{"custom_id", "params"}]}` (each `params` a
  non-streaming Messages body, checked as `POST /v1/messages` checks it) -> the `MessageBatch`;
- `GET /v1/messages/batches` (`limit` 1-1000, default 20; `after_id` / `before_id` cursors) ->
  `{"data", "has_more", "first_id", "last_id"}`, newest first;
- `GET /v1/messages/batches/{id}` and `POST /v1/messages/batches/{id}/cancel` -> the batch;
- `GET /v1/messages/batches/{id}/results` -> the results as JSON Lines
  (`application/x-jsonl`), streamed as they are made; its `results_url` names it once the batch
  has ended.
An unknown id is 404 (`not_found_error`); a body over 256 MB is 413; a bad request (no
requests, more than 100,000, a bad or repeated custom id, a bad `params`) is 400 naming it.

A request's `params` may carry the calling agent's name in `AGENT_FIELD`: the batch has no
per-request headers to carry it, and `AnthropicBackend` sends that field only to a transport
that asks for it (`SimulatorTransport.agentnb_agent_field`), never to the API. Without it a
batch's answers are those of `agent=""`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Generator
from datetime import UTC, datetime
from typing import Any

import httpx2
import orjson

from ..errors import BackendError, ConfigError
from .batch import MAX_BATCH_BYTES, BatchInfo, BatchRequest, BatchResult
from .sim_batches import SimBatches
from .sim_http import (
    _ERROR_TYPES,
    AGENT_FIELD,
    _InvalidRequest,
    _message_json,
    _parse_body,
    _rejected_id,
    error_response,
)
from .simulated import SimulatedBackend

__all__ = ["BATCHES_PATH", "handle_batch_request"]

#: The prefix of every batch endpoint's path.
BATCHES_PATH = "/v1/messages/batches"
_MAX_PAGE = 1000


async def handle_batch_request(
    backend: SimulatedBackend, request: httpx2.Request, *, sampling: bool
) -> httpx2.Response:
    """Answer one request to a batch endpoint from `backend.batches`.

    `sampling` False refuses sampling parameters in the requests' params (as `_parse_body`).
    """
    store = backend.batches
    method, path = request.method, request.url.path.rstrip("/")
    parts = path[len(BATCHES_PATH) :].strip("/").split("/") if path != BATCHES_PATH else []
    try:
        if not parts and method == "POST":
            return await _create(backend, request, sampling)
        if not parts and method == "GET":
            return _list(store, request)
        if len(parts) == 1 and method == "GET":
            return _batch_response(store.retrieve(parts[0]), request)
        if len(parts) == 2 and parts[1] == "cancel" and method == "POST":
            return _batch_response(store.cancel(parts[0]), request)
        if len(parts) == 2 and parts[1] == "results" and method == "GET":
            chunks = store.result_chunks(parts[0])
            return httpx2.Response(
                200,
                headers={
                    "request-id": _rejected_id(),
                    "content-type": "application/x-jsonl",
                    "content-disposition": f"attachment; filename*=utf-8''{parts[0]}_results.jsonl",
                },
                stream=_ResultLines(store, parts[0], chunks),
            )
    except BackendError as exc:
        return error_response(exc.status_code or 400, str(exc))
    except (ConfigError, OSError) as exc:  # its state_dir cannot be written or read
        return error_response(500, f"the simulator cannot keep batches: {exc}")
    return error_response(404, f"{method} {path}: not found")


async def _create(
    backend: SimulatedBackend, request: httpx2.Request, sampling: bool
) -> httpx2.Response:
    if len(request.content) > MAX_BATCH_BYTES:
        return error_response(413, f"a batch's body is at most {MAX_BATCH_BYTES // 2**20} MB")
    try:
        with backend.batches.timed():  # the simulator's own work
            requests = _parse_requests(orjson.loads(request.content), sampling)
    except _InvalidRequest as exc:
        return error_response(400, str(exc))
    except ValueError:  # JSON or UTF-8 decoding
        return error_response(400, "the request body is not valid JSON")
    return _batch_response(await backend.batch_create(requests), request)


def _parse_requests(body: Any, sampling: bool) -> list[BatchRequest]:
    if not isinstance(body, dict):
        raise _InvalidRequest("the request body must be a JSON object")
    raw = body.get("requests")
    if not isinstance(raw, list):
        raise _InvalidRequest("requests: Field required (a list)")
    requests: list[BatchRequest] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
            raise _InvalidRequest(f"requests.{i}.custom_id: Field required (a string)")
        params = item.get("params")
        if not isinstance(params, dict):
            raise _InvalidRequest(f"requests.{i}.params: Field required (an object)")
        agent = params.pop(AGENT_FIELD, "")
        try:
            parsed, streaming = _parse_body(params, sampling=sampling)
        except _InvalidRequest as exc:
            raise _InvalidRequest(f"requests.{i}.params.{exc}") from None
        if streaming:
            raise _InvalidRequest(f"requests.{i}.params.stream: a batch's requests cannot stream")
        if agent and isinstance(agent, str):
            parsed = parsed._replace(agent=agent)
        requests.append(BatchRequest(item["custom_id"], parsed))
    return requests


def _list(store: SimBatches, request: httpx2.Request) -> httpx2.Response:
    query = request.url.params
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= _MAX_PAGE:
        return error_response(400, f"limit: must be an integer from 1 to {_MAX_PAGE}")
    infos, more = store.list_batches(
        limit, after_id=query.get("after_id"), before_id=query.get("before_id")
    )
    data = [_batch_json(info, request) for info in infos]
    body = {
        "data": data,
        "has_more": more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
    return httpx2.Response(200, headers={"request-id": _rejected_id()}, json=body)


def _batch_response(info: BatchInfo, request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(
        200, headers={"request-id": _rejected_id()}, json=_batch_json(info, request)
    )


def _batch_json(info: BatchInfo, request: httpx2.Request) -> dict[str, Any]:
    """`info` as the API's `MessageBatch`; `results_url` on the server the client reached."""
    results_url = None
    if info.ended:
        host = request.headers.get("host") or request.url.netloc.decode("ascii")
        quoted = urllib.parse.quote(info.id, safe="")
        results_url = f"{request.url.scheme}://{host}{BATCHES_PATH}/{quoted}/results"
    return {
        "id": info.id,
        "type": "message_batch",
        "processing_status": info.status,
        "request_counts": info.counts._asdict(),
        "created_at": rfc3339(info.created_at),
        "ended_at": rfc3339(info.ended_at),
        "expires_at": rfc3339(info.expires_at),
        "cancel_initiated_at": rfc3339(info.cancel_initiated_at),
        "archived_at": None,
        "results_url": results_url,
    }


class _ResultLines(httpx2.AsyncByteStream):
    """A batch's results file, one JSON line per request, made chunk by chunk as it is read."""

    def __init__(
        self, store: SimBatches, batch_id: str, chunks: Generator[list[BatchResult], None, None]
    ) -> None:
        self._store = store
        self._prefix = f"msg_sim_{batch_id.removeprefix('msgbatch_sim_')[:12]}_"
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            with self._store.timed():
                lines = b"".join(map(self._line, chunk))
            yield lines

    def _line(self, result: BatchResult) -> bytes:
        outcome: dict[str, Any] = {"type": result.kind}
        if result.response is not None:
            message = _message_json(result.response)
            message["id"] = self._prefix + result.custom_id
            outcome["message"] = message
        elif result.error is not None:
            status = result.error.status_code or 500
            outcome["error"] = {
                "type": "error",
                "error": {
                    "type": _ERROR_TYPES.get(status, "api_error"),
                    "message": str(result.error),
                },
                "request_id": None,
            }
        return orjson.dumps(
            {"custom_id": result.custom_id, "result": outcome}, option=orjson.OPT_APPEND_NEWLINE
        )

    async def aclose(self) -> None:
        self._chunks.close()  # the requests file, when the client stops reading early


def rfc3339(when: float | None) -> str | None:
    """POSIX seconds as the API writes times (`2024-08-20T18:37:24.100435Z`), or None.

    Example:
        >>> rfc3339(0.0)
        '1970-01-01T00:00:00Z'
    """
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")
