"""The local token estimate: how many input tokens a request counts, without asking anyone.

About four characters a token, the system prompt (with a structured call's tool schema), the
shared `prefix` and the messages each rounded up: the offline simulator's own count (so on it
the estimate is exact), and close to the API's tokenizer for English prose (code and other
scripts may count more tokens). The estimate (`estimate.py`), the
budget's worst case (`budget.py`) and the quota's admission use this one function; the estimate
prefers `Backend.count_tokens` where the backend can count.

Example:
    >>> from agentnb.backends import BackendRequest
    >>> estimate_input_tokens(BackendRequest(model="m", task="x" * 40, system="y" * 8))
    12
"""

from __future__ import annotations

from ..backends import BackendRequest

__all__ = ["CHARS_PER_TOKEN", "estimate_input_tokens", "system_tokens"]

CHARS_PER_TOKEN = 4


def estimate_input_tokens(request: BackendRequest) -> int:
    """The input tokens of `request` (system prompt, prefix, history and task), estimated
    locally."""
    chars = len(request.task)
    for turn in request.history:
        chars += len(turn.content)
    tokens = system_tokens(request) + ((chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN or 1)
    if request.prefix:
        tokens += (len(request.prefix) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
    return tokens


def system_tokens(request: BackendRequest) -> int:
    """The part of `estimate_input_tokens` that is the system prompt and the tool schema before
    it (what prompt caching of the system prompt writes and reads)."""
    chars = len(request.system)
    if request.schema is not None:
        chars += request.schema.chars
    return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
