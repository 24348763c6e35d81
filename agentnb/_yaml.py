"""Bounded YAML: safe loading that refuses a document too big to expand (a "billion laughs").

An alias (`*a`) names an anchored node (`&a`) instead of copying it, and PyYAML shares the node,
so loading a 400-byte document of nested aliases is instant; the blow-up comes later, when
`str()`, `repr`, a template or JSON walks the values and writes every alias out. So the composed
node graph is measured before anything is built from it: the size it would have with every alias
written out, memoised per node, which costs O(distinct nodes) even for a bomb. Limits:

- `MAX_NODES` (100,000) nodes once expanded. A workflow step is about 16 nodes (its mapping,
  keys, values, a dependency list), so a 500-step workflow measures 8,016 and the limit leaves
  room for some 6,000 steps; a config or an agent's front matter is a few dozen. Expanded,
  100,000 nodes print in well under a second.
- `MAX_SCALAR_CHARS` (10,000,000) characters of scalar text once expanded, so one long string
  repeated by aliases cannot pass either; without aliases a document within `MAX_DOCUMENT_CHARS`
  holds fewer, so only alias fan-out reaches it.
- `MAX_DOCUMENT_CHARS` (4,000,000) characters of text, checked before parsing (`read_bounded`
  stops reading a file there).
- A node that contains itself through an alias (`&a [*a]`) expands without end, and is refused;
  so is nesting too deep for the pure-Python composer (it recurses once per level).

Each is a `YAMLLimitError` with the line of the offending node, which every caller turns into
its own error (a `WorkflowValidationError`, a `ConfigError`, an `AgentFileError`).

Example:
    >>> load_bounded("base: &b [1, 2]\\ncopy: *b")
    {'base': [1, 2], 'copy': [1, 2]}
    >>> bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\\n" + "".join(
    ...     f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\\n" for p, c in zip("abcd", "bcde"))
    >>> load_bounded(bomb)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    agentnb._yaml.YAMLLimitError: line 5: aliases expand this document past 100,000 nodes; ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "MAX_DOCUMENT_CHARS",
    "MAX_NODES",
    "MAX_SCALAR_CHARS",
    "SafeLoader",
    "YAMLLimitError",
    "check_length",
    "compose_bounded",
    "load_bounded",
    "read_bounded",
]

MAX_NODES = 100_000
MAX_SCALAR_CHARS = 10_000_000
MAX_DOCUMENT_CHARS = 4_000_000

#: libyaml's parser when PyYAML was built with it (about 10x faster); both keep node lines.
SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YAMLLimitError(ValueError):
    """A YAML document passes one of this module's limits; `line` (1-based) says where, if known."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.problem = message
        self.line = line


def check_length(text: str) -> None:
    """Raise `YAMLLimitError` when `text` is longer than `MAX_DOCUMENT_CHARS`."""
    if len(text) > MAX_DOCUMENT_CHARS:
        raise YAMLLimitError(
            f"the document is longer than {MAX_DOCUMENT_CHARS:,} characters ({len(text):,}); "
            "agentnb reads no YAML that large"
        )


def read_bounded(path: Path) -> str:
    """The UTF-8 text of the file at `path`, read no further than `MAX_DOCUMENT_CHARS`.

    `OSError` and `UnicodeDecodeError` pass through; a longer file is a `YAMLLimitError`.
    """
    with path.open(encoding="utf-8") as f:
        text = f.read(MAX_DOCUMENT_CHARS + 1)
    if len(text) > MAX_DOCUMENT_CHARS:
        raise YAMLLimitError(
            f"the file is longer than {MAX_DOCUMENT_CHARS:,} characters; "
            "agentnb reads no YAML that large"
        )
    return text


def compose_bounded(loader: yaml.SafeLoader) -> yaml.Node | None:
    """The single document of `loader` as a node graph, checked against the limits.

    Build the values afterwards with `loader.construct_document(node)`; a caller that wants the
    nodes' lines (as the workflow parser does) reads them in between.
    """
    try:
        node = loader.get_single_node()
    except RecursionError:  # the pure-Python composer recurses once per level of nesting
        raise YAMLLimitError("nested too deeply to read") from None
    if node is not None:
        _check_expansion(node)
    return node


def load_bounded(text: str, *, loader: type[yaml.SafeLoader] = SafeLoader) -> Any:
    """The values of the YAML document `text`, read with `loader` (a safe loader) within limits.

    `yaml.YAMLError` for YAML that does not parse, `YAMLLimitError` for a document that passes a
    limit.
    """
    check_length(text)
    reader = loader(text)
    try:
        node = compose_bounded(reader)
        return reader.construct_document(node) if node is not None else None
    finally:
        reader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Raise `YAMLLimitError` when `root`, every alias written out, passes a limit.

    A post-order walk with an explicit stack (a deep document must not exhaust Python's), sizing
    each distinct node once: size(node) = 1 + the sum of its children's sizes, however many times
    an alias reaches it.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, scalar characters)
    open_nodes: set[int] = set()  # nodes on the path from the root: reaching one is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if not children_done:
            if key in sizes:
                continue
            if key in open_nodes:
                raise YAMLLimitError(
                    "an alias refers to a node that contains it, so it never ends",
                    line=node.start_mark.line + 1,
                )
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
            continue
        open_nodes.discard(key)
        nodes, chars = 1, len(node.value) if isinstance(node, yaml.ScalarNode) else 0
        for child in _children(node):
            child_nodes, child_chars = sizes[id(child)]
            nodes += child_nodes
            chars += child_chars
        if nodes > MAX_NODES:
            raise YAMLLimitError(
                f"aliases expand this document past {MAX_NODES:,} nodes; agentnb reads no YAML "
                "that large (a 'billion laughs' document?)",
                line=node.start_mark.line + 1,
            )
        if chars > MAX_SCALAR_CHARS:
            raise YAMLLimitError(
                f"aliases expand this document past {MAX_SCALAR_CHARS:,} characters of text; "
                "agentnb reads no YAML that large",
                line=node.start_mark.line + 1,
            )
        sizes[key] = (nodes, chars)
