"""`python -m agentnb`: the main job, single agents, workflows, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentnb.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTNB_BACKEND", "simulated")
    monkeypatch.setenv("AGENTNB_SIM_LATENCY_S", "0.002")


def test_agent_prints_answer_and_footer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "writer", "Write", "a", "haiku"]) == 0
    out, err = capsys.readouterr()
    assert "Simulated answer" in out
    assert "writer" in err and "simulated" in err


def test_agent_stream_json_keeps_stdout_valid_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "--stream", "--json", "writer", "Stream", "this"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["agent"] == "writer" and data["backend"] == "simulated"
    assert data["text"].strip() in err  # the live text went to stderr


def test_unknown_agent_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "wrtier", "hello"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentnb: error:") and "writer" in lines[0]
    assert "Traceback" not in err and out == ""


def test_bad_name_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "../etc/passwd", "x"]) == 2
    assert "agentnb: error:" in capsys.readouterr().err


def test_agents_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agents", "--json"]) == 0
    names = {a["name"] for a in json.loads(capsys.readouterr().out)}
    assert {"python-expert", "code-reviewer", "data-analyst", "writer"} <= names


def test_run_workflow_dry_run_and_real(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    wf = ROOT / "examples" / "workflows" / "code-review.yaml"
    src = tmp_path / "mod.py"
    src.write_text("def f(x):\n    return 1 / x\n")
    assert main(["run", str(wf), "--var", f"src=@{src}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "is valid" in out and "stage 1" in out
    assert main(["run", str(wf), "--var", f"src=@{src}", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["status"] == "succeeded"


def test_run_workflow_with_a_cycle_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "cycle.yaml"
    bad.write_text(
        "name: c\nsteps:\n"
        "  - {id: a, agent: writer, task: 'x {{b}}'}\n"
        "  - {id: b, agent: writer, task: 'y {{a}}'}\n"
    )
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a -> b -> a" in err


def test_config_never_shows_the_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-CLI-SECRET")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "CLI-SECRET" not in out and "***" in out


def test_demo_is_the_main_job() -> None:
    """The README's first command: a workflow, the metrics table and the speedup table."""
    proc = subprocess.run(
        [sys.executable, "-m", "agentnb", "demo", "--latency", "0.01", "--calls", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "backend: simulated" in out
    assert "WorkflowRun workflow 'code-review' succeeded" in out
    assert "cost_usd" in out and "cache_hit" in out  # the metrics table
    for mode in ("sequential", "concurrent", "cached"):
        assert mode in out
    assert "hits 100%" in out


# -- what a hardening probe found giving tracebacks instead of one line --------------------------
def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("agentnb: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in out + err
    return err


def test_a_workflow_file_that_is_not_utf8_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\nsteps: []\n".encode("latin-1"))
    assert "is not UTF-8 text" in one_line_error(capsys, ["run", str(path)])


def test_a_directory_as_the_workflow_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert "is a directory" in one_line_error(capsys, ["run", str(tmp_path)])


def test_a_binary_var_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(
        "name: w\nsteps:\n  - {id: a, agent: writer, task: 'Look at {{src}}'}\n", encoding="utf-8"
    )
    (tmp_path / "blob.bin").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    err = one_line_error(capsys, ["run", str(tmp_path / "wf.yaml"), "--var", "src=@blob.bin"])
    assert "--var src" in err and "not UTF-8 text" in err


def test_an_undecodable_task_on_the_command_line_is_one_line() -> None:
    # Bytes that are not UTF-8 reach Python's argv as lone surrogates (surrogateescape).
    proc = subprocess.run(
        [
            sys.executable.encode(),
            b"-m",
            b"agentnb",
            b"--simulate",
            b"agent",
            b"writer",
            b"caf\xe9",
        ],
        capture_output=True,
        timeout=60,
        cwd=ROOT,
    )
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2 and err.startswith("agentnb: error: "), err
    assert "lone surrogate" in err and err.count("\n") == 1


def test_estimate_and_budget_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    wf = ROOT / "examples" / "workflows" / "code-review.yaml"
    src = tmp_path / "mod.py"
    src.write_text("def f(x):\n    return 1 / x\n")
    assert main(["run", str(wf), "--var", f"src=@{src}", "--estimate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("estimate of workflow") and "nothing was run" in out
    assert main(["run", str(wf), "--var", f"src=@{src}", "--estimate", "--json"]) == 0
    estimate = json.loads(capsys.readouterr().out)
    assert estimate["calls"] >= 2 and estimate["cost_high_usd"] > estimate["cost_low_usd"] > 0
    assert main(["run", str(wf), "--var", f"src=@{src}", "--budget", "0", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "budget"
    assert main(["agent", "--estimate", "writer", "A", "haiku"]) == 0
    assert capsys.readouterr().out.startswith("estimate of 1 call: cost $")
    assert main(["agent", "--budget", "0", "writer", "A", "haiku"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("agentnb: error: budget of $0.0000")


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "lots"])
def test_a_bad_budget_is_one_line_naming_the_flag(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    assert main(["agent", "--budget", value, "writer", "hi"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and out == ""
    assert lines[0].startswith("agentnb: error: agent --budget: must be a finite amount")


def test_batch_flags(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTNB_SIM_BATCH_LATENCY_S", "0.01")
    monkeypatch.setenv("AGENTNB_BATCH_POLL_S", "0.002")
    monkeypatch.setenv("AGENTNB_BATCH_POLL_MAX_S", "0.01")
    assert main(["agent", "--batch", "--json", "writer", "Write", "a", "haiku"]) == 0
    assert json.loads(capsys.readouterr().out)["agent"] == "writer"
    assert main(["agent", "--batch", "--stream", "writer", "hi"]) == 2
    assert "not streamed" in capsys.readouterr().err
    wf = tmp_path / "waves.yaml"
    wf.write_text(
        "name: w\nsteps:\n"
        "  - {id: a, agent: writer, task: 'first'}\n"
        "  - {id: b, agent: writer, task: 'then {{a}}'}\n"
    )
    assert main(["run", str(wf), "--batch", "--estimate", "--json"]) == 0
    batch = json.loads(capsys.readouterr().out)
    assert main(["run", str(wf), "--estimate", "--json"]) == 0
    online = json.loads(capsys.readouterr().out)
    assert batch["cost_high_usd"] == pytest.approx(online["cost_high_usd"] / 2)
    assert batch["cost_high_usd"] > 0
    assert main(["run", str(wf), "--batch", "--json"]) == 0
    steps = json.loads(capsys.readouterr().out)["steps"]
    assert [s["wave"] for s in steps.values()] == [1, 2]
