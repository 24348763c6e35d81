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
longer than 200 characters, before any lookup.

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
  never stops other agents from loading.

Freshness: the registry scans lazily and caches. Each `get` re-checks the file of the agent it
returns (one `stat`), so an edited agent file is picked up at once; the directories and the
other files are re-checked at most every `check_interval_s` (default 0.5 s), and always before
reporting an agent as not found. Only changed files are parsed again.

Example:
    >>> spec = AgentSpec.from_markdown("---\\nname: greeter\\nmodel: haiku\\n---\\nSay hello.")
    >>> spec.name, spec.model, spec.system_prompt
    ('greeter', 'haiku', 'Say hello.')
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.resources
import os
import re
import stat
import threading
import time
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ._agentfile import AgentFileWarning, has_front_matter, parse_agent_text
from ._agentfile import read_agent_text as _read_text  # tests count reads by patching this
from .config import Config
from .errors import AgentFileError, AgentNotFoundError, InvalidAgentNameError

if TYPE_CHECKING:
    import pandas

__all__ = [
    "AgentFileWarning",
    "AgentRegistry",
    "AgentSpec",
    "list_agents",
    "validate_agent_name",
]

MAX_NAME_CHARS = 200
_BAD_NAME_ASCII = re.compile(r"[/\\\x00-\x1f\x7f]|\.\.")
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def validate_agent_name(name: object) -> str:
    """Return `name` if it is a safe agent name, else raise `InvalidAgentNameError`.

    Example:
        >>> validate_agent_name("code-reviewer")
        'code-reviewer'
    """
    if not isinstance(name, str):
        raise InvalidAgentNameError(f"agent name must be a string, got {type(name).__name__}")
    problem = None
    if not name:
        problem = "it is empty"
    elif len(name) > MAX_NAME_CHARS:
        problem = f"it is longer than {MAX_NAME_CHARS} characters"
    elif name.strip() != name:
        problem = "it has leading or trailing whitespace"
    elif "/" in name or "\\" in name:
        problem = "it contains a path separator ('/' or '\\')"
    elif ".." in name:
        problem = "it contains '..'"
    elif _BAD_NAME_ASCII.search(name) or (
        not name.isascii() and any(unicodedata.category(c) in _BAD_CATEGORIES for c in name)
    ):
        problem = "it contains a control character"
    if problem is None:
        return name
    shown = repr(name) if len(name) <= 60 else repr(name[:57]) + "..."
    raise InvalidAgentNameError(
        f"invalid agent name {shown}: {problem}. Agents are found by the name declared in "
        "their file, never by a path."
    )


