"""compare_speedup on the simulator, and the benchmark suite end to end (tiny sizes).

Speed is what the benchmark measures; these tests never assert wall-clock thresholds.
"""

from __future__ import annotations

import json
import math
import re
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
from agentnb.backends import AnthropicBackend, simulator_transport
from agentnb.backends.simulated import CallRecord as SimCall
from agentnb.bench import _peak_overlap
from agentnb.bench_suite import Goal, Section, bench_scale, goals_table, profile_top, to_markdown
from agentnb.bench_suite._quota import QuotaJob, pace
from agentnb.bench_suite._quota_procs import bench_processes
from agentnb.errors import AgentnbError
from agentnb.loop import run_sync

SECTIONS = {
    "fanout": "Fan-out efficiency",
    "overhead": "agentnb's overhead per call",
    "cache": "Cache latencies",
    "workflow": "Workflow scheduler",
    "scale": "Flat cost at scale",
    "sdk_baseline": "agentnb vs the bare Anthropic SDK",
    "cached_rerun": "Fully cached re-run vs first run",
    "speedup": "compare_speedup: sequential vs concurrent vs cached",
    "map": "agentnb.map and agentnb.grid on the simulator",
    "quota": "Pacing to a simulated quota",
    "batch": "Message Batches: ",
}

#: The goals every run judges (section, the start of `what`), whatever the sizes of its mode.
REQUIRED_GOALS = [
    ("fanout", "efficiency at 100 calls"),
    ("fanout", "efficiency at 1,000 calls"),
    ("overhead", "per call, one after another"),
    ("overhead", "per call, one concurrent batch"),
    ("cache", "memory hit incl. the key of a 2 KB task"),
    ("cache", "execute_agent hit, blocking, from the main thread"),
    ("scale", "CPU/call at "),
    ("scale", "peak RSS at "),
    ("sdk_baseline", "wall vs bare SDK at "),
    ("sdk_baseline", "wall vs bare SDK at "),
    ("map", "map, cache off: CPU/row beyond bare, "),
    ("map", "map, SQLite cache: CPU/row beyond bare, "),
    ("map", "cached re-run of a "),
    ("map", "grid of "),
    ("quota", "throughput of the quota, limiter on"),
    ("quota", "429s, limiter on"),
    ("quota", "failed calls, limiter on"),
    ("quota", "estimate vs actual: input tokens"),
    ("quota", "estimate vs actual: output"),
    ("quota", "estimate vs actual: cost"),
    ("batch", "agentnb CPU per request, "),
    ("batch", "peak RSS, "),
    ("batch", "batch cost of "),
]
#: The quota section's rows, in order; the last two (processes) run in the full suite only.
QUOTA_RUNS = [
    "agentnb, limiter on",
    "estimate(calls) before the limiter's job vs what it recorded",
    "bare AsyncAnthropic + gather (SDK retries)",
    "agentnb, rate_limiting=False",
    "processes sharing one quota through SQLite",
    "processes sharing one quota through Redis",
]
GOALS_HEADER = "| section | what | measured | bare (same run) | goal | met | stretch met |"


def check_required_goals(goals: list[dict[str, Any]]) -> None:
    """Each required goal is there, with a figure, a goal, and a yes/no `met`."""
    left = list(goals)
    for section, what in REQUIRED_GOALS:
        found = next(g for g in left if g["section"] == section and g["what"].startswith(what))
        left.remove(found)
        assert found["measured"] and found["goal"] and isinstance(found["met"], bool), found
        bare_judged = {"fanout", "overhead", "scale", "sdk_baseline"}
        if section in bare_judged or "limiter on" in what or "beyond bare" in what:
            assert found["bare (same run)"], found  # the bare reference of the same run


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


def sdk_orchestrator() -> tuple[AgentOrchestrator, AnthropicBackend, SimulatedBackend]:
    """The real SDK path (`AnthropicBackend`), answered by the simulator over HTTP."""
    cfg = Config.load(env={}, cache_enabled=True, cache_backend="memory", max_concurrency=10)
    sim = SimulatedBackend(latency_s=0.01, jitter=0.0)
    backend = AnthropicBackend(
        api_key="sk-test", base_url="http://sim.local", transport=simulator_transport(sim)
    )
    agents = AgentRegistry(include_default_dirs=False)
    return AgentOrchestrator(cfg, backend=backend, agents=agents), backend, sim


