"""Tests of the response cache: keys, memory and SQLite tiers, integrity, single-flight, control.

Every test points the config dir (key file) and the cache dir at `tmp_path`, never at the real
home. Redis has its own module, `test_cache_redis.py`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import hashlib
import hmac
import json
import logging
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentnb.cache import (
    SECRET_ENV,
    ResponseCache,
    canonical_json,
    key_file_path,
    load_secret,
    make_key,
    prepare_cache_dir,
    prompt_hash,
)
from agentnb.cache.integrity import Signer
from agentnb.cache.keys import key_document
from agentnb.cache.memory import MemoryTier
from agentnb.cache.schema import DB_NAME, EVICT_LRU
from agentnb.cache.sqlite import TOUCH_BATCH, SQLiteTier
from agentnb.config import Config
from agentnb.errors import CacheError
from agentnb.loop import HomeLoop

sys.path.insert(0, str(Path(__file__).parent))
from cache_helpers import FakeClock, entry_key, entry_payload

REPO = Path(__file__).resolve().parents[1]
HELPERS = Path(__file__).resolve().parent / "cache_helpers.py"
SECRET = b"test-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Key file and caches under tmp_path; no secret inherited from the environment."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv(SECRET_ENV, raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


CacheFactory = Callable[..., ResponseCache]


@pytest.fixture
def make_cache(cache_dir: Path, clock: FakeClock) -> Iterator[CacheFactory]:
    """Build caches on `cache_dir` with the fake clock; all are closed at the end."""
    made: list[ResponseCache] = []

    def factory(*, secret: bytes = SECRET, **overrides: Any) -> ResponseCache:
        settings_ = {"cache_backend": "sqlite", "cache_dir": cache_dir, **overrides}
        cache = ResponseCache(Config(**settings_), clock=clock, secret=secret)
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        cache.close()


def key(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def payload(n: int | str, size: int = 0) -> dict[str, Any]:
    return {"text": f"answer {n}" + "x" * size, "usage": {"input_tokens": 3, "output_tokens": 5}}


def db_rows(cache_dir: Path, sql: str, *args: Any) -> list[Any]:
    conn = sqlite3.connect(cache_dir / DB_NAME)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def db_exec(cache_dir: Path, sql: str, *args: Any) -> None:
    conn = sqlite3.connect(cache_dir / DB_NAME, isolation_level=None)
    try:
        conn.execute(sql, args)
    finally:
        conn.close()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "agentnb.cache" and r.levelno >= logging.WARNING
    ]


# -- keys ------------------------------------------------------------------------------------------

BASE_KEY: dict[str, Any] = {
    "backend": "simulated",
    "agent": "writer",
    "prompt_hash": prompt_hash("You write clearly."),
    "model": "claude-sonnet-5-5",
    "system": "You write clearly.",
    "messages": [{"role": "user", "content": "Say hi"}],
    "max_tokens": 1024,
    "temperature": None,
}


def test_key_is_full_sha256_of_canonical_json() -> None:
    expected_doc = json.dumps(
        key_document(**BASE_KEY), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    k = make_key(**BASE_KEY)
    assert k == hashlib.sha256(expected_doc.encode()).hexdigest()
    assert len(k) == 64 and int(k, 16) >= 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("backend", "anthropic"),
        ("agent", "editor"),
        ("prompt_hash", prompt_hash("You write clearly!")),
        ("model", "claude-opus-5-5"),
        ("system", "You write."),
        ("messages", [{"role": "user", "content": "Say hi!"}]),
        ("messages", [{"role": "assistant", "content": "Say hi"}]),
        ("messages", [{"role": "user", "content": "Say hi"}] * 2),
        ("max_tokens", 1023),
        ("temperature", 0.0),
        ("temperature", 0.5),
    ],
)
def test_key_changes_when_any_field_changes(field: str, value: Any) -> None:
    assert make_key(**{**BASE_KEY, field: value}) != make_key(**BASE_KEY)


def test_key_ignores_spelling_that_does_not_change_the_request() -> None:
    assert make_key(**{**BASE_KEY, "temperature": 1}) == make_key(
        **{**BASE_KEY, "temperature": 1.0}
    )
    swapped = [{"content": "Say hi", "role": "user"}]
    assert make_key(**{**BASE_KEY, "messages": swapped}) == make_key(**BASE_KEY)
    with pytest.raises(ValueError, match="finite"):
        make_key(**{**BASE_KEY, "temperature": float("nan")})


def test_editing_the_agent_prompt_changes_the_key() -> None:
    edited = {**BASE_KEY, "prompt_hash": prompt_hash("You write clearly.\n")}
    assert make_key(**edited) != make_key(**BASE_KEY)


_text = st.text(st.characters(codec="utf-8") | st.sampled_from(list('"\\\n\t\x00\x7f\u2028é')))
_message = st.fixed_dictionaries({"role": _text, "content": _text}) | st.dictionaries(
    _text, _text, max_size=3
)


@settings(max_examples=150, deadline=None)
@given(
    backend=_text,
    agent=_text,
    model=_text,
    system=_text,
    messages=st.lists(_message, max_size=3),
    max_tokens=st.integers(1, 10**6),
    stop_sequences=st.lists(_text, max_size=3),
    temperature=st.none() | st.floats(allow_nan=False, allow_infinity=False),
)
def test_fast_key_spelling_equals_the_generic_canonical_json(
    backend: str,
    agent: str,
    model: str,
    system: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float | None,
    stop_sequences: list[str],
) -> None:
    fields: dict[str, Any] = {
        "stop_sequences": stop_sequences,
        "backend": backend,
        "agent": agent,
        "prompt_hash": prompt_hash(system),
        "model": model,
        "system": system,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    generic = hashlib.sha256(canonical_json(key_document(**fields))).hexdigest()
    assert make_key(**fields) == generic


# -- memory tier -----------------------------------------------------------------------------------


def test_memory_lru_order_and_entry_bound(clock: FakeClock) -> None:
    tier = MemoryTier(max_entries=3, max_bytes=10_000, clock=clock)
    for name in "abc":
        tier.set(name, {"v": name}, agent="w", size=10, expires_at=None)
    assert tier.get("a") == {"v": "a"}  # a becomes most recent
    tier.set("d", {"v": "d"}, agent="w", size=10, expires_at=None)
    assert tier.keys() == ["c", "a", "d"]
    assert tier.get("b") is None
    assert tier.evictions == 1 and len(tier) == 3


def test_memory_byte_bound_and_a_response_larger_than_the_bound(clock: FakeClock) -> None:
    tier = MemoryTier(max_entries=100, max_bytes=100, clock=clock)
    tier.set("a", {}, agent="w", size=40, expires_at=None)
    tier.set("b", {}, agent="w", size=40, expires_at=None)
    tier.set("c", {}, agent="w", size=40, expires_at=None)  # 120 > 100: a goes
    assert tier.keys() == ["b", "c"] and tier.bytes == 80
    assert tier.set("huge", {}, agent="w", size=101, expires_at=None) is False
    assert tier.keys() == ["b", "c"] and tier.bytes == 80 and tier.oversize == 1
    tier.set("b", {}, agent="w", size=10, expires_at=None)  # replacing fixes the byte count
    assert tier.bytes == 50 and tier.keys() == ["c", "b"]


def test_memory_ttl_with_injected_clock(clock: FakeClock) -> None:
    tier = MemoryTier(max_entries=10, max_bytes=1000, clock=clock)
    tier.set("a", {"v": 1}, agent="w", size=1, expires_at=clock() + 10)
    clock.advance(9.9)
    assert tier.get("a") == {"v": 1}
    clock.advance(0.1)
    assert tier.get("a") is None
    assert tier.expirations == 1 and tier.bytes == 0 and len(tier) == 0


def test_memory_hands_out_copies(clock: FakeClock) -> None:
    tier = MemoryTier(max_entries=10, max_bytes=1000, clock=clock)
    tier.set("a", {"usage": {"n": 1}, "list": [1]}, agent="w", size=1, expires_at=None)
    got = tier.get("a")
    assert got is not None
    got["usage"]["n"] = 99
    got["list"].append(2)
    assert tier.get("a") == {"usage": {"n": 1}, "list": [1]}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["get", "set"]), st.integers(0, 7), st.integers(1, 40)),
        max_size=60,
    )
)
def test_memory_tier_behaves_like_a_reference_lru(ops: list[tuple[str, int, int]]) -> None:
    tier = MemoryTier(max_entries=4, max_bytes=60, clock=lambda: 0.0)
    model: OrderedDict[int, int] = OrderedDict()
    for op, k, size in ops:
        if op == "get":
            got = tier.get(str(k))
            if k in model:
                model.move_to_end(k)
                assert got == {"k": k}
            else:
                assert got is None
        else:
            model.pop(k, None)
            if size <= 60:
                model[k] = size
                while len(model) > 4 or sum(model.values()) > 60:
                    model.popitem(last=False)
            tier.set(str(k), {"k": k}, agent="w", size=size, expires_at=None)
        assert tier.keys() == [str(m) for m in model]
        assert tier.bytes == sum(model.values())


# -- tiers through ResponseCache -------------------------------------------------------------------


async def test_hit_and_miss_across_memory_and_disk(make_cache: CacheFactory) -> None:
    cache = make_cache()
    assert await cache.get(key(1)) is None
    await cache.set(key(1), payload(1), agent="writer")
    assert await cache.get(key(1)) == (payload(1), "memory")

    fresh = make_cache()  # another kernel on the same dir: empty memory, same disk
    assert await fresh.get(key(1)) == (payload(1), "disk")
    assert await fresh.get(key(1)) == (payload(1), "memory")  # promoted
    assert await fresh.get(key(2)) is None
    stats = fresh.stats()
    assert (stats["hits_disk"], stats["hits_memory"], stats["misses"]) == (1, 1, 1)
    assert stats["entries"] == 1 and stats["bytes"] == len(
        json.dumps(payload(1), separators=(",", ":"))
    )
    assert cache.stats()["misses"] == 1 and cache.stats()["hits_memory"] == 1


async def test_set_many_and_get_many_go_through_every_tier_in_one_trip(
    make_cache: CacheFactory, cache_dir: Path
) -> None:
    cache = make_cache()
    assert cache.store is not None
    await cache.set_many([(key(n), payload(n), "writer") for n in range(5)])
    assert db_rows(cache_dir, "SELECT count(*) FROM entries") == [(5,)]
    assert db_rows(cache_dir, "SELECT entries FROM totals") == [(5,)]
    fresh = make_cache()  # memory empty: the disk answers in one trip for the rest
    await fresh.set(key(0), payload(0), agent="writer")
    found = await fresh.get_many([key(0), key(3), key(9), key(4)])
    assert found == [(payload(0), "memory"), (payload(3), "disk"), None, (payload(4), "disk")]
    assert await fresh.get(key(3)) == (payload(3), "memory")  # promoted
    stats = fresh.stats()
    assert (stats["hits_memory"], stats["hits_disk"], stats["misses"]) == (2, 2, 1)
    with pytest.raises(ValueError):  # checked as `set` checks a payload
        await cache.set_many([(key(7), {"x": float("nan")}, "writer")])
    off = make_cache(cache_backend="none")
    await off.set_many([(key(1), payload(1), "writer")])
    assert await off.get_many([key(1)]) == [None]


async def test_get_many_reads_hundreds_of_keys_a_query_as_get_reads_each(
    make_cache: CacheFactory, cache_dir: Path
) -> None:
    """Past one query's worth of keys, with repeats, a bad row and misses: what `get` would
    give each key, the bad row dropped and counted once."""
    cache = make_cache()
    await cache.set_many([(key(n), payload(n), "writer") for n in range(1200)])
    db_exec(cache_dir, "UPDATE entries SET value = ? WHERE key = ?", b'{"x": 1}', key(700))
    fresh = make_cache()
    asked = [key(n) for n in (*range(0, 1200, 3), 700, 5, 700, 1500, 1201)]
    found = await fresh.get_many(asked)
    expected = [(payload(n), "disk") for n in range(0, 1200, 3)]
    assert found == [*expected, None, (payload(5), "disk"), None, None, None]
    assert fresh.stats()["integrity_failures"] == 1
    assert db_rows(cache_dir, "SELECT count(*) FROM entries") == [(1199,)]


async def test_set_many_keeps_fresh_payloads_themselves_in_memory(
    make_cache: CacheFactory, cache_dir: Path
) -> None:
    """`fresh=True` (payloads made for the call, as `to_payload` makes them): memory holds the
    very dict, equal to what a JSON round trip gives; the disk holds the same JSON."""
    cache = make_cache()
    made = [payload(n) for n in range(3)]
    await cache.set_many([(key(n), p, "writer") for n, p in enumerate(made)], fresh=True)
    assert cache.memory is not None and cache.memory.peek(key(1)) is made[1]
    await cache.set_many([(key(5), payload(5), "writer")])  # not fresh: a copy is kept
    assert cache.memory.peek(key(5)) == payload(5)
    disk = make_cache()
    assert await disk.get_many([key(n) for n in range(3)]) == [(p, "disk") for p in made]
    with pytest.raises(ValueError):  # checked all the same
        await cache.set_many([(key(7), {"x": float("inf")}, "writer")], fresh=True)


async def test_set_many_entries_carry_their_hmac_and_agent(
    make_cache: CacheFactory, cache_dir: Path
) -> None:
    cache = make_cache()
    await cache.set_many([(key(1), payload(1), "writer"), (key(2), payload(2), "coder")])
    db_exec(cache_dir, "UPDATE entries SET agent = 'other' WHERE key = ?", key(2))
    fresh = make_cache()
    assert await fresh.get_many([key(1), key(2)]) == [(payload(1), "disk"), None]
    assert fresh.stats()["integrity_failures"] == 1
    assert fresh.invalidate(agent="writer") == 1


async def test_memory_backend_keeps_nothing_on_disk(
    make_cache: CacheFactory, cache_dir: Path
) -> None:
    cache = make_cache(cache_backend="memory")
    await cache.set(key(1), payload(1), agent="w")
    assert await cache.get(key(1)) == (payload(1), "memory")
    assert await make_cache(cache_backend="memory").get(key(1)) is None
    assert not cache_dir.exists() and cache.store is None


@pytest.mark.parametrize("overrides", [{"cache_backend": "none"}, {"cache_enabled": False}])
async def test_disabled_cache_always_computes(
    make_cache: CacheFactory, cache_dir: Path, overrides: dict[str, Any]
) -> None:
    cache = make_cache(**overrides)
    calls = 0

    async def compute() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return payload(calls)

    assert await cache.get_or_compute(key(1), compute, agent="w") == (payload(1), None)
    assert await cache.get_or_compute(key(1), compute, agent="w") == (payload(2), None)
    await cache.set(key(1), payload(1), agent="w")
    assert await cache.get(key(1)) is None
    assert not cache.enabled and not cache_dir.exists()


async def test_ttl_expiry_in_memory_and_on_disk(
    make_cache: CacheFactory, clock: FakeClock, cache_dir: Path
) -> None:
    cache = make_cache(cache_ttl_s=60.0)
    await cache.set(key(1), payload(1), agent="w")
    await cache.set(key(2), payload(2), agent="w", ttl_s=10.0)
    await cache.set(key(3), payload(3), agent="w", ttl_s=0)  # 0: never expires
    clock.advance(30)
    assert await cache.get(key(2)) is None  # memory entry expired, then the disk row
    assert await cache.get(key(1)) == (payload(1), "memory")
    assert await make_cache().get(key(1)) == (payload(1), "disk")
    assert cache.stats()["expirations"] == 1 and cache.stats()["memory_expirations"] == 1
    clock.advance(31)
    fresh = make_cache()  # opened after the expiry: never serves it, and sweeps the row
    assert await fresh.get(key(1)) is None
    assert fresh.stats()["expirations"] == 1
    assert db_rows(cache_dir, "SELECT key FROM entries") == [(key(3),)]
    assert await cache.get(key(1)) is None  # the memory copy expired as well
    clock.advance(10 * 365 * 86400)
    assert await make_cache().get(key(3)) == (payload(3), "disk")


async def test_response_larger_than_memory_bound_is_served_from_disk(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache(cache_memory_bytes=1000)
    await cache.set(key("small"), payload("small"), agent="w")
    await cache.set(key("big"), payload("big", size=5000), agent="w")
    assert cache.memory is not None and key("big") not in cache.memory
    assert await cache.get(key("big")) == (payload("big", size=5000), "disk")
    assert await cache.get(key("big")) == (payload("big", size=5000), "disk")  # still not kept
    assert await cache.get(key("small")) == (payload("small"), "memory")  # not flushed out


async def test_payloads_must_be_json_and_are_stored_as_json(
    make_cache: CacheFactory, cache_dir: Path
) -> None:
    cache = make_cache()
    with pytest.raises(TypeError):
        await cache.set(key(1), {"x": object()}, agent="w")
    with pytest.raises(ValueError):
        await cache.set(key(1), {"x": float("nan")}, agent="w")
    await cache.set(key(2), {"t": ("a", "b"), "é": "ü"}, agent="w")
    assert await cache.get(key(2)) == ({"t": ["a", "b"], "é": "ü"}, "memory")
    [(value,)] = db_rows(cache_dir, "SELECT value FROM entries")
    assert json.loads(value) == {"t": ["a", "b"], "é": "ü"}


# -- SQLite specifics ------------------------------------------------------------------------------


async def test_database_uses_wal_and_lives_in_a_0700_dir(
    make_cache: CacheFactory, cache_dir: Path
) -> None:
    cache = make_cache()
    await cache.set(key(1), payload(1), agent="w")
    assert db_rows(cache_dir, "PRAGMA journal_mode") == [("wal",)]
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert cache.cache_dir == cache_dir.resolve()


def test_lru_eviction_statement_walks_an_index(make_cache: CacheFactory, cache_dir: Path) -> None:
    make_cache()
    plan = [row[-1] for row in db_rows(cache_dir, "EXPLAIN QUERY PLAN " + EVICT_LRU, 10)]
    assert any("entries_by_access" in line for line in plan), plan
    assert not any("TEMP B-TREE" in line for line in plan), plan
    assert all("INDEX" in line or "PRIMARY KEY" in line for line in plan if "SCAN" in line), plan
    expiry = [
        r[-1]
        for r in db_rows(
            cache_dir, "EXPLAIN QUERY PLAN DELETE FROM entries WHERE expires_at <= ?", 1.0
        )
    ]
    assert any("entries_by_expiry" in line for line in expiry), expiry


async def test_disk_lru_eviction_keeps_recently_used_entries(
    make_cache: CacheFactory, clock: FakeClock, cache_dir: Path
) -> None:
    size = len(json.dumps(payload(0, size=300), separators=(",", ":")))
    cache = make_cache(cache_disk_bytes=size * 10, cache_memory_entries=1)
    for i in range(10):
        await cache.set(key(i), payload(i, size=300), agent="w")
        clock.advance(1)
    assert cache.store is not None and cache.store.evictions == 0
    await cache.get(key(0))  # read from disk (memory holds only the last one)
    clock.advance(1)
    await cache.set(key(1), payload(1, size=300), agent="w")  # memory hit on 1 next
    await cache.get(key(1))
    clock.advance(1)
    await cache.set(key(10), payload(10, size=300), agent="w")  # over the bound: evict
    entries, total = cache.store.counts()
    assert total <= size * 10 * 0.9 and entries == 9 - cache.store.evictions + 2
    keys_left = {k for (k,) in db_rows(cache_dir, "SELECT key FROM entries")}
    assert {key(0), key(1), key(10)} <= keys_left
    assert key(2) not in keys_left  # the least recently used went first
    assert cache.stats()["evictions"] == cache.store.evictions >= 1
    assert cache.stats()["memory_evictions"] >= 10  # memory holds one entry


async def test_totals_row_matches_the_table(make_cache: CacheFactory, cache_dir: Path) -> None:
    cache = make_cache(cache_disk_bytes=5000)
    for i in range(40):
        await cache.set(key(i % 25), payload(i, size=i * 7), agent=f"a{i % 3}")
    cache.invalidate(agent="a1")
    cache.invalidate(key=key(3))
    [(n, total)] = db_rows(cache_dir, "SELECT count(*), coalesce(sum(size), 0) FROM entries")
    assert cache.store is not None and cache.store.counts() == (n, total)
    assert total <= 5000
    [(real,)] = db_rows(cache_dir, "SELECT coalesce(sum(length(value)), 0) FROM entries")
    assert cache.stats()["bytes"] == real


async def test_a_locked_database_costs_a_warning_not_a_call(
    make_cache: CacheFactory, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache()
    store = cache.store
    assert isinstance(store, SQLiteTier)
    store.call(lambda: store.connection.execute("PRAGMA busy_timeout = 20"))
    locker = sqlite3.connect(cache_dir / DB_NAME, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:

        async def compute() -> dict[str, Any]:
            return payload(1)

        with caplog.at_level(logging.WARNING, logger="agentnb.cache"):
            for i in range(3):
                got = await cache.get_or_compute(key(i), compute, agent="w")
                assert got == (payload(1), None)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert len(warnings_of(caplog)) == 1 and "locked" in warnings_of(caplog)[0]
    assert cache.stats()["errors"] == 3
    await cache.set(key(9), payload(9), agent="w")
    assert db_rows(cache_dir, "SELECT count(*) FROM entries") == [(1,)]


async def test_reads_go_on_while_another_connection_holds_the_write_lock(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # A read's own writes (the batched LRU touches, dropping an expired row) must neither turn
    # a verified hit into a miss nor wait the busy timeout for another kernel's writer.
    busy_timeout_s = 60.0
    tier = SQLiteTier(
        tmp_path / DB_NAME,
        signer=Signer(SECRET),
        max_bytes=1 << 20,
        clock=clock,
        busy_timeout_s=busy_timeout_s,
    )
    try:
        for i in range(4):
            value = json.dumps(payload(i)).encode()
            await tier.set(key(i), agent="w", value=value, expires_at=None)
        await tier.set(key("old"), agent="w", value=b"{}", expires_at=clock() + 1)
        clock.advance(10)
        locker = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        try:
            start = time.monotonic()
            with caplog.at_level(logging.DEBUG, logger="agentnb.cache"):
                for i in range(TOUCH_BATCH + 3):
                    got = await tier.get(key(i % 4))
                    assert got is not None and got.payload == payload(i % 4)
                assert await tier.get(key("old")) is None  # expired: not served, not waited for
            # Far below the busy timeout: nothing waited for the lock.
            assert time.monotonic() - start < busy_timeout_s / 4
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert tier.errors == 0 and warnings_of(caplog) == []
        assert "writing LRU touches deferred" in caplog.text
        assert len(tier._touches) >= TOUCH_BATCH  # kept for a later flush
        assert tier.call(lambda: tier.connection.execute("PRAGMA busy_timeout").fetchone()) == (
            busy_timeout_s * 1000,
        )
        # With the lock free again, the next read writes the queued touches.
        await tier.get(key(0))
        assert len(tier._touches) == 0
        touched = db_rows(tmp_path, "SELECT accessed_at FROM entries WHERE key != ?", key("old"))
        assert touched == [(clock(),)] * 4
    finally:
        tier.close()


def test_a_file_that_is_not_a_database_is_moved_aside(
    cache_dir: Path, make_cache: CacheFactory, caplog: pytest.LogCaptureFixture
) -> None:
    cache_dir.mkdir(mode=0o700)
    (cache_dir / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with caplog.at_level(logging.WARNING, logger="agentnb.cache"):
        cache = make_cache()
    assert cache.stats()["entries"] == 0
    assert [p.name.startswith(DB_NAME + ".corrupt-") for p in cache_dir.iterdir()].count(True) == 1
    assert "moved it to" in warnings_of(caplog)[0]


# -- integrity -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "sql"),
    [
        ("tampered", "UPDATE entries SET value = replace(value, 'answer', 'ANSWER') WHERE key = ?"),
        (
            "truncated",
            "UPDATE entries SET value = substr(value, 1, length(value) / 2) WHERE key = ?",
        ),
        ("bad mac", "UPDATE entries SET mac = x'00' WHERE key = ?"),
        ("text mac", "UPDATE entries SET mac = 'not a mac' WHERE key = ?"),
        ("bad expiry", "UPDATE entries SET expires_at = 'soon' WHERE key = ?"),
    ],
)
async def test_bad_rows_are_removed_counted_and_logged_once(
    make_cache: CacheFactory,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
    how: str,
    sql: str,
) -> None:
    writer = make_cache()
    for i in range(3):
        await writer.set(key(i), payload(i), agent="w")
    for i in range(2):
        db_exec(cache_dir, sql, key(i))
    reader = make_cache()
    with caplog.at_level(logging.DEBUG, logger="agentnb.cache"):
        assert await reader.get(key(0)) is None
        assert await reader.get(key(1)) is None
        assert await reader.get(key(2)) == (payload(2), "disk")
    assert reader.stats()["integrity_failures"] == 2
    assert db_rows(cache_dir, "SELECT key FROM entries") == [(key(2),)]
    assert len(warnings_of(caplog)) == 1, warnings_of(caplog)
    assert key(0)[:12] in warnings_of(caplog)[0]


async def test_a_signed_row_that_does_not_parse_is_dropped(
    make_cache: CacheFactory, cache_dir: Path
) -> None:
    cache = make_cache()
    await cache.set(key(1), payload(1), agent="w")
    for value in (b"not json", b"[1, 2]"):
        mac = Signer(SECRET).sign(key(1), value, "w")
        db_exec(cache_dir, "UPDATE entries SET value = ?, mac = ?", value, mac)
        fresh = make_cache()
        assert await fresh.get(key(1)) is None
        assert fresh.stats()["integrity_failures"] == 1
        await cache.store.set(key(1), agent="w", value=b"{}", expires_at=None)  # type: ignore[union-attr]


@given(
    secret=st.binary(min_size=1, max_size=200),  # past SHA-256's 64-byte block: hashed first
    key=st.text(max_size=80),
    agent=st.text(max_size=20),
    expires_at=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    value=st.binary(max_size=300),
)
def test_the_signer_is_hmac_sha256_of_the_entry(
    secret: bytes, key: str, agent: str, expires_at: float | None, value: bytes
) -> None:
    """The MAC (made from precomputed pads) is what `hmac` gives for the documented message."""
    agent_bytes = agent.encode("utf-8", "surrogatepass")
    expiry = b"" if expires_at is None else repr(float(expires_at)).encode("ascii")
    message = b"\0".join((key.encode("ascii", "replace"), agent_bytes, expiry, value))
    expected = hmac.new(secret, b"agentnb:v1\0" + message, hashlib.sha256).digest()
    signer = Signer(secret)
    assert signer.sign(key, value, agent, expires_at) == expected
    assert signer.verify(key, value, expected, agent, expires_at)


async def test_entries_written_with_another_secret_are_not_served(make_cache: CacheFactory) -> None:
    await make_cache(secret=b"first secret, long enough").set(key(1), payload(1), agent="w")
    other = make_cache(secret=b"second secret, long enough")
    assert await other.get(key(1)) is None
    assert other.stats()["integrity_failures"] == 1


# -- secret and key file ---------------------------------------------------------------------------


def test_key_file_is_created_0600_in_the_config_dir(
    tmp_path: Path, make_cache: CacheFactory, cache_dir: Path
) -> None:
    cache = ResponseCache(Config(cache_backend="sqlite", cache_dir=cache_dir))
    try:
        path = tmp_path / "xdg-config" / "agentnb" / "cache.key"
        assert key_file_path() == path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert cache_dir.resolve() not in path.resolve().parents
        assert not any(p.name.endswith(".key") for p in cache_dir.rglob("*"))
        assert load_secret() == path.read_bytes().strip() and len(load_secret()) >= 32
    finally:
        cache.close()
    assert load_secret() == path.read_bytes().strip()  # reused, not replaced


def test_key_file_falls_back_to_home_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    secret = load_secret()
    path = tmp_path / "home" / ".config" / "agentnb" / "cache.key"
    assert path.read_bytes().strip() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_secret_from_environment_wins_and_writes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "from-the-environment")
    assert load_secret() == b"from-the-environment"
    assert not (tmp_path / "xdg-config").exists()


def test_a_readable_key_file_is_tightened(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = load_secret()
    path = key_file_path()
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="agentnb.cache"):
        assert load_secret() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "tightening" in warnings_of(caplog)[0]


def test_concurrent_first_use_makes_one_key(tmp_path: Path) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        secrets_ = list(pool.map(lambda _: load_secret(), range(16)))
    assert len(set(secrets_)) == 1
    assert [p.name for p in key_file_path().parent.iterdir()] == ["cache.key"]


# -- cache dir -------------------------------------------------------------------------------------


def test_cache_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "afile"
    path.write_text("x")
    with pytest.raises(CacheError, match=f"cache_dir {path} is a file"):
        ResponseCache.from_config(Config(cache_backend="sqlite", cache_dir=path))


def test_cache_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CacheError, match=r"cannot create cache_dir .*afile/sub"):
        prepare_cache_dir(tmp_path / "afile" / "sub")


def test_cache_dir_is_resolved_to_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cache = ResponseCache.from_config(
        Config(cache_backend="sqlite", cache_dir=Path("rel") / ".." / "rel" / "c")
    )
    try:
        assert cache.cache_dir == tmp_path.resolve() / "rel" / "c"
        assert (tmp_path / "rel" / "c" / DB_NAME).is_file()
    finally:
        cache.close()


def _as_nobody(fn: Callable[[], object]) -> str:
    """Run `fn` in a forked child with root's rights dropped; 'ok' or the error it raised."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about fork in a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read_end)
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            fn()
            message = "ok"
        except BaseException as exc:  # reported to the parent
            message = f"{type(exc).__name__}: {exc}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        out = fh.read().decode()
    os.waitpid(pid, 0)
    return out


