"""One `Config` object for every setting, filled in layers.

Precedence, lowest first: the defaults below < `agentnb.yaml` in the working directory (or the
file named by `AGENTNB_CONFIG`) < environment variables (`AGENTNB_<FIELD>`, plus
`ANTHROPIC_API_KEY` and `ANTHROPIC_BASE_URL`) < explicit arguments (`Config.load(**overrides)`,
or `%config AgentNB.<field> = ...` in IPython).

Each field is declared with `setting(...)`: its help text and, for a number, its range live in
the field's metadata, read by the checks here, by `%config AgentNB`'s help and by the `AgentNB`
traitlets. An unknown key, a value of the wrong type or one out of range (every float must also be
finite) is a `ConfigError` that names the key and where it came from (the file path, the variable
name, `arguments` or `%config AgentNB`). The API key is held apart from the other fields: it
never appears in `repr(config)`, `config.to_dict()` or any log line.

Example:
    >>> cfg = Config.load(backend="simulated", max_concurrency=4, env={})
    >>> cfg.max_concurrency, cfg.resolved_backend
    (4, 'simulated')
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml

from ._settings_meta import Secret, allows_none, convert, help_of, range_of, setting
from ._yaml import YAMLLimitError, load_bounded, read_bounded
from .errors import ConfigError
from .options import shown

__all__ = ["DEFAULT_MODEL_ALIASES", "Config", "Secret", "redact_url"]

CONFIG_FILE = "agentnb.yaml"

#: What `sonnet`, `opus` and `haiku` mean in an agent's `model:` field.
DEFAULT_MODEL_ALIASES: dict[str, str] = {
    "sonnet": "claude-sonnet-5-5",
    "opus": "claude-opus-5-5",
    "haiku": "claude-haiku-5-5",
}

BackendName = Literal["auto", "anthropic", "simulated"]
CacheBackendName = Literal["memory", "sqlite", "redis", "none"]
SIM_FAULT_KINDS = ("rate_limit", "server_error", "overloaded", "timeout", "connection")
TEN_YEARS_S = 10 * 365 * 24 * 3600.0  # the longest cache_ttl_s: past it, a TTL is a mistake


RatelimitBackendName = Literal["auto", "local", "sqlite", "redis"]
BatchRetryName = Literal["online", "batch"]
#: The keys of one entry of `rate_limits:` and `sim_limits:` (per model class, or "*").
QUOTA_KEYS = ("rpm", "itpm", "otpm", "burst_s")
SIM_QUOTA_KEYS = (*QUOTA_KEYS, "ramp_s")


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "agentnb"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agentnb"


# `setting()` returns a `dataclasses.field`, which ruff cannot see through (RUF009).
# ruff: noqa: RUF009
@dataclass(frozen=True)
class Config:
    """Every agentnb setting. Build it with `Config.load()`; change it with `replace()`."""

    # -- which backend answers --------------------------------------------------------------
    backend: BackendName = setting(
        "auto",
        help="Who answers: 'auto' (Claude when ANTHROPIC_API_KEY is set, else the offline "
        "simulator), 'anthropic' or 'simulated'.",
    )
    base_url: str | None = setting(
        None, help="Messages-API endpoint to call instead of Anthropic's."
    )
    default_model: str = setting(
        "claude-sonnet-5-5", help="Model for agents that name none (or 'inherit')."
    )
    model_aliases: dict[str, str] = setting(
        default_factory=lambda: dict(DEFAULT_MODEL_ALIASES),
        help="What 'sonnet', 'opus', 'haiku' mean in agent files.",
    )
    # -- orchestration ----------------------------------------------------------------------
    max_concurrency: int = setting(10, help="Most agent calls in flight at once.", ge=1, le=10_000)
    timeout_s: float = setting(
        120.0, help="Seconds one attempt may take before it is retried.", gt=0, le=3600
    )
    max_attempts: int = setting(4, help="Attempts per call, retries included.", ge=1, le=100)
    backoff_base_s: float = setting(
        0.5, help="First retry waits up to this many seconds.", gt=0, le=600
    )
    backoff_cap_s: float = setting(
        30.0, help="Longest wait between two attempts, in seconds.", gt=0, le=600
    )
    max_retry_wait_s: float = setting(
        60.0,
        help="Longest server retry-after honoured, in seconds; a longer one fails the call.",
        ge=0,
        le=3600,
    )
    max_tokens: int = setting(1024, help="Answer length limit for agents that set none.", ge=1)
    temperature: float | None = setting(
        None, help="Sampling temperature for agents that set none.", ge=0, le=1
    )
    max_task_chars: int = setting(100_000, help="Longest task accepted, in characters.", ge=1)
    prompt_caching: bool = setting(
        True, help="Mark agents' system prompts for the API's prompt cache."
    )
    progress: bool = setting(
        True,
        help="Show a live progress display for long jobs (execute_multiple, workflows); "
        "False turns it off.",
    )
    job_gc_threshold: int = setting(
        20_000,
        help="While a job of 1,000 calls or more runs, Python's young-generation garbage "
        "collection threshold is raised to this (restored after), so objects of calls in "
        "flight die young instead of being promoted and rescanned; 0 leaves it alone.",
        ge=0,
        le=1_000_000,
    )
    # -- quota and budget -------------------------------------------------------------------
    rate_limiting: bool = setting(
        True,
        help="Pace calls to the API's rate limits (learned from its headers, or rate_limits) "
        "instead of only reacting to 429s.",
    )
    rate_limits: dict[str, dict[str, float]] = setting(
        default_factory=dict,
        help="Known quotas per model class ('sonnet', 'opus', 'haiku', or '*' for any): "
        "{rpm, itpm, otpm, burst_s}; others are learned from the API's headers.",
    )
    ratelimit_backend: RatelimitBackendName = setting(
        "auto",
        help="Where the quota's buckets live: 'local' (this process), 'sqlite' (every process "
        "on this machine), 'redis' (every machine on redis_url); 'auto': sqlite when the "
        "cache is sqlite, else local.",
    )
    adaptive_concurrency: bool = setting(
        True,
        help="Under a quota, start slowly and halve the calls in flight on 429/529 "
        "(additive increase, multiplicative decrease), up to max_concurrency.",
    )
    max_cost_usd: float | None = setting(
        None, help="Budget of one job (execute_multiple, a workflow) in USD; none if unset.", ge=0
    )
    session_budget_usd: float | None = setting(
        None, help="Budget of everything this orchestrator runs, in USD; none if unset.", ge=0
    )
    batch_poll_s: float = setting(
        1.0,
        help="Message Batches: first wait between two looks at a batch, in seconds; each wait "
        "grows by half, up to batch_poll_max_s.",
        gt=0,
        le=3600,
    )
    batch_poll_max_s: float = setting(
        60.0, help="Message Batches: longest wait between two looks, in seconds.", gt=0, le=3600
    )
    batch_retry: BatchRetryName = setting(
        "online",
        help="Message Batches: requests that errored retryably are tried again 'online' (the "
        "normal path) or in a follow-up 'batch'.",
    )
    state_dir: Path = setting(
        default_factory=_default_state_dir,
        help="Directory of agentnb's state (shared quota, batch ledger; default: "
        "$XDG_STATE_HOME/agentnb or ~/.local/state/agentnb).",
    )
    # -- agents -----------------------------------------------------------------------------
    agents_dirs: list[Path] = setting(
        default_factory=list,
        help="Extra directories of agent files, searched before ./agents and ./.claude/agents.",
    )
    # -- offline simulator ------------------------------------------------------------------
    sim_latency_s: float = setting(0.2, help="Simulator: seconds per call.", ge=0, le=600)
    sim_latency_per_token_s: float = setting(
        0.0, help="Simulator: extra seconds per output token.", ge=0, le=600
    )
    sim_jitter: float = setting(
        0.1, help="Simulator: latency varies by +/- this fraction.", ge=0, le=1
    )
    sim_seed: int = setting(0, help="Simulator: seed of its answers.")
    sim_fault_rate: float = setting(0.0, help="Simulator: share of calls that fail.", ge=0, le=1)
    sim_fault_kinds: list[str] = setting(
        default_factory=lambda: list(SIM_FAULT_KINDS),
        help="Simulator: faults to draw from (" + ", ".join(SIM_FAULT_KINDS) + ").",
    )
    sim_rpm_limit: int | None = setting(
        None, help="Simulator: requests per minute before it answers 429.", ge=1
    )
    sim_limits: dict[str, dict[str, float]] = setting(
        default_factory=dict,
        help="Simulator: quotas it enforces per model class ('sonnet', ..., or '*'): "
        "{rpm, itpm, otpm, burst_s, ramp_s}, as the API does (429 past them).",
    )
    sim_spend_limit_usd: float | None = setting(
        None,
        help="Simulator: spend (at list prices) after which it answers the spend-limit 429.",
        ge=0,
    )
    sim_batch_latency_s: float = setting(
        2.0,
        help="Simulator: seconds a batch of up to 1,000 requests takes to process (larger "
        "ones take proportionally longer).",
        ge=0,
        le=86_400,
    )
    sim_batch_error_rate: float = setting(
        0.0, help="Simulator: share of a batch's requests that end 'errored'.", ge=0, le=1
    )
    sim_batch_expire_rate: float = setting(
        0.0, help="Simulator: share of a batch's requests that end 'expired'.", ge=0, le=1
    )
    sim_fault_burst: float = setting(
        1.0,
        help="Simulator: mean length of a run of random faults (1: independent draws).",
        ge=1,
        le=1000,
    )
    sim_invalid_rate: float = setting(
        0.0,
        help="Simulator: share of structured answers (schema=) that break their schema, to "
        "exercise the repair turn.",
        ge=0,
        le=1,
    )
    # -- response cache ---------------------------------------------------------------------
    cache_enabled: bool = setting(True, help="Reuse earlier answers to identical calls.")
    cache_backend: CacheBackendName = setting(
        "sqlite",
        help="Where cached answers live besides memory: 'sqlite', 'redis', 'memory', 'none'.",
    )
    cache_dir: Path = setting(
        default_factory=_default_cache_dir,
        help="Directory of the SQLite cache (default: $XDG_CACHE_HOME/agentnb or "
        "~/.cache/agentnb).",
    )
    cache_ttl_s: float = setting(
        7 * 24 * 3600.0,
        help="Seconds a cached answer stays valid (0: forever; at most 10 years).",
        ge=0,
        le=TEN_YEARS_S,
    )
    cache_memory_entries: int = setting(2048, help="Most answers kept in memory.", ge=1)
    cache_memory_bytes: int = setting(
        64 * 1024 * 1024, help="Most bytes of answers kept in memory.", ge=1
    )
    cache_disk_bytes: int = setting(
        1024 * 1024 * 1024, help="Most bytes the SQLite cache may hold.", ge=1
    )
    cache_exclude: list[str] = setting(
        default_factory=list, help="Agents whose answers are never cached."
    )
    redis_url: str = setting("redis://127.0.0.1:6379/0", help="Redis server of the 'redis' cache.")
    # -- metrics ----------------------------------------------------------------------------
    metrics_path: Path | None = setting(
        None,
        help="A JSONL file every call record is appended to (it survives kernel restarts).",
    )
    # -- kept apart from the rest: never shown --------------------------------------------
    api_key: Secret | None = field(
        default=None,
        repr=False,
        compare=False,
        metadata={"help": "The Anthropic API key, from ANTHROPIC_API_KEY only."},
    )

    def __post_init__(self) -> None:
        _check_ranges(self, source="arguments")

    # ------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        *,
        path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Config:
        """Build a Config from defaults < file < environment < `overrides`.

        `path` defaults to `$AGENTNB_CONFIG`, else `./agentnb.yaml` (skipped when absent); a file
        named by `path` or the variable must exist. `env` defaults to `os.environ` (pass `{}` for
        a configuration that ignores it).
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        file_path = _config_file(path, env)
        if file_path is not None:
            values.update(_read_file(file_path))
        values.update(_read_env(env))
        for key, value in overrides.items():
            values[key] = coerce_setting(key, value, source="arguments")
        return _build(cls, values, source="arguments")

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied and checked, like `dataclasses.replace`."""
        values = {k: coerce_setting(k, v, source="arguments") for k, v in changes.items()}
        return dataclasses.replace(self, **values)

    # ------------------------------------------------------------------------------------
    @property
    def resolved_backend(self) -> Literal["anthropic", "simulated"]:
        """`auto` resolved: the Anthropic API when a key is set, else the simulator."""
        if self.backend == "auto":
            return "anthropic" if self.api_key else "simulated"
        return self.backend

    def resolve_model(self, model: str | None) -> str:
        """Turn an alias (`sonnet`), `inherit` or None into a model id; pass unknown ids through."""
        if not model or model == "inherit":
            model = self.default_model
        return self.model_aliases.get(model, model)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values, fit to show: the API key only as set/unset, and any
        user name or password in a URL (`redis_url`, `base_url`) replaced by `***`."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "api_key":
                out[f.name] = "***" if value else None
            elif f.name.endswith("_url") and isinstance(value, str):
                out[f.name] = redact_url(value)
            elif isinstance(value, Path):
                out[f.name] = str(value)
            elif isinstance(value, list):
                out[f.name] = [str(v) if isinstance(v, Path) else v for v in value]
            else:
                out[f.name] = value
        return out

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "api_key")
        return f"Config({settings})"


def redact_url(url: str) -> str:
    """`url` with its user name and password (if any) replaced by `***`.

    Example:
        >>> redact_url("redis://:hunter2@localhost:6379/0")
        'redis://***@localhost:6379/0'
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


