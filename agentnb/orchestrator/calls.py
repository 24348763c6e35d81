"""`AgentCall` (one call of a batch) and `Tags` (where a call belongs, for the metrics)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Unpack

from ..errors import AgentnbError, OptionError
from ..options import EMPTY, CallOptions, OptionArgs

__all__ = ["NO_TAGS", "AgentCall", "CallLike", "Tags", "options_of"]


def options_of(
    options: CallOptions | None, overrides: Mapping[str, Any], source: str
) -> CallOptions:
    """`options` with `overrides` (keyword arguments) on top, checked; errors name `source`."""
    if options is not None and not isinstance(options, CallOptions):
        raise OptionError(
            f"{source}: options must be a CallOptions, got {type(options).__name__}",
            option="options",
            source=source,
        )
    base = options if options is not None else EMPTY
    if not overrides:
        return base
    return base.merged(CallOptions.build(overrides, source=source))


class AgentCall:
    """One call for `execute_multiple`: an agent, a task and its `CallOptions`.

    Tuples `(agent, task)` and dicts `{"agent": ..., "task": ..., <option>: ...}` are accepted
    too.

    Example:
        >>> AgentCall("writer", "A haiku", max_tokens=64).options.max_tokens
        64
    """

    __slots__ = ("agent", "options", "task")

    def __init__(
        self,
        agent: str,
        task: str,
        options: CallOptions | None = None,
        **overrides: Unpack[OptionArgs],
    ) -> None:
        self.agent = agent
        self.task = task
        self.options = options_of(options, overrides, "AgentCall")

    def with_options(self, **overrides: Unpack[OptionArgs]) -> AgentCall:
        """A copy with some options changed."""
        return AgentCall(self.agent, self.task, self.options, **overrides)

    def __getattr__(self, name: str) -> Any:
        # `call.model`, `call.use_cache`, ...: the options read through the call.
        if name in _OPTION_NAMES:
            return getattr(self.options, name)
        raise AttributeError(name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AgentCall) and (self.agent, self.task, self.options) == (
            other.agent,
            other.task,
            other.options,
        )

    def __hash__(self) -> int:
        return hash((self.agent, self.task, self.options))

    def __repr__(self) -> str:
        opts = f", {self.options!r}" if self.options else ""
        return f"AgentCall({self.agent!r}, {self.task[:40]!r}{opts})"

    @classmethod
    def coerce(cls, call: CallLike, index: int) -> AgentCall:
        """An `AgentCall` from any accepted spelling; errors name the call's position."""
        if isinstance(call, AgentCall):
            return call
        where = f"call #{index}"
        if isinstance(call, tuple) and len(call) == 2:
            return cls(call[0], call[1])
        if isinstance(call, Mapping):
            if "agent" not in call or "task" not in call:
                raise AgentnbError(
                    f"{where}: expected keys agent, task (and options such as model, max_tokens); "
                    f"got {sorted(map(str, call))}"
                )
            rest = {k: v for k, v in call.items() if k not in ("agent", "task")}
            return cls(call["agent"], call["task"], CallOptions.build(rest, source=where))
        raise AgentnbError(
            f"{where}: expected AgentCall, (agent, task) or a dict, got {type(call).__name__}"
        )


CallLike = AgentCall | tuple[str, str] | Mapping[str, Any]
_OPTION_NAMES = frozenset(CallOptions.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Tags:
    """Where a call belongs, for the metrics."""

    run_id: str | None = None
    workflow: str | None = None
    step: str | None = None


NO_TAGS = Tags()
