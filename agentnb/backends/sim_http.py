"""The offline simulator served as an in-process Messages-API HTTP transport (JSON and SSE).

`simulator_transport(sim)` returns an `httpx2.MockTransport` whose handler answers
`POST /v1/messages` the way the API does: it validates the body and the credentials header,
runs the same simulation as `sim.create()` / `sim.stream()` (faults, quotas, latency and
prompt caching included) and replies with the API's JSON, error bodies (typed as the API types
them: `rate_limit_error`, `overloaded_error`, `api_error`, ...), or a `text/event-stream` whose
deltas arrive over time. Every response carries a `request-id`; every answer to a call (its
message, its stream, its error) carries the `anthropic-ratelimit-*` headers when the model's
class has limits (`SimulatedBackend(limits=...)`; a stream's say where the quota stood when it
began). A quota's 429 carries `retry-after` in whole seconds, the spend-limit 429 none. A
request refused before it is a call (404, 401, 400) has no rate-limit headers.
`POST /v1/messages/count_tokens` answers `{"input_tokens": N}`, the total a call would report.
A body whose `tool_choice` forces one of its `tools` is a structured call: the tool's
`input_schema` is the schema, and the answer a `tool_use` block of that tool (`stop_reason`
"tool_use"; streamed as `input_json_delta`s). The first user turn's text blocks but the last are
its shared `prefix` (as `AnthropicBackend` sends one).
The Message Batches endpoints (`/v1/messages/batches...`) are served by `sim_batch_http`.
A `connection` fault raises `httpx2.ConnectError`; a `timeout` fault hangs for `sim.hang_s`. So
the real `AnthropicBackend` and SDK code path can be exercised offline;
`agentnb.backends.sim_server` serves the same handler as a real HTTP server.

The API has no field for the agent's name, so `SimulatorTransport` asks for it in the
`x-agentnb-agent` header (percent-encoded) through its `agentnb_agent_header` attribute, and names
its answers `agentnb_identity = "simulated-http"` for the cache, and says whether its responses
carry rate-limit headers (`agentnb_reports_rate_limits`): `AnthropicBackend` reads these from
any transport (see its docstring) and so sends the header to transports that ask for it, never
to a real server. With it the simulation is the same as a direct call: same text, per-agent
`latencies`, `inject(agent=...)`. Other clients may omit it (the call then has `agent=""`).
A batch has no headers per request: there the name travels in each request's `params` as
`AGENT_FIELD`, which the transport asks for in `agentnb_agent_field` and the simulator removes.

Example:
    >>> import anthropic, httpx2
    >>> from agentnb.backends import SimulatedBackend
    >>> http = httpx2.AsyncClient(transport=simulator_transport(SimulatedBackend(latency_s=0)))
    >>> client = anthropic.AsyncAnthropic(
    ...     api_key="sk-test", base_url="http://sim", max_retries=0, http_client=http)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx2

from ..errors import BackendConnectionError, BackendError, BackendTimeoutError
from ..quota import RateLimits, rate_limit_headers
from ..schema import TOOL_NAME, AnswerSchema
from .base import BackendRequest, BackendResponse, Message, Usage
from .simulated import SimulatedBackend, SimulatedCall

__all__ = [
    "AGENT_FIELD",
    "AGENT_HEADER",
    "SimulatorTransport",
    "error_response",
    "handle_messages_request",
    "simulator_transport",
]

#: The request header carrying the agent's name to the simulator (percent-encoded).
AGENT_HEADER = "x-agentnb-agent"
#: The field of a batch request's `params` carrying the agent's name to the simulator.
AGENT_FIELD = "x_agentnb_agent"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}  # any other status: "api_error"
_MESSAGES = "/v1/messages"
_COUNT_TOKENS = "/v1/messages/count_tokens"
_BATCHES = "/v1/messages/batches"


# The API version the SDK 2.x sends drops the sampling parameters; older versions accept them.
_NO_SAMPLING_SINCE = "2026-10-21"
_OLD_API_VERSION = "2023-06-01"


class _InvalidRequest(Exception):
    """A request body the API would refuse with 400."""


class SimulatorTransport(httpx2.MockTransport):
    """An httpx2 transport answering Messages-API calls from `backend` (a `SimulatedBackend`).

    It describes itself to `AnthropicBackend`: answers are cached apart from the real API's
    (`agentnb_identity`), the agent's name is wanted in `AGENT_HEADER`, and responses carry
    rate-limit headers only when the simulator enforces limits (`agentnb_reports_rate_limits`).
    """

    agentnb_identity: str = "simulated-http"
    agentnb_agent_header: str | None = AGENT_HEADER
    agentnb_agent_field: str | None = AGENT_FIELD

    def __init__(self, backend: SimulatedBackend) -> None:
        self.backend = backend

        async def handler(request: httpx2.Request) -> httpx2.Response:
            return await handle_messages_request(backend, request)

        super().__init__(handler)

    @property
    def agentnb_reports_rate_limits(self) -> bool:
        """Whether responses may carry rate-limit headers (the simulator has `limits`)."""
        return self.backend.reports_rate_limits


def simulator_transport(backend: SimulatedBackend) -> SimulatorTransport:
    """An httpx2 transport that answers Messages-API calls from `backend`.

    Example:
        >>> transport = simulator_transport(SimulatedBackend(latency_s=0))
    """
    return SimulatorTransport(backend)


async def handle_messages_request(
    backend: SimulatedBackend, request: httpx2.Request
) -> httpx2.Response:
    """Answer one HTTP request as the Messages API would, using `backend`'s simulation.

    `POST /v1/messages` (JSON or SSE), `POST /v1/messages/count_tokens` and the Message
    Batches endpoints (`sim_batch_http`); anything else is 404.
    """
    path = request.url.path.rstrip("/")
    if path.startswith(_BATCHES):
        if not _has_credentials(request.headers):
            return error_response(401, "x-api-key header is required")
        from .sim_batch_http import handle_batch_request  # it imports this module

        version = request.headers.get("anthropic-version", _OLD_API_VERSION)
        return await handle_batch_request(backend, request, sampling=version < _NO_SAMPLING_SINCE)
    counting = path == _COUNT_TOKENS
    if request.method != "POST" or not (counting or path == _MESSAGES):
        return error_response(404, f"{request.method} {path or '/'}: not found")
    if not _has_credentials(request.headers):
        return error_response(401, "x-api-key header is required")
    try:
        body = json.loads(request.content)
        version = request.headers.get("anthropic-version", _OLD_API_VERSION)
        sim_request, streaming = _parse_body(
            body, sampling=version < _NO_SAMPLING_SINCE, counting=counting
        )
        tool = _forced_tool(body) if sim_request.schema is not None else None
        agent = urllib.parse.unquote(request.headers.get(AGENT_HEADER, ""))
        if agent:
            sim_request = sim_request._replace(agent=agent)
    except _InvalidRequest as exc:
        return error_response(400, str(exc))
    except ValueError:  # JSON or UTF-8 decoding
        return error_response(400, "the request body is not valid JSON")
    if counting:
        tokens = await backend.count_tokens(sim_request)
        return httpx2.Response(
            200, headers={"request-id": _rejected_id()}, json={"input_tokens": tokens}
        )
    try:
        call = await backend.begin(sim_request, streamed=streaming)
        if not streaming:
            response = await call.wait()
    except BackendConnectionError as exc:
        raise httpx2.ConnectError(str(exc), request=request) from None
    except BackendTimeoutError as exc:
        raise httpx2.ReadTimeout(str(exc), request=request) from None
    except BackendError as exc:
        return _error_for(exc)
    headers = {"request-id": call.response.request_id or ""}
    if streaming:  # the headers go first: they say where the quota stood when it began
        limits = backend.rate_limits(sim_request.model) if backend.reports_rate_limits else None
        if limits is not None:
            headers.update(rate_limit_headers(limits))
        headers["content-type"] = "text/event-stream"
        headers["cache-control"] = "no-cache"
        return httpx2.Response(200, headers=headers, stream=_EventStream(_events(call, tool)))
    if response.limits is not None:
        headers.update(rate_limit_headers(response.limits))
    return httpx2.Response(200, headers=headers, json=_message_json(response, tool=tool))


# -- request side ---------------------------------------------------------------------------


def _has_credentials(headers: httpx2.Headers) -> bool:
    # The SDK sends `Authorization: Bearer <key>`; other clients send `x-api-key`.
    if headers.get("x-api-key"):
        return True
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def _parse_body(
    body: Any, *, sampling: bool = True, counting: bool = False
) -> tuple[BackendRequest, bool]:
    """Validate a Messages-API body and turn it into a `BackendRequest` (and the stream flag).

    `sampling` False refuses `temperature`/`top_p`/`top_k`, as API versions from 2026-10-21 do.
    `counting`: a `count_tokens` body, which has no `max_tokens`.
    """
    if not isinstance(body, dict):
        raise _InvalidRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _InvalidRequest("model: Field required")
    max_tokens = body.get("max_tokens", 1 if counting else None)
    if max_tokens is None:
        raise _InvalidRequest("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _InvalidRequest("max_tokens: must be an integer of at least 1")
    raw_messages = body.get("messages")
    if raw_messages is None:
        raise _InvalidRequest("messages: Field required")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _InvalidRequest("messages: must be a non-empty list")
    turns = [_parse_message(i, m) for i, m in enumerate(raw_messages)]
    if turns[-1].role != "user":
        raise _InvalidRequest("messages: the simulator needs the last message to be from the user")
    prefix, opening, marked = _prefix_of(raw_messages[0])
    if prefix:
        turns[0] = Message(turns[0].role, opening)
    system, cached = _parse_system(body.get("system"))
    schema = _parse_tools(body)
    for name in ("temperature", "top_p", "top_k"):
        if not sampling and name in body:
            raise _InvalidRequest(f"{name}: Extra inputs are not permitted")
    temperature = body.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, (int, float))
        or isinstance(temperature, bool)
        or not 0.0 <= temperature <= 1.0
    ):
        raise _InvalidRequest("temperature: must be a number between 0 and 1")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _InvalidRequest("stream: must be a boolean")
    stop_sequences = body.get("stop_sequences", [])
    if not isinstance(stop_sequences, list) or not all(
        isinstance(s, str) and s for s in stop_sequences
    ):
        raise _InvalidRequest("stop_sequences: must be a list of non-empty strings")
    request = BackendRequest(
        model=model,
        task=turns[-1].content,
        system=system,
        max_tokens=max_tokens,
        temperature=None if temperature is None else float(temperature),
        history=tuple(turns[:-1]),
        prompt_caching=cached or marked or bool(body.get("cache_control")),
        stop_sequences=tuple(stop_sequences),
        prefix=prefix,
        schema=schema,
    )
    return request, stream


def _prefix_of(first: dict[str, Any]) -> tuple[str, str, bool]:
    """The first turn's shared prefix (its text blocks but the last), the rest, and whether a
    block of it asks for caching (the turn is checked already)."""
    content = first["content"]
    if isinstance(content, str) or len(content) < 2:
        return "", "", False
    texts = [block["text"] for block in content]
    marked = any(block.get("cache_control") for block in content)
    return "".join(texts[:-1]), texts[-1], marked


def _parse_tools(body: dict[str, Any]) -> AnswerSchema | None:
    """The schema of the tool `tool_choice` forces, if it forces one (else the simulator
    answers in prose, as a model that chose no tool)."""
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools
    ):
        raise _InvalidRequest("tools: must be a list of tools, each with a name")
    name = _forced_tool(body)
    if name is None:
        return None
    for i, tool in enumerate(tools):
        if tool["name"] == name:
            try:
                return AnswerSchema.of(tool.get("input_schema"))
            except ValueError as exc:
                raise _InvalidRequest(f"tools.{i}.input_schema: must be {exc}") from None
    raise _InvalidRequest(f"tool_choice: no tool is named {name!r}")


def _forced_tool(body: dict[str, Any]) -> str | None:
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool":
        name = choice.get("name")
        if isinstance(name, str) and name:
            return name
    return None


def _parse_message(index: int, raw: Any) -> Message:
    if not isinstance(raw, dict):
        raise _InvalidRequest(f"messages.{index}: must be an object")
    role = raw.get("role")
    if role not in ("user", "assistant"):
        raise _InvalidRequest(f"messages.{index}.role: must be 'user' or 'assistant'")
    text, _ = _text_of(raw.get("content"), f"messages.{index}.content")
    return Message(role=role, content=text)


def _parse_system(raw: Any) -> tuple[str, bool]:
    if raw is None:
        return "", False
    return _text_of(raw, "system")


def _text_of(content: Any, where: str) -> tuple[str, bool]:
    """The text of a string or a list of text blocks, and whether any block asks for caching."""
    if isinstance(content, str):
        return content, False
    if not isinstance(content, list):
        raise _InvalidRequest(f"{where}: must be a string or a list of content blocks")
    parts: list[str] = []
    cached = False
    for i, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _InvalidRequest(f"{where}.{i}: the simulator accepts text blocks only")
        text = block.get("text")
        if not isinstance(text, str):
            raise _InvalidRequest(f"{where}.{i}.text: Field required")
        parts.append(text)
        cached = cached or bool(block.get("cache_control"))
    return "".join(parts), cached


# -- response side --------------------------------------------------------------------------


def _usage_json(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }


def _message_json(
    response: BackendResponse, *, started: bool = False, tool: str | None = None
) -> dict[str, Any]:
    """The API's message for `response`; a structured answer as a `tool_use` of `tool`."""
    request_id = response.request_id or "req_sim"
    usage = _usage_json(response.usage)
    if started:  # as in the API's message_start: no content yet, output not counted
        usage["output_tokens"] = 1
    if response.data is None:
        block: dict[str, Any] = {"type": "text", "text": response.text}
    else:
        block = {**_tool_block(response, tool), "input": response.data}
    return {
        "id": "msg_" + request_id.removeprefix("req_"),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": [] if started else [block],
        "stop_reason": None if started else response.stop_reason,
        "stop_sequence": None if started else response.stop_sequence,
        "usage": usage,
    }


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _EventStream(httpx2.AsyncByteStream):
    """A response body that closes its generator when the client closes the response early."""

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        self._events = events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._events:
            yield chunk

    async def aclose(self) -> None:
        await self._events.aclose()


