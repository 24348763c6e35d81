"""`AgentMagics`: `%agent`/`%%agent`, `%workflow`/`%%workflow` and `%agentnb`.

Thin by design: parse the line, fill `{{name}}` placeholders from the notebook, call the shared
orchestrator (`AgentNB.orchestrator()`), show the result. Every `AgentnbError` is shown as one
line (`AgentNotFoundError: ...`) without a traceback, yet still propagates with its own type, so
`%debug` and code calling the magic see the real exception; option errors are IPython
`UsageError`s; anything else keeps its traceback, because it is a bug.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, magics_class, no_var_expand

from ..bench import MODES, compare_speedup
from ..errors import WorkflowValidationError
from ..loop import default_loop_kind
from ..options import from_namespace
from ..orchestrator import AgentCall
from ..orchestrator.budget import check_budget
from ..plots import plot_cost, plot_latency
from ..workflow import Workflow, WorkflowRun
from .data import model_list, run_on_data
from .display import (
    Render,
    WorkflowPlan,
    WorkflowProgress,
    settings_frame,
    show_figure,
    stream_answer,
)
from .parsing import (
    argument,
    batch_arguments,
    budget_arguments,
    fill_placeholders,
    in_cell_lines,
    line_cell_magic,
    line_magic,
    magic_arguments,
    one_line_errors,
    option_arguments,
    parse_line,
    parser_of,
    positive_int,
    split_agent_line,
    variable_name,
)
from .settings import AgentNB

__all__ = ["AGENTNB_COMMANDS", "AgentMagics"]

AGENTNB_COMMANDS = (
    "metrics",
    "cache",
    "config",
    "agents",
    "reset",
    "speedup",
    "spend",
    "quota",
    "batches",
)

# What may precede a line magic that is the value of its cell: `NAME = ` (magic assignment).
_TARGET = r"(?:[A-Za-z_][\w.]*\s*=\s*)?"


def _in_cell(exc: WorkflowValidationError, in_cell: bool) -> WorkflowValidationError:
    """`exc` with its lines counted in the cell when the YAML is the cell's body."""
    if not in_cell:
        return exc
    return in_cell_lines(exc).with_traceback(exc.__traceback__)


