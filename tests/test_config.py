"""Config: precedence defaults < agentnb.yaml < environment < arguments, and clear errors."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

from agentnb.config import DEFAULT_MODEL_ALIASES, Config, Secret
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
