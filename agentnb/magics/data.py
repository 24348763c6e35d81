"""`%agent --over DATA` and `%agent --models A,B`: the data front (`agentnb.map`, `agentnb.grid`)
from a cell.

`--over DATA` runs the agent on every row of the notebook's `DATA` (a DataFrame, a Series or a
list of strings) with the task as the template: `{{column}}` from each row, other placeholders
from the notebook (a row's column wins). The cell's value is the result DataFrame. `--models
A,B` runs the one task on each model at once and shows the answers side by side (an HTML table
in a notebook, text in a terminal). Bad input is one line: an unknown variable, data of another
type, a placeholder that names no column.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from IPython.core.error import UsageError

from ..frames import estimate_map
from ..frames import map as map_rows
from ..grids import grid
from ..options import CallOptions
from ..orchestrator import AgentCall, AgentOrchestrator
from .parsing import fill_placeholders

__all__ = ["model_list", "run_on_data"]


def model_list(value: str) -> list[str]:
    """`--models haiku,sonnet`: the model ids or aliases, comma-separated, each once.

    Example:
        >>> model_list("haiku, sonnet")
        ['haiku', 'sonnet']
    """
    models = [m.strip() for m in value.split(",")]
    if not all(models):
        raise argparse.ArgumentTypeError(f"expected models separated by commas, got {value!r}")
    if len(set(models)) != len(models):
        raise argparse.ArgumentTypeError(f"names a model twice: {value!r}")
    return models


def run_on_data(
    args: argparse.Namespace,
    task: str,
    options: CallOptions,
    budget: float | None,
    namespace: Mapping[str, Any],
    orch: AgentOrchestrator,
) -> Any:
    """What `%agent --over` or `%agent --models` gives: the map's DataFrame, the models' answers
    side by side, or with `--estimate` the `Estimate`."""
    if args.over is not None and args.models is not None:
        raise UsageError("give --over (rows) or --models (models), not both")
    if args.stream:
        raise UsageError("--stream shows one answer as it is written: not with --over or --models")
    if args.over is not None:
        data = _data(args.over, namespace)
        if args.estimate:
            return estimate_map(
                args.name,
                data,
                task,
                variables=namespace,
                orchestrator=orch,
                options=options,
                batch=args.batch,
            )
        return map_rows(
            args.name,
            data,
            task,
            variables=namespace,
            orchestrator=orch,
            options=options,
            max_cost_usd=budget,
            batch=args.batch,
        )
    if options.model is not None:
        raise UsageError("give -m/--model (one model) or --models (several), not both")
    task = fill_placeholders(task, namespace)
    if args.estimate:
        calls = [AgentCall(args.name, task, options, model=m) for m in args.models]
        return orch.estimate(calls, batch=args.batch)
    result = grid(
        [task],
        [args.name],
        args.models,
        orchestrator=orch,
        options=options,
        max_cost_usd=budget,
        batch=args.batch,
    )
    return result.side_by_side()


def _data(name: str, namespace: Mapping[str, Any]) -> Any:
    if name not in namespace:
        raise UsageError(f"--over {name}: no variable of that name in the notebook")
    import pandas as pd

    data = namespace[name]
    if not isinstance(data, (pd.DataFrame, pd.Series, list, tuple)):
        raise UsageError(
            f"--over {name}: expected a DataFrame, a Series or a list of strings, "
            f"got {type(data).__name__}"
        )
    return data
