"""The offline simulator: deterministic answers, token counts, latency, faults and rate limits.

`SimulatedBackend` answers every request without a network: the text is Markdown derived from a
hash of (seed, model, agent, system prompt, history, task), so the same request always gets the
same answer whatever the concurrency or call order, and every answer says it is simulated. It
models latency (`asyncio.sleep`), prompt-cache writes/reads, a requests-per-minute limit, and
faults, either at random (`fault_rate`, seeded) or scripted with `inject()` for tests.

The same simulation is served over HTTP as a Messages-API transport by `agentnb.backends.sim_http`,
which drives it through `begin()` / `SimulatedCall`, so both paths share one behaviour.

Example:
    >>> import asyncio
    >>> sim = SimulatedBackend(latency_s=0)
    >>> req = BackendRequest(model="claude-sonnet-5-5", task="Sort a list", agent="python-expert")
    >>> asyncio.run(sim.create(req)).text.startswith("> *Simulated answer")
    True
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import math
import re
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..errors import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    BadRequestError,
    OverloadedError,
    RateLimitError,
    RetryableError,
    ServerError,
)
from .base import Backend, BackendRequest, BackendResponse, Usage

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["FAULT_KINDS", "SIMULATED_NOTE", "CallRecord", "SimulatedBackend", "SimulatedCall"]

#: Every fault the simulator can produce (`fault_kinds` and `inject()` take these names).
FAULT_KINDS = (
    "rate_limit",
    "server_error",
    "overloaded",
    "timeout",
    "connection",
    "bad_request",
    "authentication",
)
#: The first line of every simulated answer.
SIMULATED_NOTE = "> *Simulated answer (agentnb offline simulator, no API call was made).*"
_DEFAULT_FAULTS = ("rate_limit", "server_error", "overloaded", "timeout", "connection")
PROMPT_CACHE_TTL_S = 300.0  # the API's default ephemeral cache lifetime
_FAIL_FRACTION = 0.25  # faults surface after this share of the call's latency
_RPM_WINDOW_S = 60.0
_MAX_CHUNKS = 8
_FAULT_ERRORS: dict[str, tuple[type[BackendError], int | None, str]] = {
    "server_error": (ServerError, 500, "simulated internal server error (500)"),
    "overloaded": (OverloadedError, 529, "simulated overload (529)"),
    "connection": (BackendConnectionError, None, "simulated connection reset"),
    "bad_request": (BadRequestError, 400, "simulated invalid request (400)"),
    "authentication": (AuthenticationError, 401, "simulated invalid API key (401)"),
}


@dataclass(slots=True)
class CallRecord:
    """One simulated call: who asked, when it ran (monotonic clock), and how it ended."""

    agent: str
    model: str
    task: str
    started: float
    ended: float | None = None
    ok: bool | None = None
    error: str | None = None  # the fault kind, or "cancelled"
    streamed: bool = False
    request_id: str = ""


@dataclass(slots=True)
class _Injected:
    kind: str
    remaining: int
    retry_after: float | None
    agent: str | None


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything about an answer that depends only on the request (cached per request)."""

    text: str
    stop_reason: str
    digest: int
    jitter_u: float
    input_tokens: int
    system_tokens: int
    message_tokens: int
    output_tokens: int


@dataclass(slots=True)
class SimulatedCall:
    """A call that passed the fault and rate-limit checks; `wait()` or `deltas()` plays it out.

    `chunks` are the stream deltas (groups of words; joined they give `response.text`).
    """

    _backend: SimulatedBackend
    record: CallRecord
    response: BackendResponse
    delay: float

    @property
    def chunks(self) -> tuple[str, ...]:
        # Made on demand: only streamed calls need them.
        return _split(self.response.text)

    async def wait(self) -> BackendResponse:
        """Sleep until the call's latency has passed since it started, then return the response.

        Measured from the start (not from now), so the simulator's own work composing the answer
        is not added to the latency it models: a server composes its answer in parallel.
        """
        remaining = self.record.started + self.delay - self._backend._clock()
        if remaining > 0:
            try:
                await asyncio.sleep(remaining)
            except BaseException:
                self._backend._finish(self.record, "cancelled")
                raise
        self._backend._finish(self.record, None)
        return self.response

    async def deltas(self) -> AsyncGenerator[str, None]:
        """Yield the text in chunks, the latency spread evenly across them."""
        chunks = self.chunks
        step = self.delay / len(chunks)
        error: str | None = "cancelled"
        try:
            for chunk in chunks:
                if step > 0:
                    await asyncio.sleep(step)
                yield chunk
            error = None
        finally:
            self._backend._finish(self.record, error)


