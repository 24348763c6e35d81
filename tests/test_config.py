"""Config: precedence defaults < agentnb.yaml < environment < arguments, and clear errors."""

from __future__ import annotations

import dataclasses
import logging
import math
import pickle
import re
from pathlib import Path
from typing import Any

import pytest

from agentnb._settings_meta import Range
from agentnb.config import DEFAULT_MODEL_ALIASES, Config, Secret, setting_help
from agentnb.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agentnb.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_or_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = Config.load(env={})
    assert cfg.backend == "auto"
    assert cfg.resolved_backend == "simulated"
    assert cfg.max_concurrency == 10
    assert cfg.max_task_chars == 100_000
    assert cfg.model_aliases == DEFAULT_MODEL_ALIASES
    assert cfg.api_key is None


def test_precedence_file_then_env_then_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "max_concurrency: 3\ntimeout_s: 7\nmax_tokens: 99\n")
    env = {"AGENTNB_TIMEOUT_S": "9.5", "AGENTNB_MAX_TOKENS": "123"}
    cfg = Config.load(env=env, max_tokens=456)
    assert cfg.max_concurrency == 3  # file only
    assert cfg.timeout_s == 9.5  # env beats file
    assert cfg.max_tokens == 456  # argument beats env


def test_config_file_found_in_working_directory_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "max_concurrency: 3\n")
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert Config.load(env={}).max_concurrency == 10
    monkeypatch.chdir(tmp_path)
    assert Config.load(env={}).max_concurrency == 3


def test_explicit_config_path_via_env(tmp_path: Path) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text("max_attempts: 2\n", encoding="utf-8")
    assert Config.load(env={"AGENTNB_CONFIG": str(path)}).max_attempts == 2


def test_unknown_key_in_file_names_key_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "max_concurency: 3\n")
    with pytest.raises(ConfigError) as info:
        Config.load(env={})
    assert "max_concurency" in str(info.value)
    assert str(path.name) in str(info.value)
    assert "max_concurrency" in str(info.value)  # the suggestion


def test_wrong_type_in_file_names_key_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "max_concurrency: lots\n")
    with pytest.raises(ConfigError, match=r"agentnb\.yaml.*'max_concurrency'.*integer"):
        Config.load(env={})


def test_bool_is_not_an_integer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_attempts"):
        Config.load(env={}, max_attempts=True)


def test_out_of_range_value_names_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"AGENTNB_MAX_CONCURRENCY.*at least 1"):
        Config.load(env={"AGENTNB_MAX_CONCURRENCY": "0"})


def test_invalid_yaml_names_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "max_concurrency: 3\nbackend: [unclosed\n")
    with pytest.raises(ConfigError, match=r"agentnb\.yaml line \d+"):
        Config.load(env={})


def test_file_must_be_a_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        Config.load(env={})


def test_api_key_refused_in_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "api_key: sk-should-not-be-here\n")
    with pytest.raises(ConfigError) as info:
        Config.load(env={})
    assert "ANTHROPIC_API_KEY" in str(info.value)
    assert "sk-should-not-be-here" not in str(info.value)


def test_literal_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'auto', 'anthropic', 'simulated'"):
        Config.load(env={}, backend="openai")


def test_env_types_lists_dicts_and_none(tmp_path: Path) -> None:
    env = {
        "AGENTNB_CACHE_EXCLUDE": "writer, draft-*",
        "AGENTNB_AGENTS_DIRS": f"{tmp_path}/a:{tmp_path}/b",
        "AGENTNB_MODEL_ALIASES": "{sonnet: my-sonnet}",
        "AGENTNB_TEMPERATURE": "none",
        "AGENTNB_PROMPT_CACHING": "off",
        "AGENTNB_SIM_RPM_LIMIT": "600",
    }
    cfg = Config.load(env=env)
    assert cfg.cache_exclude == ["writer", "draft-*"]
    assert cfg.agents_dirs == [tmp_path / "a", tmp_path / "b"]
    assert cfg.model_aliases == {"sonnet": "my-sonnet"}
    assert cfg.temperature is None
    assert cfg.prompt_caching is False
    assert cfg.sim_rpm_limit == 600


def test_unrelated_agentnb_env_vars_are_ignored() -> None:
    cfg = Config.load(env={"AGENTNB_SOMETHING_ELSE": "x", "AGENTNB_CACHE_SECRET": "s"})
    assert cfg.max_concurrency == 10


def test_backend_auto_uses_anthropic_when_key_set() -> None:
    cfg = Config.load(env={"ANTHROPIC_API_KEY": "sk-ant-test-123"})
    assert cfg.resolved_backend == "anthropic"
    assert (
        Config.load(env={"ANTHROPIC_API_KEY": "sk"}, backend="simulated").resolved_backend
        == "simulated"
    )


