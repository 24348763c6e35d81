"""What happens to a simulated Message Batch: when its requests end, and how each one ends.

Everything is decided when the batch is submitted and kept in its `BatchPlan` (the header
`sim_batches` writes beside the requests); results are never stored but made again from the
requests by a `ResultComposer` whenever they are read, so one plan and its requests give the
same results in any process. The model, in scaled time (`duration_s`: the simulator's batch
latency for up to 1,000 requests, proportionally longer above):
- the requests end in file order over `min(n, 100)` ticks, so `request_counts` move from
  `processing` to `succeeded`/`errored` as the batch runs (the API moves them only at the end;
  seeing them move is more useful to a progress display, and harmless);
- each request's fate is drawn from the plan's `draw_key` (seed and the batch's ordinal in its
  store) and its custom id: a share `error_rate` ends `errored` (mostly the retryable
  `overloaded_error` and `api_error`, a fifth `invalid_request_error`: `BATCH_ERRORS`), a share
  `expire_rate` stays `processing` until the batch ends and then `expired`, the others
  `succeeded` with the answer `create()` gives the same request (its text and usage; a system
  prompt marked for caching is written by the first request that succeeds with it and read by
  the later ones);
- a cancel lets the tick in flight end (`canceling` until then); every request not ended by
  it ends `canceled`, and the batch `ended`.
A request line is `[custom_id, *BackendRequest]` as JSON (`request_line`; a structured request's
schema as its JSON Schema; lines written before a field was added lack it and mean its default).

Example:
    >>> tally = Tally(total=4, key=draw_key(0, 0), error_rate=0.0, expire_rate=0.0)
    >>> for custom_id in "abcd":
    ...     tally.add(custom_id)
    >>> plan = BatchPlan("msgbatch_sim_x", 0.0, 10.0, 4, 0, tally.key, 0.0, 0.0, *tally.counts)
    >>> plan.info(5.0).counts
    BatchCounts(processing=2, succeeded=2, errored=0, canceled=0, expired=0)
"""

from __future__ import annotations

import math
import zlib
from typing import Any, NamedTuple

import orjson

from ..errors import error_for_status
from ..schema import AnswerSchema
from .base import BackendRequest, BackendResponse, Message, Usage
from .batch import BatchCounts, BatchInfo, BatchResult, BatchStatus
from .sim_answer import mix, plan_answer

__all__ = [
    "BATCH_ERRORS",
    "BatchPlan",
    "ResultComposer",
    "Tally",
    "draw_key",
    "request_line",
]

#: What an errored request of a simulated batch says: (status, the API's error type, message),
#: and out of 20 errored requests how many say it.
BATCH_ERRORS = (
    (529, "overloaded_error", "Overloaded", 9),
    (500, "api_error", "Internal server error", 7),
    (400, "invalid_request_error", "Invalid request (simulated)", 4),
)
EXPIRY_S = 86_400.0  # a batch expires 24 hours after it was created
TICKS = 100  # the most steps in which a batch's requests end
_SUCCEEDED, _ERRORED, _EXPIRED = 0, 1, 2
_ERROR_PICK = tuple(e for e in BATCH_ERRORS for _ in range(e[3]))


class BatchPlan(NamedTuple):
    """Everything about a batch decided when it was submitted (its header file).

    `succeeded[j]`/`errored[j]`: how many requests had so ended by tick j of `ticks`; request i
    has ended by tick j when i < total * j // ticks.
    """

    id: str
    created_at: float
    duration_s: float
    total: int
    seed: int
    draw_key: int
    error_rate: float
    expire_rate: float
    ticks: int
    succeeded: tuple[int, ...]
    errored: tuple[int, ...]
    cancel_initiated_at: float | None = None

    def tick(self, when: float) -> int:
        """How many ticks had passed at `when`."""
        if self.duration_s <= 0:
            return self.ticks
        return max(0, min(self.ticks, int(self.ticks * (when - self.created_at) / self.duration_s)))

    def tick_time(self, tick: int) -> float:
        return self.created_at + self.duration_s * tick / self.ticks

    @property
    def cancel_tick(self) -> int | None:
        """The tick at which a canceled batch ended: the one in flight when it was canceled."""
        when = self.cancel_initiated_at
        return None if when is None else min(self.ticks, self.tick(when) + 1)

    def info(self, now: float) -> BatchInfo:
        """The batch as the API describes it at `now`."""
        status: BatchStatus = "ended"
        end = self.cancel_tick
        if end is None:  # the requests not done at the end expire
            end, rest = self.ticks, "expired"
        else:
            rest = "canceled"
        ends = self.tick_time(end)
        ended_at: float | None = ends
        if now < ends:
            status = "in_progress" if self.cancel_initiated_at is None else "canceling"
            ended_at, end, rest = None, self.tick(now), "processing"
        done, failed = self.succeeded[end], self.errored[end]
        counts = BatchCounts(succeeded=done, errored=failed)._replace(
            **{rest: self.total - done - failed}
        )
        return BatchInfo(
            self.id,
            status,
            counts,
            self.created_at,
            ended_at,
            self.created_at + EXPIRY_S,
            self.cancel_initiated_at,
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self._asdict())

    @classmethod
    def from_json(cls, data: bytes) -> BatchPlan:
        raw: dict[str, Any] = orjson.loads(data)
        raw["succeeded"], raw["errored"] = tuple(raw["succeeded"]), tuple(raw["errored"])
        return cls(**raw)


