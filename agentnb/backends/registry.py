"""Which backend answers: backend factories by name, and `make_backend` choosing among them.

A new backend is one module (a `Backend` subclass with a `from_config`) and one line in
`BACKENDS`, or one `register_backend` call from outside the package.

Example:
    >>> from agentnb.config import Config
    >>> make_backend(Config.load(backend="simulated", env={})).kind
    'simulated'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..errors import ConfigError
from .anthropic import AnthropicBackend
from .base import Backend
from .simulated import SimulatedBackend

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["BACKENDS", "BackendFactory", "make_backend", "register_backend"]


class BackendFactory(Protocol):
    """Makes a backend from the configuration (typically a backend class's `from_config`)."""

    def __call__(self, config: Config, /) -> Backend: ...


#: Every backend by the name `Config.resolved_backend` gives it.
BACKENDS: dict[str, BackendFactory] = {
    "anthropic": AnthropicBackend.from_config,
    "simulated": SimulatedBackend.from_config,
}


def register_backend(name: str, factory: BackendFactory, *, replace: bool = False) -> None:
    """Make `factory` the backend called `name`; replacing one needs `replace=True`.

    Example:
        >>> register_backend("quiet-sim", lambda cfg: SimulatedBackend(latency_s=0))
        >>> "quiet-sim" in BACKENDS
        True
        >>> del BACKENDS["quiet-sim"]
    """
    if not name:
        raise ValueError("a backend needs a name")
    if name in BACKENDS and not replace:
        raise ValueError(f"a backend named {name!r} is already registered (pass replace=True)")
    BACKENDS[name] = factory


def make_backend(config: Config) -> Backend:
    """The backend `config.resolved_backend` names, made from `config`."""
    name = config.resolved_backend
    factory = BACKENDS.get(name)
    if factory is None:
        raise ConfigError(f"unknown backend {name!r}; registered: {', '.join(sorted(BACKENDS))}")
    return factory(config)
