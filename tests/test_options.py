"""`CallOptions`: one validation for every surface, generated flags and step keys, the key."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from typing import Any, get_type_hints

import pytest

from agentnb import AgentOrchestrator, AgentRegistry, Config, SimulatedBackend, Workflow
from agentnb.errors import AgentnbError, OptionError, WorkflowValidationError
from agentnb.options import (
    EMPTY,
    STEP_KEYS,
    CallOptions,
    OptionArgs,
    add_arguments,
    from_namespace,
    option_specs,
)

# What a hardening probe found the Python API and the CLI accepting (the magics refused them).
BAD_VALUES: list[tuple[str, Any, str]] = [
    ("max_tokens", 0, "whole number from 1"),
    ("max_tokens", -5, "whole number from 1"),
    ("max_tokens", "10", "whole number from 1"),
    ("max_tokens", True, "whole number from 1"),
    ("max_tokens", 2.5, "whole number from 1"),
    ("temperature", 5, "finite number in [0, 1]"),
    ("temperature", math.nan, "finite number in [0, 1]"),
    ("temperature", math.inf, "finite number in [0, 1]"),
    ("temperature", "0.5", "number in [0, 1]"),
    ("model", 123, "non-empty model id"),
    ("model", "  ", "non-empty model id"),
    ("model", "bad\nmodel", "without control characters"),
    ("system", 5, "text"),
    ("system", "\ud800", "lone surrogate"),
    ("stop_sequences", [""], "non-blank strings"),
    ("stop_sequences", [1], "non-blank strings"),
    ("stop_sequences", ["x"] * 17, "at most 16"),
    ("use_cache", "no", "true or false"),
    ("timeout_s", 0, "(0, 3600]"),
    ("timeout_s", math.nan, "(0, 3600]"),
    ("timeout_s", 4000, "(0, 3600]"),
    ("max_attempts", 0, "from 1 to 100"),
    ("max_attempts", 101, "from 1 to 100"),
    ("schema", {"type": "array"}, "JSON Schema of an object"),
    ("schema", {"type": "object", "properties": {"n": {"type": "nope"}}}, "valid JSON Schema"),
    ("schema", {"type": "object", "default": {1, 2}}, "that JSON can spell"),
    ("schema", {"type": "object", "maximum": math.nan}, "that JSON can spell"),
    ("schema", "{}", "JSON Schema of an object"),
    ("schema", int, "a pydantic model or a dataclass"),
    ("prefix", 5, "text"),
    ("sample", -1, "from 0 to 1000000"),
    ("sample", 1.5, "from 0 to 1000000"),
]


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES)
def test_bad_values_name_the_option_and_the_source(name: str, value: Any, expected: str) -> None:
    with pytest.raises(OptionError) as info:
        CallOptions.build({name: value}, source="execute_agent")
    message = str(info.value)
    assert message.startswith(f"execute_agent: option {name!r} must be ")
    assert expected in message
    assert info.value.option == name and info.value.source == "execute_agent"
    with pytest.raises(OptionError):  # the constructor checks too
        CallOptions(**{name: value})


def test_messages_stay_bounded_whatever_the_value() -> None:
    with pytest.raises(OptionError) as info:
        CallOptions.build({"model": "x" * 10_000}, source="s")
    assert len(str(info.value)) < 300


def test_unknown_options_are_refused() -> None:
    with pytest.raises(OptionError, match="unknown option 'max_token'"):
        CallOptions.build({"max_token": 5}, source="AgentCall")


def test_good_values_are_normalised_and_merged() -> None:
    opts = CallOptions.build({"temperature": 1, "stop_sequences": "END", "max_tokens": None})
    assert opts.temperature == 1.0 and isinstance(opts.temperature, float)
    assert opts.stop_sequences == ("END",) and opts.max_tokens is None
    over = opts.merged(CallOptions(model="haiku", temperature=0.5))
    assert (over.model, over.temperature, over.stop_sequences) == ("haiku", 0.5, ("END",))
    assert CallOptions.build({}) is EMPTY and not EMPTY and EMPTY.merged(opts) is opts


def test_option_args_mirror_call_options() -> None:
    # The keyword arguments of every call method are declared once, beside CallOptions.
    assert list(get_type_hints(OptionArgs)) == list(option_specs())


def test_flags_and_step_keys_are_generated_from_the_fields() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser.add_argument)
    flags = {f for action in parser._actions for f in action.option_strings}
    for name, spec in option_specs().items():
        assert set(spec.flags) <= flags, name
        assert STEP_KEYS[spec.step_key or name] == name
    args = parser.parse_args(["--system", "Be brief.", "--stop", "A", "--stop", "B", "--no-cache"])
    opts = from_namespace(args, source="cli")
    assert (opts.system, opts.stop_sequences, opts.use_cache) == ("Be brief.", ("A", "B"), False)
    with pytest.raises(OptionError, match=r"^cli --max-tokens: must be a whole number"):
        from_namespace(parser.parse_args(["--max-tokens", "0"]), source="cli")


# -- the same validation through every surface ------------------------------------------------
@pytest.fixture
def orch() -> Any:
    sim = SimulatedBackend(latency_s=0, jitter=0)
    cfg = Config.load(backend="simulated", cache_enabled=False, env={})
    with AgentOrchestrator(cfg, backend=sim, agents=AgentRegistry(include_default_dirs=False)) as o:
        yield o


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES[:12])
def test_python_api_refuses_before_any_call(
    orch: Any, name: str, value: Any, expected: str
) -> None:
    sim = orch.backend
    with pytest.raises(OptionError, match=f"option {name!r}"):
        orch.execute_agent("writer", "hi", **{name: value})
    with pytest.raises(OptionError, match=f"option {name!r}"):
        orch.stream_agent("writer", "hi", **{name: value})
    with pytest.raises(OptionError, match=f"call #1: option {name!r}"):
        orch.execute_multiple([("writer", "ok"), {"agent": "writer", "task": "x", name: value}])
    assert sim.call_count == 0


@pytest.mark.parametrize("task", ["", "   \n", "a\ud800b"])
def test_empty_and_unencodable_tasks_are_refused(orch: Any, task: str) -> None:
    with pytest.raises(AgentnbError, match=r"task is empty|lone surrogate"):
        orch.execute_agent("writer", task)
    assert orch.backend.call_count == 0


def test_workflow_steps_take_every_option_with_its_line() -> None:
    wf = Workflow.from_yaml(
        "name: w\n"
        "defaults: {system: Answer in French., max_tokens: 64}\n"
        "steps:\n"
        "  - {id: a, agent: writer, task: t, stop_sequences: [END], max_tokens: 32}\n"
        "  - {id: b, agent: writer, task: u, cache: false, system: Be brief.}\n"
    )
    a, b = wf.steps
    assert (a.options.system, a.options.max_tokens, a.stop_sequences) == (
        "Answer in French.",
        32,
        ("END",),
    )
    assert (b.options.system, b.options.use_cache, b.cache) == ("Be brief.", False, False)
    with pytest.raises(WorkflowValidationError) as info:
        Workflow.from_yaml(
            "name: w\nsteps:\n  - {id: a, agent: writer, task: t}\n  - id: b\n"
            "    agent: writer\n    task: t\n    stop_sequences: ['']\n"
        )
    assert (info.value.step, info.value.field, info.value.line) == ("b", "stop_sequences", 7)


def test_cli_refuses_bad_options_in_one_line() -> None:
    for args, expected in [
        (["--max-tokens", "0"], "agent --max-tokens: must be a whole number from 1"),
        (["-t", "5"], "agent --temperature: must be a finite number in [0, 1]"),
        (["-t", "nan"], "agent --temperature: must be a finite number in [0, 1]"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "agentnb", "--simulate", "agent", *args, "writer", "hi"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == f"agentnb: error: {expected}" or (
            proc.stderr.startswith(f"agentnb: error: {expected}") and proc.stderr.count("\n") == 1
        )


# -- the cache key covers what changes the answer, and only that --------------------------------
def test_cache_key_covers_answer_options_only(orch: Any) -> None:
    base = orch.prepare("writer", "same task").key
    changed = {
        "model": "haiku",
        "max_tokens": 10,
        "temperature": 0.2,
        "system": "Be brief.",
        "stop_sequences": ["END"],
        "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "prefix": "Summarise: ",
        "sample": 1,
    }
    keys = {
        name: orch.prepare("writer", "same task", **{name: v}).key for name, v in changed.items()
    }
    assert base not in keys.values() and len(set(keys.values())) == len(changed)
    unchanged = {"timeout_s": 3.0, "max_attempts": 2, "use_cache": False}
    for name, value in unchanged.items():
        assert orch.prepare("writer", "same task", **{name: value}).key == base, name
    # The declarations say the same: every option is tried, and `in_key` marks those in the key.
    specs = option_specs()
    assert set(changed) | set(unchanged) == set(specs)
    assert {n for n, spec in specs.items() if spec.in_key} == set(changed)


def test_flags_that_do_not_convert_are_refused_in_one_line_by_the_option_check() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser.add_argument)
    args = parser.parse_args(["--max-tokens", "lots", "-t", "warm"])  # argparse lets them by
    with pytest.raises(OptionError, match=r"^cli --max-tokens: must be a whole number .* 'lots'"):
        from_namespace(args, source="cli")


def test_a_bad_option_in_a_batch_dict_names_the_call_once(orch: Any) -> None:
    with pytest.raises(OptionError) as info:
        orch.execute_multiple([{"agent": "writer", "task": "x", "max_tokens": 0}])
    assert str(info.value).count("call #0") == 1


def test_a_variable_that_cannot_be_sent_is_refused_before_the_run(orch: Any) -> None:
    wf = Workflow.from_yaml("name: w\nsteps:\n  - {id: a, agent: writer, task: 'Use {{v}}'}\n")
    with pytest.raises(WorkflowValidationError, match="variable 'v' holds a lone surrogate"):
        orch.run_workflow(wf, {"v": "bad \ud800"})
    assert orch.backend.call_count == 0