def draw_key(seed: int, ordinal: int) -> int:
    """The key a batch's fates are drawn from: its simulator's seed and its ordinal in its store
    (so that a follow-up batch retrying errored requests under the same custom ids draws
    afresh, as a real retry would, while a fresh store replays the same batches the same way)."""
    return mix(seed * 0x9E3779B97F4A7C15 + ordinal)


def _draw(key: int, custom_id: str, error_rate: float, expire_rate: float) -> tuple[int, int]:
    """A request's fate (`_SUCCEEDED`, `_ERRORED`, `_EXPIRED`) and the bits that pick its error."""
    bits = mix(key ^ zlib.crc32(custom_id.encode()))
    u = (bits >> 11) * 2.0**-53
    if u < error_rate:
        return _ERRORED, bits
    return (_EXPIRED if u < error_rate + expire_rate else _SUCCEEDED), bits


class Tally:
    """The counts per tick of a batch's plan, kept as its requests are stored in order."""

    def __init__(self, total: int, key: int, error_rate: float, expire_rate: float) -> None:
        self.total, self.key = total, key
        self.error_rate, self.expire_rate = error_rate, expire_rate
        self.ticks = min(total, TICKS)
        self.succeeded, self.errored = [0] * (self.ticks + 1), [0] * (self.ticks + 1)
        self._added = self._done = self._failed = 0
        self._tick, self._cut = 1, total // max(self.ticks, 1)

    def add(self, custom_id: str) -> None:
        """Count the next request."""
        fate = _draw(self.key, custom_id, self.error_rate, self.expire_rate)[0]
        self._done += fate == _SUCCEEDED
        self._failed += fate == _ERRORED
        self._added += 1
        if self._added == self._cut:
            self.succeeded[self._tick], self.errored[self._tick] = self._done, self._failed
            self._tick += 1
            self._cut = self.total * self._tick // self.ticks

    @property
    def counts(self) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
        """`ticks`, `succeeded` and `errored` of the plan."""
        return self.ticks, tuple(self.succeeded), tuple(self.errored)


def request_line(custom_id: str, request: BackendRequest) -> bytes:
    """One stored request: its custom id and fields as a JSON array, and a newline.

    Raises `TypeError` (`orjson.JSONEncodeError`) for text JSON cannot carry (lone surrogates).
    """
    return orjson.dumps(
        (custom_id, *request), option=orjson.OPT_APPEND_NEWLINE, default=_schema_json
    )


def _schema_json(value: object) -> object:
    if isinstance(value, AnswerSchema):
        return value.json
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _request(fields: list[Any]) -> BackendRequest:
    """A stored request line (after its custom id) as the `BackendRequest` it was."""
    model, task, system, agent, max_tokens, temperature, history, caching, stops, *rest = fields
    prefix, schema, sample = (*rest, "", None, 0)[:3]
    turns = tuple(Message(m["role"], m["content"]) for m in history) if history else ()
    return BackendRequest(
        model,
        task,
        system,
        agent,
        max_tokens,
        temperature,
        turns,
        caching,
        tuple(stops),
        prefix,
        None if schema is None else AnswerSchema.of(schema),
        sample,
    )


class ResultComposer:
    """Turns a batch's stored request lines, read in order, into its results."""

    def __init__(self, plan: BatchPlan) -> None:
        self.plan = plan
        self.index = 0
        cancel = plan.cancel_tick
        self.cut = math.inf if cancel is None else plan.total * cancel // plan.ticks
        self.cached: set[tuple[str, ...]] = set()  # (model, system, prefix) written so far

    def __call__(self, line: bytes) -> BatchResult:
        plan = self.plan
        custom_id, *fields = orjson.loads(line)
        fate, bits = _draw(plan.draw_key, custom_id, plan.error_rate, plan.expire_rate)
        index, self.index = self.index, self.index + 1
        if plan.cancel_initiated_at is not None and (fate == _EXPIRED or index >= self.cut):
            return BatchResult(custom_id, "canceled")
        if fate == _EXPIRED:
            return BatchResult(custom_id, "expired")
        if fate == _ERRORED:
            status, _, message, _ = _ERROR_PICK[bits % len(_ERROR_PICK)]
            return BatchResult(custom_id, "errored", error=error_for_status(status, message))
        return BatchResult(custom_id, "succeeded", self._answer(_request(fields)))

    def _answer(self, request: BackendRequest) -> BackendResponse:
        plan = plan_answer(self.plan.seed, request)
        if request.prompt_caching and (request.system or request.prefix):
            key = (request.model, request.system, request.prefix)
            cached = key in self.cached
            self.cached.add(key)
            head = plan.system_tokens + plan.prefix_tokens
            usage = Usage(
                plan.message_tokens, plan.output_tokens, *((head, 0) if cached else (0, head))
            )
        else:
            usage = Usage(plan.input_tokens, plan.output_tokens)
        return BackendResponse(
            plan.text,
            request.model,
            plan.stop_reason,
            usage,
            "simulated",
            None,
            plan.stop_sequence,
            None,
            plan.data,
        )