@magics_class
class AgentMagics(Magics):
    """The agentnb magics; `session` holds the settings and the orchestrator."""

    def __init__(self, shell: Any, session: AgentNB) -> None:
        super().__init__(shell)
        self.session = session

    @property
    def _ns(self) -> dict[str, Any]:
        assert self.shell is not None
        ns: dict[str, Any] = self.shell.user_ns
        return ns

    @property
    def in_kernel(self) -> bool:
        """True when a Jupyter frontend shows the output (in-place updates are possible)."""
        return getattr(self.shell, "kernel", None) is not None

    def _render_if_alone(self, magic: str, cell: str | None) -> Render | None:
        """The shell's display formatter when the magic is alone in the running cell, else None.

        Then a live output may be cleared at the end (see `display.py`): the cell has no other
        output to lose. A cell magic always is; a line magic is when the cell (as the kernel
        received it) holds nothing else but comments: `%agent ...` or `r = %agent ...`.
        """
        if cell is None:
            parent = getattr(self.shell, "parent_header", None)  # ipykernel: the execute_request
            content = parent.get("content") if isinstance(parent, dict) else None
            code = content.get("code") if isinstance(content, dict) else None
            if not isinstance(code, str):
                return None
            lines = [t for t in (s.strip() for s in code.splitlines()) if t and t[0] != "#"]
            if len(lines) != 1 or not re.fullmatch(rf"{_TARGET}%{magic}(?:\s.*)?", lines[0]):
                return None
        formatter = self.shell.display_formatter if self.shell is not None else None
        return formatter.format if formatter is not None else None

    # -- %agent / %%agent ---------------------------------------------------------------------
    @line_cell_magic
    @no_var_expand
    @magic_arguments()
    @option_arguments()
    @budget_arguments()
    @batch_arguments()
    @argument(
        "-o",
        "--output",
        type=variable_name,
        metavar="VAR",
        help="also store the AgentResult (with --estimate: the Estimate; with --over: the "
        "DataFrame; with --models: the answers side by side) in VAR",
    )
    @argument(
        "--over",
        type=variable_name,
        metavar="DATA",
        help="run on every row of DATA (a DataFrame, Series or list), {{column}} from the row",
    )
    @argument(
        "--models",
        type=model_list,
        metavar="M1,M2",
        help="run the task on each model at once and show the answers side by side",
    )
    @argument(
        "--stream",
        dest="stream",
        action="store_const",
        const=True,
        default=None,
        help="show the answer as it is generated (the default in a notebook)",
    )
    @argument(
        "--no-stream",
        dest="stream",
        action="store_const",
        const=False,
        help="show the answer when it is complete (the default in a terminal)",
    )
    @argument("--list", action="store_true", help="show a table of the agents that can be named")
    @argument("name", nargs="?", metavar="NAME", help="the agent (see --list)")
    @argument(
        "task",
        nargs=argparse.REMAINDER,
        metavar="TASK",
        help="the task, as typed (with %%%%agent: text before the cell body)",
    )
    @one_line_errors
    def agent(self, line: str, cell: str | None = None) -> Any:
        """Ask one agent to do one task; the cell's value is the `AgentResult`.

        %agent [options] NAME TASK...      the rest of the line is the task
        %%agent [options] NAME             the cell body is the task
        %agent --over DATA [options] NAME TEMPLATE...
                                           one answer per row of DATA, as a DataFrame
        %%agent --models M1,M2 [options] NAME
                                           the task on each model, answers side by side

        `{{name}}` in the task is replaced by `str(name)` from the notebook's namespace (an
        undefined name is an error); single braces, quotes and `$` are passed on as typed.
        Options go before NAME. The answer shows as Markdown with a footer (agent, model,
        latency, tokens, cost, cached, simulated); `_` and `Out[n]` hold the `AgentResult`
        (`.text`, `.usage`, `.cost_usd`, `.cached`, ...). In a notebook the answer streams in
        as it is generated, then is replaced by the rendered result. Interrupting the kernel
        cancels the call. `--estimate` shows what the call would cost and take (tokens, cost
        range, cached or not) and runs nothing; `--budget USD` refuses the call if it could
        cost more (`BudgetExceededError`, one line). `--batch` sends the call as a Message
        Batch (half the price, answered as a whole: no streaming; interrupting detaches it,
        `%agentnb batches` lists it); with `--estimate`, the cost at the batch price.

        Examples::

            %agent writer Write a haiku about caches
            %agent -m haiku -t 0 -o review python-expert Review {{src}}
            %agent --max-tokens 200 --stop END writer A haiku
            %agent --estimate python-expert Review {{src}}
            %agent --over df -o summaries writer Summarise in one line: {{text}}
            %agent --list

        With `--over DATA` the task is a template filled from each row of the notebook's DATA
        (`{{column}}`; a Series' or a list's item is `{{value}}`), other placeholders from the
        notebook (a row's column wins), and the value is the DataFrame of `agentnb.map`: one
        row per row of DATA, same index (`text`, `cached`, `latency_ms`, `cost_usd`, `error`).
        With `--models haiku,sonnet` the task runs on each model at once and the answers show
        side by side (`agentnb.grid(...).side_by_side()`).
        """
        args, task = split_agent_line(parser_of(self.agent), line)
        if args.list:
            return self.session.orchestrator().agents.to_dataframe()
        if args.name is None:
            raise UsageError(
                "%agent needs an agent and a task, e.g. `%agent writer Write a haiku` "
                "(`%agent --list` shows the agents)"
            )
        if cell is not None:
            body = cell.strip("\n")
            task = f"{task}\n\n{body}" if task else body
        if not task.strip():
            raise UsageError(f"%agent {args.name}: the task is empty")
        if args.batch and args.stream:
            raise UsageError("%agent --batch: a Message Batch is answered as a whole, not streamed")
        if args.batch and (args.over is not None or args.models is not None):
            raise UsageError("%agent --batch sends one call: not with --over or --models (yet)")
        options = from_namespace(args, source="%agent")
        budget = check_budget(args.budget, source="%agent", name="--budget")
        if args.over is not None or args.models is not None:  # the data front: see data.py
            value = run_on_data(args, task, options, budget, self._ns, self.session.orchestrator())
            if args.output:
                self._ns[args.output] = value
            return value
        task = fill_placeholders(task, self._ns)
        orch = self.session.orchestrator()
        stream = args.stream if args.stream is not None else self.in_kernel
        result: Any
        if args.estimate:
            result = orch.estimate([AgentCall(args.name, task, options)], batch=args.batch)
        elif args.batch:
            call = AgentCall(args.name, task, options)
            (result,) = orch.execute_multiple([call], batch=True, max_cost_usd=budget)
        elif stream:
            result = stream_answer(
                orch.stream_agent(args.name, task, options, max_cost_usd=budget),
                live=self.in_kernel,
                render=self._render_if_alone("agent", cell),
            )
        else:
            result = orch.execute_agent(args.name, task, options, max_cost_usd=budget)
        if args.output:
            self._ns[args.output] = result
        return result

    # -- %workflow / %%workflow ---------------------------------------------------------------
    @line_cell_magic
    @no_var_expand
    @magic_arguments()
    @argument(
        "-o",
        "--output",
        type=variable_name,
        metavar="VAR",
        help="store the WorkflowRun in VAR (after an interrupt: the partial run; with "
        "--dry-run: the Workflow; with --estimate: the Estimate)",
    )
    @argument(
        "--max-concurrency",
        type=positive_int,
        metavar="N",
        help="most steps running at once (the workflow's own limit also applies)",
    )
    @option_arguments(only=("use_cache",))
    @argument(
        "--resume",
        type=variable_name,
        metavar="VAR",
        help="reuse the finished steps of the WorkflowRun in VAR whose task is unchanged",
    )
    @argument("--dry-run", action="store_true", help="check it, show the stages, run nothing")
    @budget_arguments()
    @batch_arguments(workflow=True)
    @argument("--quiet", action="store_true", help="no live progress; with -o, no output at all")
    @argument("file", nargs="?", metavar="FILE", help="%%workflow FILE: read the YAML from a file")
    @one_line_errors
    def workflow(self, line: str, cell: str | None = None) -> Any:
        """Run a workflow of agent steps (YAML); the cell's value is the `WorkflowRun`.

        %%workflow [options]               the cell body is the workflow's YAML
        %workflow [options] FILE           the YAML is read from FILE

        `{{name}}` placeholders that are not step ids are filled from the notebook's
        namespace (then from the workflow's `inputs:`). The workflow is checked first (agents,
        placeholders, cycles) and nothing runs if it is wrong; the error names the line, counted
        in the cell (the %%workflow line is line 1) or in FILE. While it runs, a table shows
        each step's status (waiting, running, succeeded, cached, failed, skipped, budget) and
        elapsed time. Interrupting the kernel cancels the running steps; the steps that had finished
        are kept in the `-o` variable (and in the response cache), and `--resume VAR` reuses
        them. A failed step does not raise: the run shows it (`run.raise_for_status()` does).
        `--estimate` shows what the run would cost and take (per step, with the critical path)
        and runs nothing; `--budget USD` stops starting steps once the next one could take the
        run past USD: the running ones finish and the run ends with status `budget`.
        `--batch` runs it in waves: each wave of ready steps is one Message Batch (half the
        price), a step's dependents go in a later one; interrupting detaches the wave's batch
        (`%agentnb batches collect ID`, then `--resume VAR`, reuses its answers).

        Example::

            %%workflow -o review --max-concurrency 4 --budget 0.50
            name: review
            steps:
              - {id: bugs, agent: python-expert, task: "Find bugs in {{src}}"}
              - {id: style, agent: code-reviewer, task: "Review the style of {{src}}"}
              - {id: summary, agent: writer, task: "Merge: {{bugs}} {{style}}"}
        """
        args = parse_line(self.workflow, line)
        budget = check_budget(args.budget, source="%%workflow", name="--budget")
        if args.dry_run and args.estimate:
            raise UsageError("give --dry-run (check only) or --estimate, not both")
        ns = self._ns
        in_cell = cell is not None and "\n" in cell.strip()  # else a one-line body is a path
        try:
            if cell is not None and cell.strip():
                if args.file:
                    raise UsageError("give the workflow as the cell body or as FILE, not both")
                workflow = Workflow.from_yaml(cell if in_cell else cell.strip())
            elif args.file:
                workflow = Workflow.from_yaml(Path(args.file))
            else:
                raise UsageError("%%workflow needs a YAML body (or use %workflow FILE)")
            needed = {n for step in workflow.steps for n in workflow.free_names(step.id)}
            variables = {n: ns[n] for n in sorted(needed) if n in ns}
            resume: WorkflowRun | None = None
            if args.resume:
                resume = ns.get(args.resume)
                if not isinstance(resume, WorkflowRun):
                    raise UsageError(
                        f"--resume {args.resume}: expected a WorkflowRun, "
                        f"got {type(resume).__name__}"
                    )
            orch = self.session.orchestrator()
            if args.dry_run:  # a run validates once, in run_workflow, before anything runs
                workflow.validate(agents=orch.agents, variables=variables)
        except WorkflowValidationError as exc:
            raise _in_cell(exc, in_cell) from exc.__cause__
        if args.dry_run:
            if args.output:
                ns[args.output] = workflow
            return WorkflowPlan(workflow)
        if args.estimate:
            try:
                estimate = orch.estimate(
                    workflow,
                    variables=variables,
                    max_concurrency=args.max_concurrency,
                    use_cache=args.use_cache is not False,
                    batch=args.batch,
                )
            except WorkflowValidationError as exc:
                raise _in_cell(exc, in_cell) from exc.__cause__
            if args.output:
                ns[args.output] = estimate
            return estimate
        progress = WorkflowProgress(
            workflow,
            live=self.in_kernel,
            quiet=args.quiet,
            render=self._render_if_alone("workflow", cell),
        )
        partial_runs: list[WorkflowRun] = []
        try:
            run = orch.run_workflow(
                workflow,
                variables,
                max_concurrency=args.max_concurrency,
                use_cache=args.use_cache is not False,
                progress=progress.on_event,
                resume=resume,
                on_interrupt=partial_runs.append,
                max_cost_usd=budget,
                batch=args.batch,
            )
        except WorkflowValidationError as exc:
            raise _in_cell(exc, in_cell) from exc.__cause__
        except KeyboardInterrupt:
            progress.stop("interrupted")
            # The scheduler's own account of what had finished (empty if nothing had started).
            partial = partial_runs[0] if partial_runs else None
            done = 0 if partial is None else sum(1 for s in partial.steps.values() if s.ok)
            note = (
                f"agentnb: workflow {workflow.name!r} interrupted; {done} of "
                f"{len(workflow.steps)} steps had finished"
            )
            if args.output and partial is not None:
                ns[args.output] = partial
                note += f"; the partial run is in {args.output} (--resume {args.output} reuses it)"
            if args.batch:
                note += (
                    "; the wave's message batch goes on, not cancelled: `%agentnb batches "
                    "collect ID` fills the cache from it (`%agentnb batches` lists them), so "
                    "the resumed run does not send it again"
                )
            print(note, file=sys.stderr)
            raise
        except BaseException:
            progress.stop("failed")
            raise
        progress.finish(run)
        if args.output:
            ns[args.output] = run
            if args.quiet:
                return None
        return run

    # -- %agentnb -----------------------------------------------------------------------------
    @line_magic
    @magic_arguments()
    @argument("command", nargs="?", choices=AGENTNB_COMMANDS, metavar="COMMAND", help="see above")
    @argument(
        "action",
        nargs="?",
        metavar="ACTION",
        help="for cache: stats (default) or clear; for batches: collect or cancel",
    )
    @argument("batch_id", nargs="?", metavar="ID", help="for batches collect|cancel: the batch")
    @argument(
        "-o", "--output", type=variable_name, metavar="VAR", help="also store the value in VAR"
    )
    @argument("--plot", action="store_true", help="metrics: draw latency and cost charts")
    @argument("-n", "--calls", type=positive_int, metavar="N", help="speedup: calls (default 8)")
    @argument(
        "--repeats", type=positive_int, metavar="R", help="speedup: runs per mode (default 1)"
    )
    @one_line_errors
    def agentnb(self, line: str) -> Any:
        """The session: metrics, cache, settings, agents, speedup.

        %agentnb metrics [-o VAR] [--plot]  every call this session, one row each (DataFrame)
        %agentnb cache [stats|clear]       response cache counters, or empty it
        %agentnb config                    the settings in effect and where each came from
        %agentnb agents                    the agents that can be named
        %agentnb reset                     forget the call records (the metrics)
        %agentnb spend [-o VAR]            what the session's calls have cost, per model
                                           (and the session_budget_usd left)
        %agentnb quota [history] [-o VAR]  the rate-limit quotas met: limits, calls, 429s,
                                           time waited, concurrency (history: its changes)
        %agentnb batches [-o VAR]          the Message Batches sent (the ledger), with state
        %agentnb batches collect ID        wait for batch ID and fill the cache from it
        %agentnb batches cancel ID         cancel batch ID (an interrupt only detaches)
        %agentnb speedup [-n N] [--repeats R]
                                           N calls sequentially, concurrently and from the
                                           cache on the current backend: table and chart

        Settings: `%config AgentNB` lists them, `%config AgentNB.max_concurrency = 4` sets one.
        """
        args = parse_line(self.agentnb, line)
        command = args.command
        if command is None:
            print(self.agentnb.__doc__)
            return None
        misplaced = [
            flag
            for flag, given, allowed in (
                ("--plot", args.plot, ("metrics",)),
                ("-n", args.calls is not None, ("speedup",)),
                ("--repeats", args.repeats is not None, ("speedup",)),
                (
                    "-o",
                    args.output is not None,
                    (
                        "metrics",
                        "cache",
                        "config",
                        "agents",
                        "speedup",
                        "spend",
                        "quota",
                        "batches",
                    ),
                ),
                ("ACTION", args.action is not None, ("cache", "quota", "batches")),
                ("ID", args.batch_id is not None, ("batches",)),
            )
            if given and command not in allowed
        ]
        if misplaced:
            raise UsageError(f"%agentnb {command} does not take {', '.join(misplaced)}")
        value = getattr(self, f"_{command}")(args)
        if args.output and value is not None:
            self._ns[args.output] = value
        return value

    def _metrics(self, args: argparse.Namespace) -> Any:
        frame = self.session.orchestrator().metrics()
        if args.plot:
            if frame.empty:
                print("agentnb: no calls yet, nothing to plot")
            else:
                import matplotlib.pyplot as plt

                fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
                plot_latency(frame, ax=left)
                plot_cost(frame, ax=right)
                fig.tight_layout()
                show_figure(fig)
        return frame

    def _cache(self, args: argparse.Namespace) -> Any:
        action = args.action or "stats"
        if action not in ("stats", "clear"):
            raise UsageError(f"%agentnb cache {action}: expected stats or clear")
        cache = self.session.orchestrator().cache
        if cache is None:
            print("agentnb: the response cache is off (cache_enabled or cache_backend)")
            return None
        if action == "clear":
            entries = cache.stats()["entries"]
            cache.clear()
            print(f"agentnb: cache cleared ({entries} entries removed)")
            return None
        return cache.stats_frame()

    def _config(self, args: argparse.Namespace) -> Any:
        settings = self.session.effective_settings()
        # Not a setting but chosen at start: which event loop agentnb's calls run on.
        settings["event_loop"] = (default_loop_kind(), "uvloop if installed; AGENTNB_LOOP")
        return settings_frame(settings)

    def _agents(self, args: argparse.Namespace) -> Any:
        return self.session.orchestrator().agents.to_dataframe()

    def _spend(self, args: argparse.Namespace) -> Any:
        return self.session.orchestrator().spend()

    def _quota(self, args: argparse.Namespace) -> Any:
        action = args.action or "table"
        if action not in ("table", "history"):
            raise UsageError(f"%agentnb quota {action}: expected history or nothing")
        frame = self.session.orchestrator().quota(history=action == "history")
        if frame.empty:
            print(
                "agentnb: no quota met yet (none is paced until rate_limits is set or the "
                "backend's answers carry rate-limit headers)"
            )
            return None
        return frame

    def _batches(self, args: argparse.Namespace) -> Any:
        action, batch_id = args.action, args.batch_id
        orch = self.session.orchestrator()
        if action is None:
            frame = orch.batches()
            if frame.empty:
                print("agentnb: no Message Batch sent yet (--batch, or batch=True, sends them)")
                return None
            return frame
        if action not in ("collect", "cancel"):
            raise UsageError(
                f"%agentnb batches {action}: expected collect ID, cancel ID or nothing"
            )
        if batch_id is None:
            raise UsageError(
                f"%agentnb batches {action} needs the batch's id (`%agentnb batches` lists them)"
            )
        if action == "collect":
            return orch.collect(batch_id)
        info = orch.cancel_batch(batch_id)
        print(
            f"agentnb: message batch {info.id} {info.status}: what it answered before stays "
            f"paid for and collectable (%agentnb batches collect {info.id})"
        )
        return None

    def _reset(self, args: argparse.Namespace) -> None:
        tracker = self.session.orchestrator().tracker
        count = len(tracker)
        tracker.reset()
        print(f"agentnb: metrics reset ({count} call records forgotten)")

    def _speedup(self, args: argparse.Namespace) -> Any:
        orch = self.session.orchestrator()
        calls = [
            AgentCall(
                "writer", f"One short tip for writing clear notebooks (#{i + 1}).", max_tokens=64
            )
            for i in range(args.calls or 8)
        ]
        modes = MODES if orch.cache is not None else tuple(m for m in MODES if m != "cached")
        report = compare_speedup(calls, modes=modes, repeats=args.repeats or 1, orchestrator=orch)
        show_figure(report.plot().figure)
        return report
