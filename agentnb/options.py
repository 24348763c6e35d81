"""`CallOptions`: every per-call option, validated once where a surface meets the library.

One value travels unchanged from where it is built (a Python call, `%agent`, the CLI, a workflow
step, a map row) through the orchestrator into the `BackendRequest`, the cache key and the
metrics. Each option is declared once, as a field with an `Option` in its metadata (help, checks,
flags, YAML key, whether it changes the answer); the magics' options, the CLI's flags and a
workflow step's keys are generated from those declarations (`add_arguments`, `from_namespace`,
`STEP_KEYS`), so a new option is one field here plus, when it changes the request, one line in
`orchestrator/prepare.py`.

`None` means "not set here": the next layer decides (call > workflow step > workflow `defaults:` >
the agent's file > `Config`). Options that change the answer (`Option.in_key`) are part of the
cache key; the others (timeout, attempts, cache policy) are not.

`schema` (structured answers: `agentnb.schema`), `prefix` (the part of the user turn many calls
share, sent for prompt caching) and `sample` (a repeat's index) have no flags: they are given
from Python (a call, `AgentCall`, a map or grid), or as keys of a workflow step.

Example:
    >>> opts = CallOptions.build({"max_tokens": 256, "system": "Answer in French."})
    >>> opts.max_tokens, opts.temperature
    (256, None)
    >>> CallOptions.build({"max_tokens": 0}, source="execute_agent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    agentnb.errors.OptionError: execute_agent: option 'max_tokens' must be a whole number ...
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from .errors import OptionError
from .schema import AnswerSchema

__all__ = [
    "EMPTY",
    "STEP_KEYS",
    "CallOptions",
    "Option",
    "OptionArgs",
    "add_arguments",
    "check_text",
    "from_namespace",
    "shown",
]

MAX_TOKENS = 1_000_000
MAX_TEXT_CHARS = 1_000_000
MAX_STOP_SEQUENCES = 16


def shown(value: Any, limit: int = 60) -> str:
    """A bounded repr for messages: a user's value never makes an error message unbounded.

    Example:
        >>> shown("x" * 100, limit=10)
        "'xxxxxxx...' (100 characters)"
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[: limit - 3]!r}"[:-1] + "...' (" + f"{len(value):,} characters)"
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)
    if isinstance(value, type):
        return f"the class {value.__name__}"
    return f"a {type(value).__name__}"


