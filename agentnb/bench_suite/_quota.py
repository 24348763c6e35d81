"""The quota section: a job far wider than the quota, paced by agentnb or only retried on 429s.

The simulator enforces a quota tight enough to bind on all three kinds (requests, input and
output tokens per minute, each bucket holding one second's worth, as the API's do), and one job
of fresh summarising tasks of varied length is sent at a concurrency well above what the quota
allows:

- agentnb with the limiter (`AnthropicBackend` over the simulator's HTTP transport, so the
  limits are learned from the headers the real SDK sees); before it runs, `estimate(calls)` on
  the same orchestrator, compared with what the job then recorded;
- the same job through a bare `anthropic.AsyncAnthropic` (the SDK's default retries, which
  honour `retry-after`) and `asyncio.gather`, and through agentnb with `rate_limiting=False`:
  reference rows, judged against the same goals in their own columns but left out of the goals
  table (they show what the limiter saves a job from);
- the same job split over processes sharing one quota, against one `python -m agentnb simulate`
  server: their buckets shared through SQLite, then through a real redis-server on loopback
  (`_quota_procs`); the counts come from the server's `GET /agentnb/stats`.

Throughput is the quota's own measure, from the simulator's call log: over the time from the
first to the last accepted call's start, each limited kind's use beyond one burst, divided by
what its rate allows in that time, `(used - burst) / (rate * span)`; the row shows the kind that
binds most, which is the fraction of the quota's maximum the job reached. Requests are counted
from the log, tokens from the answers (input as the quota counts it: uncached input and cache
writes; output as answered).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..backends import AnthropicBackend, SimulatedBackend, simulator_transport
from ..backends.sim_server import stats
from ..loop import run_sync
from ..quota import KINDS, Limits
from ._common import Profile, Row, _calls, _goal, _orchestrator, fresh_tasks
from ._profile import profiled

if TYPE_CHECKING:
    from ..orchestrator import AsyncAgentOrchestrator, Estimate

__all__ = [
    "FULL",
    "QUICK",
    "SMOKE",
    "STORE_NAMES",
    "Outcome",
    "QuotaJob",
    "bench_quota",
    "counted_row",
    "judge",
    "pace",
    "quota_tasks",
    "unrun_row",
]

_URL = "http://sim.local"
#: Mean tokens a call of the job counts (its task; the writer's answer to it): the token limits
#: are set from them, so that all three kinds bind at about the same pace.
_INPUT_PER_CALL = 110
_OUTPUT_PER_CALL = 90
_WORDS = ("the", "quarterly", "report", "shows", "revenue", "growth", "across", "regions",
          "while", "costs", "rose", "in", "logistics", "staffing", "and", "cloud", "hosting",
          "so", "margins", "narrowed", "despite", "higher", "volume", "customers")  # fmt: skip
_KIND_NAMES = dict(zip(KINDS, ("requests", "input tokens", "output tokens"), strict=True))
STORE_NAMES = {"sqlite": "SQLite", "redis": "Redis"}


@dataclass(frozen=True)
class QuotaJob:
    """One size of the section: the quota (per minute), the simulator's latency, the job."""

    rpm: float
    latency_s: float
    calls: int
    concurrency: int = 200
    processes: int = 4
    max_tokens: int = 200  # what each call holds of the output quota until it has answered

    @property
    def limits(self) -> Limits:
        quota = self.sim_limits["*"]
        return Limits(quota["rpm"], quota["itpm"], quota["otpm"])

    @property
    def sim_limits(self) -> dict[str, dict[str, float]]:
        """The quota as the `sim_limits` setting (and `simulate --limits`) takes it."""
        return {
            "*": {
                "rpm": self.rpm,
                "itpm": self.rpm * _INPUT_PER_CALL,
                "otpm": self.rpm * _OUTPUT_PER_CALL,
            }
        }

    def describe(self) -> str:
        rpm, itpm, otpm, _ = self.limits
        return (
            f"{rpm:,.0f} RPM, {itpm:,.0f} ITPM, {otpm:,.0f} OTPM, 1 s bursts; "
            f"{self.latency_s * 1000:g} ms a call; {self.calls:,} calls at concurrency "
            f"{self.concurrency}, max_tokens {self.max_tokens}"
        )


