"""The benchmark suite behind `python -m agentnb bench`: figures against goals, not tests.

`run_suite()` returns `Section`s (a title, a note, rows, and figures to draw); the CLI prints
each as a Markdown table, then one table of every goal, and with `--out DIR` writes
`results.json` and the PNGs (`write_outputs`). Everything runs on the offline simulator, so the
figures measure agentnb itself, not the network. Rows that have a goal carry `goal` (text) and
`met` (True/False); the goals come from the project's issues.

Sections (full / `--quick`; `smoke=True` shrinks every size and latency, for the tests only):
- fanout: N independent calls at 200 ms, concurrent vs sequential and the ideal (one latency),
  N = 5, 20, 100, 1000 (sequential up to 100 / up to 20).
- overhead: µs per call the orchestrator adds over the bare `backend.create`, zero latency.
- cache: tier latencies from `_cache_micro` at 10k and 100k entries (quick: 10k), with
  `diskcache` on the same data when it is installed, and a cached `execute_agent` end to end.
- workflow: `_scheduler_micro` (scheduler overhead, wall / critical path, the skewed
  DAG), and the skewed DAG again through the orchestrator and the simulator.
- scale: 10,000 calls at concurrency 200 and 50 ms, in a child process so that its peak RSS
  is its own.
- sdk_baseline: the same 100-call fan-out through a hand-written `asyncio.gather` over the bare
  `AsyncAnthropic` client and through agentnb's `AnthropicBackend`, both on the simulator's
  HTTP transport.
- cached_rerun: a 20-call batch at 200 ms, first run vs fully cached re-runs.
- speedup: `compare_speedup` (sequential, concurrent, cached) on 20 calls at 200 ms.

One module per group of sections: `_concurrency` (fanout, overhead, speedup), `_caching`
(cache, cached_rerun), `_workflow`, `_scale`, `_sdk`; `_cache_micro` and `_scheduler_micro`
time the cache tiers and the scheduler alone for `_caching` and `_workflow`; `_common` holds
the bench orchestrators and `Section`, and `_suite` runs them all and formats the output.
"""

from __future__ import annotations

from ._caching import bench_cache_tiers, bench_cached_rerun
from ._common import Section
from ._concurrency import bench_fanout, bench_overhead, bench_speedup
from ._scale import bench_scale
from ._sdk import bench_sdk_baseline
from ._suite import goals_table, run_suite, to_markdown, write_outputs
from ._workflow import bench_workflow

__all__ = [
    "Section",
    "bench_cache_tiers",
    "bench_cached_rerun",
    "bench_fanout",
    "bench_overhead",
    "bench_scale",
    "bench_sdk_baseline",
    "bench_speedup",
    "bench_workflow",
    "goals_table",
    "run_suite",
    "to_markdown",
    "write_outputs",
]
