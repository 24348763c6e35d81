"""Bad inputs from outside the Python API: configuration values and command lines.

Settings come as arguments, environment variables and `agentnb.yaml` files; command lines run
`agentnb.__main__.main` in-process, with their own standard input and environment.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from ._reliability_cases import BadInput, InputContext, laughs
from ._reliability_corpus import ONE_STEP, WORKFLOWS, short, workflow_text

__all__ = ["outside_inputs"]


# -- configuration ----------------------------------------------------------------------------
CONFIG_ARGUMENTS: list[tuple[str, Any]] = [
    ("sim_latency_s", math.nan),
    ("timeout_s", math.nan),
    ("timeout_s", -1),
    ("timeout_s", 0),
    ("max_concurrency", 0),
    ("max_concurrency", -3),
    ("max_concurrency", "lots"),
    ("cache_ttl_s", math.inf),
    ("cache_ttl_s", -1),
    ("max_attempts", 0),
    ("backoff_base_s", math.nan),
    ("sim_jitter", 2),
    ("bogus", 1),
    ("backend", "bogus"),
    ("cache_backend", "bogus"),
    ("sim_fault_kinds", ["bogus"]),
    ("cache_dir", ""),
    ("metrics_path", ""),
    ("agents_dirs", [""]),
]
CONFIG_ENV: dict[str, str] = {
    "AGENTNB_TIMEOUT_S": "nan",
    "AGENTNB_MAX_CONCURRENCY": "lots",
    "AGENTNB_SIM_LATENCY_S": "-1",
    "AGENTNB_CACHE_DIR": "",
    "AGENTNB_MODEL_ALIASES": laughs(levels=6, width=10),
}
CONFIG_FILES: dict[str, str | bytes] = {
    "timeout_s .nan": "timeout_s: .nan\n",
    "unknown key": "bogus: 1\n",
    "max_concurrency -1": "max_concurrency: -1\n",
    "cache_dir empty": "cache_dir: ''\n",
    "alias bomb": f"x-anchors: {laughs()}\n",
    "syntax error": "max_concurrency: [\n",
    "a list at the top": "- a\n- b\n",
    "non-UTF-8 bytes": "default_model: caf\xe9\n".encode("latin-1"),
}


def _configs() -> Iterator[BadInput]:
    for key, value in CONFIG_ARGUMENTS:
        name = f"config argument {key}={short(value)}"
        yield BadInput(name, "config", partial(_with, {key: value}, None, None))
    for var, value in CONFIG_ENV.items():
        name = f"config env {var}={short(value)}"
        yield BadInput(name, "config", partial(_with, {}, {var: value}, None))
    yield BadInput("config env AGENTNB_CONFIG naming a missing file", "config", _missing_file)
    for name, text in CONFIG_FILES.items():
        yield BadInput(f"config file: {name}", "config", partial(_with, {}, None, text))
    yield BadInput("config: cache_dir is a file", "config", _cache_dir_file)
    redis = {"cache_enabled": True, "cache_backend": "redis", "redis_url": ""}
    yield BadInput(
        "config: redis_url empty with cache_backend redis",
        "config",
        partial(_with, redis, None, None),
    )


def _with(
    settings: dict[str, Any],
    env: dict[str, str] | None,
    file_text: str | bytes | None,
    c: InputContext,
) -> Any:
    return c.call_with_config(env=env, file_text=file_text, **settings)


def _missing_file(c: InputContext) -> Any:
    return c.call_with_config(env={"AGENTNB_CONFIG": str(c.fresh("missing.yaml"))})


def _cache_dir_file(c: InputContext) -> Any:
    path = c.write("file", "x")
    return c.call_with_config(cache_enabled=True, cache_backend="sqlite", cache_dir=path)


# -- command lines ----------------------------------------------------------------------------
CLI_WORKFLOWS: dict[str, str | bytes] = {
    "cycle": WORKFLOWS["cycle through placeholders"],
    "alias bomb": WORKFLOWS["alias bomb"],
    "unknown agent": WORKFLOWS["unknown agent"],
    "non-UTF-8": ("name: caf\xe9\nsteps:\n  - " + ONE_STEP + "\n").encode("latin-1"),
}
_NEEDS_VAR = workflow_text("{id: a, agent: writer, task: 'Look at {{src}}'}")


def _command_lines(tmp: Path) -> Iterator[BadInput]:
    agent = ["--simulate", "agent"]
    for flags in (
        ["--max-tokens", "0"],
        ["--max-tokens", "lots"],
        ["-t", "5"],
        ["-t", "nan"],
        ["--timeout", "-1"],
        ["--max-attempts", "0"],
        ["-m", ""],
        ["--stop", ""],
        ["--system", "\udce9"],  # what argv holds for a byte that is not UTF-8
    ):
        yield BadInput(f"cli agent {' '.join(flags)}", "cli", argv=[*agent, *flags, "writer", "hi"])
    for name in ("../x", "wrtier", ""):
        yield BadInput(f"cli agent name {name!r}", "cli", argv=[*agent, name, "hi"])
    for task in ("", "   ", "caf\udce9"):
        yield BadInput(f"cli agent task {task!r}", "cli", argv=[*agent, "writer", task])
    yield BadInput("cli agent stdin not UTF-8", "cli", argv=[*agent, "writer", "-"], stdin=b"\xff")
    yield BadInput("cli agent stdin empty", "cli", argv=[*agent, "writer", "-"], stdin=b"")
    for var, value in (("AGENTNB_MAX_CONCURRENCY", "0"), ("AGENTNB_TIMEOUT_S", "nan")):
        argv = [*agent, "writer", "hi"]
        yield BadInput(f"cli agent with {var}={value}", "cli", argv=argv, env={var: value})
    run = ["--simulate", "run"]
    for name, content in CLI_WORKFLOWS.items():
        path = tmp / f"cli-{name.replace(' ', '-')}.yaml"
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        yield BadInput(f"cli run: {name}", "cli", argv=[*run, str(path)])
    needs = tmp / "cli-needs-var.yaml"
    needs.write_text(_NEEDS_VAR, encoding="utf-8")
    blob = tmp / "cli-blob.bin"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    for name, argv in {
        "a directory": [*run, str(tmp)],
        "missing file": [*run, str(tmp / "missing.yaml")],
        "unresolved placeholder": [*run, str(needs)],
        "--var without =": [*run, str(needs), "--var", "src"],
        "binary --var file": [*run, str(needs), "--var", f"src=@{blob}"],
        "--max-concurrency 0": [*run, str(needs), "--var", "src=x", "--max-concurrency", "0"],
    }.items():
        yield BadInput(f"cli run: {name}", "cli", argv=argv)
    env = {"AGENTNB_TIMEOUT_S": "nan"}
    yield BadInput("cli config with AGENTNB_TIMEOUT_S=nan", "cli", argv=["config"], env=env)


def outside_inputs(tmp: Path) -> list[BadInput]:
    """Every bad configuration and command line; the command lines' files go into `tmp`."""
    return [*_configs(), *_command_lines(tmp)]
