"""The content blocks `AnthropicBackend` adds to a Messages-API request and reads from its answer.

A request's shared `prefix` becomes the first text block of its first user turn, marked with
`cache_control` when prompt caching is on (`open_with`); a structured request (`schema`) sends one
tool, `agentnb.schema.TOOL_NAME`, with the schema as its `input_schema`, and a `tool_choice` that
forces it (`tool_params`); the input of that tool's `tool_use` block is the answer (`tool_input`).

Example:
    >>> turn = {"role": "user", "content": "Paris"}
    >>> open_with(turn, "Summarise: ", caching=True)
    >>> turn["content"][0]
    {'type': 'text', 'text': 'Summarise: ', 'cache_control': {'type': 'ephemeral'}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..schema import TOOL_DESCRIPTION, TOOL_NAME, AnswerSchema

if TYPE_CHECKING:
    from anthropic.types import Message as SDKMessage
    from anthropic.types import TextBlockParam, ToolChoiceToolParam, ToolParam

__all__ = ["open_with", "tool_input", "tool_params"]


def open_with(turn: dict[str, Any], prefix: str, caching: bool) -> None:
    """Make `prefix` the first text block of user `turn` (marked for caching when `caching`)."""
    block: TextBlockParam = {"type": "text", "text": prefix}
    if caching:
        block["cache_control"] = {"type": "ephemeral"}
    turn["content"] = [block, {"type": "text", "text": turn["content"]}]


def tool_params(schema: AnswerSchema) -> dict[str, Any]:
    """The `tools` and `tool_choice` parameters that make the model answer following `schema`."""
    tool: ToolParam = {
        "name": TOOL_NAME,
        "description": TOOL_DESCRIPTION,
        "input_schema": schema.json,
    }
    choice: ToolChoiceToolParam = {"type": "tool", "name": TOOL_NAME}
    return {"tools": [tool], "tool_choice": choice}


def tool_input(message: SDKMessage) -> dict[str, Any] | None:
    """The input of the answer tool's `tool_use` block in `message`, if it has one."""
    for block in message.content:
        if block.type == "tool_use" and block.name == TOOL_NAME and isinstance(block.input, dict):
            return dict(block.input)
    return None