FULL = QuotaJob(rpm=3000, latency_s=0.15, calls=1000)
#: FULL's quota, an eighth of its calls, paced over under 2 s. Over so short a span, what the
#: output reservations (max_tokens until each answer) hold back at the start weighs more than
#: over FULL's 20 s, so max_tokens is nearer the answers' length here. (At four times the rate
#: the SDK's own CPU, not the quota, set the pace on a loaded 2-core machine.)
QUICK = QuotaJob(rpm=3000, latency_s=0.03, calls=130, max_tokens=100)
SMOKE = QuotaJob(rpm=60_000, latency_s=0.005, calls=40, concurrency=20, processes=2)


class Outcome(NamedTuple):
    """What the clients of one run saw: answers, failures, tokens of the answers, wall time."""

    answered: int
    failures: list[str]
    tokens: tuple[float, float]  # input as the quota counts it, output
    wall_s: float


def quota_tasks(n: int, seed: int = 0) -> list[str]:
    """`n` fresh summarising tasks whose bodies run from about 50 to 150 tokens (seeded)."""
    rng = random.Random(seed)
    out = []
    for task in fresh_tasks(n, "Summarise document"):
        size, words, length = rng.randint(200, 600), [], 0
        while length < size:
            word = rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        out.append(f"{task}: {' '.join(words)}")
    return out


def pace(
    counts: dict[str, Any], tokens: Sequence[float], limits: Limits
) -> tuple[float | None, str]:
    """The fraction of the quota's maximum a job reached, and the kind that bound it most.

    `counts` is what `sim_server.stats` says (its `accepted_starts`), `tokens` the input (as the
    quota counts it) and output tokens of the accepted calls. None when the accepted calls fit
    in one burst (or started at one instant): there is no pace to measure.
    """
    starts = counts["accepted_starts"]
    span = starts[-1] - starts[0] if len(starts) > 1 else 0.0
    used = (float(len(starts)), float(tokens[0]), float(tokens[1]))
    best: tuple[float, str] | None = None
    for k, (per_minute, burst) in enumerate(
        zip(limits.per_minute(), limits.capacities(), strict=True)
    ):
        if per_minute is None or span <= 0 or used[k] <= burst:
            continue
        share = (used[k] - burst) / (per_minute / 60.0 * span)
        if best is None or share > best[0]:
            best = (share, _KIND_NAMES[KINDS[k]])
    return (None, "") if best is None else (round(best[0], 3), best[1])


def bench_quota(job: QuotaJob = FULL, *, processes: bool = True) -> list[Row]:
    """The section's rows (see the module docstring). `processes` False leaves the rows of
    processes sharing one quota unrun, each saying so."""
    from ._quota_procs import bench_processes

    rows = _in_process(job)
    for store in STORE_NAMES:
        if processes:
            rows.append(bench_processes(job, store))
        else:
            why = "left out in this mode (some 30 s each with the processes' start-up)"
            rows.append(unrun_row(job, store, why, missed=False))
    return rows


# -- the rows -----------------------------------------------------------------------------------


