"""The notebooks run under `pytest --nbval`; this gives their kernels a clean, offline setting.

nbval starts one kernel per notebook, and the kernel inherits pytest's environment. Like
`tests/conftest.py`, nothing of the developer's own setup may reach it: `ANTHROPIC_API_KEY` would
send the notebooks to Claude (spending money and changing every output), `AGENTNB_*` variables
would change settings, and a home directory brings `~/.claude/agents` (more agents in the
`%agent --list` table), IPython profiles and `~/.cache` / `~/.config`. So each kernel starts with
a temporary home (removed when pytest ends) and without those variables; the stored outputs
were made the same way (see README.md). The rest of pytest keeps the real environment.

The sanitize file in `addopts` is given relative to the repository root; it is resolved from
there, so `pytest` also works when started in this directory.

Run as a script, this file refreshes the stored outputs in that same environment:

    python notebooks/conftest.py                      # every notebook here
    python notebooks/conftest.py notebooks/02_workflows.ipynb
"""

from __future__ import annotations

import os
import site
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

#: Variables a kernel must not inherit (prefixes end with "_").
DROPPED = ("ANTHROPIC_", "AGENTNB_", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "IPYTHONDIR")

_home: tempfile.TemporaryDirectory[str] | None = None


def kernel_environment(environ: Mapping[str, str], home: str) -> dict[str, str]:
    """`environ` without the developer's settings, with `home` as the home directory."""
    env = {k: v for k, v in environ.items() if not k.startswith(DROPPED)}
    env["HOME"] = home
    # Packages installed with `pip install --user` stay importable under the new home.
    env.setdefault("PYTHONUSERBASE", site.getuserbase())
    return env


def pytest_configure(config: pytest.Config) -> None:
    given = config.option.nbval_sanitize_with
    if given and not Path(given).exists() and (config.rootpath / given).exists():
        config.option.nbval_sanitize_with = str(config.rootpath / given)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _home
    if _home is not None:
        _home.cleanup()
        _home = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    # nbval starts a notebook's kernel while setting up its first cell, inside this hook.
    if item.path.suffix != ".ipynb":
        return (yield)
    global _home
    if _home is None:
        _home = tempfile.TemporaryDirectory(prefix="agentnb-notebooks-")
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(kernel_environment(saved, _home.name))
    try:
        return (yield)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def execute_in_place(paths: list[Path]) -> None:
    """Run each notebook in a fresh kernel and store its outputs, as the tests will see them."""
    import nbformat
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory(prefix="agentnb-notebooks-") as home:
        env = kernel_environment(os.environ, home)
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            client = NotebookClient(
                nb,
                timeout=120,
                record_timing=False,  # no timestamps in the cells' metadata
                resources={"metadata": {"path": str(path.resolve().parent)}},
            )
            client.execute(env=env)
            nbformat.write(nb, path)
            print(f"executed {path}")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    execute_in_place([Path(a) for a in sys.argv[1:]] or sorted(here.glob("*.ipynb")))