def test_cache_dir_that_is_not_writable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root writes anywhere: check in a child that has given root up.
        target = Path(tempfile.mkdtemp(prefix="agentnb-ro-"))
        try:
            target.chmod(0o555)
            outcome = _as_nobody(lambda: prepare_cache_dir(target))
        finally:
            target.chmod(0o700)
            target.rmdir()
        assert (
            outcome.startswith("CacheError: ") and f"cache_dir {target} is not writable" in outcome
        )
    else:
        target = tmp_path / "ro"
        target.mkdir(mode=0o555)
        try:
            with pytest.raises(CacheError, match=f"cache_dir {target} is not writable"):
                ResponseCache.from_config(Config(cache_backend="sqlite", cache_dir=target))
        finally:
            target.chmod(0o700)


# -- single-flight ---------------------------------------------------------------------------------


async def test_single_flight_100_identical_calls_make_one_compute(make_cache: CacheFactory) -> None:
    cache = make_cache()
    calls = 0
    release = asyncio.Event()

    async def compute() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await release.wait()
        return payload(1)

    async def call() -> tuple[dict[str, Any], str | None]:
        return await cache.get_or_compute(key(1), compute, agent="w")

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(call()) for _ in range(100)]
        await asyncio.sleep(0.05)  # let every call reach the cache (disk lookups included)
        release.set()
    results = [t.result() for t in tasks]
    assert calls == 1
    assert sorted(str(tier) for _, tier in results) == ["None"] + ["inflight"] * 99
    assert all(p == payload(1) for p, _ in results)
    results[1][0]["text"] = "changed"  # each waiter got its own copy
    assert results[2][0] == payload(1)
    assert cache.stats()["hits_inflight"] == 99 and cache.stats()["misses"] == 1
    assert await cache.get_or_compute(key(1), compute, agent="w") == (payload(1), "memory")


