"""The vocabulary of the bad-input probe: a `BadInput`, and the `InputContext` it is tried in.

A `BadInput` is either a Python call against an `InputContext` (an orchestrator on a simulator
whose `call_count` tells whether anything ran) or a command line for `agentnb.__main__.main`
(with standard input and environment variables of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agents import AgentRegistry
from ..backends import SimulatedBackend
from ..config import Config
from ..orchestrator import AgentOrchestrator

__all__ = ["BadInput", "InputContext", "laughs"]


@dataclass
class InputContext:
    """Where the bad inputs are tried: a simulator, an orchestrator on it, a scratch directory."""

    sim: SimulatedBackend
    orch: AgentOrchestrator
    tmp: Path
    empty_config: Path
    _written: int = 0

    def fresh(self, name: str) -> Path:
        """A path in the scratch directory never given before (nothing made there yet)."""
        self._written += 1
        return self.tmp / f"{self._written}-{name}"

    def write(self, name: str, content: str | bytes) -> Path:
        """A new file `name` (made unique) holding `content`."""
        path = self.fresh(name)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    def call_with_config(
        self,
        *,
        env: Mapping[str, str] | None = None,
        file_text: str | bytes | None = None,
        **settings: Any,
    ) -> Any:
        """Build a Config from `settings`, `env` and a config file, then make one call with it.

        The file is `file_text`, else the one `env` names in AGENTNB_CONFIG, else an empty one.
        """
        path: Path | None = self.empty_config
        if file_text is not None:
            path = self.write("agentnb.yaml", file_text)
        elif env is not None and "AGENTNB_CONFIG" in env:
            path = None  # an explicit path would win over the variable
        values = {"backend": "simulated", "cache_enabled": False, "progress": False, **settings}
        cfg = Config.load(path=path, env=dict(env or {}), **values)
        agents = AgentRegistry(include_default_dirs=False)
        with AgentOrchestrator(cfg, backend=self.sim, agents=agents) as orch:
            return orch.execute_agent("writer", "a fine task")

    def call_agent_file(self, stem: str, content: str | bytes) -> Any:
        """Put one agent file `stem`.md on the search path, then call agent `stem`."""
        directory = self.fresh("agents")
        directory.mkdir()
        (directory / f"{stem}.md").write_bytes(
            content.encode("utf-8") if isinstance(content, str) else content
        )
        agents = AgentRegistry([directory], include_default_dirs=False)
        with AgentOrchestrator(self.orch.config, backend=self.sim, agents=agents) as orch:
            return orch.execute_agent(stem, "a fine task")


@dataclass(frozen=True)
class BadInput:
    """One bad input: a Python `call`, or a command line `argv` (with `stdin` bytes, `env`)."""

    name: str
    kind: str
    call: Callable[[InputContext], Any] | None = None
    argv: Sequence[str] = ()
    stdin: bytes | None = None
    env: Mapping[str, str] = field(default_factory=dict)


def laughs(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs" YAML flow sequence: `width ** levels` scalars from ~400 characters."""
    node = "&a0 [" + ", ".join(["lol"] * width) + "]"
    for i in range(1, levels):
        node = f"&a{i} [{node}, " + ", ".join([f"*a{i - 1}"] * (width - 1)) + "]"
    return node
