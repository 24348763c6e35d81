"""Where the quota's buckets live: in this process, in SQLite (one machine) or in Redis (many).

The admission stage paces calls with three token buckets per key `"<endpoint scope>|<model
class>"`; a `BucketStore` keeps them and does each step atomically. Every method is awaited on
the home loop. Time is wall time (`time.time()`), so processes on one machine agree; Redis
uses its server's `TIME`.

- `LocalStore`: a dict of `Buckets` in this process, no I/O (nothing in it yields).
- `SqliteStore` (`store_sqlite`): `quota.db` in `state_dir`, shared atomically by the processes
  of one machine.
- `RedisStore` (`store_redis`): a hash per key on `redis_url`, shared by every machine.

A shared store that fails (Redis unreachable, the database locked past its busy timeout) does
not fail the call: it goes on with a `Fallback`, a `LocalStore` paced at this process's share
of the quota, logs one warning, and tries the shared store again every 30 s (one info line when
it works again).

`make_store(config)` picks one by `config.ratelimit_backend` from `STORES` (a name -> factory
registry); `"auto"` is `"sqlite"` when the response cache is SQLite, else `"local"`.

Example:
    >>> import asyncio
    >>> store = LocalStore(clock=lambda: 0.0)
    >>> limits = Limits(rpm=60, burst_s=2.0)
    >>> [asyncio.run(store.take("api|sonnet", limits, (1, 0, 0))) for _ in range(3)]
    [0.0, 0.0, 1.0]
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..errors import ConfigError
from .buckets import Buckets, Costs, Limits

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["STORES", "BucketStore", "Fallback", "LocalStore", "Remaining", "make_store"]

logger = logging.getLogger("agentnb")

T = TypeVar("T")

#: What a response said is left of each kind (None: it did not say).
Remaining = tuple[float | None, float | None, float | None]
#: Seconds between two tries of a shared store that failed.
RETRY_S = 30.0
#: The database's name in `state_dir`.
DB_NAME = "quota.db"


class BucketStore(Protocol):
    """Keeps the buckets of each quota key and does each step on them atomically.

    `limits` travels with every call: a key seen first starts full, and when `limits` differ
    from the stored ones the levels are rescaled (`Buckets.set_limits`).
    """

    name: str

    async def take(self, key: str, limits: Limits, costs: Costs) -> float:
        """Take `costs` if they fit now and return 0.0; else take nothing and return the
        seconds until they would fit (a pause counted)."""
        ...

    async def give(self, key: str, limits: Limits, amounts: Costs) -> None:
        """Reconcile: give `amounts` back (unused output); a negative amount takes more."""
        ...

    async def lower_to(self, key: str, limits: Limits, remaining: Remaining) -> None:
        """Never believe more is left than the server said."""
        ...

    async def pause(self, key: str, limits: Limits, until: float) -> None:
        """Take nothing before the wall time `until` (a 429's retry-after), in every process."""
        ...

    async def snapshot(self, key: str, limits: Limits) -> tuple[tuple[float, float, float], float]:
        """(levels now, paused-until wall time), for display; a level may be below zero (a
        debt) and is `inf` for an unlimited kind."""
        ...

    async def aclose(self) -> None:
        """Let go of threads and connections."""
        ...


class LocalStore:
    """The buckets of this process: a dict of `Buckets`, no I/O, no thread hop."""

    name = "local"

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._buckets: dict[str, Buckets] = {}

    def apply(self, key: str, limits: Limits, step: Callable[[Buckets, float], T]) -> T:
        """`step(buckets, now)` on `key`'s buckets (made full, or rescaled to `limits`)."""
        now = self._clock()
        buckets = self._buckets.get(key)
        if buckets is None:
            buckets = self._buckets[key] = Buckets(limits, now)
        elif buckets.limits != limits:
            buckets.set_limits(limits, now)
        return step(buckets, now)

    async def take(self, key: str, limits: Limits, costs: Costs) -> float:
        return self.apply(key, limits, lambda b, now: b.take(costs, now))

    async def give(self, key: str, limits: Limits, amounts: Costs) -> None:
        self.apply(key, limits, lambda b, now: b.give(amounts, now))

    async def lower_to(self, key: str, limits: Limits, remaining: Remaining) -> None:
        self.apply(key, limits, lambda b, now: b.lower_to(remaining, now))

    async def pause(self, key: str, limits: Limits, until: float) -> None:
        self.apply(key, limits, lambda b, now: b.pause(until))

    async def snapshot(self, key: str, limits: Limits) -> tuple[tuple[float, float, float], float]:
        return self.apply(key, limits, snapshot_of)

    async def aclose(self) -> None:
        pass


def snapshot_of(buckets: Buckets, now: float) -> tuple[tuple[float, float, float], float]:
    """What `snapshot` returns, read from `buckets` at `now`."""
    buckets.refill(now)
    levels = buckets.levels
    return (levels[0], levels[1], levels[2]), buckets.paused_until


class Fallback:
    """A shared store's stand-in while that store fails: this process's own buckets, each
    limit divided by `clients` (how many processes the store last saw sharing the quota).

    `try_shared()` says whether to use the shared store for this step: always while it works;
    while it is down, once every `retry_s` (the other steps meanwhile stay local). The first
    failure of an outage logs ONE warning, later ones nothing; the first success after it logs
    one info line, and the local buckets are dropped (the next outage starts them full).
    """

    def __init__(
        self, what: str, *, retry_s: float = RETRY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what = what
        self.clients = 1
        self.down = False
        self._retry_s = retry_s
        self._retry_at = 0.0
        self._clock = clock
        self._local = LocalStore()

    def share(self, limits: Limits) -> Limits:
        """This process's share of `limits`: each rate divided by the clients (at least 1)."""
        n = max(1, self.clients)
        if n == 1:
            return limits
        rpm, itpm, otpm = (None if x is None else x / n for x in limits.per_minute())
        return Limits(rpm, itpm, otpm, limits.burst_s)

    def apply(self, key: str, limits: Limits, step: Callable[[Buckets, float], T]) -> T:
        """`step` on this process's buckets of `key`, at its share of `limits`."""
        return self._local.apply(key, self.share(limits), step)

    def try_shared(self) -> bool:
        if not self.down:
            return True
        now = self._clock()
        if now < self._retry_at:
            return False
        self._retry_at = now + self._retry_s  # one probe per interval, not one per step
        return True

    def failed(self, exc: BaseException) -> None:
        self._retry_at = self._clock() + self._retry_s
        if self.down:
            return
        self.down = True
        n = max(1, self.clients)
        share = "the whole quota" if n == 1 else f"1/{n} of the quota ({n} clients shared it)"
        logger.warning(
            "%s failed (%s: %s); this process paces itself alone, with %s, and tries the "
            "store again every %g s",
            self.what,
            type(exc).__name__,
            exc,
            share,
            self._retry_s,
        )

    def succeeded(self) -> None:
        if not self.down:
            return
        self.down = False
        self._local = LocalStore()
        logger.info("%s works again; the quota is shared again", self.what)


def prepare_state_dir(path: Path, otherwise: str = " or set ratelimit_backend: local") -> Path:
    """`path` resolved and created 0700; `ConfigError` naming it when that is not possible
    (`otherwise`: what else the message suggests, after choosing another state_dir)."""
    resolved = Path(path).expanduser().resolve()
    if resolved.exists() and not resolved.is_dir():
        raise ConfigError(
            f"state_dir {resolved} is a file, not a directory; point state_dir "
            f"(AGENTNB_STATE_DIR) at a directory{otherwise}"
        )
    if not resolved.exists():
        try:
            resolved.mkdir(parents=True, mode=0o700)
            os.chmod(resolved, 0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            pass  # made by another process meanwhile
        except OSError as exc:
            raise ConfigError(
                f"cannot create state_dir {resolved}: {exc.strerror or exc}; choose another "
                f"state_dir{otherwise}"
            ) from None
    return resolved


def _local(config: Config) -> BucketStore:
    return LocalStore()


def _sqlite(config: Config) -> BucketStore:
    from .store_sqlite import SqliteStore

    return SqliteStore(prepare_state_dir(config.state_dir) / DB_NAME)


def _redis(config: Config) -> BucketStore:
    from .store_redis import RedisStore

    return RedisStore(config.redis_url)


#: `ratelimit_backend` name -> factory; a new kind of store is registered here.
STORES: dict[str, Callable[[Config], BucketStore]] = {
    "local": _local,
    "sqlite": _sqlite,
    "redis": _redis,
}


def make_store(config: Config) -> BucketStore:
    """The store `config.ratelimit_backend` names (`auto`: sqlite when the response cache is
    SQLite, else local). Raises `ConfigError` when it cannot be made (an unusable `state_dir`,
    a malformed `redis_url`, the `redis` package missing)."""
    name: str = config.ratelimit_backend
    if name == "auto":
        sqlite_cache = config.cache_enabled and config.cache_backend == "sqlite"
        name = "sqlite" if sqlite_cache else "local"
    try:
        factory = STORES[name]
    except KeyError:
        known = ", ".join(sorted(STORES))
        raise ConfigError(f"ratelimit_backend {name!r} is not one of: auto, {known}") from None
    return factory(config)
