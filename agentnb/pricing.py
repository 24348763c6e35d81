"""Model prices (USD per million tokens) and the cost of a call's usage.

Prices live in `agentnb/data/prices.yaml`, loaded into `agentnb.prices` (a `PriceTable`), which
a user may update (`prices.update({...})` or `prices.load(path)`) without code changes. A model
with no price costs NaN, never 0. Also importable from `agentnb.metrics`.

Example:
    >>> from agentnb.backends.base import Usage
    >>> prices = PriceTable.default()
    >>> round(prices.cost("claude-sonnet-5-5", Usage(input_tokens=1_000_000)), 2)
    2.0
    >>> prices.cost("some-unknown-model", Usage(input_tokens=10))
    nan
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ._yaml import YAMLLimitError, load_bounded, read_bounded
from .backends.base import Usage
from .errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BATCH_FACTOR", "PRICE_FIELDS", "PriceTable", "prices"]

PRICE_FIELDS = ("input", "output", "cache_write", "cache_read")
#: What a request of a Message Batch costs, as a share of the same request sent online.
BATCH_FACTOR = 0.5


class PriceTable:
    """Per-model prices (USD per million tokens) and the cost of a call's usage."""

    def __init__(self, table: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self._table: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        if table:
            self.update(table)

    @classmethod
    def default(cls) -> PriceTable:
        """The prices shipped in `agentnb/data/prices.yaml`."""
        text = resources.files("agentnb").joinpath("data/prices.yaml").read_text(encoding="utf-8")
        return cls(_parse_prices(yaml.safe_load(text), source="agentnb/data/prices.yaml"))

    def load(self, path: str | os.PathLike[str]) -> None:
        """Merge prices from a YAML file shaped like the shipped one (`models: {id: {...}}`)."""
        p = Path(path)
        try:
            data = load_bounded(read_bounded(p))  # a user's file: aliases expand within bounds
        except (OSError, UnicodeDecodeError, yaml.YAMLError, YAMLLimitError) as exc:
            raise ConfigError(f"prices file {p}: cannot be read as YAML ({exc})") from None
        self.update(_parse_prices(data, source=str(p)))

    def update(self, table: Mapping[str, Mapping[str, float]]) -> None:
        """Set or replace the prices of some models: `{model: {input, output, ...}}`."""
        parsed = _parse_prices({"models": dict(table)}, source="PriceTable.update")
        with self._lock:
            self._table.update(parsed)

    def get(self, model: str) -> dict[str, float] | None:
        """The prices of `model`, or None when it is not known."""
        return self._table.get(model)

    def __contains__(self, model: object) -> bool:
        return model in self._table

    def cost(self, model: str, usage: Usage, *, batch: bool = False) -> float:
        """USD cost of `usage` on `model`; NaN (never 0) for a model with no price.

        `batch=True`: at the Message Batches price, `BATCH_FACTOR` of it (the prompt cache's
        discounts stack: a batch's cache read costs that factor of the cache-read price).

        Example:
            >>> round(prices.cost("claude-sonnet-5-5", Usage(input_tokens=10**6), batch=True), 2)
            1.0
        """
        p = self._table.get(model)
        if p is None:
            return math.nan
        usd = (
            usage.input_tokens * p["input"]
            + usage.output_tokens * p["output"]
            + usage.cache_write_tokens * p["cache_write"]
            + usage.cache_read_tokens * p["cache_read"]
        ) / 1_000_000
        return usd * BATCH_FACTOR if batch else usd

    def to_dataframe(self) -> pd.DataFrame:
        import pandas as pd

        rows = [{"model": m, **p} for m, p in sorted(self._table.items())]
        return pd.DataFrame(rows, columns=["model", *PRICE_FIELDS])


def _parse_prices(data: Any, *, source: str) -> dict[str, dict[str, float]]:
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ConfigError(f"{source}: expected a mapping with a 'models' mapping")
    out: dict[str, dict[str, float]] = {}
    for model, entry in data["models"].items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{source}: prices of {model!r} must be a mapping")
        unknown = set(entry) - set(PRICE_FIELDS)
        if unknown:
            raise ConfigError(
                f"{source}: model {model!r} has unknown price fields {sorted(unknown)}"
            )
        try:
            input_price = float(entry["input"])
            output_price = float(entry["output"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"{source}: model {model!r} needs numeric 'input' and 'output'"
            ) from None
        out[str(model)] = {
            "input": input_price,
            "output": output_price,
            # Anthropic bills 5-minute cache writes at 1.25x and reads at 0.1x the input price.
            "cache_write": float(entry.get("cache_write", input_price * 1.25)),
            "cache_read": float(entry.get("cache_read", input_price * 0.1)),
        }
    return out


#: The process-wide price table used by every orchestrator unless given another.
prices = PriceTable.default()
