"""agentnb without IPython: the same steps as the notebook magics, as a plain Python script.

    python examples/quickstart.py            # offline simulator, a few seconds, no API key
    python examples/quickstart.py --real     # the configured backend (Claude with a key)

1. one agent (`%agent`)  2. several calls at once  3. a workflow from a YAML file
(`%%workflow`)  4. the metrics of every call (`%agentnb metrics`)  5. sequential vs concurrent
vs cached (`%agentnb speedup`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import agentnb
from agentnb.workflow import Workflow

HERE = Path(__file__).resolve().parent
SOURCE = """\
def average(values):
    total = 0
    for v in values:
        total += v
    return total / len(values)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="use the configured backend")
    args = parser.parse_args(argv)

    # A memory cache keeps the script from writing anything to disk; `--real` keeps whatever
    # agentnb.yaml and the environment say (Claude when ANTHROPIC_API_KEY is set).
    settings: dict[str, Any] = {"cache_backend": "memory"}
    if not args.real:
        settings.update(backend="simulated", sim_latency_s=0.1, sim_jitter=0.0)
    config = agentnb.Config.load(**settings)

    with agentnb.AgentOrchestrator(config) as orch:
        print(f"backend: {orch.backend.label}\n")

        print("# 1. One agent")
        result = orch.execute_agent("python-expert", f"Find the bug in:\n{SOURCE}")
        print("\n".join(result.text.strip().splitlines()[:4]))
        print(f"-- {result.footer()}\n")

        print("# 2. Five calls at once, results in input order")
        ideas = orch.execute_multiple(
            [("writer", f"One title for a talk about caching, idea {i}") for i in range(5)]
        )
        texts = [str(r) for r in ideas]
        print(f"{len(texts)} answers, {len(set(texts))} different\n")

        print("# 3. A workflow: three reviewers at once, then a summary")
        workflow = Workflow.from_yaml(HERE / "workflows" / "code-review.yaml")
        print("stages:", " -> ".join("+".join(level) for level in workflow.order()))
        run = orch.run_workflow(workflow, {"src": SOURCE})
        print(repr(run), "\n")

        print("# 4. Metrics: one row per call")
        columns = ["workflow", "step", "agent", "latency_ms", "cache_hit", "output_tokens"]
        table = orch.metrics()[columns].fillna({"workflow": "-", "step": "-"})
        print(table.to_string(index=False, float_format="{:.0f}".format))
        print()

        print("# 5. Speedup: the same 6 calls sequentially, concurrently and from the cache")
        report = agentnb.compare_speedup(
            [("writer", f"A tip about notebooks, number {i}") for i in range(6)],
            repeats=1,
            orchestrator=orch,
        )
        print(repr(report))
    return 0 if run.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
