"""Quotas: the API's rate limits as token buckets, read from its headers and shared.

`buckets` is the arithmetic (the simulator enforces a quota with it; the admission stage mirrors
the server's with it), `headers` reads and writes the API's `anthropic-ratelimit-*` headers.
"""

from .buckets import KINDS, LIMIT_KEYS, Buckets, Costs, Limits
from .headers import Level, RateLimits, model_class, parse_rate_limits, rate_limit_headers

__all__ = [
    "KINDS",
    "LIMIT_KEYS",
    "Buckets",
    "Costs",
    "Level",
    "Limits",
    "RateLimits",
    "model_class",
    "parse_rate_limits",
    "rate_limit_headers",
]