def counted_row(run: str, job: QuotaJob, counts: dict[str, Any], seen: Outcome, detail: str) -> Row:
    """A run's row from its simulator's `counts` (`sim_server.stats`) and what its clients saw."""
    share, bound = pace(counts, seen.tokens, job.limits)
    attempts, refused = int(counts["calls"]), int(counts["rate_limited"])
    notes = [detail] if detail else []
    notes.append(f"bound by {bound}" if share is not None else "no pace: it fit in one burst")
    if seen.failures:
        notes.append(f"first failure: {seen.failures[0]}")
    return {
        "run": run,
        "calls": job.calls,
        "concurrency": job.concurrency,
        "attempts": attempts,
        "answered": seen.answered,
        "failed": len(seen.failures),
        "429s": refused,
        "429s_pct": round(100.0 * refused / attempts, 2) if attempts else 0.0,
        "wall_s": round(seen.wall_s, 2),
        "throughput": share,
        "detail": "; ".join(notes),
    }


def _goals(shared: bool) -> tuple[tuple[str, str, float], ...]:
    """(goal, what it judges, threshold): in one process, or for processes sharing a quota."""
    least, most = (0.90, 2.0) if shared else (0.95, 1.0)
    return (
        (f"throughput >= {least:.2f} of the quota", "throughput of the quota", least),
        (f"429s <= {most:g} % of attempts", "429s", most),
        ("0 failed calls", "failed calls", 0),
    )


def _checks(row: Row, shared: bool) -> list[tuple[str, bool, str, str]]:
    """(goal, met, the figure, what it judges) of each of the row's goals."""
    share, attempts, refused = row["throughput"], row["attempts"], row["429s"]
    refused_pct = 100.0 * refused / attempts if attempts else 0.0
    (g_pace, w_pace, least), (g_429, w_429, most), (g_fail, w_fail, _) = _goals(shared)
    figure = "n/a (it fit in one burst)" if share is None else f"{share:.3f}"
    return [
        (g_pace, share is not None and share >= least, figure, w_pace),
        (g_429, refused_pct <= most, f"{refused} of {attempts} ({refused_pct:.2f} %)", w_429),
        (g_fail, row["failed"] == 0, f"{row['failed']} failed", w_fail),
    ]


def judge(
    row: Row,
    label: str,
    *,
    shared: bool = False,
    reference: bool = False,
    profile: Profile | None = None,
) -> Row:
    """Give `row` its goals (`shared`: processes sharing one quota; `profile`: what runs the
    code behind them again under the profiler, when one is missed). A `reference` row is judged
    in its own `goal` and `met` columns only, not in the goals table."""
    checks = _checks(row, shared)
    if reference:
        row["goal"] = "; ".join(c[0] for c in checks) + " (reference: not in the goals table)"
        row["met"] = all(c[1] for c in checks)
        return row
    for goal, met, measured, what in checks:
        _goal(row, goal, met, measured=measured, what=f"{what}, {label}", profile=profile)
    return row


def unrun_row(job: QuotaJob, store: str, why: str, *, missed: bool) -> Row:
    """The row of processes sharing `store` that did not run, saying `why`. `missed`: its goals
    are there and not met (it could not run, which is no pass); else it has none (left out)."""
    row: Row = {
        "run": processes_run(job, store),
        "calls": job.calls,
        "concurrency": job.concurrency,
        "attempts": 0,
        "answered": 0,
        "failed": 0,
        "429s": None,
        "429s_pct": None,
        "wall_s": None,
        "throughput": None,
        "detail": f"not run: {why}",
    }
    if not missed:
        return _goal(row, "", None)
    for goal, what, _ in _goals(shared=True):
        _goal(row, goal, False, measured="not run", what=f"{what}, {processes_label(job, store)}")
    return row


def processes_run(job: QuotaJob, store: str) -> str:
    """The `run` of the row of `job` over processes sharing `store`."""
    return f"{job.processes} processes sharing one quota through {STORE_NAMES[store]}"


def processes_label(job: QuotaJob, store: str) -> str:
    """How the goals table names that row."""
    return f"{job.processes} processes, {STORE_NAMES[store]}"


# -- in one process -----------------------------------------------------------------------------


def _sim(job: QuotaJob) -> SimulatedBackend:
    return SimulatedBackend(latency_s=job.latency_s, jitter=0.0, limits=job.sim_limits)


