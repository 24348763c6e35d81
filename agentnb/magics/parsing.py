"""Line handling for the magics: typed decorators, option types, `{{name}}` filling, errors.

IPython's `magic_arguments` and magic markers carry no usable types, so they are re-exported
here typed. `split_agent_line` parses `%agent [options] NAME TASK...` so that only the options
and the name are split like a shell would: the task reaches the agent exactly as typed.
"""

from __future__ import annotations

import argparse
import functools
import keyword
import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from IPython.core import magic as _magic
from IPython.core import magic_arguments as _magic_arguments
from IPython.core.error import UsageError

from ..errors import AgentnbError, WorkflowValidationError
from ..options import add_arguments
from ..orchestrator.batchsend import add_batch_arguments
from ..orchestrator.budget import add_budget_arguments
from ..workflow.template import placeholders, render

__all__ = [
    "argument",
    "batch_arguments",
    "budget_arguments",
    "fill_placeholders",
    "in_cell_lines",
    "keep_questions",
    "line_cell_magic",
    "line_magic",
    "magic_arguments",
    "one_line_errors",
    "option_arguments",
    "parse_line",
    "parser_of",
    "positive_int",
    "split_agent_line",
    "variable_name",
]

F = TypeVar("F", bound=Callable[..., Any])


def argument(*args: Any, **kwargs: Any) -> Callable[[F], F]:
    """`IPython.core.magic_arguments.argument`, typed."""
    deco = _magic_arguments.argument(*args, **kwargs)  # type: ignore[no-untyped-call]
    return cast(Callable[[F], F], deco)


def magic_arguments() -> Callable[[F], F]:
    """`IPython.core.magic_arguments.magic_arguments`, typed."""
    return cast(Callable[[F], F], _magic_arguments.magic_arguments())  # type: ignore[no-untyped-call]


def line_magic(func: F) -> F:
    """`@line_magic`, typed (IPython's marker returns a union mypy cannot narrow)."""
    return cast(F, _magic.line_magic(func))


def line_cell_magic(func: F) -> F:
    """`@line_cell_magic`, typed."""
    return cast(F, _magic.line_cell_magic(func))


def parse_line(magic: Any, line: str) -> argparse.Namespace:
    """Parse a magic's line with the parser `magic_arguments` built for it."""
    try:
        args: argparse.Namespace = parser_of(magic).parse_argstring(line)  # type: ignore[attr-defined]
    except ValueError as exc:  # shlex: an unclosed quote
        raise UsageError(f"cannot parse the options: {exc}") from None
    return args


