"""Processes sharing one quota: two worker processes against one `python -m agentnb simulate`.

Each worker is an `AgentOrchestrator` with backend `anthropic` at the server's URL (the same API
key, so one quota scope), its buckets in a shared store: SQLite in a state_dir both use, or a
real `redis-server` on loopback (started as `test_cache_redis` starts it; without a binary
these tests FAIL saying how to get one). What is asserted is what the server itself counted
(`GET /agentnb/stats`): no window of its accepted calls' starts holds more than the quota
allows, 429s are few, every call is answered; never how long anything took.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_cache_redis import RedisServer, find_redis_server
from test_sim_server import Server

from agentnb.quota.store_redis import PREFIX

RATE = 50.0  # requests a second: 3,000 RPM, a burst of 50 (one second's worth)
LIMITS = {"*": {"rpm": RATE * 60, "itpm": 110 * RATE * 60, "otpm": 90 * RATE * 60}}
LATENCY_S = "0.02"

# One worker: "ready" once set up; on a line from stdin, its calls; then one JSON line. The
# heartbeat of a Redis store is made faster (through the registry of stores) so that both
# processes have counted each other well before the test kills Redis.
WORKER = """
import json, logging, sys
from agentnb import AgentOrchestrator, AgentRegistry, Config
from agentnb.quota import stores
from agentnb.quota.store_redis import RedisStore

spec = json.loads(sys.argv[1])
stores.STORES["redis"] = lambda cfg: RedisStore(cfg.redis_url, heartbeat_s=0.1)
warnings = []

class Warnings(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())

logging.getLogger("agentnb").addHandler(Warnings(logging.WARNING))
config = Config.load(
    env={"ANTHROPIC_API_KEY": "sk-test"},
    backend="anthropic",
    base_url=spec["url"],
    cache_enabled=False,
    max_concurrency=100,
    max_tokens=200,
    ratelimit_backend=spec["store"],
    state_dir=spec["state_dir"],
    redis_url=spec["redis_url"] or "redis://127.0.0.1:1/0",
    progress=False,
)
with AgentOrchestrator(config, agents=AgentRegistry(include_default_dirs=False)) as orch:
    import anthropic  # before "ready": the SDK's import is not part of the job
    print("ready", flush=True)
    sys.stdin.readline()
    name, n = spec["name"], spec["calls"]
    tasks = [("writer", f"Summarise report {name}-{i}: " + "sales " * (i % 40)) for i in range(n)]
    results = orch.execute_multiple(tasks, return_exceptions=True)
    (quota,) = orch.quota().to_dict("records")
failed = [repr(r) for r in results if isinstance(r, BaseException)]
print(json.dumps({"answered": len(results) - len(failed), "failed": failed,
                  "store": quota["store"], "warnings": warnings}), flush=True)
"""


class Workers:
    """Worker processes started together against `url`; `go()` lets them run, `reports()`
    waits for what each printed."""

    def __init__(self, n: int, calls: int, url: str, store: str, state: Path, redis: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTNB_", "ANTHROPIC_"))}
        env["PYTHONPATH"] = str(Path(__file__).parents[1])
        self.procs: list[subprocess.Popen[str]] = []
        for i in range(n):
            spec = {"name": f"w{i}", "url": url, "store": store, "calls": calls}
            spec |= {"state_dir": str(state), "redis_url": redis}
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", WORKER, json.dumps(spec)],
                    env=env,
                    cwd=state.parent,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in self.procs:
            timer = threading.Timer(60, proc.kill)  # a worker that never says it is ready
            timer.start()
            try:
                line = proc.stdout.readline() if proc.stdout else ""
            finally:
                timer.cancel()
            assert line.strip() == "ready", (line, proc.communicate(timeout=30)[1][-2000:])

    def go(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

    def reports(self) -> list[dict[str, Any]]:
        out = []
        for proc in self.procs:
            stdout, stderr = proc.communicate(timeout=90)
            assert proc.returncode == 0, stderr[-3000:]
            out.append(json.loads(stdout.strip().splitlines()[-1]))
        return out

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path, "--latency", LATENCY_S, "--limits", json.dumps(LIMITS))
    yield running
    running.proc.kill()
    running.proc.communicate(timeout=30)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    found = RedisServer(find_redis_server(), tmp_path)
    found.start()
    yield found
    found.kill()


def stats(server: Server) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/agentnb/stats", timeout=10) as response:
        counted: dict[str, Any] = json.load(response)
    return counted


def most_over_the_quota(starts: list[float], rate: float, burst: float) -> float:
    """How far the busiest window of accepted starts went past `burst + rate * its length`
    (negative: every window kept within it)."""
    worst = -burst
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            worst = max(worst, (j - i + 1) - (burst + rate * (starts[j] - first)))
    return worst


def run_two(server: Server, store: str, tmp_path: Path, redis: str = "", calls: int = 60) -> Any:
    workers = Workers(2, calls, server.url, store, tmp_path / "state", redis)
    try:
        workers.go()
        return workers, workers.reports()
    finally:
        workers.kill()


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_two_processes_keep_to_one_quota_together(
    store: str, server: Server, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    redis = request.getfixturevalue("redis_server").url if store == "redis" else ""
    _, reports = run_two(server, store, tmp_path, redis)
    counted = stats(server)
    assert [(r["answered"], r["failed"], r["warnings"]) for r in reports] == [(60, [], [])] * 2
    assert {r["store"] for r in reports} == {store}  # their buckets were the shared store's
    assert counted["accepted"] == 120 and counted["errors"] == 0
    assert counted["calls"] == 120 + counted["rate_limited"]
    # The quota as the server enforces it: one second's burst, then the rate, in every window.
    assert counted["limits"]["sonnet"]["burst_s"] == 1.0
    assert most_over_the_quota(counted["accepted_starts"], RATE, RATE) <= 1e-6 * RATE
    assert counted["rate_limited"] <= 3, counted["rate_limited"]  # few: the two paced together


def test_redis_killed_mid_run_each_process_paces_alone_at_its_share(
    server: Server, redis_server: RedisServer, tmp_path: Path
) -> None:
    workers = Workers(2, 100, server.url, "redis", tmp_path / "state", redis_server.url)
    try:
        workers.go()
        with redis_server.client() as c:
            # Both processes must have counted each other: a heartbeat of each after both were
            # in the set of live clients, and some calls answered through the shared buckets.
            deadline = time.monotonic() + 30
            both = None
            while time.monotonic() < deadline:
                beats = c.zrange(PREFIX + "clients", 0, -1, withscores=True)
                if len(beats) == 2:
                    both = both or max(score for _, score in beats)
                    if min(score for _, score in beats) > both and stats(server)["accepted"] >= 60:
                        break
                time.sleep(0.02)
            else:
                pytest.fail(f"the workers never both beat: {beats}")
        redis_server.kill()
        at_kill = stats(server)["accepted"]
        reports = workers.reports()
    finally:
        workers.kill()
    assert at_kill < 200  # killed mid-run
    assert [(r["answered"], r["failed"]) for r in reports] == [(100, [])] * 2
    for r in reports:
        (warning,) = r["warnings"]  # exactly one, however many steps failed after it
        assert redis_server.url in warning and "1/2 of the quota (2 clients shared it)" in warning
    assert stats(server)["accepted"] == 200
