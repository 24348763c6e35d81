"""Budgets: a job stops before the call that could take it past its cost limit.

A `Budget` is a limit in USD over many calls (`limit_usd=None`: no limit, the spend is still
counted). Each call that goes to the backend holds a reservation of its worst case while it runs
(`worst_cost`: its input at the dearest input price it may pay, plus `max_tokens` of output),
and starts only if what was spent, what calls in flight hold and its own worst case all fit
(`admit`). When it does not fit but calls are in flight, it waits for them to settle and looks
again; when nothing is in flight and it still does not fit, it is refused with a
`BudgetExceededError` before anything is sent. `settle` then replaces the reservation by what the
call really cost. A cache hit costs nothing and never reserves. So the spend never passes the
limit, whatever the concurrency (as long as the input estimate holds, see `tokens.py`).

Budgets nest: the orchestrator keeps one for the session (`session_budget_usd`), the parent of
each job's (`max_cost_usd=` of `execute_multiple`, `run_workflow`, ...; default the
`max_cost_usd` setting); a call must fit both. A budget is a job's setting, not a call option:
it is shared by the calls of a job, not part of any request or cache key, so it is not in
`CallOptions`.

Example:
    >>> import asyncio
    >>> async def demo():
    ...     budget = Budget(0.10)
    ...     await budget.admit(0.06)          # reserved: 0.06 of 0.10
    ...     budget.settle(0.06, 0.02)         # it cost 0.02
    ...     await budget.admit(0.06)          # 0.02 + 0.06 fits
    ...     budget.settle(0.06, 0.05)
    ...     await budget.admit(0.06)          # 0.07 + 0.06 does not, and nothing is in flight
    >>> asyncio.run(demo())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    agentnb.errors.BudgetExceededError: budget of $0.1000 reached: $0.0700 spent, ...
"""

from __future__ import annotations

import asyncio
import html
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BudgetExceededError, OptionError
from ..options import shown
from .tokens import estimate_input_tokens

if TYPE_CHECKING:
    import pandas as pd

    from ..pricing import PriceTable
    from .prepare import PreparedCall

__all__ = [
    "Budget",
    "Spend",
    "add_budget_arguments",
    "check_budget",
    "usd",
    "worst_cost",
]


def usd(amount: float) -> str:
    """An amount as shown in messages and tables: `$0.0123`."""
    return f"${amount:,.4f}"


def worst_cost(p: PreparedCall, prices: PriceTable, input_tokens: int | None = None) -> float:
    """The most call `p` can cost in USD; NaN when its model has no price.

    Its input tokens (`input_tokens`, else the local estimate) at the input price, or at the
    prompt-cache write price when the request marks its system prompt for caching (the dearer
    of the two), plus `max_tokens` at the output price.
    """
    request = p.request
    price = prices.get(request.model)
    if price is None:
        return math.nan
    tokens = estimate_input_tokens(request) if input_tokens is None else input_tokens
    per_input = price["input"]
    if request.prompt_caching and request.system:
        per_input = max(per_input, price["cache_write"])
    return (tokens * per_input + request.max_tokens * price["output"]) / 1_000_000


