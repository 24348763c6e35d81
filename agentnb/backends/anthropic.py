"""The Anthropic Messages API as a backend, through the official async SDK.

The `AsyncAnthropic` client is made on first use (so constructing the backend, e.g. when the
extension loads, imports nothing heavy and binds to the loop that first calls it), in a worker
thread (importing the SDK and building the client take seconds the first time: the event loop
keeps running meanwhile), with `max_retries=0`: retries belong to the orchestrator. Every
`anthropic.*` error, and any `httpx2` error that leaks past the SDK, is translated into the
`agentnb.errors.BackendError` family; the API key is never shown in a repr, a message or a log
line. Every response's `anthropic-ratelimit-*` headers become its `BackendResponse.limits` (an
error's `limits`), and a 429 whose message says the spend limit is reached a `SpendLimitError`.
A structured call (`request.schema`) sends one tool that `tool_choice` forces; the `tool_use`
input of the answer becomes `BackendResponse.data` and its JSON the text. A request's `prefix`
is the first text block of its first user turn, marked `cache_control` when prompt caching is
on (`anthropic_blocks`).
A forked child (`agentnb._fork`) makes a client of its own on its own loop: the parent's
connection pool is left alone, never used or closed there (an `http_client` passed in is the
caller's, and is shared as it is).

Example:
    >>> backend = AnthropicBackend(api_key="sk-ant-...")
    >>> "sk-ant" in repr(backend)
    False
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .._fork import abandon, at_fork_in_child
from .._redact import protect
from ..config import Secret
from ..errors import (
    AuthenticationError,
    ServerError,
)
from ..quota import RateLimits, parse_rate_limits
from ..schema import answer_text
from . import anthropic_batches as _batches
from .anthropic_blocks import open_with, tool_input, tool_params
from .anthropic_errors import parse_retry_after, translate
from .base import Backend, BackendRequest, BackendResponse, Usage
from .batch import BatchInfo, BatchRequest, BatchResult

if TYPE_CHECKING:
    import httpx2
    from anthropic import AsyncAnthropic
    from anthropic.types import Message as SDKMessage
    from anthropic.types import TextBlockParam

    from ..config import Config

__all__ = ["AnthropicBackend", "parse_retry_after"]

_NEEDS_STREAMING = "Streaming is required"
_log = logging.getLogger(__name__)
_DEFAULT_BASE_URL = "https://api.anthropic.com"  # the SDK's default


class AnthropicBackend(Backend):
    """Calls Claude through `anthropic.AsyncAnthropic`; see the module docstring.

    `api_key` None lets the SDK find credentials itself (`ANTHROPIC_API_KEY`, profiles).
    `http_client` or `transport` replace the SDK's HTTP layer (tests use the simulator's
    transport). `prompt_caching` marks the system prompt with `cache_control` when the request
    also asks for it.

    A transport may describe the server it reaches with two optional attributes, read from
    `transport`, else from `http_client` or the transport inside it:
    - `agentnb_identity: str` becomes `cache_identity`, so that its answers and the real API's
      are never served for one another (the simulator's transport says "simulated-http");
    - `agentnb_agent_header: str | None` names a request header in which it wants the calling
      agent's name (percent-encoded); no such header is sent otherwise, so never to the API;
    - `agentnb_agent_field: str | None` names a field of a batch request's `params` in which it
      wants the agent's name (a batch has no headers per request); never sent otherwise, so
      a batch sent to the API carries no agent names;
    - `agentnb_reports_rate_limits: bool` False says its responses never carry rate-limit
      headers (`reports_rate_limits`), so there is nothing to learn from them.
    """

    kind: ClassVar[str] = "anthropic"

    def __init__(
        self,
        *,
        api_key: Secret | str | None = None,
        base_url: str | None = None,
        http_client: httpx2.AsyncClient | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        prompt_caching: bool = True,
    ) -> None:
        if http_client is not None and transport is not None:
            raise ValueError("pass http_client or transport, not both")
        self._api_key = Secret(api_key) if isinstance(api_key, str) else api_key
        self.base_url = base_url
        self.prompt_caching = prompt_caching
        self._http_client = http_client
        self._transport = transport
        self._client: AsyncAnthropic | None = None
        self._client_lock = asyncio.Lock()
        self._warned_temperature = False
        self._quota_scope: str | None = None
        header = self._described("agentnb_agent_header")
        self._agent_header = header if isinstance(header, str) and header else None
        field = self._described("agentnb_agent_field")
        self._agent_field = field if isinstance(field, str) and field else None
        # A transport that says its responses carry none: their headers are not even looked at.
        self._limit_headers = self._described("agentnb_reports_rate_limits") is not False
        at_fork_in_child(self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        # The client's connections and loop are the parent's; its finaliser would close them
        # from here, so it is kept as it is and the child's first call makes a new one.
        abandon(self._client)
        self._client = None
        self._client_lock = asyncio.Lock()  # maybe held, and bound to the parent's loop

    @classmethod
    def from_config(cls, cfg: Config) -> AnthropicBackend:
        """A backend using the configured key, base URL and prompt-caching switch."""
        return cls(api_key=cfg.api_key, base_url=cfg.base_url, prompt_caching=cfg.prompt_caching)

    @property
    def label(self) -> str:
        return "claude"

    @property
    def cache_identity(self) -> str:
        """`anthropic` for the public API, `anthropic@<url>` for another server, or the
        transport's own `agentnb_identity` (`simulated-http` for the simulator's), so that
        answers from a proxy, a gateway or the simulator are never served to a call made on the
        real API.

        Example:
            >>> AnthropicBackend(base_url="https://gateway.example/").cache_identity
            'anthropic@https://gateway.example'
        """
        identity = self._described("agentnb_identity")
        if isinstance(identity, str) and identity:
            return identity
        url = self._url()
        return self.kind if url == _DEFAULT_BASE_URL else f"{self.kind}@{url}"

    @property
    def quota_scope(self) -> str:
        """`anthropic:<base URL>:<first 16 hex digits of the key's SHA-256>`: one organisation's
        quota on one endpoint, whoever shares it (never the key itself). Fixed at first use.

        Example:
            >>> AnthropicBackend(api_key="sk-x", base_url="http://sim/").quota_scope
            'anthropic:http://sim:9df37f5e7cbc3c39'
        """
        scope = self._quota_scope
        if scope is None:
            key = self._api_key.get() if self._api_key else os.environ.get("ANTHROPIC_API_KEY")
            digest = hashlib.sha256(key.encode()).hexdigest()[:16] if key else "no-key"
            scope = self._quota_scope = f"{self.kind}:{self._url()}:{digest}"
        return scope

    @property
    def reports_rate_limits(self) -> bool:
        """False only when the transport says its server sends no rate-limit headers."""
        return self._limit_headers

    def _url(self) -> str:
        url = self.base_url or os.environ.get("ANTHROPIC_BASE_URL") or _DEFAULT_BASE_URL
        return url.strip().rstrip("/")

    def __repr__(self) -> str:
        key = "set" if self._api_key else "from environment"
        return (
            f"AnthropicBackend(base_url={self.base_url!r}, prompt_caching={self.prompt_caching}, "
            f"api_key=<{key}>)"
        )

    __str__ = __repr__

    @property
    def client_created(self) -> bool:
        """Whether the SDK client exists yet (it is made on the first call)."""
        return self._client is not None

    def _described(self, name: str) -> object:
        """The transport's own description `name` (see the class docstring), or None."""
        # httpx2 has no public accessor for a client's transport, hence `_transport`.
        inner = getattr(self._http_client, "_transport", None)
        for holder in (self._transport, self._http_client, inner):
            value = getattr(holder, name, None)
            if value is not None:
                return value
        return None

    async def _get_client(self) -> AsyncAnthropic:
        client = self._client
        if client is None:
            async with self._client_lock:  # concurrent first calls build one client
                client = self._client
                if client is None:
                    # `import anthropic` and the client take ~2.5 s the first time: off the loop.
                    client = self._client = await asyncio.to_thread(self._build_client)
        return client

    def _build_client(self) -> AsyncAnthropic:
        """A new SDK client (runs in a worker thread: it may import the SDK)."""
        import anthropic

        kwargs: dict[str, Any] = {"max_retries": 0}
        if self._api_key:
            kwargs["api_key"] = self._api_key.get()
            protect(kwargs["api_key"])  # the SDK's own DEBUG logs must not show it either
        if self.base_url:
            kwargs["base_url"] = self.base_url
        if self._http_client is not None:
            kwargs["http_client"] = self._http_client
        elif self._transport is not None:
            kwargs["http_client"] = anthropic.DefaultAsyncHttpxClient(transport=self._transport)
        try:
            client = anthropic.AsyncAnthropic(**kwargs)
        except anthropic.AnthropicError as exc:
            raise self._translate(exc) from None
        if client.api_key is None and client.auth_token is None and client.credentials is None:
            raise AuthenticationError(
                "no Anthropic API key: set ANTHROPIC_API_KEY, or use the simulated backend"
            )
        return client

    async def aclose(self) -> None:
        """Close the SDK client (but not an `http_client` the caller passed in and owns)."""
        client, self._client = self._client, None
        self._client_lock = asyncio.Lock()  # a fresh one: the next client may be on another loop
        if client is not None and self._http_client is None:
            await client.close()

    # -- calls -------------------------------------------------------------------------------
    def _params(self, request: BackendRequest, *, batched: bool = False) -> dict[str, Any]:
        """The SDK's keyword arguments for `request`; `batched`: a batch request's `params`,
        which has no headers (the agent's name goes in a field, to a transport that asks)."""
        caching = request.prompt_caching and self.prompt_caching
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": request.messages,
        }
        if request.prefix:
            open_with(params["messages"][0], request.prefix, caching)
        if request.schema is not None:
            params.update(tool_params(request.schema))
        if request.system:
            if caching:
                block: TextBlockParam = {
                    "type": "text",
                    "text": request.system,
                    "cache_control": {"type": "ephemeral"},
                }
                params["system"] = [block]
            else:
                params["system"] = request.system
        if request.stop_sequences:
            params["stop_sequences"] = list(request.stop_sequences)
        if batched:
            if self._agent_field is not None and request.agent:
                params[self._agent_field] = request.agent
        elif self._agent_header is not None and request.agent:
            params["extra_headers"] = {
                self._agent_header: urllib.parse.quote(request.agent, safe="")
            }
        if request.temperature is not None and not self._warned_temperature:
            # SDK 2.x speaks API version 2026-10-21, which refuses sampling parameters (400
            # even for temperature=1.0), so the setting is dropped rather than failing every call.
            self._warned_temperature = True
            _log.warning(
                "temperature=%s ignored: the Messages API no longer accepts it", request.temperature
            )
        return params

    async def create(self, request: BackendRequest) -> BackendResponse:
        client = self._client or await self._get_client()
        try:
            raw = await client.messages.with_raw_response.create(**self._params(request))
            message = await raw.parse()
        except ValueError as exc:
            # The SDK refuses non-streaming calls whose max_tokens could outlast 10 minutes.
            if _NEEDS_STREAMING not in str(exc):
                raise
            return await self._collect(request)
        except Exception as exc:
            error = self._translate(exc)
            if error is exc:
                raise
            raise error from None
        limits = parse_rate_limits(raw.headers) if self._limit_headers else None
        return self._response(message, raw.request_id, limits)

    async def stream(self, request: BackendRequest) -> AsyncGenerator[str | BackendResponse, None]:
        client = self._client or await self._get_client()
        try:
            async with client.messages.stream(**self._params(request)) as events:
                headers = events.response.headers
                limits = parse_rate_limits(headers) if self._limit_headers else None
                async for text in events.text_stream:
                    if text:
                        yield text
                message = await events.get_final_message()
                request_id = events.request_id
        except Exception as exc:
            error = self._translate(exc)
            if error is exc:
                raise
            raise error from None
        yield self._response(message, request_id, limits)

    async def count_tokens(self, request: BackendRequest) -> int:
        """The input tokens `request` would count, from the API's `count_tokens` endpoint."""
        client = self._client or await self._get_client()
        params = self._params(request)
        del params["max_tokens"]
        params.pop("stop_sequences", None)
        try:
            counted = await client.messages.count_tokens(**params)
        except Exception as exc:
            error = self._translate(exc)
            if error is exc:
                raise
            raise error from None
        return int(counted.input_tokens)

    # -- Message Batches (`anthropic_batches`) --------------------------------------------
    async def batch_create(self, requests: Sequence[BatchRequest]) -> BatchInfo:
        """Submit a batch; each request's params are those `create` sends."""
        return await _batches.create(self, requests)

    async def batch_retrieve(self, batch_id: str) -> BatchInfo:
        return await _batches.retrieve(self, batch_id)

    async def batch_cancel(self, batch_id: str) -> BatchInfo:
        return await _batches.cancel(self, batch_id)

    async def batch_list(self, limit: int = 100) -> list[BatchInfo]:
        return await _batches.listed(self, limit)

    def batch_results(self, batch_id: str) -> AsyncIterator[BatchResult]:
        """The results of an ended batch, read from the API's JSON Lines as they arrive."""
        return _batches.results(self, batch_id)

    async def _collect(self, request: BackendRequest) -> BackendResponse:
        async with contextlib.aclosing(self.stream(request)) as items:
            async for item in items:
                if isinstance(item, BackendResponse):
                    return item
        raise ServerError("the stream ended without a final message")  # pragma: no cover

    def _response(
        self, message: SDKMessage, request_id: str | None, limits: RateLimits | None
    ) -> BackendResponse:
        data = tool_input(message) if message.stop_reason == "tool_use" else None
        if data is None:
            text = "".join(block.text for block in message.content if block.type == "text")
        else:
            text = answer_text(data)
        u = message.usage
        usage = Usage(
            input_tokens=u.input_tokens or 0,
            output_tokens=u.output_tokens or 0,
            cache_read_tokens=u.cache_read_input_tokens or 0,
            cache_write_tokens=u.cache_creation_input_tokens or 0,
        )
        return BackendResponse(
            text=text,
            model=str(message.model),
            stop_reason=message.stop_reason,
            usage=usage,
            backend=self.kind,
            request_id=request_id,
            stop_sequence=message.stop_sequence,
            limits=limits,
            data=data,
        )

    # -- errors ------------------------------------------------------------------------------
    def _translated(self, exc: Exception) -> Exception:
        """`_translate(exc)`, or `exc` itself re-raised when it is no SDK error (a bug)."""
        error = self._translate(exc)
        if error is exc:
            raise exc
        return error

    def _translate(self, exc: Exception) -> Exception:
        """The agentnb error for an SDK or httpx2 error; any other exception unchanged (a bug)."""
        return translate(exc, self._scrub)

    def _scrub(self, text: str) -> str:
        key = self._api_key.get() if self._api_key else ""
        return text.replace(key, "***") if key else text