CALLS = [("writer", f"Idea {i}") for i in range(12)]


def test_concurrent_peak_equals_the_limit_and_cached_makes_no_backend_call() -> None:
    orch, sim = orchestrator()
    with orch:
        report = compare_speedup(CALLS, repeats=1, max_concurrency=4, orchestrator=orch)
        # The cached mode ran last: after its warm-up, no call reached the simulator.
        assert sim.calls[-1].task == CALLS[-1][1] and all(c.ended for c in sim.calls)
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


def test_the_sdk_client_is_made_before_the_first_timed_run() -> None:
    orch, backend, sim = sdk_orchestrator()
    created_when_timed: list[tuple[str, int, bool]] = []

    def progress(mode: str, i: int) -> None:
        created_when_timed.append((mode, i, backend.client_created))

    with orch:
        assert not backend.client_created
        report = compare_speedup(
            CALLS[:3],
            modes=("sequential", "concurrent"),
            repeats=2,
            orchestrator=orch,
            progress=progress,
        )
        records = orch.tracker.records
    assert created_when_timed == [
        ("sequential", 1, True),
        ("sequential", 2, True),
        ("concurrent", 1, True),
        ("concurrent", 2, True),
    ]
    # The warm-up is one untimed call, first in the tracker, and in none of the report's counts.
    assert len(records) == 1 + 2 * 3 * 2 and sim.call_count == 1 + 2 * 3 * 2
    assert records[0].agent == "writer" and not records[0].cache_hit
    assert list(report.table["backend_calls"]) == [6, 6]


def test_peak_in_flight_is_na_when_the_backend_keeps_no_call_log() -> None:
    orch, _, sim = sdk_orchestrator()
    with orch:
        report = compare_speedup(CALLS[:4], repeats=1, max_concurrency=2, orchestrator=orch)
    assert report.table["peak_in_flight"].isna().all()
    assert sim.peak_in_flight == 2  # it was there to see, but only behind the SDK
    assert list(report.table["backend_calls"]) == [4, 4, 0]  # from the tracker's attempts
    assert report.table.loc[2, "hit_rate"] == 1.0


def test_peak_overlap_of_a_call_log() -> None:
    def call(start: float, end: float | None) -> SimCall:
        return SimCall("writer", "m", "t", start, end)

    assert _peak_overlap([]) == 0
    assert _peak_overlap([call(0, 1), call(1, 2), call(2, 3)]) == 1  # end == next start
    assert _peak_overlap([call(0, 2), call(1, 3), call(1.5, None), call(4, 5)]) == 3


def test_the_simulators_counts_are_read_not_reset() -> None:
    orch, sim = orchestrator()
    with orch:
        orch.execute_multiple([("writer", f"Before {i}") for i in range(10)])
        count, log, peak = sim.call_count, list(sim.calls), sim.peak_in_flight
        assert (count, peak) == (10, 10)
        report = compare_speedup(CALLS, repeats=2, max_concurrency=4, orchestrator=orch)
    n = len(CALLS)
    made = 1 + n * 2 + n * 2 + n  # warm-up, sequential, concurrent, the cached mode's warm-up
    assert sim.call_count == count + made and len(sim.calls) == count + made
    assert sim.calls[:count] == log  # the user's log is still there
    assert sim.peak_in_flight == peak  # the running maximum is the backend's, untouched
    t = report.table.set_index("mode")
    assert list(t["backend_calls"]) == [2 * n, 2 * n, 0]
    assert list(t["peak_in_flight"]) == [1, 4, 0]


def test_speedup_is_against_the_first_mode_given() -> None:
    orch, _ = orchestrator()
    with orch:
        report = compare_speedup(
            CALLS[:6], modes=("concurrent", "cached"), repeats=1, orchestrator=orch
        )
    t = report.table
    assert t["speedup"].notna().all()
    assert t["speedup"].iloc[0] == 1.0 and t["speedup"].iloc[1] > 1.0
    assert report.baseline == "concurrent" and "speedup vs concurrent" in repr(report)
    assert t["ideal_speedup"].iloc[0] == 1.0 and math.isnan(t["ideal_speedup"].iloc[1])
    ax = report.plot(Figure().subplots())
    assert ax.get_ylabel() == "speedup vs concurrent"
    heights = [p.get_height() for p in ax.patches if isinstance(p, Rectangle)]
    assert heights == pytest.approx(list(t["speedup"])) and all(h > 0 for h in heights)


