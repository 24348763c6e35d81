"""Tests for agentnb._yaml: YAML whose aliases would expand without bound is refused where it
enters (agent files, workflows, agentnb.yaml), and no error message prints a value unbounded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from agentnb import _yaml
from agentnb.agents import AgentFileWarning, AgentRegistry, AgentSpec, list_agents
from agentnb.config import Config
from agentnb.errors import AgentFileError, ConfigError, WorkflowError, WorkflowValidationError
from agentnb.workflow import Workflow

BUILTIN_NAMES = ["code-reviewer", "data-analyst", "python-expert", "writer"]
#: Longest message a bad value may produce: the text around it plus a 60-character excerpt.
MESSAGE_LIMIT = 400

# Every test reads its document well under a second; 10 s fails a regression instead of hanging.
pytestmark = pytest.mark.timeout(10)


def laughs(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs" flow sequence: `width ** levels` scalars from about 400 characters.

    Each level anchors the one inside it and repeats it by alias, so the node graph stays small
    while its expansion (here 9 ** 9, about 387 million scalars) does not.
    """
    node = "&a0 [" + ", ".join(["lol"] * width) + "]"
    for i in range(1, levels):
        node = f"&a{i} [{node}, " + ", ".join([f"*a{i - 1}"] * (width - 1)) + "]"
    return node


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def agent_md(name: str, *extra: str) -> str:
    return "\n".join(["---", f"name: {name}", "description: A test agent", *extra, "---", "Hi."])


def workflow_yaml(*step_lines: str) -> str:
    step = ["  - id: a", "    agent: writer", "    task: go", *(f"    {s}" for s in step_lines)]
    return "\n".join(["name: w", "steps:", *step, ""])


# -- the bound itself -----------------------------------------------------------------------


def test_the_bomb_is_small_and_refused_quickly() -> None:
    text = f"x: {laughs()}"
    assert len(text) < 500
    started = time.perf_counter()
    with pytest.raises(_yaml.YAMLLimitError, match=f"past {_yaml.MAX_NODES:,} nodes") as err:
        _yaml.load_bounded(text)
    assert time.perf_counter() - started < 1.0
    assert err.value.line == 1


def test_a_document_with_a_few_aliases_loads() -> None:
    text = "base: &b {model: sonnet, tools: [Read, Grep]}\none: *b\ntwo:\n  <<: *b\n  model: opus\n"
    data = _yaml.load_bounded(text)
    assert data["one"] == {"model": "sonnet", "tools": ["Read", "Grep"]}
    assert data["two"] == {"model": "opus", "tools": ["Read", "Grep"]}


def test_one_long_string_repeated_by_aliases_is_refused() -> None:
    text = f"s: &s {'x' * 200_000}\nl: [{', '.join(['*s'] * 60)}]\n"  # 12 M characters expanded
    with pytest.raises(_yaml.YAMLLimitError, match="characters of text") as err:
        _yaml.load_bounded(text)
    assert err.value.line == 2


@pytest.mark.parametrize("text", ["&a [*a]", "a: &a {b: [1, *a]}"])
def test_a_node_that_contains_itself_is_refused(text: str) -> None:
    with pytest.raises(_yaml.YAMLLimitError, match="contains it"):
        _yaml.load_bounded(text)


def test_nesting_too_deep_for_the_python_loader_is_a_limit_error() -> None:
    text = "[" * 1000 + "]" * 1000
    with pytest.raises(_yaml.YAMLLimitError, match="nested too deeply"):
        _yaml.load_bounded(text, loader=yaml.SafeLoader)


def test_a_document_or_file_past_the_length_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_yaml, "MAX_DOCUMENT_CHARS", 1000)
    text = workflow_yaml(f"model: {'m' * 1000}")
    with pytest.raises(WorkflowValidationError, match="longer than 1,000 characters"):
        Workflow.from_yaml(text)
    path = write(tmp_path / "big.yaml", text)
    with pytest.raises(WorkflowError, match=r"big\.yaml: the file is longer than 1,000"):
        Workflow.from_yaml(path)
    config = write(tmp_path / "agentnb.yaml", f"default_model: {'m' * 1000}\n")
    with pytest.raises(ConfigError, match=r"agentnb\.yaml: the file is longer than 1,000"):
        Config.load(path=config, env={})


