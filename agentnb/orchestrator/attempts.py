"""The attempts stage: retry a call's attempts with backoff, each bounded by a timeout.

`Retrying` holds the policy (exponential backoff with full jitter, the server's `retry-after`
honoured up to `max_retry_wait_s`, only retryable errors) and knows nothing of the orchestrator:
it is given one attempt as a coroutine function. `bounded` runs one attempt under its timeout
and turns the timeout's expiry into a `BackendTimeoutError` (retryable), so that a timeout is
told apart from a cancellation.

Example:
    >>> import asyncio
    >>> retrying = Retrying(backoff_base_s=0.01, backoff_cap_s=0.01, max_retry_wait_s=1)
    >>> async def once():
    ...     return "answer"
    >>> asyncio.run(retrying.run(once, agent="writer", max_attempts=3))
    ('answer', 1)
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import AgentCallError, BackendError, BackendTimeoutError

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["Deadline", "Retrying", "bounded", "sleep_at_least", "timed_out"]

logger = logging.getLogger("agentnb")
T = TypeVar("T")


async def bounded(call: Callable[[], Awaitable[T]], timeout_s: float, attempt: int) -> T:
    """`await call()` within `timeout_s`; its expiry is a `BackendTimeoutError`."""
    try:
        async with asyncio.timeout(timeout_s) as scope:
            return await call()
    except TimeoutError:
        if not scope.expired():
            raise
        raise timed_out(attempt, timeout_s) from None


class Deadline:
    """Cancel the current task when `delay` seconds have passed, unless stopped first.

    What `asyncio.timeout` does for one fixed delay, without a context manager object, a bound
    method or a copied context per use: it bounds every attempt of every call, so its cost is
    paid 100,000 times in a large job. Use it as `start()`; `try:` the work; `except
    CancelledError:` ask `stop_cancelled()` whether the time was up (then it is a timeout) or
    the caller was cancelled; `finally: stop()`. `async with Deadline(s)` also works and
    raises `TimeoutError`.

    Example:
        >>> import asyncio
        >>> async def slow():
        ...     async with Deadline(0.01):
        ...         await asyncio.sleep(1)
        >>> asyncio.run(slow())
        Traceback (most recent call last):
        ...
        TimeoutError
    """

    __slots__ = ("_cancelling", "_delay", "_handle", "_task", "expired")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self.expired = False

    def start(self) -> None:
        """Start the clock for the current task."""
        task = self._task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task on the home loop
            raise RuntimeError("Deadline must be used inside a task")
        self._cancelling = task.cancelling()
        loop = task.get_loop()
        self._handle = loop.call_at(loop.time() + self._delay, _expire, self, context=_NO_CONTEXT)

    def stop(self) -> None:
        """Stop the clock (idempotent)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def stop_cancelled(self) -> bool:
        """After a `CancelledError`: True when it was this deadline's (the cancel is undone)."""
        self.stop()
        return (
            self.expired
            and self._task is not None
            and self._task.uncancel() <= self._cancelling  # ours, not also one from outside
        )

    async def __aenter__(self) -> Deadline:
        self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        cancelled = kind is not None and issubclass(kind, asyncio.CancelledError)
        if cancelled and self.stop_cancelled():
            raise TimeoutError from exc
        self.stop()


def _expire(deadline: Deadline) -> None:
    deadline.expired = True
    deadline._handle = None
    if deadline._task is not None:
        deadline._task.cancel()


_NO_CONTEXT = contextvars.Context()  # the timer's callback reads no context variable


async def sleep_at_least(delay: float) -> None:
    """Sleep `delay` seconds, never less: uvloop's timers fire up to a millisecond early (they
    round to whole milliseconds from a cached loop time), and a retry that comes before the
    server's `retry-after` is an undercut the server may punish."""
    end = time.monotonic() + delay
    await asyncio.sleep(delay)
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(left + 0.0005)


def timed_out(attempt: int, timeout_s: float) -> BackendTimeoutError:
    """The error of an attempt that ran past its timeout (retryable)."""
    return BackendTimeoutError(f"attempt {attempt} timed out after {timeout_s:g} s")


class Retrying:
    """When to try again and how long to wait; see the module docstring."""

    def __init__(
        self,
        *,
        backoff_base_s: float,
        backoff_cap_s: float,
        max_retry_wait_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_retry_wait_s = max_retry_wait_s
        self._rng = rng or random.Random()

    @classmethod
    def from_config(cls, config: Config) -> Retrying:
        """The policy of `config`'s `backoff_*` and `max_retry_wait_s` settings."""
        return cls(
            backoff_base_s=config.backoff_base_s,
            backoff_cap_s=config.backoff_cap_s,
            max_retry_wait_s=config.max_retry_wait_s,
        )

    def after_failure(
        self, agent: str, attempt: int, max_attempts: int, error: BackendError, final: bool
    ) -> float:
        """Seconds to wait before the next attempt after `error` (logged), or raise the call's
        final `AgentCallError` (see `give_up_if_final`)."""
        self.give_up_if_final(agent, attempt, max_attempts, error, final)
        delay = self.backoff(attempt, error)
        logger.info(
            "retrying agent %s after %s (attempt %d of %d, waiting %.2f s)",
            agent,
            type(error).__name__,
            attempt,
            max_attempts,
            delay,
            extra={
                "agent": agent,
                "attempt": attempt,
                "error_type": type(error).__name__,
                "delay_s": delay,
            },
        )
        return delay

    async def run(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        agent: str,
        max_attempts: int,
        final: Callable[[], bool] | None = None,
    ) -> tuple[T, int]:
        """`(result, attempts made)` of the first attempt that succeeds.

        Raises the call's `AgentCallError` when an error is not retryable, the attempts are
        used up, the server asks for a longer wait than allowed, or `final()` says a retry
        would repeat what was already shown (a stream that sent text).
        """
        n = 0
        while True:
            n += 1
            try:
                return await attempt(), n
            except BackendError as error:
                delay = self.after_failure(
                    agent, n, max_attempts, error, final is not None and final()
                )
            await sleep_at_least(delay)

    def give_up_if_final(
        self, agent: str, attempt: int, max_attempts: int, error: BackendError, final: bool
    ) -> None:
        """Raise the call's final `AgentCallError` unless `error` is worth another attempt."""
        retry_after = getattr(error, "retry_after", None)
        why = ""
        if retry_after is not None and retry_after > self.max_retry_wait_s:
            # A notebook should not hang for an hour on a server's hint: say so and stop.
            why = (
                f" (the server asked to wait {retry_after:g} s, more than "
                f"max_retry_wait_s={self.max_retry_wait_s:g})"
            )
        if final or why or not error.retryable or attempt >= max_attempts:
            raise AgentCallError(
                f"agent {agent!r} failed after {attempt} attempt"
                f"{'s' if attempt != 1 else ''}: {type(error).__name__}: {error}{why}",
                agent=agent,
                attempts=attempt,
                last_error=error,
            ) from error

    def backoff(self, attempt: int, error: BackendError) -> float:
        """Seconds to wait before the next attempt: retry-after if given, else full jitter."""
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            # Honour the server's hint; a little extra spreads a burst of retries apart.
            return float(retry_after) + self._rng.uniform(0, 0.1 * self.backoff_base_s)
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))
        return self._rng.uniform(ceiling / 2, ceiling)