def _agentnb(job: QuotaJob, sim: SimulatedBackend, **settings: Any) -> AsyncAgentOrchestrator:
    backend = AnthropicBackend(api_key="sk-test", base_url=_URL, transport=simulator_transport(sim))
    return _orchestrator(
        job.latency_s, job.concurrency, backend=backend, max_tokens=job.max_tokens, **settings
    )


def _in_process(job: QuotaJob) -> list[Row]:
    """The limiter's row (its job alone), its estimate's, then the two reference rows (their
    jobs side by side: 429s and failures are what they show, and their waits of whole seconds
    for `retry-after` would otherwise double the section's time)."""
    tasks = quota_tasks(job.calls)
    sim = _sim(job)
    aio = _agentnb(job, sim)
    try:
        estimate = run_sync(aio.estimate(_calls(tasks)))  # before the job, on its orchestrator
        seen = run_sync(_job(aio, tasks))
        metrics = aio.metrics()
    finally:
        run_sync(aio.aclose())
    row = counted_row("agentnb, limiter on", job, stats(sim), seen, "")
    limiter = judge(row, "limiter on", profile=profiled(_again(job, estimating=False)))
    rows = [limiter, _estimate_row(job, estimate, metrics, limiter)]

    bare_sim, off_sim = _sim(job), _sim(job)
    off = _agentnb(job, off_sim, rate_limiting=False)

    async def side_by_side() -> tuple[Outcome, Outcome]:
        # Each against its own simulator: their counts do not mix; their waits overlap.
        return await asyncio.gather(
            _bare(job, bare_sim, off, quota_tasks(job.calls, seed=1)),
            _job(off, quota_tasks(job.calls, seed=2)),
        )

    try:
        bare, unpaced = run_sync(side_by_side())
    finally:
        run_sync(off.aclose())
    bare_row, off_row = (
        judge(counted_row(run, job, stats(ran), seen, ""), run, reference=True)
        for run, ran, seen in (
            ("bare AsyncAnthropic + gather (SDK retries)", bare_sim, bare),
            ("agentnb, rate_limiting=False", off_sim, unpaced),
        )
    )
    # The goals table's bare reference: the bare SDK's same figures, from the same run.
    for goal, (_, _, figure, _) in zip(limiter["_goals"], _checks(bare_row, False), strict=True):
        goal.bare = f"{figure} (bare SDK)"
    return [*rows, bare_row, off_row]


def _again(job: QuotaJob, *, estimating: bool) -> Callable[[], Callable[[], object]]:
    """The `profiled` setup of the limiter's job (or of its estimate): a fresh simulator,
    orchestrator and tasks; the orchestrator is closed when the profiled run ends."""

    def setup() -> Callable[[], object]:
        aio = _agentnb(job, _sim(job))
        calls = _calls(quota_tasks(job.calls, seed=3))

        async def run() -> None:
            try:
                if estimating:
                    await aio.estimate(calls)
                else:
                    await aio.execute_multiple(calls, return_exceptions=True)
            finally:
                await aio.aclose()

        return lambda: run_sync(run())

    return setup


async def _job(aio: AsyncAgentOrchestrator, tasks: list[str]) -> Outcome:
    t0 = time.perf_counter()
    results = await aio.execute_multiple(_calls(tasks), return_exceptions=True)
    wall = time.perf_counter() - t0
    failures = [_short(r) for r in results if isinstance(r, BaseException)]
    m = aio.metrics()
    m = m[m["success"]]
    tokens = (
        float((m["input_tokens"] + m["cache_write_tokens"]).sum()),
        float(m["output_tokens"].sum()),
    )
    return Outcome(len(results) - len(failures), failures, tokens, wall)


