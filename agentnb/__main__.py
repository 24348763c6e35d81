"""The command line: `python -m agentnb demo | agent | agents | run | bench | config | simulate`.

Every `AgentnbError` becomes one line on stderr (`agentnb: error: ...`) and exit status 2;
anything else is a bug and keeps its traceback.

    python -m agentnb demo                       # the main job: a workflow + metrics + speedup
    python -m agentnb agent writer "Write a haiku about caches"
    python -m agentnb agents
    python -m agentnb run examples/workflows/code_review.yaml --var src=@mycode.py
    python -m agentnb run examples/workflows/code_review.yaml --estimate   # or --budget 0.50
    python -m agentnb run examples/workflows/code_review.yaml --batch      # waves as batches
    python -m agentnb bench --quick
    python -m agentnb simulate --port 8765          # the simulator as an HTTP server
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .config import Config
from .errors import AgentnbError
from .options import add_arguments, check_text, from_namespace, shown
from .orchestrator.batchsend import add_batch_arguments
from .orchestrator.budget import add_budget_arguments, check_budget

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m agentnb", description="Claude agents, offline-first."
    )
    p.add_argument(
        "--simulate",
        action="store_true",
        help="use the offline simulator even when ANTHROPIC_API_KEY is set",
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the bundled workflow on the simulator, with metrics")
    d.add_argument(
        "--real", action="store_true", help="use the configured backend (Claude if a key is set)"
    )
    d.add_argument(
        "--latency", type=float, default=0.2, help="simulated latency in seconds (default 0.2)"
    )
    d.add_argument(
        "--calls", type=int, default=10, help="calls in the speedup comparison (default 10)"
    )
    d.add_argument(
        "--no-cache", action="store_true", help="do not read or write the response cache"
    )

    a = sub.add_parser("agent", help="run one agent on one task")
    a.add_argument("name")
    a.add_argument("task", nargs="+", help="the task (words are joined; '-' reads stdin)")
    add_arguments(a.add_argument)  # the call options' flags, generated from CallOptions
    add_budget_arguments(a.add_argument)  # --estimate, --budget USD
    add_batch_arguments(a.add_argument)
    a.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    a.add_argument("--json", action="store_true", help="print the result as JSON")

    ls = sub.add_parser("agents", help="list the agents on the search path")
    ls.add_argument("--json", action="store_true")

    r = sub.add_parser("run", help="run a workflow YAML file")
    r.add_argument("file", type=Path)
    r.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="K=V",
        help="a variable for {{K}}; V=@path reads a file",
    )
    r.add_argument("--max-concurrency", type=int)
    add_arguments(r.add_argument, only=("use_cache",))
    r.add_argument(
        "--dry-run", action="store_true", help="validate and show the order; run nothing"
    )
    add_budget_arguments(r.add_argument)  # --estimate, --budget USD
    add_batch_arguments(r.add_argument, workflow=True)
    r.add_argument("--json", action="store_true", help="print the run as JSON")

    b = sub.add_parser("bench", help="print the benchmark figures as Markdown tables")
    b.add_argument("--quick", action="store_true", help="a smaller suite, under a minute")
    b.add_argument("--out", type=Path, help="also write results.json and PNGs into this directory")
    b.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes and latencies: checks that the suite runs (the figures mean nothing)",
    )
    b.add_argument(
        "--reliability",
        action="store_true",
        help="only the reliability probes (faults, kills, tampering, bad inputs, forks, "
        "secrets); with --quick under 30 s",
    )

    sub.add_parser("config", help="show the effective settings (the API key is never shown)")

    sim = sub.add_parser(
        "simulate",
        help="serve the offline simulator as a Messages-API HTTP server (one shared quota)",
    )
    sim.add_argument(
        "--port", required=True, help="TCP port; 0 picks a free one (the ready line says which)"
    )
    sim.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: loopback)"
    )
    sim.add_argument("--latency", help="simulated seconds per call (default: sim_latency_s)")
    sim.add_argument(
        "--limits",
        metavar="JSON",
        help='quotas per model class, as the sim_limits setting: \'{"*": {"rpm": 600}}\'',
    )
    sim.add_argument(
        "--allow-remote", action="store_true", help="allow a host that is not a loopback address"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return int(_dispatch(args) or 0)
    except AgentnbError as exc:
        print(f"agentnb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("agentnb: interrupted", file=sys.stderr)
        return 130


def _config(args: argparse.Namespace, **overrides: Any) -> Config:
    if args.simulate:
        overrides.setdefault("backend", "simulated")
    return Config.load(**overrides)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "simulate":
        return _simulate(args)
    from .orchestrator import AgentOrchestrator

    if args.command == "config":
        from .loop import default_loop_kind

        for key, value in _config(args).to_dict().items():
            print(f"{key:24} {value}")
        print(f"{'event_loop':24} {default_loop_kind()}  (uvloop where installed; AGENTNB_LOOP)")
        return 0
    if args.command == "agents":
        from .agents import list_agents

        df = list_agents(_config(args))
        if args.json:
            print(df.assign(source=df["source"].astype(str)).to_json(orient="records", indent=2))
        else:
            with _wide():
                print(df[["name", "model", "description"]].to_string(index=False, max_colwidth=70))
        return 0
    if args.command == "agent":
        task = " ".join(args.task)
        if task == "-":
            data = sys.stdin.buffer.read()
            try:
                task = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise AgentnbError(
                    f"agent: standard input is not UTF-8 text (byte {exc.start})"
                ) from None
        options = from_namespace(args, source="agent")
        budget = check_budget(args.budget, source="agent", name="--budget")
        if args.batch and args.stream:
            raise AgentnbError(
                "agent --batch: a Message Batch is answered as a whole, not streamed"
            )
        with AgentOrchestrator(_config(args)) as orch:
            from .orchestrator import AgentCall
            from .result import AgentResult

            call = AgentCall(args.name, task, options)
            if args.estimate:
                _print_estimate(orch.estimate([call], batch=args.batch), args.json)
                return 0
            result: AgentResult | None
            if args.batch:
                (answer,) = orch.execute_multiple([call], batch=True, max_cost_usd=budget)
                assert isinstance(answer, AgentResult)  # without return_exceptions: raised
                result = answer
                if not args.json:
                    print(result.text)
            elif args.stream:
                # With --json, stdout carries only the JSON; the live text goes to stderr.
                live = sys.stderr if args.json else sys.stdout
                stream = orch.stream_agent(args.name, task, options, max_cost_usd=budget)
                for chunk in stream:
                    print(chunk, end="", flush=True, file=live)
                print(file=live)
                result = stream.result
                assert result is not None
            else:
                result = orch.execute_agent(args.name, task, options, max_cost_usd=budget)
                if not args.json:
                    print(result.text)
            if args.json:
                print(json.dumps(result.to_dict(), indent=2))
            else:
                print(f"\n-- {result.footer()}", file=sys.stderr)
        return 0
    if args.command == "run":
        return _run_workflow(args)
    if args.command == "bench":
        return _bench(args)
    if args.command == "demo":
        return _demo(args)
    raise AssertionError(args.command)  # pragma: no cover - argparse guards the choices


def _parse_vars(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AgentnbError(f"--var {shown(item)}: expected K=V")
        if value.startswith("@"):
            value = _read_text(Path(value[1:]), f"--var {key}")
        try:
            check_text(value, f"--var {key}")
        except ValueError as exc:
            raise AgentnbError(str(exc)) from None
        out[key] = value
    return out


def _read_text(path: Path, what: str) -> str:
    """A `--var @file`'s text for `what`, or one clear error (a directory, not UTF-8 text).

    Workflow files are read by `Workflow.from_yaml`, within the YAML limits."""
    if path.is_dir():
        raise AgentnbError(f"{what}: {path} is a directory, not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AgentnbError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AgentnbError(
            f"{what}: {path} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}); "
            "give a text file"
        ) from None


def _run_workflow(args: argparse.Namespace) -> int:
    from .orchestrator import AgentOrchestrator
    from .workflow import Workflow

    if not args.file.exists():
        raise AgentnbError(f"workflow file {args.file} does not exist")
    budget = check_budget(args.budget, source="run", name="--budget")
    if args.dry_run and args.estimate:
        raise AgentnbError("run: give --dry-run (check only) or --estimate, not both")
    workflow = Workflow.from_yaml(args.file)  # a directory or a binary file: one clear line
    variables = _parse_vars(args.var)
    with AgentOrchestrator(_config(args)) as orch:
        workflow.validate(agents=orch.agents, variables=variables)
        if args.dry_run:
            print(f"workflow {workflow.name!r} is valid: {len(workflow.steps)} steps")
            for level, ids in enumerate(workflow.order(), 1):
                print(f"  stage {level}: {', '.join(ids)}")
            return 0
        if args.estimate:
            estimate = orch.estimate(
                workflow,
                variables=variables,
                max_concurrency=args.max_concurrency,
                use_cache=args.use_cache is not False,
                batch=args.batch,
            )
            _print_estimate(estimate, args.json)
            return 0
        run = orch.run_workflow(
            workflow,
            variables,
            max_concurrency=args.max_concurrency,
            use_cache=args.use_cache is not False,
            max_cost_usd=budget,
            batch=args.batch,
        )
    if args.json:
        print(run.to_json())
    else:
        _print_run(run)
    return 0 if run.status == "succeeded" else 1


def _print_estimate(estimate: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(estimate.to_dict(), indent=2))
    else:
        print(repr(estimate))


def _print_run(run: Any) -> None:
    for step_id, step in run.steps.items():
        print(f"\n## {step_id}  [{step.status}{' (cached)' if step.cached else ''}]")
        if step.result is not None:
            print(step.result.text)
        elif step.error:
            print(f"error: {step.error}")
    print()
    print(repr(run))


def _bench(args: argparse.Namespace) -> int:
    from .bench_suite import render, run_suite, write_outputs

    def progress(title: str) -> None:
        print(f"agentnb bench: {title} ...", file=sys.stderr, flush=True)

    only = ("reliability",) if args.reliability else None
    run = run_suite(quick=args.quick, smoke=args.smoke, only=only, progress=progress)
    print(render(run))
    if args.out:
        for path in write_outputs(run, args.out):
            print(f"wrote {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .bench import compare_speedup
    from .orchestrator import AgentOrchestrator

    overrides: dict[str, Any] = {"sim_latency_s": args.latency}
    if not args.real:
        overrides["backend"] = "simulated"
    if args.no_cache:
        overrides["cache_enabled"] = False
    cfg = _config(args, **overrides)
    source = (
        resources.files("agentnb").joinpath("data/demo_workflow.yaml").read_text(encoding="utf-8")
    )
    sample = resources.files("agentnb").joinpath("data/demo_source.txt").read_text(encoding="utf-8")
    with AgentOrchestrator(cfg) as orch:
        label = orch.backend.label
        print(
            f"agentnb demo · backend: {label}"
            + (
                " (offline; set ANTHROPIC_API_KEY and pass --real to call Claude)"
                if label == "simulated"
                else ""
            )
        )
        print("\n# 1. A code-review workflow: three reviews run at once, then a summary\n")
        run = orch.run_workflow(source, {"src": sample})
        _print_run(run)
        print("\n# 2. Metrics of every call so far\n")
        with _wide():
            cols = [
                "workflow",
                "step",
                "agent",
                "model",
                "latency_ms",
                "attempts",
                "cache_hit",
                "input_tokens",
                "output_tokens",
                "cost_usd",
            ]
            print(orch.metrics()[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(
            f"\n# 3. Speedup: {args.calls} independent calls, sequential vs concurrent vs cached\n"
        )
        calls = [
            ("python-expert", f"Suggest improvement #{i} for:\n{sample}") for i in range(args.calls)
        ]
        modes = (
            ("sequential", "concurrent", "cached")
            if orch.cache is not None
            else ("sequential", "concurrent")
        )
        report = compare_speedup(calls, modes=modes, repeats=1, orchestrator=orch)
        print(repr(report))
    return 0 if run.status == "succeeded" else 1


def _simulate(args: argparse.Namespace) -> int:
    """`simulate`: the simulator served on loopback until SIGINT/SIGTERM."""
    from .backends import SimulatedBackend
    from .backends.sim_server import check_host, run

    try:
        port = int(args.port)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise AgentnbError(f"simulate --port: expected 0 to 65535, got {shown(args.port)}")
    host = check_host(args.host, allow_remote=args.allow_remote)
    overrides: dict[str, Any] = {"backend": "simulated"}
    if args.latency is not None:
        try:
            overrides["sim_latency_s"] = float(args.latency)
        except ValueError:
            raise AgentnbError(
                f"simulate --latency: expected seconds, got {shown(args.latency)}"
            ) from None
    if args.limits is not None:
        try:
            overrides["sim_limits"] = json.loads(args.limits)
        except ValueError as exc:
            raise AgentnbError(f"simulate --limits: not valid JSON ({exc})") from None
    backend = SimulatedBackend.from_config(_config(args, **overrides))
    run(
        backend,
        host,
        port,
        ready=lambda url: print(f"agentnb simulator listening on {url}", flush=True),
    )
    return 0


class _wide:
    """Let pandas print wide tables in a terminal without wrapping."""

    def __enter__(self) -> None:
        import pandas as pd

        self._ctx = pd.option_context("display.width", 200, "display.max_columns", 30)
        self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


if __name__ == "__main__":
    sys.exit(main())
