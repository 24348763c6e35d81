"""The IPython extension through a real `InteractiveShell` (a terminal-style shell, no kernel).

Every test loads the extension into the process's shell, runs cells with `run_cell` and unloads
it again; the `ip` fixture puts the namespace, the shell's config and the shared orchestrator
back as they were. Everything runs on the offline simulator.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell

import agentnb
from agentnb.config import Config, field_names
from agentnb.errors import (
    AgentNotFoundError,
    BudgetExceededError,
    OptionError,
    WorkflowValidationError,
)
from agentnb.magics import SETTINGS, AgentMagics, AgentNB, fill_placeholders, keep_questions
from agentnb.magics.parsing import split_agent_line
from agentnb.options import CallOptions
from agentnb.orchestrator import AgentOrchestrator, Estimate, Spend, default_orchestrator
from agentnb.orchestrator import facade as orchestrator_module
from agentnb.workflow import Workflow, WorkflowRun

REPO = Path(__file__).resolve().parent.parent

FAN_OUT = """\
name: fan
steps:
  - {id: a, agent: writer, task: "first about {{topic}}"}
  - {id: b, agent: writer, task: "second about {{topic}}"}
  - {id: c, agent: writer, task: "third about {{topic}}"}
  - {id: d, agent: python-expert, task: "merge {{a}} {{b}} {{c}}"}
"""


@pytest.fixture
def ip(
    shell: InteractiveShell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InteractiveShell]:
    """The shell with agentnb loaded on a fast simulator; everything restored afterwards."""
    for var in list(os.environ):
        if var.startswith("AGENTNB_"):
            monkeypatch.delenv(var)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.setenv("AGENTNB_BACKEND", "simulated")
    monkeypatch.setenv("AGENTNB_SIM_LATENCY_S", "0.005")
    monkeypatch.setenv("AGENTNB_SIM_JITTER", "0")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)  # no agentnb.yaml or ./agents from elsewhere
    monkeypatch.setattr(orchestrator_module, "_default", None)
    config_before = copy.deepcopy(shell.config)
    names_before = set(shell.user_ns)
    shell.run_line_magic("load_ext", "agentnb")
    yield shell
    assert shell.extension_manager is not None
    if "agentnb" in shell.extension_manager.loaded:
        shell.run_line_magic("unload_ext", "agentnb")
    if orchestrator_module._default is not None:
        orchestrator_module._default.close()
    for name in set(shell.user_ns) - names_before:
        del shell.user_ns[name]
    shell.config = config_before
    assert not any(isinstance(c, (AgentNB, AgentMagics)) for c in shell.configurables)


def run_cell(ip: InteractiveShell, source: str) -> ExecutionResult:
    """Run one cell as a user would (its output goes to stdout/stderr)."""
    result: ExecutionResult = ip.run_cell(source, store_history=True)  # type: ignore[no-untyped-call]
    return result


def run(ip: InteractiveShell, source: str) -> Any:
    """Run one cell; return its value (raising what the cell raised)."""
    result = run_cell(ip, source)
    if result.error_before_exec is not None:
        raise result.error_before_exec
    if result.error_in_exec is not None:
        raise result.error_in_exec
    return result.result


def find_magic(ip: InteractiveShell, name: str, kind: str) -> Any:
    return ip.find_magic(name, kind)  # type: ignore[no-untyped-call]


def orch() -> AgentOrchestrator:
    return default_orchestrator()


def sim_tasks() -> list[str]:
    return [c.task for c in orch().backend.calls]  # type: ignore[attr-defined]


# -- loading -------------------------------------------------------------------------------------
def test_loading_prints_one_line_and_creates_nothing(
    ip: InteractiveShell, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic("unload_ext", "agentnb")
    capsys.readouterr()
    ip.run_line_magic("load_ext", "agentnb")
    out = capsys.readouterr().out
    assert out == "agentnb: agents answer with the offline simulator (backend=simulated)\n"
    assert orchestrator_module._default is None  # no orchestrator, hence no client
    assert not (tmp_path / "cache").exists()  # and no cache database
    assert find_magic(ip, "agent", "line") and find_magic(ip, "agent", "cell")
    assert find_magic(ip, "workflow", "line") and find_magic(ip, "workflow", "cell")
    assert find_magic(ip, "agentnb", "line")


def test_loading_with_a_key_names_claude_but_never_the_key(
    ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic("unload_ext", "agentnb")
    monkeypatch.delenv("AGENTNB_BACKEND")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-value-123")
    capsys.readouterr()
    ip.run_line_magic("load_ext", "agentnb")
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "Claude" in out
    assert "sk-ant" not in out
    config_frame = run(ip, "%agentnb config")
    assert "sk-ant" not in config_frame.to_string()
    assert config_frame.loc["api_key", "value"] == "***"


def test_auto_backend_without_a_key_says_how_to_get_claude(
    ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic("unload_ext", "agentnb")
    monkeypatch.delenv("AGENTNB_BACKEND")
    capsys.readouterr()
    ip.run_line_magic("load_ext", "agentnb")
    assert "set ANTHROPIC_API_KEY" in capsys.readouterr().out


# -- %agent --------------------------------------------------------------------------------------
def test_agent_line_magic_returns_the_result_as_the_cell_value(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(ip, "%agent writer Write a haiku about caches")
    assert isinstance(result, agentnb.AgentResult)
    assert result.agent == "writer" and result.simulated
    assert ip.user_ns["_"] is result
    assert ip.user_ns["Out"][ip.execution_count - 1] is result
    out = capsys.readouterr().out
    assert result.footer() in out  # shown once, as Markdown text + footer
    assert out.count(result.footer()) == 1
    formatter: Any = ip.display_formatter
    data, metadata = formatter.format(result)
    assert data["text/markdown"].startswith(result.text)
    assert metadata["agentnb"] == {
        "agent": "writer",
        "model": result.model,
        "backend": "simulated",
        "cached": False,
        "simulated": True,
    }


def test_agent_task_is_passed_exactly_as_typed(ip: InteractiveShell) -> None:
    ip.user_ns["x"] = 42
    run(ip, """%agent writer What's "x" in {x} and $x!""")  # IPython would expand both
    assert sim_tasks()[-1] == """What's "x" in {x} and $x!"""
    run(ip, """%%agent -o r writer {x}\nIt's {'a': 1}""")
    assert sim_tasks()[-1] == """{x}\n\nIt's {'a': 1}"""


