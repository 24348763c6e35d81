"""A forked child (a `multiprocessing` fork pool's worker, `os.fork()`) remakes what agentnb owns.

Each test forks after the parent has made calls, so the parent's loop thread, cache thread and
connection, metrics writer thread and locks exist at the fork. Without `agentnb._fork` the child
hangs (caught by a deadline, then the child is killed) or gives a wrong answer. Every child is
reaped, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar

import pytest

import agentnb
from agentnb import PerformanceTracker
from agentnb._fork import at_fork_in_child
from agentnb.agents import AgentRegistry
from agentnb.backends import AnthropicBackend, SimulatedBackend
from agentnb.cache import ResponseCache
from agentnb.cache.sqlite import SQLiteTier
from agentnb.config import Config
from agentnb.loop import run_sync
from agentnb.orchestrator import AgentOrchestrator

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork semantics of Linux"),
    # Python 3.12+ warns about forking a process that has threads: forking one is the point.
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

FORK = multiprocessing.get_context("fork")
ANSWER_S = 30.0  # how long a child may take to answer before the test calls it hung


@pytest.fixture
def orch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentOrchestrator]:
    """`agentnb.default_orchestrator()` on the simulator, with the default SQLite cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("AGENTNB_BACKEND", "simulated")
    monkeypatch.setenv("AGENTNB_SIM_LATENCY_S", "0")
    monkeypatch.setenv("AGENTNB_SIM_JITTER", "0")
    monkeypatch.setenv("AGENTNB_PROGRESS", "false")
    orch = agentnb.default_orchestrator(reset=True)
    try:
        yield orch
    finally:
        orch.close()


def sim(orch: AgentOrchestrator) -> SimulatedBackend:
    backend = orch.backend
    assert isinstance(backend, SimulatedBackend)
    return backend


def on_disk_only(orch: AgentOrchestrator) -> None:
    """Empty the memory tier, so a cache hit must come from SQLite."""
    assert orch.cache is not None and orch.cache.memory is not None
    orch.cache.memory.clear()


def run_pool(fn: Callable[[str], Any], tasks: list[str]) -> list[Any]:
    """`fn` over `tasks` in a fork pool of 2 workers; the workers are always reaped."""
    pool = FORK.Pool(2)
    try:
        results = pool.map_async(fn, tasks).get(timeout=ANSWER_S)
        pool.close()  # workers end normally (flushing what they hold), not by SIGTERM
        pool.join()
        return results
    finally:
        pool.terminate()
        pool.join()


@contextlib.contextmanager
def forked(job: Callable[[Connection], object]) -> Iterator[Connection]:
    """A forked child running `job(conn)`, whose return value it sends last; the test talks to
    it over the connection it is given. The child is killed and reaped if it has not ended."""
    here, there = FORK.Pipe()

    def main() -> None:
        try:
            there.send(("ok", job(there)))
        except BaseException as exc:
            there.send(("error", f"{type(exc).__name__}: {exc}"))

    child = FORK.Process(target=main, daemon=True)
    child.start()
    there.close()
    try:
        yield here
        child.join(ANSWER_S)
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        here.close()


def receive(conn: Connection) -> Any:
    """What the child sent next; fails the test if it hung or raised."""
    if not conn.poll(ANSWER_S):
        pytest.fail("the forked child did not answer: it hangs")
    status, value = conn.recv()
    if status == "error":
        pytest.fail(f"the forked child failed: {value}")
    return value


# -- workers of the pools: module-level, so a pool can name them ----------------------------------


def answer(task: str) -> tuple[str, bool, int]:
    """A pool worker's call through the process's shared orchestrator."""
    result = agentnb.default_orchestrator().execute_agent("writer", task)
    return result.text, result.cached, os.getpid()


# -- the pool -------------------------------------------------------------------------------------


