"""The API's rate-limit headers, read and written, and the model class a quota belongs to.

Every Messages-API response says where the caller stands: for requests, input tokens and output
tokens, `anthropic-ratelimit-<kind>-limit` (per minute), `-remaining` and `-reset` (an RFC 3339
time when the bucket is full again), plus `anthropic-ratelimit-tokens-*` (the most restrictive
token bucket) and `retry-after` on a 429. `parse_rate_limits` turns them into a `RateLimits`;
`rate_limit_headers` writes them (the simulator's HTTP transport and server).

Example:
    >>> rl = RateLimits(Level(60, 59, 1.0), None, None, received=0.0)
    >>> h = rate_limit_headers(rl, now=0.0)
    >>> h["anthropic-ratelimit-requests-remaining"], h["anthropic-ratelimit-requests-reset"]
    ('59', '1970-01-01T00:00:01Z')
    >>> parse_rate_limits(h, now=0.0).requests
    Level(limit=60, remaining=59, reset_s=1.0)
    >>> model_class("claude-sonnet-5-5"), model_class("claude-haiku-4-5-20251001")
    ('sonnet', 'haiku')
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import NamedTuple

__all__ = ["Level", "RateLimits", "model_class", "parse_rate_limits", "rate_limit_headers"]

_PREFIX = "anthropic-ratelimit-"
_HEADER_KINDS = ("requests", "input-tokens", "output-tokens")
_CLASS = re.compile(r"claude-(?:\d+(?:-\d+)*-)?([a-z]+)")


class Level(NamedTuple):
    """One bucket as a response saw it: its per-minute limit, what is left, seconds to full."""

    limit: int
    remaining: int
    reset_s: float


class RateLimits(NamedTuple):
    """What one response said of the quota; a kind the response did not mention is None.

    `received` is the wall time (`time.time()`) the response arrived, so `reset_s` can be read
    as an instant.
    """

    requests: Level | None
    input_tokens: Level | None
    output_tokens: Level | None
    received: float

    @property
    def levels(self) -> tuple[Level | None, Level | None, Level | None]:
        return (self.requests, self.input_tokens, self.output_tokens)

    def per_minute(self) -> tuple[float | None, float | None, float | None]:
        """The limits, as `Limits(rpm, itpm, otpm)` takes them."""
        return tuple(None if x is None else float(x.limit) for x in self.levels)  # type: ignore[return-value]

    def remaining(self) -> tuple[float | None, float | None, float | None]:
        return tuple(None if x is None else float(x.remaining) for x in self.levels)  # type: ignore[return-value]


def model_class(model: str) -> str:
    """The class a model's quota is counted in (`sonnet`, `opus`, `haiku`, ...), else its id.

    The API counts a quota per model class: every Sonnet shares one.
    """
    m = _CLASS.match(model)
    return m.group(1) if m else model


def parse_rate_limits(headers: Mapping[str, str], now: float | None = None) -> RateLimits | None:
    """The rate-limit headers of a response, or None when it has none (a server without quotas).

    Malformed values are skipped, never an error: a header is a hint, not a contract.
    """
    received = time.time() if now is None else now
    found: list[Level | None] = []
    for kind in _HEADER_KINDS:
        limit = headers.get(f"{_PREFIX}{kind}-limit")
        if limit is None:
            found.append(None)
            continue
        try:
            level = Level(
                int(limit),
                int(headers.get(f"{_PREFIX}{kind}-remaining", limit)),
                _seconds_until(headers.get(f"{_PREFIX}{kind}-reset"), received),
            )
        except ValueError:
            level = None
        found.append(level)
    if not any(found):
        return None
    return RateLimits(found[0], found[1], found[2], received)


def _seconds_until(raw: str | None, now: float) -> float:
    if not raw:
        return 0.0
    stamp = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    return max(0.0, stamp.timestamp() - now)


def _rfc3339(t: float) -> str:
    stamp = datetime.fromtimestamp(t, UTC)
    text = stamp.isoformat(timespec="milliseconds" if stamp.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def rate_limit_headers(limits: RateLimits, now: float | None = None) -> dict[str, str]:
    """The headers of `limits` as the API writes them (resets as RFC 3339 UTC times)."""
    at = limits.received if now is None else now
    out: dict[str, str] = {}
    for kind, level in zip(_HEADER_KINDS, limits.levels, strict=True):
        if level is not None:
            out[f"{_PREFIX}{kind}-limit"] = str(level.limit)
            out[f"{_PREFIX}{kind}-remaining"] = str(level.remaining)
            out[f"{_PREFIX}{kind}-reset"] = _rfc3339(at + level.reset_s)
    tokens = [x for x in (limits.input_tokens, limits.output_tokens) if x is not None]
    if tokens:  # the most restrictive token bucket: the one with the least left
        worst = min(tokens, key=lambda x: x.remaining / max(1, x.limit))
        out[f"{_PREFIX}tokens-limit"] = str(worst.limit)
        out[f"{_PREFIX}tokens-remaining"] = str(worst.remaining)
        out[f"{_PREFIX}tokens-reset"] = _rfc3339(at + worst.reset_s)
    return out
