"""The reliability section: the probes an adversarial tester ran, as figures against goals.

`bench_reliability()` runs each probe and returns their rows (figure, what was tried, n, what
held, detail, goal, met); the cases that did not hold ride under each row's private
`_failures` and are printed under the table. One module per probe:

- `_reliability_faults`: calls under 20 % mixed faults complete; no retry-after is undercut.
- `_reliability_kill`: writers of one SQLite cache SIGKILLed; the database reopens whole.
- `_reliability_tamper`: tampered `responses.db` rows are refused and counted, never served.
- `_reliability_redis`: a real redis-server killed mid-run; every call completes, one warning.
- `_reliability_inputs` (corpus in `_reliability_corpus*`, vocabulary in `_reliability_cases`):
  bad inputs give one clear message and run nothing.
- `_reliability_fork`: a forked pool's workers complete their calls.
- `_reliability_secrets`: a fake API key appears on no output surface.

A probe that raises is a row of its own, not met: one broken probe never hides the others.
Everything is bounded in time (children reaped, the server stopped, temporary dirs removed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._common import Row
from ._reliability_common import captured_logs, probe_row
from ._reliability_faults import bench_faults
from ._reliability_fork import bench_fork
from ._reliability_inputs import bench_inputs
from ._reliability_kill import bench_kills
from ._reliability_redis import bench_redis
from ._reliability_secrets import bench_secrets
from ._reliability_tamper import bench_tamper

__all__ = ["bench_reliability"]


def bench_reliability(
    *, quick: bool = False, smoke: bool = False, progress: Callable[[str], None] | None = None
) -> list[Row]:
    """Every probe's rows. Full: 3,000 calls under faults, 40 kills, 300 Redis calls, 40
    forked calls; `quick` (well under 30 s): 1,000, 10, 100, 10; `smoke` (a few seconds): 60,
    2, 20, 4. `progress` is told each probe's name before it runs."""
    size = 0 if smoke else 1 if quick else 2

    def pick(smoke_n: int, quick_n: int, full_n: int) -> int:
        return (smoke_n, quick_n, full_n)[size]

    probes: list[tuple[str, Callable[[], list[Row]]]] = [
        ("calls under mixed faults", lambda: bench_faults(pick(60, 1000, 3000))),
        ("SIGKILLs of SQLite writers", lambda: bench_kills(pick(1, 5, 20))),
        ("tampered rows", bench_tamper),
        ("Redis killed mid-run", lambda: bench_redis(pick(20, 100, 300))),
        ("bad inputs", bench_inputs),
        (
            "forked children",
            lambda: bench_fork(pick(4, 10, 40), timeout_s=float(pick(5, 10, 20))),
        ),
        ("a fake key on every output surface", bench_secrets),
    ]
    rows: list[Row] = []
    # The probes' expected warnings (a tampered row, Redis gone) stay off the terminal.
    with captured_logs("agentnb", level=logging.WARNING):
        for name, probe in probes:
            if progress is not None:
                progress(name)
            try:
                found = probe()
            except Exception as exc:
                found = [
                    probe_row(
                        name,
                        "the probe itself",
                        1,
                        f"the probe raised {type(exc).__name__}: {str(exc)[:200]}",
                        "runs to the end",
                        False,
                    )
                ]
            rows += found
    return rows