def test_fork_pool_workers_answer_through_the_default_orchestrator(orch: AgentOrchestrator) -> None:
    parents = orch.execute_agent("writer", "asked by the parent")
    on_disk_only(orch)  # a child's hit on it must come through its own SQLite connection

    tasks = ["asked by the parent", *(f"asked by a child {i}" for i in range(5))]
    results = run_pool(answer, tasks)

    assert results[0][:2] == (parents.text, True), "the child missed the parent's entry on disk"
    assert not any(cached for _, cached, _ in results[1:])
    assert os.getpid() not in {pid for _, _, pid in results}
    # and the parent sees what the children stored
    on_disk_only(orch)
    for (text, _, _), task in zip(results[1:], tasks[1:], strict=True):
        again = orch.execute_agent("writer", task)
        assert again.cached and again.text == text


def test_children_append_their_records_to_the_metrics_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("AGENTNB_METRICS_PATH", str(path))
    monkeypatch.setenv("AGENTNB_CACHE_ENABLED", "false")  # one record per call, made here
    monkeypatch.setenv("AGENTNB_BACKEND", "simulated")
    monkeypatch.setenv("AGENTNB_SIM_LATENCY_S", "0")
    monkeypatch.chdir(tmp_path)
    orch = agentnb.default_orchestrator(reset=True)
    try:
        orch.execute_agent("writer", "the parent's call")  # the writer thread exists now
        results = run_pool(answer, [f"a child's call {i}" for i in range(6)])
        orch.execute_agent("writer", "the parent's call after")
        assert orch.tracker.flush()
    finally:
        orch.close()

    written = PerformanceTracker.load(path)
    assert written.skipped_lines == 0  # parent and children never cut into each other's lines
    assert len(written) == 1 + len(results) + 1


def test_a_worker_ending_at_once_has_written_its_records(tmp_path: Path) -> None:
    """A multiprocessing worker ends with os._exit (no atexit): its records are flushed first."""
    path = tmp_path / "metrics.jsonl"
    tracker = PerformanceTracker(path)
    n = 20_000

    def child(_: Connection) -> None:
        for i in range(n):
            tracker.add(None, None, None, "child", "m", "sim", 1.8e9, 1.0, 0, 1, False, i, 0, 0,
                        0, 0.0, True, None)  # fmt: skip

    with forked(child) as conn:
        receive(conn)
    tracker.close()
    assert len(PerformanceTracker.load(path)) == n


# -- locks, limits and calls in flight at the fork ------------------------------------------------


def test_a_limit_full_and_waited_for_at_the_fork_does_not_block_the_child(
    orch: AgentOrchestrator,
) -> None:
    orch.reconfigure(Config.load(max_concurrency=1))
    sim(orch).latencies = {"code-reviewer": 60.0}
    # One slow call holds the only slot, another waits for it.
    jobs: list[Future[Any]] = [
        orch.aio.home.submit(orch.aio.execute_agent("code-reviewer", f"slow {i}")) for i in (1, 2)
    ]
    try:
        deadline = time.monotonic() + 10
        while "waiting=1" not in repr(orch.aio.admission) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "in_flight=1, waiting=1" in repr(orch.aio.admission)

        def child(_: Connection) -> str:
            return agentnb.default_orchestrator().execute_agent("writer", "in the child").agent

        with forked(child) as conn:
            assert receive(conn) == "writer"
    finally:
        for job in jobs:
            job.cancel()


def test_fork_while_a_call_runs_on_the_home_loop(orch: AgentOrchestrator) -> None:
    orch.execute_agent("writer", "first")
    sim(orch).latencies = {"code-reviewer": 60.0}
    slow: Future[Any] = orch.aio.home.submit(orch.aio.execute_agent("code-reviewer", "slow"))
    try:
        deadline = time.monotonic() + 10
        while sim(orch).in_flight < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sim(orch).in_flight == 1

        def child(_: Connection) -> list[str]:
            shared = agentnb.default_orchestrator()
            one = shared.execute_agent("writer", "from the child")
            many = shared.execute_multiple([("writer", "x"), ("python-expert", "y")])
            return [one.agent, *(r.agent for r in many if isinstance(r, agentnb.AgentResult))]

        with forked(child) as conn:
            assert receive(conn) == ["writer", "writer", "python-expert"]
    finally:
        slow.cancel()


