"""The suite checks its own code: `mypy --strict` and `ruff` over the package and the tests."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    module = args[0]
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: install the test extra (pip install -e '.[test]')")
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_mypy_strict_over_the_package_and_the_tests() -> None:
    proc = run_tool("mypy", "agentnb", "tests")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_lint_and_format() -> None:
    lint = run_tool("ruff", "check", "agentnb", "tests")
    assert lint.returncode == 0, lint.stdout[-4000:]
    fmt = run_tool("ruff", "format", "--check", "agentnb", "tests")
    assert fmt.returncode == 0, fmt.stdout[-4000:]
