"""The Redis tier: entries shared by several kernels or machines, falling back to memory only.

Each entry is a hash at `agentnb:v1:<key>` with fields `v` (payload JSON), `m` (HMAC of key and
value, as in SQLite), `a` (agent) and `e` (expiry time, also set as the key's `PEXPIRE`, so Redis
drops it by itself). Size and eviction are Redis's own business (`maxmemory-policy`).

Reconnect policy: the client itself never retries (`Retry(NoBackoff(), 0)`), and connecting gives
up after 0.5 s, so a dead server costs one failed attempt, not a stall. The first failure of an
outage logs ONE warning and marks the tier down; while down, calls skip Redis at no cost (memory
only). After 1 s, then 2, 4 ... up to 30 s, one call probes it again; the first success logs
"back" at info level, and a later outage warns again. Redis I/O runs on a small thread pool owned
by the tier (the sync client is thread-safe), so the event loop never waits on the network and
the user-facing commands work from any thread. A forked child (`agentnb._fork`) makes a client
and threads of its own; the parent's connections are left to the parent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson

from .._fork import abandon, at_fork_in_child
from ..errors import CacheError
from .base import LogOnce, StoredEntry
from .integrity import Signer

__all__ = ["PREFIX", "RedisTier"]

logger = logging.getLogger("agentnb.cache")

T = TypeVar("T")

PREFIX = "agentnb:v1:"
_FIELDS = ["v", "m", "a", "e"]
_SCAN_BATCH = 500


class _BadEntry(Exception):
    pass


def display_url(url: str) -> str:
    """`url` with any password replaced by `***`, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class RedisTier:
    """Entries in Redis under `agentnb:v1:`; goes quiet (memory only) while Redis is away."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        signer: Signer,
        clock: Callable[[], float] = time.time,
        connect_timeout_s: float = 0.5,
        timeout_s: float = 2.0,
        retry_after_s: float = 1.0,
        retry_cap_s: float = 30.0,
        workers: int = 4,
    ) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise CacheError(
                "cache_backend 'redis' needs the redis package: pip install 'agentnb[redis]'"
            ) from None
        self.url = display_url(url)

        def connect() -> redis.Redis:  # a closure: the URL (and its password) stays out of reprs
            return redis.Redis.from_url(
                url,
                socket_connect_timeout=connect_timeout_s,
                socket_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )

        try:
            self._client = connect()
        except ValueError as exc:
            raise CacheError(f"redis_url {self.url!r} is not a valid Redis URL: {exc}") from None
        self._connect = connect
        self._workers = workers
        self._outage_errors: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            OSError,
        )
        self._redis_error: type[Exception] = redis.exceptions.RedisError
        self._signer = signer
        self._clock = clock
        self._retry_after_s = retry_after_s
        self._retry_cap_s = retry_cap_s
        self._backoff = retry_after_s
        self._lock = threading.Lock()
        self._down = False
        self._retry_at = 0.0
        self._closed = False
        self._log = LogOnce(logger)
        self._executor = self._new_executor()
        self.evictions = 0  # Redis evicts by its own policy; we do not see it
        self.expirations = 0
        self.integrity_failures = 0
        self.errors = 0
        at_fork_in_child(self._after_fork_in_child)

    def _new_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(
            max_workers=self._workers, thread_name_prefix="agentnb-cache-redis"
        )

    def _after_fork_in_child(self) -> None:
        # The worker threads are not in the child, one may have held the lock, and the pool's
        # connections are the parent's: the old client is kept, never used or closed here, and
        # a new one connects on first use.
        self._lock = threading.Lock()
        abandon(self._client)
        if not self._closed:
            self._client = self._connect()
            self._executor = self._new_executor()

    @property
    def available(self) -> bool:
        """False while an outage is on (between a failure and the next success)."""
        return not self._down

    # -- availability -----------------------------------------------------------------------
    def _may_try(self) -> bool:
        with self._lock:
            if not self._down:
                return True
            now = self._clock()
            if now < self._retry_at:
                return False
            self._retry_at = now + self._backoff  # one probe per interval, not one per caller
            return True

    def _succeeded(self) -> None:
        if not self._down:
            return
        with self._lock:
            if not self._down:
                return
            self._down = False
            self._backoff = self._retry_after_s
        self._log.reset("down")
        logger.info("Redis cache at %s is back; using it again", self.url)

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            if self._down:
                self._backoff = min(self._backoff * 2, self._retry_cap_s)
            else:
                self._down = True
                self._backoff = self._retry_after_s
            self._retry_at = self._clock() + self._backoff
            self.errors += 1
        self._log.warning(
            "down",
            "Redis cache at %s is unreachable (%s); answering from the memory cache only "
            "until it is back",
            self.url,
            exc,
        )

    def _run(self, fn: Callable[..., T], default: T, *args: Any) -> T:
        if not self._may_try():
            return default
        try:
            result = fn(*args)
        except self._outage_errors as exc:
            self._failed(exc)
            return default
        except self._redis_error as exc:
            with self._lock:
                self.errors += 1
            self._log.warning(f"error:{type(exc).__name__}", "Redis cache at %s: %s", self.url, exc)
            return default
        self._succeeded()
        return result

    async def _submit(self, fn: Callable[..., T], default: T, *args: Any) -> T:
        if self._closed or (self._down and self._clock() < self._retry_at):
            return default  # known down: no thread hop, no waiting
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._run, fn, default, *args)
        except RuntimeError:  # executor shut down by a concurrent close()
            return default

    # -- async API for the event loop --------------------------------------------------------
    async def get(self, key: str) -> StoredEntry | None:
        """The verified entry under `key`, or None (absent, expired, bad, or Redis away)."""
        return await self._submit(self._read, None, key)

    async def set(self, key: str, *, agent: str, value: bytes, expires_at: float | None) -> None:
        """Store an entry with its expiry; a failure is logged, never raised."""
        await self._submit(self._write, None, key, agent, value, expires_at)

    async def get_many(self, keys: Sequence[str]) -> list[StoredEntry | None]:
        """`get` of several keys, in one trip to a worker thread."""
        return await self._submit(self._read_many, [None] * len(keys), keys)

    async def set_many(self, entries: Sequence[tuple[str, str, bytes, float | None]]) -> None:
        """`set` of several `(key, agent, value, expires_at)`, in one trip to a worker thread."""
        await self._submit(self._write_many, None, entries)

    def touch(self, key: str) -> None:
        """Redis keeps its own LRU; nothing to do."""

    async def aclose(self) -> None:
        """Close the connection pool and the worker threads."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    # -- user-facing commands (any thread) ---------------------------------------------------
    def clear(self) -> int:
        """Delete every `agentnb:v1:` key; returns how many there were."""
        return self._command(self._clear)

    def invalidate(self, *, agent: str | None, key: str | None) -> int:
        """Delete the entry `key` and/or every entry of `agent`; returns how many."""
        return self._command(self._invalidate, agent, key)

    def counts(self) -> tuple[int, int]:
        """(entries, bytes of values) under the prefix; (0, 0) while Redis is away."""
        if self._closed:
            return (0, 0)
        return self._run(self._counts, (0, 0))

    def close(self) -> None:
        """Close the connection pool and the worker threads."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        self._client.close()

    def _command(self, fn: Callable[..., int], *args: Any) -> int:
        if self._closed:
            return 0
        try:
            result = fn(*args)
        except self._outage_errors as exc:
            self._failed(exc)
            raise CacheError(f"Redis cache at {self.url} is unreachable: {exc}") from None
        except self._redis_error as exc:
            raise CacheError(f"Redis cache at {self.url}: {exc}") from None
        self._succeeded()
        return result

    # -- on a worker thread --------------------------------------------------------------------
    def _read(self, key: str) -> StoredEntry | None:
        name = PREFIX + key
        value, mac, agent, expiry = self._client.hmget(name, _FIELDS)
        if value is None and mac is None and agent is None:
            return None
        try:
            expires_at = float(expiry) if expiry else None
            if expires_at is not None and expires_at <= self._clock():
                self._client.delete(name)
                with self._lock:
                    self.expirations += 1
                return None
            agent_text = agent.decode("utf-8") if isinstance(agent, bytes) else None
            if not isinstance(value, bytes) or not self._signer.verify(
                key, value, mac, agent_text, expires_at
            ):
                raise _BadEntry("its HMAC does not match (tampered, truncated or another secret)")
            payload = orjson.loads(value)
            if not isinstance(payload, dict) or not isinstance(agent, bytes):
                raise _BadEntry("it does not parse as a cache entry")
            agent_name = agent.decode("utf-8")
        except (_BadEntry, ValueError, TypeError) as exc:
            reason = str(exc) if isinstance(exc, _BadEntry) else "it does not parse"
            self._client.delete(name)
            with self._lock:
                self.integrity_failures += 1
            self._log.warning(
                "integrity",
                "Redis cache at %s: dropped entry %s… because %s; further failures are "
                "counted in stats()['integrity_failures']",
                self.url,
                key[:12],
                reason,
            )
            return None
        return StoredEntry(payload, agent_name, len(value), expires_at)

    def _write(self, key: str, agent: str, value: bytes, expires_at: float | None) -> None:
        name = PREFIX + key
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(
            name,
            mapping={
                "v": value,
                "m": self._signer.sign(key, value, agent, expires_at),
                "a": agent,
                "e": "" if expires_at is None else repr(expires_at),
            },
        )
        if expires_at is None:
            pipe.persist(name)
        else:
            pipe.pexpire(name, max(1, int((expires_at - self._clock()) * 1000)))
        pipe.execute()

    def _read_many(self, keys: Sequence[str]) -> list[StoredEntry | None]:
        return [self._read(key) for key in keys]

    def _write_many(self, entries: Sequence[tuple[str, str, bytes, float | None]]) -> None:
        for key, agent, value, expires_at in entries:
            self._write(key, agent, value, expires_at)

    def _scan(self) -> Any:
        return self._client.scan_iter(match=PREFIX + "*", count=_SCAN_BATCH)

    def _batches(self) -> Any:
        batch: list[bytes] = []
        for name in self._scan():
            batch.append(name)
            if len(batch) >= _SCAN_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    def _clear(self) -> int:
        removed = 0
        for batch in self._batches():
            removed += int(self._client.unlink(*batch))
        return removed

    def _invalidate(self, agent: str | None, key: str | None) -> int:
        if key is not None:
            name = PREFIX + key
            if agent is not None and self._client.hget(name, "a") != agent.encode("utf-8"):
                return 0
            return int(self._client.delete(name))
        assert agent is not None
        wanted = agent.encode("utf-8")
        removed = 0
        for batch in self._batches():
            pipe = self._client.pipeline(transaction=False)
            for name in batch:
                pipe.hget(name, "a")
            owners = pipe.execute()
            doomed = [n for n, owner in zip(batch, owners, strict=True) if owner == wanted]
            if doomed:
                removed += int(self._client.unlink(*doomed))
        return removed

    def _counts(self) -> tuple[int, int]:
        entries = size = 0
        for batch in self._batches():
            pipe = self._client.pipeline(transaction=False)
            for name in batch:
                pipe.hstrlen(name, "v")
            lengths = pipe.execute()
            entries += sum(1 for n in lengths if n)
            size += sum(int(n) for n in lengths)
        return entries, size
