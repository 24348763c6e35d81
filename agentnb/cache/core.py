"""`ResponseCache`: the memory tier in front of SQLite or Redis, with single-flight and stats.

The orchestrator's calls (`get`, `set`, `get_or_compute`) run on the home event loop. A memory
hit answers synchronously (no thread hop); the persistent tier's I/O runs on the tier's own
threads while the loop goes on. The user-facing commands (`clear`, `invalidate`, `stats`,
`stats_frame`, `close`) are plain methods that are safe from any thread, including a notebook
cell while the home loop is busy: they never wait on the home loop, so they cannot deadlock it.

`cache_backend`: `"memory"` (memory only), `"sqlite"` (memory + `responses.db` in `cache_dir`,
the default), `"redis"` (memory + Redis at `redis_url`), `"none"` (or `cache_enabled: false`):
nothing is cached and `get_or_compute` just computes.

TTL: `cache_ttl_s` (or `set(..., ttl_s=)`) seconds from the write; `0` means never expires.

Example:
    >>> import asyncio
    >>> from agentnb.config import Config
    >>> cache = ResponseCache(Config(cache_backend="memory"))
    >>> async def demo():
    ...     async def compute():
    ...         return {"text": "hi"}
    ...     first = await cache.get_or_compute("k" * 64, compute, agent="writer")
    ...     second = await cache.get_or_compute("k" * 64, compute, agent="writer")
    ...     return first[1], second[1]
    >>> asyncio.run(demo())
    (None, 'memory')
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .._fork import at_fork_in_child
from ..config import Config
from ..errors import CacheError
from .base import PersistentTier, StoredEntry
from .integrity import Signer, load_secret
from .keys import no_nan as _no_nan
from .memory import MemoryTier, copy_json
from .sqlite import DB_NAME, SQLiteTier

if TYPE_CHECKING:
    import pandas

__all__ = ["TIERS", "ResponseCache", "prepare_cache_dir", "register_tier"]

logger = logging.getLogger("agentnb.cache")

Payload = dict[str, Any]


def _sqlite_tier(cache: ResponseCache, config: Config, signer: Signer) -> PersistentTier:
    cache.cache_dir = prepare_cache_dir(config.cache_dir)
    return SQLiteTier(
        cache.cache_dir / DB_NAME,
        signer=signer,
        max_bytes=config.cache_disk_bytes,
        clock=cache.clock,
    )


def _redis_tier(cache: ResponseCache, config: Config, signer: Signer) -> PersistentTier:
    from .redis import RedisTier  # needs the `redis` package: imported only when chosen

    return RedisTier(config.redis_url, signer=signer, clock=cache.clock)


#: The persistent tiers behind memory, by `cache_backend` name ("memory": none).
TIERS: dict[str, Callable[[ResponseCache, Config, Signer], PersistentTier]] = {
    "sqlite": _sqlite_tier,
    "redis": _redis_tier,
}


def register_tier(
    name: str, factory: Callable[[ResponseCache, Config, Signer], PersistentTier]
) -> None:
    """Add a persistent tier selectable as `cache_backend: <name>`."""
    TIERS[name] = factory


def prepare_cache_dir(path: str | os.PathLike[str]) -> Path:
    """Resolve `path` to an absolute directory, create it 0700, and prove it is writable.

    Raises `CacheError` naming the path when it is a file, cannot be created or is not writable.
    """
    resolved = Path(path).expanduser().resolve()
    if resolved.exists() and not resolved.is_dir():
        raise CacheError(
            f"cache_dir {resolved} is a file, not a directory; point cache_dir "
            "(AGENTNB_CACHE_DIR) at a directory"
        )
    if not resolved.exists():
        try:
            resolved.mkdir(parents=True, mode=0o700)
            os.chmod(resolved, 0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            pass  # made by another process meanwhile
        except OSError as exc:
            raise CacheError(f"cannot create cache_dir {resolved}: {exc.strerror or exc}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".agentnb-probe-", dir=resolved)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CacheError(
            f"cache_dir {resolved} is not writable ({exc.strerror or exc}); choose another "
            "cache_dir or set cache_backend: memory"
        ) from None
    return resolved


class ResponseCache:
    """Cached backend responses: memory tier, then SQLite or Redis; see the module docstring."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        secret: bytes | None = None,
    ) -> None:
        self.config = config
        self.backend: str = config.cache_backend if config.cache_enabled else "none"
        self._clock = clock
        self.clock = clock
        self._ttl_s = config.cache_ttl_s
        self._exclude = list(config.cache_exclude)
        self._excluded: dict[str, bool] = {}  # agent name -> matched by `_exclude`
        self._memory: MemoryTier | None = None
        self._store: PersistentTier | None = None
        self._inflight: dict[str, asyncio.Future[Payload]] = {}
        at_fork_in_child(self._after_fork_in_child)
        # Memory hits are counted by the memory tier itself (under its lock: blocking callers
        # read it from their own threads); the rest happen on the home loop.
        self._hits = {"disk": 0, "redis": 0, "inflight": 0}
        self._misses = 0
        self.cache_dir: Path | None = None
        if self.backend == "none":
            return
        self._memory = MemoryTier(
            max_entries=config.cache_memory_entries,
            max_bytes=config.cache_memory_bytes,
            clock=clock,
        )
        make_tier = TIERS.get(self.backend)
        if make_tier is not None:
            signer = Signer(secret if secret is not None else load_secret())
            self._store = make_tier(self, config, signer)

    def _after_fork_in_child(self) -> None:
        # The computations in flight are the parent's, on the parent's loop: not ours to await.
        self._inflight = {}

    @classmethod
    def from_config(cls, config: Config) -> ResponseCache:
        """The cache `config` asks for; the cache dir is checked (and created) here."""
        return cls(config)

    @property
    def enabled(self) -> bool:
        """False for `cache_backend: none` / `cache_enabled: false` or after `close()`."""
        return self._memory is not None

    @property
    def store(self) -> PersistentTier | None:
        """The tier behind memory (SQLite or Redis), if any."""
        return self._store

    @property
    def memory(self) -> MemoryTier | None:
        """The in-process tier, if enabled."""
        return self._memory

    def is_excluded(self, agent: str, agent_cache_flag: bool | None = None) -> bool:
        """True when `agent` must not be cached: `cache: false` in its file or `cache_exclude`.

        `cache_exclude` holds agent names or shell-style globs (`draft-*`), case-sensitive.
        """
        if agent_cache_flag is False:
            return True
        if not self._exclude:
            return False
        # Asked for every call (three times for a Message Batch's): each name matched once.
        excluded = self._excluded.get(agent)
        if excluded is None:
            if len(self._excluded) >= 1024:
                self._excluded.clear()
            excluded = any(fnmatch.fnmatchcase(agent, pattern) for pattern in self._exclude)
            self._excluded[agent] = excluded
        return excluded

    def memory_lookup(self, key: str, *, copy: bool = False) -> Payload | None:
        """The payload under `key` if the memory tier holds it (counted as a hit), else None.

        Safe from any thread, and answered there: a blocking caller's hit needs no event loop.
        Without `copy` the payload is the tier's own: read it, do not change it.
        """
        memory = self._memory
        if memory is None:  # off, or closed while a caller waited
            return None
        hit = memory.get(key, copy=copy)
        if hit is not None and self._store is not None:
            self._store.touch(key)
        return hit

    # -- the orchestrator's side (home loop) --------------------------------------------------
    async def peek(self, key: str) -> Payload | None:
        """The payload under `key` if any tier holds it, without counting a hit or a miss and
        without copying it into memory: how an estimate asks whether a call would be free."""
        memory = self._memory
        if memory is None:
            return None
        hit = memory.peek(key)
        if hit is not None:
            copied: Payload = copy_json(hit)
            return copied
        store = self._store
        entry = await store.get(key) if store is not None else None
        return None if entry is None else entry.payload

    async def get(self, key: str) -> tuple[Payload, str] | None:
        """(payload, tier) for a hit (`"memory"`, `"disk"` or `"redis"`), None for a miss."""
        if self._memory is None:
            return None
        hit = self.memory_lookup(key, copy=True)
        if hit is not None:
            return hit, "memory"
        found = await self._store_get(key)
        if found is None:
            self._misses += 1
        return found

    async def set(
        self, key: str, payload: Payload, *, agent: str, ttl_s: float | None = None
    ) -> None:
        """Store `payload` (a JSON-serialisable dict) in every tier.

        Raises TypeError/ValueError for a payload that is not JSON (a caller's bug). A failing
        persistent tier is logged and counted, never raised: the call it caches has succeeded.
        """
        if self._memory is None:
            return
        value, expires_at, _ = self._memory_set(key, payload, agent=agent, ttl_s=ttl_s)
        store = self._store
        if store is not None:
            await store.set(key, agent=agent, value=value, expires_at=expires_at)

    async def get_many(self, keys: Sequence[str]) -> list[tuple[Payload, str] | None]:
        """`get` of several keys (a Message Batch's calls): memory first, the rest from the
        persistent tier in one trip (one read of SQLite's thread, not one per key).

        Unlike `get`, the payloads are the cache's own: read them, do not change them.
        """
        found: list[tuple[Payload, str] | None] = [None] * len(keys)
        memory = self._memory
        if memory is None:
            return found
        rest: list[int] = []
        for i, key in enumerate(keys):
            hit = self.memory_lookup(key)
            if hit is not None:
                found[i] = (hit, "memory")
            else:
                rest.append(i)
        store = self._store
        if rest and store is not None:
            entries = await store.get_many([keys[i] for i in rest])
            for i, entry in zip(rest, entries, strict=True):
                if entry is not None:
                    self._hits[store.name] += 1
                    memory.set(
                        keys[i],
                        entry.payload,
                        agent=entry.agent,
                        size=entry.size,
                        expires_at=entry.expires_at,
                    )
                    found[i] = (entry.payload, store.name)
        self._misses += found.count(None)
        return found

    async def set_many(
        self,
        entries: Iterable[tuple[str, Payload, str]],
        *,
        ttl_s: float | None = None,
        fresh: bool = False,
    ) -> None:
        """`set` of several `(key, payload, agent)` (a Message Batch's results): the persistent
        tier writes them together (SQLite: one transaction). Errors as for `set`.

        `fresh=True`: each payload was made for this call and nobody else holds it, of JSON's
        own types only (dicts with string keys, lists, strings, ints, finite floats, bools,
        None; as `to_payload` makes them), so memory keeps it as it is: a JSON round trip would
        give an equal copy, at a cost a batch of 100,000 answers feels."""
        if self._memory is None:
            return
        rows = []
        for key, payload, agent in entries:
            value, expires_at, _ = self._memory_set(
                key, payload, agent=agent, ttl_s=ttl_s, fresh=fresh
            )
            rows.append((key, agent, value, expires_at))
        store = self._store
        if store is not None and rows:
            await store.set_many(rows)

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[Payload]],
        *,
        agent: str,
    ) -> tuple[Payload, str | None]:
        """The cached payload, or `await compute()` stored and returned (tier None).

        Single-flight: while one caller computes a key, identical callers wait for it and get
        `(payload, "inflight")`. If `compute` raises, every one of them gets that exception and
        nothing is stored. If the computing caller is cancelled, a waiter takes over.
        """
        if self._memory is None:
            return await compute(), None
        loop = asyncio.get_running_loop()
        while True:
            hit = self.memory_lookup(key, copy=True)
            if hit is not None:
                return hit, "memory"
            pending = self._inflight.get(key)
            if pending is None or pending.get_loop() is not loop:
                break
            try:
                payload = await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if pending.cancelled() and (task is None or not task.cancelling()):
                    continue  # the computing caller was cancelled, not us: try again
                raise
            self._hits["inflight"] += 1
            return copy_json(payload), "inflight"

        future: asyncio.Future[Payload] = loop.create_future()
        self._inflight[key] = future
        try:
            found = await self._store_get(key)
            if found is not None:
                future.set_result(copy_json(found[0]))
                return found
            self._misses += 1
            payload = await compute()
            value, expires_at, stored = self._memory_set(key, payload, agent=agent, ttl_s=None)
            future.set_result(stored)  # never handed out itself: each waiter gets a copy
            del self._inflight[key]
            store = self._store  # None if the cache was closed meanwhile
            if store is not None:
                await store.set(key, agent=agent, value=value, expires_at=expires_at)
            return payload, None
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" noise without waiters
            raise
        except BaseException:
            if not future.done():
                future.cancel()
            raise
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]

    async def _store_get(self, key: str) -> tuple[Payload, str] | None:
        if self._store is None:
            return None
        entry: StoredEntry | None = await self._store.get(key)
        if entry is None:
            return None
        self._hits[self._store.name] += 1
        if self._memory is not None:
            self._memory.set(
                key, entry.payload, agent=entry.agent, size=entry.size, expires_at=entry.expires_at
            )
        return copy_json(entry.payload), self._store.name

    def _memory_set(
        self, key: str, payload: Payload, *, agent: str, ttl_s: float | None, fresh: bool = False
    ) -> tuple[bytes, float | None, Payload]:
        """Encode `payload`, keep it in memory (itself if `fresh`: see `set_many`); returns
        (JSON bytes, expiry, the kept copy)."""
        if not isinstance(payload, dict):
            raise TypeError(f"cache payloads are dicts, got {type(payload).__name__}")
        ttl = self._ttl_s if ttl_s is None else ttl_s
        if ttl < 0:
            raise ValueError(f"ttl_s must not be negative, got {ttl!r}")
        _no_nan(payload)
        try:
            value = orjson.dumps(payload)
        except orjson.JSONEncodeError as exc:
            raise TypeError(f"cache payloads are JSON values: {exc}") from None
        expires_at = self._clock() + ttl if ttl > 0 else None
        # Memory keeps what a disk hit would give back (a JSON round trip), owned by nobody else.
        stored: Payload = payload if fresh else orjson.loads(value)
        memory = self._memory  # None if the cache was closed while the call ran
        if memory is not None:
            memory.set(key, stored, agent=agent, size=len(value), expires_at=expires_at)
        return value, expires_at, stored

    # -- user-facing commands (any thread) ----------------------------------------------------
    def clear(self) -> None:
        """Remove every entry from every tier (counters are kept).

        Raises `CacheError` when the persistent tier cannot do it (e.g. Redis is unreachable);
        the memory tier is cleared all the same.
        """
        if self._memory is not None:
            self._memory.clear()
        if self._store is not None:
            self._store.clear()

    def invalidate(self, *, agent: str | None = None, key: str | None = None) -> int:
        """Remove the entry `key` and/or every entry of `agent`; returns how many went.

        The count is that of the tier that held the most of them (entries live in several
        tiers at once). Example: `cache.invalidate(agent="writer")` after editing prompts
        by hand (editing the agent file already changes its keys).
        """
        if agent is None and key is None:
            raise ValueError("invalidate() needs agent= or key=")
        removed = 0
        if self._memory is not None:
            if key is not None:
                removed = self._memory.delete(key, agent=agent)
            else:
                assert agent is not None
                removed = self._memory.delete_agent(agent)
        if self._store is not None:
            removed = max(removed, self._store.invalidate(agent=agent, key=key))
        return removed

    def stats(self) -> dict[str, int | float]:
        """Counters since this cache was made, and the current size.

        Keys: `hits_memory`, `hits_disk`, `hits_redis`, `hits_inflight` (waited for an identical
        call), `misses`, `hit_rate`, and, of the persistent tier when there is one (else of
        memory): `evictions`, `expirations`, `entries`, `bytes` (the JSON written); then
        `integrity_failures`, `errors` (tier I/O failures survived), and the memory tier's own
        `memory_entries`, `memory_bytes`, `memory_evictions`, `memory_expirations`.
        """
        memory, store = self._memory, self._store
        counts = {"memory": memory.hits if memory else 0, **self._hits}
        hits = sum(counts.values())
        lookups = hits + self._misses
        out: dict[str, int | float] = {f"hits_{tier}": n for tier, n in counts.items()}
        out["misses"] = self._misses
        out["hit_rate"] = hits / lookups if lookups else 0.0
        # Entries leave "the cache" when they leave the tier that holds them all.
        counted = store if store is not None else memory
        out["evictions"] = counted.evictions if counted else 0
        out["expirations"] = counted.expirations if counted else 0
        out["integrity_failures"] = store.integrity_failures if store else 0
        out["errors"] = store.errors if store else 0
        mem_entries = len(memory) if memory else 0
        mem_bytes = memory.bytes if memory else 0
        entries, size = store.counts() if store else (mem_entries, mem_bytes)
        out["entries"] = entries
        out["bytes"] = size
        out["memory_entries"] = mem_entries
        out["memory_bytes"] = mem_bytes
        out["memory_evictions"] = memory.evictions if memory else 0
        out["memory_expirations"] = memory.expirations if memory else 0
        return out

    def stats_frame(self) -> pandas.DataFrame:
        """`stats()` as a one-row DataFrame indexed by the cache backend."""
        import pandas as pd

        return pd.DataFrame([self.stats()], index=pd.Index([self.backend], name="cache"))

    def close(self) -> None:
        """Flush and close the persistent tier; the cache is disabled afterwards."""
        store, self._store = self._store, None
        if self._memory is not None:
            self._memory.clear()
        self._memory = None
        if store is not None:
            store.close()

    async def aclose(self) -> None:
        """Like `close`, without blocking the event loop."""
        store, self._store = self._store, None
        if self._memory is not None:
            self._memory.clear()
        self._memory = None
        if store is not None:
            await store.aclose()

    def __repr__(self) -> str:
        where = f" at {self.cache_dir}" if self.cache_dir else ""
        return f"<ResponseCache {self.backend}{where}>"
