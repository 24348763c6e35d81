"""Tests of where the quota's buckets live: in memory, in SQLite shared by processes, in Redis.

The same steps run against every store (Redis a real `redis-server` on loopback, started as in
`test_cache_redis`; without a binary these tests FAIL saying how to get one). Rates are tiny
(one request per 100 s), so the few milliseconds a test takes refill nothing that counts and
every assertion is a count; a refill over time is checked with a fake clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentnb.config import Config
from agentnb.errors import ConfigError
from agentnb.loop import run_sync
from agentnb.quota import Limits
from agentnb.quota.store_redis import PREFIX, RedisStore
from agentnb.quota.store_sqlite import SqliteStore
from agentnb.quota.stores import BucketStore, Fallback, LocalStore, make_store

sys.path.insert(0, str(Path(__file__).parent))
from cache_helpers import FakeClock
from test_cache_redis import RedisServer, find_redis_server

KEY = "api|sonnet"
#: One request per 100 s, ten in a burst; input tokens likewise at 100 and 0.1 per second.
SLOW = Limits(rpm=0.6, itpm=6.0, otpm=None, burst_s=1000.0)
REQ = (1.0, 0.0, 0.0)


def near(x: float) -> object:
    """`x`, give or take what the slow rates refill while a test runs."""
    return pytest.approx(x, abs=0.01)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "agentnb" and r.levelno >= logging.WARNING
    ]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(find_redis_server(), tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture(params=["local", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BucketStore]:
    made: BucketStore
    if request.param == "local":
        made = LocalStore()
    elif request.param == "sqlite":
        made = SqliteStore(tmp_path / "quota.db")
    else:
        made = RedisStore(request.getfixturevalue("redis_server").url)
    yield made
    await made.aclose()


async def take_all(store: BucketStore, limits: Limits = SLOW, key: str = KEY) -> int:
    """Take one request at a time until one must wait; how many were taken."""
    n = 0
    while await store.take(key, limits, REQ) == 0.0:
        n += 1
        assert n <= 1000, "the bucket never ran dry"
    return n


# -- the same steps on every store ---------------------------------------------------------------


async def test_a_new_key_starts_full_and_a_dry_bucket_says_how_long_to_wait(
    store: BucketStore,
) -> None:
    assert await take_all(store) == 10
    wait = await store.take(KEY, SLOW, REQ)
    assert 99.0 < wait <= 100.0  # one request at 0.01 per second
    (requests, tokens, output), paused = await store.snapshot(KEY, SLOW)
    assert requests == near(0.0)
    assert tokens == near(100.0) and output == math.inf and paused == 0.0
    assert await take_all(store, key="api|haiku") == 10  # keys are independent


async def test_a_wait_takes_nothing_and_a_cost_over_the_burst_goes_when_full(
    store: BucketStore,
) -> None:
    assert await store.take(KEY, SLOW, (1, 500, 0)) == 0.0  # 500 tokens > a burst of 100
    (requests, tokens, _), _ = await store.snapshot(KEY, SLOW)
    assert requests == near(9.0) and tokens == near(-400.0)
    wait = await store.take(KEY, SLOW, (1, 1, 0))
    assert 4009.0 < wait <= 4010.0  # the debt is paid back first
    (requests, _, _), _ = await store.snapshot(KEY, SLOW)
    assert requests == near(9.0)  # nothing taken while waiting


async def test_give_returns_up_to_the_capacity_and_a_negative_amount_takes(
    store: BucketStore,
) -> None:
    assert await take_all(store) == 10
    await store.give(KEY, SLOW, (3, 0, 0))
    assert await take_all(store) == 3
    await store.give(KEY, SLOW, (100, 0, 0))
    await store.give(KEY, SLOW, (-4, -30, 0))
    (requests, tokens, _), _ = await store.snapshot(KEY, SLOW)
    assert requests == near(6.0) and tokens == near(70.0)


async def test_lower_to_never_believes_more_than_the_server_said(store: BucketStore) -> None:
    await store.lower_to(KEY, SLOW, (4, None, None))
    await store.lower_to(KEY, SLOW, (8, 50, None))  # more than now: no change for requests
    (requests, tokens, _), _ = await store.snapshot(KEY, SLOW)
    assert requests == near(4.0) and tokens == near(50.0)
    assert await take_all(store) == 4


async def test_a_pause_holds_every_take_until_it_ends(store: BucketStore) -> None:
    until = time.time() + 50.0
    await store.pause(KEY, SLOW, until)
    await store.pause(KEY, SLOW, until - 20.0)  # an earlier end does not shorten it
    wait = await store.take(KEY, SLOW, REQ)
    assert 49.0 < wait <= 50.0
    (requests, _, _), paused = await store.snapshot(KEY, SLOW)
    assert requests == near(10.0) and paused == pytest.approx(until, abs=0.5)


async def test_new_limits_rescale_the_levels(store: BucketStore) -> None:
    assert await store.take(KEY, SLOW, (5, 0, 0)) == 0.0  # half the burst of 10 left
    double = SLOW._replace(rpm=1.2)  # a burst of 20: still half full
    (requests, _, _), _ = await store.snapshot(KEY, double)
    assert requests == near(10.0)
    assert await take_all(store, double) == 10
    unlimited = SLOW._replace(rpm=None)
    assert (await store.snapshot(KEY, unlimited))[0][0] == math.inf
    assert await store.take(KEY, unlimited, (1000, 0, 0)) == 0.0
    (requests, _, _), _ = await store.snapshot(KEY, SLOW)  # limited again: starts full
    assert requests == near(10.0)


@pytest.mark.parametrize("kind", ["local", "sqlite"])
async def test_buckets_refill_with_the_clock(kind: str, tmp_path: Path) -> None:
    clock = FakeClock()
    store: BucketStore = (
        LocalStore(clock=clock) if kind == "local" else SqliteStore(tmp_path / "q.db", clock=clock)
    )
    limits = Limits(rpm=60, burst_s=5.0)  # one a second, five in a burst
    try:
        assert await take_all(store, limits) == 5
        assert await store.take(KEY, limits, REQ) == pytest.approx(1.0)
        clock.advance(2.5)
        assert await take_all(store, limits) == 2
        assert await store.take(KEY, limits, REQ) == pytest.approx(0.5)
        clock.advance(100)
        assert await take_all(store, limits) == 5  # never above the burst
    finally:
        await store.aclose()


# -- choosing a store ------------------------------------------------------------------------


async def test_make_store_by_name_and_auto(tmp_path: Path) -> None:
    state = tmp_path / "state" / "agentnb"

    made: list[BucketStore] = []

    def kind(**settings: object) -> str:
        made.append(make_store(Config(state_dir=state, **settings)))  # type: ignore[arg-type]
        return made[-1].name

    try:
        assert kind() == "sqlite"  # auto, with the default SQLite cache
        assert (state / "quota.db").is_file() and (state.stat().st_mode & 0o777) == 0o700
        assert kind(cache_backend="memory") == "local"
        assert kind(cache_enabled=False) == "local"
        assert kind(ratelimit_backend="local") == "local"
        assert kind(ratelimit_backend="sqlite", cache_backend="none") == "sqlite"
        assert isinstance(made[-1], SqliteStore)
        assert kind(ratelimit_backend="redis", redis_url="redis://127.0.0.1:1/0") == "redis"
        assert isinstance(made[-1], RedisStore)  # made without connecting
    finally:
        for store in made:
            await store.aclose()


def test_bad_settings_are_one_clear_error(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(ConfigError, match=r"state_dir .* is a file"):
        make_store(Config(ratelimit_backend="sqlite", state_dir=a_file))
    with pytest.raises(ConfigError, match="cannot create state_dir"):
        make_store(Config(ratelimit_backend="sqlite", state_dir=a_file / "below"))
    with pytest.raises(ConfigError, match="not a valid Redis URL"):
        make_store(Config(ratelimit_backend="redis", redis_url="http://127.0.0.1:1"))


# -- SQLite: shared by processes -----------------------------------------------------------------

# A process hammering one key: "ready", then on a line from stdin, takes for DURATION seconds.
HAMMER = """
import asyncio, json, sys, time
from pathlib import Path
from agentnb.quota import Limits
from agentnb.quota.store_sqlite import SqliteStore

