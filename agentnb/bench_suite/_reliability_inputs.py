"""Bad inputs: is each refused with one clear message, before anything runs?

A Python input holds when it raises an `AgentnbError` whose message is one non-empty line of at
most `MESSAGE_LIMIT` characters, and the simulator's `call_count` did not move. A command line
holds when `main(argv)` returns 2 with one `agentnb: error: ...` line of bounded length on
stderr, nothing on stdout, and no row appended to the metrics file every call writes (so no
call ran). The inputs run in a scratch working directory with the cache secret, the config and
cache directories and the command lines' settings pointed into it, all put back after.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..agents import AgentRegistry
from ..backends import SimulatedBackend
from ..cache import SECRET_ENV
from ..config import Config
from ..errors import AgentnbError
from ..orchestrator import AgentOrchestrator
from ._common import _SECRET, Row
from ._reliability_cases import BadInput, InputContext
from ._reliability_common import MESSAGE_LIMIT, probe_row, scoped_environ, scratch_dir
from ._reliability_corpus import python_inputs
from ._reliability_corpus_outside import outside_inputs

__all__ = ["bench_inputs", "corpus"]

_PREFIX = "agentnb: error: "


def corpus(tmp: Path) -> list[BadInput]:
    """Every bad input (the command lines' files are written into `tmp`)."""
    return [*python_inputs(), *outside_inputs(tmp)]


def _message_problem(message: str) -> str | None:
    if not message.strip():
        return "an empty message"
    if "\n" in message.strip():
        return f"a message of {message.strip().count(chr(10)) + 1} lines"
    if len(message) > MESSAGE_LIMIT:
        return f"a message of {len(message):,} characters"
    return None


def _try_python(case: BadInput, ctx: InputContext) -> list[str]:
    """What did not hold for a Python input (empty: it held)."""
    assert case.call is not None
    before = ctx.sim.call_count
    problems = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # agent files that are skipped warn; not our topic
            returned = case.call(ctx)
    except AgentnbError as exc:
        problem = _message_problem(str(exc))
        if problem:
            problems.append(f"{type(exc).__name__} with {problem}")
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        problems.append(f"{type(exc).__name__} (not an AgentnbError): {first}")
    else:
        status = getattr(returned, "status", None)  # a workflow run that failed inside
        problems.append("accepted" if status is None else f"accepted (a run, {status})")
    ran = ctx.sim.call_count - before
    if ran:
        problems.append(f"{ran} call(s) ran")
    return problems


@contextlib.contextmanager
def _stdin(data: bytes | None) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(data or b""), encoding="utf-8")
    try:
        yield
    finally:
        sys.stdin = saved


def _rows_in(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _try_cli(case: BadInput, metrics: Path) -> list[str]:
    """What did not hold for a command line (empty: it held)."""
    from ..__main__ import main

    before = _rows_in(metrics)
    out, err = io.StringIO(), io.StringIO()
    problems = []
    status: object = None
    with (
        scoped_environ(dict(case.env)),
        _stdin(case.stdin),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        try:
            status = main(list(case.argv))
        except SystemExit as exc:  # argparse's own refusals
            status = exc.code
        except Exception as exc:
            problems.append(f"{type(exc).__name__} escaped main()")
    text = err.getvalue()
    if status != 2:
        problems.append(f"exit status {status}")
    if not text.startswith(_PREFIX) or text.count("\n") != 1:
        lines = text.strip().splitlines()
        problems.append(f"stderr of {len(lines)} lines: {(lines or [''])[0][:100]!r}")
    elif len(text) - len(_PREFIX) > MESSAGE_LIMIT:
        problems.append(f"a message of {len(text):,} characters")
    if out.getvalue():
        problems.append("printed to stdout")
    ran = _rows_in(metrics) - before
    if ran:
        problems.append(f"{ran} call(s) ran")
    return problems


def bench_inputs(cases: Sequence[BadInput] | None = None, *, at_least: int = 100) -> list[Row]:
    """Try every bad input (default: `corpus`); one row, the ones that did not hold below it.
    The goal also asks for `at_least` inputs."""
    failures: list[str] = []
    with scratch_dir("inputs") as tmp, contextlib.chdir(tmp):
        empty = tmp / "agentnb.yaml"
        empty.write_text("", encoding="utf-8")
        metrics = tmp / "cli-metrics.jsonl"
        env: dict[str, str | None] = {
            SECRET_ENV: _SECRET.decode(),
            "XDG_CONFIG_HOME": str(tmp / "xdg-config"),
            "XDG_CACHE_HOME": str(tmp / "xdg-cache"),
            "AGENTNB_CONFIG": str(empty),
            "AGENTNB_BACKEND": "simulated",
            "AGENTNB_SIM_LATENCY_S": "0",
            "AGENTNB_CACHE_ENABLED": "false",
            "AGENTNB_PROGRESS": "false",
            "AGENTNB_METRICS_PATH": str(metrics),
            "ANTHROPIC_API_KEY": None,
        }
        with scoped_environ(env):
            cases = corpus(tmp) if cases is None else cases
            sim = SimulatedBackend(latency_s=0.0, jitter=0.0)
            cfg = Config.load(
                path=empty, env={}, backend="simulated", cache_enabled=False, progress=False
            )
            agents = AgentRegistry(include_default_dirs=False)
            with AgentOrchestrator(cfg, backend=sim, agents=agents) as orch:
                ctx = InputContext(sim, orch, tmp, empty)
                for case in cases:
                    if case.call is not None:
                        problems = _try_python(case, ctx)
                    else:
                        problems = _try_cli(case, metrics)
                    if problems:
                        failures.append(f"{case.name}: {'; '.join(problems)}")
    kinds = Counter(c.kind for c in cases)
    held = len(cases) - len(failures)
    return [
        probe_row(
            "bad inputs refused with one clear message, nothing run",
            "call options, tasks, agent names, workflows, agent files, config values and "
            "command lines; the Python API and the CLI in-process",
            len(cases),
            f"{held} of {len(cases)} held",
            f"all (>= {at_least} inputs; one line <= {MESSAGE_LIMIT} chars, AgentnbError, 0 calls)",
            held == len(cases) and len(cases) >= at_least,
            detail=", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())),
            failures=failures,
        )
    ]
