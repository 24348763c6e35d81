"""`Workflow` and `Step`: a checked, immutable DAG of agent steps.

A workflow is built from YAML (`Workflow.from_yaml`), a mapping (`Workflow.from_dict`) or
directly. Building it checks everything the document alone decides (keys, types, ids, unknown or
self dependencies, cycles) in O(V+E), fills each step's unset options from `defaults:`, and adds
the dependencies implied by `{{step}}` placeholders. `validate(agents=, variables=)` then checks
what depends on the caller (agent names, placeholders naming inputs or variables); a successful
check is remembered, so validating an unchanged workflow again costs a dictionary look-up.
`from_yaml` also keeps the last workflows it parsed, so a notebook cell run again reuses them.

A placeholder `{{name}}` means, in this order: the output text of step `name` (which makes the
step depend on it), else the caller's variable `name` (converted with `str()`, so a DataFrame
becomes its printed table), else the workflow input `name` (`inputs:` are defaults the caller
may override, e.g. with `--var` on the command line). See `template.py`.

Example:
    >>> wf = Workflow.from_yaml('''
    ... name: review
    ... steps:
    ...   - {id: bugs, agent: python-expert, task: "Find bugs in {{src}}"}
    ...   - {id: summary, agent: writer, task: "Summarise {{bugs}}"}
    ... ''')
    >>> wf.order()
    [['bugs'], ['summary']]
    >>> wf.step("summary").dependencies
    ('bugs',)
    >>> wf.validate(agents={"python-expert", "writer"}, variables={"src": "x = 1"}) is wf
    True
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from .._yaml import YAMLLimitError, read_bounded
from ..errors import AgentnbError, WorkflowError
from ..options import EMPTY, CallOptions, shown
from ..options import STEP_KEYS as OPTION_KEYS
from .parse import (
    STEP_ID,
    STEP_OPTIONS,
    Source,
    did_you_mean,
    invalid,
    parse_mapping,
    read_yaml,
    step_options,
)
from .template import placeholders

__all__ = ["OnError", "Step", "Workflow"]

OnError = Literal["continue", "fail_fast"]


@dataclass(frozen=True)
class Step:
    """One step of a workflow: which agent does what, after which other steps.

    `dependencies` holds the explicit ones first, then those implied by `{{step}}` placeholders.
    `options` are the step's `CallOptions` (its own keys over the workflow's `defaults:`); an
    option neither sets is None, and the orchestrator then uses the agent's or the
    configuration's value. Each option also reads as an attribute under its step key
    (`step.model`, `step.cache`, ...). `line` is the step's line in the YAML text.
    """

    id: str
    agent: str
    task: str
    dependencies: tuple[str, ...] = ()
    options: CallOptions = EMPTY
    line: int | None = field(default=None, compare=False)

    def __getattr__(self, name: str) -> Any:
        option = OPTION_KEYS.get(name)
        if option is None:
            raise AttributeError(f"'Step' object has no attribute {name!r}")
        return getattr(self.options, option)

    @property
    def placeholders(self) -> list[str]:
        """The names the task refers to, in order of first appearance."""
        return placeholders(self.task)


@dataclass(frozen=True)
class _Graph:
    """What building a workflow worked out once, for the scheduler and `validate`."""

    index: Mapping[str, int]
    dependents: tuple[tuple[int, ...], ...]
    levels: tuple[tuple[str, ...], ...]
    free: tuple[tuple[str, ...], ...]  # per step: placeholders that are not step ids


@dataclass(frozen=True, eq=False, kw_only=True)
class Workflow:
    """A named DAG of agent steps, checked when built and immutable afterwards.

    Build one with `from_yaml` or `from_dict` (see the module docstring for the format);
    `validate` checks agents and placeholders; `order` gives the topological levels;
    `agentnb.workflow.execute_workflow` (or the orchestrator's `run_workflow`) runs it.
    """

    name: str
    steps: tuple[Step, ...]
    description: str = ""
    max_concurrency: int | None = None
    on_error: OnError = "continue"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)
    source: Source | None = field(default=None, repr=False)
    _graph: _Graph = field(init=False, repr=False)
    _validated: list[tuple[object, frozenset[str]]] = field(
        init=False, repr=False, default_factory=list
    )

    def __post_init__(self) -> None:
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise invalid(
                "must be at least 1",
                field="max_concurrency",
                line=self._top_line("max_concurrency"),
            )
        if self.on_error not in ("continue", "fail_fast"):
            raise invalid(
                "must be 'continue' or 'fail_fast'",
                field="on_error",
                line=self._top_line("on_error"),
            )
        for key in self.defaults:
            if key not in STEP_OPTIONS:
                raise invalid(
                    f"unknown default {shown(key)}",
                    field="defaults",
                    line=self._top_line("defaults"),
                )
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "inputs", MappingProxyType(dict(self.inputs)))
        steps = tuple(self.steps)
        if not steps:
            raise invalid("a workflow needs at least one step", field="steps")
        index = self._index(steps)
        steps, explicit, free = self._expand(steps, index)
        object.__setattr__(self, "steps", steps)
        dependents, levels = self._sort(steps, index, explicit)
        object.__setattr__(self, "_graph", _Graph(index, dependents, levels, free))

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, text_or_path: str | os.PathLike[str]) -> Workflow:
        """Read a workflow from YAML text or a `.yaml`/`.yml` file.

        A `str` is taken as a path only when it is one line ending in `.yaml` or `.yml`. A
        document past the limits of `agentnb._yaml` (4 M characters; 100,000 nodes with every
        alias written out) is refused.
        """
        if isinstance(text_or_path, str) and (
            "\n" in text_or_path or not text_or_path.strip().lower().endswith((".yaml", ".yml"))
        ):
            return _from_text(text_or_path)
        path = Path(os.fspath(text_or_path).strip()).expanduser()
        if path.is_dir():
            raise WorkflowError(f"cannot read workflow file {path}: it is a directory, not a file")
        try:
            text = read_bounded(path)
        except OSError as exc:
            raise WorkflowError(f"cannot read workflow file {path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise WorkflowError(
                f"cannot read workflow file {path}: it is not UTF-8 text (near character "
                f"{exc.start})"
            ) from None
        except YAMLLimitError as exc:
            raise WorkflowError(f"cannot read workflow file {path}: {exc}") from None
        return _from_text(text)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Workflow:
        """Build a workflow from a mapping shaped like the YAML format."""
        return _build(parse_mapping(data), None)

    # -- questions --------------------------------------------------------------------------
    def step(self, step_id: str) -> Step:
        """The step with this id (KeyError if there is none)."""
        return self.steps[self._graph.index[step_id]]

    def order(self) -> list[list[str]]:
        """Topological levels: each step sits one level after its deepest dependency.

        This is for display (`--dry-run`); execution does not wait for whole levels.
        """
        return [list(level) for level in self._graph.levels]

    def dependents(self, step_id: str) -> list[str]:
        """The steps that depend directly on `step_id`."""
        return [self.steps[i].id for i in self._graph.dependents[self._graph.index[step_id]]]

    def free_names(self, step_id: str) -> tuple[str, ...]:
        """Placeholders of a step that name an input or a variable rather than a step."""
        return self._graph.free[self._graph.index[step_id]]

    def validate(
        self,
        *,
        agents: Container[str] | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> Workflow:
        """Check agent names (when `agents` is given) and that every placeholder resolves.

        Returns the workflow itself; raises `WorkflowValidationError` naming the step, the field
        and the line. A success is remembered per `agents` object and per set of variable names
        the workflow uses, so checking again is free. (An agent removed from a registry after a
        successful check is then reported when its step runs.)
        """
        variables = variables or {}
        key = frozenset(n for names in self._graph.free for n in names if n in variables)
        for seen_agents, seen_key in self._validated:
            if seen_agents is agents and seen_key == key:
                return self
        if agents is not None:
            self._check_agents(agents)
        for step, names in zip(self.steps, self._graph.free, strict=True):
            for name in names:
                if name not in self.inputs and name not in variables:
                    known = [*self._graph.index, *self.inputs, *variables]
                    raise invalid(
                        f"unresolved placeholder {{{{{name}}}}}: not a step id, an input or a "
                        f"variable{did_you_mean(name, known)}",
                        step=step.id,
                        field="task",
                        line=self._step_line(step.id, "task"),
                    )
        if len(self._validated) >= 8:
            del self._validated[0]
        self._validated.append((agents, key))
        return self

    def _check_agents(self, agents: Container[str]) -> None:
        for step in self.steps:
            try:
                found = step.agent in agents
            except AgentnbError as exc:
                raise invalid(
                    str(exc), step=step.id, field="agent", line=self._step_line(step.id, "agent")
                ) from exc
            if not found:
                hint = did_you_mean(step.agent, _names(agents))
                raise invalid(
                    f"unknown agent {shown(step.agent)}{hint}",
                    step=step.id,
                    field="agent",
                    line=self._step_line(step.id, "agent"),
                )

    # -- helpers ----------------------------------------------------------------------------
    def _top_line(self, key: str) -> int | None:
        return self.source.top_line(key) if self.source else None

    def _step_line(self, step_id: str, key: str | None = None) -> int | None:
        position = self._graph.index[step_id]
        return self._line(position, self.steps[position].line, key)

    def _line(self, position: int, step_line: int | None, key: str | None) -> int | None:
        """The line of `key` in the step at `position` (the step's own line without a source)."""
        if self.source is None:
            return step_line
        if key == "dependencies" and position < len(self.source.steps):
            key = "depends_on" if "depends_on" in self.source.steps[position][1] else key
        return self.source.step_line(position, key)

    def _index(self, steps: tuple[Step, ...]) -> dict[str, int]:
        index: dict[str, int] = {}
        for position, step in enumerate(steps):
            if not isinstance(step.id, str) or not STEP_ID.match(step.id):
                raise invalid(
                    f"id {shown(step.id)} may only contain letters, digits, '_' and '-'",
                    step=str(step.id),
                    field="id",
                    line=step.line,
                )
            if step.id in index:
                first = steps[index[step.id]].line
                where = f" (first on line {first})" if first is not None else ""
                line = self._line(position, step.line, "id")
                raise invalid(
                    f"duplicate step id {shown(step.id)}{where}",
                    step=step.id,
                    field="id",
                    line=line,
                )
            index[step.id] = position
        return index

    def _expand(
        self, steps: tuple[Step, ...], index: Mapping[str, int]
    ) -> tuple[tuple[Step, ...], list[frozenset[str]], tuple[tuple[str, ...], ...]]:
        """Merge defaults, add implied dependencies, check explicit ones."""
        defaults = step_options(
            self.defaults,
            step=None,
            prefix="defaults.",
            line=lambda _key: self._top_line("defaults"),
        )
        out: list[Step] = []
        explicit: list[frozenset[str]] = []
        free: list[tuple[str, ...]] = []
        for position, step in enumerate(steps):
            for dep in step.dependencies:
                if dep == step.id:
                    raise invalid(
                        f"step {shown(step.id)} depends on itself",
                        step=step.id,
                        field="dependencies",
                        line=self._line(position, step.line, "dependencies"),
                    )
                if dep not in index:
                    raise invalid(
                        f"unknown dependency {shown(dep)}{did_you_mean(dep, index)}",
                        step=step.id,
                        field="dependencies",
                        line=self._line(position, step.line, "dependencies"),
                    )
            names = step.placeholders
            if step.id in names:
                raise invalid(
                    f"step {shown(step.id)} uses its own output {{{{{step.id}}}}}",
                    step=step.id,
                    field="task",
                    line=self._line(position, step.line, "task"),
                )
            deps = dict.fromkeys(step.dependencies)
            deps.update(dict.fromkeys(n for n in names if n in index))
            changes: dict[str, Any] = {"dependencies": tuple(deps)}
            if defaults:
                changes["options"] = defaults.merged(step.options)
            out.append(dataclasses.replace(step, **changes))
            explicit.append(frozenset(step.dependencies))
            free.append(tuple(n for n in names if n not in index))
        return tuple(out), explicit, tuple(free)

    def _sort(
        self, steps: tuple[Step, ...], index: Mapping[str, int], explicit: list[frozenset[str]]
    ) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[str, ...], ...]]:
        """Kahn's algorithm: dependents lists and levels, or the first cycle as an error."""
        dependents: list[list[int]] = [[] for _ in steps]
        waiting = [len(step.dependencies) for step in steps]
        for position, step in enumerate(steps):
            for dep in step.dependencies:
                dependents[index[dep]].append(position)
        level = [0] * len(steps)
        ready = [p for p, n in enumerate(waiting) if n == 0]
        done = 0
        while ready:
            position = ready.pop()
            done += 1
            for child in dependents[position]:
                level[child] = max(level[child], level[position] + 1)
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(child)
        if done < len(steps):
            self._raise_cycle(steps, index, explicit, waiting)
        levels: list[list[str]] = [[] for _ in range(max(level) + 1)]
        for position, step in enumerate(steps):
            levels[level[position]].append(step.id)
        return tuple(tuple(d) for d in dependents), tuple(tuple(lv) for lv in levels)

    def _raise_cycle(
        self,
        steps: tuple[Step, ...],
        index: Mapping[str, int],
        explicit: list[frozenset[str]],
        waiting: list[int],
    ) -> None:
        # Every step left over still waits for another left-over step; walking those edges
        # from the first one must come back to a step already seen.
        position = next(p for p, n in enumerate(waiting) if n > 0)
        path: list[int] = []
        seen: dict[int, int] = {}
        while position not in seen:
            seen[position] = len(path)
            path.append(position)
            position = next(index[d] for d in steps[position].dependencies if waiting[index[d]] > 0)
        cycle = path[seen[position] :]
        first = min(cycle)
        start = cycle.index(first)
        cycle = cycle[start:] + cycle[:start]
        waits_for = steps[cycle[1 % len(cycle)]].id
        step = steps[first]
        field_name = "dependencies" if waits_for in explicit[first] else "task"
        # Show the flow of data: each step feeds the next, so reverse the waits-for walk.
        shown = [steps[p].id for p in [first, *reversed(cycle[1:]), first]]
        raise invalid(
            f"dependency cycle {' -> '.join(shown)} (each step needs the output of the one "
            f"before it)",
            step=step.id,
            field=field_name,
            line=self._line(first, step.line, field_name),
        )

    def __repr__(self) -> str:
        return (
            f"<Workflow {self.name!r}: {len(self.steps)} steps in {len(self._graph.levels)} "
            f"levels, on_error={self.on_error}, max_concurrency={self.max_concurrency}>"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # The mappings are read-only proxies, which cannot be pickled or deep-copied as such.
        return (
            _rebuild,
            (
                self.name,
                self.steps,
                self.description,
                self.max_concurrency,
                self.on_error,
                dict(self.defaults),
                dict(self.inputs),
                self.source,
            ),
        )


def _rebuild(
    name: str,
    steps: tuple[Step, ...],
    description: str,
    max_concurrency: int | None,
    on_error: OnError,
    defaults: dict[str, Any],
    inputs: dict[str, str],
    source: Source | None,
) -> Workflow:
    return Workflow(
        name=name,
        steps=steps,
        description=description,
        max_concurrency=max_concurrency,
        on_error=on_error,
        defaults=defaults,
        inputs=inputs,
        source=source,
    )


def _names(agents: Container[str]) -> list[str]:
    """Agent names to suggest from: a registry's `names()`, or the collection itself."""
    names = getattr(agents, "names", None)
    if callable(names):
        return [str(n) for n in names()]
    return [str(n) for n in agents] if isinstance(agents, Collection) else []


def _build(parsed: dict[str, Any], source: Source | None) -> Workflow:
    steps = tuple(Step(**raw) for raw in parsed.pop("steps"))
    return Workflow(steps=steps, source=source, **parsed)


@functools.lru_cache(maxsize=64)
def _from_text(text: str) -> Workflow:
    data, source = read_yaml(text)
    return _build(parse_mapping(data, source), source)
