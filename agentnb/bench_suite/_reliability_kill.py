"""Writers of one SQLite cache SIGKILLed at random moments: does the database open clean after?

Each round starts `writers` child processes that write entries of a known content into one
shared cache directory as fast as they can (every other round with a disk bound small enough
that each write also evicts, so transactions span several rows), and kills each with SIGKILL
after a random number of writes plus a random sub-write delay. Then the database is reopened:
`PRAGMA integrity_check` must say `ok`, and every entry present must come back through a fresh
`ResponseCache`, verified and equal to what its writer wrote (no half entry served, none
dropped as bad). The directory carries over from round to round, so later rounds open what
earlier kills left.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..cache import ResponseCache
from ..cache.schema import DB_NAME
from ..config import Config
from ..loop import run_sync
from ._common import _SECRET, Row
from ._reliability_common import probe_row, scratch_dir

__all__ = ["bench_kills", "entry_key", "entry_payload", "writer_child"]

_CHILD_LIFETIME_S = 60.0  # a writer never outlives this, even if nobody kills it


def entry_key(prefix: str, i: int) -> str:
    """The cache key of a writer's entry `i`."""
    return hashlib.sha256(f"{prefix}-{i}".encode()).hexdigest()


def entry_payload(prefix: str, i: int, size: int) -> dict[str, Any]:
    """What a writer's entry `i` holds, about `size` bytes."""
    body = f"{prefix}-{i}:"
    return {"text": (body * (size // len(body) + 1))[:size], "i": i, "prefix": prefix}


def _cache(cache_dir: Path, disk_bytes: int = 1 << 30) -> ResponseCache:
    cfg = Config(
        cache_backend="sqlite",
        cache_dir=cache_dir,
        cache_memory_entries=16,
        cache_disk_bytes=disk_bytes,
    )
    return ResponseCache(cfg, secret=_SECRET)


def writer_child(cache_dir: str, prefix: str, disk_bytes: int, size: int) -> None:
    """Run in a child: write entries until killed, printing each index once its set returned."""
    cache = _cache(Path(cache_dir), disk_bytes)

    async def churn() -> None:
        deadline = time.monotonic() + _CHILD_LIFETIME_S
        i = 0
        while time.monotonic() < deadline:
            await cache.set(entry_key(prefix, i), entry_payload(prefix, i, size), agent=prefix)
            print(i, flush=True)
            i += 1

    asyncio.run(churn())


class _Writer:
    """One writer child and the lines it printed (read without blocking past a deadline)."""

    def __init__(self, cache_dir: Path, prefix: str, disk_bytes: int, size: int) -> None:
        code = (
            "from agentnb.bench_suite._reliability_kill import writer_child; "
            f"writer_child({str(cache_dir)!r}, {prefix!r}, {disk_bytes}, {size})"
        )
        self.prefix = prefix
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._buffer = b""
        self.done = -1  # the last index whose set returned

    def wait_for(self, writes: int, deadline: float) -> bool:
        """Read lines until `writes` sets have returned; False if the child died or time ran out."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while self.done + 1 < writes:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return False
            chunk = os.read(fd, 65536)
            if not chunk:
                return False
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            if lines:
                self.done = int(lines[-1])
        return True

    def kill(self) -> tuple[bool, str]:
        """SIGKILL it and reap it; (whether it was SIGKILL that ended it, its stderr's tail)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode == -signal.SIGKILL, err.decode("utf-8", "replace")[-300:]


def _check(cache_dir: Path, writers: dict[str, int], size: int) -> tuple[int, list[str]]:
    """Reopen after the kills: (entries read back, problems). Each prefix maps to its last
    index printed (the entry after it may have committed too)."""
    problems: list[str] = []
    conn = sqlite3.connect(cache_dir / DB_NAME)
    try:
        verdict = conn.execute("PRAGMA integrity_check").fetchall()
        keys = [k for (k,) in conn.execute("SELECT key FROM entries")]
    finally:
        conn.close()
    if verdict != [("ok",)]:
        problems.append(f"integrity_check: {verdict[:3]}")
    expected = {
        entry_key(p, i): entry_payload(p, i, size)
        for p, last in writers.items()
        for i in range(last + 2)
    }
    cache = _cache(cache_dir)
    try:
        for key in keys:
            if key not in expected:
                continue  # an earlier round's entry: that round checked it
            hit = run_sync(cache.get(key))
            if hit is None:
                problems.append(f"entry {key[:12]} present but not served")
            elif hit[0] != expected[key]:
                problems.append(f"entry {key[:12]} served with other content")
        failures = cache.stats()["integrity_failures"]
        if failures:
            problems.append(f"{failures} rows dropped as bad (half-written)")
    finally:
        cache.close()
    return sum(1 for k in keys if k in expected), problems


def bench_kills(
    rounds: int,
    *,
    writers: int = 2,
    size: int = 16_000,
    seed: int | None = None,
    after_kill: Callable[[Path], None] | None = None,
) -> list[Row]:
    """`rounds` x `writers` SIGKILLs; one row. `after_kill(cache_dir)` runs after each round's
    kills, before the check (the tests spoil a row there to see the check fail)."""
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    kills = survived = read_back = 0
    failures: list[str] = []
    with scratch_dir("kills") as tmp:
        cache_dir = tmp / "cache"
        for r in range(rounds):
            bound = 12 * (size + 200) if r % 2 else 1 << 30
            children = [_Writer(cache_dir, f"r{r}w{w}", bound, size) for w in range(writers)]
            lasts: dict[str, int] = {}
            round_ok = True
            try:
                for child in children:
                    target = rng.randint(3, 30)
                    if not child.wait_for(target, time.monotonic() + 30):
                        round_ok = False
                        failures.append(f"round {r}: {child.prefix} stopped before {target} writes")
                    time.sleep(rng.uniform(0, 0.004))  # land somewhere inside the next write
                    by_kill, err = child.kill()
                    kills += 1
                    lasts[child.prefix] = child.done
                    if not by_kill:
                        round_ok = False
                        failures.append(f"round {r}: {child.prefix} exited by itself: {err}")
            finally:
                for child in children:
                    child.kill()
            if after_kill is not None:
                after_kill(cache_dir)
            present, problems = _check(cache_dir, lasts, size)
            read_back += present
            failures += [f"round {r}: {p}" for p in problems]
            if round_ok and not problems:
                survived += len(children)
    return [
        probe_row(
            "SIGKILLs survived",
            f"{writers} writers on one SQLite cache dir, SIGKILLed after 3-30 writes "
            f"(every other round evicting); seed {seed}",
            kills,
            f"{survived} of {kills}: integrity_check ok, {read_back} entries read back whole",
            "all (integrity ok, no half entry served)",
            survived == kills and kills > 0,
            detail=f"{rounds} rounds; entries of {size / 1000:g} KB",
            failures=failures,
        )
    ]
