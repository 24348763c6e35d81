"""Metrics: the call-record DataFrame, summaries, cost from the price file, and persistence."""

from __future__ import annotations

import gc
import json
import math
import threading
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import agentnb
from agentnb import AgentOrchestrator, AgentRegistry, Config, PerformanceTracker, SimulatedBackend
from agentnb.backends import Usage
from agentnb.errors import AgentnbError
from agentnb.metrics import COLUMNS, SUMMARY_COLUMNS, CallRecord, PriceTable, summarize

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def rec(**changes: Any) -> CallRecord:
    """A successful, uncached call of agent `a` on `m1`; override any field."""
    base = CallRecord(
        run_id="r1",
        workflow=None,
        step=None,
        agent="a",
        model="m1",
        backend="simulated",
        started_at=T0,
        latency_ms=100.0,
        queue_ms=0.0,
        attempts=1,
        cache_hit=False,
        input_tokens=10,
        output_tokens=20,
        cache_read_tokens=0,
        cache_write_tokens=0,
        cost_usd=0.01,
        success=True,
        error_type=None,
    )
    return replace(base, **changes)


def known_records() -> list[CallRecord]:
    return [
        rec(latency_ms=100.0, input_tokens=10, output_tokens=1, cost_usd=0.01, workflow="wf"),
        rec(latency_ms=200.0, input_tokens=20, output_tokens=2, cost_usd=0.02, workflow="wf"),
        # a cache hit: costs nothing, bills no tokens, saved what the first call cost
        rec(
            latency_ms=300.0,
            input_tokens=10,
            output_tokens=1,
            cost_usd=0.0,
            cache_hit=True,
            attempts=0,
            cost_saved_usd=0.01,
        ),
        # a failure after two attempts: cost unknown
        rec(
            latency_ms=400.0,
            input_tokens=0,
            output_tokens=0,
            cost_usd=math.nan,
            success=False,
            attempts=2,
            error_type="ServerError",
        ),
        rec(
            agent="b",
            model="unpriced",
            latency_ms=50.0,
            input_tokens=5,
            output_tokens=5,
            cache_read_tokens=7,
            cache_write_tokens=3,
            cost_usd=math.nan,
        ),
    ]


# -- the DataFrame ----------------------------------------------------------------------------

EXPECTED_DTYPES = {
    "run_id": "string",
    "workflow": "string",
    "step": "string",
    "agent": "string",
    "model": "string",
    "backend": "string",
    "started_at": "datetime64[us, UTC]",
    "latency_ms": "float64",
    "queue_ms": "float64",
    "attempts": "int64",
    "cache_hit": "bool",
    "input_tokens": "int64",
    "output_tokens": "int64",
    "cache_read_tokens": "int64",
    "cache_write_tokens": "int64",
    "cost_usd": "float64",
    "success": "bool",
    "error_type": "string",
    "cost_saved_usd": "float64",
    "quota_wait_ms": "float64",
    "concurrency": "int64",
    "rate_limited": "int64",
    "batch_id": "string",
}


def test_columns_are_the_issues_list_plus_cost_saved_the_quotas_and_the_batch() -> None:
    assert list(COLUMNS) == [
        "run_id", "workflow", "step", "agent", "model", "backend", "started_at", "latency_ms",
        "queue_ms", "attempts", "cache_hit", "input_tokens", "output_tokens",
        "cache_read_tokens", "cache_write_tokens", "cost_usd", "success", "error_type",
        "cost_saved_usd", "quota_wait_ms", "concurrency", "rate_limited", "batch_id",
    ]  # fmt: skip


def test_batch_id_is_a_string_column_none_online() -> None:
    tracker = PerformanceTracker()
    tracker.extend([*known_records()[:1], rec(batch_id="msgbatch_01")])
    assert tracker.to_dataframe()["batch_id"].tolist() == [pd.NA, "msgbatch_01"]


@pytest.mark.parametrize("records", [[], known_records()], ids=["empty", "filled"])
def test_dataframe_columns_and_dtypes_are_stable(records: list[CallRecord]) -> None:
    tracker = PerformanceTracker()
    tracker.extend(records)
    df = tracker.to_dataframe()
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == len(records)
    assert {c: str(t) for c, t in df.dtypes.items()} == EXPECTED_DTYPES


