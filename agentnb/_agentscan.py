"""Scanning the agent search path: which file gives which agent, and when to look again.

A `Scanner` turns the search directories into a `Scan`: the index of agents by name, the stamp
(mtime, size, inode) of every directory and file it was built from, and the files it could not
use. `Scanner.unchanged(scan)` re-stats those paths to tell whether the scan still holds;
rescanning parses only the files whose stamp changed. The rules (recursive `*.md`, hidden
entries skipped, sorted order, duplicates and unusable files warned about once) are listed in
`agentnb.agents`.

Example:
    >>> from agentnb.agents import AgentRegistry
    >>> scan = Scanner().scan("/", (AgentRegistry(include_default_dirs=False).search_path[-1],))
    >>> sorted(scan.index)[:2], scan.skipped
    (['code-reviewer', 'data-analyst'], ())
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import _agentfile
from ._agentfile import AgentFileWarning
from ._agentspec import AgentSpec
from .errors import AgentFileError

__all__ = ["MISSING", "Scan", "Scanner", "Skipped", "Stamp", "stamp", "walk"]

Stamp = tuple[int, int, int]
MISSING: Stamp = (-1, -1, -1)


def stamp(path: str) -> Stamp:
    """What tells that `path` changed: (mtime in ns, size, inode), or `MISSING`."""
    try:
        st = os.stat(path)
    except OSError:
        return MISSING
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def walk(root: Path, stamps: dict[str, Stamp]) -> list[str]:
    """Every non-hidden `*.md` under `root`, by sorted relative path; records dir stamps."""
    top = str(root)
    stamps[top] = stamp(top)
    try:
        if not stat.S_ISDIR(os.stat(top).st_mode):
            return []
    except OSError:
        return []
    found: list[tuple[tuple[str, ...], str]] = []
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath != top:
            stamps[dirpath] = stamp(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(os.path.relpath(dirpath, top)).parts
        for fn in filenames:
            if fn.lower().endswith(".md") and not fn.startswith("."):
                found.append(((*[p for p in rel if p != "."], fn), os.path.join(dirpath, fn)))
    return [path for _, path in sorted(found)]


@dataclass(frozen=True)
class Skipped:
    """A file that looked like an agent but could not be used, and why."""

    path: Path
    declared: str | None  # the `name:` it seems to declare, when it could be read
    reason: str  # the `AgentFileError` message, naming the file and line


@dataclass(frozen=True)
class _Loaded:
    """What one file gave at one stamp: an agent, or None (no front matter, or skipped)."""

    stamp: Stamp
    spec: AgentSpec | None
    no_front_matter: bool = False
    skipped: Skipped | None = None


@dataclass(frozen=True)
class Scan:
    """One consistent view of the search path: the index and every stamp it depends on."""

    cwd: str
    roots: tuple[Path, ...]
    index: dict[str, AgentSpec]
    stamps: dict[str, Stamp]  # directories and agent files
    ignored: dict[str, Path]  # stem -> .md file without front matter
    skipped: tuple[Skipped, ...] = ()


class Scanner:
    """Builds `Scan`s, keeping each parsed file until its stamp changes; not thread-safe."""

    def __init__(self) -> None:
        self._loaded: dict[str, _Loaded] = {}
        self._warned_duplicates: set[tuple[str, str]] = set()

    def forget(self) -> None:
        """Drop every parsed file, so the next scan reads (and warns about) each again."""
        self._loaded.clear()
        self._warned_duplicates.clear()

    @staticmethod
    def unchanged(scan: Scan) -> bool:
        """Whether every directory and file `scan` was built from still has its stamp."""
        return all(stamp(p) == s for p, s in scan.stamps.items())

    def scan(self, cwd: str, roots: Sequence[Path]) -> Scan:
        """Index the agents under `roots`, highest precedence first; parse changed files only."""
        stamps: dict[str, Stamp] = {}
        ignored: dict[str, Path] = {}
        skipped: list[Skipped] = []
        index: dict[str, AgentSpec] = {}
        seen_files: set[str] = set()
        for root in roots:
            here: dict[str, AgentSpec] = {}
            for path in walk(root, stamps):
                seen_files.add(path)
                loaded = self._load(path)
                stamps[path] = loaded.stamp
                if loaded.no_front_matter:
                    ignored.setdefault(Path(path).stem, Path(path))
                if loaded.skipped is not None:
                    skipped.append(loaded.skipped)
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
        return Scan(cwd, tuple(roots), index, stamps, ignored, tuple(skipped))

    def _load(self, path: str) -> _Loaded:
        """Parse `path` unless it is unchanged since last time; warn about unusable files once."""
        now = stamp(path)
        cached = self._loaded.get(path)
        if cached is not None and cached.stamp == now:
            return cached
        text: str | None = None
        try:
            text = _agentfile.read_agent_text(Path(path))
            if not _agentfile.has_front_matter(text, path):
                loaded = _Loaded(now, None, no_front_matter=True)
            else:
                loaded = _Loaded(now, AgentSpec.from_markdown(text, source=Path(path)))
        except AgentFileError as exc:
            # stacklevel 5: past _load, scan and the registry's _check and get, to get's caller
            warnings.warn(f"skipped agent file: {exc}", AgentFileWarning, stacklevel=5)
            declared = _agentfile.declared_name(text) if text is not None else None
            loaded = _Loaded(now, None, skipped=Skipped(Path(path), declared, str(exc)))
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
                stacklevel=5,
            )