class SimulatedBackend(Backend):
    """An offline stand-in for the Anthropic API; see the module docstring.

    Latency of a call: `latencies[agent]` if given, else `latency_fn(request)`, else
    `latency_s + latency_per_token_s * output_tokens`; then scaled by `1 ± jitter` (seeded per
    request). `clock` times the call log, the rpm window and the prompt cache; sleeping always
    uses `asyncio.sleep`.
    """

    kind: ClassVar[str] = "simulated"

    def __init__(
        self,
        *,
        latency_s: float = 0.2,
        latency_per_token_s: float = 0.0,
        jitter: float = 0.1,
        seed: int = 0,
        fault_rate: float = 0.0,
        fault_kinds: Iterable[str] = _DEFAULT_FAULTS,
        rpm_limit: int | None = None,
        latencies: Mapping[str, float] | None = None,
        latency_fn: Callable[[BackendRequest], float] | None = None,
        retry_after_s: float = 1.0,
        hang_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        kinds = tuple(fault_kinds)
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; choose from {list(FAULT_KINDS)}")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be between 0 and 1, got {fault_rate!r}")
        if rpm_limit is not None and rpm_limit < 1:
            raise ValueError(f"rpm_limit must be at least 1, got {rpm_limit!r}")
        self.latency_s = latency_s
        self.latency_per_token_s = latency_per_token_s
        self.jitter = jitter
        self.seed = seed
        self.fault_rate = fault_rate
        self.fault_kinds = kinds
        self.rpm_limit = rpm_limit
        self.latencies = dict(latencies) if latencies else None
        self.latency_fn = latency_fn
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self._clock = clock
        self._script: list[_Injected] = []
        self._window: collections.deque[float] = collections.deque()
        self._prompt_cache: dict[tuple[str, str], float] = {}
        self.calls: list[CallRecord] = []
        self.call_count = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    @classmethod
    def from_config(cls, cfg: Config) -> SimulatedBackend:
        """A simulator set up from the `sim_*` settings."""
        return cls(
            latency_s=cfg.sim_latency_s,
            latency_per_token_s=cfg.sim_latency_per_token_s,
            jitter=cfg.sim_jitter,
            seed=cfg.sim_seed,
            fault_rate=cfg.sim_fault_rate,
            fault_kinds=cfg.sim_fault_kinds,
            rpm_limit=cfg.sim_rpm_limit,
        )

    def __repr__(self) -> str:
        return (
            f"SimulatedBackend(latency_s={self.latency_s}, jitter={self.jitter}, seed={self.seed}, "
            f"fault_rate={self.fault_rate}, rpm_limit={self.rpm_limit})"
        )

    # -- the interface ---------------------------------------------------------------------
    async def create(self, request: BackendRequest) -> BackendResponse:
        call = await self.begin(request)
        return await call.wait()

    async def stream(self, request: BackendRequest) -> AsyncGenerator[str | BackendResponse, None]:
        call = await self.begin(request, streamed=True)
        async with contextlib.aclosing(call.deltas()) as deltas:
            async for delta in deltas:
                yield delta
        yield call.response

    # -- test hooks and the call log -------------------------------------------------------
    def inject(
        self,
        kind: str,
        times: int = 1,
        *,
        retry_after: float | None = None,
        agent: str | None = None,
    ) -> None:
        """Make the next `times` calls (only `agent`'s, if given) fail with fault `kind`.

        `retry_after` is the server's hint the error carries (kinds with a retryable HTTP
        status only: rate_limit, overloaded, server_error); a `rate_limit` without one carries
        `retry_after_s`.

        Example:
            >>> sim = SimulatedBackend(latency_s=0)
            >>> sim.inject("rate_limit", retry_after=2.0)
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {list(FAULT_KINDS)}")
        if times >= 1:
            self._script.append(_Injected(kind, times, retry_after, agent))

    def reset_log(self) -> None:
        """Forget the call log and counters (the rpm window and prompt cache stay)."""
        self.calls = []
        self.call_count = 0
        self.peak_in_flight = self.in_flight

    # -- one call ----------------------------------------------------------------------------
    async def begin(self, request: BackendRequest, *, streamed: bool = False) -> SimulatedCall:
        """Start a call: log it, apply the rpm limit and faults, and return it to be played out.

        Faults raise here (a `BackendError`) after a fraction of the latency; a `timeout`
        fault hangs for `hang_s` first.
        """
        self.call_count = n = self.call_count + 1
        now = self._clock()
        record = CallRecord(request.agent, request.model, request.task, now, streamed=streamed)
        record.request_id = request_id = f"req_sim_{n:08d}"
        self.calls.append(record)
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        try:
            plan = _plan(self.seed, request)
            delay = self._latency(request, plan)
            if self.rpm_limit is not None:
                self._check_rpm(now, request_id, record)
            if self._script or self.fault_rate:
                fault = self._pick_fault(request, plan, n)
                if fault is not None:
                    record.error = fault[0]
                    await self._fail(fault[0], fault[1], delay, request_id)
            usage = self._usage(request, plan, now)
        except BaseException:
            self._finish(record, record.error or "cancelled")
            raise
        response = BackendResponse(
            plan.text, request.model, plan.stop_reason, usage, self.kind, request_id
        )
        return SimulatedCall(self, record, response, delay)

    def _finish(self, record: CallRecord, error: str | None) -> None:
        if record.ended is not None:
            return
        record.ended = self._clock()
        record.ok = error is None
        record.error = error
        self.in_flight -= 1

    def _latency(self, request: BackendRequest, plan: _Plan) -> float:
        if self.latencies is not None and request.agent in self.latencies:
            base = self.latencies[request.agent]
        elif self.latency_fn is not None:
            base = self.latency_fn(request)
        else:
            base = self.latency_s + self.latency_per_token_s * plan.output_tokens
        if base <= 0:
            return 0.0
        return max(0.0, base * (1.0 + self.jitter * (2.0 * plan.jitter_u - 1.0)))

    def _check_rpm(self, now: float, request_id: str, record: CallRecord) -> None:
        window = self._window
        while window and now - window[0] >= _RPM_WINDOW_S:
            window.popleft()
        assert self.rpm_limit is not None
        if len(window) >= self.rpm_limit:
            wait = max(0.0, window[0] + _RPM_WINDOW_S - now)
            record.error = "rate_limit"
            raise RateLimitError(
                f"simulated rate limit: more than {self.rpm_limit} requests per minute",
                request_id=request_id,
                retry_after=wait,
            )
        window.append(now)

    def _pick_fault(
        self, request: BackendRequest, plan: _Plan, n: int
    ) -> tuple[str, float | None] | None:
        for i, entry in enumerate(self._script):
            if entry.agent is None or entry.agent == request.agent:
                entry.remaining -= 1
                if entry.remaining <= 0:
                    del self._script[i]
                return entry.kind, entry.retry_after
        if self.fault_rate and self.fault_kinds:
            x = _mix(plan.digest ^ (n * 0x9E3779B97F4A7C15))
            if (x & 0xFFFFFFFF) / 4294967296.0 < self.fault_rate:
                return self.fault_kinds[(x >> 32) % len(self.fault_kinds)], None
        return None

    async def _fail(
        self, kind: str, retry_after: float | None, delay: float, request_id: str
    ) -> None:
        if kind == "timeout":
            await asyncio.sleep(self.hang_s)
            raise BackendTimeoutError(
                f"simulated timeout: no answer within {self.hang_s:g}s", request_id=request_id
            )
        if delay > 0:
            await asyncio.sleep(delay * _FAIL_FRACTION)
        if kind == "rate_limit":
            wait = self.retry_after_s if retry_after is None else retry_after
            raise RateLimitError(
                f"simulated rate limit (429); retry after {wait:g}s",
                request_id=request_id,
                retry_after=wait,
            )
        cls, status, message = _FAULT_ERRORS[kind]
        if status is not None and issubclass(cls, RetryableError):  # a server's answer
            raise cls(message, status_code=status, request_id=request_id, retry_after=retry_after)
        raise cls(message, status_code=status, request_id=request_id)

    def _usage(self, request: BackendRequest, plan: _Plan, now: float) -> Usage:
        if not (request.prompt_caching and request.system):
            return Usage(plan.input_tokens, plan.output_tokens)
        # The first call with a (model, system) writes the cache; later ones within the TTL
        # read it. Marked when the call starts, so concurrent twins read what the first wrote.
        key = (request.model, request.system)
        last = self._prompt_cache.get(key)
        self._prompt_cache[key] = now
        if last is None or now - last > PROMPT_CACHE_TTL_S:
            return Usage(
                plan.message_tokens, plan.output_tokens, cache_write_tokens=plan.system_tokens
            )
        return Usage(plan.message_tokens, plan.output_tokens, cache_read_tokens=plan.system_tokens)


def _mix(z: int) -> int:
    """splitmix64's finalizer: spreads the bits of `z` over 64 bits."""
    z &= 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