def test_dataframe_values_and_missing_strings() -> None:
    tracker = PerformanceTracker()
    tracker.extend(known_records())
    df = tracker.to_dataframe()
    assert df["started_at"].iloc[0] == pd.Timestamp(T0)
    assert pd.isna(df["workflow"].iloc[2]) and df["workflow"].iloc[0] == "wf"
    assert df["error_type"].iloc[3] == "ServerError"
    assert math.isnan(df["cost_usd"].iloc[3])


def test_reset_forgets_records() -> None:
    tracker = PerformanceTracker()
    tracker.extend(known_records())
    tracker.reset()
    assert len(tracker) == 0 and tracker.to_dataframe().empty


# -- summary ----------------------------------------------------------------------------------


def test_summary_by_agent_on_known_records() -> None:
    tracker = PerformanceTracker()
    tracker.extend(known_records())
    s = tracker.summary(by="agent")
    assert list(s.columns) == ["agent", *SUMMARY_COLUMNS]
    a = s.set_index("agent").loc["a"]
    assert a["calls"] == 4
    assert a["p50_latency_ms"] == pytest.approx(250.0)
    assert a["p95_latency_ms"] == pytest.approx(385.0)  # linear: 300 + 0.85 * 100
    assert a["input_tokens"] == 30 and a["output_tokens"] == 3  # the hit bills nothing
    assert a["cost_usd"] == pytest.approx(0.03)  # known costs; the failure's is unknown
    assert a["cost_saved_usd"] == pytest.approx(0.01)
    assert a["unknown_cost_calls"] == 1
    assert a["hit_rate"] == pytest.approx(0.25)
    assert a["error_rate"] == pytest.approx(0.25)
    b = s.set_index("agent").loc["b"]
    assert b["calls"] == 1 and math.isnan(b["cost_usd"])  # nothing known: NaN, never 0
    assert b["cache_read_tokens"] == 7 and b["cache_write_tokens"] == 3


def test_summary_by_model_and_workflow() -> None:
    tracker = PerformanceTracker()
    tracker.extend(known_records())
    by_model = tracker.summary(by="model")
    assert list(by_model["model"]) == ["m1", "unpriced"]
    assert list(by_model["calls"]) == [4, 1]
    by_wf = tracker.summary(by="workflow").set_index("workflow")
    assert by_wf.loc["wf", "calls"] == 2
    assert by_wf.loc["(none)", "calls"] == 3  # calls outside any workflow


def test_summary_empty_keeps_columns_and_dtypes() -> None:
    s = PerformanceTracker().summary(by="model")
    assert s.empty and list(s.columns) == ["model", *SUMMARY_COLUMNS]
    assert str(s["calls"].dtype) == "int64" and str(s["hit_rate"].dtype) == "float64"
    assert str(s["model"].dtype) == "string"


def test_summary_refuses_unknown_grouping() -> None:
    with pytest.raises(AgentnbError, match="latency_ms"):
        summarize(PerformanceTracker().to_dataframe(), by="latency_ms")


# -- cost -------------------------------------------------------------------------------------


def shipped_prices() -> dict[str, dict[str, float]]:
    text = resources.files("agentnb").joinpath("data/prices.yaml").read_text(encoding="utf-8")
    models: dict[str, dict[str, float]] = yaml.safe_load(text)["models"]
    return models


def test_cost_matches_the_price_file_including_cache_tokens() -> None:
    table = PriceTable.default()
    for model in ("claude-sonnet-5-5", "claude-opus-4-7", "claude-haiku-5-5"):
        p = shipped_prices()[model]
        usage = Usage(input_tokens=1200, output_tokens=345, cache_read_tokens=5000,
                      cache_write_tokens=777)  # fmt: skip
        expected = (1200 * p["input"] + 345 * p["output"] + 5000 * p["cache_read"]
                    + 777 * p["cache_write"]) / 1e6  # fmt: skip
        assert table.cost(model, usage) == pytest.approx(expected, rel=1e-12)
        # A Message Batch pays half of it all, prompt-cache reads and writes included.
        assert table.cost(model, usage, batch=True) == pytest.approx(expected / 2, rel=1e-12)