def test_the_html_repr_and_the_plot_say_what_was_measured_and_on_what() -> None:
    orch, _ = orchestrator()
    with orch:
        report = compare_speedup(CALLS[:4], repeats=1, max_concurrency=2, orchestrator=orch)
    html = report._repr_html_()
    assert html.startswith("<table") and html.index("<caption>") < html.index("<thead>")
    caption = html[html.index("<caption>") : html.index("</caption>")]
    for part in ("4 calls", "max_concurrency=2", "backend=simulated", "speedup vs sequential"):
        assert part in caption
    assert report.simulated and repr(report).splitlines()[0] == f"SpeedupReport: {report.caption}"
    assert report.plot(Figure().subplots()).get_title() == "Speedup on simulated (dashed: ideal)"

    sdk, _, _ = sdk_orchestrator()
    with sdk:
        behind_sdk = compare_speedup(CALLS[:2], modes=("concurrent",), repeats=1, orchestrator=sdk)
    assert behind_sdk.simulated and behind_sdk.backend == "claude"
    assert "backend=claude (simulated)" in behind_sdk._repr_html_()
    assert "claude (simulated)" in behind_sdk.plot(Figure().subplots()).get_title()


def test_a_mode_given_twice_is_refused() -> None:
    orch, _ = orchestrator()
    with orch, pytest.raises(AgentnbError, match="each mode may be given once"):
        compare_speedup(CALLS[:2], modes=("sequential", "sequential"), orchestrator=orch)


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
        {
            "figure": "x",
            "value": 1,
            "goal": "<= 2",
            "met": True,
            "_goals": [Goal("<= 2", True, "1")],
        },
        {
            "figure": "y",
            "value": 3,
            "goal": "<= 2",
            "met": False,
            "_goals": [Goal("<= 2", False, "3", bare="2", what="why", stretch=False)],
        },
        {"figure": "z", "value": None, "goal": "", "met": None},
    ]
    text = to_markdown(rows)
    assert text.splitlines()[0] == "| figure | value | goal | met |"  # no private columns
    assert "| x | 1 | <= 2 | yes |" in text and "| y | 3 | <= 2 | **NO** |" in text
    assert "| z |  |  |  |" in text
    goals = goals_table([Section("s", "S", "", rows)])
    assert [(g["what"], g["measured"], g["bare (same run)"], g["met"]) for g in goals] == [
        ("figure=x", "1", "", True),
        ("why", "3", "2", False),
    ]
    table = to_markdown(goals)
    assert table.splitlines()[0] == GOALS_HEADER
    assert "| s | why | 3 | 2 | <= 2 | **NO** | no |" in table


def test_profile_top_sees_the_home_loop_thread_and_the_collector() -> None:
    async def on_home() -> int:
        return sum(len(str(i)) for i in range(50_000))

    def work() -> None:
        run_sync(on_home())

    rows = profile_top(work, limit=5)
    assert len(rows) == 5 + 2
    assert any("on_home" in r["function"] or "genexpr" in r["function"] for r in rows[:5])
    assert rows[-2]["function"].startswith("(garbage collector:")
    assert rows[-1]["function"] == "(all functions, both threads)"
    assert rows[-1]["own_ms"] >= max(r["own_ms"] for r in rows[:5])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_scale_child_reports_its_own_peak_rss() -> None:
    ballast = bytearray(300 * 1024 * 1024)  # the parent is large; the child must not inherit it
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    rows = bench_scale(50, small=20, max_concurrency=10, latency_s=0.001)
    del ballast
    assert [(r["run"], r["calls"]) for r in rows] == [
        ("agentnb", 20),
        ("bare", 20),
        ("agentnb", 50),
        ("bare", 50),
    ]
    for row in rows:
        assert 0 < row["rss_before_mb"] <= row["peak_rss_mb"] < 250
        assert row["peak_in_flight"] == 10 and row["ok"] == row["calls"]
        assert row["cpu_s"] > 0 and row["wall_s"] > 0
    assert [g.what for g in rows[2]["_goals"]] == [
        "CPU/call at 50 vs 20 calls",
        "peak RSS at 50 calls vs bare",
    ]


