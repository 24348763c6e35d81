"""Bad inputs of the Python API: call options, tasks, agent names, workflow YAML, agent files.

The kinds an adversarial tester found before, each through the surfaces that take it
(`execute_agent`, `stream_agent`, `execute_multiple`, `run_workflow`, the agent search path).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial
from typing import Any

from .. import _yaml
from ._reliability_cases import BadInput, InputContext, laughs

__all__ = ["ONE_STEP", "WORKFLOWS", "python_inputs", "short", "workflow_text"]


# -- call options, tasks, agent names -------------------------------------------------------
BAD_OPTIONS: list[tuple[str, Any]] = [
    ("max_tokens", 0),
    ("max_tokens", -5),
    ("max_tokens", "10"),
    ("max_tokens", True),
    ("max_tokens", 2.5),
    ("max_tokens", 10**9),
    ("temperature", 5),
    ("temperature", math.nan),
    ("temperature", math.inf),
    ("temperature", -0.1),
    ("temperature", "0.5"),
    ("model", 123),
    ("model", ""),
    ("model", "  "),
    ("model", "bad\nmodel"),
    ("model", "m" * 10_000),
    ("system", 5),
    ("system", "\ud800"),
    ("stop_sequences", [""]),
    ("stop_sequences", [1]),
    ("stop_sequences", ["x"] * 17),
    ("stop_sequences", ["\ud800"]),
    ("timeout_s", 0),
    ("timeout_s", math.nan),
    ("timeout_s", -1),
    ("timeout_s", 4000),
    ("timeout_s", math.inf),
    ("timeout_s", "5"),
    ("max_attempts", 0),
    ("max_attempts", 101),
    ("max_attempts", True),
    ("max_attempts", "3"),
    ("use_cache", "no"),
    ("max_token", 5),  # a misspelt option
]
BAD_TASKS: list[Any] = ["", "   ", "\n\t", "a\ud800b", 123, None, b"bytes"]
BAD_NAMES: list[Any] = [
    "../x",
    "a/b",
    "a\\b",
    "..",
    ".",
    "",
    "   ",
    "bad\x00name",
    "tab\tname",
    "new\nline",
    "x" * 10_000,
    "wrtier",
    123,
    None,
]


def short(value: Any) -> str:
    """A value as a case's name shows it: its repr, long ones cut."""
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:18]}... ({len(text):,} chars)"


def _calls() -> Iterator[BadInput]:
    for opt, value in BAD_OPTIONS:
        label = f"option {opt}={short(value)}"
        yield BadInput(f"{label} (execute_agent)", "option", partial(_ex, **{opt: value}))
    for opt, value in BAD_OPTIONS[::6]:
        label = f"option {opt}={short(value)}"
        yield BadInput(f"{label} (stream_agent)", "option", partial(_st, **{opt: value}))
        yield BadInput(
            f"{label} (execute_multiple)",
            "option",
            partial(_many, {"agent": "writer", "task": "x", opt: value}),
        )
    too_long = "x" * 100_001
    for task in [*BAD_TASKS, too_long]:
        yield BadInput(f"task {short(task)} (execute_agent)", "task", partial(_ex, task=task))
    for task in ["", "a\ud800b", too_long]:
        yield BadInput(f"task {short(task)} (stream_agent)", "task", partial(_st, task=task))
        yield BadInput(
            f"task {short(task)} (execute_multiple)", "task", partial(_many, ("writer", task))
        )
    for name in BAD_NAMES:
        yield BadInput(
            f"agent name {short(name)} (execute_agent)", "agent name", partial(_ex, agent=name)
        )
    for name in ["../x", "", "wrtier"]:
        yield BadInput(
            f"agent name {short(name)} (stream_agent)", "agent name", partial(_st, agent=name)
        )
        yield BadInput(
            f"agent name {short(name)} (execute_multiple)",
            "agent name",
            partial(_many, (name, "task")),
        )


def _ex(c: InputContext, agent: Any = "writer", task: Any = "a fine task", **options: Any) -> Any:
    return c.orch.execute_agent(agent, task, **options)


def _st(c: InputContext, agent: Any = "writer", task: Any = "a fine task", **options: Any) -> Any:
    return list(c.orch.stream_agent(agent, task, **options))


def _many(bad: Any, c: InputContext) -> Any:
    """A batch whose second call is `bad`: nothing of the batch may run."""
    return c.orch.execute_multiple([("writer", "fine"), bad])


# -- workflows --------------------------------------------------------------------------------
ONE_STEP = "{id: a, agent: writer, task: go}"


def workflow_text(*steps: str, head: str = "name: w") -> str:
    return head + "\nsteps:\n" + "".join(f"  - {s}\n" for s in steps)


