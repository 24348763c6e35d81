"""The prepare stage: agent + task + `CallOptions` -> a `PreparedCall` (request and cache key).

Done once per call (and once per workflow step), before anything runs, so a bad agent name, task
or option is an error with nothing started. Options resolve in layers: the call's (a workflow
step's already merged with its `defaults:`) > the agent file's > `Config`. The call's `system`
text is appended to the agent's system prompt; its `prefix`, `schema` and `sample` go into the
request as they are. The cache key is computed on first use and kept.

Example:
    >>> from agentnb.agents import AgentRegistry
    >>> from agentnb.config import Config
    >>> prep = Preparer(Config(), AgentRegistry(include_default_dirs=False), lambda: "simulated")
    >>> p = prep.prepare("writer", "A haiku", CallOptions(max_tokens=64))
    >>> p.request.max_tokens, len(p.key)
    (64, 64)
"""

from __future__ import annotations

from collections.abc import Callable

from ..agents import AgentRegistry, AgentSpec
from ..backends import BackendRequest
from ..cache.keys import make_key
from ..config import Config
from ..errors import AgentnbError, TaskTooLongError
from ..options import EMPTY, CallOptions, check_text
from .calls import NO_TAGS, Tags

__all__ = ["PreparedCall", "Preparer"]


class PreparedCall:
    """A checked call, ready to run: its agent, request, policy and (lazily) its cache key."""

    __slots__ = (
        "_identity",
        "_key",
        "max_attempts",
        "options",
        "request",
        "spec",
        "tags",
        "timeout_s",
        "use_cache",
    )

    def __init__(
        self,
        spec: AgentSpec,
        request: BackendRequest,
        options: CallOptions,
        *,
        use_cache: bool,
        timeout_s: float,
        max_attempts: int,
        tags: Tags,
        identity: Callable[[], str],
    ) -> None:
        self.spec = spec
        self.request = request
        self.options = options
        self.use_cache = use_cache
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.tags = tags
        self._identity = identity
        self._key: str | None = None

    @property
    def key(self) -> str:
        """The cache key: SHA-256 of everything that changes the answer (`cache.keys`)."""
        key = self._key
        if key is None:
            r = self.request
            schema = r.schema
            key = self._key = make_key(
                backend=self._identity(),
                agent=self.spec.name,
                prompt_hash=self.spec.prompt_hash,
                model=r.model,
                system=r.system,
                messages=r.messages,
                max_tokens=r.max_tokens,
                temperature=r.temperature,
                stop_sequences=r.stop_sequences,
                prefix=r.prefix,
                schema=None if schema is None else schema.digest,
                sample=r.sample,
            )
        return key

    #: What a workflow step records to tell whether an earlier answer still holds.
    fingerprint = key

    def with_request(self, request: BackendRequest) -> PreparedCall:
        """The same call sending `request` instead (a follow-up turn, e.g. a structured answer's
        repair): same agent, options, policy and tags; its own key."""
        return PreparedCall(
            self.spec,
            request,
            self.options,
            use_cache=self.use_cache,
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
            tags=self.tags,
            identity=self._identity,
        )

    def __repr__(self) -> str:
        return f"<PreparedCall {self.spec.name} {self.request.model} {self.options!r}>"


class Preparer:
    """Turns calls into `PreparedCall`s for one configuration, agent registry and backend.

    `identity()` is the backend's cache identity (asked only when a key is first needed, so
    preparing never builds a backend).
    """

    def __init__(self, config: Config, agents: AgentRegistry, identity: Callable[[], str]) -> None:
        self.config = config
        self.agents = agents
        self.identity = identity

    def prepare(
        self,
        agent: str,
        task: str,
        options: CallOptions = EMPTY,
        tags: Tags = NO_TAGS,
    ) -> PreparedCall:
        """Check and resolve one call; raises before anything runs."""
        return self.build(self.check(agent, task), task, options, tags)

    def check(self, agent: str, task: str) -> AgentSpec:
        """Check an agent name and a task (options are checked where they are made)."""
        spec = self.agents.get(agent)  # checks the name first (no path tricks), then finds it
        _check_task(spec.name, task, self.config.max_task_chars)
        return spec

    def build(
        self, spec: AgentSpec, task: str, options: CallOptions = EMPTY, tags: Tags = NO_TAGS
    ) -> PreparedCall:
        """Resolve a checked call into its request (see `check`)."""
        cfg = self.config
        o = options
        temperature = o.temperature if o.temperature is not None else spec.temperature
        system = spec.system_prompt
        if o.system:
            system = f"{system}\n\n{o.system}" if system else o.system
        request = BackendRequest(
            model=cfg.resolve_model(o.model or spec.model),
            task=task,
            system=system,
            agent=spec.name,
            max_tokens=o.max_tokens or spec.max_tokens or cfg.max_tokens,
            temperature=temperature if temperature is not None else cfg.temperature,
            prompt_caching=cfg.prompt_caching and spec.cache is not False,
            stop_sequences=o.stop_sequences or (),
            prefix=o.prefix or "",
            schema=o.schema,
            sample=o.sample or 0,
        )
        return PreparedCall(
            spec,
            request,
            o,
            use_cache=o.use_cache is not False,
            timeout_s=o.timeout_s or cfg.timeout_s,
            max_attempts=o.max_attempts or cfg.max_attempts,
            tags=tags,
            identity=self.identity,
        )


def _check_task(agent: str, task: object, limit: int) -> None:
    if type(task) is not str:
        raise AgentnbError(f"agent {agent!r}: task must be a string, got {type(task).__name__}")
    if len(task) > limit:
        raise TaskTooLongError(
            f"agent {agent!r}: task is {len(task):,} characters, more than max_task_chars={limit:,}"
        )
    if not task or task.isspace():
        raise AgentnbError(f"agent {agent!r}: the task is empty")
    try:
        check_text(task, "the task")
    except ValueError as exc:
        raise AgentnbError(f"agent {agent!r}: {exc}") from None