def test_bench_smoke_prints_every_table_and_writes_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["bench", "--smoke", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0
    header = out.split("\n### ")[0]
    assert header.startswith("## agentnb bench (smoke)")
    assert re.search(r"home loop: (uvloop|asyncio)", header) and "Python 3." in header
    assert re.search(r"load average \(1 / 5 / 15 min\): .+ at the start, .+ at the end", header)
    headings = [line for line in out.splitlines() if line.startswith("### ")]
    assert len(headings) == len(SECTIONS) + 1
    for title, heading in zip(SECTIONS.values(), headings, strict=False):
        assert heading.startswith(f"### {title}")
    assert headings[-1].startswith("### Goals:")
    data = json.loads((tmp_path / "results.json").read_text())
    env = data["environment"]
    assert env["mode"] == "smoke" and env["home_loop"] in {"uvloop", "asyncio"}
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert len(env["load_average_start"]) == len(env["load_average_end"]) == 3
    assert [s["key"] for s in data["sections"]] == list(SECTIONS)
    for section in data["sections"]:
        assert section["rows"], section["key"]
        assert all(isinstance(r["met"], bool) or r["met"] is None for r in section["rows"])
        assert not any(k.startswith("_") for r in section["rows"] for k in r)
        assert f"| {next(iter(section['rows'][0]))} |" in out  # its table was printed
    goals = data["goals"]
    assert goals and all(isinstance(g["met"], bool) for g in goals)
    check_required_goals(goals)
    # Every missed goal among the required ones is profiled, and only missed goals are.
    profiled = {(p["section"], p["what"]) for p in data["profiles"]}
    missed = {(g["section"], g["what"]) for g in goals if g["met"] is False}
    assert profiled <= missed
    for g in goals:
        if g["met"] is False and any(
            g["section"] == s and g["what"].startswith(w) for s, w in REQUIRED_GOALS
        ):
            assert (g["section"], g["what"]) in profiled, g
    for p in data["profiles"]:
        assert p["rows"][-1]["function"] == "(all functions, both threads)"
        assert f"#### Profile of the missed goal: {p['section']}, {p['what']}" in out
    check_quota_rows(next(s["rows"] for s in data["sections"] if s["key"] == "quota"))
    check_map_rows(next(s["rows"] for s in data["sections"] if s["key"] == "map"), "smoke")
    batch = next(s["rows"] for s in data["sections"] if s["key"] == "batch")
    check_batch_rows(batch, [g for g in goals if g["section"] == "batch"])
    for png in ("speedup.png", "skewed_timeline.png", "skewed_latency.png", "skewed_cost.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


#: The header of each section's table in `bench --quick`, then of the goals table: pinned, since
#: scripts read these tables.
QUICK_HEADERS = {
    "fanout": "| calls | latency_ms | repeats | concurrent_s | bare_gather_s | sequential_s | "
    "speedup | ideal_speedup | efficiency | bare_efficiency | vs_bare | peak_in_flight | goal | "
    "met |",
    "overhead": "| mode | calls | repeats | bare_us | agentnb_us | overhead_us | goal | met |",
    "cache": "| store | op | entries | samples | p50_us | p99_us | note | goal | met |",
    "workflow": "| figure | value | unit | goal | met |",
    "scale": "| run | calls | concurrency | latency_ms | ok | wall_s | wall_over_ideal | cpu_s | "
    "cpu_us_per_call | cpu_vs_small | rss_before_mb | peak_rss_mb | peak_in_flight | goal | met |",
    "sdk_baseline": "| client | calls | latency_ms | repeats | wall_s_median | wall_s_min | "
    "vs_bare | goal | met |",
    "cached_rerun": "| calls | latency_ms | first_run_s | rerun_ms_median | rerun_hit_rate | "
    "speedup | backend_calls_in_reruns | goal | met |",
    "speedup": "| mode | wall_s_mean | wall_s_min | wall_s_max | speedup | calls | repeats | "
    "hit_rate | backend_calls | peak_in_flight | ideal_speedup | goal | met |",
    "map": "| figure | rows | latency_ms | concurrency | ok | wall_s | cpu_us_per_row | "
    "beyond_bare_us | speedup | wall_over_ideal | peak_rss_mb | goal | met |",
    "quota": "| run | calls | concurrency | attempts | answered | failed | 429s | 429s_pct | "
    "wall_s | throughput | detail | goal | met |",
    "batch": "| run | requests | cache | wall_s | agentnb_us | sim_us | sdk_us | peak_rss_mb | "
    "detail | goal | met |",
    "goals": GOALS_HEADER,
}


def test_bench_quick_runs_and_prints_every_table(capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's `bench --quick`, for real (about 30 s): every section's table is printed.

    Only the shape of the output is checked; whether the goals are met is the benchmark's
    business (it depends on the machine), not this test's.
    """
    status = main(["bench", "--quick"])
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith("## agentnb bench (quick)")
    blocks = out.split("\n### ")[1:]
    titles = [*SECTIONS.values(), "Goals:"]
    assert len(blocks) == len(titles)
    for block, title, header in zip(blocks, titles, QUICK_HEADERS.values(), strict=True):
        lines = block.splitlines()
        assert lines[0].startswith(title)
        at = lines.index(header)  # raises if the table or its header is missing
        assert set(lines[at + 1].strip("|").split("|")) == {"---"}
        end = next((i for i in range(at + 2, len(lines)) if not lines[i].startswith("| ")), None)
        rows = [line for line in lines[at + 2 : end] if line.startswith("| ")]
        assert rows and all(r.count(" | ") == header.count(" | ") for r in rows), title
    goals = blocks[-1]
    assert re.match(r"Goals: (\d+) of (\d+) met", goals)
    assert "| fanout | efficiency at 1,000 calls |" in goals
    assert "| scale | CPU/call at 10,000 vs 1,000 calls |" in goals
    assert "| scale | peak RSS at 10,000 calls vs bare |" in goals
    assert goals.count("| sdk_baseline | wall vs bare SDK at ") == 2
    assert "| map | map, cache off: CPU/row beyond bare, 1,000 rows |" in goals
    assert "| map | map, SQLite cache: CPU/row beyond bare, 1,000 rows |" in goals
    assert "| map | cached re-run of a 30-row map at 200 ms |" in goals
    assert "| map | grid of 90 calls: wall / ideal at concurrency 10 |" in goals
    assert "| 1,000-row map, cache off (quick: scaled down) |" in out
    assert "| quota | throughput of the quota, limiter on |" in goals
    assert "| quota | estimate vs actual: cost |" in goals
    assert "| quota | throughput of the quota, bare" not in goals  # a reference row: no goals
    assert "| batch | agentnb CPU per request, 5,000 requests, SQLite cache |" in goals
    assert "| batch | peak RSS, 5,000 requests |" in goals
    assert "| batch | batch cost of 1,000 calls, 100 cached |" in goals
    batch = blocks[-2].splitlines()
    assert batch[0].startswith("Message Batches: 5,000 requests")
    assert (
        sum(line.startswith("| agentnb, the simulator's batches | 5000 |") for line in batch) == 2
    )
    assert sum(line.startswith("| bare SDK: ") for line in batch) == 2


def check_map_rows(rows: list[dict[str, Any]], mode: str) -> None:
    """The map section of a smoke run: the bare reference, map without and with the cache, the
    cached re-run, the grid; every row answered, each figure where its goal reads it."""
    assert [r["figure"].split(" (")[0] for r in rows] == [
        "200-row bare",
        "200-row map, cache off",
        "200-row map, SQLite cache",
        "20-row map, cached re-run vs first run",
        "grid 3 agents x 3 models x 2 tasks",
    ]
    assert all(r["figure"].endswith(f"({mode})") for r in rows)
    assert all(r["ok"] == r["rows"] for r in rows)
    bare, off, sqlite, rerun, grid = rows
    assert bare["met"] is None and bare["beyond_bare_us"] is None and bare["peak_rss_mb"] > 0
    for row in (off, sqlite):
        expected = row["cpu_us_per_row"] - bare["cpu_us_per_row"]
        assert row["beyond_bare_us"] == pytest.approx(expected, abs=0.2)
        assert row["peak_rss_mb"] > 0 and isinstance(row["met"], bool)
    assert rerun["speedup"] > 1 and grid["rows"] == 18 and grid["wall_over_ideal"] > 0


def check_quota_rows(rows: list[dict[str, Any]]) -> None:
    """The quota section of a smoke or quick run: its rows in order, every call answered (the
    quota is generous enough there), the reference rows judged in their rows only, and the
    rows of processes left out, saying so."""
    assert [r["run"] for r in rows][:4] == QUOTA_RUNS[:4]
    assert [r["run"].split(" ", 1)[1] for r in rows[4:]] == QUOTA_RUNS[4:]
    limiter, estimate, bare, off = rows[:4]
    for row in (limiter, bare, off):
        assert row["answered"] + row["failed"] == row["calls"]
        assert row["attempts"] == row["answered"] + row["429s"]  # every other attempt a 429
    assert limiter["failed"] == 0 and "limiter on" not in bare["goal"]
    assert "reference" in bare["goal"] and "reference" in off["goal"]
    assert "input tokens: predicted" in estimate["detail"]
    for row in rows[4:]:
        assert row["detail"].startswith("not run: left out") and row["met"] is None


def test_pace_is_the_binding_kinds_use_beyond_one_burst() -> None:
    limits = QuotaJob(rpm=600, latency_s=0.0, calls=0).limits  # 10 a second, a burst of 10
    counts: dict[str, Any] = {"accepted_starts": [i / 10 for i in range(31)]}  # 31 in 3 s
    # Requests: (31 - 10) / (10 * 3) = 0.7; input: (31 * 110 - 1100) / (1100 * 3) = 0.7;
    # output: twice the tokens the limit is set for bind most: (31 * 180 - 900) / (900 * 3).
    share, bound = pace(counts, (31 * 110, 31 * 180), limits)
    assert (share, bound) == (round((31 * 180 - 900) / 2700, 3), "output tokens")
    assert pace(counts, (0, 0), limits) == (0.7, "requests")
    assert pace({"accepted_starts": [0.0] * 5}, (0, 0), limits) == (None, "")  # one burst


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_the_quota_rows_of_processes_run_small(store: str) -> None:
    """The processes rows of the full suite, tiny: a server, two workers, their shared store."""
    job = QuotaJob(rpm=6000, latency_s=0.005, calls=30, concurrency=10, processes=2)
    row = bench_processes(job, store)
    name = "Redis" if store == "redis" else "SQLite"
    assert row["run"] == f"2 processes sharing one quota through {name}"
    assert (row["answered"], row["failed"]) == (30, 0), row["detail"]
    assert row["attempts"] == 30 + row["429s"] and "0 warning(s)" in row["detail"]
    assert f"its buckets in {store}" in row["detail"]
    assert [g.what for g in row["_goals"]] == [
        f"{what}, 2 processes, {name}"
        for what in ("throughput of the quota", "429s", "failed calls")
    ]


def check_batch_rows(rows: list[dict[str, Any]], goals: list[dict[str, Any]]) -> None:
    """The batch section of a smoke run: the job with the SQLite cache (its goals), without a
    cache, the bare SDK's two figures, agentnb over the SDK, the price (its goal, met); every
    request answered, each figure where its row reads it."""
    assert [(r["run"], r["cache"]) for r in rows] == [
        ("agentnb, the simulator's batches", "sqlite"),
        ("agentnb, the simulator's batches", "none"),
        ("bare SDK: messages.batches.create", ""),
        ("bare SDK: batches.results, every line parsed", ""),
        ("agentnb over the SDK (AnthropicBackend)", "none"),
        ("price of 100 calls: online vs batch (10 cached)", "memory"),
    ]
    sqlite, off, create, results, over_sdk, price = rows
    for row in (sqlite, off):
        assert row["requests"] == 300 and row["detail"].startswith("300 answered in 1 batch")
        assert row["agentnb_us"] > 0 and row["sim_us"] > 0 and row["sdk_us"] is None
    assert sqlite["peak_rss_mb"] > 0 and off["peak_rss_mb"] is None  # one process for all
    assert [g["what"] for g in goals] == [
        "agentnb CPU per request, 300 requests, SQLite cache",
        "peak RSS, 300 requests",
        "batch cost of 100 calls, 10 cached",
    ]
    assert goals[0]["bare (same run)"].startswith("cache off ") and goals[2]["met"] is True
    assert sqlite["goal"] == "<= 50 µs/request; peak RSS <= 300 MB"
    assert off["met"] is None and create["met"] is None and over_sdk["met"] is None
    assert create["sdk_us"] > 0 and results["sdk_us"] > 0 and create["requests"] == 100
    assert over_sdk["sdk_us"] == pytest.approx(create["sdk_us"] + results["sdk_us"], abs=0.11)
    assert over_sdk["detail"].startswith("100 answered; best of 2: ")
    assert (
        price["met"] is True and price["goal"] == "batch = half the online price, cache hits free"
    )
