"""A fake API key through the real SDK path: does it show up on any output surface?

An `ANTHROPIC_API_KEY`-like key goes into the configuration and into `AnthropicBackend`, which
talks to the simulator over its HTTP transport; calls succeed, get a 429 (with retry-after)
and a 401, stream, hit the cache, run a workflow, while every logger (root, `anthropic`,
`httpx2`, `httpx`, `httpcore`, `agentnb`) logs at DEBUG into a list. The CLI's `config` and
`agent --json` run in-process with the key in the environment, their Anthropic backend pointed
at the simulator too (through `register_backend`, put back after). Then the key's unique part is
searched in every surface: log records (message, fields, tracebacks), reprs and strs, results'
dicts and displays, the metrics DataFrame and JSONL file, `Config.to_dict()`, the CLI's output,
and the cache's database files.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import traceback
from collections.abc import Callable
from pathlib import Path

from ..agents import AgentRegistry
from ..backends import AnthropicBackend, SimulatedBackend, simulator_transport
from ..backends.registry import BACKENDS, register_backend
from ..cache import SECRET_ENV, ResponseCache
from ..config import Config
from ..errors import AgentCallError
from ..orchestrator import AgentOrchestrator
from ._common import _SECRET, Row, fresh_tasks
from ._reliability_common import (
    captured_logs,
    probe_row,
    record_text,
    scoped_environ,
    scratch_dir,
)

__all__ = ["bench_secrets"]

_LOGGERS = ("anthropic", "httpx2", "httpx", "httpcore", "agentnb")
_WORKFLOW = "name: w\nsteps:\n  - {id: a, agent: writer, task: 'Draft {{topic}}'}\n"


def _files(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def _exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(vars(exc))


def bench_secrets(*, plant: Callable[[str], None] | None = None) -> list[Row]:
    """One row: occurrences of the fake key per surface. `plant(key)` runs while the logs are
    captured (the tests plant the key in a log record there, to see the search find it)."""
    unique = secrets.token_hex(12)
    key = f"sk-ant-api03-agentnbFAKE{unique}"
    surfaces: dict[str, str | bytes] = {}
    with scratch_dir("secrets") as tmp:
        empty = tmp / "agentnb.yaml"
        empty.write_text("", encoding="utf-8")
        with captured_logs("", *_LOGGERS) as records:
            surfaces.update(_library(key, tmp, empty))
            surfaces.update(_cli(key, tmp, empty))
            if plant is not None:
                plant(key)
        surfaces["log records"] = "\n".join(record_text(r) for r in records)
        surfaces["cache database files"] = _files(tmp / "cache") + _files(tmp / "cli-cache")
        surfaces["metrics JSONL files"] = _files(tmp / "metrics")
    found = {
        name: (text.count(unique.encode()) if isinstance(text, bytes) else text.count(unique))
        for name, text in surfaces.items()
    }
    total = sum(found.values())
    return [
        probe_row(
            "fake-key occurrences across every output surface",
            "AnthropicBackend over the simulator transport, 429 + 401 injected, DEBUG logs of "
            "root/anthropic/httpx2; CLI config and agent --json",
            len(surfaces),
            f"{total} occurrences in {sum(1 for n in found.values() if n)} surfaces",
            "0",
            total == 0,
            detail=f"searched: {', '.join(surfaces)} ({len(records)} log records, "
            f"{len(surfaces['cache database files']):,} cache bytes, "
            f"{len(surfaces['metrics JSONL files']):,} metrics bytes)",
            failures=[f"{name}: {n}" for name, n in found.items() if n],
        )
    ]


def _library(key: str, tmp: Path, empty: Path) -> dict[str, str | bytes]:
    """The Python API's surfaces, after calls that succeed, retry, fail, stream and hit."""
    cfg = Config.load(
        path=empty,
        env={"ANTHROPIC_API_KEY": key},
        backend="anthropic",
        base_url="http://sim.local",
        cache_dir=tmp / "cache",
        metrics_path=tmp / "metrics" / "calls.jsonl",
        progress=False,
        backoff_base_s=0.01,
        max_attempts=3,
    )
    sim = SimulatedBackend(latency_s=0.002, jitter=0.0)
    backend = AnthropicBackend(
        api_key=cfg.api_key, base_url=cfg.base_url, transport=simulator_transport(sim)
    )
    cache = ResponseCache(cfg, secret=_SECRET)
    agents = AgentRegistry(include_default_dirs=False)
    orch = AgentOrchestrator(cfg, backend=backend, agents=agents, cache=cache)
    shown: list[str] = []
    try:
        first, streamed, denied = fresh_tasks(3, "Reliability secrets")
        sim.inject("rate_limit", 1, retry_after=0.01)
        ok = orch.execute_agent("writer", first)
        again = orch.execute_agent("writer", first)  # a cache hit
        stream = orch.stream_agent("writer", streamed)
        shown.append("".join(stream))
        sim.inject("authentication", 1, agent="python-expert")
        error: BaseException | None = None
        try:
            orch.execute_agent("python-expert", denied)
        except AgentCallError as exc:
            error = exc
        run = orch.run_workflow(_WORKFLOW, {"topic": "keys"})
        for result in (ok, again, stream.result):
            shown += [repr(result), str(result), str(result.to_dict()) if result else ""]
            shown += [result._repr_markdown_(), result.footer()] if result else []
        shown += [repr(run), run.to_json(), run._repr_html_()]
        if error is not None:
            shown.append(_exception_text(error))
        metrics = orch.metrics()
        shown += [metrics.to_string(), metrics.to_json(date_format="iso")]
        reprs = [repr(x) + str(x) for x in (orch, orch.aio, backend, cfg, cache, sim)]
        orch.tracker.flush()
    finally:
        orch.close()
    return {
        "reprs and strs": "\n".join(reprs),
        "results, errors, runs, metrics": "\n".join(shown),
        "Config.to_dict()": str(cfg.to_dict()),
    }


def _cli(key: str, tmp: Path, empty: Path) -> dict[str, str | bytes]:
    """`python -m agentnb config` and `agent --json`, in-process, the key in the environment."""
    from ..__main__ import main

    sim = SimulatedBackend(latency_s=0.002, jitter=0.0)
    original = BACKENDS["anthropic"]

    def through_simulator(cfg: Config) -> AnthropicBackend:
        return AnthropicBackend(
            api_key=cfg.api_key, base_url=cfg.base_url, transport=simulator_transport(sim)
        )

    env: dict[str, str | None] = {
        "ANTHROPIC_API_KEY": key,
        "ANTHROPIC_BASE_URL": "http://sim.local",
        "AGENTNB_CONFIG": str(empty),
        "AGENTNB_BACKEND": "anthropic",
        "AGENTNB_CACHE_DIR": str(tmp / "cli-cache"),
        "AGENTNB_METRICS_PATH": str(tmp / "metrics" / "cli.jsonl"),
        SECRET_ENV: _SECRET.decode(),
    }
    outputs: dict[str, str | bytes] = {}
    register_backend("anthropic", through_simulator, replace=True)
    try:
        with scoped_environ(env):
            for name, argv in (
                ("CLI config", ["config"]),
                ("CLI agent --json", ["agent", "--json", "writer", fresh_tasks(1)[0]]),
            ):
                out, err = io.StringIO(), io.StringIO()
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    status = main(argv)
                outputs[name] = f"{out.getvalue()}\n{err.getvalue()}\nexit {status}"
    finally:
        register_backend("anthropic", original, replace=True)
    return outputs
