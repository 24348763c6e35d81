"""The exception tree: every error agentnb raises on purpose derives from `AgentnbError`.

Backend errors are translated where they enter (in `agentnb.backends`), so callers never need
to import `anthropic` to catch them. The magics and the CLI turn an `AgentnbError` into one line;
anything else keeps its traceback, because it is a bug.

```
AgentnbError
 ├── ConfigError                  bad agentnb.yaml / environment / argument (names key and source)
 ├── OptionError                  a bad call option (max_tokens=0, nan): names it and its source
 ├── AgentError
 │    ├── InvalidAgentNameError   empty, "/", "\\", "..", control characters
 │    ├── AgentNotFoundError      lists close matches and the directories searched
 │    └── AgentFileError          a file that cannot be understood (skipped with a warning)
 ├── TaskTooLongError             task longer than Config.max_task_chars
 ├── WorkflowError
 │    └── WorkflowValidationError names the step, the field and the YAML line
 ├── CacheError                   cache directory unusable, Redis misconfigured
 ├── AgentCallError               a call failed for good: agent, attempts made, last cause
 ├── SchemaError                  a structured answer still invalid after its repair turn: the path
 ├── BudgetExceededError          a call not started: it could take the run past its budget
 └── BackendError                 raised by backends; `retryable` says whether to try again
      ├── RetryableError             `retry_after`: the server's hint in seconds, when it sent one
      │    ├── RateLimitError        429 (a rate limit: wait and try again)
      │    ├── OverloadedError       529
      │    ├── ServerError           500-599 (and 408/409, which the API also asks to retry)
      │    ├── BackendTimeoutError   the attempt ran past its timeout
      │    └── BackendConnectionError connection refused/reset
      └── (not retryable)
           ├── SpendLimitError       429 whose body says the spend limit is reached (no retry)
           ├── BadRequestError       400 (and 413/422)
           ├── AuthenticationError   401
           ├── PermissionDeniedError 403
           ├── NotFoundError         404
           └── BatchRequestError     a request of a Message Batch that expired or was canceled
```
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .quota import RateLimits

__all__ = [
    "AgentCallError",
    "AgentError",
    "AgentFileError",
    "AgentNotFoundError",
    "AgentnbError",
    "AuthenticationError",
    "BackendConnectionError",
    "BackendError",
    "BackendTimeoutError",
    "BadRequestError",
    "BatchRequestError",
    "BudgetExceededError",
    "CacheError",
    "ConfigError",
    "InvalidAgentNameError",
    "NotFoundError",
    "OptionError",
    "OverloadedError",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryableError",
    "SchemaError",
    "ServerError",
    "SpendLimitError",
    "TaskTooLongError",
    "WorkflowError",
    "WorkflowValidationError",
    "error_for_status",
    "is_spend_limit",
]

# How a spend-limit 429 (the organisation's monthly cap) tells itself apart from a rate limit:
# by the message of its error body, never by a missing retry-after header.
_SPEND_LIMIT = re.compile(r"usage limit|spend limit|credit balance", re.IGNORECASE)


class AgentnbError(Exception):
    """Root of every error agentnb raises on purpose; its message is meant for a person."""


class ConfigError(AgentnbError):
    """A configuration value is unknown, of the wrong type, or out of range."""


class OptionError(AgentnbError):
    """A call option is unknown, of the wrong type or out of range; raised before any call.

    `option` is the option's name, `source` where it was given (`execute_agent`, `%agent`, a
    workflow step...).
    """

    def __init__(self, message: str, *, option: str, source: str) -> None:
        super().__init__(message)
        self.option = option
        self.source = source


class AgentError(AgentnbError):
    """Something is wrong with an agent name, file or lookup."""


class InvalidAgentNameError(AgentError):
    """An agent name that could escape the search path or is not printable."""


class AgentNotFoundError(AgentError):
    """No agent has that name; the message lists close matches and where it looked."""

    def __init__(self, message: str, *, name: str, suggestions: list[str] | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.suggestions = list(suggestions or [])


class AgentFileError(AgentError):
    """An agent file that cannot be understood."""


class TaskTooLongError(AgentnbError):
    """A task longer than `Config.max_task_chars`."""


class WorkflowError(AgentnbError):
    """A workflow failed to load or run."""


class WorkflowValidationError(WorkflowError):
    """A workflow that is not valid; the message names the step, the field and the line."""

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.step = step
        self.field = field
        self.line = line


class CacheError(AgentnbError):
    """The response cache cannot be used as configured."""


class AgentCallError(AgentnbError):
    """A call that failed for good, after `attempts` tries; `__cause__` is the last error."""

    def __init__(
        self, message: str, *, agent: str, attempts: int, last_error: BaseException
    ) -> None:
        super().__init__(message)
        self.agent = agent
        self.attempts = attempts
        self.last_error = last_error

    @property
    def retryable(self) -> bool:
        """Whether the last cause was of a kind that is worth retrying later."""
        return isinstance(self.last_error, RetryableError)


class SchemaError(AgentnbError):
    """A structured answer (`schema=`) that did not follow its schema, even after the one repair
    turn; it was not cached. `path` is where the first error is (`answer.score`), `problem` the
    whole finding (`answer.score: 7 is greater than the maximum of 5`).
    """

    def __init__(self, message: str, *, agent: str, problem: str) -> None:
        super().__init__(message)
        self.agent = agent
        self.problem = problem
        self.path = problem.partition(": ")[0]


class BudgetExceededError(AgentnbError):
    """A call was not started: its worst-case cost could take the run past its budget.

    `budget_usd` is the cap, `spent_usd` what the run (or session) had spent or reserved.
    """

    def __init__(self, message: str, *, budget_usd: float, spent_usd: float) -> None:
        super().__init__(message)
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd


class BackendError(AgentnbError):
    """An error from a model backend, translated into agentnb's terms.

    `limits` is what the response's rate-limit headers said (a `RateLimits`), when it had them.
    """

    retryable: bool = False
    limits: RateLimits | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.request_id = request_id


class RetryableError(BackendError):
    """A transient failure: the same request may succeed if tried again.

    `retry_after` is the server's hint in seconds (a `retry-after` header on a 429, 529 or
    503, ...), or None; the orchestrator waits at least that long before the next attempt.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, request_id=request_id)
        self.retry_after = retry_after