async def main(db: str, rpm: float, duration: float) -> None:
    store = SqliteStore(Path(db))
    limits = Limits(rpm=rpm, burst_s=1.0)
    print("ready", flush=True)
    sys.stdin.readline()
    first = time.time()
    taken = tries = 0
    while time.time() < first + duration:
        tries += 1
        if await store.take("api|sonnet", limits, (1, 0, 0)) == 0.0:
            taken += 1
    last = time.time()
    await store.aclose()
    print(json.dumps({"taken": taken, "tries": tries, "first": first, "last": last}))

asyncio.run(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3])))
"""


def test_two_processes_share_one_quota_atomically(tmp_path: Path) -> None:
    rpm, duration = 1200.0, 1.0  # 20 a second, a burst of 20
    db = tmp_path / "quota.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    args = [sys.executable, "-c", HAMMER, str(db), str(rpm), str(duration)]
    procs = [
        subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=30)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [0, 0]
    results = [json.loads(out) for out in outs]
    taken = [r["taken"] for r in results]
    elapsed = max(r["last"] for r in results) - min(r["first"] for r in results)
    rate, burst = rpm / 60, 20
    assert sum(taken) <= burst + rate * elapsed + 1, (taken, elapsed)
    assert sum(taken) >= burst, taken  # the burst at least was used
    assert min(taken) >= 1, taken  # neither process starved
    assert sum(r["tries"] for r in results) > 4 * sum(taken)  # they did contend


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_uses_the_database_on_a_connection_of_its_own(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "quota.db", clock=lambda: 1_000_000.0)
    assert run_sync(store.take(KEY, SLOW, (3, 0, 0))) == 0.0  # the thread and connection exist
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its own takes went through the shared file
        code = 1
        try:
            if run_sync(store.take(KEY, SLOW, (4, 0, 0))) == 0.0:
                levels, _ = run_sync(store.snapshot(KEY, SLOW))
                code = 0 if levels[0] == 3.0 else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hangs")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert run_sync(store.snapshot(KEY, SLOW))[0][0] == 3.0  # the parent sees the child's take
    run_sync(store.aclose())


async def test_a_locked_database_falls_back_to_local_buckets_then_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore(tmp_path / "quota.db", busy_timeout_s=0.05, retry_s=0.0)
    assert await store.take(KEY, SLOW, (3, 0, 0)) == 0.0
    other = sqlite3.connect(tmp_path / "quota.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # a process stuck in a transaction
    try:
        with caplog.at_level(logging.INFO, logger="agentnb"):
            assert await take_all(store) == 10  # this process's own buckets, full
            assert len(warnings_of(caplog)) == 1 and "quota.db" in warnings_of(caplog)[0]
            other.execute("ROLLBACK")
            assert await take_all(store) == 7  # the shared row again
        assert any("works again" in r.getMessage() for r in caplog.records)
        assert len(warnings_of(caplog)) == 1
    finally:
        other.close()
        await store.aclose()


def test_the_fallback_tries_again_once_per_interval() -> None:
    clock = FakeClock(0.0)
    fallback = Fallback("the store", retry_s=30.0, clock=clock)
    fallback.clients = 3
    assert fallback.try_shared()
    fallback.failed(OSError("gone"))
    assert fallback.share(Limits(rpm=90, itpm=None, otpm=30)) == Limits(30, None, 10)
    clock.advance(29)
    assert not fallback.try_shared()
    clock.advance(1)
    assert fallback.try_shared() and not fallback.try_shared()  # one probe, the rest local
    fallback.failed(OSError("still gone"))
    clock.advance(30)
    assert fallback.try_shared()
    fallback.succeeded()
    assert not fallback.down and fallback.try_shared()


# -- Redis: shared by machines -------------------------------------------------------------------


async def test_two_redis_clients_share_one_quota_and_count_each_other(
    redis_server: RedisServer,
) -> None:
    first, second = (RedisStore(redis_server.url, heartbeat_s=0.0) for _ in range(2))
    try:
        taken = await asyncio.gather(take_all(first), take_all(second))
        assert sum(taken) == 10 and min(taken) >= 1, taken
        assert await first.take(KEY, SLOW, REQ) > 0 and await second.take(KEY, SLOW, REQ) > 0
        assert (first.live_clients, second.live_clients) == (2, 2)
        with redis_server.client() as c:
            assert c.zcard(PREFIX + "clients") == 2
            # Gone once the buckets are full again (10 requests at 0.01 per second), plus 60 s.
            assert 1_000_000 < c.pttl(PREFIX + "b:" + KEY) <= 1_060_000
            await first.aclose()
            assert c.zcard(PREFIX + "clients") == 1
    finally:
        await first.aclose()
        await second.aclose()


async def test_redis_killed_mid_run_falls_back_to_a_share_then_comes_back(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    limits = SLOW._replace(rpm=1.2)  # a burst of 20; half of it for each of two clients
    first = RedisStore(redis_server.url, heartbeat_s=0.0, retry_s=0.0)
    second = RedisStore(redis_server.url, heartbeat_s=0.0)
    try:
        assert await second.take(KEY, limits, REQ) == 0.0
        assert await first.take(KEY, limits, REQ) == 0.0
        assert first.live_clients == 2
        redis_server.kill()
        with caplog.at_level(logging.INFO, logger="agentnb"):
            assert await take_all(first, limits) == 10  # a fresh local bucket at 1/2 the quota
            await first.give(KEY, limits, (2, 0, 0))
            await first.lower_to(KEY, limits, (None, 40, None))
            await first.pause(KEY, limits, 0.0)
            (requests, tokens, _), _ = await first.snapshot(KEY, limits)
            assert requests == near(2.0) and tokens == near(40.0)
            assert not first.available
            (warning,) = warnings_of(caplog)  # every step tried Redis again: still one
            assert redis_server.url in warning and "1/2" in warning

            redis_server.start()  # same port, empty (no persistence)
            assert await take_all(first, limits) == 20  # shared again, starting full
            assert first.available
        assert any("works again" in r.getMessage() for r in caplog.records)
        assert len(warnings_of(caplog)) == 1
    finally:
        await first.aclose()
        await second.aclose()


def test_misconfigured_or_missing_redis_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="not a valid Redis URL"):
        RedisStore("http://127.0.0.1:1")
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigError, match=r"agentnb\[redis\]"):
        RedisStore("redis://127.0.0.1:1/0")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_makes_its_own_redis_client(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    assert run_sync(store.take(KEY, SLOW, (3, 0, 0))) == 0.0  # a connection exists
    parent_id = store.client_id
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if run_sync(store.take(KEY, SLOW, (4, 0, 0))) == 0.0 and store.available:
                code = 0 if store.client_id != parent_id else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hangs")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert run_sync(store.snapshot(KEY, SLOW))[0][0] == near(3.0)
    run_sync(store.aclose())
