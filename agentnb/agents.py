"""Agent specs: Markdown files with YAML front matter, found by name along a search path.

An agent file is compatible with Claude Code's `.claude/agents/*.md`:

```
---
name: code-reviewer
description: Reviews code for bugs and style
model: sonnet            # an id, or sonnet | opus | haiku | inherit (resolved by Config)
tools: Read, Grep        # kept for compatibility, unused; a comma string, a list or []
temperature: 0.2         # optional; also max_tokens (int) and cache (bool)
---
You are a careful code reviewer...   <- the body is the system prompt
```

How a file is read (strict YAML first, then leniently line by line with warnings naming
file:line) and which values it may hold is described in `agentnb._agentfile`.

Search path, highest precedence first: agents registered in code, the configured
`Config.agents_dirs`, `./agents`, `./.claude/agents`, `~/.claude/agents`, then the built-in
agents shipped in the package. The first agent found with a name wins, so a file in a higher
directory overrides one with the same name further down, silently (that is what the path is for).

An agent is found by the `name:` in its front matter (the file stem when there is none), never
by joining a user-given name into a path. `validate_agent_name` refuses names that are empty,
have leading/trailing whitespace, contain `/`, `\\`, `..` or control/format characters, or are
longer than 200 characters, before any lookup (`agentnb._agentspec`).

Scanning rules:

- Each search directory is scanned recursively for `*.md`, so `agents_dirs` may point at a
  nested collection (a plugin repository); hidden files and directories (`.git`,
  `.ipynb_checkpoints`) are skipped. Files are taken in order of their sorted relative path.
- A file that does not start with a `---` line is not an agent (a README, notes) and is skipped
  without a warning. The not-found error mentions it when its stem is the name asked for.
- Two files in one directory declaring the same name: the first by sorted path wins and an
  `AgentFileWarning` names both.
- A file that cannot be understood (not UTF-8 text, front matter never closed or unreadable, a
  value of the wrong type, an invalid name, an empty body) is skipped with an
  `AgentFileWarning` naming it (and raised as `AgentFileError` by `AgentSpec.from_file`); it
  never stops other agents from loading. The not-found error for its name (the `name:` it
  declares, or its stem) says it was skipped and why.

Freshness: the registry scans lazily and caches. The working directory, the directories and
every agent file are re-checked (one `stat` each) at most once per `check_interval_s` (default
0.5 s), and always before reporting an agent as not found; in between, `get` of a known name is
a dictionary lookup. So an edited or removed agent file, a new file shadowing an agent, or a
change of working directory is seen within `check_interval_s` (at once with
`check_interval_s=0`, or after `refresh()`), while a name not known yet is looked for at once.
Only changed files are parsed again.

Example:
    >>> spec = AgentSpec.from_markdown("---\\nname: greeter\\nmodel: haiku\\n---\\nSay hello.")
    >>> spec.name, spec.model, spec.system_prompt
    ('greeter', 'haiku', 'Say hello.')
"""

from __future__ import annotations

import difflib
import importlib.resources
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._agentfile import AgentFileWarning
from ._agentscan import Scan, Scanner
from ._agentspec import AgentSpec, validate_agent_name
from ._fork import at_fork_in_child
from .config import Config
from .errors import AgentNotFoundError, InvalidAgentNameError

if TYPE_CHECKING:
    import pandas

__all__ = [
    "AgentFileWarning",
    "AgentRegistry",
    "AgentSpec",
    "list_agents",
    "validate_agent_name",
]


def _builtin_dir() -> Path:
    try:
        res = importlib.resources.files("agentnb") / "agents"
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - agentnb is always importable
        res = None
    return res if isinstance(res, Path) else Path(__file__).with_name("agents")