class Budget:
    """A cost limit over many calls, checked before each call reaches the backend.

    `limit_usd`: the cap (None: none, spend still counted); `parent`: a budget every call must
    fit too (the session's); `total`: how many calls the job has, for messages; `label` names
    it in messages ("budget", "session budget"). Used on the home loop only.

    Counters: `spent_usd` (settled calls), `reserved_usd` and `in_flight` (calls running),
    `finished` (calls answered, cache hits included), `sent_calls` (calls that went to the
    backend, failed ones included), `unpriced_calls` (those of a model with no price),
    `by_model` (spend per model).
    """

    def __init__(
        self,
        limit_usd: float | None,
        parent: Budget | None = None,
        *,
        total: int | None = None,
        label: str = "budget",
    ) -> None:
        self.limit_usd = limit_usd
        self.parent = parent
        self.total = total
        self.label = label
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self.in_flight = 0
        self.finished = 0
        self.sent_calls = 0
        self.unpriced_calls = 0
        self.by_model: dict[str, float] = {}
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def limited(self) -> bool:
        """True when this budget or a parent has a limit (else nothing needs reserving)."""
        level: Budget | None = self
        while level is not None:
            if level.limit_usd is not None:
                return True
            level = level.parent
        return False

    @property
    def remaining_usd(self) -> float | None:
        """What is left of the limit after the spend and the reservations (None: no limit)."""
        if self.limit_usd is None:
            return None
        return max(0.0, self.limit_usd - self.spent_usd - self.reserved_usd)

    # -- admission --------------------------------------------------------------------------
    def try_admit(self, worst: float) -> bool:
        """Reserve `worst` here and in every parent if it fits all of them; else False."""
        if math.isnan(worst) or self._blocking(worst) is not None:
            return False
        level: Budget | None = self
        while level is not None:
            level.reserved_usd += worst
            level.in_flight += 1
            level = level.parent
        return True

    async def admit(self, worst: float) -> None:
        """Reserve `worst` once it fits, waiting for calls in flight to settle while it does not.

        Raises `BudgetExceededError` when it does not fit a budget that has nothing in flight
        (waiting could not help), or when `worst` is NaN (a model with no price).
        """
        while not self.try_admit(worst):
            level = self._blocking(worst)
            if level is None:  # NaN: the cost of the call cannot be bounded
                raise self._refusal("the next call's model has no price", reached=False)
            if level.in_flight == 0:
                raise level._refusal(f"the next call could cost up to {usd(worst)}")
            waiter = asyncio.get_running_loop().create_future()
            level._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in level._waiters:
                    level._waiters.remove(waiter)

    def admit_now(self, worst: float, what: str = "the next batch") -> None:
        """Reserve `worst` at once, or raise `BudgetExceededError` (never waits): the requests
        of a Message Batch go together, and the calls in flight they would wait for may be
        its own job's earlier batches. `what` names the reservation in the message."""
        if self.try_admit(worst):
            return
        level = self._blocking(worst)
        if level is None:  # NaN: a model with no price
            raise self._refusal(f"{what} holds a model with no price", reached=False)
        raise level._refusal(f"{what} could cost up to {usd(worst)}")

    def settle_batch(self, worst: float | None, costs: Iterable[tuple[float, str]]) -> None:
        """A Message Batch's reservation of `worst` (one `admit_now`; None: nothing was
        reserved, as for a batch collected from the ledger) is over: each `(cost, model)` of
        `costs` is one of its requests that reached the provider (0 for one that errored)."""
        paid = list(costs)
        level: Budget | None = self
        while level is not None:
            if worst is not None:
                level.in_flight -= 1
                level.reserved_usd = level.reserved_usd - worst if level.in_flight else 0.0
            level.sent_calls += len(paid)
            for cost, model in paid:
                if math.isnan(cost):
                    level.unpriced_calls += 1
                else:
                    level.spent_usd += cost
                    level.by_model[model] = level.by_model.get(model, 0.0) + cost
            waiters, level._waiters = level._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            level = level.parent

    def worst_for(self, p: PreparedCall, prices: PriceTable) -> float:
        """The worst case call `p` must hold here (`worst_cost`; 0 when nothing is limited, so
        an unlimited budget only counts the spend). Then `try_admit` it, else `await admit`.

        Raises `BudgetExceededError` when a limit applies and the model has no price.
        """
        if not self.limited:
            return 0.0
        worst = worst_cost(p, prices)
        if math.isnan(worst):
            raise self._refusal(
                f"model {p.request.model!r} has no price, so the cost of a call cannot be "
                "bounded (add one with agentnb.prices.update)",
                reached=False,
            )
        return worst

    def settle(self, worst: float, actual: float, model: str | None = None) -> None:
        """A call that held `worst` is over and cost `actual` (NaN: unknown price) on `model`."""
        level: Budget | None = self
        while level is not None:
            level.in_flight -= 1
            # With nothing in flight the reservations are exactly 0 (no rounding left over).
            level.reserved_usd = level.reserved_usd - worst if level.in_flight else 0.0
            level.sent_calls += 1
            if math.isnan(actual):
                level.unpriced_calls += 1
            else:
                level.spent_usd += actual
                if model is not None:
                    level.by_model[model] = level.by_model.get(model, 0.0) + actual
            waiters, level._waiters = level._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            level = level.parent

    def finish(self) -> None:
        """Count one call answered (cache hits included) here and in every parent."""
        level: Budget | None = self
        while level is not None:
            level.finished += 1
            level = level.parent

    def _blocking(self, worst: float) -> Budget | None:
        """The first budget, from this one up, that `worst` does not fit (None: all fit)."""
        level: Budget | None = self
        while level is not None:
            limit = level.limit_usd
            if limit is not None and level.spent_usd + level.reserved_usd + worst > limit:
                return level
            level = level.parent
        return None

    def _refusal(self, why: str, *, reached: bool = True) -> BudgetExceededError:
        """The error refusing a call, in one line, from the first budget up with a limit."""
        level: Budget | None = self
        while level is not None and level.limit_usd is None:
            level = level.parent
        where = level if level is not None else self
        limit = where.limit_usd if where.limit_usd is not None else math.inf
        done = f"{where.finished} calls finished"
        if where.total is not None:
            done = f"{where.finished} of {where.total} calls finished"
        state = f"reached: {usd(where.spent_usd)} spent" if reached else "cannot be kept"
        return BudgetExceededError(
            f"{where.label} of {usd(limit)} {state}, {why}; {done}",
            budget_usd=limit,
            spent_usd=where.spent_usd + where.reserved_usd,
        )

    # -- reading ----------------------------------------------------------------------------
    def snapshot(self) -> Spend:
        """What this budget has spent so far, as a `Spend`."""
        return Spend(
            total_usd=self.spent_usd,
            limit_usd=self.limit_usd,
            calls=self.sent_calls,
            in_flight=self.in_flight,
            reserved_usd=self.reserved_usd,
            unpriced_calls=self.unpriced_calls,
            by_model=dict(self.by_model),
        )

    def __repr__(self) -> str:
        limit = "none" if self.limit_usd is None else usd(self.limit_usd)
        return (
            f"<Budget {self.label}: limit {limit}, spent {usd(self.spent_usd)}, "
            f"{self.in_flight} in flight>"
        )