def test_agent_task_may_end_with_a_question_mark(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    value = run(ip, "%agent writer What is a closure?")  # IPython alone would look up `closure`
    assert sim_tasks()[-1] == "What is a closure?" and ip.user_ns["_"] is value
    run(ip, "if True:\n    %agent -o q writer Why 'so'?\n")
    assert sim_tasks()[-1] == "Why 'so'?" and isinstance(ip.user_ns["q"], agentnb.AgentResult)
    run(ip, "r = %agent writer What is a generator?")  # the assignment form asks too
    assert sim_tasks()[-1] == "What is a generator?"
    assert isinstance(ip.user_ns["r"], agentnb.AgentResult)
    capsys.readouterr()
    run(ip, "%agent?")  # help on the magic still works
    assert "--no-cache" in capsys.readouterr().out


def test_the_question_transform_leaves_other_code_alone() -> None:
    asked = "r = get_ipython().run_line_magic('agent', 'writer Why?')\n"
    assert keep_questions(["r = %agent writer Why?\n"]) == [asked]
    for lines in (
        ["r == %agent writer Why?\n"],  # not an assignment
        ["r = %agent?\n"],  # help on the magic
        ["%%agent writer\n", "%agent writer Why?\n"],  # a cell magic's body is its task
        ["%%agent writer Why?\n", "Because.\n"],
    ):
        assert keep_questions(lines) == lines


def test_agent_interpolates_double_braces_from_the_namespace(ip: InteractiveShell) -> None:
    ip.user_ns["src"] = "def f(x): return x + 1"
    ip.user_ns["n"] = 3
    run(ip, "%agent python-expert Review {{src}} ({{ n }} points) but keep {single} and \\{{src}}")
    assert sim_tasks()[-1] == (
        "Review def f(x): return x + 1 (3 points) but keep {single} and {{src}}"
    )


def test_agent_unknown_placeholder_is_one_line_naming_it(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UsageError, match=r"\{\{nowhere\}\}"):
        run(ip, "%agent writer Summarise {{nowhere}}")
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "nowhere" in err
    assert orchestrator_module._default is None  # nothing was called


def test_cell_agent_takes_the_body_as_task_and_the_line_as_its_start(
    ip: InteractiveShell,
) -> None:
    ip.user_ns["topic"] = "caching"
    result = run(ip, "%%agent writer\nWrite about {{topic}}.\n\nKeep {it} short.\n")
    assert sim_tasks()[-1] == "Write about caching.\n\nKeep {it} short."
    assert result.agent == "writer"
    run(ip, "%%agent -o note writer Summarise this:\nline one\nline two")
    assert sim_tasks()[-1] == "Summarise this:\n\nline one\nline two"
    assert isinstance(ip.user_ns["note"], agentnb.AgentResult)


def test_agent_options_reach_the_orchestrator(
    ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []
    real = AgentOrchestrator.execute_agent

    def spy(self: AgentOrchestrator, agent: str, task: str, options: CallOptions, **kw: Any) -> Any:
        given = {k: v for k, v in kw.items() if v is not None}  # max_cost_usd=None: no budget
        seen.append({"agent": agent, "task": task, **options.set_fields(), **given})
        return real(self, agent, task, options, **kw)

    monkeypatch.setattr(AgentOrchestrator, "execute_agent", spy)
    run(
        ip,
        "%agent -m haiku -t 0.3 --max-tokens 16 --no-cache --system 'Be brief.' --stop END "
        "--stop STOP --timeout 30 --max-attempts 2 writer Say hi",
    )
    assert seen[-1] == {
        "agent": "writer",
        "task": "Say hi",
        "model": "haiku",
        "temperature": 0.3,
        "max_tokens": 16,
        "system": "Be brief.",
        "stop_sequences": ("END", "STOP"),
        "use_cache": False,
        "timeout_s": 30.0,
        "max_attempts": 2,
    }
    run(ip, "%agent writer Say hi")
    assert seen[-1] == {"agent": "writer", "task": "Say hi"}  # nothing set: the layers below


def test_agent_options_take_effect(ip: InteractiveShell) -> None:
    short = run(ip, "%agent -m haiku --max-tokens 8 writer Write a long essay")
    assert short.model == "claude-haiku-5-5"
    assert short.stop_reason == "max_tokens"
    first = run(ip, "%agent writer Same task")
    again = run(ip, "%agent writer Same task")
    fresh = run(ip, "%agent --no-cache writer Same task")
    warmer = run(ip, "%agent -t 0.9 writer Same task")
    assert (first.cached, again.cached, fresh.cached, warmer.cached) == (False, True, False, False)


def test_agent_output_option_stores_the_result(ip: InteractiveShell) -> None:
    value = run(ip, "%agent -o answer writer Name a colour")
    assert ip.user_ns["answer"] is value


def test_agent_streams_only_when_asked_in_a_terminal(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    streamed: list[str] = []
    real = AgentOrchestrator.stream_agent

    def spy(self: AgentOrchestrator, agent: str, task: str, *args: Any, **kw: Any) -> Any:
        streamed.append(task)
        return real(self, agent, task, *args, **kw)

    monkeypatch.setattr(AgentOrchestrator, "stream_agent", spy)
    run(ip, "%agent writer not streamed")
    assert streamed == []
    capsys.readouterr()
    result = run(ip, "%agent --stream writer streamed")
    assert streamed == ["streamed"]
    out = capsys.readouterr().out
    assert out.startswith(result.text)  # printed as it came, then shown as the value
    run(ip, "%agent --stream --no-stream writer last flag wins")
    assert len(streamed) == 1


def test_agent_list_shows_the_agents(ip: InteractiveShell) -> None:
    frame = run(ip, "%agent --list")
    assert isinstance(frame, pd.DataFrame)
    assert {"writer", "python-expert", "code-reviewer"} <= set(frame["name"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%agent -o 'not a name' writer hi", "not a valid variable name"),
        ("%agent", "needs an agent"),
        ("%agent writer", "task is empty"),
        ("%agent --bogus writer hi", "unrecognized arguments"),
        ("%agent writer -m haiku hello", "options go before NAME: `%agent -m ... writer TASK`"),
        ("%agent writer --no-cache hello", "options go before NAME"),
        ("%agent writer --max-tokens=5 hello", "options go before NAME"),
        ("%%agent writer -o x\nhello", "options go before NAME"),
    ],
)
def test_agent_usage_errors_are_one_line(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        run(ip, line)
    err = capsys.readouterr().err
    assert err.startswith("UsageError: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%agent -t 3 writer hi", "--temperature: must be a finite number in [0, 1], got 3.0"),
        ("%agent -t nan writer hi", "--temperature: must be a finite number in [0, 1], got nan"),
        ("%agent --max-tokens 0 writer hi", "--max-tokens: must be a whole number from 1"),
        ("%agent --timeout 0 writer hi", "--timeout: must be a finite number in (0, 3600]"),
        ("%agent --max-attempts 0 writer hi", "--max-attempts: must be a whole number from 1"),
        ("%agent --stop ' ' writer hi", "--stop: must be a list of non-blank strings"),
        ("%agent -m '' writer hi", "--model: must be a non-empty model id"),
        ("%agent --budget -1 writer hi", "--budget: must be a finite amount of US dollars"),
        ("%agent --budget nan writer hi", "--budget: must be a finite amount of US dollars"),
        ("%agent --budget ten writer hi", "--budget: must be a finite amount of US dollars"),
    ],
)
def test_agent_option_errors_are_one_line(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    capsys.readouterr()
    result = run_cell(ip, line)
    assert isinstance(result.error_in_exec, OptionError)  # raised before any call
    assert message in str(result.error_in_exec)
    out, err = capsys.readouterr()
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("OptionError: %agent --")


def test_agentnb_errors_are_one_line_without_traceback(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    result = run_cell(ip, "%agent no-such-agent hello")
    assert isinstance(result.error_in_exec, AgentNotFoundError)  # the real type propagates
    out, err = capsys.readouterr()
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("AgentNotFoundError: no agent named 'no-such-agent'")
    assert "Traceback" not in out + err


def test_unexpected_errors_keep_their_traceback(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: AgentOrchestrator, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(AgentOrchestrator, "execute_agent", broken)
    capsys.readouterr()
    result = run_cell(ip, "%agent writer hello")
    assert isinstance(result.error_in_exec, RuntimeError)
    out, err = capsys.readouterr()
    text = re.sub(r"\x1b\[[0-9;]*m", "", out + err)
    assert "Traceback (most recent call last)" in text and "def broken" in text


def test_help_is_complete(ip: InteractiveShell) -> None:
    for kind, name, needles in [
        ("line", "agent", ["--model", "--no-cache", "--stream", "--list", "{{name}}", "-o VAR"]),
        ("cell", "workflow", ["--dry-run", "--max-concurrency", "--quiet", "--resume", "YAML"]),
        ("line", "agentnb", ["metrics", "cache", "config", "agents", "reset", "speedup"]),
    ]:
        doc = find_magic(ip, name, kind).__doc__ or ""
        for needle in needles:
            assert needle in doc, (name, needle)


def test_a_task_may_contain_options_after_its_first_word(ip: InteractiveShell) -> None:
    run(ip, "%agent writer Explain -m and --no-cache")
    assert sim_tasks()[-1] == "Explain -m and --no-cache"
    run(ip, "%agent writer -1 is negative")  # not an option of the magic
    assert sim_tasks()[-1] == "-1 is negative"
    run(ip, "%%agent writer\n-m haiku, as text")  # the body is never parsed
    assert sim_tasks()[-1] == "-m haiku, as text"


def test_split_agent_line_keeps_the_task_verbatim() -> None:
    parser = AgentMagics.agent.parser  # type: ignore[attr-defined]
    args, task = split_agent_line(parser, "-m 'claude x' -o out writer  it's a \"test\" -m no")
    assert (args.model, args.output, args.name) == ("claude x", "out", "writer")
    assert task == 'it\'s a "test" -m no'
    args, task = split_agent_line(parser, "--list")
    assert args.list and args.name is None and task == ""


def test_fill_placeholders() -> None:
    assert fill_placeholders("{{a}}+{a}+{{ a }}", {"a": 1}) == "1+{a}+1"
    with pytest.raises(UsageError, match=r"\{\{b\}\}, \{\{c\}\}, which are not defined"):
        fill_placeholders("{{b}} {{c}}", {})


# -- %%workflow ----------------------------------------------------------------------------------
def test_workflow_runs_and_stores_the_run(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.user_ns["topic"] = "caches"
    run_value = run(ip, "%%workflow -o review\n" + FAN_OUT)
    assert isinstance(run_value, WorkflowRun)
    assert ip.user_ns["review"] is run_value and ip.user_ns["_"] is run_value
    assert run_value.status == "succeeded"
    assert run_value.steps["a"].task == "first about caches"
    out = capsys.readouterr().out
    # a terminal cannot update in place: one line per finished step, then the run
    assert re.search(r"^  d\s+succeeded\s+\d+\.\d\d s$", out, re.MULTILINE)
    assert "workflow 'fan' succeeded" in out


def test_workflow_quiet_and_options(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.user_ns["topic"] = "caches"
    capsys.readouterr()
    assert run(ip, "%%workflow --quiet -o quiet_run --max-concurrency 1\n" + FAN_OUT) is None
    assert capsys.readouterr().out == ""
    assert orch().backend.peak_in_flight == 1  # type: ignore[attr-defined]
    cached = run(ip, "%%workflow --quiet\n" + FAN_OUT)
    assert {s.status for s in cached.steps.values()} == {"cached"}
    fresh = run(ip, "%%workflow --quiet --no-cache\n" + FAN_OUT)
    assert {s.status for s in fresh.steps.values()} == {"succeeded"}


def test_workflow_dry_run_runs_nothing(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.user_ns["topic"] = "caches"
    plan = run(ip, "%%workflow --dry-run -o wf\n" + FAN_OUT)
    assert isinstance(ip.user_ns["wf"], Workflow)
    assert len(orch().tracker) == 0
    out = capsys.readouterr().out
    assert "workflow 'fan' is valid: 4 steps in 2 stages; nothing was run" in out
    assert "stage 1: a (writer); b (writer); c (writer)" in out
    assert "stage 2: d (python-expert) <- a, b, c" in out
    assert "<td><code>d</code></td>" in plan._repr_html_()


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ("name: x\nsteps: [\n", "WorkflowValidationError", "YAML"),
        (
            "name: x\nsteps:\n  - {id: a, agent: writer, task: '{{b}}'}\n"
            "  - {id: b, agent: writer, task: '{{a}}'}\n",
            "WorkflowValidationError",
            "dependency cycle",
        ),
        (
            "name: x\nsteps:\n  - {id: a, agent: nobody, task: hi}\n",
            "WorkflowValidationError",
            "unknown agent 'nobody'",
        ),
        (
            "name: x\nsteps:\n  - {id: a, agent: writer, task: '{{undefined_here}}'}\n",
            "WorkflowValidationError",
            "unresolved placeholder",
        ),
    ],
)
def test_workflow_errors_are_one_line(
    ip: InteractiveShell,
    capsys: pytest.CaptureFixture[str],
    body: str,
    error: str,
    message: str,
) -> None:
    capsys.readouterr()
    result = run_cell(ip, "%%workflow\n" + body)
    assert isinstance(result.error_in_exec, WorkflowValidationError)
    out, err = capsys.readouterr()
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{error}: ") and message in lines[0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("name: x\nsteps: a: b\n", "line 3 of the cell: invalid YAML"),  # body line 2
        (
            "name: x\nsteps:\n  - {id: a, agent: writer, task: hi}\n"
            "  - {id: a, agent: writer, task: ho}\n",
            "line 5 of the cell: step 'a', field 'id': duplicate step id 'a' "
            "(first on line 4 of the cell)",
        ),
        (
            "\nname: x\nsteps:\n  - id: a\n    agent: nobody\n    task: hi\n",
            "line 6 of the cell: step 'a', field 'agent': unknown agent 'nobody'",
        ),
    ],
)
def test_workflow_errors_count_lines_in_the_cell(
    ip: InteractiveShell, body: str, message: str
) -> None:
    result = run_cell(ip, "%%workflow\n" + body)
    error = result.error_in_exec
    assert isinstance(error, WorkflowValidationError)
    assert str(error).startswith(message)
    assert error.line == int(message.split()[1])


def test_workflow_file_errors_count_lines_in_the_file(ip: InteractiveShell, tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text("name: x\nsteps:\n  - {id: a, agent: nobody, task: hi}\n")
    for source in (f"%workflow {path}", f"%%workflow\n{path}\n"):
        error = run_cell(ip, source).error_in_exec
        assert isinstance(error, WorkflowValidationError)
        assert str(error).startswith("line 3: step 'a'"), source


def test_workflow_run_display_carries_provenance(ip: InteractiveShell) -> None:
    ip.user_ns["topic"] = "caches"
    run(ip, "%%workflow --quiet -o first\n" + FAN_OUT)
    again = run(ip, "%%workflow --quiet\n" + FAN_OUT)
    formatter: Any = ip.display_formatter
    data, metadata = formatter.format(again)
    assert data["text/html"] == again._repr_html_()
    assert data["text/plain"].startswith("workflow 'fan' succeeded: 4 steps (4 cached)")
    writer = {"agent": "writer", "model": "claude-sonnet-5-5", "cached": True}
    assert metadata["agentnb"] == {
        "workflow": "fan",
        "backend": "simulated",
        "simulated": True,
        "steps": {
            "a": {**writer, "status": "cached"},
            "b": {**writer, "status": "cached"},
            "c": {**writer, "status": "cached"},
            "d": {**writer, "agent": "python-expert", "status": "cached"},
        },
    }


def test_workflow_from_a_file_and_resume(ip: InteractiveShell, tmp_path: Path) -> None:
    ip.user_ns["src"] = "def f(x):\n    return x / 0\n"
    path = REPO / "examples" / "workflows" / "code-review.yaml"
    first = run(ip, f"%workflow -o first {path}")
    assert first.name == "code-review" and first.status == "succeeded"
    again = run(ip, f"%%workflow --resume first --no-cache\n{path}\n")  # a one-line body: a path
    assert all(s.reused for s in again.steps.values())
    with pytest.raises(UsageError, match="expected a WorkflowRun"):
        run(ip, f"%workflow --resume src {path}")
    with pytest.raises(UsageError, match="not both"):
        run(ip, f"%%workflow {path}\nname: x\n")


# -- %agentnb ------------------------------------------------------------------------------------
def test_agentnb_metrics_reset_and_plot(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    run(ip, "%agent writer one")
    run(ip, "%agent writer two")
    frame = run(ip, "%agentnb metrics -o calls")
    assert list(frame["agent"]) == ["writer", "writer"]
    assert ip.user_ns["calls"] is frame
    capsys.readouterr()
    run(ip, "%agentnb metrics --plot")
    assert "<Figure size" in capsys.readouterr().out  # the figure was displayed
    run(ip, "%agentnb reset")
    assert "2 call records forgotten" in capsys.readouterr().out
    assert run(ip, "%agentnb metrics").empty


def test_agentnb_cache_config_agents(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    run(ip, "%agent writer cache me")
    run(ip, "%agent writer cache me")
    stats = run(ip, "%agentnb cache stats")
    assert int(stats["hits_memory"].iloc[0]) == 1 and int(stats["entries"].iloc[0]) == 1
    run(ip, "%agentnb cache clear")
    assert "1 entries removed" in capsys.readouterr().out
    assert int(run(ip, "%agentnb cache")["entries"].iloc[0]) == 0
    run(ip, "%config AgentNB.max_tokens = 512")
    settings = run(ip, "%agentnb config")
    assert settings.loc["max_tokens"].tolist() == ["512", "%config"]
    assert settings.loc["backend"].tolist() == ["simulated", "agentnb.yaml / environment"]
    assert settings.loc["timeout_s"].tolist() == ["120.0", "default"]
    assert "writer" in set(run(ip, "%agentnb agents")["name"])
    with pytest.raises(UsageError, match="does not take --plot"):
        run(ip, "%agentnb config --plot")
    with pytest.raises(UsageError, match="expected stats or clear"):
        run(ip, "%agentnb cache flush")


def test_agentnb_speedup(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    report = run(ip, "%agentnb speedup -n 3 -o speed")
    assert isinstance(report, agentnb.SpeedupReport) and ip.user_ns["speed"] is report
    assert list(report.table["mode"]) == ["sequential", "concurrent", "cached"]
    assert report.calls == 3
    assert "<Figure size" in capsys.readouterr().out


# -- %config AgentNB -----------------------------------------------------------------------------
def test_every_config_field_but_the_key_is_a_documented_setting() -> None:
    traits = AgentNB.class_traits(config=True)
    assert set(traits) == set(SETTINGS) == set(field_names()) - {"api_key"}
    assert all(trait.help for trait in traits.values())


def test_config_settings_take_effect_in_place(
    ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(ip, "%agent writer before")
    first = orch()
    assert first.config.max_concurrency == 10
    run(ip, "%config AgentNB.max_concurrency = 2")
    run(ip, "%config AgentNB.default_model = 'claude-haiku-5-5'")
    ip.user_ns["topic"] = "limits"
    run(ip, "%%workflow --quiet\n" + FAN_OUT)
    assert orch() is first and first.config.max_concurrency == 2
    assert first.backend.peak_in_flight == 2  # type: ignore[attr-defined]
    assert run(ip, "%agent writer after").model == "claude-haiku-5-5"
    assert len(first.tracker) == 6  # the call made before the change is still counted
    run(ip, "%agent writer again")
    assert orch() is first


def test_a_config_change_keeps_handles_the_cache_and_injected_faults(
    ip: InteractiveShell,
) -> None:
    run(ip, "%config AgentNB.cache_backend = 'memory'")
    run(ip, "%agent writer Write a haiku about caches")
    handle = agentnb.default_orchestrator()  # what the notebooks teach
    sim = handle.backend
    sim.inject("server_error", agent="python-expert")  # type: ignore[attr-defined]
    run(ip, "%config AgentNB.max_concurrency = 3")
    run(ip, "%config AgentNB.max_attempts = 1")
    assert run(ip, "%agent writer Write a haiku about caches").cached  # the memory cache
    again = handle.execute_agent("writer", "Write a haiku about caches")  # not closed
    assert again.cached
    assert handle.config.max_concurrency == 3 and handle.backend is sim
    result = run_cell(ip, "%agent python-expert hello")  # the injected fault is still armed
    assert type(result.error_in_exec).__name__ == "AgentCallError"
    assert len(handle.tracker) == 4


def test_a_new_metrics_path_brings_its_own_records(ip: InteractiveShell, tmp_path: Path) -> None:
    run(ip, "%agent writer before")
    path = tmp_path / "calls.jsonl"
    run(ip, f"%config AgentNB.metrics_path = {str(path)!r}")
    run(ip, "%agent writer after")
    tracker = orch().tracker
    assert tracker.path == path and tracker.flush()
    assert len(tracker) == 1  # the file's records (here: the call made since), not the session's
    assert len(path.read_text().splitlines()) == 1


def test_config_listing_shows_the_values_in_effect(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    run(ip, "%config AgentNB.max_concurrency = 3")
    capsys.readouterr()
    run(ip, "%config AgentNB")
    out = capsys.readouterr().out
    assert "AgentNB.max_concurrency=<Int>\n    Most agent calls in flight" in out
    assert "    Default: 10\n    Current: 3 (%config)" in out
    assert "Current: 'simulated' (agentnb.yaml / environment)" in out
    assert "api_key" not in out


def test_a_config_value_equal_to_the_default_still_overrides_the_environment(
    ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTNB_MAX_CONCURRENCY", "3")
    run(ip, "%agentnb metrics")
    assert orch().config.max_concurrency == 3
    run(ip, "%config AgentNB.max_concurrency = 10")  # the trait's own default value
    run(ip, "%agentnb metrics")
    assert orch().config.max_concurrency == 10


def test_bad_config_values_are_refused_with_one_line_naming_the_setting(
    ip: InteractiveShell, caplog: pytest.LogCaptureFixture
) -> None:
    run(ip, "%config AgentNB.max_concurrency = 0")
    run(ip, "%config AgentNB.backend = 'openai'")
    run(ip, "%config AgentNB.sim_fault_kinds = ['gremlins']")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3 and all("\n" not in m for m in messages)
    assert "max_concurrency" in messages[0] and "at least 1" in messages[0]
    assert "backend" in messages[1] and "openai" in messages[1]
    assert "sim_fault_kinds" in messages[2] and "gremlins" in messages[2]
    run(ip, "%agentnb metrics")
    assert orch().config.max_concurrency == 10 and orch().config.backend == "simulated"
    session = ip.configurables[-1]
    assert isinstance(session, AgentNB) and session.explicit_settings() == []


def test_settings_survive_a_reload(ip: InteractiveShell) -> None:
    run(ip, "%config AgentNB.sim_seed = 7")
    ip.run_line_magic("reload_ext", "agentnb")
    run(ip, "%agentnb metrics")
    assert orch().config.sim_seed == 7


# -- unloading -----------------------------------------------------------------------------------
def test_unload_removes_everything_it_added(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    run(ip, "%agent -o kept writer hello")
    magics_before = {k: set(v) for k, v in ip.magics_manager.magics.items()}
    ip.run_line_magic("unload_ext", "agentnb")
    after = {k: set(v) for k, v in ip.magics_manager.magics.items()}
    assert magics_before["line"] - after["line"] == {"agent", "workflow", "agentnb"}
    assert magics_before["cell"] - after["cell"] == {"agent", "workflow"}
    assert "AgentMagics" not in ip.magics_manager.registry
    assert not any(isinstance(c, (AgentNB, AgentMagics)) for c in ip.configurables)
    assert keep_questions not in ip.input_transformers_cleanup
    assert isinstance(ip.user_ns["kept"], agentnb.AgentResult)  # the user's variable stays
    with pytest.raises(UsageError, match="not found"):
        run(ip, "%agent writer hello")
    capsys.readouterr()
    ip.run_line_magic("load_ext", "agentnb")  # and it loads again
    assert run(ip, "%agent writer hello").agent == "writer"


# -- the plain-Python example --------------------------------------------------------------------
def test_quickstart_example_runs_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTNB_", "ANTHROPIC_"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("backend: simulated\n")
    for heading in ("# 1. One agent", "# 3. A workflow", "# 4. Metrics", "# 5. Speedup"):
        assert heading in out
    assert "workflow 'code-review' succeeded: 4 steps" in out
    assert re.search(r"cached\s+\d+\.\d+ s\s+speedup\s+[\d,.]+x\s+hits 100%", out)
    assert not (tmp_path / "cache").exists()  # the example writes nothing to disk
    assert Config.load(env={}).backend == "auto"  # nothing here changed the defaults


# -- estimate and budget -------------------------------------------------------------------------
def test_agent_estimate_runs_nothing_and_budget_refuses_in_one_line(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    estimate = run(ip, "%agent --estimate -o guess writer Write a haiku about caches")
    assert isinstance(estimate, Estimate) and ip.user_ns["guess"] is estimate
    assert estimate.calls == 1 and estimate.cost_high_usd > 0
    assert sim_tasks() == [] and len(orch().tracker) == 0
    capsys.readouterr()
    result = run_cell(ip, "%agent --budget 0 writer Write a haiku about caches")
    assert isinstance(result.error_in_exec, BudgetExceededError)
    out, err = capsys.readouterr()
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("BudgetExceededError: budget of $0.0000")
    assert sim_tasks() == []
    assert run(ip, "%agent --budget 1 writer Write a haiku about caches").cost_usd > 0


def test_workflow_estimate_budget_and_spend(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.user_ns["topic"] = "caches"
    estimate = run(ip, "%%workflow --estimate -o guess\n" + FAN_OUT)
    assert isinstance(estimate, Estimate) and ip.user_ns["guess"] is estimate
    assert list(estimate.table["step"]) == ["a", "b", "c", "d"] and sim_tasks() == []
    with pytest.raises(UsageError, match="not both"):
        run(ip, "%%workflow --estimate --dry-run\n" + FAN_OUT)
    with pytest.raises(OptionError, match=r"^%%workflow --budget: must be"):
        run(ip, "%%workflow --budget -3\n" + FAN_OUT)
    stopped = run(ip, "%%workflow --budget 0\n" + FAN_OUT)
    assert stopped.status == "budget" and sim_tasks() == []
    assert {s.status for s in stopped.steps.values()} == {"budget"}
    assert "budget" in capsys.readouterr().out
    done = run(ip, "%%workflow --budget 5\n" + FAN_OUT)
    assert done.status == "succeeded"
    spend = run(ip, "%agentnb spend -o money")
    assert isinstance(spend, Spend) and ip.user_ns["money"] is spend
    assert spend.calls == 4 and spend.total_usd == pytest.approx(orch().metrics()["cost_usd"].sum())


def test_agentnb_quota_shows_the_quotas_met(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(ip, "%agentnb quota") is None
    assert "no quota met yet" in capsys.readouterr().out
    run(ip, """%config AgentNB.sim_limits = {"*": {"rpm": 6000}}""")
    run(ip, "%agent writer Write a haiku about caches")
    table = run(ip, "%agentnb quota -o q")
    assert ip.user_ns["q"] is table
    (row,) = table.to_dict("records")
    assert row["state"] == "known" and row["rpm"] == 6000 and row["sent"] == 1
    history = run(ip, "%agentnb quota history")
    assert list(history.columns) == ["time", "quota", "concurrency", "why"]
    assert list(history["why"])[:1] == ["start"]
    with pytest.raises(UsageError, match="expected history"):
        run(ip, "%agentnb quota everything")


# -- Message Batches -----------------------------------------------------------------------------
def fast_batches(ip: InteractiveShell) -> None:
    """Batches that end in milliseconds, polled as often."""
    run(ip, "%config AgentNB.sim_batch_latency_s = 0.01")
    run(ip, "%config AgentNB.batch_poll_s = 0.002")
    run(ip, "%config AgentNB.batch_poll_max_s = 0.01")


def test_agent_and_workflow_batch_flags(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    fast_batches(ip)
    result = run(ip, "%agent --batch -o r writer Write a haiku about caches")
    assert isinstance(result, agentnb.AgentResult) and ip.user_ns["r"] is result
    assert sim_tasks() == [] and orch().metrics()["batch_id"].notna().all()
    online = run(ip, "%agent --estimate writer Write a haiku about caches")
    half = run(ip, "%agent --estimate --batch writer Write a haiku about caches")
    assert half.cost_high_usd == pytest.approx(online.cost_high_usd / 2)
    capsys.readouterr()
    refused = run_cell(ip, "%agent --batch --stream writer hi")
    assert isinstance(refused.error_in_exec, UsageError)
    assert "not streamed" in capsys.readouterr().err
    with pytest.raises(UsageError, match="not with --over or --models"):
        run(ip, "%agent --batch --models haiku,sonnet writer hi")
    ip.user_ns["topic"] = "caches"
    wf = run(ip, "%%workflow --batch -o review\n" + FAN_OUT)
    assert wf.status == "succeeded" and sim_tasks() == []
    assert {k: s.wave for k, s in wf.steps.items()} == {"a": 1, "b": 1, "c": 1, "d": 2}
    guess = run(ip, "%%workflow --batch --estimate\n" + FAN_OUT)
    assert guess.cost_high_usd == pytest.approx(
        run(ip, "%%workflow --estimate\n" + FAN_OUT).cost_high_usd / 2
    )


def test_agentnb_batches_lists_collects_and_cancels(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    fast_batches(ip)
    assert run(ip, "%agentnb batches") is None
    assert "no Message Batch sent yet" in capsys.readouterr().out
    run(ip, "%agent --batch writer Write a haiku about caches")
    table = run(ip, "%agentnb batches -o known")
    assert ip.user_ns["known"] is table
    (batch_id,) = table["batch_id"]
    assert list(table["state"]) == ["collected"]
    again = run(ip, f"%agentnb batches collect {batch_id}")
    assert again.already and again.cached == 1
    assert run(ip, f"%agentnb batches cancel {batch_id}") is None
    assert f"message batch {batch_id} ended" in capsys.readouterr().out
    for line, error in (
        ("%agentnb batches collect", "needs the batch's id"),
        ("%agentnb batches frobnicate", "expected collect ID, cancel ID or nothing"),
        ("%agentnb cache clear msgbatch_x", "does not take ID"),
    ):
        with pytest.raises(UsageError, match=error):
            run(ip, line)
    capsys.readouterr()
    unknown = run_cell(ip, "%agentnb batches cancel msgbatch_nope")
    assert type(unknown.error_in_exec).__name__ == "NotFoundError"
    out, err = capsys.readouterr()
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("NotFoundError: ")
    assert "msgbatch_nope" in lines[0]
