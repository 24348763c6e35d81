"""`AgentNB`: traitlets made from `Config`'s fields, checked like Config, and a refused value
stored nowhere (not in the shell's config either, so `%reload_ext agentnb` still works)."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets import Bool, Dict, Enum, Float, Int, List, TraitError, Unicode
from traitlets.config import Config as TraitletsConfig
from traitlets.config import Configurable

from agentnb import orchestrator as orchestrator_module
from agentnb.config import Config, field_names, setting_help
from agentnb.magics import SETTINGS, AgentNB


def traits() -> dict[str, Any]:
    return dict(AgentNB.class_traits(config=True))


# -- made from Config ----------------------------------------------------------------------------
def test_every_config_field_but_the_key_has_a_traitlet_with_its_default_and_help() -> None:
    assert set(traits()) == set(SETTINGS) == set(field_names()) - {"api_key"}
    built_in = Config()
    for f in dataclasses.fields(Config):
        if f.name == "api_key":
            continue
        trait = traits()[f.name]
        assert trait.help == setting_help(f.name) != ""
        default = getattr(built_in, f.name)
        if f.name in ("cache_dir", "state_dir"):  # from the environment: None leaves it to Config
            assert trait.default() is None
        elif isinstance(default, list):
            assert trait.default() == [str(v) for v in default]
        else:
            assert trait.default() == default, f.name


def test_traitlet_types_follow_the_field_types() -> None:
    t = traits()
    expected = {
        "progress": Bool,
        "max_concurrency": Int,
        "timeout_s": Float,
        "default_model": Unicode,
        "cache_dir": Unicode,
        "model_aliases": Dict,
        "agents_dirs": List,
        "backend": Enum,
    }
    for name, kind in expected.items():
        assert type(t[name]) is kind, name
    assert t["backend"].values == typing.get_args(typing.get_type_hints(Config)["backend"])
    assert t["temperature"].allow_none and t["sim_rpm_limit"].allow_none
    assert not t["timeout_s"].allow_none and not t["max_concurrency"].allow_none
    assert isinstance(t["sim_fault_kinds"]._trait, Unicode)


def test_help_shows_ranges_defaults_and_values_in_effect() -> None:
    session = AgentNB()
    session.timeout_s = 30  # type: ignore[attr-defined]
    text = AgentNB.class_get_help(session)
    assert "AgentNB.timeout_s=<Float>" in text
    assert "Range: more than 0 and at most 3,600." in " ".join(text.split())  # wrapped
    assert "Current: 30.0 (%config)" in text
    assert "AgentNB.progress=<Bool>" in text and "api_key" not in text


# -- checked like Config, refused values stored nowhere --------------------------------------------
@pytest.mark.parametrize(
    ("name", "value", "must"),
    [
        ("timeout_s", math.nan, "a finite number"),
        ("backoff_cap_s", math.inf, "a finite number"),
        ("cache_ttl_s", -1.0, "at least 0"),
        ("max_concurrency", 0, "at least 1"),
        ("max_attempts", 1000, "at most 100"),
        ("cache_dir", "", "a path (not empty)"),
        ("backend", "openai", "one of"),
    ],
)
def test_a_refused_value_changes_nothing(name: str, value: Any, must: str) -> None:
    session = AgentNB()
    before = getattr(session, name)
    with pytest.raises(TraitError) as info:
        setattr(session, name, value)
    message = str(info.value)
    assert "\n" not in message and name in message
    if name != "backend":  # the Enum's own check speaks first there
        assert message.startswith(f"%config AgentNB: setting {name!r} must be {must}")
    assert getattr(session, name) == before
    assert session.explicit_settings() == []


def test_a_refused_config_batch_leaves_the_settings_and_the_records_as_they_were() -> None:
    shell_like = Configurable(config=TraitletsConfig({"AgentNB": {"max_concurrency": 4}}))
    session = AgentNB(parent=shell_like)
    assert session.max_concurrency == 4  # type: ignore[attr-defined]
    config_before = copy.deepcopy(session.config)
    batch = TraitletsConfig({"AgentNB": {"max_concurrency": 3, "timeout_s": math.nan}})
    shell_like.update_config(batch)  # what %config does to the configurables before this one
    with pytest.raises(TraitError, match="timeout_s"):
        session.update_config(batch)
    # the whole batch rolled back
    assert session.max_concurrency == 4  # type: ignore[attr-defined]
    assert session.timeout_s == 120.0  # type: ignore[attr-defined]
    assert session.config == config_before
    assert dict(shell_like.config["AgentNB"]) == {"max_concurrency": 4}  # put back
    assert "AgentNB" not in batch  # those after this one never see it
    assert session.explicit_settings() == ["max_concurrency"]
    AgentNB(parent=shell_like)  # a reload meets only what was accepted


def test_none_for_cache_dir_means_configs_own_default(tmp_path: Path) -> None:
    session = AgentNB()
    session.cache_dir = str(tmp_path)  # type: ignore[attr-defined]
    assert session.effective_config().cache_dir == tmp_path
    session.cache_dir = None  # type: ignore[attr-defined]
    assert session.effective_config().cache_dir == Config.load().cache_dir


# -- through a real shell ------------------------------------------------------------------------
@pytest.fixture
def ip(
    shell: InteractiveShell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InteractiveShell]:
    """The shell with agentnb loaded on the simulator; its config put back afterwards."""
    for var in list(os.environ):
        if var.startswith("AGENTNB_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AGENTNB_BACKEND", "simulated")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(orchestrator_module, "_default", None)
    config_before = copy.deepcopy(shell.config)
    shell.run_line_magic("load_ext", "agentnb")
    yield shell
    assert shell.extension_manager is not None
    if "agentnb" in shell.extension_manager.loaded:
        shell.run_line_magic("unload_ext", "agentnb")
    if orchestrator_module._default is not None:
        orchestrator_module._default.close()
    shell.config = config_before


def session_of(ip: InteractiveShell) -> AgentNB:
    (session,) = [c for c in ip.configurables if isinstance(c, AgentNB)]
    return session


def recorded(ip: InteractiveShell, name: str) -> list[Any]:
    """The values of `AgentNB.<name>` in the config of every configurable of the shell."""
    return [c.config["AgentNB"][name] for c in ip.configurables if f"AgentNB.{name}" in c.config]


def test_a_refused_config_value_is_stored_nowhere_and_a_reload_still_works(
    ip: InteractiveShell, caplog: pytest.LogCaptureFixture
) -> None:
    ip.run_line_magic("config", "AgentNB.max_concurrency = 4")
    ip.run_line_magic("config", "AgentNB.max_concurrency = 0")
    ip.run_line_magic("config", "AgentNB.cache_ttl_s = float('nan')")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("\n" not in m for m in messages)
    assert "'max_concurrency' must be at least 1" in messages[0]
    assert "'cache_ttl_s' must be a finite number" in messages[1]
    session = session_of(ip)
    assert session.max_concurrency == 4  # type: ignore[attr-defined]
    assert session.cache_ttl_s == Config().cache_ttl_s  # type: ignore[attr-defined]
    assert session.config["AgentNB"] == {"max_concurrency": 4}
    assert set(recorded(ip, "max_concurrency")) == {4}  # the accepted value, everywhere
    assert recorded(ip, "cache_ttl_s") == []
    assert ip.config["AgentNB"] == {"max_concurrency": 4}
    ip.run_line_magic("reload_ext", "agentnb")
    reloaded = session_of(ip)
    assert reloaded is not session and reloaded.max_concurrency == 4  # type: ignore[attr-defined]
    assert reloaded.effective_config().max_concurrency == 4


def test_a_refused_first_value_leaves_no_record(
    ip: InteractiveShell, caplog: pytest.LogCaptureFixture
) -> None:
    ip.run_line_magic("config", "AgentNB.timeout_s = 1e9")
    assert "'timeout_s' must be at most 3,600" in caplog.records[-1].getMessage()
    assert recorded(ip, "timeout_s") == []
    ip.run_line_magic("reload_ext", "agentnb")
    assert session_of(ip).explicit_settings() == []


def test_progress_is_a_setting(ip: InteractiveShell) -> None:
    assert session_of(ip).effective_config().progress is True
    ip.run_line_magic("config", "AgentNB.progress = False")
    assert session_of(ip).effective_config().progress is False