def _tool_block(response: BackendResponse, tool: str | None) -> dict[str, Any]:
    request_id = response.request_id or "req_sim"
    return {
        "type": "tool_use",
        "id": "toolu_" + request_id.removeprefix("req_"),
        "name": tool or TOOL_NAME,
    }


async def _events(call: SimulatedCall, tool: str | None = None) -> AsyncGenerator[bytes, None]:
    """The SSE body of a streamed call; each delta is sent when the simulation produces it (a
    structured answer's as `input_json_delta`s of its `tool_use` block)."""
    response = call.response
    yield _sse(
        "message_start", {"type": "message_start", "message": _message_json(response, started=True)}
    )
    if response.data is None:
        start: dict[str, Any] = {"type": "text", "text": ""}
    else:
        start = {**_tool_block(response, tool), "input": {}}
    yield _sse(
        "content_block_start", {"type": "content_block_start", "index": 0, "content_block": start}
    )
    yield _sse("ping", {"type": "ping"})
    async with contextlib.aclosing(call.deltas()) as deltas:
        async for text in deltas:
            delta = (
                {"type": "text_delta", "text": text}
                if response.data is None
                else {"type": "input_json_delta", "partial_json": text}
            )
            yield _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": delta},
            )
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": response.stop_reason,
                "stop_sequence": response.stop_sequence,
            },
            "usage": _usage_json(response.usage),
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


def _rejected_id() -> str:
    """A request id for a response no simulated call stands behind (404, 401, 400...)."""
    return f"req_sim_x{next(_unnumbered):07d}"


_unnumbered = itertools.count(1)


def error_response(
    status: int,
    message: str,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
    limits: RateLimits | None = None,
) -> httpx2.Response:
    """An error as the API sends it: its typed JSON body, `request-id`, and the `retry-after`
    and rate-limit headers when given."""
    error_type = _ERROR_TYPES.get(status, "api_error")
    headers = {"request-id": request_id or _rejected_id()}
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
    if limits is not None:
        headers.update(rate_limit_headers(limits))
    body = {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": headers["request-id"],
    }
    return httpx2.Response(status, headers=headers, json=body)


def _error_for(exc: BackendError) -> httpx2.Response:
    return error_response(
        exc.status_code or 500,
        str(exc),
        request_id=exc.request_id,
        retry_after=getattr(exc, "retry_after", None),
        limits=exc.limits,
    )
