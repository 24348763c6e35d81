"""`AgentNB`: the extension's settings (`%config AgentNB.<name> = value`) and its orchestrator.

Every `Config` field but the API key is a traitlet here, made from the field itself: its type,
its default and its help (with its range) come from `Config`, so the two cannot drift apart. (The
key is left out: it comes from `ANTHROPIC_API_KEY` only, so it never lands in a notebook.) A value
is checked when it is set, with the same rules as `Config`; a bad one is refused with one line
naming the setting, and is stored nowhere (not in the shell's config either, so a later
`%reload_ext agentnb` does not meet it again).

Only the settings a user actually set (with `%config`, or `c.AgentNB.<name>` in an IPython
profile) override the lower layers, so `agentnb.yaml` and `AGENTNB_*` variables still apply to
everything else. `%config AgentNB` lists every setting with its built-in default and the value
in effect (and where that came from); `%agentnb config` shows the same as a table.

The magics run on `agentnb.default_orchestrator()`, the process's shared orchestrator, so Python
code in the notebook (`agentnb.compare_speedup(...)`, `default_orchestrator().metrics()`) sees the
same calls, cache and settings. Before each command the settings are compared with the
orchestrator's; when they differ (a `%config` change, a new `ANTHROPIC_API_KEY`), they are applied
to it in place (`AgentOrchestrator.reconfigure`): a handle taken earlier keeps working, and only
what a changed setting concerns is remade (the backend for backend and `sim_*` settings, the
response cache for `cache_*` ones, ...), so the cache, injected simulator faults and the session's
call records survive unrelated changes (`%agentnb reset` forgets the records). The one exception
is a new `metrics_path`: the records then come from (and go to) that file.

Example:
    >>> session = AgentNB()
    >>> session.max_concurrency = 4
    >>> session.explicit_settings()
    ['max_concurrency']
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from traitlets import (
    Bool,
    Dict,
    Enum,
    Float,
    HasTraits,
    Int,
    List,
    TraitError,
    TraitType,
    Unicode,
    validate,
)
from traitlets.config import Config as TraitletsConfig
from traitlets.config import Configurable
from traitlets.utils.bunch import Bunch

from .. import orchestrator as orchestrator_module
from .._settings_meta import allows_none
from ..config import Config, coerce_setting, field_names, setting_help, setting_types
from ..errors import ConfigError
from ..orchestrator import AgentOrchestrator, default_orchestrator

__all__ = ["SETTINGS", "AgentNB"]

#: The Config fields exposed as `%config AgentNB.<name>` (all but the API key).
SETTINGS: tuple[str, ...] = tuple(n for n in field_names() if n != "api_key")

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_SECTION = "AgentNB"  # the class's section of a traitlets config: `c.AgentNB.<name>`

#: How each kind of setting becomes a traitlet: (type hint, default, options) -> traitlet. Paths
#: are strings; lists (of names or of paths) are lists of strings.
_TRAIT_MAKERS: dict[Any, Callable[..., TraitType[Any, Any]]] = {
    bool: lambda _, default, **kw: Bool(default_value=default, **kw),
    int: lambda _, default, **kw: Int(default_value=default, **kw),
    float: lambda _, default, **kw: Float(default_value=default, **kw),
    str: lambda _, default, **kw: Unicode(default_value=default, **kw),
    Path: lambda _, default, **kw: Unicode(default_value=default, **kw),
    dict: lambda _, default, **kw: Dict(default_value=default, **kw),
    list: lambda _, default, **kw: List(Unicode(), default_value=default, **kw),
    Literal: lambda hint, default, **kw: Enum(typing.get_args(hint), default_value=default, **kw),
}


def _trait_default(f: dataclasses.Field[Any]) -> Any:
    """A field's default as its traitlet shows it: paths as strings, and None for a path Config
    makes from the environment (`cache_dir`), which then stays Config's to choose."""
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if isinstance(value, Path):
            return None
    else:
        value = f.default
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [str(v) if isinstance(v, Path) else v for v in value]
    return value


