"""What a setting is besides its name: its help, the numbers it accepts, and how a value is read.

`Config` declares every field with `setting(default, help=..., ge=..., le=...)`, so each setting's
help text and range live in one place, its `dataclasses.field` metadata. The range checks of
`Config` (`range_of`), the help of `%config AgentNB` (`help_of`) and the `AgentNB` traitlets are
all made from it. `convert` reads a value from a file, a variable or an argument by the field's
type hint; `Secret` is the type of the API key.

Example:
    >>> from dataclasses import dataclass, fields
    >>> @dataclass
    ... class Demo:
    ...     timeout_s: float = setting(120.0, help="Seconds per attempt.", gt=0, le=3600)
    >>> help_of(fields(Demo)[0])
    'Seconds per attempt. Range: more than 0 and at most 3,600.'
    >>> range_of(fields(Demo)[0]).problem(0.0)
    'more than 0'
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from .errors import ConfigError
from .options import shown

__all__ = ["Range", "Secret", "allows_none", "convert", "help_of", "range_of", "setting"]

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """The numbers a setting accepts: from `low` to `high` (either may be None: no bound), each
    end included unless it is open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: float) -> str | None:
        """What `value` must be instead (`'at least 1'`), or None when it is in range.

        NaN and the infinities are never in range: a NaN compares false with every bound.
        """
        if isinstance(value, float) and not math.isfinite(value):
            return "a finite number"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return self._low()
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return self._high()
        return None

    def _low(self) -> str:
        return f"{'more than' if self.low_open else 'at least'} {_number(self.low)}"

    def _high(self) -> str:
        return f"{'less than' if self.high_open else 'at most'} {_number(self.high)}"

    def __str__(self) -> str:
        parts = [
            self._low() if self.low is not None else "",
            self._high() if self.high is not None else "",
        ]
        return " and ".join(p for p in parts if p)


def _number(value: float | None) -> str:
    if value is not None and float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:g}"


@overload
def setting(
    default: T,
    *,
    help: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> T: ...
@overload
def setting(
    *,
    default_factory: Callable[[], T],
    help: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> T: ...
def setting(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    help: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field with its help and, for a number, the range it must lie in.

    `ge`/`gt` bound it from below (included/excluded), `le`/`lt` from above. Every float setting
    is finite whether or not it has a range.
    """
    bounds = Range(
        low=gt if gt is not None else ge,
        high=lt if lt is not None else le,
        low_open=gt is not None,
        high_open=lt is not None,
    )
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        metadata={"help": help, "range": bounds if bounds != Range() else None},
    )


def range_of(f: dataclasses.Field[Any]) -> Range | None:
    """The range a field's value must lie in (None: any value of its type)."""
    bounds: Range | None = f.metadata.get("range")
    return bounds


def help_of(f: dataclasses.Field[Any]) -> str:
    """A field's help, its range added (what `%config AgentNB` shows)."""
    text: str = f.metadata.get("help", "")
    bounds = range_of(f)
    return f"{text} Range: {bounds}." if bounds is not None else text


class Secret:
    """A string that does not show itself: repr/str give `'***'`; `.get()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        # Refuse to be pickled into notebooks, caches or multiprocessing payloads by accident.
        raise TypeError("Secret values cannot be pickled")


def allows_none(hint: Any) -> bool:
    """Whether a type hint is `X | None`."""
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(
        None
    ) in typing.get_args(hint)


def convert(key: str, value: Any, hint: Any, source: str) -> Any:
    """`value` as the type `hint` of setting `key`, converting strings where it is safe.

    A value that does not fit is a `ConfigError` naming `source` and `key` (never the value of a
    `Secret`).
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)

    def bad(expected: str) -> ConfigError:
        kind = type(value).__name__
        got = "a value" if key == "api_key" else shown(value)  # never echo a secret
        if got != f"a {kind}":  # `shown` names a container's type rather than print it
            got += f" ({kind})"
        return ConfigError(f"{source}: setting {key!r} must be {expected}, got {got}")

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(key, value, inner[0], source)
    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(repr(a) for a in args))
        return value
    if hint is Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value)
        raise bad("a string")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise bad("true or false")
    if hint is int:
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                raise bad("an integer") from None
        raise bad("an integer")
    if hint is float:
        if isinstance(value, bool):
            raise bad("a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise bad("a number") from None
        raise bad("a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad("a string")
    if hint is Path:
        # An empty path would mean the working directory: never what was meant.
        if isinstance(value, (str, os.PathLike)) and str(os.fspath(value)).strip():
            return Path(value).expanduser()
        raise bad("a path (not empty)")
    if origin is list:
        (item,) = args
        if isinstance(value, (str, Path)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        return [convert(key, v, item, source) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        return {str(k): convert(key, v, args[1], source) for k, v in value.items()}
    raise bad(str(hint))  # pragma: no cover - every field type is handled above
