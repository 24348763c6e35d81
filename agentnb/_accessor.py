"""`df.agentnb` (and `series.agentnb`): `map`, `amap` and `estimate` from the data itself.

The accessor is registered with pandas once both are imported, in either order, and importing
agentnb does not import pandas (it would double agentnb's import time): `install()` registers
it at once when pandas is loaded, else adds a one-shot import hook that registers it as soon as
pandas' own import has finished. The hook only wraps pandas' loader for that one import, hands
pandas its own loader back before pandas runs, and removes itself.

Example:
    >>> df.agentnb.map("writer", "Summarise in one line: {{text}}")       # doctest: +SKIP
    >>> df.agentnb.estimate("writer", "Summarise: {{text}}").cost_high_usd  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

    import pandas as pd

    from .orchestrator import Estimate

__all__ = ["NAME", "AgentnbAccessor", "install", "register"]

logger = logging.getLogger("agentnb")

#: The accessor's name: `df.agentnb`.
NAME = "agentnb"
_lock = threading.Lock()
_registered = False


class AgentnbAccessor:
    """`df.agentnb` / `series.agentnb`: agentnb's data functions with the data filled in.

    The keyword arguments are those of `agentnb.map` (options, `schema=`, `variables=`,
    `orchestrator=`, `progress=`, ...).
    """

    def __init__(self, data: pd.DataFrame | pd.Series) -> None:
        self._data = data

    def map(self, agent: str, template: str, **kwargs: Any) -> pd.DataFrame:
        """`agentnb.map(agent, data, template, **kwargs)`: one answer per row, same index."""
        from .frames import map as map_rows

        return map_rows(agent, self._data, template, **kwargs)

    async def amap(self, agent: str, template: str, **kwargs: Any) -> pd.DataFrame:
        """`agentnb.amap(agent, data, template, **kwargs)`, awaited."""
        from .frames import amap

        return await amap(agent, self._data, template, **kwargs)

    def estimate(self, agent: str, template: str, **kwargs: Any) -> Estimate:
        """What `map` would cost and take (`orch.estimate` of the rows' calls), run nothing."""
        from .frames import estimate_map

        return estimate_map(agent, self._data, template, **kwargs)


def register() -> None:
    """Register the accessor with pandas (imported here); a second call does nothing."""
    global _registered
    with _lock:
        if _registered:
            return
        from pandas.api.extensions import (
            register_dataframe_accessor,
            register_series_accessor,
        )

        register_dataframe_accessor(NAME)(AgentnbAccessor)
        register_series_accessor(NAME)(AgentnbAccessor)
        _registered = True


def install() -> None:
    """Register the accessor now if pandas is loaded, else right after pandas is imported."""
    if "pandas" in sys.modules:
        register()
    elif not any(isinstance(f, _AfterPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterPandas())


class _AfterPandas(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for `pandas` it asks the other finders and wraps their loader."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name != "pandas":
            return None
        with contextlib.suppress(ValueError):  # once is enough, and `find_spec` must skip it
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfter(spec.loader)
        return spec


class _RegisterAfter(importlib.abc.Loader):
    """Runs pandas' own loader, then registers the accessor (never failing pandas' import)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # pandas sees its own loader (resources, reloads), as if this wrapper was never there.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        try:
            register()
        except Exception:
            logger.warning("agentnb: could not register the df.agentnb accessor", exc_info=True)