WORKFLOWS: dict[str, str] = {
    "syntax error": "name: w\nsteps: [\n  {id: a\n",
    "tab indentation": "name: w\nsteps:\n\t- " + ONE_STEP + "\n",
    "unknown top-level key": workflow_text(ONE_STEP, head="name: w\nbogus: 1"),
    "unknown step key": workflow_text("{id: a, agent: writer, task: go, bogus: 1}"),
    "duplicate key": workflow_text("{id: a, agent: writer, task: go, task: again}"),
    "cycle through placeholders": workflow_text(
        "{id: a, agent: writer, task: 'x {{b}}'}", "{id: b, agent: writer, task: 'y {{a}}'}"
    ),
    "cycle through depends_on": workflow_text(
        "{id: a, agent: writer, task: x, depends_on: [b]}",
        "{id: b, agent: writer, task: y, depends_on: [a]}",
    ),
    "step depending on itself": workflow_text("{id: a, agent: writer, task: x, depends_on: [a]}"),
    "unknown dependency": workflow_text("{id: a, agent: writer, task: go, depends_on: [zzz]}"),
    "unknown agent": workflow_text("{id: a, agent: wrtier, task: go}"),
    "agent name ../x": workflow_text("{id: a, agent: ../x, task: go}"),
    "unresolved placeholder": workflow_text(
        "{id: a, agent: writer, task: 'Summarise {{missing}}'}"
    ),
    "duplicate step ids": workflow_text(ONE_STEP, ONE_STEP),
    "step without an id": workflow_text("{agent: writer, task: go}"),
    "step without a task": workflow_text("{id: a, agent: writer}"),
    "step without an agent": workflow_text("{id: a, task: go}"),
    "no name": "steps:\n  - " + ONE_STEP + "\n",
    "steps a mapping": "name: w\nsteps: {a: 1}\n",
    "no steps": "name: w\nsteps: []\n",
    "a list at the top": "- a\n- b\n",
    "plain text": "just some text",
    "empty document": "",
    "alias bomb": workflow_text(f"{{id: a, agent: writer, task: go, depends_on: {laughs()}}}"),
    "self-referencing alias": "name: w\nsteps: &s [*s]\n",
    "nesting 1,000 deep": "name: w\nsteps: " + "[" * 1000 + "]" * 1000 + "\n",
    "step max_tokens 0": workflow_text("{id: a, agent: writer, task: go, max_tokens: 0}"),
    "step temperature .nan": workflow_text("{id: a, agent: writer, task: go, temperature: .nan}"),
    "step stop_sequences ['']": workflow_text(
        "{id: a, agent: writer, task: go, stop_sequences: ['']}"
    ),
    "max_concurrency 0": workflow_text(ONE_STEP, head="name: w\nmax_concurrency: 0"),
    "on_error unknown": workflow_text(ONE_STEP, head="name: w\non_error: explode"),
    "task with a lone surrogate": workflow_text('{id: a, agent: writer, task: "x\\ud800"}'),
}


def _workflows() -> Iterator[BadInput]:
    for name, text in WORKFLOWS.items():
        yield BadInput(f"workflow: {name}", "workflow", partial(_run, text, None))
    huge = workflow_text(
        ONE_STEP, head="name: w\ndescription: " + "x" * (_yaml.MAX_DOCUMENT_CHARS + 1)
    )
    yield BadInput("workflow: huge document", "workflow", partial(_run, huge, None))
    latin1 = ("name: caf\xe9\nsteps:\n  - " + ONE_STEP + "\n").encode("latin-1")
    yield BadInput("workflow: non-UTF-8 file", "workflow", partial(_run_file, latin1))
    yield BadInput("workflow: missing file", "workflow", partial(_run_file, None))
    vary = workflow_text("{id: a, agent: writer, task: 'Use {{v}}'}")
    yield BadInput(
        "workflow: variable with a lone surrogate",
        "workflow",
        partial(_run, vary, {"v": "\ud800"}),
    )


def _run(text: str, variables: dict[str, str] | None, c: InputContext) -> Any:
    return c.orch.run_workflow(text, variables)


def _run_file(content: bytes | None, c: InputContext) -> Any:
    """Run the workflow file holding `content` (None: a file that does not exist)."""
    path = c.fresh("missing.yaml") if content is None else c.write("workflow.yaml", content)
    return c.orch.run_workflow(str(path))


# -- agent files ------------------------------------------------------------------------------
def _agent_md(name: str, *extra: str) -> str:
    return "\n".join(["---", f"name: {name}", "description: A test agent", *extra, "---", "Hi."])


AGENT_FILES: dict[str, str | bytes] = {
    "temperature 5": _agent_md("bad-agent", "temperature: 5"),
    "temperature .nan": _agent_md("bad-agent", "temperature: .nan"),
    "max_tokens 0": _agent_md("bad-agent", "max_tokens: 0"),
    "max_tokens not a number": _agent_md("bad-agent", "max_tokens: lots"),
    "model empty": _agent_md("bad-agent", "model: ''"),
    "name ../x": _agent_md("../x"),
    "name with a control character": _agent_md('"bad\\aname"'),
    "alias bomb": _agent_md("bad-agent", f"hooks: {laughs()}"),
    "self-referencing alias": _agent_md("bad-agent", "hooks: &a [1, *a]"),
    "non-UTF-8 bytes": _agent_md("bad-agent", "description: caf\xe9").encode("latin-1"),
    "empty file": "",
    "front matter never closed": "---\nname: bad-agent\ndescription: d\n",
    "huge file": _agent_md("bad-agent") + "x" * (_yaml.MAX_DOCUMENT_CHARS + 1),
}


def _agent_files() -> Iterator[BadInput]:
    for name, content in AGENT_FILES.items():
        yield BadInput(f"agent file: {name}", "agent file", partial(_agent_file, content))


def _agent_file(content: str | bytes, c: InputContext) -> Any:
    return c.call_agent_file("bad-agent", content)


def python_inputs() -> list[BadInput]:
    """Every bad input of the Python API."""
    return [*_calls(), *_workflows(), *_agent_files()]