async def test_single_flight_failure_reaches_every_waiter_and_is_not_cached(
    make_cache: CacheFactory, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache()
    calls = 0

    class Boom(Exception):
        pass

    async def failing() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        raise Boom("backend failed")

    results = await asyncio.gather(
        *(cache.get_or_compute(key(1), failing, agent="w") for _ in range(100)),
        return_exceptions=True,
    )
    assert calls == 1
    assert all(isinstance(r, Boom) for r in results)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        with pytest.raises(Boom):  # alone: nobody else retrieves the shared failure
            await cache.get_or_compute(key(2), failing, agent="w")
        gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    calls -= 1
    assert await cache.get(key(1)) is None
    assert db_rows(cache_dir, "SELECT count(*) FROM entries") == [(0,)]

    async def ok() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return payload(1)

    assert await cache.get_or_compute(key(1), ok, agent="w") == (payload(1), None)
    assert calls == 2


async def test_single_flight_survives_the_computing_caller_being_cancelled(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache()
    calls = 0
    started = asyncio.Event()

    async def compute() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.sleep(0.05)
        return payload(calls)

    leader = asyncio.create_task(cache.get_or_compute(key(1), compute, agent="w"))
    await started.wait()
    waiters = [
        asyncio.create_task(cache.get_or_compute(key(1), compute, agent="w")) for _ in range(5)
    ]
    await asyncio.sleep(0)
    leader.cancel()
    results = await asyncio.gather(*waiters)
    assert leader.cancelled()
    assert calls == 2  # one waiter took over; the rest waited for it
    assert sorted(str(t) for _, t in results) == ["None"] + ["inflight"] * 4
    assert all(p == payload(2) for p, _ in results)


async def test_identical_calls_after_a_disk_hit_share_it(make_cache: CacheFactory) -> None:
    await make_cache().set(key(1), payload(1), agent="w")
    cache = make_cache()

    async def never() -> dict[str, Any]:
        raise AssertionError("must not compute")

    results = await asyncio.gather(
        *(cache.get_or_compute(key(1), never, agent="w") for _ in range(10))
    )
    assert sorted(str(t) for _, t in results) == ["disk"] + ["inflight"] * 9


# -- exclusions ------------------------------------------------------------------------------------


def test_exclusions(make_cache: CacheFactory) -> None:
    cache = make_cache(cache_backend="memory", cache_exclude=["draft-*", "secret-agent"])
    assert cache.is_excluded("writer", False)  # `cache: false` in the agent file
    assert not cache.is_excluded("writer", None) and not cache.is_excluded("writer", True)
    assert cache.is_excluded("draft-writer", None) and cache.is_excluded("secret-agent", True)
    assert not cache.is_excluded("Draft-writer", None)  # names are case-sensitive
    assert not cache.is_excluded("secret-agent-2", None)


# -- control and thread safety ---------------------------------------------------------------------


async def test_clear_and_invalidate(make_cache: CacheFactory, cache_dir: Path) -> None:
    cache = make_cache()
    for i in range(6):
        await cache.set(key(i), payload(i), agent="writer" if i % 2 else "editor")
    assert cache.invalidate(agent="writer") == 3
    assert await cache.get(key(1)) is None and await cache.get(key(0)) == (payload(0), "memory")
    assert cache.invalidate(key=key(0)) == 1 and cache.invalidate(key=key(0)) == 0
    assert cache.invalidate(key=key(2), agent="writer") == 0
    assert db_rows(cache_dir, "SELECT count(*) FROM entries") == [(2,)]
    with pytest.raises(ValueError, match="agent= or key="):
        cache.invalidate()
    cache.clear()
    assert await cache.get(key(2)) is None
    stats = cache.stats()
    assert (stats["entries"], stats["bytes"], stats["memory_entries"]) == (0, 0, 0)


def test_stats_and_frame_have_every_counter(make_cache: CacheFactory) -> None:
    cache = make_cache()
    stats = cache.stats()
    expected = {
        "hits_memory", "hits_disk", "hits_redis", "hits_inflight", "misses", "hit_rate",
        "evictions", "expirations", "integrity_failures", "errors", "entries", "bytes",
        "memory_entries", "memory_bytes", "memory_evictions", "memory_expirations",
    }  # fmt: skip
    assert set(stats) == expected
    frame = cache.stats_frame()
    assert list(frame.columns) == list(stats) and list(frame.index) == ["sqlite"]
    assert int(frame.loc["sqlite", "entries"]) == 0


def test_user_commands_from_any_thread_never_deadlock(make_cache: CacheFactory) -> None:
    cache = make_cache()
    home = HomeLoop(name="test-cache-home")
    try:

        async def fill() -> None:
            for i in range(50):
                await cache.set(key(i), payload(i), agent="w")

        home.run_sync(fill())
        busy = home.submit(asyncio.sleep(0.2))  # the home loop is doing something else

        def from_a_cell() -> int:
            stats = cache.stats()
            n = cache.invalidate(agent="w")
            cache.clear()
            return int(stats["entries"]) + n

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert max(pool.map(lambda _: from_a_cell(), range(4))) >= 50

        async def on_the_loop() -> dict[str, int | float]:
            return cache.stats()  # a plain call made on the home loop itself

        assert home.run_sync(asyncio.wait_for(on_the_loop(), 5))["entries"] == 0
        busy.result(timeout=5)
    finally:
        home.stop()


async def test_close_flushes_and_disables(make_cache: CacheFactory, cache_dir: Path) -> None:
    cache = make_cache()
    await cache.set(key(1), payload(1), agent="w")
    await cache.aclose()
    assert not cache.enabled and await cache.get(key(1)) is None
    assert not (cache_dir / (DB_NAME + "-wal")).exists()  # checkpointed on the last close
    cache.close()  # twice is fine
    assert await make_cache().get(key(1)) == (payload(1), "disk")


async def test_closing_while_a_call_runs_does_not_fail_the_call(make_cache: CacheFactory) -> None:
    cache = make_cache()
    started, release = asyncio.Event(), asyncio.Event()

    async def compute() -> dict[str, Any]:
        started.set()
        await release.wait()
        return payload(1)

    calls = [
        asyncio.create_task(cache.get_or_compute(key(1), compute, agent="w")) for _ in range(3)
    ]
    await started.wait()
    await cache.aclose()
    release.set()
    results = await asyncio.gather(*calls)
    assert [p for p, _ in results] == [payload(1)] * 3


# -- several processes -----------------------------------------------------------------------------


def _child_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[SECRET_ENV] = SECRET.decode()
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_many_connections_opening_a_fresh_database_at_once(tmp_path: Path) -> None:
    for round_ in range(25):
        path = tmp_path / f"fresh-{round_}" / DB_NAME
        path.parent.mkdir()
        barrier = threading.Barrier(8)

        def open_tier(path: Path = path, barrier: threading.Barrier = barrier) -> SQLiteTier:
            barrier.wait()
            return SQLiteTier(path, signer=Signer(SECRET), max_bytes=1 << 20)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            tiers = list(pool.map(lambda _: open_tier(), range(8)))
        for tier in tiers:
            assert tier.counts() == (0, 0)
            tier.close()
        assert db_rows(path.parent, "PRAGMA journal_mode") == [("wal",)]


def test_opening_retries_while_another_connection_switches_to_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two connections switching a fresh file to WAL at once: SQLite answers one of them
    # "locked" at once (deadlock avoidance, no busy wait). Opening must try again.
    real_connect = SQLiteTier._connect
    errors = ["database is locked", "database is locked"]

    def flaky(self: SQLiteTier) -> sqlite3.Connection:
        if errors:
            raise sqlite3.OperationalError(errors.pop())
        return real_connect(self)

    monkeypatch.setattr(SQLiteTier, "_connect", flaky)
    tier = SQLiteTier(tmp_path / DB_NAME, signer=Signer(SECRET), max_bytes=1 << 20)
    assert tier.counts() == (0, 0) and not errors
    tier.close()
    errors.extend(["unable to open database file"] * 100)  # not a lock: no retry
    with pytest.raises(CacheError, match="unable to open"):
        SQLiteTier(tmp_path / "other.db", signer=Signer(SECRET), max_bytes=1 << 20)
    assert len(errors) == 99


def test_two_processes_share_a_directory(tmp_path: Path, cache_dir: Path) -> None:
    n = 150
    children = [
        subprocess.Popen(
            [sys.executable, str(HELPERS), "share", str(cache_dir), mine, other, str(n)],
            env=_child_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mine, other in (("A", "B"), ("B", "A"))
    ]
    for child in children:  # both imported and waiting: now open the fresh dir together
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
    Path(f"{cache_dir}.go").touch()
    outputs = [child.communicate(timeout=60) for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
        assert err == "", err
        assert json.loads(out)["written"] == n
    assert all(json.loads(out)["seen_other"] == n for out, _ in outputs)

    async def check() -> None:
        cache = ResponseCache(Config(cache_backend="sqlite", cache_dir=cache_dir), secret=SECRET)
        try:
            for prefix in "AB":
                for i in range(n):
                    hit = await cache.get(entry_key(prefix, i))
                    assert hit == (entry_payload(prefix, i), "disk"), (prefix, i)
            assert cache.stats()["entries"] == 2 * n
            assert cache.stats()["integrity_failures"] == 0
        finally:
            await cache.aclose()

    asyncio.run(check())


def _churn_then_kill(tmp_path: Path, cache_dir: Path, *, lines: int, disk_bytes: int) -> int:
    """Run a churning writer, SIGKILL it after `lines` completed sets; returns the last index."""
    child = subprocess.Popen(
        [sys.executable, str(HELPERS), "churn", str(cache_dir), "K", str(disk_bytes)],
        env=_child_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    done = -1
    try:
        for line in child.stdout:
            done = int(line)
            if done >= lines:
                time.sleep(random.uniform(0, 0.004))  # land somewhere inside the next write
                break
    finally:
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=10)
    assert child.returncode == -signal.SIGKILL and done >= lines, err
    return done


async def _check_every_row(cache_dir: Path) -> int:
    """Open the killed writer's database; every row must be whole. Returns the row count."""
    assert db_rows(cache_dir, "PRAGMA integrity_check") == [("ok",)]
    cache = ResponseCache(Config(cache_backend="sqlite", cache_dir=cache_dir), secret=SECRET)
    try:
        present = [k for (k,) in db_rows(cache_dir, "SELECT key FROM entries")]
        index = {entry_key("K", i): i for i in range(10_000)}
        for k in present:
            hit = await cache.get(k)
            assert hit == (entry_payload("K", index[k], size=64_000), "disk")
        assert cache.stats()["integrity_failures"] == 0
        assert cache.stats()["entries"] == len(present)
        await cache.set(key("after"), payload("after"), agent="w")  # and it takes writes
        cache.memory.clear()  # type: ignore[union-attr]
        assert await cache.get(key("after")) == (payload("after"), "disk")
        cache.invalidate(key=key("after"))
        return len(present)
    finally:
        await cache.aclose()


def test_writer_killed_mid_run_leaves_a_database_that_opens_clean(
    tmp_path: Path, cache_dir: Path
) -> None:
    for lines in (30, 45):
        done = _churn_then_kill(tmp_path, cache_dir, lines=lines, disk_bytes=1 << 30)
        present = asyncio.run(_check_every_row(cache_dir))
        assert present >= done + 1  # every set that returned is there
    # Now with a bound small enough that the writer is evicting (multi-row transactions).
    bound = 12 * 64_100
    for lines in (30, 40):
        _churn_then_kill(tmp_path, cache_dir, lines=lines, disk_bytes=bound)
        present = asyncio.run(_check_every_row(cache_dir))
        assert 0 < present <= 12


def test_disk_tier_thread_is_the_only_one_touching_sqlite(make_cache: CacheFactory) -> None:
    cache = make_cache()
    store = cache.store
    assert isinstance(store, SQLiteTier)
    with pytest.raises(sqlite3.ProgrammingError, match="thread"):
        store.connection.execute("SELECT 1")
    assert store.call(lambda: threading.current_thread().name).startswith("agentnb-cache-sqlite")


async def test_an_entrys_agent_and_expiry_are_signed_too(
    make_cache: CacheFactory, cache_dir: Path
) -> None:
    cache = make_cache()
    await cache.set(key(1), payload(1), agent="w")
    await cache.set(key(2), payload(2), agent="w")
    # Stretching an entry's life or renaming its agent by editing the file is a bad entry.
    db_exec(cache_dir, "UPDATE entries SET expires_at = ? WHERE key = ?", 4.0e9, key(1))
    db_exec(cache_dir, "UPDATE entries SET agent = ? WHERE key = ?", "someone-else", key(2))
    fresh = make_cache()
    assert await fresh.get(key(1)) is None and await fresh.get(key(2)) is None
    assert fresh.stats()["integrity_failures"] == 2
