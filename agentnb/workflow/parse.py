"""Reading a workflow from YAML text or a mapping, with the line of every key kept for errors.

The YAML is composed into a node tree first (PyYAML's `SafeLoader`, so no tags run code), and
refused when its aliases would expand it past `agentnb._yaml`'s limits; each node carries its
start line, which is recorded for the top-level keys, each step and each key of each step before
the tree is turned into plain Python values. Every problem found here is a
`WorkflowValidationError` naming the step, the field and (for YAML input) the line.

The checks here are the ones that need nothing but the document itself: syntax, keys, types,
ranges, ids. Graph checks (dependencies, cycles) live in `model.py`; checks against the outside
world (agents, variables) in `Workflow.validate`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from .._yaml import SafeLoader, YAMLLimitError, check_length, compose_bounded
from ..errors import OptionError, WorkflowValidationError
from ..options import STEP_KEYS as OPTION_KEYS
from ..options import CallOptions, shown

__all__ = [
    "STEP_ID",
    "STEP_OPTIONS",
    "Source",
    "invalid",
    "parse_mapping",
    "read_yaml",
]

#: What a step id may look like.
STEP_ID = re.compile(r"^[A-Za-z0-9_-]+$")
TOP_KEYS = ("name", "description", "max_concurrency", "on_error", "defaults", "inputs", "steps")
#: Per-step settings that `defaults:` may also give (the step's own value wins): the call
#: options' step keys (`agentnb.options`), so a new call option is a new step key by itself.
STEP_OPTIONS: tuple[str, ...] = tuple(OPTION_KEYS)
STEP_KEYS = ("id", "agent", "task", "dependencies", "depends_on", *STEP_OPTIONS)
ON_ERROR = ("continue", "fail_fast")


def invalid(
    message: str,
    *,
    step: str | None = None,
    field: str | None = None,
    line: int | None = None,
) -> WorkflowValidationError:
    """A `WorkflowValidationError` whose message starts with where the problem is.

    Example:
        >>> str(invalid("must be a string", step="a", field="task", line=7))
        "line 7: step 'a', field 'task': must be a string"
    """
    where = ", ".join(
        part
        for part in (
            f"step {shown(step)}" if step is not None else "",
            f"field {shown(field)}" if field is not None else "",
        )
        if part
    )
    if line is not None:
        where = f"line {line}: {where}" if where else f"line {line}"
    text = f"{where}: {message}" if where else message
    return WorkflowValidationError(text, step=step, field=field, line=line)


def did_you_mean(name: str, choices: Any) -> str:
    """`" (did you mean 'x'?)"` when a choice is close to `name`, else `""`."""
    close = difflib.get_close_matches(name, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class Source:
    """Line numbers (1-based) of a workflow read from YAML text."""

    top: dict[str, int] = field(default_factory=dict)
    steps: list[tuple[int, dict[str, int]]] = field(default_factory=list)

    def top_line(self, key: str) -> int | None:
        return self.top.get(key)

    def step_line(self, index: int, key: str | None = None) -> int | None:
        if index >= len(self.steps):
            return self.top.get("steps")
        line, keys = self.steps[index]
        return keys.get(key, line) if key is not None else line


def read_yaml(text: str) -> tuple[Any, Source]:
    """Parse YAML text into plain values plus the `Source` of its lines.

    The document must keep within `agentnb._yaml`'s limits (its length, and its size with every
    alias written out), else it is refused before any value is built.
    """
    try:
        check_length(text)
    except YAMLLimitError as exc:
        raise invalid(exc.problem) from None
    loader = SafeLoader(text)
    try:
        node = compose_bounded(loader)
        source = _lines(node)
        data = loader.construct_document(node) if node is not None else None
    except YAMLLimitError as exc:
        raise invalid(exc.problem, line=exc.line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "cannot be parsed"
        raise invalid(f"invalid YAML: {problem}", line=line) from None
    except yaml.YAMLError as exc:
        raise invalid(f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return data, source


def _lines(node: yaml.Node | None) -> Source:
    source = Source()
    if not isinstance(node, yaml.MappingNode):
        return source
    source.top = _keys(node, step=None)
    for key_node, value in node.value:
        if key_node.value == "steps" and isinstance(value, yaml.SequenceNode):
            for index, item in enumerate(value.value):
                keys = {}
                if isinstance(item, yaml.MappingNode):
                    ids = [v.value for k, v in item.value if k.value == "id"]
                    ok = ids and isinstance(ids[0], str) and STEP_ID.match(ids[0])
                    keys = _keys(item, step=ids[0] if ok else f"steps[{index}]")
                source.steps.append((item.start_mark.line + 1, keys))
    return source


def _keys(node: yaml.MappingNode, *, step: str | None) -> dict[str, int]:
    """Line of each scalar key of `node`; a key given twice is an error (PyYAML keeps the last)."""
    lines: dict[str, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key, line = str(key_node.value), key_node.start_mark.line + 1
        if key in lines:
            raise invalid(
                f"key {shown(key)} appears twice (first on line {lines[key]})",
                step=step,
                field=key,
                line=line,
            )
        lines[key] = line
    return lines


# -- checking a mapping -------------------------------------------------------------------


def parse_mapping(data: Any, source: Source | None = None) -> dict[str, Any]:
    """Check a workflow mapping and return it normalised (the keyword arguments of `Workflow`).

    Steps come back as dicts with `id`, `agent`, `task`, `dependencies` (a tuple), the options
    that were given, and `line`; defaults are not merged yet.
    """
    src = source or Source()
    if not isinstance(data, Mapping):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise invalid(
            f"a workflow must be a mapping with 'name' and 'steps', got {kind}",
            line=1 if source is not None else None,
        )
    for key in data:
        if key not in TOP_KEYS:
            raise invalid(
                f"unknown top-level key {shown(key)}{did_you_mean(str(key), TOP_KEYS)}; "
                f"allowed: {', '.join(TOP_KEYS)}",
                field=str(key),
                line=src.top_line(str(key)),
            )
    for key in ("name", "steps"):
        if key not in data:
            raise invalid(
                f"missing required top-level key {key!r}",
                field=key,
                line=1 if source is not None else None,
            )

    def top(key: str, value: Any, kind: str) -> Any:
        return _check(value, kind, step=None, field=key, line=src.top_line(key))

    out: dict[str, Any] = {
        "name": top("name", data["name"], "name"),
        "description": top("description", data.get("description") or "", "str"),
        "max_concurrency": top("max_concurrency", data.get("max_concurrency"), "positive_int"),
        "on_error": top("on_error", data.get("on_error") or "continue", "on_error"),
    }
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise invalid(
            "must be a mapping of step settings", field="defaults", line=src.top_line("defaults")
        )
    for key in defaults:
        if key not in STEP_OPTIONS:
            raise invalid(
                f"unknown default {shown(key)}{did_you_mean(str(key), STEP_OPTIONS)}; "
                f"allowed: {', '.join(STEP_OPTIONS)}",
                field="defaults",
                line=src.top_line("defaults"),
            )
    out["defaults"] = {k: v for k, v in defaults.items() if v is not None}
    step_options(  # checked here, where the YAML lines are known
        out["defaults"], step=None, prefix="defaults.", line=lambda _key: src.top_line("defaults")
    )
    out["inputs"] = _inputs(data.get("inputs"), src.top_line("inputs"))

    steps = data["steps"]
    if not isinstance(steps, list) or not steps:
        raise invalid(
            "must be a non-empty list of steps", field="steps", line=src.top_line("steps")
        )
    out["steps"] = [_step(index, raw, src) for index, raw in enumerate(steps)]
    return out


def _inputs(raw: Any, line: int | None) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise invalid("must be a mapping of names to values", field="inputs", line=line)
    inputs: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not STEP_ID.match(key):
            raise invalid(
                f"input name {shown(key)} must match {STEP_ID.pattern}", field="inputs", line=line
            )
        if isinstance(value, (Mapping, list)) or value is None:
            raise invalid(
                f"input {shown(key)} must be a string or a number", field="inputs", line=line
            )
        inputs[key] = str(value)
    return inputs


def _step(index: int, raw: Any, src: Source) -> dict[str, Any]:
    label = f"steps[{index}]"
    if not isinstance(raw, Mapping):
        raise invalid(
            f"each step must be a mapping, got {type(raw).__name__}",
            step=label,
            line=src.step_line(index),
        )
    step_id = raw.get("id")
    if isinstance(step_id, str) and STEP_ID.match(step_id):
        label = step_id
    elif "id" not in raw:
        raise invalid(
            "missing required key 'id'", step=label, field="id", line=src.step_line(index)
        )
    elif not isinstance(step_id, str):
        raise invalid(
            f"id must be a string, got {shown(step_id)} (quote it)",
            step=label,
            field="id",
            line=src.step_line(index, "id"),
        )
    else:
        raise invalid(
            f"id {shown(step_id)} may only contain letters, digits, '_' and '-'",
            step=label,
            field="id",
            line=src.step_line(index, "id"),
        )

    def line(key: str | None = None) -> int | None:
        return src.step_line(index, key)

    for key in raw:
        if key not in STEP_KEYS:
            raise invalid(
                f"unknown key {shown(key)}{did_you_mean(str(key), STEP_KEYS)}; "
                f"allowed: {', '.join(STEP_KEYS)}",
                step=label,
                field=str(key),
                line=line(str(key)),
            )
    for key in ("agent", "task"):
        if key not in raw:
            raise invalid(f"missing required key {key!r}", step=label, field=key, line=line())
    if "dependencies" in raw and "depends_on" in raw:
        raise invalid(
            "give 'dependencies' or 'depends_on', not both",
            step=label,
            field="depends_on",
            line=line("depends_on"),
        )
    dep_key = "depends_on" if "depends_on" in raw else "dependencies"
    out: dict[str, Any] = {
        "id": step_id,
        "agent": _check(raw["agent"], "name", step=label, field="agent", line=line("agent")),
        "task": _check(raw["task"], "task", step=label, field="task", line=line("task")),
        "dependencies": _dependencies(raw.get(dep_key), label, dep_key, line(dep_key)),
        "line": line(),
    }
    out["options"] = step_options(raw, step=label, prefix="", line=line)
    return out


def step_options(
    raw: Mapping[str, Any],
    *,
    step: str | None,
    prefix: str,
    line: Any,
) -> CallOptions:
    """The `CallOptions` of a step's (or `defaults:`') option keys, each checked in turn so the
    error names the step, the field and its line."""
    values: dict[str, Any] = {}
    for key in STEP_OPTIONS:
        value = raw.get(key)
        if value is None:
            continue
        name = OPTION_KEYS[key]
        try:
            CallOptions.build({name: value}, source=f"step {shown(step)}")
        except OptionError as exc:
            message = str(exc).split(": option ", 1)[-1]
            message = message.split(" must be ", 1)[-1]
            raise invalid(
                f"must be {message}", step=step, field=prefix + key, line=line(key)
            ) from None
        values[name] = value
    return CallOptions.build(values, source=f"step {shown(step)}")


def _dependencies(raw: Any, step: str, key: str, line: int | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(d, str) for d in items):
        raise invalid("must be a list of step ids", step=step, field=key, line=line)
    return tuple(dict.fromkeys(items))


def _check(value: Any, kind: str, *, step: str | None, field: str, line: int | None) -> Any:
    """Check one value against its kind and return it (ints widened to float where asked)."""

    def bad(expected: str) -> WorkflowValidationError:
        return invalid(f"must be {expected}, got {shown(value)}", step=step, field=field, line=line)

    if kind == "name":
        if not isinstance(value, str) or not value.strip():
            raise bad("a non-empty string")
        return value.strip()
    if kind == "task":
        if not isinstance(value, str) or not value.strip():
            raise bad("non-empty text")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind == "on_error":
        if value not in ON_ERROR:
            raise bad("'continue' or 'fail_fast'")
        return value
    if kind == "positive_int":
        if value is None and kind == "positive_int":
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad("a whole number of at least 1")
        return value
    raise AssertionError(f"unknown kind {kind}")  # pragma: no cover
