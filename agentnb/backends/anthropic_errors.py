"""How the SDK's errors become agentnb's: `translate`, the API's error types, `retry-after`.

Every `anthropic.*` error, and any `httpx2` error that leaks past the SDK, becomes one of the
`agentnb.errors.BackendError` family, with the response's rate-limit headers as its `limits`
and the API key scrubbed from its message. A 429 whose message says the spend limit is reached
is a `SpendLimitError` (never retried).
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import math
from collections.abc import Callable, Mapping

from ..errors import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    ServerError,
    error_for_status,
)
from ..quota import parse_rate_limits

__all__ = ["STATUS_OF_ERROR_TYPE", "parse_retry_after", "translate"]

# The status the API gives each error type, for errors that arrive as an SSE `error` event
# after a 200; an unknown type counts as a server error (the request had been accepted).
STATUS_OF_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def translate(exc: Exception, scrub: Callable[[str], str]) -> Exception:
    """The agentnb error for an SDK or httpx2 error; any other exception unchanged (a bug).

    `scrub` takes the API key out of any text that goes into a message."""
    import anthropic
    import httpx2

    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, anthropic.APIStatusError):
        headers = exc.response.headers
        detail = exc.api_message or exc.message
        kind = f" ({exc.type})" if exc.type else ""
        status = exc.status_code
        if status < 400:
            # An `error` event inside a stream that began with 200: the body's type is the
            # only thing that says what went wrong (e.g. overloaded_error mid-answer).
            status = STATUS_OF_ERROR_TYPE.get(str(exc.type), 500)
            where = "mid-stream"
        else:
            where = str(status)
        # A spend-limit 429 says so in its message (SpendLimitError, never retried).
        error = error_for_status(
            status,
            scrub(f"Anthropic API error {where}{kind}: {detail}"),
            request_id=exc.request_id,
            retry_after=parse_retry_after(headers),
        )
        error.limits = parse_rate_limits(headers)
        return error
    if isinstance(exc, anthropic.APITimeoutError):
        return BackendTimeoutError("the Anthropic API did not answer in time")
    if isinstance(exc, anthropic.APIConnectionError):
        cause = f": {scrub(str(exc.__cause__))}" if exc.__cause__ else ""
        return BackendConnectionError(f"could not reach the Anthropic API{cause}")
    if isinstance(exc, anthropic.APIResponseValidationError):
        return ServerError(
            f"unexpected response from the Anthropic API: {scrub(exc.message)}",
            status_code=exc.status_code,
        )
    if isinstance(exc, anthropic.CredentialsError):
        return AuthenticationError(
            f"no usable Anthropic credentials (set ANTHROPIC_API_KEY): {scrub(str(exc))}"
        )
    if isinstance(exc, anthropic.AnthropicError):
        return BackendError(f"Anthropic SDK error: {scrub(str(exc))}")
    if isinstance(exc, httpx2.TimeoutException):
        return BackendTimeoutError("the Anthropic API did not answer in time")
    if isinstance(exc, httpx2.HTTPStatusError):
        error = error_for_status(
            exc.response.status_code,
            f"Anthropic API error {exc.response.status_code}",
            request_id=exc.response.headers.get("request-id"),
            retry_after=parse_retry_after(exc.response.headers),
        )
        error.limits = parse_rate_limits(exc.response.headers)
        return error
    if isinstance(exc, (httpx2.TransportError, httpx2.StreamError)):
        return BackendConnectionError(f"connection to the Anthropic API failed: {scrub(str(exc))}")
    return exc


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date.

    Example:
        >>> parse_retry_after({"retry-after": "2"})
        2.0
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return max(0.0, value)
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        return max(0.0, value) if math.isfinite(value) else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return max(0.0, (when - _dt.datetime.now(_dt.UTC)).total_seconds())
