"""The engine of `map` and `grid`: rows of calls run through `execute_multiple`, into columns.

A data job is `total` rows, each one call (or a reason it cannot be one). `Job.make(start, stop)`
makes the calls of rows `[start, stop)` only when they are about to run, and the results go
straight into typed columns (`Columns`): floats and flags in `array`s, texts and errors in one
list each. So a job of 100,000 rows holds, besides its result columns, one chunk of calls and
results at a time, not a list of 100,000 results or dicts.

The chunks go one after the other through the orchestrator's `execute_multiple`, reporting to one
`Progress` for the whole job; a chunk is many times the concurrency (`chunk_rows`), so the
pause at its end, while its last calls finish, costs well under 1 % of the job's time. The
budget (`max_cost_usd`, else the setting) is the whole job's: each chunk gets what the chunks
before it left. With `batch=True` there is one chunk (Message Batches take up to 100,000
requests each, and a batch is waited for, not pipelined).
"""

from __future__ import annotations

import inspect
import math
from array import array
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import AgentnbError, OptionError
from .options import EMPTY, CallOptions
from .orchestrator import AgentOrchestrator, AsyncAgentOrchestrator
from .orchestrator.budget import check_budget
from .progress import Progress, job_progress

if TYPE_CHECKING:
    import pandas as pd

    from .metrics import PriceTable
    from .orchestrator.calls import CallLike
    from .orchestrator.core import ProgressArg
    from .result import AgentResult

__all__ = [
    "CHUNK_ROWS",
    "META_COLUMNS",
    "ON_ERROR",
    "Chunk",
    "Columns",
    "Job",
    "OrchestratorArg",
    "arun",
    "async_core",
    "run",
    "schema_fields",
]

#: The fewest rows a chunk has (it has at least 32 times the concurrency too).
CHUNK_ROWS = 2048
#: What `on_error=` takes: "keep" (a failed row says why in `error`) or "raise".
ON_ERROR = ("keep", "raise")
#: The columns every result has after the answer's (a schema's field may not be one of them).
META_COLUMNS = ("cached", "latency_ms", "cost_usd", "error")
OrchestratorArg = AgentOrchestrator | AsyncAgentOrchestrator | None


def async_core(orchestrator: OrchestratorArg) -> AsyncAgentOrchestrator:
    """The async core of `orchestrator` (default: the session's shared one)."""
    if orchestrator is None:
        from .orchestrator import default_orchestrator

        orchestrator = default_orchestrator()
    if isinstance(orchestrator, AgentOrchestrator):
        return orchestrator.aio
    if isinstance(orchestrator, AsyncAgentOrchestrator):
        return orchestrator
    raise AgentnbError(
        f"orchestrator must be an AgentOrchestrator or an AsyncAgentOrchestrator, "
        f"got {type(orchestrator).__name__}"
    )


@dataclass
class Chunk:
    """The calls of some rows: `rows[k]` is the row of `calls[k]`; `failed`: (row, why) of the
    rows that cannot be a call (a missing value, an empty task...)."""

    rows: list[int] = field(default_factory=list)
    calls: list[CallLike] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Job:
    """One data job: `total` rows, their calls made on demand by `make(start, stop)`."""

    label: str  # names the job in its progress and its errors: "map", "grid"
    total: int
    make: Callable[[int, int], Chunk]
    options: CallOptions = EMPTY  # common to every call, under each call's own
    on_error: str = "keep"
    max_concurrency: int | None = None
    progress: ProgressArg = None
    batch: bool = False
    max_cost_usd: float | None = None

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise OptionError(
                f"{self.label}: on_error must be 'keep' or 'raise', got {self.on_error!r}",
                option="on_error",
                source=self.label,
            )
        if self.batch and "batch" not in _EXECUTE_PARAMETERS:
            raise AgentnbError(
                f"{self.label}: batch=True needs Message Batches, which this orchestrator lacks"
            )
        object.__setattr__(self, "max_cost_usd", check_budget(self.max_cost_usd, source=self.label))