def test_unknown_model_costs_nan() -> None:
    assert math.isnan(PriceTable.default().cost("no-such-model", Usage(input_tokens=1)))
    assert math.isnan(PriceTable.default().cost("no-such-model", Usage(), batch=True))


def test_cache_prices_default_from_the_input_price() -> None:
    table = PriceTable({"m": {"input": 4.0, "output": 8.0}})
    assert table.get("m") == {"input": 4.0, "output": 8.0, "cache_write": 5.0, "cache_read": 0.4}


@pytest.fixture
def scratch_prices(monkeypatch: pytest.MonkeyPatch) -> PriceTable:
    """`agentnb.prices`, restored after the test."""
    monkeypatch.setattr(agentnb.prices, "_table", dict(agentnb.prices._table))
    return agentnb.prices


def sim_orchestrator(**config: Any) -> AgentOrchestrator:
    cfg = Config.load(env={}, backend="simulated", cache_enabled=False, sim_latency_s=0.0, **config)
    return AgentOrchestrator(
        cfg,
        backend=SimulatedBackend(latency_s=0.0),
        agents=AgentRegistry(include_default_dirs=False),
    )


def test_prices_live_in_pricing_and_are_still_importable_from_metrics() -> None:
    from agentnb import metrics, pricing

    assert metrics.prices is pricing.prices is agentnb.prices
    assert metrics.PriceTable is pricing.PriceTable is PriceTable


def test_updating_agentnb_prices_changes_costs(scratch_prices: PriceTable, tmp_path: Path) -> None:
    with sim_orchestrator() as orch:
        before = orch.execute_agent("writer", "Price me", model="model-x-test")
        scratch_prices.update({"model-x-test": {"input": 1.0, "output": 2.0}})
        after = orch.execute_agent("writer", "Price me", model="model-x-test")
        price_file = tmp_path / "prices.yaml"
        price_file.write_text("models:\n  model-x-test: {input: 10.0, output: 20.0}\n")
        scratch_prices.load(price_file)
        loaded = orch.execute_agent("writer", "Price me", model="model-x-test")
        costs = list(orch.metrics()["cost_usd"])
    assert math.isnan(before.cost_usd) and math.isnan(costs[0])
    u = after.usage
    assert u.cache_write_tokens or u.cache_read_tokens  # the system prompt is prompt-cached
    expected = (u.input_tokens * 1.0 + u.output_tokens * 2.0 + u.cache_write_tokens * 1.25
                + u.cache_read_tokens * 0.1) / 1e6  # fmt: skip
    assert after.cost_usd == pytest.approx(expected)
    assert loaded.cost_usd == pytest.approx(10 * after.cost_usd)
    assert costs[1:] == [after.cost_usd, loaded.cost_usd]


def test_cache_hits_cost_nothing_and_report_the_saving() -> None:
    cfg = Config.load(env={}, backend="simulated", cache_backend="memory", sim_latency_s=0.0)
    with AgentOrchestrator(
        cfg,
        backend=SimulatedBackend(latency_s=0.0),
        agents=AgentRegistry(include_default_dirs=False),
    ) as orch:
        orch.execute_agent("writer", "Once")
        orch.execute_agent("writer", "Once")
        df = orch.metrics()
    assert list(df["cache_hit"]) == [False, True]
    assert df["cost_usd"].iloc[1] == 0.0
    assert df["cost_saved_usd"].iloc[1] == pytest.approx(df["cost_usd"].iloc[0])
    assert df["cost_usd"].iloc[0] > 0


# -- persistence ------------------------------------------------------------------------------


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_records_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    first = PerformanceTracker(path)
    records = [rec(latency_ms=float(i), workflow="wf" if i else None) for i in range(3)]
    first.extend(records)
    first.close()
    assert len(lines(path)) == 3
    again = PerformanceTracker(path)  # a new session reading the same file
    assert again.records == records
    assert PerformanceTracker.load(path).records == records
    again.record(rec(agent="later"))
    again.close()
    assert [r.agent for r in PerformanceTracker.load(path).records] == ["a", "a", "a", "later"]