@dataclass(frozen=True)
class AgentSpec:
    """One agent: its name, system prompt and model settings.

    Example:
        >>> spec = AgentSpec(name="echo", description="Repeats", system_prompt="Repeat the task.")
        >>> spec.model is None, len(spec.prompt_hash)
        (True, 64)
    """

    name: str
    description: str
    system_prompt: str
    model: str | None = None
    tools: tuple[str, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    cache: bool | None = None
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        validate_agent_name(self.name)
        if not isinstance(self.tools, tuple):
            object.__setattr__(self, "tools", tuple(self.tools))

    @cached_property
    def prompt_hash(self) -> str:
        """SHA-256 hex digest of the system prompt (part of every cache key)."""
        return hashlib.sha256(self.system_prompt.encode("utf-8")).hexdigest()

    @classmethod
    def from_markdown(
        cls, text: str, *, source: Path | None = None, default_name: str | None = None
    ) -> AgentSpec:
        """Parse an agent file's text; raise `AgentFileError` when it cannot be understood."""
        where = str(source) if source is not None else "<agent text>"
        if default_name is None and source is not None:
            default_name = source.stem
        f = parse_agent_text(
            text, where=where, default_name=default_name, check_name=validate_agent_name
        )
        try:
            return cls(
                name=f.name,
                description=f.description,
                system_prompt=f.system_prompt,
                model=f.model,
                tools=f.tools,
                temperature=f.temperature,
                max_tokens=f.max_tokens,
                cache=f.cache,
                source=source,
            )
        except (ValueError, TypeError) as exc:  # pragma: no cover - every field was checked
            raise AgentFileError(f"{where}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> AgentSpec:
        """Load one agent file; raise `AgentFileError` naming the file when it is not usable."""
        path = Path(path)
        return cls.from_markdown(_read_text(path), source=path, default_name=path.stem)


# -- the registry ----------------------------------------------------------------------------

_Stamp = tuple[int, int, int]
_MISSING: _Stamp = (-1, -1, -1)


def _stamp(path: str) -> _Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return _MISSING
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _builtin_dir() -> Path:
    try:
        res = importlib.resources.files("agentnb") / "agents"
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - agentnb is always importable
        res = None
    return res if isinstance(res, Path) else Path(__file__).with_name("agents")


@dataclass(frozen=True)
class _Loaded:
    """What one file gave at one stamp: an agent, or None (ignored or invalid)."""

    stamp: _Stamp
    spec: AgentSpec | None
    no_front_matter: bool = False


@dataclass(frozen=True)
class _Scan:
    """One consistent view of the search path: the index and every stamp it depends on."""

    cwd: str
    roots: tuple[Path, ...]
    index: dict[str, AgentSpec]
    stamps: dict[str, _Stamp]  # directories and agent files
    ignored: dict[str, Path]  # stem -> .md file without front matter


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
        self._registered: dict[str, AgentSpec] = {}
        self._loaded: dict[str, _Loaded] = {}
        self._warned_duplicates: set[tuple[str, str]] = set()
        self._scan: _Scan | None = None
        self._checked_at = 0.0
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
        """The agent called `name`; `InvalidAgentNameError` or `AgentNotFoundError` if none."""
        validate_agent_name(name)
        spec = self._registered.get(name)
        if spec is not None:
            return spec
        scan = self._fresh_scan()
        spec = scan.index.get(name)
        if spec is not None and spec.source is not None:
            path = str(spec.source)
            if _stamp(path) != scan.stamps.get(path):
                spec = self._rescan().index.get(name)
        if spec is None:
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
            self._loaded.clear()
            self._warned_duplicates.clear()

    def _specs(self) -> dict[str, AgentSpec]:
        return {**self._check().index, **self._registered}

    def names(self) -> list[str]:
        """Every agent name that `get` would find, sorted."""
        return sorted(self._specs())

    def __contains__(self, name: object) -> bool:
        try:
            self.get(validate_agent_name(name))
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
    def _fresh_scan(self) -> _Scan:
        scan = self._scan
        if scan is None or (self._cwd is None and self._current_cwd() != scan.cwd):
            return self._rescan()
        if time.monotonic() - self._checked_at >= self._check_interval_s:
            return self._check()
        return scan

    def _check(self) -> _Scan:
        """Re-stat every directory and file the index depends on; rescan if any changed."""
        with self._lock:
            scan = self._scan
            if (
                scan is None
                or self._current_cwd() != scan.cwd
                or any(_stamp(p) != s for p, s in scan.stamps.items())
            ):
                return self._rescan()
            self._checked_at = time.monotonic()
            return scan

    def _rescan(self) -> _Scan:
        with self._lock:
            cwd = self._current_cwd()
            roots = self._roots(cwd)
            stamps: dict[str, _Stamp] = {}
            ignored: dict[str, Path] = {}
            index: dict[str, AgentSpec] = {}
            seen_files: set[str] = set()
            for root in roots:
                here: dict[str, AgentSpec] = {}
                for path in self._walk(root, stamps):
                    seen_files.add(path)
                    loaded = self._load(path)
                    stamps[path] = loaded.stamp
                    if loaded.no_front_matter:
                        ignored.setdefault(Path(path).stem, Path(path))
                    spec = loaded.spec
                    if spec is None:
                        continue
                    first = here.setdefault(spec.name, spec)
                    if first is not spec:
                        self._warn_duplicate(spec.name, first, spec)
                for name, spec in here.items():
                    index.setdefault(name, spec)
            for gone in set(self._loaded) - seen_files:
                del self._loaded[gone]
            self._scan = _Scan(cwd, roots, index, stamps, ignored)
            self._checked_at = time.monotonic()
            return self._scan

    @staticmethod
    def _walk(root: Path, stamps: dict[str, _Stamp]) -> list[str]:
        """Every non-hidden `*.md` under `root`, by sorted relative path; records dir stamps."""
        top = str(root)
        stamps[top] = _stamp(top)
        try:
            if not stat.S_ISDIR(os.stat(top).st_mode):
                return []
        except OSError:
            return []
        found: list[tuple[tuple[str, ...], str]] = []
        for dirpath, dirnames, filenames in os.walk(top):
            if dirpath != top:
                stamps[dirpath] = _stamp(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = Path(os.path.relpath(dirpath, top)).parts
            for fn in filenames:
                if fn.lower().endswith(".md") and not fn.startswith("."):
                    found.append(((*[p for p in rel if p != "."], fn), os.path.join(dirpath, fn)))
        return [path for _, path in sorted(found)]

    def _load(self, path: str) -> _Loaded:
        """Parse `path` unless it is unchanged since last time; warn about unusable files once."""
        stamp = _stamp(path)
        cached = self._loaded.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached
        loaded = _Loaded(stamp, None)
        try:
            text = _read_text(Path(path))
            if not has_front_matter(text, path):
                loaded = _Loaded(stamp, None, no_front_matter=True)
            else:
                loaded = _Loaded(stamp, AgentSpec.from_markdown(text, source=Path(path)))
        except AgentFileError as exc:
            warnings.warn(f"skipped agent file: {exc}", AgentFileWarning, stacklevel=4)
        self._loaded[path] = loaded
        return loaded

    def _warn_duplicate(self, name: str, first: AgentSpec, other: AgentSpec) -> None:
        key = (str(first.source), str(other.source))
        if key not in self._warned_duplicates:
            self._warned_duplicates.add(key)
            warnings.warn(
                f"agent {name!r} is declared by both {first.source} and {other.source}; "
                f"using {first.source} (first by sorted path)",
                AgentFileWarning,
                stacklevel=4,
            )

    def _not_found(self, name: str, scan: _Scan) -> AgentNotFoundError:
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