def _trait(name: str) -> TraitType[Any, Any]:
    """The traitlet of setting `name`, made from its Config field: type, default, help."""
    hint = setting_types()[name]
    optional = allows_none(hint)
    if optional:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    default = _trait_default(_FIELDS[name])
    make = _TRAIT_MAKERS[typing.get_origin(hint) or hint]
    trait = make(hint, default, allow_none=optional or default is None, help=setting_help(name))
    return trait.tag(config=True)


#: Settings whose traitlet shows None for a default Config makes itself (`cache_dir`): None set
#: here means "that default", not a value.
_NONE_MEANS_DEFAULT = frozenset(
    n
    for n in SETTINGS
    if _trait_default(_FIELDS[n]) is None and not allows_none(setting_types()[n])
)

_C = TypeVar("_C", bound=Configurable)


def _with_setting_traits(cls: type[_C]) -> type[_C]:
    """Class decorator: one traitlet per setting, set up as if written in the class body."""
    traits = {name: _trait(name) for name in SETTINGS}
    for name, trait in traits.items():
        setattr(cls, name, trait)
    cls.setup_class({**vars(cls), **traits})  # what traitlets' metaclass does with a class body
    return cls


@_with_setting_traits
class AgentNB(Configurable):
    """agentnb's settings in IPython; set them with `%config AgentNB.<setting> = <value>`.

    Settings not set here come from `agentnb.yaml` and `AGENTNB_*` environment variables (then
    the built-in defaults); `%agentnb config` shows the values in effect. A change takes effect
    at the next agentnb command, applied in place to the shared orchestrator (handles to it stay
    valid; its cache and call records are kept unless a setting concerns them). The API key is
    read from `ANTHROPIC_API_KEY` only.

    Its traitlets are made from `Config`'s fields (type, default, help with the range), one per
    setting, so a new setting needs no code here.
    """

    def __init__(self, **kwargs: Any) -> None:
        # Names set directly (session.x = ...); those set through config are read from it.
        self._direct: set[str] = set()
        super().__init__(**kwargs)

    @validate(*SETTINGS)
    def _check_setting(self, proposal: Bunch) -> Any:
        name: str = proposal["trait"].name
        value = proposal["value"]
        if value is not None or name not in _NONE_MEANS_DEFAULT:
            try:
                coerce_setting(name, value, source="%config AgentNB")
            except ConfigError as exc:
                raise TraitError(str(exc)) from None
        self._direct.add(name)
        return value

    def update_config(self, config: TraitletsConfig) -> None:
        """Load `config` (what `%config AgentNB.x = v` does); what is refused is stored nowhere.

        A refused value leaves the settings and `self.config` as they were. `%config` hands the
        same `config` to each of the shell's configurables in turn, and those before this one
        have merged it already: a refused batch is taken out of `config`, so those after never
        see it, and out of the earlier ones' records, or `%reload_ext agentnb` would meet it.
        """
        direct = set(self._direct)
        try:
            super().update_config(config)
        except TraitError:
            self._direct = direct
            self._forget(config)
            raise

    def _forget(self, refused: TraitletsConfig) -> None:
        """Take a refused batch out of `refused` and put each configurable's record back."""
        if _SECTION not in refused:
            return
        names = list(refused[_SECTION])
        del refused[_SECTION]
        kept = self.config[_SECTION] if _SECTION in self.config else TraitletsConfig()
        # The AgentNB section of any configurable's record is ours to keep right.
        for holder in (self.parent, *getattr(self.parent, "configurables", ())):
            if not isinstance(holder, Configurable) or holder is self:
                continue
            if _SECTION not in holder.config:
                continue
            section = holder.config[_SECTION]
            for name in names:
                if name in kept:
                    section[name] = copy.deepcopy(kept[name])
                else:
                    section.pop(name, None)

    # -- what the magics use ------------------------------------------------------------------
    def explicit_settings(self) -> list[str]:
        """Names of the settings set in this session (they override agentnb.yaml and env)."""
        names = set(self._direct)
        if _SECTION in self.config:
            # %config and IPython profiles go through the config; a value equal to the
            # trait's current one sends no change event, so the config is the record.
            names.update(n for n in self.config[_SECTION] if n in SETTINGS)
        return sorted(names)

    def effective_config(self) -> Config:
        """`Config.load()` with the settings set here on top."""
        values = {n: getattr(self, n) for n in self.explicit_settings()}
        return Config.load(
            **{n: v for n, v in values.items() if v is not None or n not in _NONE_MEANS_DEFAULT}
        )

    def effective_settings(self) -> dict[str, tuple[Any, str]]:
        """Every setting (the key shown as `***`): its value in effect and where it came from.

        Sources: `%config`, `default`, or `agentnb.yaml / environment` for any other value.
        """
        values = self.effective_config().to_dict()
        builtin = Config().to_dict()
        explicit = set(self.explicit_settings())
        out: dict[str, tuple[Any, str]] = {}
        for name, value in values.items():
            if name == "api_key":
                source = "ANTHROPIC_API_KEY" if value else "not set"
            elif name in explicit:
                source = "%config"
            elif value == builtin[name]:
                source = "default"
            else:
                source = "agentnb.yaml / environment"
            out[name] = (value, source)
        return out

    @classmethod
    def class_get_help(cls, inst: HasTraits | None = None) -> str:
        """`%config AgentNB`: each setting's help, built-in default and value in effect."""
        if not isinstance(inst, AgentNB):
            return str(super().class_get_help(inst))
        head = f"{cls.__name__} options (`%config AgentNB.<name> = <value>`)"
        lines = [
            head,
            "-" * len(head),
            "Settings not set here come from agentnb.yaml and AGENTNB_* environment variables.",
        ]
        try:
            settings = inst.effective_settings()
        except ConfigError as exc:
            settings = {}
            lines.append(f"(The values in effect are unknown: {exc})")
        for name, trait in sorted(cls.class_traits(config=True).items()):
            lines.append(cls.class_get_trait_help(trait))
            if name in settings:
                value, source = settings[name]
                lines.append(f"    Current: {value!r} ({source})")
        return "\n".join(lines)

    def orchestrator(self) -> AgentOrchestrator:
        """The shared orchestrator, with the settings in effect applied to it first.

        It is made on first use; after a change it is reconfigured in place
        (`AgentOrchestrator.reconfigure`), so handles to it stay valid and whatever the changed
        settings do not touch (the response cache, the backend with its injected faults, the
        agents, the call records) is kept.
        """
        wanted = self.effective_config()
        # Peek (`default_orchestrator()` would make one); a closed one still hands on its records.
        current: AgentOrchestrator | None = orchestrator_module._default
        if current is None or current.closed:
            fresh = default_orchestrator(wanted)
            if current is not None and current.tracker.path is None and wanted.metrics_path is None:
                fresh.tracker.extend(current.tracker.records)  # the session's records live on
            return fresh
        if not _same(current.config, wanted):
            current.reconfigure(wanted)
        return current

    def banner(self) -> str:
        """One line saying which backend answers (never the key itself)."""
        try:
            cfg = self.effective_config()
        except ConfigError as exc:
            return f"agentnb: configuration error: {exc}"
        if cfg.resolved_backend == "anthropic":
            return f"agentnb: agents answer with Claude (default model {cfg.default_model})"
        why = (
            "set ANTHROPIC_API_KEY to call Claude" if cfg.backend == "auto" else "backend=simulated"
        )
        return f"agentnb: agents answer with the offline simulator ({why})"


def _same(a: Config, b: Config) -> bool:
    # Config equality leaves the key out on purpose (compare=False); a new key matters here.
    return a == b and a.api_key == b.api_key