class AgentRegistry:
    """Finds agents by name along the search path, caching parsed files until they change.

    Example:
        >>> reg = AgentRegistry(include_default_dirs=False)
        >>> reg.get("python-expert").model
        'sonnet'
    """

    def __init__(
        self,
        dirs: Sequence[str | os.PathLike[str]] = (),
        *,
        include_builtin: bool = True,
        include_default_dirs: bool = True,
        cwd: Path | None = None,
        home: Path | None = None,
        check_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dirs = [Path(d).expanduser() for d in dirs]
        self._include_builtin = include_builtin
        self._include_default_dirs = include_default_dirs
        self._cwd = Path(cwd).absolute() if cwd is not None else None
        if home is None:
            try:
                home = Path.home()
            except RuntimeError:  # no HOME and no passwd entry
                home = None
        self._home = home
        self._check_interval_s = check_interval_s
        self._clock = clock
        self._registered: dict[str, AgentSpec] = {}
        self._scanner = Scanner()
        self._scan: Scan | None = None
        self._fresh_until = -math.inf  # the clock reading until which `_scan` is trusted
        self._lock = threading.RLock()
        at_fork_in_child(self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        # A thread of the parent may have held the lock, mid-scan: then scan again from scratch.
        if not self._lock.acquire(blocking=False):
            self._scanner = Scanner()
            self._scan = None
            self._fresh_until = -math.inf
        self._lock = threading.RLock()

    @classmethod
    def from_config(cls, config: Config) -> AgentRegistry:
        """A registry searching `config.agents_dirs`, then the default directories."""
        return cls(config.agents_dirs)

    # -- search path --------------------------------------------------------------------------
    @property
    def search_path(self) -> list[Path]:
        """Directories searched, highest precedence first (the built-in one last)."""
        return list(self._roots(self._current_cwd()))

    def _current_cwd(self) -> str:
        if self._cwd is not None:
            return str(self._cwd)
        try:
            return os.getcwd()
        except OSError:  # the working directory was removed
            return self._scan.cwd if self._scan is not None else "/"

    def _roots(self, cwd: str) -> tuple[Path, ...]:
        base = Path(cwd)
        roots = [d if d.is_absolute() else base / d for d in self._dirs]
        if self._include_default_dirs:
            roots += [base / "agents", base / ".claude" / "agents"]
            if self._home is not None:
                roots.append(self._home / ".claude" / "agents")
        if self._include_builtin:
            roots.append(_builtin_dir())
        seen: set[str] = set()
        unique = []
        for root in roots:
            key = os.path.realpath(root)
            if key not in seen:
                seen.add(key)
                unique.append(root)
        return tuple(unique)

    # -- lookup -------------------------------------------------------------------------------
    def get(self, name: str) -> AgentSpec:
        """The agent called `name`; `InvalidAgentNameError` or `AgentNotFoundError` if none.

        On every agent call's path: within `check_interval_s` of the last check it touches no
        file system, and a name not found is re-checked before the error.
        """
        validate_agent_name(name)
        spec = self._registered.get(name)
        if spec is not None:
            return spec
        scan = self._scan
        if scan is not None and self._clock() < self._fresh_until:
            spec = scan.index.get(name)
            if spec is not None:
                return spec
        scan = self._check()
        spec = self._registered.get(name) or scan.index.get(name)
        if spec is None:
            raise self._not_found(name, scan)
        return spec

    def register(self, spec: AgentSpec) -> None:
        """Add an agent made in code; it takes precedence over every file."""
        if not isinstance(spec, AgentSpec):
            raise TypeError(f"register() takes an AgentSpec, got {type(spec).__name__}")
        self._registered[spec.name] = spec

    def refresh(self) -> None:
        """Forget what was scanned; the next lookup scans the search path again."""
        with self._lock:
            self._scan = None
            self._fresh_until = -math.inf
            self._scanner.forget()

    def _specs(self) -> dict[str, AgentSpec]:
        return {**self._check().index, **self._registered}

    def names(self) -> list[str]:
        """Every agent name that `get` would find, sorted."""
        return sorted(self._specs())

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except (InvalidAgentNameError, AgentNotFoundError):
            return False
        return True

    def __len__(self) -> int:
        return len(self._specs())

    def __iter__(self) -> Iterator[AgentSpec]:
        specs = self._specs()
        return iter([specs[n] for n in sorted(specs)])

    def to_dataframe(self) -> pandas.DataFrame:
        """One row per agent: name, description, model, source (None for agents made in code)."""
        import pandas as pd

        rows = [
            {
                "name": s.name,
                "description": s.description,
                "model": s.model,
                "source": str(s.source) if s.source is not None else None,
            }
            for s in self
        ]
        return pd.DataFrame(rows, columns=["name", "description", "model", "source"])

    def __repr__(self) -> str:
        return f"AgentRegistry(search_path={[str(p) for p in self.search_path]})"

    # -- scanning -----------------------------------------------------------------------------
    def _check(self) -> Scan:
        """The scan, re-checked (cwd and stamps) and rebuilt if stale; trusted for an interval."""
        with self._lock:
            scan = self._scan
            cwd = self._current_cwd()
            if scan is None or cwd != scan.cwd or not self._scanner.unchanged(scan):
                scan = self._scan = self._scanner.scan(cwd, self._roots(cwd))
            self._fresh_until = self._clock() + self._check_interval_s
            return scan

    def _not_found(self, name: str, scan: Scan) -> AgentNotFoundError:
        names = sorted({*scan.index, *self._registered})
        renamed = [s for s in scan.index.values() if s.source is not None and s.source.stem == name]
        lower = name.lower()
        contains = [n for n in names if len(name) >= 3 and lower in n.lower()]
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
        suggestions = list(dict.fromkeys([*(s.name for s in renamed), *close, *contains]))[:5]
        parts = [f"no agent named {name!r}."]
        if suggestions:
            parts.append("Did you mean: " + ", ".join(suggestions) + "?")
        if name in scan.ignored:
            parts.append(
                f"{scan.ignored[name]} has no front matter (a first line '---'), "
                "so it is not read as an agent."
            )
        for s in scan.skipped:
            why = s.reason.rstrip(".")
            if s.declared == name:
                parts.append(f"{s.path} declares the name {name!r} but was skipped: {why}.")
            elif s.path.stem == name:
                parts.append(f"{s.path} was skipped: {why}.")
        parts += [f"{s.source} declares the name {s.name!r}." for s in renamed[:3]]
        if len(renamed) > 3:
            parts.append(f"({len(renamed) - 3} more files named {name}.md declare other names.)")
        searched = [f"{root}{'' if os.path.isdir(root) else ' (missing)'}" for root in scan.roots]
        if self._registered:
            searched.insert(0, "agents registered in code")
        parts.append("Searched: " + ", ".join(searched) + ".")
        return AgentNotFoundError(" ".join(parts), name=name, suggestions=suggestions)


def list_agents(config: Config | None = None) -> pandas.DataFrame:
    """A table of every agent on `config`'s search path (default: `Config.load()`).

    Example:
        >>> list_agents().columns.tolist()
        ['name', 'description', 'model', 'source']
    """
    return AgentRegistry.from_config(config if config is not None else Config.load()).to_dataframe()
