"""One `Config` object for every setting, filled in layers.

Precedence, lowest first: the defaults below < `agentnb.yaml` in the working directory (or the
file named by `AGENTNB_CONFIG`) < environment variables (`AGENTNB_<FIELD>`, plus
`ANTHROPIC_API_KEY` and `ANTHROPIC_BASE_URL`) < explicit arguments (`Config.load(**overrides)`,
or `%config AgentNB.<field> = ...` in IPython).

An unknown key or a value of the wrong type is a `ConfigError` that names the key and where it
came from (the file path or the variable name). The API key is held apart from the other fields:
it never appears in `repr(config)`, `config.to_dict()` or any log line.

Example:
    >>> cfg = Config.load(backend="simulated", max_concurrency=4, env={})
    >>> cfg.max_concurrency, cfg.resolved_backend
    (4, 'simulated')
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml

from .errors import ConfigError

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


class Secret:
    """A string that does not show itself: repr/str give `'***'`; `.get()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        # Refuse to be pickled into notebooks, caches or multiprocessing payloads by accident.
        raise TypeError("Secret values cannot be pickled")


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agentnb"


@dataclass(frozen=True)
class Config:
    """Every agentnb setting. Build it with `Config.load()`; change it with `replace()`."""

    # -- which backend answers --------------------------------------------------------------
    backend: BackendName = "auto"
    base_url: str | None = None
    default_model: str = "claude-sonnet-5-5"
    model_aliases: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MODEL_ALIASES))
    # -- orchestration ----------------------------------------------------------------------
    max_concurrency: int = 10
    timeout_s: float = 120.0
    max_attempts: int = 4
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    max_retry_wait_s: float = 60.0  # a longer retry-after from the server fails the call at once
    max_tokens: int = 1024
    temperature: float | None = None
    max_task_chars: int = 100_000
    prompt_caching: bool = True
    # -- agents -----------------------------------------------------------------------------
    agents_dirs: list[Path] = field(default_factory=list)
    # -- offline simulator ------------------------------------------------------------------
    sim_latency_s: float = 0.2
    sim_latency_per_token_s: float = 0.0
    sim_jitter: float = 0.1
    sim_seed: int = 0
    sim_fault_rate: float = 0.0
    sim_fault_kinds: list[str] = field(
        default_factory=lambda: [
            "rate_limit",
            "server_error",
            "overloaded",
            "timeout",
            "connection",
        ]
    )
    sim_rpm_limit: int | None = None
    # -- response cache (used from the cache issue on) ---------------------------------------
    cache_enabled: bool = True
    cache_backend: CacheBackendName = "sqlite"
    cache_dir: Path = field(default_factory=_default_cache_dir)
    cache_ttl_s: float = 7 * 24 * 3600.0
    cache_memory_entries: int = 2048
    cache_memory_bytes: int = 64 * 1024 * 1024
    cache_disk_bytes: int = 1024 * 1024 * 1024
    cache_exclude: list[str] = field(default_factory=list)
    redis_url: str = "redis://127.0.0.1:6379/0"
    # -- metrics ----------------------------------------------------------------------------
    metrics_path: Path | None = None  # a JSONL file the call records are appended to
    # -- kept apart from the rest: never shown --------------------------------------------
    api_key: Secret | None = field(default=None, repr=False, compare=False)

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

        `path` defaults to `$AGENTNB_CONFIG` or `./agentnb.yaml` (skipped when absent);
        `env` defaults to `os.environ` (pass `{}` for a configuration that ignores it).
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        file_path = Path(path) if path is not None else Path(env.get("AGENTNB_CONFIG", CONFIG_FILE))
        if file_path.is_file():
            values.update(_read_file(file_path))
        elif path is not None:
            raise ConfigError(f"config file {file_path} does not exist")
        values.update(_read_env(env))
        for key, value in overrides.items():
            values[key] = _coerce(key, value, source="arguments")
        return _build(cls, values, source="arguments")

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied and checked, like `dataclasses.replace`."""
        values = {k: _coerce(k, v, source="arguments") for k, v in changes.items()}
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
        shown = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "api_key")
        return f"Config({shown})"


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


def _hints() -> dict[str, Any]:
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(Config))
    return _HINTS


def field_names() -> list[str]:
    """Names of the settings a user may set (the API key included)."""
    return [f.name for f in dataclasses.fields(Config)]


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({exc})") from None
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
        out[str(key)] = _coerce(str(key), value, source=source)
    return out


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
        out[key] = _coerce(key, _parse_env_value(key, raw), source=var)
    if env.get("ANTHROPIC_API_KEY"):
        out["api_key"] = Secret(env["ANTHROPIC_API_KEY"])
    if env.get("ANTHROPIC_BASE_URL") and "base_url" not in out:
        out["base_url"] = env["ANTHROPIC_BASE_URL"]
    return out


def _parse_env_value(key: str, raw: str) -> Any:
    hint = _hints()[key]
    origin = typing.get_origin(hint)
    if origin is list:
        return [
            part.strip()
            for part in raw.split(os.pathsep if key.endswith("dirs") else ",")
            if part.strip()
        ]
    if origin is dict:
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            return raw
    if raw.strip().lower() in ("", "none", "null") and _allows_none(hint):
        return None
    return raw


def _allows_none(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(
        None
    ) in typing.get_args(hint)


def _coerce(key: str, value: Any, *, source: str) -> Any:
    """Check `value` against the type of field `key`, converting strings where it is safe."""
    hints = _hints()
    if key not in hints:
        close = [n for n in field_names() if n.split("_")[0] == key.split("_")[0]]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{source}: unknown setting {key!r}{hint}")
    converted = _convert(key, value, hints[key], source)
    _check_value(key, converted, source=source)
    return converted


def _convert(key: str, value: Any, hint: Any, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)

    def bad(expected: str) -> ConfigError:
        shown = "a value" if key == "api_key" else repr(value)  # never echo a secret
        return ConfigError(
            f"{source}: setting {key!r} must be {expected}, got {shown} ({type(value).__name__})"
        )

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(key, value, inner[0], source)
    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(repr(a) for a in args))
        return value
    if hint is Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value)
        raise bad("a string")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise bad("true or false")
    if hint is int:
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                raise bad("an integer") from None
        raise bad("an integer")
    if hint is float:
        if isinstance(value, bool):
            raise bad("a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise bad("a number") from None
        raise bad("a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad("a string")
    if hint is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value).expanduser()
        raise bad("a path")
    if origin is list:
        (item,) = args
        if isinstance(value, (str, Path)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        return [_convert(key, v, item, source) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        return {str(k): _convert(key, v, args[1], source) for k, v in value.items()}
    raise bad(str(hint))  # pragma: no cover - every field type is handled above


def _build(cls: type[Config], values: dict[str, Any], *, source: str) -> Config:
    try:
        return cls(**values)
    except ConfigError:
        raise
    except TypeError as exc:  # pragma: no cover - keys were checked in _coerce
        raise ConfigError(f"{source}: {exc}") from None


_POSITIVE = (
    "max_concurrency",
    "max_attempts",
    "max_tokens",
    "max_task_chars",
    "cache_memory_entries",
    "cache_memory_bytes",
    "cache_disk_bytes",
)
_NON_NEGATIVE = (
    "backoff_base_s",
    "backoff_cap_s",
    "max_retry_wait_s",
    "sim_latency_s",
    "sim_latency_per_token_s",
    "sim_jitter",
    "cache_ttl_s",
)
SIM_FAULT_KINDS = ("rate_limit", "server_error", "overloaded", "timeout", "connection")


def _check_value(key: str, value: Any, *, source: str) -> None:
    """Range checks for one setting, so the error names where the bad value came from."""
    if value is None:
        return
    if key in _POSITIVE and value < 1:
        raise ConfigError(f"{source}: setting {key!r} must be at least 1, got {value!r}")
    if key in _NON_NEGATIVE and value < 0:
        raise ConfigError(f"{source}: setting {key!r} must not be negative, got {value!r}")
    if key == "timeout_s" and value <= 0:
        raise ConfigError(f"{source}: setting 'timeout_s' must be positive, got {value!r}")
    if key in ("sim_fault_rate", "temperature") and not 0.0 <= value <= 1.0:
        raise ConfigError(f"{source}: setting {key!r} must be between 0 and 1, got {value!r}")
    if key == "sim_rpm_limit" and value < 1:
        raise ConfigError(f"{source}: setting 'sim_rpm_limit' must be at least 1, got {value!r}")
    if key == "sim_fault_kinds":
        unknown = [k for k in value if k not in SIM_FAULT_KINDS]
        if unknown:
            raise ConfigError(
                f"{source}: setting 'sim_fault_kinds' has unknown kinds {unknown}; "
                f"choose from {list(SIM_FAULT_KINDS)}"
            )


def _check_ranges(cfg: Config, *, source: str) -> None:
    for f in dataclasses.fields(cfg):
        _check_value(f.name, getattr(cfg, f.name), source=source)