def one_line_errors(func: F) -> F:
    """Make IPython show an `AgentnbError` from `func` as `Type: message`, with no traceback.

    IPython asks an exception for `_render_traceback_()` before formatting a traceback (in the
    terminal and in ipykernel alike); the exception is re-raised unchanged otherwise.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AgentnbError as exc:
            line = f"{type(exc).__name__}: {exc}"
            setattr(exc, "_render_traceback_", lambda: [line])  # noqa: B010
            raise

    return cast(F, wrapper)


_LINE = re.compile(r"^line (\d+)\b|(?<= \(first on line )(\d+)(?=\))")


def in_cell_lines(exc: WorkflowValidationError) -> WorkflowValidationError:
    """`exc` with its YAML lines counted in the `%%workflow` cell (the magic's line is line 1).

    The YAML body starts on the cell's second line, so its line 3 is the cell's line 4; the
    message then says `line 4 of the cell`, which is what a notebook's line numbers show.

    Example:
        >>> exc = WorkflowValidationError("line 3: step 'a', field 'agent': unknown", line=3)
        >>> moved = in_cell_lines(exc)
        >>> str(moved), moved.line
        ("line 4 of the cell: step 'a', field 'agent': unknown", 4)
    """
    if exc.line is None:
        return exc

    def shifted(match: re.Match[str]) -> str:
        if match[1] is not None:
            return f"line {int(match[1]) + 1} of the cell"
        return f"{int(match[2]) + 1} of the cell"

    return WorkflowValidationError(
        _LINE.sub(shifted, str(exc)), step=exc.step, field=exc.field, line=exc.line + 1
    )


def fill_placeholders(task: str, namespace: Mapping[str, Any]) -> str:
    """Replace each `{{name}}` in `task` by `str(namespace[name])`; single braces stay as typed.

    A name the namespace does not hold is an error naming it (write `\\{{name}}` for literal
    double braces).

    Example:
        >>> fill_placeholders("Fix {{code}} in {x}", {"code": "f()"})
        'Fix f() in {x}'
    """
    names = placeholders(task)
    missing = [n for n in names if n not in namespace]
    if missing:
        listed = ", ".join("{{" + n + "}}" for n in missing)
        verb = "is" if len(missing) == 1 else "are"
        raise UsageError(
            f"the task uses {listed}, which {verb} not defined in the notebook "
            "(write \\{{name}} for literal double braces)"
        )
    return render(task, {n: str(namespace[n]) for n in names})


# -- option types (argparse turns their errors into one-line UsageErrors) ------------------------
def variable_name(value: str) -> str:
    if not value.isidentifier() or keyword.iskeyword(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid variable name")
    return value


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def option_arguments(only: tuple[str, ...] | None = None) -> Callable[[F], F]:
    """The call options' flags as magic arguments, generated from `agentnb.options`.

    Values are only converted here (`int`, `float`, text); `options.from_namespace` checks
    them, so `%agent`, the CLI and the Python API refuse the same values with the same words.
    """
    return _arguments(lambda add: add_arguments(add, only=only))


def budget_arguments() -> Callable[[F], F]:
    """`--estimate` and `--budget USD` as magic arguments (`orchestrator.budget` declares them
    for the CLI too); `check_budget` reads the amount, so an error names the flag in one line."""
    return _arguments(add_budget_arguments)


def batch_arguments(*, workflow: bool = False) -> Callable[[F], F]:
    """`--batch` as a magic argument (`orchestrator.batchsend` declares it for the CLI too)."""
    return _arguments(lambda add: add_batch_arguments(add, workflow=workflow))


def _arguments(declare: Callable[[Callable[..., Any]], None]) -> Callable[[F], F]:
    """One decorator applying every `argument(...)` that `declare(add)` asks for, in order."""
    decorators: list[Callable[[F], F]] = []

    def add(*flags: str, **kwargs: Any) -> None:
        decorators.append(argument(*flags, **kwargs))

    declare(add)

    def apply(func: F) -> F:
        for deco in reversed(decorators):
            func = deco(func)
        return func

    return apply


# A word: unquoted characters and quoted strings run together; a lone quote is kept as text.
_WORD = re.compile(r"""(?:[^\s'"]+|"(?:\\.|[^"\\])*"|'[^']*'|['"])+""")


def _unquote(word: str) -> str:
    try:
        parts = shlex.split(word)
    except ValueError:
        return word
    return parts[0] if len(parts) == 1 else word


def split_agent_line(parser: argparse.ArgumentParser, line: str) -> tuple[argparse.Namespace, str]:
    """Parse `[options] NAME TASK...`; the task is returned exactly as typed after NAME.

    Only the options and the name are split like a shell would, so apostrophes, quotes, `$`
    and braces in the task reach the agent unchanged. A task starting with one of the options
    (`%agent writer -m haiku hi`) is refused: options go before NAME.
    """
    words = list(_WORD.finditer(line))
    args = parser.parse_args([_unquote(w.group(0)) for w in words])
    rest = len(args.task)
    task = line[words[len(words) - rest].start() :].strip() if rest else ""
    first = args.task[0].split("=", 1)[0] if rest else ""
    if first.startswith("-") and first in _options(parser):
        # `%agent writer -m haiku hi` would send "-m haiku hi" to the agent with no model set.
        raise UsageError(
            f"options go before NAME: `%agent {first} ... {args.name} TASK` "
            f"(for a task that starts with {first}, use %%agent with the task in the cell body)"
        )
    return args, task


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


# `%agent ARGS` or `TARGET = %agent ARGS` (IPython's magic assignment), ARGS ending in "?".
_QUESTION = re.compile(
    r"^(?P<start>[ \t]*(?:[A-Za-z_][\w.]*[ \t]*=[ \t]*)?)%agent[ \t]+(?P<args>\S.*?)[ \t]*$"
)


def keep_questions(lines: list[str]) -> list[str]:
    """An input cleanup transform that lets `%agent NAME TASK...?` ask its question.

    IPython reads a line ending in `?` as a help request for the word before the `?`, so
    `%agent writer What is a closure?` (or `r = %agent writer What is a closure?`) would look
    up `closure` instead. Such lines become the call IPython itself makes for a line magic;
    `%agent?` (help on the magic) and `%%agent` cells are left alone.
    """
    if lines and lines[0].lstrip().startswith("%%"):
        return lines  # a cell magic's body is its own (a task, YAML), not Python
    out = []
    for line in lines:
        text = line.rstrip("\r\n")
        match = _QUESTION.match(text)
        if match and match["args"].endswith("?") and len(match["args"].split()) >= 2:
            call = f"get_ipython().run_line_magic('agent', {match['args']!r})"
            line = f"{match['start']}{call}{line[len(text) :]}"
        out.append(line)
    return out


def parser_of(magic: Any) -> argparse.ArgumentParser:
    """The `MagicArgumentParser` that `magic_arguments` attached to a magic."""
    parser: argparse.ArgumentParser = magic.parser
    return parser
