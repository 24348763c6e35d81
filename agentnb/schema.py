"""`AnswerSchema`: the shape of a structured answer, made once where the `schema` option is built.

A call with `schema=` gets its answer as fields (`AgentResult.data`) instead of prose. The schema
may be a JSON-Schema dict, a pydantic model class or a dataclass (any type pydantic's
`TypeAdapter` knows); it is turned once into a JSON Schema of an object (what the API takes as a
tool's `input_schema`), checked, and spelled canonically, whose SHA-256 (`digest`) is part of
the cache key. It is sent as one tool, `TOOL_NAME`, that the model is made to use; the tool's
input is the answer. `problem(data)` says what is wrong with an answer, naming the path of the
first error, or None: with `jsonschema` for a dict, with pydantic for a type (so the model's own
validators run too). An answer's text is its JSON (`answer_text`).

Example:
    >>> s = AnswerSchema.of({"type": "object", "required": ["score"],
    ...                      "properties": {"score": {"type": "integer", "maximum": 5}}})
    >>> s.problem({"score": 7})
    'answer.score: 7 is greater than the maximum of 5'
    >>> s.problem({"score": 3}) is None
    True
    >>> AnswerSchema.of({"type": "string"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: a JSON Schema of an object ({"type": "object", ...}), a pydantic model or ...
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import orjson

__all__ = ["TOOL_DESCRIPTION", "TOOL_NAME", "AnswerSchema", "answer_text"]

#: The name of the one tool a structured call sends, and that the model must use.
TOOL_NAME = "answer"
#: What that tool is for, as the model reads it.
TOOL_DESCRIPTION = "Give your whole answer as this tool's input, following its input schema."

_EXPECTED = 'a JSON Schema of an object ({"type": "object", ...}), a pydantic model or a dataclass'
_MESSAGE_LIMIT = 300  # a validation message quotes the answer: keep it bounded
_KNOWN_MAX = 256  # schemas remembered by their canonical spelling (checked once each)
_known: dict[bytes, AnswerSchema] = {}

Problem = Callable[[Any], "str | None"]


def answer_text(data: Mapping[str, Any]) -> str:
    """The text of a structured answer: its JSON (what `AgentResult.text` shows).

    Example:
        >>> answer_text({"name": "Zoë", "score": 3})
        '{"name": "Zoë", "score": 3}'
    """
    return json.dumps(data, ensure_ascii=False)


class AnswerSchema:
    """A checked JSON Schema of an object, with its canonical digest and its validator.

    `json` is the schema as sent (the caller's key order kept: it is the order of the
    answer's fields), `digest` the SHA-256 of its canonical JSON (sorted keys), `chars` that
    JSON's length (what a prompt counts of it), `source` the type it was made from, if any.
    Equal schemas compare and hash equal, whatever their key order (and a dict equal to one
    made before is given that one, so it is checked once). Make one with `AnswerSchema.of(value)`.
    """

    __slots__ = ("_problem", "chars", "digest", "json", "source")

    def __init__(self, schema: dict[str, Any], canonical: bytes, source: type | None) -> None:
        self.json = schema
        self.digest = hashlib.sha256(canonical).hexdigest()
        self.chars = len(canonical)
        self.source = source
        self._problem: Problem | None = None

    @classmethod
    def of(cls, value: object) -> AnswerSchema:
        """The schema `value` stands for: an `AnswerSchema`, a JSON-Schema dict, a pydantic model
        class or a dataclass. Raises ValueError saying what was expected (the option's check)."""
        if isinstance(value, AnswerSchema):
            return value
        if isinstance(value, type):
            return _of_type(value)
        if not isinstance(value, Mapping):
            raise ValueError(_EXPECTED)
        schema, canonical = _spelled(value)
        known = _known.get(canonical)
        if known is None:
            _check(schema)
            if len(_known) >= _KNOWN_MAX:
                _known.clear()
            known = _known[canonical] = cls(schema, canonical, None)
        return known

    @property
    def title(self) -> str:
        """The schema's title (a pydantic model's name), or "answer"."""
        title = self.json.get("title")
        return title if isinstance(title, str) and title else TOOL_NAME

    def problem(self, data: object) -> str | None:
        """What is wrong with answer `data` (`answer.<path>: <message>`), or None if it is valid.

        Example:
            >>> s = AnswerSchema.of({"type": "object", "properties": {"tags": {
            ...     "type": "array", "items": {"enum": ["a", "b"]}}}})
            >>> s.problem({"tags": ["a", "c"]})
            "answer.tags[1]: 'c' is not one of ['a', 'b']"
        """
        if not isinstance(data, dict):
            return "answer: not a JSON object"
        check = self._problem
        if check is None:
            check = self._problem = (
                _type_problem(self.source) if self.source else _json_problem(self)
            )
        return check(data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnswerSchema) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        fields = self.json.get("properties")
        count = len(fields) if isinstance(fields, dict) else 0
        return f"<AnswerSchema {self.title!r}: {count} fields, {self.digest[:12]}>"


def _spelled(value: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """A private copy of the schema (the caller's order) and its canonical JSON."""
    try:
        _no_nan(value)
        schema = orjson.loads(orjson.dumps(value))
        canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a JSON Schema that JSON can spell ({exc})") from None
    return schema, canonical


def _check(schema: dict[str, Any]) -> None:
    if schema.get("type") != "object":
        raise ValueError(_EXPECTED)
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise ValueError(
            f"a valid JSON Schema ({_path(exc.absolute_path, 'schema')}: {_bounded(exc.message)})"
        ) from None


def _of_type(tp: type) -> AnswerSchema:
    # Not cached by type: a notebook redefines its classes, and the schema must follow them.
    try:
        from pydantic import PydanticUserError, TypeAdapter
    except ImportError:  # pragma: no cover - pydantic comes with the anthropic SDK
        raise ValueError(f"{_EXPECTED} (pydantic is not installed)") from None
    try:
        made = TypeAdapter(tp).json_schema()
    except (PydanticUserError, TypeError, ValueError) as exc:
        raise ValueError(f"{_EXPECTED} ({type(exc).__name__}: {_bounded(str(exc))})") from None
    schema, canonical = _spelled(_inlined(made))
    if schema.get("type") != "object":
        raise ValueError(_EXPECTED)
    return AnswerSchema(schema, canonical, tp)


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A recursive model's schema is a bare `$ref` into its `$defs`; the API wants the object
    itself at the top (its `$defs` kept beside it for the inner references)."""
    ref = schema.get("$ref")
    defs = schema.get("$defs")
    if "type" in schema or not isinstance(ref, str) or not isinstance(defs, dict):
        return schema
    target = defs.get(ref.removeprefix("#/$defs/"))
    if not ref.startswith("#/$defs/") or not isinstance(target, dict):
        return schema
    return {**target, "$defs": defs}


def _json_problem(schema: AnswerSchema) -> Problem:
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for

    validator = validator_for(schema.json)(schema.json)

    def problem(data: Any) -> str | None:
        error = best_match(validator.iter_errors(data))
        if error is None:
            return None
        return f"{_path(error.absolute_path)}: {_bounded(error.message)}"

    return problem


def _type_problem(tp: type) -> Problem:
    from pydantic import TypeAdapter, ValidationError

    adapter: TypeAdapter[Any] = TypeAdapter(tp)

    def problem(data: Any) -> str | None:
        try:
            adapter.validate_python(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            got = first.get("input")
            seen = f" (got {got!r})" if isinstance(got, (str, int, float, bool)) else ""
            return _bounded(f"{_path(first['loc'])}: {first['msg']}{seen}")
        return None

    return problem


def _path(parts: Any, root: str = TOOL_NAME) -> str:
    """`answer.items[2].name` from a validation error's path."""
    return root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _bounded(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _no_nan(obj: Any) -> None:
    if type(obj) is float:
        if not math.isfinite(obj):
            raise ValueError(f"{obj!r} has no JSON spelling")
    elif isinstance(obj, Mapping):
        for v in obj.values():
            _no_nan(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _no_nan(v)