def test_locks_a_parent_thread_held_at_the_fork_are_new_in_the_child(
    orch: AgentOrchestrator,
) -> None:
    orch.execute_agent("writer", "cached before the fork")
    assert orch.cache is not None and orch.cache.memory is not None
    # Private on purpose: a call holds each of these only briefly, and nothing public holds one
    # across a fork on demand.
    locks: list[contextlib.AbstractContextManager[bool]] = [
        orch.tracker._lock,
        orch.cache.memory._lock,
        orch.agents._lock,
    ]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with contextlib.ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            held.set()
            release.wait(ANSWER_S)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)

        def child(_: Connection) -> tuple[bool, str, int]:
            shared = agentnb.default_orchestrator()
            shared.agents.refresh()  # a lookup within the check interval would not lock
            hit = shared.execute_agent("writer", "cached before the fork")
            other = shared.execute_agent("python-expert", "new in the child")
            # The tracker was mid-change for all the child knows: it starts from no rows.
            return hit.cached, other.agent, len(shared.tracker)

        with forked(child) as conn:
            assert receive(conn) == (True, "python-expert", 2)
    finally:
        release.set()
        holder.join()


def test_fork_while_the_cache_thread_is_in_sqlite_leaves_the_child_on_memory(
    orch: AgentOrchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    orch.execute_agent("writer", "cached before the fork")
    assert orch.cache is not None and isinstance(orch.cache.store, SQLiteTier)
    tier = orch.cache.store
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:  # stands for a statement running at the moment of the fork
        inside.set()
        release.wait(ANSWER_S)

    holder = threading.Thread(target=tier.call, args=(hold,))
    holder.start()
    try:
        assert inside.wait(10)

        def child(_: Connection) -> tuple[bool, bool, bool]:
            shared = agentnb.default_orchestrator()
            hit = shared.execute_agent("writer", "cached before the fork")  # memory, inherited
            miss = shared.execute_agent("writer", "new in the child")
            warned = any("forked while the cache" in r.getMessage() for r in caplog.records)
            return hit.cached, miss.cached, warned

        with forked(child) as conn:
            assert receive(conn) == (True, False, True)
    finally:
        release.set()
        holder.join()


# -- what the child keeps of its own --------------------------------------------------------------


def test_a_childs_writes_survive_the_parent_closing_its_cache(orch: AgentOrchestrator) -> None:
    """SQLite keeps one record of a file's locks per process: the child's own connection must
    not count the parent's inherited locks as its own, or the parent's close deletes the
    child's writes (the WAL) from under it."""
    orch.execute_agent("writer", "the parent's")

    def child(conn: Connection) -> str:
        shared = agentnb.default_orchestrator()
        shared.execute_agent("writer", "the child's first")  # its connection is open now
        conn.send(("ok", "opened"))
        conn.recv()  # the parent has closed its cache
        return shared.execute_agent("writer", "the child's second").text

    with forked(child) as conn:
        assert receive(conn) == "opened"
        orch.close()  # the parent's last connection: SQLite checkpoints and removes the WAL
        conn.send("closed")
        text = receive(conn)

    fresh = agentnb.default_orchestrator(reset=True)
    try:
        again = fresh.execute_agent("writer", "the child's second")
        assert again.cached and again.text == text
    finally:
        fresh.close()


def test_a_child_spills_metrics_rows_to_a_file_of_its_own() -> None:
    tracker = PerformanceTracker(max_rows_in_memory=2)

    def add(agent: str, n: int) -> None:
        for i in range(n):
            tracker.add(None, None, None, agent, "m", "sim", 1.8e9, 1.0, 0, 1, False, i, 0, 0, 0,
                        0.0, True, None)  # fmt: skip

    add("parent", 4)  # two chunks in the spill file already

    def child(conn: Connection) -> list[str]:
        add("child", 4)  # spilled at the end of the file
        conn.send(("ok", "spilled"))
        conn.recv()  # the parent has spilled more, at the end of its file
        return list(tracker.to_dataframe()["agent"])

    with forked(child) as conn:
        assert receive(conn) == "spilled"
        add("parent", 4)
        conn.send("go on")
        assert receive(conn) == ["parent"] * 4 + ["child"] * 4
    assert list(tracker.to_dataframe()["agent"]) == ["parent"] * 8


# -- the registry ---------------------------------------------------------------------------------


class _Owner:
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen
        at_fork_in_child(self.remake)

    def remake(self) -> None:
        if self.name == "failing":
            raise RuntimeError("cannot remake")
        self.seen.append(self.name)


def test_callbacks_run_in_order_past_a_failure_and_only_while_their_object_lives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    owners = [_Owner(name, seen) for name in ("first", "failing", "gone", "last")]
    del owners[2]

    def child(_: Connection) -> tuple[list[str], list[str]]:
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        return seen, errors

    with caplog.at_level(logging.ERROR, logger="agentnb"), forked(child) as conn:
        ran, errors = receive(conn)
    assert ran == ["first", "last"]
    assert errors == ["agentnb: remaking _Owner.remake in a forked child failed"]
    assert seen == []  # nothing runs in the parent


class _MessagesAPI(http.server.BaseHTTPRequestHandler):
    """Answers every POST with one fixed Messages-API reply, keeping the connection open; notes
    the client port of each request in `ports`, which tells the connections apart."""

    protocol_version = "HTTP/1.1"
    ports: ClassVar[list[int]] = []
    reply = json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "over TCP"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 2},
        }
    ).encode()

    def do_POST(self) -> None:
        self.ports.append(self.client_address[1])
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.reply)))
        self.end_headers()
        self.wfile.write(self.reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_child_makes_its_own_sdk_client_and_connections() -> None:
    _MessagesAPI.ports.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MessagesAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    backend = AnthropicBackend(api_key="sk-test-not-a-real-key", base_url=url)
    config = Config.load(backend="anthropic", cache_enabled=False, env={})
    agents = AgentRegistry(include_default_dirs=False)
    orch = AgentOrchestrator(config, backend=backend, agents=agents)
    try:
        # The parent's pool now holds a kept-alive connection, on the parent's loop.
        assert orch.execute_agent("writer", "from the parent").text == "over TCP"

        def child(_: Connection) -> str:
            return orch.execute_agent("writer", "from the child").text

        with forked(child) as conn:
            assert receive(conn) == "over TCP"
        assert orch.execute_agent("writer", "from the parent again").text == "over TCP"
        parents, childs = _MessagesAPI.ports[:2]
        assert childs != parents, "the child sent its request on the parent's connection"
    finally:
        orch.close()
        server.shutdown()
        server.server_close()


# -- Redis ----------------------------------------------------------------------------------------


def test_a_child_uses_a_redis_client_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_cache_redis import RedisServer, find_redis_server

    server = RedisServer(find_redis_server(), tmp_path)
    server.start()
    try:
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
        config = Config.load(cache_backend="redis", redis_url=server.url, env={})
        cache = ResponseCache(config)
        assert cache.memory is not None
        stored = {"text": "from the parent"}
        run_sync(cache.set("k" * 64, stored, agent="writer"))  # the worker threads exist now
        cache.memory.clear()

        def child(_: Connection) -> Any:
            run_sync(cache.set("c" * 64, {"text": "from the child"}, agent="writer"))
            return run_sync(cache.get("k" * 64))

        with forked(child) as conn:
            assert receive(conn) == (stored, "redis")
        cache.memory.clear()
        assert run_sync(cache.get("c" * 64)) == ({"text": "from the child"}, "redis")
        cache.close()
    finally:
        server.kill()
