"""compare_speedup on the simulator, and the benchmark suite end to end (tiny sizes).

Speed is what the benchmark measures; these tests never assert wall-clock thresholds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from agentnb import AgentOrchestrator, AgentRegistry, Config, SimulatedBackend, compare_speedup
from agentnb.__main__ import main
from agentnb.bench_suite import bench_scale, goals_table, to_markdown
from agentnb.errors import AgentnbError

SECTIONS = {
    "fanout": "Fan-out speedup",
    "overhead": "Orchestrator overhead per call",
    "cache": "Cache latencies",
    "workflow": "Workflow scheduler",
    "scale": "Scale run",
    "sdk_baseline": "agentnb vs the bare Anthropic SDK",
    "cached_rerun": "Fully cached re-run vs first run",
    "speedup": "compare_speedup: sequential vs concurrent vs cached",
}


@pytest.fixture(autouse=True)
def no_open_figures() -> Iterator[None]:
    yield
    plt.close("all")


def orchestrator(cache: bool = True) -> tuple[AgentOrchestrator, SimulatedBackend]:
    cfg = Config.load(
        env={},
        backend="simulated",
        cache_enabled=cache,
        cache_backend="memory",
        max_concurrency=10,
    )
    sim = SimulatedBackend(latency_s=0.01, jitter=0.0)
    orch = AgentOrchestrator(cfg, backend=sim, agents=AgentRegistry(include_default_dirs=False))
    return orch, sim


CALLS = [("writer", f"Idea {i}") for i in range(12)]


def test_concurrent_peak_equals_the_limit_and_cached_makes_no_backend_call() -> None:
    orch, sim = orchestrator()
    with orch:
        report = compare_speedup(CALLS, repeats=1, max_concurrency=4, orchestrator=orch)
        # compare_speedup resets the simulator's log before each repeat; cached ran last, so
        # every call the simulator saw since then was made during the cached mode.
        assert sim.call_count == 0 and sim.calls == []
    t = report.table.set_index("mode")
    assert list(t.index) == ["sequential", "concurrent", "cached"]
    assert t.loc["concurrent", "peak_in_flight"] == 4
    assert t.loc["sequential", "peak_in_flight"] == 1
    assert t.loc["concurrent", "ideal_speedup"] == 4.0  # 12 calls, 4 at a time: 3 waves
    assert t.loc["cached", "backend_calls"] == 0 and t.loc["cached", "hit_rate"] == 1.0
    assert t.loc["concurrent", "backend_calls"] == 12 and t.loc["concurrent", "hit_rate"] == 0
    assert t.loc["sequential", "speedup"] == 1.0
    assert {"wall_s_mean", "wall_s_min", "wall_s_max", "calls", "speedup"} <= set(report.table)
    assert "concurrent" in repr(report) and report.max_concurrency == 4


def test_cached_mode_needs_a_cache() -> None:
    orch, _ = orchestrator(cache=False)
    with orch, pytest.raises(AgentnbError, match="needs a response cache"):
        compare_speedup(CALLS[:2], modes=("cached",), repeats=1, orchestrator=orch)


def test_report_plot_draws_the_table() -> None:
    orch, _ = orchestrator()
    with orch:
        report = compare_speedup(CALLS[:4], modes=("sequential", "concurrent"), orchestrator=orch)
    ax = report.plot(Figure().subplots())
    assert [p.get_height() for p in ax.patches if isinstance(p, Rectangle)] == pytest.approx(
        list(report.table["speedup"])
    )


def test_markdown_and_goals_table() -> None:
    rows: list[dict[str, Any]] = [
        {"figure": "x", "value": 1, "goal": "<= 2", "met": True},
        {"figure": "y", "value": 3, "goal": "<= 2", "met": False},
        {"figure": "z", "value": None, "goal": "", "met": None},
    ]
    text = to_markdown(rows)
    assert text.splitlines()[0] == "| figure | value | goal | met |"
    assert "| x | 1 | <= 2 | yes |" in text and "| y | 3 | <= 2 | **NO** |" in text
    assert "| z |  |  |  |" in text
    from agentnb.bench_suite import Section

    goals = goals_table([Section("s", "S", "", rows)])
    assert [(g["what"], g["met"]) for g in goals] == [("figure=x", True), ("figure=y", False)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_scale_child_reports_its_own_peak_rss() -> None:
    ballast = bytearray(300 * 1024 * 1024)  # the parent is large; the child must not inherit it
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    (row,) = bench_scale(50, max_concurrency=10, latency_s=0.001)
    del ballast
    assert 0 < row["rss_before_mb"] <= row["peak_rss_mb"] < 250
    assert row["peak_in_flight"] == 10 and row["calls"] == 50


def test_bench_smoke_prints_every_table_and_writes_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["bench", "--smoke", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0
    headings = [line for line in out.splitlines() if line.startswith("### ")]
    assert len(headings) == len(SECTIONS) + 1
    for title, heading in zip(SECTIONS.values(), headings, strict=False):
        assert heading.startswith(f"### {title}")
    assert headings[-1].startswith("### Goals:")
    data = json.loads((tmp_path / "results.json").read_text())
    assert [s["key"] for s in data["sections"]] == list(SECTIONS)
    for section in data["sections"]:
        assert section["rows"], section["key"]
        assert all(isinstance(r["met"], bool) or r["met"] is None for r in section["rows"])
        assert f"| {next(iter(section['rows'][0]))} |" in out  # its table was printed
    assert data["goals"] and all(isinstance(g["met"], bool) for g in data["goals"])
    for png in ("speedup.png", "skewed_timeline.png", "skewed_latency.png", "skewed_cost.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