# -- agent files ----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["agents", ".claude/agents", "home"])
def test_an_alias_bomb_agent_file_is_skipped_and_every_other_agent_loads(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, home = tmp_path / "project", tmp_path / "home"
    directory = home / ".claude" / "agents" if where == "home" else project / where
    bomb = write(directory / "bomb.md", agent_md("bomb", f"hooks: {laughs()}"))
    write(directory / "good.md", agent_md("good"))
    home.mkdir(exist_ok=True)
    project.mkdir(exist_ok=True)
    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(home))
    registry = AgentRegistry(home=home, cwd=project)
    with pytest.warns(AgentFileWarning) as record:
        assert registry.names() == sorted(["good", *BUILTIN_NAMES])
        assert [spec.name for spec in registry] == registry.names()
        table = list_agents(Config.load(env={}))
    assert sorted(table["name"]) == sorted(["good", *BUILTIN_NAMES])
    messages = [str(w.message) for w in record if str(bomb) in str(w.message)]
    assert messages, [str(w.message) for w in record]
    assert f"{bomb}:4: front matter:" in messages[0]
    assert f"past {_yaml.MAX_NODES:,} nodes" in messages[0]


@pytest.mark.parametrize(
    "extra",
    [
        f"hooks: {laughs()}",
        "hooks: &a [1, *a]",
        "hooks: " + "[" * 1000 + "]" * 1000,  # past the pure-Python composer's recursion
    ],
)
def test_an_agent_file_past_a_limit_is_an_agent_file_error(extra: str) -> None:
    with pytest.raises(AgentFileError, match=r"^f\.md:\d+: front matter: "):
        AgentSpec.from_markdown(agent_md("f", extra), source=Path("f.md"))


def test_the_lenient_reading_resolves_no_alias_and_reads_quoted_text_within_limits() -> None:
    # The ': ' after "a" makes strict YAML fail, so the file is read line by line; the quoted
    # description is then unquoted by YAML, which must not recurse 600 levels deep.
    deep = '"a": ' + "[" * 600 + "]" * 600 + ' #"'
    text = agent_md("f", "tools: *a", "hooks: " + laughs(), "model: &m sonnet").replace(
        "description: A test agent", f"description: {deep}"
    )
    with pytest.warns(AgentFileWarning, match="read it line by line"):
        spec = AgentSpec.from_markdown(text)
    assert spec.tools == ("*a",)
    assert spec.model == "&m sonnet"
    assert spec.description == deep[1:-1]


def test_an_agent_file_with_a_few_aliases_loads() -> None:
    text = agent_md("f", "x-tools: &t [Read, Grep]", "tools: *t")
    assert AgentSpec.from_markdown(text).tools == ("Read", "Grep")


# -- workflows ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [(laughs(), f"past {_yaml.MAX_NODES:,} nodes"), ("&d [a, *d]", "contains it")],
)
def test_an_alias_bomb_workflow_is_a_validation_error_with_a_line(value: str, problem: str) -> None:
    text = workflow_yaml(f"dependencies: {value}")
    started = time.perf_counter()
    with pytest.raises(WorkflowValidationError, match=problem) as err:
        Workflow.from_yaml(text)
    assert time.perf_counter() - started < 1.0
    assert err.value.line == 6
    assert str(err.value).startswith("line 6: ")


def test_a_workflow_with_a_few_aliases_loads() -> None:
    text = (
        "name: w\n"
        "steps:\n"
        "  - &base {id: a, agent: writer, task: &t 'Summarise {{src}}', temperature: 0.2}\n"
        "  - <<: *base\n"
        "    id: b\n"
        "    task: *t\n"
    )
    wf = Workflow.from_yaml(text)
    assert [s.task for s in wf.steps] == ["Summarise {{src}}"] * 2
    assert wf.step("b").temperature == 0.2


def test_a_500_step_workflow_is_well_within_the_bound() -> None:
    lines = ["name: big", "defaults: {max_tokens: 500}", "steps:"]
    for i in range(500):
        lines += [
            f"  - id: s{i}",
            "    agent: writer",
            f"    task: 'Summarise {{{{s{i - 1}}}}} and say more about it'"
            if i
            else "    task: go",
            f"    depends_on: [s{i - 1}]" if i else "    depends_on: []",
            "    temperature: 0.2",
            "    model: sonnet",
        ]
    text = "\n".join(lines)
    loader = _yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    assert node is not None
    assert count_nodes(node) * 10 < _yaml.MAX_NODES  # about 8,000: the bound is 12x that
    assert len(Workflow.from_yaml(text).steps) == 500


def count_nodes(node: yaml.Node) -> int:
    if isinstance(node, yaml.MappingNode):
        return 1 + sum(count_nodes(k) + count_nodes(v) for k, v in node.value)
    if isinstance(node, yaml.SequenceNode):
        return 1 + sum(count_nodes(item) for item in node.value)
    return 1