def test_base_url_from_env() -> None:
    assert (
        Config.load(env={"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}).base_url
        == "http://127.0.0.1:9"
    )


def test_resolve_model_aliases_inherit_and_passthrough() -> None:
    cfg = Config.load(env={}, default_model="claude-x")
    assert cfg.resolve_model(None) == "claude-x"
    assert cfg.resolve_model("inherit") == "claude-x"
    assert cfg.resolve_model("haiku") == DEFAULT_MODEL_ALIASES["haiku"]
    assert cfg.resolve_model("some-future-model-9") == "some-future-model-9"


def test_replace_checks_values() -> None:
    cfg = Config.load(env={})
    assert cfg.replace(max_concurrency=5).max_concurrency == 5
    with pytest.raises(ConfigError, match="max_concurrency"):
        cfg.replace(max_concurrency=-1)
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        cfg.replace(nope=1)


def test_sim_fault_kinds_checked() -> None:
    with pytest.raises(ConfigError, match="unknown kinds"):
        Config.load(env={}, sim_fault_kinds=["meteor"])


def test_api_key_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    key = "sk-ant-api03-SECRET-VALUE-xyz"
    cfg = Config.load(env={"ANTHROPIC_API_KEY": key})
    assert cfg.api_key is not None and cfg.api_key.get() == key
    shown = [repr(cfg), str(cfg), repr(cfg.to_dict()), repr(cfg.api_key), str(cfg.api_key)]
    assert all(key not in s for s in shown)
    assert cfg.to_dict()["api_key"] == "***"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("agentnb").info("config %s %r", cfg, cfg.to_dict())
    assert key not in caplog.text
    with pytest.raises(TypeError):
        pickle.dumps(cfg.api_key)


def test_passwords_in_urls_are_never_shown() -> None:
    cfg = Config.load(
        env={}, redis_url="redis://:hunter2pw@cache.local:6379/0", base_url="https://u:pw@gw.local"
    )
    shown = repr(cfg) + str(cfg.to_dict())
    assert "hunter2pw" not in shown and ":pw@" not in shown
    assert cfg.to_dict()["redis_url"] == "redis://***@cache.local:6379/0"
    assert cfg.redis_url.endswith("hunter2pw@cache.local:6379/0")  # the real value is kept


def test_bad_api_key_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, api_key=b"sk-ant-api03-BYTES-SECRET")
    assert "BYTES-SECRET" not in str(info.value) and "'api_key'" in str(info.value)


def test_secret_equality_without_disclosure() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert not Secret("")


# -- ranges: one source of truth, every source checked ------------------------------------------
#: (setting, a value it refuses, what the message says it must be)
REFUSED: list[tuple[str, Any, str]] = [
    ("timeout_s", math.nan, "a finite number"),
    ("timeout_s", math.inf, "a finite number"),
    ("timeout_s", 0, "more than 0"),
    ("timeout_s", 3601, "at most 3,600"),
    ("backoff_base_s", -math.inf, "a finite number"),
    ("backoff_base_s", 0, "more than 0"),
    ("backoff_cap_s", math.inf, "a finite number"),
    ("backoff_cap_s", 601, "at most 600"),
    ("max_retry_wait_s", math.nan, "a finite number"),
    ("max_retry_wait_s", -1, "at least 0"),
    ("cache_ttl_s", math.nan, "a finite number"),
    ("cache_ttl_s", 11 * 365 * 24 * 3600, "at most 315,360,000"),
    ("sim_latency_s", math.inf, "a finite number"),
    ("sim_latency_per_token_s", 601, "at most 600"),
    ("sim_jitter", 1.5, "at most 1"),
    ("sim_fault_rate", math.nan, "a finite number"),
    ("temperature", -0.1, "at least 0"),
    ("max_concurrency", 0, "at least 1"),
    ("max_concurrency", 10_001, "at most 10,000"),
    ("max_attempts", 101, "at most 100"),
    ("max_tokens", 0, "at least 1"),
    ("sim_rpm_limit", 0, "at least 1"),
]


def _yaml(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    if isinstance(value, float) and math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return str(value)


@pytest.mark.parametrize(("key", "value", "must"), REFUSED)
@pytest.mark.parametrize("source", ["arguments", "env", "file"])
def test_non_finite_and_out_of_range_values_are_refused_naming_key_and_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, key: str, value: Any, must: str
) -> None:
    monkeypatch.chdir(tmp_path)
    env: dict[str, str] = {}
    overrides: dict[str, Any] = {}
    if source == "arguments":
        overrides[key] = value
        where = "arguments"
    elif source == "env":
        env[f"AGENTNB_{key.upper()}"] = str(value)  # 'nan', 'inf', '-inf' as a shell would
        where = f"AGENTNB_{key.upper()}"
    else:
        where = write(tmp_path, f"{key}: {_yaml(value)}\n").name  # found in the working dir
    with pytest.raises(ConfigError) as info:
        Config.load(env=env, **overrides)
    message = str(info.value)
    assert message.startswith(f"{where}: setting {key!r} must be {must}, got ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("timeout_s", 3600),
        ("backoff_base_s", 600),
        ("max_retry_wait_s", 0),
        ("cache_ttl_s", 0),  # never expires
        ("cache_ttl_s", 10 * 365 * 24 * 3600),
        ("sim_latency_s", 0),
        ("sim_jitter", 1),
        ("temperature", 0),
        ("sim_fault_rate", 1),
        ("max_concurrency", 10_000),
        ("max_attempts", 100),
        ("sim_seed", -5),  # no range: any integer seeds the simulator
    ],
)
def test_the_ends_of_each_range_are_accepted(key: str, value: float) -> None:
    overrides: dict[str, Any] = {key: value}
    assert getattr(Config.load(env={}, **overrides), key) == value


