"""`map` and `amap`: one agent over the rows of a DataFrame, a Series or a list, as a DataFrame.

Each row fills the template's `{{column}}` placeholders (the item of a Series or a list is
`{{value}}`); a placeholder that names no column is filled from `variables` (in `%agent --over`,
the notebook's), so a row's column wins over a variable of the same name. Everything is checked
before anything runs: the agent, the options, and that every placeholder names a column or a
variable (the error names it and lists the columns). A row that cannot be a call (a missing
value in a column the template uses, a task that ends up empty or too long) and a call that
fails do not stop the others: the row keeps its place, with `error` saying why
(`on_error="raise"` stops at the first instead). Re-running the same map answers the rows that
succeeded from the response cache, so only the failed ones are sent again.

The result is aligned with the input's index and has the columns `text` (with `schema=`, one
column per field of the structured answer instead), `cached`, `latency_ms`, `cost_usd` (what
the call paid: 0 for a cache hit, NaN when it failed) and `error` (None, or `Type: message`).
The input's own columns are not repeated: `df.join(result)` puts them side by side
(`df.join(result.add_prefix("answer_"))` when the input has a `text` column too).

The rows run as chunks of `execute_multiple` calls (`agentnb._jobs`), under one progress display
and one budget, so a map of 100,000 rows holds one chunk of calls at a time. When the call
pipeline has the `prefix` option, the template's text before its first row placeholder (once
filled from the variables) goes as the cached prefix of every request when it is long enough
for prompt caching (`PREFIX_MIN_TOKENS`): a 1,000-row map pays for its instructions once.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"text": ["a long review", "another one"]}, index=[10, 20])
    >>> out = agentnb.map("writer", df, "Summarise in one line: {{text}}")   # doctest: +SKIP
    >>> list(out.columns), list(out.index)                                  # doctest: +SKIP
    (['text', 'cached', 'latency_ms', 'cost_usd', 'error'], [10, 20])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Unpack

from ._jobs import (
    Chunk,
    Columns,
    Job,
    OrchestratorArg,
    arun,
    async_core,
    run,
    schema_fields,
)
from .errors import AgentnbError
from .options import CallOptions, OptionArgs, shown
from .orchestrator.calls import options_of
from .orchestrator.tokens import CHARS_PER_TOKEN
from .workflow.template import PLACEHOLDER, placeholders, render

if TYPE_CHECKING:
    import pandas as pd

    from .orchestrator import AsyncAgentOrchestrator, Estimate
    from .orchestrator.core import ProgressArg

__all__ = ["PREFIX_MIN_TOKENS", "VALUE", "amap", "estimate_map", "map"]

#: The shortest constant prefix sent as a cached `prefix`: the API caches 1,024 tokens or more.
PREFIX_MIN_TOKENS = 1024
#: The placeholder of a Series' or a list's item.
VALUE = "value"
_SHOWN_COLUMNS = 20  # columns listed in an error message


def map(
    agent: str,
    data: Any,
    template: str,
    *,
    on_error: Literal["keep", "raise"] = "keep",
    max_concurrency: int | None = None,
    progress: ProgressArg = None,
    batch: bool = False,
    max_cost_usd: float | None = None,
    variables: Mapping[str, Any] | None = None,
    orchestrator: OrchestratorArg = None,
    options: CallOptions | None = None,
    **overrides: Unpack[OptionArgs],
) -> pd.DataFrame:
    """Run `agent` on every row of `data` (a DataFrame, a Series or a list of strings).

    `template`'s `{{column}}` placeholders are filled from each row (`{{value}}`: the item of a
    Series or a list), the others from `variables`. Returns a DataFrame with `data`'s index:
    `text` (or `schema`'s fields), `cached`, `latency_ms`, `cost_usd`, `error` (see the module
    docstring). The call options (`model`, `max_tokens`, ..., and `schema`: a JSON-Schema dict,
    a pydantic model or a dataclass, for answers as columns) apply to every row. `on_error`:
    "keep" (a failed row says why in `error`) or "raise". `batch=True`: as Message Batches (half
    the price, minutes to hours). `max_cost_usd`: the whole map's budget. `progress`,
    `max_concurrency` and `options`: as for `execute_multiple`. `orchestrator`: default
    `default_orchestrator()`.

    Example:
        >>> agentnb.map("writer", ["cats", "dogs"], "A haiku about {{value}}")  # doctest: +SKIP
    """
    aio = async_core(orchestrator)
    plan = _Plan("map", aio, agent, data, template, variables, options, overrides)
    job = plan.job(on_error, max_concurrency, progress, batch, max_cost_usd)
    run(aio, job, plan.columns)
    return plan.frame()


async def amap(
    agent: str,
    data: Any,
    template: str,
    *,
    on_error: Literal["keep", "raise"] = "keep",
    max_concurrency: int | None = None,
    progress: ProgressArg = None,
    batch: bool = False,
    max_cost_usd: float | None = None,
    variables: Mapping[str, Any] | None = None,
    orchestrator: OrchestratorArg = None,
    options: CallOptions | None = None,
    **overrides: Unpack[OptionArgs],
) -> pd.DataFrame:
    """`map`, awaited (from any event loop: Jupyter's top-level `await`, pytest-asyncio...)."""
    aio = async_core(orchestrator)
    plan = _Plan("amap", aio, agent, data, template, variables, options, overrides)
    job = plan.job(on_error, max_concurrency, progress, batch, max_cost_usd)
    await arun(aio, job, plan.columns)
    return plan.frame()


def estimate_map(
    agent: str,
    data: Any,
    template: str,
    *,
    max_concurrency: int | None = None,
    batch: bool = False,
    variables: Mapping[str, Any] | None = None,
    orchestrator: OrchestratorArg = None,
    options: CallOptions | None = None,
    **overrides: Unpack[OptionArgs],
) -> Estimate:
    """What `map` with the same arguments would cost and take (`orch.estimate`), run nothing.

    Rows that could not be a call (a missing value, an empty task) are left out.
    """
    aio = async_core(orchestrator)
    plan = _Plan("estimate", aio, agent, data, template, variables, options, overrides)
    calls = plan.make(0, plan.total).calls
    return aio.home.run_sync(
        aio.estimate(calls, plan.options, max_concurrency=max_concurrency, batch=batch)
    )


# -- the plan: everything checked, the rows' calls made on demand ---------------------------------
class _Plan:
    """A map checked and ready: its rows, its template split, its options and result columns."""

    def __init__(
        self,
        source: str,
        aio: AsyncAgentOrchestrator,
        agent: str,
        data: Any,
        template: str,
        variables: Mapping[str, Any] | None,
        options: CallOptions | None,
        overrides: Mapping[str, Any],
    ) -> None:
        self.source = source
        self.agent = aio.agents.get(agent).name  # a bad name stops here, before anything runs
        self.index, self.series = _rows(data, source)
        self.total = len(self.index)
        if not isinstance(template, str) or not template.strip():
            raise AgentnbError(
                f"{source}: the template must be non-empty text, got {shown(template)}"
            )
        self.names, constants = _placeholders(source, template, self.series, variables or {})
        self.constants = constants
        common = options_of(options, overrides, source)
        prefix, body = _split(template, self.names, constants, self.total, common)
        self.pieces, self.slots = _compile(body, self.names, constants)
        self.options = common if prefix is None else common.merged(CallOptions(prefix=prefix))
        self.max_chars = aio.config.max_task_chars
        self.columns = Columns(self.total, fields=schema_fields(source, self.options))
        self._missing = _missing([self.series[n] for n in self.names])

    def job(
        self,
        on_error: str,
        max_concurrency: int | None,
        progress: ProgressArg,
        batch: bool,
        max_cost_usd: float | None,
    ) -> Job:
        return Job(
            self.source,
            self.total,
            self.make,
            self.options,
            on_error=on_error,
            max_concurrency=max_concurrency,
            progress=progress,
            batch=batch,
            max_cost_usd=max_cost_usd,
        )

    def make(self, start: int, stop: int) -> Chunk:
        """The calls of rows `[start, stop)`, each row's placeholders filled in."""
        chunk = Chunk()
        names, agent, limit = self.names, self.agent, self.max_chars
        pieces, slots = self.pieces, self.slots
        columns = [self.series[n].iloc[start:stop].tolist() for n in names]
        any_missing, missing = self._missing
        for i, row in enumerate(zip(*columns, strict=True), start):
            if any_missing is not None and any_missing[i]:
                empty = [n for n, m in zip(names, missing, strict=True) if m[i]]
                chunk.failed.append((i, f"{self._row(i)}: no value in {_listed(empty)}"))
                continue
            for at, k in slots:
                pieces[at] = str(row[k])
            task = "".join(pieces)
            if not task.strip():
                chunk.failed.append((i, f"{self._row(i)}: the task is empty once filled in"))
            elif len(task) > limit:
                why = f"the task is {len(task):,} characters, more than max_task_chars={limit:,}"
                chunk.failed.append((i, f"{self._row(i)}: {why}"))
            else:
                chunk.rows.append(i)
                chunk.calls.append((agent, task))
        return chunk

    def _row(self, i: int) -> str:
        return f"row {self.index[i]!r}"

    def frame(self) -> pd.DataFrame:
        result: pd.DataFrame = self.columns.frame(self.index)
        return result


def _rows(data: Any, source: str) -> tuple[pd.Index, dict[str, pd.Series]]:
    """`data`'s index and its columns by name (a Series or a list: one column, `value`)."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        named = [c for c in data.columns if isinstance(c, str)]
        doubled = sorted({c for c in named if named.count(c) > 1})
        if doubled:
            raise AgentnbError(f"{source}: the data has more than one column named {doubled[0]!r}")
        return data.index, {c: data[c] for c in named}
    if isinstance(data, pd.Series):
        return data.index, {VALUE: data}
    if isinstance(data, (list, tuple)):
        series = pd.Series(list(data), dtype=object)
        return series.index, {VALUE: series}
    raise AgentnbError(
        f"{source}: data must be a DataFrame, a Series or a list of strings, "
        f"got {type(data).__name__}"
    )


def _placeholders(
    source: str, template: str, columns: Mapping[str, Any], variables: Mapping[str, Any]
) -> tuple[list[str], dict[str, str]]:
    """The placeholders filled from each row, and the others' values (from `variables`)."""
    names = placeholders(template)
    unknown = [n for n in names if n not in columns and n not in variables]
    items = list(columns) == [VALUE]  # a Series or a list (a frame's columns are named)
    if unknown:
        if items:
            where = "the item of a Series or a list is {{value}}"
        else:
            have = list(columns)
            more = f", ... ({len(have)} in all)" if len(have) > _SHOWN_COLUMNS else ""
            where = f"the data's columns: {', '.join(have[:_SHOWN_COLUMNS]) or '(none)'}{more}"
        which = "which is" if len(unknown) == 1 else "which are"
        raise AgentnbError(
            f"{source}: the template uses {_listed(unknown)}, {which} neither a column of the "
            f"data nor a variable ({where})"
        )
    row_names = [n for n in names if n in columns]
    if not row_names:
        hint = "{{value}}" if items else "{{column}}"
        raise AgentnbError(
            f"{source}: the template uses no column of the data (write {hint}), so every row "
            "would ask the same"
        )
    return row_names, {n: str(variables[n]) for n in names if n not in columns}


def _split(
    template: str,
    row_names: list[str],
    constants: Mapping[str, str],
    rows: int,
    options: CallOptions,
) -> tuple[str | None, str]:
    """`(prefix, body)`: the constant text before the first row placeholder, when it is long
    enough to be cached (and the caller gave no `prefix` of their own), and the rest; else
    `(None, template)`."""
    if rows < 2 or options.prefix is not None:
        return None, template
    first = next(
        m.start()
        for m in PLACEHOLDER.finditer(template)
        if m.group(1) is None and m.group(2) in row_names
    )
    prefix = render(template[:first], constants)
    if len(prefix) < PREFIX_MIN_TOKENS * CHARS_PER_TOKEN:
        return None, template
    return prefix, template[first:]


def _compile(
    body: str, row_names: list[str], constants: Mapping[str, str]
) -> tuple[list[str], list[tuple[int, int]]]:
    """`body` as pieces of text and slots `(piece, column)`: a row's task is the pieces joined
    once its values are in their slots. The same single pass as `template.render` (a value is
    never scanned for placeholders), without a regex run per row.

    Example:
        >>> _compile("A {{x}} in {{lang}}, \\\\{{x}}", ["x"], {"lang": "French"})
        (['A ', '', ' in ', 'French', ', ', '{{x}}', ''], [(1, 0)])
    """
    pieces: list[str] = []
    slots: list[tuple[int, int]] = []
    end = 0
    for match in PLACEHOLDER.finditer(body):
        pieces.append(body[end : match.start()])
        name = match.group(2)
        if match.group(1) is not None:  # `\{{name}}`: the braces as typed
            pieces.append(match.group(0)[1:])
        elif name in constants:
            pieces.append(constants[name])
        else:
            slots.append((len(pieces), row_names.index(name)))
            pieces.append("")
        end = match.end()
    pieces.append(body[end:])
    return pieces, slots


def _missing(series: list[pd.Series]) -> tuple[Any, list[Any]]:
    """Boolean arrays of the rows with no value: in any of `series` (None if there is none),
    and in each."""
    import numpy as np

    each = [s.isna().to_numpy() for s in series]
    mask = np.logical_or.reduce(each)
    return (mask if mask.any() else None), each


def _listed(names: list[str]) -> str:
    return ", ".join("{{" + n + "}}" for n in names)
