"""The cache stage: answer a prepared call from the response cache, or compute it once.

Identical concurrent misses (streams included) share one computation (the cache's
single-flight). Which calls skip the cache: `use_cache=False`, `cache: false` in the agent
file, or a `cache_exclude` glob. A blocking caller's memory hit is answered on its own thread
(`memory_hit`), with no event loop involved. An estimate asks whether a call would be answered
here with `peek`, which records nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..backends import BackendResponse
from .codec import from_payload, to_payload
from .prepare import PreparedCall

if TYPE_CHECKING:
    from ..cache import ResponseCache

__all__ = ["answer", "cache_for", "memory_hit", "peek"]


def cache_for(cache: ResponseCache | None, p: PreparedCall) -> ResponseCache | None:
    """The cache `p` may use: None when it is off for this call or this agent."""
    if cache is None or not p.use_cache or cache.is_excluded(p.spec.name, p.spec.cache):
        return None
    return cache


async def answer(
    cache: ResponseCache | None,
    p: PreparedCall,
    compute: Callable[[], Awaitable[BackendResponse]],
) -> tuple[BackendResponse, bool]:
    """`(response, came from the cache)`: the cached answer, or `compute()` stored."""
    usable = cache_for(cache, p)
    if usable is None:
        return await compute(), False

    async def payload() -> dict[str, Any]:
        return to_payload(await compute())

    found, tier = await usable.get_or_compute(p.key, payload, agent=p.spec.name)
    return from_payload(found), tier is not None


def memory_hit(cache: ResponseCache | None, p: PreparedCall) -> BackendResponse | None:
    """The answer of `p` if the memory tier holds it (counted as a hit), from any thread."""
    usable = cache_for(cache, p)
    if usable is None:
        return None
    payload = usable.memory_lookup(p.key)
    return None if payload is None else from_payload(payload)


async def peek(cache: ResponseCache | None, p: PreparedCall) -> BackendResponse | None:
    """The answer the cache holds for `p`, if it would serve one, without recording a hit."""
    usable = cache_for(cache, p)
    if usable is None:
        return None
    payload = await usable.peek(p.key)
    return None if payload is None else from_payload(payload)