class RateLimitError(RetryableError):
    """429: too many requests."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = 429,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, status_code=status_code, request_id=request_id, retry_after=retry_after
        )


class OverloadedError(RetryableError):
    """529: the API is overloaded."""


class ServerError(RetryableError):
    """5xx, or 408/409 which the API also marks as retryable."""


class BackendTimeoutError(RetryableError):
    """The attempt did not finish within its timeout."""


class BackendConnectionError(RetryableError):
    """The connection could not be made or was reset."""


class BadRequestError(BackendError):
    """400 (and 413/422): the request itself is wrong; retrying cannot help."""


class SpendLimitError(BackendError):
    """429 whose body says the organisation's spend limit is reached: retrying cannot help until
    the limit is raised or the month ends, so it is never retried."""


class AuthenticationError(BackendError):
    """401: the API key is missing or wrong."""


class PermissionDeniedError(BackendError):
    """403: the key may not use this resource."""


class NotFoundError(BackendError):
    """404: e.g. an unknown model id."""


class BatchRequestError(BackendError):
    """A request of a Message Batch ended without an answer or an API error: `kind` is
    "expired" (not processed within the batch's 24 hours) or "canceled" (its batch was
    cancelled first). It names its batch (`batch_id`) and its `custom_id`."""

    def __init__(self, message: str, *, kind: str, batch_id: str, custom_id: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.batch_id = batch_id
        self.custom_id = custom_id


def error_for_status(
    status_code: int,
    message: str,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> BackendError:
    """Map an HTTP status code to the matching `BackendError` subclass.

    `retry_after` is kept on every retryable error (429, 529, 5xx, 408/409) and dropped on the
    others, which are not to be retried at all. A 429 whose `message` says the spend limit is
    reached is a `SpendLimitError`.

    Example:
        >>> type(error_for_status(529, "busy")).__name__
        'OverloadedError'
        >>> type(error_for_status(429, "You have reached your API usage limits")).__name__
        'SpendLimitError'
    """
    retryable: type[RetryableError] | None = None
    if status_code == 429 and is_spend_limit(message):
        return SpendLimitError(message, status_code=429, request_id=request_id)
    if status_code == 429:
        retryable = RateLimitError
    elif status_code == 529:
        retryable = OverloadedError
    elif status_code in (408, 409) or 500 <= status_code < 600:
        retryable = ServerError
    if retryable is not None:
        return retryable(
            message, status_code=status_code, request_id=request_id, retry_after=retry_after
        )
    kinds: dict[int, type[BackendError]] = {
        401: AuthenticationError,
        403: PermissionDeniedError,
        404: NotFoundError,
    }
    return kinds.get(status_code, BadRequestError)(
        message, status_code=status_code, request_id=request_id
    )


def is_spend_limit(message: str) -> bool:
    """True when a 429's error message says the spend limit (not a rate limit) was reached."""
    return _SPEND_LIMIT.search(message) is not None