def check_text(value: str, what: str) -> None:
    """Raise ValueError when `value` holds a lone surrogate (it cannot be sent or hashed)."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} holds a lone surrogate at character {exc.start} (not valid Unicode text)"
        ) from None


# -- the checks: each returns the normalised value or raises ValueError(expected) ----------------
def _model(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ValueError("a non-empty model id or alias (at most 200 characters)")
    if not value.isprintable():
        raise ValueError("a model id without control characters")
    return value.strip()


def _int_range(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"a whole number from {low} to {high}")
        return value

    return check


def _number_range(low: float, high: float, *, open_low: bool = False) -> Callable[[Any], float]:
    bracket = "(" if open_low else "["

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"a number in {bracket}{low:g}, {high:g}]")
        number = float(value)
        if (
            not math.isfinite(number)
            or number > high
            or number < low
            or (open_low and number == low)
        ):
            raise ValueError(f"a finite number in {bracket}{low:g}, {high:g}]")
        return number

    return check


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("text")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"text of at most {MAX_TEXT_CHARS:,} characters")
    try:
        check_text(value, "the text")
    except ValueError:
        raise ValueError("valid Unicode text (it holds a lone surrogate)") from None
    return value


def _stops(value: Any) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or len(items) > MAX_STOP_SEQUENCES:
        raise ValueError(f"a list of at most {MAX_STOP_SEQUENCES} strings")
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError("a list of non-blank strings")
        check_text(item, "a stop sequence")
    return tuple(items)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


@dataclass(frozen=True)
class Option:
    """How one `CallOptions` field is checked and spelled on each surface.

    `flags` are the magic's and the CLI's spellings (`()`: not offered there); a flag with
    `negate` stores False (`--no-cache`). `in_key`: the option changes the answer, so it is part
    of the cache key. `step_key`: its key in a workflow step and in `defaults:`.
    """

    help: str
    check: Callable[[Any], Any]
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    arg_type: Callable[[str], Any] = str
    in_key: bool = False
    step_key: str | None = None
    negate: bool = False
    repeat: bool = False


def _opt(**kwargs: Any) -> Any:
    return field(default=None, metadata={"option": Option(**kwargs)})


@dataclass(frozen=True, slots=True)
class CallOptions:
    """The options of one agent call; `None` leaves the choice to the next layer.

    Build it with `CallOptions.build(mapping, source=...)` (checked, errors name the option and
    where it came from) or `CallOptions(...)` (checked too, source "CallOptions").
    """

    model: str | None = _opt(
        help="model id or alias (sonnet, opus, haiku) instead of the agent's",
        check=_model,
        flags=("-m", "--model"),
        metavar="MODEL",
        in_key=True,
    )
    max_tokens: int | None = _opt(
        help="answer length limit in tokens",
        check=_int_range(1, MAX_TOKENS),
        flags=("--max-tokens",),
        metavar="N",
        arg_type=int,
        in_key=True,
    )
    temperature: float | None = _opt(
        help="sampling temperature, 0 to 1",
        check=_number_range(0.0, 1.0),
        flags=("-t", "--temperature"),
        metavar="T",
        arg_type=float,
        in_key=True,
    )
    system: str | None = _opt(
        help="extra system text, appended to the agent's system prompt",
        check=_text,
        flags=("--system",),
        metavar="TEXT",
        in_key=True,
    )
    stop_sequences: tuple[str, ...] | None = _opt(
        help="stop the answer where this text appears (repeatable)",
        check=_stops,
        flags=("--stop",),
        metavar="TEXT",
        in_key=True,
        repeat=True,
    )
    schema: AnswerSchema | None = _opt(  # noqa: RUF009 - a field() declaration, as above
        help="the answer's fields: a JSON Schema of an object, a pydantic model or a dataclass "
        "(the answer then comes back as `AgentResult.data`, validated, repaired once)",
        check=AnswerSchema.of,
        in_key=True,
    )
    prefix: str | None = _opt(
        help="the opening of the first user turn, the same for many calls (a map's template), "
        "sent as its own block marked for prompt caching",
        check=_text,
        in_key=True,
    )
    sample: int | None = _opt(
        help="which sample of the same call this is (a grid's repeat), so repeats are not cache "
        "hits; not sent to the API",
        check=_int_range(0, 1_000_000),
        in_key=True,
    )
    use_cache: bool | None = _opt(
        help="neither read nor write the response cache",
        check=_flag,
        flags=("--no-cache",),
        step_key="cache",
        negate=True,
    )
    timeout_s: float | None = _opt(
        help="seconds one attempt may take, (0, 3600]",
        check=_number_range(0.0, 3600.0, open_low=True),
        flags=("--timeout",),
        metavar="S",
        arg_type=float,
    )
    max_attempts: int | None = _opt(
        help="attempts per call, retries included, 1 to 100",
        check=_int_range(1, 100),
        flags=("--max-attempts",),
        metavar="N",
        arg_type=int,
    )

    def __post_init__(self) -> None:
        _validate(self, "CallOptions")

    @classmethod
    def build(cls, values: Mapping[str, Any], *, source: str = "options") -> CallOptions:
        """Check `values` (option name -> value, None = unset) and make the options.

        Unknown names and bad values raise `OptionError` naming the option and `source`.
        """
        if not values:
            return EMPTY
        clean: dict[str, Any] = {}
        for name, value in values.items():
            spec = _SPECS.get(name)
            if spec is None:
                raise OptionError(
                    f"{source}: unknown option {name!r}; options are {', '.join(_SPECS)}",
                    option=name,
                    source=source,
                )
            if value is not None:
                clean[name] = _checked(spec, name, value, source)
        return _make(clean)

    def merged(self, over: CallOptions) -> CallOptions:
        """These options with every option set in `over` taking precedence."""
        if over is EMPTY or over is self:
            return self
        if self is EMPTY:
            return over
        opts = object.__new__(CallOptions)
        for name in _SPECS:
            value = getattr(over, name)
            object.__setattr__(opts, name, getattr(self, name) if value is None else value)
        return opts

    def set_fields(self) -> dict[str, Any]:
        """The options that are set, as a dict (for display and serialisation)."""
        return {n: v for n in _SPECS if (v := getattr(self, n)) is not None}

    def __bool__(self) -> bool:
        return any(getattr(self, n) is not None for n in _SPECS)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={shown(v)}" for k, v in self.set_fields().items())
        return f"CallOptions({inner})"


class OptionArgs(TypedDict, total=False):
    """The keyword arguments every call method takes (`**options: Unpack[OptionArgs]`).

    It mirrors `CallOptions` for editors and type checkers; a test pins the two together.
    """

    model: str | None
    max_tokens: int | None
    temperature: float | None
    system: str | None
    stop_sequences: tuple[str, ...] | list[str] | str | None
    schema: AnswerSchema | Mapping[str, Any] | type | None
    prefix: str | None
    sample: int | None
    use_cache: bool | None
    timeout_s: float | None
    max_attempts: int | None


_SPECS: dict[str, Option] = {f.name: f.metadata["option"] for f in dataclasses.fields(CallOptions)}
#: Step keys (in a workflow step and in `defaults:`) -> option names.
STEP_KEYS: dict[str, str] = {(o.step_key or n): n for n, o in _SPECS.items()}


def _new(checked: Mapping[str, Any]) -> CallOptions:
    opts = object.__new__(CallOptions)
    for name in _SPECS:
        object.__setattr__(opts, name, checked.get(name))
    return opts


EMPTY: CallOptions = _new({})


def _make(checked: Mapping[str, Any]) -> CallOptions:
    """Options from values already checked (absent ones unset); `EMPTY` when none is set."""
    return _new(checked) if checked else EMPTY


def _checked(spec: Option, name: str, value: Any, source: str) -> Any:
    try:
        return spec.check(value)
    except ValueError as exc:
        raise OptionError(
            f"{source}: option {name!r} must be {exc}, got {shown(value)}",
            option=name,
            source=source,
        ) from None


def _validate(opts: CallOptions, source: str) -> None:
    for name, spec in _SPECS.items():
        value = getattr(opts, name)
        if value is not None:
            object.__setattr__(opts, name, _checked(spec, name, value, source))


def option_specs() -> dict[str, Option]:
    """Every option's declaration, in field order."""
    return dict(_SPECS)


