"""The benchmark suite behind `python -m agentnb bench`: figures against goals, not tests.

`run_suite()` returns a `SuiteRun`: its `Section`s (a title, a note, rows, and figures to
draw), where it ran (Python, the home loop's kind, the load average at the start and the end),
and a profile of each missed goal. `render(run)` is the Markdown the CLI prints: a header, each
section's table, one table of every goal (the figure, its bare reference measured in the same
run, the goal, met), then the profiles; `--out DIR` also writes `results.json` and the PNGs
(`write_outputs`). Everything runs on the offline simulator, so the figures measure agentnb
itself, not the network, and always against a bare reference of the same run: the machine
may be busy. A missed goal is never hidden: the code behind it runs once more under cProfile
(`_profile.profile_top`) and its top functions by own time are printed under the goals.

Sections (full / `--quick`, each within about 5 s; `smoke=True` shrinks every size and
latency, for the tests only):
- fanout: N independent calls at 200 ms against `asyncio.gather` over the bare simulator,
  N = 5, 20, 100, 1000 (quick: 5, 100, 1000), sequential up to 100 (quick: 5).
- overhead: µs per call agentnb adds over the bare `sim.create`, zero latency, cache off,
  5,000 calls a repeat (quick: 1,000), sequential and one concurrent batch.
- cache: tier latencies from `_cache_micro` at 10k and 100k entries (quick: 10k), with
  `diskcache` on the same data when it is installed, and a cached `execute_agent` end to end
  (awaited, and blocking from the main thread).
- workflow: `_scheduler_micro` (scheduler overhead, wall / critical path, the skewed
  DAG), and the skewed DAG again through the orchestrator and the simulator.
- scale: 1,000 and 100,000 calls (quick: 10,000) at concurrency 1,000 and 20 ms, through
  agentnb and bare (gather + semaphore), each in its own child process: wall, CPU per call,
  peak RSS.
- sdk_baseline: 100 and 1,000 calls, median of 5 alternating runs (quick: 100 and 300, one
  run each) through a hand-written
  `asyncio.gather` over the bare `AsyncAnthropic` client and through agentnb's
  `AnthropicBackend`, both on the simulator's HTTP transport.
- cached_rerun: a 20-call batch at 200 ms, first run vs fully cached re-runs.
- speedup: `compare_speedup` (sequential, concurrent, cached) on 20 calls (quick: 10) at 200 ms.
- map: a 10,000-row `agentnb.map` at 1 ms (quick: 1,000), its CPU per row beyond the same calls
  through a bare gather, cache off and with the SQLite cache, each in a child process (peak
  RSS); a 1,000-row map at 200 ms and concurrency 10 (quick: 30 rows), cached re-run vs first
  run; a 3 agents x 3 models x 50 tasks grid at 100 ms (quick: 10 tasks at 20 ms), wall / ideal.
- batch: `execute_multiple(calls, batch=True)` of 100,000 requests (quick: 5,000) on the
  simulator's batches, with the SQLite cache and without: agentnb's own CPU per request (the
  simulator's excluded; the cache writer's and the ledger's threads apart) and peak RSS, each in
  a child process (quick: one for all); the bare SDK's `batches.create` and results parsing per
  request and agentnb over the SDK, 10,000 requests (quick: 1,000); the price of 1,000 calls
  online vs as a batch with 100 cached.
- reliability (the full suite, or alone with `--reliability`, whose `--quick` takes well under
  30 s): 3,000 calls under 20 % mixed faults and their retry-after gaps (quick: 1,000), 40
  SIGKILLed SQLite writers (quick: 10), 15 tampered cache rows, 300 calls across a
  redis-server killed mid-run (quick: 100), some 190 bad inputs, 40 calls in forked workers
  (quick: 10), and a fake API key searched on every output surface; what did not hold is
  listed under the table.

One module per group of sections: `_concurrency` (fanout, overhead, speedup), `_caching`
(cache, cached_rerun), `_workflow`, `_scale`, `_sdk`, `_map`, `_batch`, `_reliability` (with one
`_reliability_*` module a probe); `_cache_micro` and `_scheduler_micro` time the cache tiers and
the scheduler alone for `_caching` and `_workflow`; `_profile` profiles missed goals; `_common`
holds `Section`, `Goal` and the bench orchestrators, and `_suite` runs them all and formats the
output.
"""

from __future__ import annotations

from ._batch import bench_batch
from ._caching import bench_cache_tiers, bench_cached_rerun
from ._common import Goal, Section
from ._concurrency import bench_fanout, bench_overhead, bench_speedup
from ._map import bench_map
from ._profile import profile_top
from ._reliability import bench_reliability
from ._scale import bench_scale
from ._sdk import bench_sdk_baseline
from ._suite import SuiteRun, goals_table, render, run_suite, to_markdown, write_outputs
from ._workflow import bench_workflow

__all__ = [
    "Goal",
    "Section",
    "SuiteRun",
    "bench_batch",
    "bench_cache_tiers",
    "bench_cached_rerun",
    "bench_fanout",
    "bench_map",
    "bench_overhead",
    "bench_reliability",
    "bench_scale",
    "bench_sdk_baseline",
    "bench_speedup",
    "bench_workflow",
    "goals_table",
    "profile_top",
    "render",
    "run_suite",
    "to_markdown",
    "write_outputs",
]