# -- loading helpers -------------------------------------------------------------------------

_HINTS: dict[str, Any] = {}
_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def setting_types() -> dict[str, Any]:
    """Each setting's type hint, resolved (`{'max_concurrency': int, ...}`)."""
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(Config))
    return _HINTS


def field_names() -> list[str]:
    """Names of the settings a user may set (the API key included)."""
    return list(_FIELDS)


def setting_help(name: str) -> str:
    """The help of setting `name`, its range included (what `%config AgentNB` shows)."""
    return help_of(_FIELDS[name])


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = load_bounded(read_bounded(path))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except YAMLLimitError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise ConfigError(
            f"{path}{where}: not valid YAML ({' '.join(str(problem).split())})"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    source = str(path)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "api_key":
            raise ConfigError(
                f"{source}: 'api_key' may not be stored in a config file; "
                "set ANTHROPIC_API_KEY in the environment instead"
            )
        out[str(key)] = coerce_setting(str(key), value, source=source)
    return out


def _config_file(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """The config file to read: `path`, else `$AGENTNB_CONFIG`, else `./agentnb.yaml` if any.

    A file named on purpose (by `path` or the variable) must exist; only the default may not.
    """
    if path is not None:
        named, source = Path(path), "config file"
    elif "AGENTNB_CONFIG" in env:
        raw = env["AGENTNB_CONFIG"]
        if not raw.strip():
            raise ConfigError("AGENTNB_CONFIG is set but empty: name a config file, or unset it")
        named, source = Path(raw).expanduser(), "AGENTNB_CONFIG: config file"
    else:
        default = Path(CONFIG_FILE)
        return default if default.is_file() else None
    if not named.is_file():
        missing = "is not a file" if named.exists() else "does not exist"
        raise ConfigError(f"{source} {named} {missing}")
    return named


def _read_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = set(field_names()) - {"api_key"}
    for var, raw in env.items():
        if not var.startswith("AGENTNB_") or var == "AGENTNB_CONFIG":
            continue
        if var in ("AGENTNB_CACHE_SECRET",):  # read by the cache itself, never stored here
            continue
        key = var[len("AGENTNB_") :].lower()
        if key not in names:
            continue  # other tools may share the prefix; unknown env vars are not an error
        out[key] = coerce_setting(key, _parse_env_value(key, raw), source=var)
    if env.get("ANTHROPIC_API_KEY"):
        out["api_key"] = Secret(env["ANTHROPIC_API_KEY"])
    if env.get("ANTHROPIC_BASE_URL") and "base_url" not in out:
        out["base_url"] = env["ANTHROPIC_BASE_URL"]
    return out


def _parse_env_value(key: str, raw: str) -> Any:
    hint = setting_types()[key]
    origin = typing.get_origin(hint)
    if origin is list:
        return [
            part.strip()
            for part in raw.split(os.pathsep if key.endswith("dirs") else ",")
            if part.strip()
        ]
    if origin is dict:
        try:
            return load_bounded(raw)
        except (yaml.YAMLError, YAMLLimitError):
            return raw
    if raw.strip().lower() in ("", "none", "null") and allows_none(hint):
        return None
    return raw


def coerce_setting(key: str, value: Any, *, source: str) -> Any:
    """`value` checked as setting `key` (its type and range), strings converted where safe.

    `source` says where the value came from (a file path, a variable name, `arguments`,
    `%config AgentNB`); a `ConfigError` names it and the key.
    """
    hints = setting_types()
    if key not in hints:
        close = [n for n in field_names() if n.split("_")[0] == key.split("_")[0]]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{source}: unknown setting {shown(key)}{hint}")
    converted = convert(key, value, hints[key], source)
    _check_value(key, converted, source=source)
    return converted


def _build(cls: type[Config], values: dict[str, Any], *, source: str) -> Config:
    try:
        return cls(**values)
    except ConfigError:
        raise
    except TypeError as exc:  # pragma: no cover - keys were checked in coerce_setting
        raise ConfigError(f"{source}: {exc}") from None


def _check_value(key: str, value: Any, *, source: str) -> None:
    """The range of one setting (from its field), so the error names where the value came from."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: setting {key!r} must be a finite number, got {shown(value)}")
    bounds = range_of(_FIELDS[key])
    problem = bounds.problem(value) if bounds is not None else None
    if problem is not None:
        raise ConfigError(f"{source}: setting {key!r} must be {problem}, got {shown(value)}")
    if key in ("rate_limits", "sim_limits"):
        _check_quotas(key, value, source=source)
    if key == "sim_fault_kinds":
        unknown = [k for k in value if k not in SIM_FAULT_KINDS]
        if unknown:
            raise ConfigError(
                f"{source}: setting 'sim_fault_kinds' has unknown kinds "
                f"{', '.join(shown(k) for k in unknown[:3])}{', ...' if len(unknown) > 3 else ''}; "
                f"choose from {list(SIM_FAULT_KINDS)}"
            )


def _check_quotas(key: str, value: dict[str, dict[str, float]], *, source: str) -> None:
    allowed = SIM_QUOTA_KEYS if key == "sim_limits" else QUOTA_KEYS
    for model, entry in value.items():
        for name, number in entry.items():
            where = f"{source}: setting {key!r}, model class {shown(model)}"
            if name not in allowed:
                raise ConfigError(f"{where}: unknown key {shown(name)}; use {', '.join(allowed)}")
            if not (math.isfinite(number) and number > 0):
                raise ConfigError(f"{where}: {name} must be a number above 0, got {shown(number)}")


def _check_ranges(cfg: Config, *, source: str) -> None:
    for name in _FIELDS:
        _check_value(name, getattr(cfg, name), source=source)