def test_lines_are_strict_json_with_nan_as_null(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    tracker = PerformanceTracker(path)
    tracker.record(rec(cost_usd=math.nan))
    assert tracker.flush()

    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads(lines(path)[0], parse_constant=refuse)
    assert data["cost_usd"] is None and data["started_at"] == T0.isoformat()
    assert math.isnan(PerformanceTracker.load(path).records[0].cost_usd)
    tracker.close()


def test_load_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    with_path = PerformanceTracker(path)
    with_path.record(rec())
    with_path.close()
    loaded = PerformanceTracker.load(path)
    loaded.record(rec(agent="not-written"))
    loaded.reset()
    assert len(lines(path)) == 1 and loaded.path is None


def test_reset_is_remembered_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    tracker = PerformanceTracker(path)
    tracker.extend([rec(agent="old1"), rec(agent="old2")])
    tracker.reset()
    tracker.record(rec(agent="new"))
    tracker.close()
    assert [r.agent for r in PerformanceTracker(path).records] == ["new"]
    assert len(lines(path)) == 4  # append-only: the old lines and a reset marker stay


def test_record_never_waits_for_the_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.jsonl"
    tracker = PerformanceTracker(path)
    writer = tracker._writer
    assert writer is not None
    gate = threading.Event()
    real_write = writer._write

    def stuck_write(data: bytes) -> None:
        gate.wait(timeout=60)  # the disk "hangs" until the records are all in
        real_write(data)

    monkeypatch.setattr(writer, "_write", stuck_write)
    r = rec()
    done = threading.Event()

    def tight_loop() -> None:
        for _ in range(10_000):
            tracker.record(r)
        done.set()

    threading.Thread(target=tight_loop, daemon=True).start()
    # record() must return although the writer cannot write: the loop finishes while stuck.
    assert done.wait(timeout=30), "record() blocked on the writer thread"
    assert not path.read_bytes()  # nothing written yet: the writer really was stuck
    gate.set()
    assert tracker.flush(timeout=30)
    assert len(lines(path)) == 10_000
    tracker.close()


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    tracker = PerformanceTracker(path)
    tracker.extend([rec(agent="one"), rec(agent="two")])
    tracker.close()
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[0][:37])  # half a third line
    loaded = PerformanceTracker.load(path)
    assert [r.agent for r in loaded.records] == ["one", "two"] and loaded.skipped_lines == 1
    resumed = PerformanceTracker(path)  # appends after the broken line, on a line of its own
    resumed.record(rec(agent="three"))
    resumed.close()
    again = PerformanceTracker.load(path)
    assert [r.agent for r in again.records] == ["one", "two", "three"]
    assert again.skipped_lines == 1


def test_records_are_flushed_when_the_tracker_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    tracker = PerformanceTracker(path)
    tracker.extend([rec(), rec()])
    del tracker
    gc.collect()
    assert len(lines(path)) == 2


def test_unusable_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(AgentnbError, match="metrics file"):
        PerformanceTracker(tmp_path)  # a directory
    with pytest.raises(AgentnbError, match="cannot write metrics file"):
        (tmp_path / "a-file").write_text("")
        PerformanceTracker(tmp_path / "a-file" / "m.jsonl")  # its parent is a file
    with pytest.raises(AgentnbError, match="no metrics file"):
        PerformanceTracker.load(tmp_path / "missing.jsonl")


def test_orchestrator_persists_to_metrics_path(tmp_path: Path) -> None:
    path = tmp_path / "session" / "metrics.jsonl"
    with sim_orchestrator(metrics_path=path) as orch:
        orch.execute_multiple([("writer", "one"), ("python-expert", "two")])
        before = orch.metrics()
        assert orch.tracker.flush()
    with sim_orchestrator(metrics_path=path) as restarted:  # as after a kernel restart
        after = restarted.metrics()
    pd.testing.assert_frame_equal(after, before)


def test_metrics_path_setting_from_the_environment(tmp_path: Path) -> None:
    cfg = Config.load(env={"AGENTNB_METRICS_PATH": str(tmp_path / "m.jsonl")})
    assert cfg.metrics_path == tmp_path / "m.jsonl"
    assert Config.load(env={}).metrics_path is None