async def _bare(
    job: QuotaJob, sim: SimulatedBackend, aio: AsyncAgentOrchestrator, tasks: list[str]
) -> Outcome:
    """The job through `AsyncAnthropic` (default retries) and `asyncio.gather`, sending what
    agentnb sends: model, system prompt (marked for prompt caching), task, max_tokens."""
    import anthropic

    client = anthropic.AsyncAnthropic(
        api_key="sk-test",
        base_url=_URL,
        http_client=anthropic.DefaultAsyncHttpxClient(transport=simulator_transport(sim)),
    )
    spec = aio.agents.get("writer")
    model = aio.config.resolve_model(spec.model)
    system = [{"type": "text", "text": spec.system_prompt, "cache_control": {"type": "ephemeral"}}]
    try:
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(
                client.messages.create(
                    model=model,
                    max_tokens=job.max_tokens,
                    system=system,  # type: ignore[arg-type]  # a list of text blocks
                    messages=[{"role": "user", "content": t}],
                )
                for t in tasks
            ),
            return_exceptions=True,
        )
        wall = time.perf_counter() - t0
    finally:
        await client.close()
    answers = [r for r in results if not isinstance(r, BaseException)]
    failures = [_short(r) for r in results if isinstance(r, BaseException)]
    written = sum(a.usage.cache_creation_input_tokens or 0 for a in answers)
    tokens = (
        float(sum(a.usage.input_tokens for a in answers) + written),
        float(sum(a.usage.output_tokens for a in answers)),
    )
    return Outcome(len(answers), failures, tokens, wall)


def _estimate_row(job: QuotaJob, estimate: Estimate, metrics: Any, limiter: Row) -> Row:
    """`estimate(calls)`, made before the limiter's job, against what that job recorded."""
    recorded_in = int(
        (
            metrics["input_tokens"] + metrics["cache_read_tokens"] + metrics["cache_write_tokens"]
        ).sum()
    )
    error_in = (estimate.input_tokens - recorded_in) / recorded_in if recorded_in else 1.0
    out, low, high = int(metrics["output_tokens"].sum()), estimate.output_low, estimate.output_high
    cost, c_low, c_high = (
        float(metrics["cost_usd"].sum()),
        estimate.cost_low_usd,
        estimate.cost_high_usd,
    )
    out_inside = low <= out <= high
    cost_inside = c_low * (1 - 1e-9) <= cost <= c_high * (1 + 1e-9)
    detail = (
        f"input tokens: predicted {estimate.input_tokens:,}, recorded {recorded_in:,} "
        f"({error_in:+.2%}, tokens {estimate.tokens_basis}); output tokens: {out:,} in "
        f"[{low:,}, {high:,}]; cost: ${cost:.4f} in [${c_low:.4f}, ${c_high:.4f}], the low end "
        f"{_error(c_low, cost)} off, the high end {_error(c_high, cost)}"
    )
    row: Row = {
        "run": "estimate(calls) before the limiter's job vs what it recorded",
        "calls": job.calls,
        "concurrency": job.concurrency,
        "attempts": limiter["attempts"],
        "answered": limiter["answered"],
        "failed": limiter["failed"],
        "429s": None,
        "429s_pct": None,
        "wall_s": None,
        "throughput": None,
        "detail": detail,
    }
    checks = (
        ("input tokens within 1 %", abs(error_in) <= 0.01, f"{error_in:+.2%}", "input tokens"),
        ("output inside the range", out_inside, f"{out:,} in [{low:,}, {high:,}]", "output"),
        (
            "cost inside the range",
            cost_inside,
            f"${cost:.4f} in [${c_low:.4f}, ${c_high:.4f}]",
            "cost",
        ),
    )
    profile = profiled(_again(job, estimating=True))
    for goal, met, measured, what in checks:
        what = f"estimate vs actual: {what}"
        _goal(row, goal, met, measured=measured, what=what, profile=profile)
    return row


def _error(predicted: float, actual: float) -> str:
    return f"{(predicted - actual) / actual:+.1%}" if actual else "n/a"


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"
