"""Agent specs and agent names: what one agent is, and which names may find one.

`validate_agent_name` refuses names that are empty, have leading/trailing whitespace, contain
`/`, `\\`, `..` or control/format characters, or are longer than 200 characters. It runs before
every lookup, so the common case is cheap: a name found valid before is a set lookup (the
full check skips the Unicode categories for ASCII names).

Example:
    >>> spec = AgentSpec.from_markdown("---\\nname: greeter\\nmodel: haiku\\n---\\nSay hello.")
    >>> spec.name, spec.model, spec.system_prompt
    ('greeter', 'haiku', 'Say hello.')
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from . import _agentfile
from .errors import AgentFileError, InvalidAgentNameError

__all__ = ["MAX_NAME_CHARS", "AgentSpec", "validate_agent_name"]

MAX_NAME_CHARS = 200
_BAD_NAME_ASCII = re.compile(r"[/\\\x00-\x1f\x7f]|\.\.")
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Names already found valid; bounded so that a stream of distinct names cannot grow it forever.
_VALID_NAMES: set[str] = set()
_MAX_REMEMBERED = 4096


def validate_agent_name(name: object) -> str:
    """Return `name` if it is a safe agent name, else raise `InvalidAgentNameError`.

    Example:
        >>> validate_agent_name("code-reviewer")
        'code-reviewer'
    """
    if type(name) is str and name in _VALID_NAMES:
        return name
    if not isinstance(name, str):
        raise InvalidAgentNameError(f"agent name must be a string, got {type(name).__name__}")
    problem = _name_problem(name)
    if problem is not None:
        shown = repr(name) if len(name) <= 60 else repr(name[:57]) + "..."
        raise InvalidAgentNameError(
            f"invalid agent name {shown}: {problem}. Agents are found by the name declared in "
            "their file, never by a path."
        )
    if type(name) is str and len(_VALID_NAMES) < _MAX_REMEMBERED:
        _VALID_NAMES.add(name)
    return name


def _name_problem(name: str) -> str | None:
    """Why `name` is not a valid agent name, or None when it is."""
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"it is longer than {MAX_NAME_CHARS} characters"
    if name.strip() != name:
        return "it has leading or trailing whitespace"
    if "/" in name or "\\" in name:
        return "it contains a path separator ('/' or '\\')"
    if ".." in name:
        return "it contains '..'"
    if _BAD_NAME_ASCII.search(name) or (
        not name.isascii() and any(unicodedata.category(c) in _BAD_CATEGORIES for c in name)
    ):
        return "it contains a control character"
    return None


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
        f = _agentfile.parse_agent_text(
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
        return cls.from_markdown(
            _agentfile.read_agent_text(path), source=path, default_name=path.stem
        )