_EXECUTE_PARAMETERS = inspect.signature(AsyncAgentOrchestrator.execute_multiple).parameters


class Columns:
    """A job's results, one column each, filled row by row in any order.

    `fields`: the columns of a structured answer (`AgentResult.data`) instead of `text`;
    `tokens`: add `input_tokens` and `output_tokens`; `prices`: make `cost_usd` what the answer
    costs at list price even when the cache answered it (a grid compares models), else it is
    what was paid (0 for a cache hit). `spent` is what the job paid so far.
    """

    def __init__(
        self,
        total: int,
        *,
        fields: Sequence[str] | None = None,
        tokens: bool = False,
        prices: PriceTable | None = None,
    ) -> None:
        nans = array("d", [math.nan]) * total
        self.total = total
        self.fields = tuple(fields) if fields is not None else None
        self.values: dict[str, list[Any]] = {
            name: [None] * total for name in (self.fields if self.fields is not None else ("text",))
        }
        self.cached = bytearray(total)
        self.latency_ms = array("d", nans)
        self.cost_usd = array("d", nans)
        self.tokens = (array("d", nans), array("d", nans)) if tokens else None
        self.error: list[str | None] = [None] * total
        self.ok = bytearray(total)
        self.prices = prices
        self.spent = 0.0

    def put(self, row: int, outcome: AgentResult | BaseException) -> None:
        """Row `row` ended with `outcome`: its result, or the exception it failed with."""
        if isinstance(outcome, BaseException):
            self.fail(row, f"{type(outcome).__name__}: {outcome}")
            return
        if self.fields is None:
            self.values["text"][row] = outcome.text
        else:
            self._put_fields(row, outcome.data)
        self.ok[row] = 1
        self.cached[row] = outcome.cached
        self.latency_ms[row] = outcome.latency_ms
        paid = outcome.cost_usd
        if paid == paid:  # not NaN (a model without a price)
            self.spent += paid
        if outcome.cached and self.prices is not None:
            paid = self.prices.cost(outcome.model, outcome.usage)
        self.cost_usd[row] = paid
        if self.tokens is not None:
            self.tokens[0][row] = outcome.usage.input_tokens
            self.tokens[1][row] = outcome.usage.output_tokens

    def _put_fields(self, row: int, data: dict[str, Any] | None) -> None:
        for name, value in (data or {}).items():
            column = self.values.get(name)
            if column is None:  # a field the schema did not declare: a column all the same
                column = self.values[name] = [None] * self.total
            column[row] = value

    def fail(self, row: int, message: str) -> None:
        """Row `row` has no answer, because of `message`."""
        self.error[row] = message

    def answer(self, row: int) -> Any:
        """Row `row`'s answer: its text, or its fields as a dict (None if it failed)."""
        if not self.ok[row]:
            return None
        if self.fields is None:
            return self.values["text"][row]
        return {name: column[row] for name, column in self.values.items()}

    def frame(
        self, index: pd.Index | None = None, leading: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """The columns as a DataFrame: `leading` columns first, then the answer (`text` or the
        fields), `cached`, `latency_ms`, (tokens), `cost_usd`, `error`."""
        import numpy as np
        import pandas as pd

        data: dict[str, Any] = dict(leading or {})
        if self.fields is None:
            data["text"] = pd.array(self.values["text"], dtype="string")
        else:  # each field's type as pandas infers it from the values
            data.update(self.values)
        data["cached"] = np.frombuffer(self.cached, dtype=np.bool_)
        data["latency_ms"] = np.frombuffer(self.latency_ms, dtype=np.float64)
        if self.tokens is not None:
            data["input_tokens"] = pd.array(np.frombuffer(self.tokens[0]), dtype="Int64")
            data["output_tokens"] = pd.array(np.frombuffer(self.tokens[1]), dtype="Int64")
        data["cost_usd"] = np.frombuffer(self.cost_usd, dtype=np.float64)
        data["error"] = pd.array(self.error, dtype="string")
        return pd.DataFrame(data, index=index, copy=True)


def schema_fields(source: str, options: CallOptions) -> list[str] | None:
    """The columns of the answers of calls with `options`: the fields of its `schema`, in the
    schema's order (None: no schema, the answer is `text`)."""
    schema = getattr(options, "schema", None)  # an `AnswerSchema`, checked when it was set
    if schema is None:
        return None
    fields = list(schema.json.get("properties") or {})
    clash = [f for f in fields if f in META_COLUMNS]
    if clash:
        raise AgentnbError(
            f"{source}: the schema's field {clash[0]!r} would hide the result's own column of "
            f"that name ({', '.join(META_COLUMNS)}); rename the field"
        )
    return fields


# -- running ---------------------------------------------------------------------------------------
@dataclass
class _Step:
    rows: list[int]
    calls: list[CallLike]
    max_cost_usd: float | None


class _Driver:
    """What the blocking and the async runner share: the chunks, failures, budget, progress."""

    def __init__(self, aio: AsyncAgentOrchestrator, job: Job, columns: Columns) -> None:
        self.job = job
        self.columns = columns
        self.show = aio.progress_for(job.progress, job.total)
        workers = job.max_concurrency or aio.config.max_concurrency
        # One chunk for a batch: Message Batches are waited for, so chunks would not overlap.
        self.size = max(1, job.total) if job.batch else max(CHUNK_ROWS, 32 * workers)
        limit = job.max_cost_usd
        self.limit = aio.config.max_cost_usd if limit is None else limit

    def progress(self) -> AbstractContextManager[Progress]:
        return job_progress(self.show, self.job.total, label=self.job.label)

    def steps(self, shown: Progress) -> Iterator[_Step]:
        job, columns = self.job, self.columns
        for start in range(0, job.total, self.size):
            chunk = job.make(start, min(job.total, start + self.size))
            for row, why in chunk.failed:
                if job.on_error == "raise":
                    raise AgentnbError(f"{job.label}: {why}")
                columns.fail(row, why)
                shown.finished(failed=True, was_in_flight=False)
            if chunk.calls:
                left = None if self.limit is None else max(0.0, self.limit - columns.spent)
                yield _Step(chunk.rows, chunk.calls, left)

    def execute(
        self, aio: AsyncAgentOrchestrator, step: _Step, shown: Progress
    ) -> Coroutine[Any, Any, list[AgentResult | BaseException]]:
        job = self.job
        return aio.execute_multiple(
            step.calls,
            job.options,
            max_concurrency=job.max_concurrency,
            return_exceptions=job.on_error == "keep",
            progress=shown if self.show is not False else False,
            max_cost_usd=step.max_cost_usd,
            batch=job.batch,
        )

    def take(self, step: _Step, results: list[AgentResult | BaseException]) -> None:
        put = self.columns.put
        for row, outcome in zip(step.rows, results, strict=True):
            put(row, outcome)


def run(orchestrator: OrchestratorArg, job: Job, columns: Columns) -> None:
    """Run `job` to the end, blocking, its results into `columns` (each chunk on the home
    loop, as `AgentOrchestrator.execute_multiple` runs it: an interrupt cancels the chunk)."""
    aio = async_core(orchestrator)
    driver = _Driver(aio, job, columns)
    with driver.progress() as shown:
        for step in driver.steps(shown):
            driver.take(step, aio.home.run_sync(driver.execute(aio, step, shown)))


async def arun(orchestrator: OrchestratorArg, job: Job, columns: Columns) -> None:
    """Run `job` to the end, awaited, its results into `columns`."""
    aio = async_core(orchestrator)
    driver = _Driver(aio, job, columns)
    with driver.progress() as shown:
        for step in driver.steps(shown):
            driver.take(step, await driver.execute(aio, step, shown))
