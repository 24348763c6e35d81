"""The response cache: memory tier (LRU + TTL) in front of SQLite or Redis, with integrity.

`ResponseCache` is what the orchestrator uses; `make_key` builds its keys. The tiers live in
their own modules (`memory`, `sqlite`, `redis`), keys in `keys`, the HMAC secret in `integrity`.
Their micro-benchmark lives with the other benchmarks, in `agentnb.bench_suite._cache_micro`.

Example:
    >>> from agentnb.config import Config
    >>> cache = ResponseCache.from_config(Config(cache_backend="memory"))
    >>> cache.stats()["entries"]
    0
"""

from __future__ import annotations

from .core import ResponseCache, prepare_cache_dir
from .integrity import SECRET_ENV, key_file_path, load_secret
from .keys import canonical_json, make_key, prompt_hash

__all__ = [
    "SECRET_ENV",
    "ResponseCache",
    "canonical_json",
    "key_file_path",
    "load_secret",
    "make_key",
    "prepare_cache_dir",
    "prompt_hash",
]
