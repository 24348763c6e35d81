"""The simulator's structured answers: data that follows a JSON Schema, made from the task.

`fill(schema, words, digest)` gives every property of the schema's object a value of its kind:
`const` and `enum` values, the first non-null choice of `anyOf`/`oneOf`, `$ref`s and `allOf`
resolved, numbers inside their bounds (and multiples of `multipleOf`), arrays within
`minItems`/`maxItems` (distinct items for `uniqueItems`), strings within their lengths, in their
`format` (date, date-time, time, email, uri, uuid, uuid4, hostname, ipv4) or else made of the task's
keywords, so the answer reflects the input. `pattern` is not followed. Recursive schemas stop
where they allow it (arrays at their `minItems` past a depth). The same (schema, words, digest)
always gives the same data.

`broken(schema, data)` is the same data made invalid, so that the repair path can be tested: the
first property of the object that can be broken gets a value its schema refuses (past its
`maximum` or `minimum`, out of its `enum`, or of another type), else the first required property
is left out. A schema that refuses nothing gives the data back unchanged.

Example:
    >>> from agentnb.schema import AnswerSchema
    >>> s = AnswerSchema.of({"type": "object", "properties": {
    ...     "score": {"type": "integer", "minimum": 1, "maximum": 5},
    ...     "topic": {"type": "string"}}})
    >>> data = fill(s, ["apples", "pears"], 42)
    >>> s.problem(data) is None, 1 <= data["score"] <= 5, "apples" in data["topic"]
    (True, True, True)
    >>> s.problem(broken(s, data))
    'answer.score: 7 is greater than the maximum of 5'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

from ..schema import AnswerSchema
from .sim_answer import mix

__all__ = ["broken", "fill"]

_MASK64 = 0xFFFFFFFFFFFFFFFF
_DEEP = 3  # past this depth arrays keep to their minItems, so recursive schemas end
_MAX_DEPTH = 12
_SPAN = 100  # the range of a number bounded on one side only, or not at all
_NUMBER_KINDS = {"integer", "number"}
_CHOICES = ("anyOf", "oneOf", "default", "title", "description")
_MISSING = object()


def fill(schema: AnswerSchema, words: Sequence[str], digest: int) -> dict[str, Any]:
    """Schema-valid data for `schema`, its strings made of `words`, its choices from `digest`."""
    value = _Filler(schema.json, words or ("task",), digest).value(schema.json, 0, "")
    return value if isinstance(value, dict) else {}


def broken(schema: AnswerSchema, data: dict[str, Any]) -> dict[str, Any]:
    """`data` with its first breakable property made invalid (see the module docstring)."""
    root = schema.json
    resolve = _Filler(root, ("task",), 0).resolve
    properties = root.get("properties")
    if isinstance(properties, dict):
        for key, sub in properties.items():
            bad = _bad_value(resolve(sub), resolve)
            if bad is not _MISSING:
                return {**data, key: bad}
    required = root.get("required")
    if isinstance(required, list) and required:
        return {k: v for k, v in data.items() if k != required[0]}
    return data


class _Filler:
    """Walks a schema, drawing each choice from a counter-based generator seeded by a digest."""

    __slots__ = ("root", "state", "words")

    def __init__(self, root: dict[str, Any], words: Sequence[str], digest: int) -> None:
        self.root = root
        self.words = list(words)
        self.state = digest & _MASK64

    def bits(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        return mix(self.state)

    def resolve(self, raw: Any) -> dict[str, Any]:
        """`raw` with its `$ref` and `allOf` merged in (a schema of `true` is `{}`)."""
        if not isinstance(raw, dict):
            return {}
        node: dict[str, Any] = raw
        for _ in range(_MAX_DEPTH):  # a chain of references, bounded
            ref = node.get("$ref")
            if not isinstance(ref, str):
                break
            rest = {k: v for k, v in node.items() if k != "$ref"}
            node = {**self._pointer(ref), **rest}
        parts = node.get("allOf")
        if isinstance(parts, list):
            merged: dict[str, Any] = {}
            for part in parts:
                merged.update(self.resolve(part))
            merged.update((k, v) for k, v in node.items() if k != "allOf")
            node = merged
        return node

    def _pointer(self, ref: str) -> dict[str, Any]:
        target: Any = self.root
        if ref.startswith("#"):
            for part in ref[1:].split("/")[1:]:
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part) if isinstance(target, dict) else None
        return target if isinstance(target, dict) else {}

    def value(self, raw: Any, depth: int, name: str) -> Any:
        node = self.resolve(raw)
        if "const" in node:
            return node["const"]
        enum = node.get("enum")
        if isinstance(enum, list) and enum:
            return enum[self.bits() % len(enum)]
        for key in ("anyOf", "oneOf"):
            options = node.get(key)
            if isinstance(options, list) and options:
                picked = next((o for o in options if _kind(self.resolve(o)) != "null"), options[0])
                # The keywords beside the choices hold for it too (a `format`, say).
                beside = {k: v for k, v in node.items() if k not in _CHOICES}
                return self.value({**beside, **self.resolve(picked)}, depth, name)
        kind = _kind(node)
        if depth > _MAX_DEPTH:
            return None
        if kind == "object":
            return self._object(node, depth)
        if kind == "array":
            return self._array(node, depth, name)
        if kind in _NUMBER_KINDS:
            return self._number(node, kind == "integer")
        if kind == "boolean":
            return bool(self.bits() & 1)
        if kind == "null":
            return None
        return self._string(node)

    def _object(self, node: dict[str, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        properties = node.get("properties")
        if isinstance(properties, dict):
            for key, sub in properties.items():
                out[key] = self.value(sub, depth + 1, key)
        required = node.get("required")
        for key in required if isinstance(required, list) else ():
            if key not in out:
                out[key] = self._string({})
        return out

    def _array(self, node: dict[str, Any], depth: int, name: str) -> list[Any]:
        low = _whole(node.get("minItems"), 0)
        high = max(low, _whole(node.get("maxItems"), low + 3))
        count = low if depth >= _DEEP else min(max(low, 1 + self.bits() % 3), high)
        head = node.get("prefixItems")
        head = head if isinstance(head, list) else []
        items = node.get("items", {})
        unique = node.get("uniqueItems") is True
        out: list[Any] = []
        for i in range(count):
            sub = head[i] if i < len(head) else items
            item = self.value(sub, depth + 1, name)
            for _ in range(4):  # a few more draws for a distinct item
                if not unique or item not in out:
                    break
                item = self.value(sub, depth + 1, name)
            if unique and item in out:
                enum = self.resolve(sub).get("enum")
                if isinstance(enum, list):
                    item = next((e for e in enum if e not in out), item)
                if item in out and len(out) >= low:
                    break
            out.append(item)
        return out

    def _number(self, node: dict[str, Any], integer: bool) -> int | float:
        low, high = _bounds(node, integer)
        step = node.get("multipleOf")
        if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0:
            first, last = math.ceil(low / step), math.floor(high / step)
            value = first * step
            for _ in range(16):  # a multiple inside the bounds that divides exactly
                value = (first + self.bits() % max(1, last - first + 1)) * step
                if (value / step).is_integer() and _within(node, value):
                    break
            return int(value) if integer else value
        if integer:
            return int(low) + self.bits() % (int(high) - int(low) + 1) if high >= low else int(low)
        u = 0.05 + 0.9 * (self.bits() / 2**64)  # strictly inside: exclusive bounds hold too
        value = low + (high - low) * u
        rounded = round(value, 2)
        return rounded if low < rounded < high or low == high else value

    def _string(self, node: dict[str, Any]) -> str:
        make = _FORMATS.get(node.get("format", ""))
        if make is not None:
            text = make(self)
        else:
            words = self.words
            k = self.bits() % len(words)
            text = " ".join(words[k:] + words[:k])
        low = _whole(node.get("minLength"), 0)
        if len(text) < low:
            text = (text + " ") * (low // (len(text) + 1) + 1)
        high = node.get("maxLength")
        if isinstance(high, int) and len(text) > high:
            text = text[:high]
        return text[: max(low, len(text.rstrip()))]

    def word(self) -> str:
        return self.words[self.bits() % len(self.words)].lower()


def _date(f: _Filler) -> str:
    b = f.bits()
    return f"2026-{1 + b % 12:02d}-{1 + (b >> 8) % 28:02d}"


def _time(f: _Filler) -> str:
    b = f.bits()
    return f"{b % 24:02d}:{(b >> 8) % 60:02d}:00"


def _uuid(f: _Filler) -> str:
    h = f"{f.bits():016x}{f.bits():016x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


_FORMATS: dict[str, Callable[[_Filler], str]] = {
    "date": _date,
    "time": lambda f: _time(f) + "Z",
    "date-time": lambda f: f"{_date(f)}T{_time(f)}Z",
    "email": lambda f: f"{f.word()}@example.com",
    "uri": lambda f: f"https://example.com/{f.word()}",
    "url": lambda f: f"https://example.com/{f.word()}",
    "hostname": lambda f: f"{f.word()}.example.com",
    "ipv4": lambda f: f"192.0.2.{1 + f.bits() % 254}",
    "uuid": _uuid,
    "uuid4": _uuid,
    "duration": lambda f: f"PT{1 + f.bits() % 59}M",
}


def _kind(node: dict[str, Any]) -> str:
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if "properties" in node or "required" in node:
        return "object"
    if "items" in node or "prefixItems" in node:
        return "array"
    return "string"


def _kinds(node: dict[str, Any], resolve: Callable[[Any], dict[str, Any]]) -> set[str]:
    """Every JSON type `node` allows (`anyOf`/`oneOf` choices included); empty: any."""
    options = node.get("anyOf") or node.get("oneOf")
    if isinstance(options, list):
        kinds: set[str] = set()
        for option in options:
            sub = _kinds(resolve(option), resolve)
            if not sub:
                return set()
            kinds |= sub
        return kinds
    kind = node.get("type")
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    if isinstance(kind, str):
        return {kind}
    if "properties" in node:
        return {"object"}
    return set()


def _bad_value(node: dict[str, Any], resolve: Callable[[Any], dict[str, Any]]) -> Any:
    """A value `node` refuses, or `_MISSING` when it refuses none that is easy to make."""
    for key, past in (("maximum", 2), ("exclusiveMaximum", 1)):
        bound = node.get(key)
        if _is_number(bound):
            return bound + past
    for key, before in (("minimum", -2), ("exclusiveMinimum", -1)):
        bound = node.get(key)
        if _is_number(bound):
            return bound + before
    enum = node.get("enum")
    if isinstance(enum, list) and enum:
        bad = f"not {enum[0]}"
        return bad if bad not in enum else _MISSING
    kinds = _kinds(node, resolve)
    if not kinds:
        return _MISSING
    if "string" not in kinds:
        return "many"
    if not kinds & _NUMBER_KINDS:
        return 42
    if "array" not in kinds:
        return ["many"]
    return _MISSING


def _bounds(node: dict[str, Any], integer: bool) -> tuple[float, float]:
    low = high = None
    if _is_number(node.get("minimum")):
        low = node["minimum"]
    if _is_number(node.get("exclusiveMinimum")):
        bound = node["exclusiveMinimum"]
        low = (
            max(low, bound + 1 if integer else bound)
            if low is not None
            else (bound + 1 if integer else bound)
        )
    if _is_number(node.get("maximum")):
        high = node["maximum"]
    if _is_number(node.get("exclusiveMaximum")):
        bound = node["exclusiveMaximum"]
        high = (
            min(high, bound - 1 if integer else bound)
            if high is not None
            else (bound - 1 if integer else bound)
        )
    if low is None:
        low = 0 if high is None or high >= 0 else high - _SPAN
    if high is None:
        high = low + _SPAN
    if integer:
        low, high = math.ceil(low), math.floor(high)
    return low, high


def _within(node: dict[str, Any], value: float) -> bool:
    """Whether `value` keeps to the bounds of `node` (exclusive ones included)."""
    low, high = node.get("minimum"), node.get("maximum")
    above, below = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    return not (
        (_is_number(low) and value < low)
        or (_is_number(high) and value > high)
        or (_is_number(above) and value <= above)
        or (_is_number(below) and value >= below)
    )


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any, default: int) -> int:
    whole = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if whole else default
