"""`{{name}}` placeholders in step tasks: finding them and filling them in.

A placeholder is two opening braces, an optional space, a name made of letters, digits, `_` and
`-`, an optional space and two closing braces: `{{style}}`, `{{ src }}`. Nothing else is special:
single braces, `{{ a.b }}`, `{{ 1 + 2 }}` and `{% ... %}` are ordinary text, so Python, JSON and
shell snippets pass through untouched, and nothing is ever evaluated. A backslash right before
the braces (`\\{{name}}`) writes a literal `{{name}}` instead of a placeholder.

Filling in is a single pass over the template: text that a step output brings in is never scanned
again, so an agent's answer cannot inject placeholders into a later task.

Example:
    >>> placeholders("Review {{ src }} for {{language}}; keep {'a': {'b': 1}} and \\\\{{raw}}")
    ['src', 'language']
    >>> render("Hi {{ who }}, {x} \\\\{{who}}", {"who": "Ada"})
    'Hi Ada, {x} {{who}}'
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["PLACEHOLDER", "placeholders", "render"]

#: The placeholder pattern; group 1 is the escaping backslash (if any), group 2 the name.
PLACEHOLDER = re.compile(r"(\\)?\{\{[ \t]*([A-Za-z0-9_-]+)[ \t]*\}\}")


def placeholders(template: str) -> list[str]:
    """The names referred to by `template`, in order of first appearance, without repeats."""
    seen: dict[str, None] = {}
    for match in PLACEHOLDER.finditer(template):
        if match.group(1) is None:
            seen.setdefault(match.group(2), None)
    return list(seen)


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill the placeholders of `template` from `values` (every name must be present)."""

    def fill(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return match.group(0)[1:]
        return values[match.group(2)]

    return PLACEHOLDER.sub(fill, template)
