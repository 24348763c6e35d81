"""The validation stage: a structured answer is checked against its schema, repaired once, or
refused.

A call with `schema=` runs this stage between the cache and the attempts: it runs inside the
cache's computation, so an answer that fails it raises there and is never stored. The answer (the
input of the schema's tool, `BackendResponse.data`) is validated (`AnswerSchema.problem`); one
that does not follow the schema gets one repair turn, sent through the same attempts stage:
the conversation so far (the task, the invalid answer) and a user turn saying what was wrong
and asking for the answer again with the tool. If that answer is still invalid the call fails
with `SchemaError`, naming the path of the first error. A repaired answer reports the usage of
both turns (the call paid for both); its attempts count both as well.

Example:
    >>> from agentnb.backends import BackendRequest, BackendResponse
    >>> from agentnb.schema import AnswerSchema
    >>> schema = AnswerSchema.of({"type": "object", "required": ["n"],
    ...                           "properties": {"n": {"type": "integer"}}})
    >>> request = BackendRequest(model="m", task="Count", schema=schema)
    >>> problem(schema, BackendResponse('{"n": "x"}', "m", "tool_use", data={"n": "x"}))
    "answer.n: 'x' is not of type 'integer'"
    >>> repair_request(request, BackendResponse("{}", "m", "tool_use", data={}), "oops").history
    (Message(role='user', content='Count'), Message(role='assistant', content='{}'))
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..backends import BackendRequest, BackendResponse, Message, Usage
from ..errors import SchemaError
from ..schema import TOOL_NAME, AnswerSchema
from .prepare import PreparedCall

__all__ = ["REPAIR", "problem", "repair_request", "validated"]

#: The user turn of a repair: what was wrong, and the request to answer again with the tool.
REPAIR = (
    "Your answer does not follow the input schema of the `{tool}` tool: {problem}. "
    "Answer again with the `{tool}` tool, following its input schema exactly."
)


async def validated(
    p: PreparedCall, compute: Callable[[PreparedCall], Awaitable[BackendResponse]]
) -> BackendResponse:
    """The answer of structured call `p` (`compute(p)`: the attempts stage), valid for its
    schema; one repair turn (`compute` of the follow-up call) if it was not, else `SchemaError`."""
    schema = p.request.schema
    assert schema is not None  # only structured calls come here
    first = await compute(p)
    found = problem(schema, first)
    if found is None:
        return first
    second = await compute(p.with_request(repair_request(p.request, first, found)))
    usage = _sum(first.usage, second.usage)
    found = problem(schema, second)
    if found is not None:
        raise SchemaError(
            f"agent {p.spec.name!r}: the answer does not follow the schema, even after a repair "
            f"turn: {found}",
            agent=p.spec.name,
            problem=found,
        )
    return second._replace(usage=usage)


def problem(schema: AnswerSchema, response: BackendResponse) -> str | None:
    """What is wrong with `response` as an answer following `schema`, or None."""
    if response.data is not None:
        return schema.problem(response.data)
    if response.stop_reason == "max_tokens":
        return f"{TOOL_NAME}: cut off at max_tokens before it was complete"
    return f"{TOOL_NAME}: not given with the `{TOOL_NAME}` tool (the model answered in prose)"


def repair_request(request: BackendRequest, answer: BackendResponse, found: str) -> BackendRequest:
    """The follow-up turn of `request` after `answer`, which has `found` wrong: the conversation
    so far, then what was wrong (its `prefix`, which opens the first turn, stays)."""
    history = (
        *request.history,
        Message("user", request.task),
        Message("assistant", answer.text or "(no answer)"),
    )
    return request._replace(history=history, task=REPAIR.format(tool=TOOL_NAME, problem=found))


def _sum(a: Usage, b: Usage) -> Usage:
    return Usage(
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.cache_read_tokens + b.cache_read_tokens,
        a.cache_write_tokens + b.cache_write_tokens,
    )
