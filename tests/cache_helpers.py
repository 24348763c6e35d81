"""Child processes for the cache tests: concurrent writers/readers and a writer to be killed.

Run as a script (`python tests/cache_helpers.py MODE ...`) with `AGENTNB_CACHE_SECRET` set and
the repository on `PYTHONPATH`; the test modules import the key/payload helpers from here too,
so parent and children agree on what each entry must hold.

Modes:
    share CACHE_DIR MINE OTHER N   print "ready", wait for CACHE_DIR.go, then write N entries
                                   of prefix MINE while reading those of OTHER; prints one
                                   JSON line {"written": N, "seen_other": k}
    churn CACHE_DIR PREFIX BYTES   write entries of about 64 KB forever (disk bound BYTES),
                                   printing each index once its `set` has returned (the
                                   parent SIGKILLs it)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any


class FakeClock:
    """A wall clock that only moves when told to."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def entry_key(prefix: str, i: int) -> str:
    """The cache key of entry `i` of a writer."""
    return hashlib.sha256(f"{prefix}-{i}".encode()).hexdigest()


def entry_payload(prefix: str, i: int, *, size: int = 200) -> dict[str, Any]:
    """What entry `i` of a writer must hold, padded to about `size` bytes."""
    body = f"{prefix}-{i}:"
    return {"text": (body * (size // len(body) + 1))[:size], "i": i, "prefix": prefix}


def _cache(cache_dir: str, disk_bytes: int = 1 << 30) -> Any:
    from agentnb.cache import ResponseCache
    from agentnb.config import Config

    return ResponseCache(
        Config(
            cache_backend="sqlite",
            cache_dir=Path(cache_dir),
            cache_memory_entries=16,
            cache_disk_bytes=disk_bytes,
        )
    )


async def _share(cache_dir: str, mine: str, other: str, n: int) -> dict[str, int]:
    # Open the (fresh) directory at the same moment as the other writer: the parent creates
    # the go-file once both have said they are ready.
    print("ready", flush=True)
    go = Path(cache_dir + ".go")
    while not go.exists():
        time.sleep(0.002)
    cache = _cache(cache_dir)
    seen: set[int] = set()
    for i in range(n):
        await cache.set(entry_key(mine, i), entry_payload(mine, i), agent=mine)
        for j in range(i + 1):
            if j in seen:
                continue
            hit = await cache.get(entry_key(other, j))
            if hit is not None:
                if hit[0] != entry_payload(other, j):
                    raise AssertionError(f"entry {other}-{j} holds {hit[0]!r}")
                seen.add(j)
            break  # one probe of the other writer per write keeps both busy on the file
    deadline = time.monotonic() + 30
    while len(seen) < n and time.monotonic() < deadline:  # the other writer may still be busy
        for j in range(n):
            if j not in seen and await cache.get(entry_key(other, j)) is not None:
                seen.add(j)
        await asyncio.sleep(0.01)
    await cache.aclose()
    return {"written": n, "seen_other": len(seen)}


async def _churn(cache_dir: str, prefix: str, disk_bytes: int) -> None:
    cache = _cache(cache_dir, disk_bytes)
    i = 0
    while True:
        await cache.set(entry_key(prefix, i), entry_payload(prefix, i, size=64_000), agent=prefix)
        print(i, flush=True)
        i += 1


def main(argv: list[str]) -> int:
    mode, *args = argv
    if mode == "share":
        cache_dir, mine, other, n = args
        print(json.dumps(asyncio.run(_share(cache_dir, mine, other, int(n)))), flush=True)
        return 0
    if mode == "churn":
        cache_dir, prefix, disk_bytes = args
        asyncio.run(_churn(cache_dir, prefix, int(disk_bytes)))
        return 0
    print(f"unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