# -- agentnb.yaml ---------------------------------------------------------------------------


def test_an_alias_bomb_config_file_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "agentnb.yaml", f"x-anchors: {laughs()}\nmax_concurrency: 4\n")
    with pytest.raises(ConfigError, match=r"^agentnb\.yaml: line 1: aliases expand .* past "):
        Config.load(env={})


def test_a_config_file_with_a_few_aliases_loads(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "cache_dir: &d /tmp/agentnb\nagents_dirs: [*d, ./agents]\n")
    cfg = Config.load(path=path, env={})
    assert [str(p) for p in cfg.agents_dirs] == ["/tmp/agentnb", "agents"]


def test_an_alias_bomb_in_an_environment_mapping_is_not_read_as_yaml() -> None:
    with pytest.raises(ConfigError, match="model_aliases") as err:
        # 6 levels of 10 (1.1 M nodes): past the bound, yet quick to print if it were read
        Config.load(env={"AGENTNB_MODEL_ALIASES": laughs(levels=6, width=10)})
    assert len(str(err.value)) < MESSAGE_LIMIT


# -- messages stay short --------------------------------------------------------------------

LONG = "x" * 100_000


def test_an_agent_file_error_shows_a_long_value_bounded() -> None:
    with pytest.raises(AgentFileError, match="'temperature' must be") as err:
        AgentSpec.from_markdown(agent_md("f", f"temperature: {LONG}"))
    assert "(100,000 characters)" in str(err.value)
    assert len(str(err.value)) < MESSAGE_LIMIT


@pytest.mark.parametrize(
    "text",
    [
        f"name: w\non_error: {LONG}\nsteps: [{{id: a, agent: writer, task: go}}]",
        # `? key` spells a key longer than the 1,024 characters a plain `key:` may have
        f"name: w\n? {LONG}\n: 1\nsteps: [{{id: a, agent: writer, task: go}}]",
        f"name: w\nsteps: [{{id: a, agent: writer, task: go, ? {LONG} : 1}}]",
        f"name: w\nsteps: [{{id: {LONG}., agent: writer, task: go}}]",
        f"name: w\nsteps: [{{id: a, agent: writer, task: go, depends_on: [{LONG}]}}]",
        f"name: w\ndescription: {laughs(levels=4)}\nsteps: [{{id: a, agent: writer, task: go}}]",
    ],
    ids=["value", "top-key", "step-key", "id", "dependency", "small-bomb"],
)
def test_a_workflow_error_shows_a_long_value_bounded(text: str) -> None:
    with pytest.raises(WorkflowValidationError) as err:
        Workflow.from_yaml(text)
    assert len(str(err.value)) < MESSAGE_LIMIT


def test_a_workflow_unknown_agent_is_shown_bounded() -> None:
    wf = Workflow.from_dict({"name": "w", "steps": [{"id": "a", "agent": LONG, "task": "go"}]})
    with pytest.raises(WorkflowValidationError, match="unknown agent") as err:
        wf.validate(agents={"writer"})
    assert len(str(err.value)) < MESSAGE_LIMIT


@pytest.mark.parametrize(
    "text",
    [
        f"backend: {LONG}\n",
        f"max_concurrency: {LONG}\n",
        f"? {LONG}\n: 1\n",
        f"max_concurrency: {laughs(levels=4)}\n",
        f"sim_fault_kinds: [{', '.join([LONG] * 20)}]\n",
    ],
    ids=["literal", "int", "key", "small-bomb", "fault-kinds"],
)
def test_a_config_error_shows_a_long_value_bounded(text: str, tmp_path: Path) -> None:
    path = write(tmp_path / "agentnb.yaml", text)
    with pytest.raises(ConfigError) as err:
        Config.load(path=path, env={})
    assert len(str(err.value).replace(str(path), "agentnb.yaml")) < MESSAGE_LIMIT


def test_a_config_error_names_a_container_by_its_type() -> None:
    with pytest.raises(ConfigError, match=r"'max_concurrency' must be an integer, got a list$"):
        Config.load(env={}, max_concurrency=[1, 2])


@pytest.mark.timeout(10)
def test_an_alias_bomb_in_a_prices_file_is_refused(tmp_path: Path) -> None:
    from agentnb.errors import ConfigError
    from agentnb.pricing import PriceTable

    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "prices.yaml"
    path.write_text("\n".join(levels) + "\nmodels: *a8\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="prices file"):
        PriceTable.default().load(path)