@dataclass(frozen=True)
class Spend:
    """What a budget has spent: `orch.spend()` (the session's) and `%agentnb spend`.

    `total_usd` is the running total of the calls that reached the backend (cache hits cost
    nothing); `by_model` the same per model (a dict; `frame` as a DataFrame); `calls` how many
    calls went to the backend; `unpriced_calls` those of a model with no price (not in the
    total).

    Example:
        >>> Spend(total_usd=0.5, limit_usd=2.0, calls=3, by_model={"m": 0.5}).remaining_usd
        1.5
    """

    total_usd: float
    limit_usd: float | None
    calls: int
    by_model: Mapping[str, float] = field(default_factory=dict)
    in_flight: int = 0
    reserved_usd: float = 0.0
    unpriced_calls: int = 0

    @property
    def remaining_usd(self) -> float | None:
        """The limit minus the spend and what calls in flight hold (None: no limit)."""
        if self.limit_usd is None:
            return None
        return max(0.0, self.limit_usd - self.total_usd - self.reserved_usd)

    @property
    def frame(self) -> pd.DataFrame:
        """One row per model: `model`, `cost_usd`, most expensive first."""
        import pandas as pd

        rows = sorted(self.by_model.items(), key=lambda item: -item[1])
        return pd.DataFrame(rows, columns=["model", "cost_usd"])

    def _headline(self) -> str:
        limit = "" if self.limit_usd is None else f" of {usd(self.limit_usd)}"
        left = "" if self.remaining_usd is None else f", {usd(self.remaining_usd)} left"
        flying = f", {self.in_flight} in flight" if self.in_flight else ""
        unpriced = f", {self.unpriced_calls} of unknown price" if self.unpriced_calls else ""
        return (
            f"session spend: {usd(self.total_usd)}{limit} over {self.calls} "
            f"call{'s' if self.calls != 1 else ''}{left}{flying}{unpriced}"
        )

    def __repr__(self) -> str:
        lines = [self._headline()]
        width = max((len(m) for m in self.by_model), default=0)
        lines += [f"  {m:<{width}}  {usd(c)}" for m, c in self.frame.itertuples(index=False)]
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = "".join(
            f"<tr><td>{esc(str(m))}</td><td style='text-align:right'>{usd(c)}</td></tr>"
            for m, c in self.frame.itertuples(index=False)
        )
        return (
            f"<div><p>{esc(self._headline())}</p><table><thead><tr><th>model</th><th>cost</th>"
            f"</tr></thead><tbody>{rows}</tbody></table></div>"
        )


# -- where a surface meets it -------------------------------------------------------------------
def check_budget(value: object, *, source: str, name: str = "max_cost_usd") -> float | None:
    """`value` as a budget in USD (None: not set); text is converted (a flag's value).

    A negative, infinite or NaN amount, or one that is not a number, is an `OptionError` naming
    `name` (the keyword or the flag) and `source`, in one line.

    Example:
        >>> check_budget("0.5", source="%agent", name="--budget")
        0.5
        >>> check_budget(-1, source="%agent", name="--budget")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        agentnb.errors.OptionError: %agent --budget: must be a finite amount of US dollars, ...
    """
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    if number is None or not math.isfinite(number) or number < 0:
        raise OptionError(
            f"{source} {name}: must be a finite amount of US dollars, 0 or more, "
            f"got {shown(value)}",
            option=name,
            source=source,
        )
    return number


def add_budget_arguments(add: Callable[..., Any]) -> None:
    """Declare `--estimate` and `--budget USD` through `add` (the magics and the CLI alike);
    `check_budget(args.budget, source=..., name="--budget")` reads the amount."""
    add(
        "--estimate",
        action="store_true",
        help="show the predicted tokens, cost and time; run nothing",
    )
    add(
        "--budget",
        metavar="USD",
        default=None,
        help="stop before the call that could take the job past USD (default: max_cost_usd)",
    )
