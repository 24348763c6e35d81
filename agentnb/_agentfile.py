"""Agent files: turn a Markdown file with front matter into the fields of an `AgentSpec`.

Reading rules:

- A file is read as UTF-8 text; one that is not (or contains NUL bytes, or is over 1 MB) is
  refused. A leading byte order mark is dropped.
- Blank lines may precede the opening `---` line. A text whose first non-blank line is not
  `---` has no front matter (`has_front_matter` is False: a README or notes, not an agent).
  An opening `---` without a closing `---` line is an error.
- Front matter is read as YAML with every plain scalar kept as text (so `name: no` stays "no"
  and numbers are converted by key). YAML whose aliases would expand it past the limits of
  `agentnb._yaml` (a "billion laughs") is an error, never read leniently.
- When strict YAML rejects it (typically an unquoted description containing `: `, or
  `<example>` blocks), it is read line by line instead, with an `AgentFileWarning` naming the
  file and line (YAML that is not a mapping is read line by line too, without a warning): an
  unindented `key:` line starts a key, other lines continue the previous value (folded as YAML
  folds plain text, or kept for `|`/`>` blocks); within a description only known keys (`name`,
  `model`, `tools`, ...) start a new key, so `Context:` or `user:` lines in examples stay part
  of the description. Other text before the first key is an error. Read this way, `&anchor`
  and `*alias` are plain text: no alias is ever resolved.
- In a plain one-line description, ` #` is kept as text rather than read as a YAML comment
  (with a warning).
- Values are checked by key, and an error names the file and the key's line: `name` must be
  text and a valid agent name (the file stem when absent); `tools` a comma-separated string or
  a list of names; `temperature` a number between 0 and 1; `max_tokens` a positive integer;
  `cache` true or false (`yes`/`no`/`on`/`off` too); `description` and `model` text. Other keys
  (Claude Code's `color`, `hooks`, ...) are ignored. The body is the system prompt and must not
  be empty, since an agent without one is an unfinished file.

Every problem is raised as `AgentFileError` with a message naming the file.

Example:
    >>> f = parse_agent_text("---\\nname: greeter\\n---\\nSay hello.", where="<text>",
    ...                      default_name=None, check_name=str)
    >>> f.name, f.system_prompt, f.tools
    ('greeter', 'Say hello.', ())
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ._yaml import YAMLLimitError, load_bounded
from .errors import AgentFileError, InvalidAgentNameError
from .options import shown

__all__ = [
    "MAX_FILE_BYTES",
    "AgentFields",
    "AgentFileWarning",
    "declared_name",
    "has_front_matter",
    "parse_agent_text",
    "read_agent_text",
]

MAX_FILE_BYTES = 1_000_000

#: Keys that start a new entry even inside a leniently read description.
_KNOWN_KEYS = frozenset(
    {
        "name", "description", "model", "tools", "temperature", "max_tokens", "cache",
        # Claude Code keys, accepted and ignored
        "color", "disallowedTools", "permissionMode", "skills", "hooks", "mcpServers", "memory",
    }
)  # fmt: skip
_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off")
_N = TypeVar("_N", int, float)
_KEY_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)[ \t]*:(?:[ \t]+(.*))?")
_BLOCK_INDICATOR = re.compile(r"[|>][-+0-9]*")


class AgentFileWarning(UserWarning):
    """An agent file was read leniently, or skipped; the message names the file and line."""


@dataclass(frozen=True)
class AgentFields:
    """The checked values of one agent file, ready to become an `AgentSpec`."""

    name: str
    description: str
    system_prompt: str
    model: str | None
    tools: tuple[str, ...]
    temperature: float | None
    max_tokens: int | None
    cache: bool | None


def read_agent_text(path: Path) -> str:
    """The text of the agent file at `path`; `AgentFileError` when it is not UTF-8 text."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise AgentFileError(f"{path}: larger than {MAX_FILE_BYTES:,} bytes; not an agent file")
        data = path.read_bytes()
    except OSError as exc:
        raise AgentFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if b"\x00" in data:
        raise AgentFileError(f"{path}: binary file (contains NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AgentFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def has_front_matter(text: str, where: str) -> bool:
    """Whether the first non-blank line of `text` is `---`; `AgentFileError` if never closed."""
    return _split_front_matter(text.removeprefix("\ufeff"), where) is not None


def declared_name(text: str) -> str | None:
    """The `name:` that the front matter of `text` seems to declare, read line by line; or None.

    Only explains a file that could not be parsed (the not-found error names it), so it never
    raises and does not check the name.
    """
    lines = _normalize(text).split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    if start == len(lines) or lines[start].rstrip() != "---":
        return None
    for line in lines[start + 1 :]:
        if line.rstrip() == "---":
            break
        m = _KEY_LINE.fullmatch(line)
        if m is not None and m.group(1) == "name":
            return _unquote(re.sub(r"(^|\s)#.*$", "", m.group(2) or "").strip()) or None
    return None


def parse_agent_text(
    text: str, *, where: str, default_name: str | None, check_name: Callable[[str], object]
) -> AgentFields:
    """The fields of the agent file `text`; `AgentFileError` naming `where` when unusable.

    `check_name` validates the name (raising `InvalidAgentNameError`) before any other value is
    checked; `default_name` is used when the front matter has no `name`.
    """
    text = _normalize(text)
    parts = _split_front_matter(text, where)
    if parts is None:
        raise AgentFileError(f"{where}: no front matter (the first line must be '---')")
    lines, first_line, body = parts
    data = _parse_front_matter(lines, first_line, where)
    return _fields(data, body, lines, first_line, where, default_name, check_name)


# -- front matter ----------------------------------------------------------------------------


def _normalize(text: str) -> str:
    """`text` without a byte order mark, with `\\n` line ends."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


class _FrontMatterLoader(yaml.SafeLoader):
    """SafeLoader that keeps every plain scalar as text, except null: keys convert by type."""


_FrontMatterLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag == "tag:yaml.org,2002:null"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _split_front_matter(text: str, where: str) -> tuple[list[str], int, str] | None:
    """(front matter lines, file line number of the first one, body), or None without `---`."""
    lines = text.split("\n")
    start = 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    if start == len(lines) or lines[start].rstrip() != "---":
        return None
    for end in range(start + 1, len(lines)):
        if lines[end].rstrip() == "---":
            return lines[start + 1 : end], start + 2, "\n".join(lines[end + 1 :])
    raise AgentFileError(f"{where}:{start + 1}: front matter opened with '---' is never closed")


# Warnings below are attributed to the caller of `parse_agent_text` (`AgentSpec.from_markdown`).


def _parse_front_matter(lines: list[str], first_line: int, where: str) -> dict[str, Any]:
    try:
        data = load_bounded("\n".join(lines), loader=_FrontMatterLoader)
    except YAMLLimitError as exc:  # never read leniently: the file is refused
        line = first_line + exc.line - 1 if exc.line is not None else first_line - 1
        raise AgentFileError(f"{where}:{line}: front matter: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = first_line + (mark.line if mark is not None else 0)
        problem = getattr(exc, "problem", None) or type(exc).__name__
        warnings.warn(
            f"{where}:{line}: front matter is not valid YAML ({problem}); read it line by line "
            "instead. Quote values that contain ': ' or ' #' to silence this warning.",
            AgentFileWarning,
            stacklevel=3,
        )
        return _parse_lenient(lines, first_line, where)
    if data is None:
        return {}
    if not isinstance(data, dict):
        return _parse_lenient(lines, first_line, where)
    out = {str(k): v for k, v in data.items()}
    _keep_hash_in_description(out, lines, first_line, where)
    return out


def _keep_hash_in_description(
    data: dict[str, Any], lines: list[str], first_line: int, where: str
) -> None:
    """Undo YAML reading ` #...` as a comment in a plain one-line description."""
    for i, line in enumerate(lines):
        m = _KEY_LINE.fullmatch(line)
        if m is None or m.group(1) != "description":
            continue
        raw = (m.group(2) or "").strip()
        follows = lines[i + 1] if i + 1 < len(lines) else ""
        plain = raw[:1] not in ("", '"', "'", ">", "|", "[", "{", "&", "*", "!")
        commented = raw.startswith("#") or " #" in raw or "\t#" in raw
        if plain and commented and not follows[:1].isspace() and data.get("description") != raw:
            data["description"] = raw
            warnings.warn(
                f"{where}:{first_line + i}: ' #' in the description would start a YAML "
                "comment; kept it as text. Quote the description to silence this warning.",
                AgentFileWarning,
                stacklevel=4,
            )
        return


def _parse_lenient(lines: list[str], first_line: int, where: str) -> dict[str, Any]:
    """Read front matter that strict YAML rejects as `key: value` lines (see module docstring)."""
    entries: list[tuple[str, str, list[str]]] = []
    for i, line in enumerate(lines):
        m = _KEY_LINE.fullmatch(line)
        if m and (not entries or m.group(1) in _KNOWN_KEYS or entries[-1][0] != "description"):
            entries.append((m.group(1), m.group(2) or "", []))
        elif line.startswith("#") and (not entries or entries[-1][0] != "description"):
            continue  # a comment line
        elif entries:
            entries[-1][2].append(line)
        elif line.strip():
            raise AgentFileError(
                f"{where}:{first_line + i}: front matter line is not 'key: value': {line[:60]!r}"
            )
    return {key: _lenient_value(key, first, rest) for key, first, rest in entries}


def _lenient_value(key: str, first: str, rest: list[str]) -> Any:
    first = first.strip()
    if _BLOCK_INDICATOR.fullmatch(first):
        indents = [len(r) - len(r.lstrip()) for r in rest if r.strip()]
        cut = min(indents, default=0)
        block = [r[cut:].rstrip() for r in rest]
        return "\n".join(block).strip() if first[0] == "|" else _fold(block)
    items = [r.strip() for r in rest if r.strip()]
    if not first and items and all(r == "-" or r.startswith("- ") for r in items):
        return [_unquote(r[1:].strip()) for r in items]
    if key != "description":
        first = re.sub(r"(^|\s)#.*$", "", first).strip()
    text = _fold([first, *rest])
    if not text:
        return None
    if text.startswith("[") and text.endswith("]"):
        return [_unquote(t.strip()) for t in text[1:-1].split(",") if t.strip()]
    return _unquote(text)


def _fold(lines: list[str]) -> str:
    """Join lines as YAML folds plain text: a line break is a space, a blank line a newline."""
    out: list[str] = []
    breaks = 0
    for line in lines:
        s = line.strip()
        if not s:
            breaks += 1
            continue
        if out:
            out.append("\n" * breaks if breaks else " ")
        out.append(s)
        breaks = 0
    return "".join(out)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        try:
            value = load_bounded(text)
        except (yaml.YAMLError, YAMLLimitError):  # more than one quoted scalar: keep the text
            value = None
        return value if isinstance(value, str) else text[1:-1]
    return text


# -- typed values ----------------------------------------------------------------------------


def _key_line(lines: list[str], first_line: int, key: str) -> int:
    for i, line in enumerate(lines):
        m = _KEY_LINE.fullmatch(line)
        if m is not None and m.group(1) == key:
            return first_line + i
    return first_line - 1


def _fields(
    data: dict[str, Any],
    body: str,
    lines: list[str],
    first_line: int,
    where: str,
    default_name: str | None,
    check_name: Callable[[str], object],
) -> AgentFields:
    def bad(key: str, expected: str) -> AgentFileError:
        value = data[key]
        return AgentFileError(
            f"{where}:{_key_line(lines, first_line, key)}: {key!r} must be {expected}, "
            f"got {shown(value)}"
        )

    def text(key: str) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise bad(key, "text")
        return value.strip() or None

    name = text("name") or default_name
    if name is None:
        raise AgentFileError(f"{where}: no 'name' in the front matter and no file name to use")
    try:
        check_name(name)
    except InvalidAgentNameError as exc:
        raise AgentFileError(f"{where}:{_key_line(lines, first_line, 'name')}: {exc}") from None

    tools = data.get("tools")
    if tools is None:
        tools = ()
    elif isinstance(tools, str):
        tools = tuple(t.strip() for t in tools.split(",") if t.strip())
    elif isinstance(tools, list) and all(isinstance(t, str) for t in tools):
        tools = tuple(t.strip() for t in tools if t.strip())
    else:
        raise bad("tools", "a comma-separated string or a list of names")

    try:
        temperature = _number(data.get("temperature"), float)
    except ValueError:
        raise bad("temperature", "a number between 0 and 1") from None
    if temperature is not None and not 0.0 <= temperature <= 1.0:
        raise bad("temperature", "a number between 0 and 1")
    try:
        max_tokens = _number(data.get("max_tokens"), int)
    except ValueError:
        raise bad("max_tokens", "a positive integer") from None
    if max_tokens is not None and max_tokens < 1:
        raise bad("max_tokens", "a positive integer")

    cache = data.get("cache")
    if isinstance(cache, str) and cache.strip().lower() in (*_TRUE, *_FALSE):
        cache = cache.strip().lower() in _TRUE
    if cache is not None and not isinstance(cache, bool):
        raise bad("cache", "true or false")

    prompt = body.strip()
    if not prompt:
        raise AgentFileError(
            f"{where}: agent {shown(name)} has no system prompt (the body is empty)"
        )
    model = text("model")
    if model is None and "model" in data and data["model"] is not None:
        # `model: ""` is a mistake, not a wish for the default: leave the key out for that.
        raise bad("model", "a model id or alias (leave it out for the default)")
    return AgentFields(
        name=name,
        description=text("description") or "",
        system_prompt=prompt,
        model=model,
        tools=tools,
        temperature=temperature,
        max_tokens=max_tokens,
        cache=cache,
    )


def _number(value: object, kind: type[_N]) -> _N | None:
    """`value` as an int or float (text is converted); ValueError when it is not one."""
    if value is None:
        return None
    if isinstance(value, str):
        return kind(value.strip().replace("_", ""))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(value)
    if kind is int and not float(value).is_integer():
        raise ValueError(value)
    return kind(value)
