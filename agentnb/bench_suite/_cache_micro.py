"""A micro-benchmark of the cache tiers, and of `diskcache` on the same data when installed.

Behind the suite's cache section (`_caching`); it reaches into the tiers of `agentnb.cache`
to time each one alone.

Each figure is one tier's own synchronous call, timed with `perf_counter_ns` over `samples`
calls on a cache already holding `n_entries` entries of about `payload_bytes` of JSON each:

- memory `hit`: `make_key` of a request whose task is `task_bytes` long + `MemoryTier.get`;
- memory `cache.get`: `await ResponseCache.get(key)` answered by memory, on a running loop;
- sqlite `cache.get`: the same answered by SQLite (memory holds one entry), thread hop included;
- sqlite `get` / `set`: `SQLiteTier.read` (HMAC check and JSON decode included) of a random
  present key / `SQLiteTier.write` of a new key, run on the tier's own thread;
- diskcache `get` / `set`: `Cache.get` (+ `json.loads`, to match) / `Cache.set` of the same bytes.

Example:
    >>> rows = bench_cache(200, samples=50, include_diskcache=False)
    >>> sorted({r["store"] for r in rows})
    ['memory', 'sqlite']
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..cache.core import ResponseCache
from ..cache.integrity import Signer
from ..cache.keys import make_key
from ..cache.memory import MemoryTier
from ..cache.schema import DB_NAME, UPSERT
from ..cache.sqlite import SQLiteTier
from ..config import Config

__all__ = ["bench_cache", "latency_row", "memory_hits"]

_SECRET = b"agentnb-bench-secret-0123456789ab"


def _percentiles(ns: list[int]) -> tuple[float, float]:
    ordered = sorted(ns)
    p50 = statistics.median(ordered) / 1000
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] / 1000
    return round(p50, 2), round(p99, 2)


def latency_row(store: str, op: str, n: int, ns: list[int], note: str) -> dict[str, Any]:
    """One result row: p50 and p99 in µs of the `ns` timings of `op` on `store`."""
    p50, p99 = _percentiles(ns)
    return {
        "store": store,
        "op": op,
        "entries": n,
        "samples": len(ns),
        "p50_us": p50,
        "p99_us": p99,
        "note": note,
    }


def _time(fn: Callable[[int], object], samples: int) -> list[int]:
    clock = time.perf_counter_ns
    out = []
    for i in range(samples):
        t0 = clock()
        fn(i)
        out.append(clock() - t0)
    return out


def bench_cache(
    n_entries: int,
    *,
    payload_bytes: int = 2048,
    task_bytes: int = 2048,
    samples: int = 2000,
    directory: str | Path | None = None,
    include_diskcache: bool = True,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Latency rows (`store`, `op`, `entries`, `samples`, `p50_us`, `p99_us`, `note`).

    `directory` holds the databases (a fresh temporary one by default, removed afterwards).
    `diskcache` rows are added when it is importable and `include_diskcache` is true.
    """
    data = _Dataset(n_entries, samples, payload_bytes, task_bytes, seed)
    keys, values, present = data.keys, data.values, data.present
    rows: list[dict[str, Any]] = []

    # -- memory tier --------------------------------------------------------------------------
    memory_hit = data.memory_hit()
    rows.append(
        latency_row("memory", "hit", n_entries, _time(memory_hit, samples), "make_key + get")
    )
    del memory_hit  # frees the tier
    in_memory = Config(
        cache_backend="memory", cache_memory_entries=n_entries, cache_memory_bytes=1 << 40
    )
    memory_gets = _async_gets(in_memory, keys[:n_entries], samples, fill=True)
    rows.append(
        latency_row("memory", "cache.get", n_entries, memory_gets, "await, on a running loop")
    )

    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        # -- SQLite tier ------------------------------------------------------------------------
        tier = SQLiteTier(Path(tmp) / DB_NAME, signer=Signer(_SECRET), max_bytes=1 << 40)
        signer = Signer(_SECRET)
        now = time.time()

        def fill() -> None:
            conn = tier.connection
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                UPSERT,
                (
                    (
                        keys[i],
                        "writer",
                        values[i],
                        signer.sign(keys[i], values[i], "writer"),
                        len(values[i]),
                        now,
                        now,
                        None,
                    )
                    for i in range(n_entries)
                ),
            )
            conn.execute("COMMIT")

        tier.call(fill)
        get_ns = tier.call(_time, lambda s: tier.read(keys[present[s]]), samples)
        set_ns = tier.call(
            _time,
            lambda s: tier.write(keys[n_entries + s], "writer", values[n_entries + s], None),
            samples,
        )
        tier.close()
        rows.append(latency_row("sqlite", "get", n_entries, get_ns, "read + HMAC + json.loads"))
        rows.append(latency_row("sqlite", "set", n_entries, set_ns, "WAL, synchronous=NORMAL"))
        on_disk = Config(cache_backend="sqlite", cache_dir=Path(tmp), cache_memory_entries=1)
        disk_gets = _async_gets(on_disk, keys[:n_entries], samples, fill=False)
        rows.append(
            latency_row("sqlite", "cache.get", n_entries, disk_gets, "await, via its thread")
        )

        # -- diskcache on the same data ---------------------------------------------------------
        if include_diskcache and importlib.util.find_spec("diskcache") is not None:
            # An optional extra without type hints: imported by name, used as Any.
            diskcache: Any = importlib.import_module("diskcache")
            dc = diskcache.Cache(str(Path(tmp) / "diskcache"))
            with dc.transact():
                for i in range(n_entries):
                    dc.set(keys[i], values[i])
            dc_get = _time(lambda s: json.loads(dc.get(keys[present[s]])), samples)
            dc_set = _time(lambda s: dc.set(keys[n_entries + s], values[n_entries + s]), samples)
            dc.close()
            rows.append(latency_row("diskcache", "get", n_entries, dc_get, "get + json.loads"))
            rows.append(latency_row("diskcache", "set", n_entries, dc_set, "default settings"))
    return rows