# -- generated surfaces ---------------------------------------------------------------------------
def add_arguments(add: Callable[..., Any], *, only: Iterable[str] | None = None) -> None:
    """Declare each option's flags through `add` (`parser.add_argument` or a magic decorator).

    Values arrive as typed by argparse (`int`, `float`, text) and are checked by
    `from_namespace`, so the error names the option wherever it was typed.
    """
    wanted = set(only) if only is not None else None
    for name, spec in _SPECS.items():
        if not spec.flags or (wanted is not None and name not in wanted):
            continue
        kwargs: dict[str, Any] = {"dest": name, "help": spec.help, "default": None}
        if spec.negate:
            kwargs.update(action="store_const", const=False)
        elif spec.repeat:
            kwargs.update(action="append", metavar=spec.metavar, type=_lenient(spec.arg_type))
        else:
            kwargs.update(metavar=spec.metavar, type=_lenient(spec.arg_type))
        add(*spec.flags, **kwargs)


def _lenient(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """`convert`, or the text as typed when it does not convert: the option's own check then
    refuses it in one line naming the flag (argparse would print its usage first)."""
    if convert is str:
        return str

    def lenient(text: str) -> Any:
        try:
            return convert(text)
        except ValueError:
            return text

    return lenient


def from_namespace(args: argparse.Namespace, *, source: str) -> CallOptions:
    """The `CallOptions` in parsed arguments (from `add_arguments`); errors name the flag."""
    values: dict[str, Any] = {}
    for name, spec in _SPECS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        try:
            values[name] = spec.check(value)
        except ValueError as exc:
            flag = spec.flags[-1] if spec.flags else name
            raise OptionError(
                f"{source} {flag}: must be {exc}, got {shown(value)}", option=name, source=source
            ) from None
    return _make(values)
