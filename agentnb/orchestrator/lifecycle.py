"""Which parts of an orchestrator a configuration change concerns, and making its cache.

`AsyncAgentOrchestrator.reconfigure` remakes only what a changed setting concerns, so handles
stay valid and the cache, the backend (with its injected faults) and the call records survive
unrelated changes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ..config import Config

if TYPE_CHECKING:
    from ..cache import ResponseCache

__all__ = ["changed", "make_cache"]


def make_cache(config: Config) -> ResponseCache | None:
    """The response cache `config` describes, or None when caching is off."""
    if not config.cache_enabled or config.cache_backend == "none":
        return None
    from ..cache import ResponseCache

    return ResponseCache.from_config(config)


#: The settings each part is made from: (names, prefix of further names).
_PARTS: dict[str, tuple[tuple[str, ...], str]] = {
    "backend": (("backend", "base_url", "prompt_caching", "api_key"), "sim_"),
    "cache": (("redis_url",), "cache_"),
}


def changed(old: Config, new: Config, part: str) -> bool:
    """Whether a setting `part` ("backend" or "cache") is made from differs."""
    names, prefix = _PARTS[part]
    fields = [f for f in dataclasses.fields(Config) if f.name in names or f.name.startswith(prefix)]
    return any(getattr(old, f.name) != getattr(new, f.name) for f in fields)
