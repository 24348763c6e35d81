"""`AgentNB`: the extension's settings (`%config AgentNB.<name> = value`) and its orchestrator.

Every `Config` field that makes sense in a notebook is a traitlet here (the API key is not: it
comes from `ANTHROPIC_API_KEY` only, so it never lands in a notebook). A value is checked when it
is set, with the same rules as `Config`; a bad one is refused with one line naming the setting.

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

import dataclasses
from typing import Any

from traitlets import Bool, Dict, Enum, Float, HasTraits, Int, List, TraitError, Unicode, validate
from traitlets.config import Configurable
from traitlets.utils.bunch import Bunch

from .. import orchestrator as orchestrator_module
from ..config import Config, _coerce, field_names
from ..errors import ConfigError
from ..orchestrator import AgentOrchestrator, default_orchestrator

__all__ = ["SETTINGS", "AgentNB"]

#: The Config fields exposed as `%config AgentNB.<name>` (all but the API key).
SETTINGS: tuple[str, ...] = tuple(n for n in field_names() if n != "api_key")

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _default(name: str) -> Any:
    """The built-in default of a Config field (what `%config AgentNB` shows as Default)."""
    f = _FIELDS[name]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


class AgentNB(Configurable):
    """agentnb's settings in IPython; set them with `%config AgentNB.<setting> = <value>`.

    Settings not set here come from `agentnb.yaml` and `AGENTNB_*` environment variables (then
    the built-in defaults); `%agentnb config` shows the values in effect. A change takes effect
    at the next agentnb command, applied in place to the shared orchestrator (handles to it stay
    valid; its cache and call records are kept unless a setting concerns them). The API key is
    read from `ANTHROPIC_API_KEY` only.
    """

    # -- which backend answers ----------------------------------------------------------------
    backend = Enum(
        ("auto", "anthropic", "simulated"),
        default_value=_default("backend"),
        help="Who answers: 'auto' (Claude when ANTHROPIC_API_KEY is set, else the offline "
        "simulator), 'anthropic' or 'simulated'.",
    ).tag(config=True)
    base_url = Unicode(
        None, allow_none=True, help="Messages-API endpoint to call instead of Anthropic's."
    ).tag(config=True)
    default_model = Unicode(
        _default("default_model"), help="Model for agents that name none (or 'inherit')."
    ).tag(config=True)
    model_aliases = Dict(
        _default("model_aliases"), help="What 'sonnet', 'opus', 'haiku' mean in agent files."
    ).tag(config=True)
    # -- orchestration ------------------------------------------------------------------------
    max_concurrency = Int(
        _default("max_concurrency"), help="Most agent calls in flight at once (at least 1)."
    ).tag(config=True)
    timeout_s = Float(
        _default("timeout_s"), help="Seconds one attempt may take before it is retried."
    ).tag(config=True)
    max_attempts = Int(
        _default("max_attempts"), help="Attempts per call, retries included (at least 1)."
    ).tag(config=True)
    backoff_base_s = Float(
        _default("backoff_base_s"), help="First retry waits up to this many seconds."
    ).tag(config=True)
    backoff_cap_s = Float(
        _default("backoff_cap_s"), help="Longest wait between two attempts, in seconds."
    ).tag(config=True)
    max_retry_wait_s = Float(
        _default("max_retry_wait_s"),
        help="Longest server retry-after honoured, in seconds; a longer one fails the call.",
    ).tag(config=True)
    max_tokens = Int(
        _default("max_tokens"), help="Answer length limit for agents that set none."
    ).tag(config=True)
    temperature = Float(
        None, allow_none=True, help="Sampling temperature (0 to 1) for agents that set none."
    ).tag(config=True)
    max_task_chars = Int(
        _default("max_task_chars"), help="Longest task accepted, in characters."
    ).tag(config=True)
    prompt_caching = Bool(
        _default("prompt_caching"), help="Mark agents' system prompts for the API's prompt cache."
    ).tag(config=True)
    # -- agents -------------------------------------------------------------------------------
    agents_dirs = List(
        Unicode(),
        default_value=[],
        help="Extra directories of agent files, searched before ./agents and ./.claude/agents.",
    ).tag(config=True)
    # -- offline simulator --------------------------------------------------------------------
    sim_latency_s = Float(_default("sim_latency_s"), help="Simulator: seconds per call.").tag(
        config=True
    )
    sim_latency_per_token_s = Float(
        _default("sim_latency_per_token_s"), help="Simulator: extra seconds per output token."
    ).tag(config=True)
    sim_jitter = Float(
        _default("sim_jitter"), help="Simulator: latency varies by +/- this fraction."
    ).tag(config=True)
    sim_seed = Int(_default("sim_seed"), help="Simulator: seed of its answers.").tag(config=True)
    sim_fault_rate = Float(
        _default("sim_fault_rate"), help="Simulator: share of calls that fail (0 to 1)."
    ).tag(config=True)
    sim_fault_kinds = List(
        Unicode(),
        default_value=_default("sim_fault_kinds"),
        help="Simulator: faults to draw from (rate_limit, server_error, overloaded, timeout, "
        "connection).",
    ).tag(config=True)
    sim_rpm_limit = Int(
        None, allow_none=True, help="Simulator: requests per minute before it answers 429."
    ).tag(config=True)
    # -- response cache -----------------------------------------------------------------------
    cache_enabled = Bool(
        _default("cache_enabled"), help="Reuse earlier answers to identical calls."
    ).tag(config=True)
    cache_backend = Enum(
        ("memory", "sqlite", "redis", "none"),
        default_value=_default("cache_backend"),
        help="Where cached answers live besides memory: 'sqlite', 'redis', 'memory', 'none'.",
    ).tag(config=True)
    cache_dir = Unicode(
        None,
        allow_none=True,
        help="Directory of the SQLite cache (default: $XDG_CACHE_HOME/agentnb or "
        "~/.cache/agentnb).",
    ).tag(config=True)
    cache_ttl_s = Float(
        _default("cache_ttl_s"), help="Seconds a cached answer stays valid (0: forever)."
    ).tag(config=True)
    cache_memory_entries = Int(
        _default("cache_memory_entries"), help="Most answers kept in memory."
    ).tag(config=True)
    cache_memory_bytes = Int(
        _default("cache_memory_bytes"), help="Most bytes of answers kept in memory."
    ).tag(config=True)
    cache_disk_bytes = Int(
        _default("cache_disk_bytes"), help="Most bytes the SQLite cache may hold."
    ).tag(config=True)
    cache_exclude = List(
        Unicode(), default_value=[], help="Agents whose answers are never cached."
    ).tag(config=True)
    redis_url = Unicode(_default("redis_url"), help="Redis server of the 'redis' cache.").tag(
        config=True
    )
    # -- metrics ------------------------------------------------------------------------------
    metrics_path = Unicode(
        None,
        allow_none=True,
        help="A JSONL file every call record is appended to (it survives kernel restarts).",
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        # Names set directly (session.x = ...); those set through config are read from it.
        self._direct: set[str] = set()
        super().__init__(**kwargs)

    @validate(*SETTINGS)
    def _check_setting(self, proposal: Bunch) -> Any:
        name: str = proposal["trait"].name
        value = proposal["value"]
        try:
            _coerce(name, value, source="%config AgentNB")
        except ConfigError as exc:
            raise TraitError(str(exc)) from None
        self._direct.add(name)
        return value

    # -- what the magics use ------------------------------------------------------------------
    def explicit_settings(self) -> list[str]:
        """Names of the settings set in this session (they override agentnb.yaml and env)."""
        names = set(self._direct)
        if "AgentNB" in self.config:
            # %config and IPython profiles go through the config; a value equal to the
            # trait's current one sends no change event, so the config is the record.
            names.update(n for n in self.config["AgentNB"] if n in SETTINGS)
        return sorted(names)

    def effective_config(self) -> Config:
        """`Config.load()` with the settings set here on top."""
        return Config.load(**{n: getattr(self, n) for n in self.explicit_settings()})

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
        current = orchestrator_module._default  # peek: `default_orchestrator()` would make one
        if current is None or current.aio._closed:
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