class _Dataset:
    """`n_entries` + `samples` keys of requests with a `task_bytes` task and payloads of about
    `payload_bytes` of JSON; `present[s]` is the entry the `s`-th lookup asks for."""

    def __init__(
        self, n_entries: int, samples: int, payload_bytes: int, task_bytes: int, seed: int
    ) -> None:
        rng = random.Random(seed)
        alphabet = "abcdefghijklmnopqrstuvwxyz     "
        self.n_entries = n_entries
        self.text = "".join(rng.choice(alphabet) for _ in range(payload_bytes))
        self.task = "".join(rng.choice(alphabet) for _ in range(task_bytes))
        self.keys = [self.key_of(i) for i in range(n_entries + samples)]
        self.values = [
            json.dumps(self.payload(i), separators=(",", ":")).encode()
            for i in range(len(self.keys))
        ]
        self.present = [rng.randrange(n_entries) for _ in range(samples)]

    def payload(self, i: int) -> dict[str, Any]:
        return {
            "text": self.text,
            "model": "claude-sonnet-5-5",
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 100 + i, "output_tokens": 500, "cache_read_tokens": 0},
        }

    def key_of(self, i: int) -> str:
        """The key of entry `i`, built anew on every call (as each lookup does)."""
        return make_key(
            backend="simulated",
            agent="writer",
            prompt_hash="0" * 64,
            model="claude-sonnet-5-5",
            system="You write.",
            messages=[{"role": "user", "content": f"{i} {self.task}"}],
            max_tokens=1024,
            temperature=None,
        )

    def memory_hit(self) -> Callable[[int], None]:
        """A memory tier holding the entries, and its `s`-th lookup: `make_key` + `get`."""
        memory = MemoryTier(max_entries=len(self.keys), max_bytes=1 << 40)
        for i in range(self.n_entries):
            size = len(self.values[i])
            memory.set(self.keys[i], self.payload(i), agent="writer", size=size, expires_at=None)
        key_of, present = self.key_of, self.present

        def hit(s: int) -> None:
            memory.get(key_of(present[s]))

        return hit


def memory_hits(
    n_entries: int, samples: int, *, payload_bytes: int = 2048, task_bytes: int = 2048
) -> Callable[[], None]:
    """A run of `samples` memory-tier hits (the key built per lookup) on a fresh tier of
    `n_entries` entries: the code behind the `memory hit` figure, for a profiler."""
    hit = _Dataset(n_entries, samples, payload_bytes, task_bytes, 0).memory_hit()

    def run() -> None:
        for s in range(samples):
            hit(s)

    return run


def _async_gets(config: Config, keys: list[str], samples: int, *, fill: bool) -> list[int]:
    """`await cache.get(key)` of random present keys, timed inside a running loop."""
    cache = ResponseCache(config, secret=_SECRET)
    rng = random.Random(1)

    async def run() -> list[int]:
        if fill:
            for key in keys:
                await cache.set(key, {"text": "x" * 64}, agent="writer")
        clock = time.perf_counter_ns
        out = []
        for _ in range(samples):
            key = keys[rng.randrange(len(keys))]
            t0 = clock()
            await cache.get(key)
            out.append(clock() - t0)
        await cache.aclose()
        return out

    return asyncio.run(run())
