"""Every workflow validation error names the step, the field and (for YAML) the line."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentnb.errors import WorkflowError, WorkflowValidationError
from agentnb.workflow import Step, Workflow, execute_workflow
from agentnb.workflow.template import placeholders, render

AGENTS = {"python-expert", "code-reviewer", "data-analyst", "writer"}


def yaml_error(text: str, **validate: Any) -> WorkflowValidationError:
    with pytest.raises(WorkflowValidationError) as info:
        Workflow.from_yaml(textwrap.dedent(text).lstrip("\n")).validate(**validate)
    return info.value


def dict_error(data: dict[str, Any], **validate: Any) -> WorkflowValidationError:
    with pytest.raises(WorkflowValidationError) as info:
        Workflow.from_dict(data).validate(**validate)
    return info.value


def assert_where(
    err: WorkflowValidationError, *, step: str | None, field: str | None, line: int | None
) -> None:
    """The attributes are set and the message says the same in words."""
    assert (err.step, err.field, err.line) == (step, field, line), str(err)
    message = str(err)
    if step is not None:
        assert f"step {step!r}" in message
    if field is not None:
        assert f"field {field!r}" in message
    if line is not None:
        assert message.startswith(f"line {line}:")


# -- document-level errors ------------------------------------------------------------------


def test_yaml_syntax_error_names_the_line() -> None:
    err = yaml_error("""
        name: broken
        steps:
          - id: a
            agent: writer
            task: "unterminated
        """)
    assert "invalid YAML" in str(err)
    assert err.line is not None and err.line >= 5
    assert str(err).startswith(f"line {err.line}:")


def test_top_level_must_be_a_mapping() -> None:
    err = yaml_error("- just\n- a list\n")
    assert "must be a mapping" in str(err)


@pytest.mark.parametrize("missing", ["name", "steps"])
def test_missing_top_level_key(missing: str) -> None:
    data: dict[str, Any] = {"name": "x", "steps": [{"id": "a", "agent": "writer", "task": "t"}]}
    del data[missing]
    err = dict_error(data)
    assert_where(err, step=None, field=missing, line=None)
    assert f"missing required top-level key {missing!r}" in str(err)


def test_extra_top_level_key_with_suggestion() -> None:
    err = yaml_error("""
        name: x
        max_concurency: 3
        steps:
          - {id: a, agent: writer, task: t}
        """)
    assert_where(err, step=None, field="max_concurency", line=2)
    assert "did you mean 'max_concurrency'" in str(err)


def test_duplicate_yaml_key() -> None:
    err = yaml_error("""
        name: x
        steps:
          - id: a
            agent: writer
            task: one
            task: two
        """)
    assert_where(err, step="a", field="task", line=6)
    assert "appears twice (first on line 5)" in str(err)


@pytest.mark.parametrize("value", ["[]", "{}", "nope"])
def test_steps_must_be_a_non_empty_list(value: str) -> None:
    err = yaml_error(f"name: x\nsteps: {value}\n")
    assert_where(err, step=None, field="steps", line=2)


# -- step-level errors ----------------------------------------------------------------------


@pytest.mark.parametrize(("missing", "step"), [("id", "steps[1]"), ("agent", "b"), ("task", "b")])
def test_missing_step_key(missing: str, step: str) -> None:
    fields = {"id": "id: b", "agent": "agent: writer", "task": "task: t"}
    del fields[missing]
    body = "\n    ".join(fields.values())
    err = yaml_error(f"name: x\nsteps:\n  - {{id: a, agent: writer, task: t}}\n  - {body}\n")
    assert_where(err, step=step, field=missing, line=4)
    assert f"missing required key {missing!r}" in str(err)


def test_unknown_step_key_with_suggestion() -> None:
    err = yaml_error("""
        name: x
        steps:
          - id: a
            agent: writer
            task: t
            dependson: [b]
        """)
    assert_where(err, step="a", field="dependson", line=6)
    assert "did you mean 'depends_on'" in str(err)


def test_duplicate_step_ids() -> None:
    err = yaml_error("""
        name: x
        steps:
          - id: a
            agent: writer
            task: t
          - id: a
            agent: writer
            task: u
        """)
    assert_where(err, step="a", field="id", line=6)
    assert "duplicate step id 'a' (first on line 3)" in str(err)


@pytest.mark.parametrize("bad", ["has space", "dot.ted", "slash/y", "ünï"])
def test_bad_id_characters(bad: str) -> None:
    err = yaml_error(f"name: x\nsteps:\n  - id: '{bad}'\n    agent: writer\n    task: t\n")
    assert_where(err, step="steps[0]", field="id", line=3)
    assert "may only contain letters, digits" in str(err)


def test_id_of_wrong_type() -> None:
    err = yaml_error("name: x\nsteps:\n  - id: 12\n    agent: writer\n    task: t\n")
    assert_where(err, step="steps[0]", field="id", line=3)
    assert "must be a string" in str(err)


def test_unknown_dependency_with_suggestion() -> None:
    err = yaml_error("""
        name: x
        steps:
          - {id: style, agent: writer, task: t}
          - id: summary
            agent: writer
            task: t
            dependencies: [styel]
        """)
    assert_where(err, step="summary", field="dependencies", line=7)
    assert "unknown dependency 'styel' (did you mean 'style'?)" in str(err)


def test_depends_on_is_accepted_and_its_line_reported() -> None:
    err = yaml_error("""
        name: x
        steps:
          - id: a
            agent: writer
            task: t
            depends_on: [nope]
        """)
    assert_where(err, step="a", field="dependencies", line=6)


def test_dependencies_and_depends_on_together() -> None:
    err = yaml_error("""
        name: x
        steps:
          - {id: a, agent: writer, task: t}
          - {id: b, agent: writer, task: t, dependencies: [a], depends_on: [a]}
        """)
    assert_where(err, step="b", field="depends_on", line=4)


def test_self_dependency() -> None:
    err = yaml_error("""
        name: x
        steps:
          - id: a
            agent: writer
            task: t
            dependencies: [a]
        """)
    assert_where(err, step="a", field="dependencies", line=6)
    assert "depends on itself" in str(err)


def test_self_dependency_through_a_placeholder() -> None:
    err = yaml_error("""
        name: x
        steps:
          - id: a
            agent: writer
            task: "Improve {{a}}"
        """)
    assert_where(err, step="a", field="task", line=5)


def test_cycle_shows_its_path() -> None:
    err = yaml_error("""
        name: x
        steps:
          - {id: start, agent: writer, task: t}
          - id: a
            agent: writer
            task: t
            dependencies: [start, b]
          - id: b
            agent: writer
            task: "{{a}}"
        """)
    assert_where(err, step="a", field="dependencies", line=7)
    assert "dependency cycle a -> b -> a" in str(err)


def test_longer_cycle_through_placeholders() -> None:
    err = yaml_error("""
        name: x
        steps:
          - {id: a, agent: writer, task: "{{c}}"}
          - {id: b, agent: writer, task: "{{a}}"}
          - {id: c, agent: writer, task: "{{b}}"}
        """)
    assert_where(err, step="a", field="task", line=3)
    assert "dependency cycle a -> b -> c -> a" in str(err)


def test_unknown_agent_with_suggestion() -> None:
    err = yaml_error(
        """
        name: x
        steps:
          - id: a
            agent: pyhton-expert
            task: t
        """,
        agents=AGENTS,
    )
    assert_where(err, step="a", field="agent", line=4)
    assert "unknown agent 'pyhton-expert' (did you mean 'python-expert'?)" in str(err)


def test_unresolved_placeholder() -> None:
    err = yaml_error(
        """
        name: x
        inputs: {language: python}
        steps:
          - id: a
            agent: writer
            task: |
              Review this {{language}} code:
              {{ scr }}
        """,
        variables={"src": "x = 1"},
    )
    assert_where(err, step="a", field="task", line=6)
    assert "unresolved placeholder {{scr}}" in str(err)
    assert "did you mean 'src'" in str(err)


@pytest.mark.parametrize("value", [0, -2])
def test_non_positive_concurrency(value: int) -> None:
    err = yaml_error(
        f"name: x\nmax_concurrency: {value}\nsteps:\n  - {{id: a, agent: w, task: t}}\n"
    )
    assert_where(err, step=None, field="max_concurrency", line=2)


async def test_non_positive_concurrency_argument() -> None:
    wf = Workflow.from_dict({"name": "x", "steps": [{"id": "a", "agent": "w", "task": "t"}]})

    async def never(step: Step, task: str) -> Any:
        raise AssertionError("must not run")

    with pytest.raises(WorkflowValidationError) as info:
        await execute_workflow(wf, never, max_concurrency=0)
    assert info.value.field == "max_concurrency"


@pytest.mark.parametrize(
    ("snippet", "field", "expected"),
    [
        ("task: 5", "task", "non-empty text"),
        ("task: '  '", "task", "non-empty text"),
        ("agent: [a]", "agent", "non-empty string"),
        ("temperature: hot", "temperature", "a number in [0, 1]"),
        ("temperature: 1.5", "temperature", "a finite number in [0, 1]"),
        ("max_tokens: 0", "max_tokens", "a whole number from 1 to"),
        ("max_tokens: 2.5", "max_tokens", "a whole number from 1 to"),
        ("max_attempts: true", "max_attempts", "a whole number from 1 to 100"),
        ("timeout_s: -1", "timeout_s", "a finite number in (0, 3600]"),
        ("cache: 'yes'", "cache", "true or false"),
        ("model: ''", "model", "non-empty model id"),
        ("dependencies: 3", "dependencies", "list of step ids"),
    ],
)
def test_wrong_step_types(snippet: str, field: str, expected: str) -> None:
    fields = {"agent": "agent: writer", "task": "task: t"}
    fields[field] = snippet
    body = "\n    ".join(["id: a", *fields.values()])
    err = yaml_error(f"name: x\nsteps:\n  - {body}\n")
    assert err.step == "a" and err.field == field
    assert err.line is not None and err.line >= 3
    assert expected in str(err)


@pytest.mark.parametrize(
    ("snippet", "field", "line"),
    [
        ("name: [x]", "name", 1),
        ("on_error: explode", "on_error", 2),
        ("description: 3", "description", 2),
        ("max_concurrency: many", "max_concurrency", 2),
        ("inputs: [a]", "inputs", 2),
        ("inputs: {a: [1]}", "inputs", 2),
        ("defaults: {colour: red}", "defaults", 2),
        ("defaults: {temperature: 7}", "defaults.temperature", 2),
    ],
)
def test_wrong_top_level_types(snippet: str, field: str, line: int) -> None:
    head = snippet if snippet.startswith("name") else f"name: x\n{snippet}"
    err = yaml_error(f"{head}\nsteps:\n  - {{id: a, agent: writer, task: t}}\n")
    assert_where(err, step=None, field=field, line=line)


def test_dict_input_errors_name_step_and_field_without_line() -> None:
    err = dict_error(
        {
            "name": "x",
            "steps": [
                {"id": "a", "agent": "writer", "task": "{{b}}"},
                {"id": "b", "agent": "writer", "task": "{{a}}"},
            ],
        }
    )
    assert_where(err, step="a", field="task", line=None)
    assert "a -> b -> a" in str(err)


def test_missing_file_is_a_workflow_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="cannot read workflow file"):
        Workflow.from_yaml(tmp_path / "nope.yaml")


def test_path_string_and_text_are_told_apart(tmp_path: Path) -> None:
    path = tmp_path / "wf.yml"
    path.write_text("name: x\nsteps:\n  - {id: a, agent: writer, task: t}\n", encoding="utf-8")
    assert Workflow.from_yaml(str(path)).name == "x"
    assert Workflow.from_yaml(path).steps[0].line == 3
    # one line not ending in .yaml is YAML text (here: a mapping missing 'steps')
    with pytest.raises(WorkflowValidationError, match="'steps'"):
        Workflow.from_yaml("name: just-text")


# -- what validation accepts ----------------------------------------------------------------


def test_defaults_fill_unset_options_and_steps_win() -> None:
    wf = Workflow.from_yaml(
        textwrap.dedent("""
        name: x
        defaults: {model: sonnet, temperature: 0, max_tokens: 100, timeout_s: 5}
        steps:
          - {id: a, agent: writer, task: t, temperature: 0.7}
          - {id: b, agent: writer, task: "{{a}}", dependencies: [a], cache: false}
        """)
    )
    a, b = wf.steps
    assert (a.model, a.temperature, a.max_tokens, a.timeout_s) == ("sonnet", 0.7, 100, 5.0)
    assert (b.temperature, b.cache, b.dependencies) == (0.0, False, ("a",))
    assert wf.defaults == {"model": "sonnet", "temperature": 0, "max_tokens": 100, "timeout_s": 5}


def test_placeholders_imply_dependencies_after_explicit_ones() -> None:
    wf = Workflow.from_dict(
        {
            "name": "x",
            "steps": [
                {"id": "a", "agent": "w", "task": "t"},
                {"id": "b", "agent": "w", "task": "t"},
                {"id": "c", "agent": "w", "task": "{{ a }} and {{b}} and {{a}}", "depends_on": "b"},
            ],
        }
    )
    assert wf.step("c").dependencies == ("b", "a")
    assert wf.order() == [["a", "b"], ["c"]]
    assert wf.dependents("a") == ["c"]
    assert "3 steps in 2 levels" in repr(wf)


def test_validation_is_remembered_for_an_unchanged_workflow() -> None:
    class CountingAgents:
        def __init__(self) -> None:
            self.lookups = 0

        def __contains__(self, name: object) -> bool:
            self.lookups += 1
            return name in AGENTS

    text = "name: x\nsteps:\n  - {id: a, agent: writer, task: '{{src}}'}\n"
    agents = CountingAgents()
    wf = Workflow.from_yaml(text)
    assert wf.validate(agents=agents, variables={"src": 1, "other": 2}) is wf
    assert wf.validate(agents=agents, variables={"src": "changed value, same name"}) is wf
    assert agents.lookups == 1
    assert Workflow.from_yaml(text) is wf  # the same cell run again reuses the parsed workflow
    with pytest.raises(WorkflowValidationError):
        wf.validate(agents=agents, variables={})


def test_workflow_is_immutable_and_picklable() -> None:
    import copy
    import dataclasses
    import pickle

    wf = Workflow.from_yaml("name: x\ninputs: {k: 1}\nsteps:\n  - {id: a, agent: w, task: t}\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        wf.name = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        wf.inputs["k"] = "2"  # type: ignore[index]
    again = pickle.loads(pickle.dumps(wf))
    assert again.steps == wf.steps and dict(again.inputs) == {"k": "1"}
    assert copy.deepcopy(wf).order() == [["a"]]


# -- the template language ------------------------------------------------------------------


def placeholder_cases() -> Iterator[tuple[str, list[str]]]:
    yield "plain {single} {{ spaced }} {{tight}}", ["spaced", "tight"]
    yield 'json {"a": {"b": [1, {"c": 2}]}}', []
    yield "code: d = {k: {v for v in x} for k in y}; f'{{x}}'", ["x"]
    yield "jinja {{ a.b }} {{ 1 + 2 }} {% if x %}", []
    yield "escaped \\{{raw}} then {{real}}", ["real"]
    yield "triple {{{wrapped}}}", ["wrapped"]


@pytest.mark.parametrize(("template", "names"), list(placeholder_cases()))
def test_placeholder_syntax(template: str, names: list[str]) -> None:
    assert placeholders(template) == names


def test_render_fills_only_placeholders() -> None:
    assert render("{{{wrapped}}} \\{{raw}} {x}", {"wrapped": "W"}) == "{W} {{raw}} {x}"
