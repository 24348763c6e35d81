"""Estimates: what a job would cost and take, worked out before anything runs.

`estimate_calls` (what `execute_multiple` takes) and `estimate_workflow` (a workflow) prepare
every call as a run would, then work out per call:

- **input tokens**: `Backend.count_tokens` where the backend can count (each distinct request
  asked once, at most `max_concurrency` at a time), else the local estimate
  (`tokens.estimate_input_tokens`, about four characters a token). They count the whole prompt,
  system prompt included (the metrics split it into `input_tokens`, `cache_read_tokens` and
  `cache_write_tokens`).
- **output tokens**, a range: `output_low` is the mean answer length of that agent on that model
  in the orchestrator's metrics (at most max_tokens), or 1 before there is any; `output_high` is
  max_tokens, the most a call may write.
- **cost**, a range, from the price table: output at the output price; input at the input price,
  except, when the request marks its system prompt for prompt caching, the system prompt at the
  cache-write price (high) or the cache-read price (low, when that prompt was seen: sent by the
  same agent on the same model in the last five minutes, or earlier in this job). A call the
  response cache would answer (asked with `caching.peek`, which records no hit) is free and
  marked `cached`, with the tokens of the answer it holds; so is a repeat of an earlier call of
  the same job (the cache's single-flight answers it).
- **time**: each call's mean latency in the metrics (that agent on that model, else that model),
  else the simulator's configured latency, else a default (1 s plus 50 output tokens a second);
  the calls are laid out as the pool runs them on `max_concurrency` workers (a workflow: as the
  scheduler starts steps once their dependencies are done, so the DAG's critical path shows),
  and the quota (`rate_limits`) bounds it from below: past the first burst, no kind of token
  goes faster than its rate.

A workflow step that takes an upstream step's output is estimated with that output's length
(`input_tokens` with the upstream's typical length, its mean or else its max_tokens;
`cost_low_usd` with its low, `cost_high_usd` with its high). When the upstream step would be
cached, its text is known, so the step is estimated exactly and may be cached too.

Nothing runs and nothing is recorded: no model call, no metrics row, no cache hit.

Example:
    >>> est = orch.estimate([("writer", f"Idea {i}") for i in range(20)])   # doctest: +SKIP
    >>> est.cost_low_usd, est.cost_high_usd, est.wall_s                      # doctest: +SKIP
    >>> est.table.head()                                                     # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import heapq
import html
import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..backends import BackendRequest, BackendResponse
from ..errors import BackendError
from ..options import CallOptions
from ..pricing import BATCH_FACTOR
from ..quota import Limits, model_class
from ..workflow.template import PLACEHOLDER, render
from .budget import usd
from .caching import cache_for, peek
from .fanout import Batch
from .prepare import PreparedCall
from .tokens import estimate_input_tokens, system_tokens

if TYPE_CHECKING:
    import pandas as pd

    from ..workflow import Workflow
    from .core import AsyncAgentOrchestrator

__all__ = ["COLUMNS", "Estimate", "estimate_calls", "estimate_input_tokens", "estimate_workflow"]

#: Columns of `Estimate.table` (a workflow's table has `step` first).
COLUMNS = (
    "agent",
    "model",
    "input_tokens",
    "output_low",
    "output_high",
    "cost_low_usd",
    "cost_high_usd",
    "cached",
    "time_s",
)
PROMPT_CACHE_TTL_S = 300.0  # how long the API keeps a cached prompt after its last use
DEFAULT_START_S = 1.0  # with no history and no simulator: seconds before the first token
DEFAULT_TOKENS_PER_S = 50.0  # ... and output tokens a second after it
_NO_CACHE = CallOptions(use_cache=False)


@dataclass(frozen=True, eq=False)
class Estimate:
    """What a job would take: `table` has one row per call (`COLUMNS`), totals are attributes.

    `wall_s` is the predicted time of the whole job at `max_concurrency`; `time_basis` says what
    the calls' latencies came from, `tokens_basis` who counted the input tokens; `quota_s` is the
    least time the quota (`rate_limits`) allows (0 without one). For a workflow, `workflow` is its
    name and `critical_path` the chain of steps whose predicted times add up to the most.
    Nothing was run to make it.
    """

    table: pd.DataFrame
    wall_s: float
    max_concurrency: int
    time_basis: str
    tokens_basis: str
    quota_s: float = 0.0
    workflow: str | None = None
    critical_path: tuple[str, ...] = ()
    critical_path_s: float = 0.0
    batch: bool = False  # costs at the Message Batches price

    # -- totals -----------------------------------------------------------------------------
    @property
    def calls(self) -> int:
        return len(self.table)

    @property
    def cached_calls(self) -> int:
        """Calls the response cache (or an identical earlier call of the job) would answer."""
        return int(self.table["cached"].sum())

    @property
    def input_tokens(self) -> int:
        return int(self.table["input_tokens"].sum())

    @property
    def output_low(self) -> int:
        return int(self.table["output_low"].sum())

    @property
    def output_high(self) -> int:
        return int(self.table["output_high"].sum())

    @property
    def cost_low_usd(self) -> float:
        """The least the job should cost (calls of a model with no price left out)."""
        return float(self.table["cost_low_usd"].sum())

    @property
    def cost_high_usd(self) -> float:
        """The most the job can cost (calls of a model with no price left out)."""
        return float(self.table["cost_high_usd"].sum())

    @property
    def unknown_cost_calls(self) -> int:
        """Calls of a model with no price (their cost is NaN in the table)."""
        return int(self.table["cost_high_usd"].isna().sum())

    def to_dict(self) -> dict[str, Any]:
        """The totals, the predicted time and every row, as plain JSON-ready values."""
        return {
            "workflow": self.workflow,
            "batch": self.batch,
            "calls": self.calls,
            "cached_calls": self.cached_calls,
            "input_tokens": self.input_tokens,
            "output_low": self.output_low,
            "output_high": self.output_high,
            "cost_low_usd": self.cost_low_usd,
            "cost_high_usd": self.cost_high_usd,
            "unknown_cost_calls": self.unknown_cost_calls,
            "wall_s": self.wall_s,
            "max_concurrency": self.max_concurrency,
            "quota_s": self.quota_s,
            "critical_path": list(self.critical_path),
            "critical_path_s": self.critical_path_s,
            "time_basis": self.time_basis,
            "tokens_basis": self.tokens_basis,
            "rows": [
                {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                for row in self.table.astype(object).to_dict(orient="records")
            ],
        }

    # -- display ----------------------------------------------------------------------------
    def _headline(self) -> str:
        what = (
            f"workflow {self.workflow!r}, {self.calls} step"
            if self.workflow
            else (f"{self.calls} call")
        )
        plural = "s" if self.calls != 1 else ""
        cached = f" ({self.cached_calls} cached)" if self.cached_calls else ""
        unknown = f", {self.unknown_cost_calls} of unknown price" if self.unknown_cost_calls else ""
        path = f"; critical path {' -> '.join(self.critical_path)}" if self.critical_path else ""
        price = " at the batch price" if self.batch else ""
        return (
            f"estimate of {what}{plural}{cached}: cost "
            f"{_span(usd(self.cost_low_usd), usd(self.cost_high_usd))}{price}{unknown}; input "
            f"{self.input_tokens:,} tokens, output {_span(self.output_low, self.output_high)}; "
            f"about {_duration(self.wall_s)} at concurrency {self.max_concurrency}{path} "
            f"(time from {self.time_basis}; tokens {self.tokens_basis}); nothing was run"
        )

    def _groups(self) -> list[tuple[str, str, int, int, int, int, int, float, float]]:
        out = []
        for (agent, model), g in self.table.groupby(["agent", "model"], sort=False):
            out.append(
                (
                    str(agent),
                    str(model),
                    len(g),
                    int(g["cached"].sum()),
                    int(g["input_tokens"].sum()),
                    int(g["output_low"].sum()),
                    int(g["output_high"].sum()),
                    float(g["cost_low_usd"].sum()),
                    float(g["cost_high_usd"].sum()),
                )
            )
        return out

    def __repr__(self) -> str:
        lines = [self._headline()]
        groups = self._groups()
        wa = max((len(g[0]) for g in groups), default=5)
        wm = max((len(g[1]) for g in groups), default=5)
        lines.append(
            f"  {'agent':<{wa}}  {'model':<{wm}}  calls  cached  {'input':>9}  {'output':>17}  cost"
        )
        for agent, model, n, cached, tin, lo, hi, clo, chi in groups:
            lines.append(
                f"  {agent:<{wa}}  {model:<{wm}}  {n:>5}  {cached:>6}  {tin:>9,}  "
                f"{_span(lo, hi):>17}  {_span(usd(clo), usd(chi))}"
            )
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        esc = html.escape
        right = "style='text-align:right'"
        rows = "".join(
            f"<tr><td>{esc(agent)}</td><td>{esc(model)}</td><td {right}>{n}</td>"
            f"<td {right}>{cached}</td><td {right}>{tin:,}</td>"
            f"<td {right}>{_span(lo, hi)}</td><td {right}>{_span(usd(clo), usd(chi))}</td></tr>"
            for agent, model, n, cached, tin, lo, hi, clo, chi in self._groups()
        )
        head = "".join(
            f"<th>{h}</th>"
            for h in ("agent", "model", "calls", "cached", "input", "output", "cost")
        )
        return (
            f"<div><p>{esc(self._headline())}</p><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table></div>"
        )


def _span(low: object, high: object) -> str:
    """`low to high`, or one figure when they are the same: `1,024` or `$0.0100`."""
    text_low = f"{low:,}" if isinstance(low, int) else str(low)
    text_high = f"{high:,}" if isinstance(high, int) else str(high)
    return text_low if text_low == text_high else f"{text_low} to {text_high}"


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "0 s"
    if seconds < 10:
        return f"{seconds:.2g} s" if seconds >= 0.01 else f"{seconds * 1000:.1g} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


# -- the estimates -------------------------------------------------------------------------------
async def estimate_calls(
    orch: AsyncAgentOrchestrator,
    batch: Batch,
    max_concurrency: int | None,
    *,
    batch_price: bool = False,
) -> Estimate:
    """The `Estimate` of `execute_multiple(calls)` (checked into `batch`), on the home loop;
    `batch_price`: its costs at the Message Batches price (`batch=True`)."""
    workers = max_concurrency or orch.config.max_concurrency
    est = _Estimator(orch, workers, batch_price)
    prepared = [batch.take(i) for i in range(len(batch))]
    looked = [await est.cached(p) for p in prepared]
    # Only the calls that would reach the backend are counted (a cached answer has its usage).
    misses = [p.request for p, (found, _) in zip(prepared, looked, strict=True) if found is None]
    counts = iter(await est.count_all(misses))
    rows = []
    for p, (found, repeat) in zip(prepared, looked, strict=True):
        tokens = 0 if found is not None else next(counts)
        rows.append(est.row(p, (tokens, tokens, tokens), found, repeat))
    wall = _pool_seconds([r.time_s for r in rows], workers)
    return est.finish(rows, wall, workers)


async def estimate_workflow(
    orch: AsyncAgentOrchestrator,
    wf: Workflow,
    variables: Mapping[str, Any] | None,
    *,
    use_cache: bool,
    max_concurrency: int | None,
    batch_price: bool = False,
) -> Estimate:
    """The `Estimate` of `run_workflow(wf, variables)`, on the home loop (see the module doc);
    `batch_price`: its costs at the Message Batches price."""
    wf.validate(agents=orch.agents, variables=variables)
    variables = variables or {}
    ids = {step.id for step in wf.steps}
    names = {n for step in wf.steps for n in wf.free_names(step.id)}
    values: dict[str, str] = dict(wf.inputs)  # the caller's variables override the inputs
    values.update({n: str(variables[n]) for n in names if n in variables})
    limits = [n for n in (max_concurrency, wf.max_concurrency) if n is not None]
    limit = min(limits) if limits else orch.config.max_concurrency
    est = _Estimator(orch, limit, batch_price)
    known: dict[str, str] = {}  # output text of the steps the cache would answer
    lengths: dict[str, tuple[int, int, int]] = {}  # output tokens (low, typical, high) per step
    rows: dict[str, _Row] = {}
    for level in wf.order():
        for step_id in level:
            step = wf.step(step_id)
            uses = Counter(
                m.group(2) for m in PLACEHOLDER.finditer(step.task) if m.group(1) is None
            )
            pending = {n: k for n, k in uses.items() if n in ids and n not in known}
            fill = {n: known.get(n, "") if n in ids else values[n] for n in uses}
            options = step.options if use_cache else step.options.merged(_NO_CACHE)
            p = orch.preparer.build(orch.agents.get(step.agent), render(step.task, fill), options)
            found, repeat = (None, False) if pending else await est.cached(p)
            tokens = 0 if found is not None else await est.count_one(p.request)
            added = [sum(k * lengths[n][i] for n, k in pending.items()) for i in range(3)]
            row = est.row(
                p, (tokens + added[0], tokens + added[1], tokens + added[2]), found, repeat
            )
            row.step = step_id
            rows[step_id] = row
            lengths[step_id] = (row.output_low, row.output_typical, row.output_high)
            if found is not None:
                known[step_id] = found.text
    order = [s.id for s in wf.steps]
    deps = {s.id: s.dependencies for s in wf.steps}
    times = {k: r.time_s for k, r in rows.items()}
    wall = _dag_seconds(order, deps, times, limit)
    path, path_s = _critical_path(wf.order(), deps, times)
    return est.finish(
        [rows[k] for k in order],
        wall,
        limit,
        workflow=wf.name,
        critical_path=path,
        critical_path_s=path_s,
    )


# -- one estimate's state ------------------------------------------------------------------------
@dataclass
class _Row:
    agent: str
    model: str
    input_tokens: int
    output_low: int
    output_high: int
    output_typical: int  # what time and the quota assume: the mean, else max_tokens
    cost_low_usd: float
    cost_high_usd: float
    cached: bool
    time_s: float
    step: str | None = None


class _History:
    """What the metrics say of earlier calls: typical answer length and latency per (agent,
    model), and which (agent, model) had a prompt cached within its lifetime."""

    def __init__(self, frame: pd.DataFrame) -> None:
        import pandas as pd

        ok = frame[frame["success"] & ~frame["cache_hit"]]
        keys = [ok["agent"], ok["model"]]
        seconds = (ok["latency_ms"] - ok["queue_ms"]).clip(lower=0) / 1000
        self.output: dict[tuple[str, str], float] = (
            ok.groupby(keys)["output_tokens"].mean().to_dict()
        )
        self.latency: dict[tuple[str, str], float] = seconds.groupby(keys).mean().to_dict()
        self.model_latency: dict[str, float] = seconds.groupby(ok["model"]).mean().to_dict()
        since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=PROMPT_CACHE_TTL_S)
        prompt = ok["cache_read_tokens"] + ok["cache_write_tokens"] > 0
        recent = ok[prompt & (ok["started_at"] >= since)]
        self.prompt_cached = set(zip(recent["agent"], recent["model"], strict=True))


class _Estimator:
    """Works out the rows of one estimate; keeps what earlier rows of the job tell later ones."""

    def __init__(
        self, orch: AsyncAgentOrchestrator, concurrency: int, batch_price: bool = False
    ) -> None:
        self.orch = orch
        self.concurrency = concurrency
        self.batch_price = batch_price
        self.factor = BATCH_FACTOR if batch_price else 1.0
        self.prices = orch.prices
        self.config = orch.config
        self.history = _History(orch.tracker.to_dataframe())
        self.backend = orch.backend
        self.simulated = self.backend.kind == "simulated"
        self.can_count = True  # until the backend says it cannot
        self.counted = 0  # requests the backend counted
        self.estimated = 0  # requests estimated locally
        self.prompts: set[tuple[str, str]] = set()  # (model, system) written earlier in the job
        self.keys: set[str] = set()  # cache keys of earlier calls of the job
        self.bases: dict[str, None] = {}

    # -- input tokens -------------------------------------------------------------------------
    async def count_one(self, request: BackendRequest) -> int:
        """The backend's count of `request`'s input tokens, else the local estimate."""
        if self.can_count:
            try:
                counted = await self.backend.count_tokens(request)
            except BackendError as exc:
                counted = None
                if not exc.retryable:  # a busy endpoint may count the next one; a missing one not
                    self.can_count = False
            else:
                if counted is None:
                    self.can_count = False
            if counted is not None:
                self.counted += 1
                return counted
        self.estimated += 1
        return estimate_input_tokens(request)

    async def count_all(self, requests: Sequence[BackendRequest]) -> list[int]:
        """`count_one` of each request: each distinct one asked once, `concurrency` at a time."""
        distinct = list(dict.fromkeys(requests))
        if not distinct:
            return []
        counts = {distinct[0]: await self.count_one(distinct[0])}
        rest = distinct[1:]
        if self.can_count and rest:
            gate = asyncio.Semaphore(self.concurrency)

            async def one(request: BackendRequest) -> None:
                async with gate:
                    counts[request] = await self.count_one(request)

            async with asyncio.TaskGroup() as tg:
                for request in rest:
                    tg.create_task(one(request))
        else:
            self.estimated += len(rest)
            counts.update((r, estimate_input_tokens(r)) for r in rest)
        return [counts[r] for r in requests]

    # -- the response cache -----------------------------------------------------------------
    async def cached(self, p: PreparedCall) -> tuple[BackendResponse | None, bool]:
        """`(the answer the cache holds, a repeat of an earlier call of the job)`."""
        if cache_for(self.orch.cache, p) is None:
            return None, False
        key = p.key
        if key in self.keys:
            return None, True
        self.keys.add(key)
        return await peek(self.orch.cache, p), False

    # -- one row ----------------------------------------------------------------------------
    def row(
        self,
        p: PreparedCall,
        tokens: tuple[int, int, int],
        found: BackendResponse | None,
        repeat: bool,
    ) -> _Row:
        """The row of call `p` with `tokens` = its input tokens (low, typical, high)."""
        request = p.request
        agent, model, most = p.spec.name, request.model, request.max_tokens
        if found is not None:  # the cache holds the answer: its tokens are known
            u = found.usage
            size = u.input_tokens + u.cache_read_tokens + u.cache_write_tokens
            return _Row(agent, model, size, *(u.output_tokens,) * 3, 0.0, 0.0, True, 0.0)
        mean = self.history.output.get((agent, model))
        low = 1 if mean is None else max(1, min(most, round(mean)))
        typical = most if mean is None else low
        if repeat:
            return _Row(agent, model, tokens[1], low, most, typical, 0.0, 0.0, True, 0.0)
        cost_low, cost_high = self._costs(p, tokens[0], tokens[2], low, most)
        return _Row(
            agent,
            model,
            tokens[1],
            low,
            most,
            typical,
            cost_low,
            cost_high,
            False,
            self._seconds(agent, model, typical),
        )

    def _costs(
        self, p: PreparedCall, input_low: int, input_high: int, low: int, high: int
    ) -> tuple[float, float]:
        request = p.request
        price = self.prices.get(request.model)
        if price is None:
            return math.nan, math.nan
        per_in, per_out = price["input"], price["output"]
        cached = 0
        read = write = per_in
        if request.prompt_caching and request.system:
            cached = min(system_tokens(request), input_low)
            prompt = (request.model, request.system)
            warm = prompt in self.prompts or (p.spec.name, request.model) in (
                self.history.prompt_cached
            )
            self.prompts.add(prompt)
            write = price["cache_write"]
            read = price["cache_read"] if warm else write
        cost_low = (input_low - cached) * per_in + cached * read + low * per_out
        cost_high = (input_high - cached) * per_in + cached * max(write, per_in) + high * per_out
        return cost_low / 1_000_000 * self.factor, cost_high / 1_000_000 * self.factor

    def _seconds(self, agent: str, model: str, output_tokens: int) -> float:
        seen = self.history.latency.get((agent, model))
        if seen is None:
            seen = self.history.model_latency.get(model)
        if seen is not None:
            self.bases["the latency history"] = None
            return seen
        cfg = self.config
        if self.simulated:
            self.bases["the simulator's latency settings"] = None
            return cfg.sim_latency_s + cfg.sim_latency_per_token_s * output_tokens
        self.bases[f"a default of {DEFAULT_START_S:g} s + {DEFAULT_TOKENS_PER_S:g} tokens/s"] = None
        return DEFAULT_START_S + output_tokens / DEFAULT_TOKENS_PER_S

    # -- the whole job ----------------------------------------------------------------------
    def finish(self, rows: list[_Row], wall: float, concurrency: int, **extra: Any) -> Estimate:
        import pandas as pd

        workflow = extra.get("workflow") is not None
        columns = (["step"] if workflow else []) + list(COLUMNS)
        table = pd.DataFrame(
            [{c: getattr(r, c) for c in columns} for r in rows], columns=columns
        ).astype(
            {
                "input_tokens": "int64",
                "output_low": "int64",
                "output_high": "int64",
                "cost_low_usd": "float64",
                "cost_high_usd": "float64",
                "cached": "bool",
                "time_s": "float64",
            }
        )
        quota = _quota_seconds(rows, self.config.rate_limits)
        if self.counted == self.estimated == 0:
            tokens_basis = "from the cached answers"
        elif self.counted == 0:
            tokens_basis = "estimated locally (about 4 characters a token)"
        elif self.estimated == 0:
            tokens_basis = "counted by the backend"
        else:
            tokens_basis = "counted by the backend where it could, else estimated locally"
        return Estimate(
            table=table,
            wall_s=max(wall, quota),
            max_concurrency=concurrency,
            time_basis=", ".join(self.bases) or "cached answers only",
            tokens_basis=tokens_basis,
            quota_s=quota,
            batch=self.batch_price,
            **extra,
        )


# -- time ----------------------------------------------------------------------------------------
def _pool_seconds(times: Sequence[float], workers: int) -> float:
    """How long `times` take on `workers` workers that each take the next call when free."""
    free = [0.0] * max(1, min(workers, len(times)))
    for t in times:
        heapq.heappush(free, heapq.heappop(free) + t)
    return max(free, default=0.0)


def _dag_seconds(
    order: Sequence[str],
    deps: Mapping[str, Sequence[str]],
    times: Mapping[str, float],
    limit: int | None,
) -> float:
    """How long the steps take when each starts once its dependencies are done and one of
    `limit` slots is free (first ready, first started: the scheduler's rule)."""
    waiting = {s: len(deps[s]) for s in order}
    dependents: dict[str, list[str]] = {s: [] for s in order}
    for s in order:
        for d in deps[s]:
            dependents[d].append(s)
    ready = deque(s for s in order if waiting[s] == 0)
    running: list[tuple[float, int, str]] = []
    now, n = 0.0, 0
    while ready or running:
        while ready and (limit is None or len(running) < limit):
            step = ready.popleft()
            n += 1
            heapq.heappush(running, (now + times[step], n, step))
        now, _, done = heapq.heappop(running)
        for child in dependents[done]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return now


def _critical_path(
    levels: Sequence[Sequence[str]], deps: Mapping[str, Sequence[str]], times: Mapping[str, float]
) -> tuple[tuple[str, ...], float]:
    """The chain of dependent steps whose times add up to the most, and that sum."""
    finish: dict[str, float] = {}
    before: dict[str, str | None] = {}
    for level in levels:
        for step in level:
            prev = max(deps[step], key=lambda d: finish[d], default=None)
            finish[step] = times[step] + (finish[prev] if prev is not None else 0.0)
            before[step] = prev
    if not finish:
        return (), 0.0
    last = max(finish, key=lambda s: finish[s])
    path: list[str] = []
    node: str | None = last
    while node is not None:
        path.append(node)
        node = before[node]
    return tuple(reversed(path)), finish[last]


def _quota_seconds(rows: Sequence[_Row], rate_limits: Mapping[str, Mapping[str, float]]) -> float:
    """The least time the quota allows the calls that reach the backend: per model class and
    kind, what exceeds the first burst divided by the rate."""
    if not rate_limits:
        return 0.0
    totals: dict[str, list[float]] = {}
    for r in rows:
        if not r.cached:
            t = totals.setdefault(model_class(r.model), [0.0, 0.0, 0.0])
            t[0] += 1
            t[1] += r.input_tokens
            t[2] += r.output_typical
    least = 0.0
    for cls, costs in totals.items():
        entry = rate_limits.get(cls) or rate_limits.get("*")
        if not entry:
            continue
        limits = Limits.from_mapping(dict(entry))
        for total, rate, burst in zip(costs, limits.rates(), limits.capacities(), strict=True):
            if math.isfinite(rate):
                least = max(least, (total - burst) / rate)
    return least