def test_string_nan_in_a_file_and_direct_construction_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "timeout_s: 'nan'\n")
    with pytest.raises(ConfigError, match=r"agentnb\.yaml: setting 'timeout_s' must be a finite"):
        Config.load(env={})
    with pytest.raises(ConfigError, match=r"arguments: setting 'cache_ttl_s' must be a finite"):
        Config(cache_ttl_s=math.nan)
    with pytest.raises(ConfigError, match="sim_jitter"):
        Config().replace(sim_jitter=math.inf)


def test_every_setting_has_help_and_numbers_show_their_range() -> None:
    for f in dataclasses.fields(Config):
        assert f.metadata["help"], f.name
    assert setting_help("timeout_s").endswith("Range: more than 0 and at most 3,600.")
    assert setting_help("max_concurrency").endswith("Range: at least 1 and at most 10,000.")
    assert setting_help("temperature").endswith("Range: at least 0 and at most 1.")
    assert "Range" not in setting_help("default_model")
    numeric = [f.name for f in dataclasses.fields(Config) if f.type in ("float", "float | None")]
    assert numeric and all("Range: " in setting_help(n) for n in numeric)  # every float bounded


def test_range_wording() -> None:
    assert Range(low=0, high=1).problem(0.5) is None
    assert Range(low=0, low_open=True).problem(0.0) == "more than 0"
    assert Range(high=2.5, high_open=True).problem(2.5) == "less than 2.5"
    assert Range(low=1).problem(math.nan) == "a finite number"
    assert Range(low=1).problem(10**400) is None  # a huge int is compared exactly, not as float
    assert str(Range(low=0, high=0.25)) == "at least 0 and at most 0.25"


# -- paths and the config file named by AGENTNB_CONFIG ------------------------------------------
def test_agentnb_config_naming_a_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"AGENTNB_CONFIG: config file {missing} does")):
        Config.load(env={"AGENTNB_CONFIG": str(missing)})
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path} is not a file")):
        Config.load(env={"AGENTNB_CONFIG": str(tmp_path)})
    with pytest.raises(ConfigError, match="AGENTNB_CONFIG is set but empty"):
        Config.load(env={"AGENTNB_CONFIG": ""})


def test_missing_path_argument_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Config.load(path=tmp_path / "nowhere.yaml", env={})


@pytest.mark.parametrize("source", ["arguments", "env", "file"])
@pytest.mark.parametrize("key", ["cache_dir", "metrics_path"])
def test_an_empty_path_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, key: str
) -> None:
    monkeypatch.chdir(tmp_path)
    if source == "env" and key == "metrics_path":
        # An optional setting left empty in the environment is unset, like AGENTNB_TEMPERATURE=
        assert Config.load(env={"AGENTNB_METRICS_PATH": ""}).metrics_path is None
        return
    env = {f"AGENTNB_{key.upper()}": ""} if source == "env" else {}
    overrides = {key: ""} if source == "arguments" else {}
    if source == "file":
        write(tmp_path, f"{key}: ''\n")
    with pytest.raises(ConfigError, match=rf"setting {key!r} must be a path \(not empty\)"):
        Config.load(env=env, **overrides)


def test_an_empty_agents_dir_is_refused_and_empty_env_parts_skipped(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agents_dirs"):
        Config.load(env={}, agents_dirs=[str(tmp_path), " "])
    env = {"AGENTNB_AGENTS_DIRS": f"{tmp_path}::"}
    assert Config.load(env=env).agents_dirs == [tmp_path]


def test_progress_setting() -> None:
    assert Config.load(env={}).progress is True
    assert Config.load(env={"AGENTNB_PROGRESS": "off"}).progress is False
    with pytest.raises(ConfigError, match="'progress' must be true or false"):
        Config.load(env={}, progress="sometimes")