# -- answer text ---------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{3,}")
_STOPWORDS = """
this that with from these those into your about please what which when where there their them
then than have been were will would could should does find write using make give some more most
also only just each such other after before over under very here they code list review merge
summary step steps function return none true false import class self print pass else elif while
lambda yield
"""
_STOP = frozenset(_STOPWORDS.split())
_CODE_HINTS = ("python", "code", "program", "develop", "engineer", "debug", "bug", "function")
_CODE = """
def check_{name}(value):
    \"\"\"Sketch from the simulator: replace with real code.\"\"\"
    if value is None:
        raise ValueError("{name} is required")
    return value
"""
_BULLETS = {
    "review": (
        "**{w}**: the intent is clear; document the edge cases.",
        "Check how `{w}` behaves with empty or very large input.",
        "The handling of **{w}** could be simpler and easier to test.",
        "Add a test that pins down the behaviour of `{w}`.",
        "Naming around **{w}** is consistent with the rest.",
        "Watch the error handling around `{w}`.",
    ),
    "writer": (
        "Open with **{w}** in one plain sentence.",
        "Give **{w}** a concrete example.",
        "Keep the part about **{w}** short; readers skim.",
        "Link **{w}** back to the main point.",
        "End the section on **{w}** with what to do next.",
    ),
    "general": (
        "Start from **{w}** and state the goal.",
        "**{w}**: list what is known and what is assumed.",
        "Compare two options for **{w}** before choosing.",
        "Measure the effect of **{w}** instead of guessing.",
        "Note the risks around **{w}**.",
    ),
}


