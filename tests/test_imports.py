"""The package's import graph: no cycles between modules, and every module imports on its own.

The graph is read from the source (an AST scan), not from `sys.modules`: an edge goes from a
module to each agentnb module it imports, `import agentnb.x`, `from .x import y` or
`from . import x` alike, resolved to the submodule when one is named. Imports under
`if TYPE_CHECKING:` are never run, so they are left out. "Top level" means run when the module is
imported (module body, class bodies, `if`/`try` blocks); imports inside functions run later.
"""

from __future__ import annotations

import ast
import graphlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "agentnb"


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by the name of its `__init__`)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = module_files()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> Iterator[str]:
    """The agentnb modules an import statement in `module` imports."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names if a.name.split(".")[0] == "agentnb")
        return
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    if base.split(".")[0] != "agentnb":
        return
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        yield sub if sub in MODULES else base


def imports(module: str, *, in_functions: bool) -> set[str]:
    """The agentnb modules `module` imports at top level (and in functions if asked)."""

    def visit(node: ast.AST) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]))
                continue
            if not in_functions and isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            ):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield from _targets(child, module)
            yield from visit(child)

    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    return {target for target in visit(tree) if target != module}


def import_graph(*, in_functions: bool) -> dict[str, set[str]]:
    return {m: imports(m, in_functions=in_functions) for m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1]
        return cycle
    return None


# -- the scanner itself -----------------------------------------------------------------------


def test_the_scan_sees_every_kind_of_import() -> None:
    def top(module: str) -> set[str]:
        return imports(module, in_functions=False)

    assert "agentnb.agents" in top("agentnb")  # from .agents import ...
    assert "agentnb._agentfile" in top("agentnb._agentspec")  # from . import _agentfile
    assert "agentnb.errors" in top("agentnb.workflow.run")  # from ..errors import ...
    assert "agentnb.plots" not in top("agentnb.workflow.run")
    assert "agentnb.plots" in imports("agentnb.workflow.run", in_functions=True)  # lazily
    assert "agentnb.metrics" not in imports("agentnb.plots", in_functions=True)  # TYPE_CHECKING


def test_the_scan_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


# -- the package ------------------------------------------------------------------------------


def test_no_import_cycles_at_top_level() -> None:
    cycle = find_cycle(import_graph(in_functions=False))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_plots_and_workflow_depend_one_way_even_counting_lazy_imports() -> None:
    graph = import_graph(in_functions=True)
    pair = {m for m in graph if m == "agentnb.plots" or m.startswith("agentnb.workflow")}
    sub = {m: graph[m] & pair for m in pair}
    cycle = find_cycle(sub)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
    assert "agentnb.plots" in sub["agentnb.workflow.run"]


# Run in a child interpreter. Importing `agentnb.x` first runs `agentnb/__init__.py`, so every
# module that `import agentnb` loads is loaded in the same order whichever is asked for: one
# import of `agentnb` covers them, and only the others need a fresh start each. A throwaway fork
# learns which modules those are and which third-party modules the package needs; the child
# loads the latter once, then forks once per module, each fork with no agentnb module loaded.
FORK_EACH = r"""
import importlib, json, os, sys, traceback

def ours(name):
    return name.split(".")[0] == "agentnb"

def in_fork(job):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = job()
        except BaseException:
            out = {"error": traceback.format_exc()}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)

def survey():
    try:
        importlib.import_module("agentnb")
    except BaseException:
        pass
    by_package = sorted(n for n in sys.modules if ours(n))
    for m in sys.argv[1:]:
        try:
            importlib.import_module(m)
        except BaseException:
            pass
    return {"by_package": by_package, "others": sorted(n for n in sys.modules if not ours(n))}

found = in_fork(survey)
for name in found["others"]:
    try:
        importlib.import_module(name)
    except BaseException:
        pass
assert not any(ours(n) for n in sys.modules), "an agentnb module was loaded early"

def import_one(module):
    def job():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not ours(exc.name or ""):
                return {"missing": exc.name}
            raise
        return {"loaded": sorted(n for n in sys.modules if ours(n))}
    return job

alone = [m for m in sys.argv[1:] if m == "agentnb" or m not in found["by_package"]]
print(json.dumps({m: in_fork(import_one(m)) for m in alone}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_in_a_fresh_interpreter(tmp_path: Path) -> None:
    modules = sorted(m for m in MODULES if not m.endswith("__main__"))
    # Bytecode compiled once by the first fork, in a private directory, so the other forks
    # need not compile every module again (this is most of the time when it is turned off).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", FORK_EACH, *modules],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcome: dict[str, dict[str, Any]] = json.loads(done.stdout)
    errors = {m: o["error"] for m, o in outcome.items() if "error" in o}
    assert not errors, "\n".join(f"{m}:\n{e}" for m, e in errors.items())
    covered = {n for o in outcome.values() for n in o.get("loaded", ())}
    optional = {m for m, o in outcome.items() if "missing" in o}  # an extra is not installed
    assert set(modules) - covered - optional == set()