@functools.lru_cache(maxsize=512)
def _plan(seed: int, request: BackendRequest) -> _Plan:
    h = hashlib.blake2b(digest_size=16, person=b"agentnb-sim")
    parts = (str(seed), request.model, request.agent, request.system)
    for part in (*parts, *(f"{m.role}:{m.content}" for m in request.history), request.task):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    digest = int.from_bytes(h.digest(), "big")
    text = _compose(request, digest)
    stop_reason = "end_turn"
    budget = request.max_tokens * 4
    if len(text) > budget:  # the note always stays: every answer must say it is simulated
        text = text[: max(budget, len(SIMULATED_NOTE))]
        stop_reason = "max_tokens"
    msg_chars = len(request.task) + sum(len(m.content) for m in request.history)
    return _Plan(
        text=text,
        stop_reason=stop_reason,
        digest=digest,
        jitter_u=((digest >> 64) & 0xFFFFFFFF) / 2**32,
        input_tokens=max(1, math.ceil((len(request.system) + msg_chars) / 4)),
        system_tokens=math.ceil(len(request.system) / 4),
        message_tokens=max(1, math.ceil(msg_chars / 4)),
        output_tokens=max(1, math.ceil(len(text) / 4)),
    )


@functools.lru_cache(maxsize=256)
def _flavor(agent: str, system_head: str) -> tuple[str, bool]:
    """The kind of answer an agent gives (review, writer, general) and whether it writes code."""
    probe = f"{agent} {system_head}".lower()
    flavor = "general"
    if any(k in probe for k in ("review", "critic", "audit")):
        flavor = "review"
    elif any(k in probe for k in ("writ", "summar", "edit", "docs")):
        flavor = "writer"
    return flavor, any(k in probe for k in _CODE_HINTS)


def _compose(request: BackendRequest, digest: int) -> str:
    # Every choice below comes from bits of the request's digest: deterministic, and cheaper than
    # seeding a random.Random per call (this runs once per simulated call).
    flavor, is_code = _flavor(request.agent, request.system[:400])
    words = _keywords(request.task) or ["the task"]
    topic = ", ".join(words[:3])
    heading = {
        "review": f"Review: {topic}",
        "writer": f"Draft: {topic}",
        "general": f"Proposed approach: {topic}" if is_code else f"Notes on {topic}",
    }[flavor]
    pool = list(_BULLETS[flavor])
    count, bits = 3 + digest % 3, digest // 3
    templates = []
    for _ in range(min(len(pool), count)):
        templates.append(pool.pop(bits % len(pool)))
        bits //= 8
    bullets = [t.format(w=words[i % len(words)]) for i, t in enumerate(templates)]
    lines = [SIMULATED_NOTE, "", f"## {heading}", "", *(f"- {b}" for b in bullets)]
    if is_code:
        name = re.sub(r"\W", "_", words[0]).lower().strip("_") or "value"
        lines += ["", "```python", _CODE.format(name=name).strip(), "```"]
    who = request.agent or "assistant"
    lines += [
        "",
        f"_{who} on {request.model} (simulated answer #{(digest >> 96) & 0xFFFFFF:06x})._",
    ]
    return "\n".join(lines)


def _keywords(task: str) -> list[str]:
    seen: dict[str, str] = {}
    for match in _WORD.finditer(task, 0, 4000):
        word = match.group()
        key = word.lower()
        if key not in _STOP and key not in seen:
            seen[key] = word
            if len(seen) == 8:
                break
    return list(seen.values())


def _split(text: str) -> tuple[str, ...]:
    words = re.findall(r"\s*\S+\s*", text) or [text]
    size = math.ceil(len(words) / min(_MAX_CHUNKS, len(words)))
    return tuple("".join(words[i : i + size]) for i in range(0, len(words), size))
