"""Tests for agentnb.agents: agent files, name validation, the search path and its cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from agentnb import _agentfile, _agentscan, _agentspec
from agentnb.agents import (
    AgentFileWarning,
    AgentRegistry,
    AgentSpec,
    list_agents,
    validate_agent_name,
)
from agentnb.config import Config
from agentnb.errors import AgentFileError, AgentNotFoundError, InvalidAgentNameError

CORPUS = Path(__file__).parent / "data" / "claude-agents"
CORPUS_FILES = sorted(CORPUS.rglob("*.md"))
AGENT_FILES = [p for p in CORPUS_FILES if p.name != "README.md"]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "agents"
BUILTIN_NAMES = ["code-reviewer", "data-analyst", "python-expert", "writer"]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def agent_md(name: str | None, body: str = "You are a test agent.", **fields: str) -> str:
    lines = ["---"]
    if name is not None:
        lines.append(f"name: {name}")
    lines.append(f"description: {fields.pop('description', 'A test agent')}")
    lines += [f"{k}: {v}" for k, v in fields.items()]
    return "\n".join([*lines, "---", body, ""])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def only_dirs(
    *dirs: Path, home: Path, check_interval_s: float = 0.5, clock: Clock | None = None
) -> AgentRegistry:
    """A registry over `dirs` alone (no ./agents, ~/.claude or built-ins)."""
    return AgentRegistry(
        dirs,
        include_builtin=False,
        include_default_dirs=False,
        home=home,
        check_interval_s=check_interval_s,
        clock=clock or Clock(),
    )


# -- names -----------------------------------------------------------------------------------

BAD_NAMES = [
    ("", "empty"),
    ("a/b", "path separator"),
    ("a\\b", "path separator"),
    ("../etc/passwd", "path separator"),
    ("..", "'..'"),
    ("a..b", "'..'"),
    ("a\x00b", "control character"),
    ("a\x07b", "control character"),
    ("a\x7fb", "control character"),
    ("a\nb", "control character"),
    ("a\u202eb", "control character"),  # right-to-left override
    ("a\u200bb", "control character"),  # zero-width space
    (" writer", "whitespace"),
    ("writer ", "whitespace"),
    ("\twriter", "whitespace"),
    ("writer\n", "whitespace"),
    ("\u00a0writer", "whitespace"),
    ("x" * 201, "longer than 200"),
]


@pytest.mark.parametrize(("name", "reason"), BAD_NAMES)
def test_invalid_names_are_refused(name: str, reason: str, home: Path) -> None:
    with pytest.raises(InvalidAgentNameError, match=reason):
        validate_agent_name(name)
    with pytest.raises(InvalidAgentNameError, match=reason):
        only_dirs(home=home).get(name)


@pytest.mark.parametrize("name", [None, 42, b"writer", ["writer"]])
def test_non_string_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidAgentNameError, match="must be a string"):
        validate_agent_name(name)


@pytest.mark.parametrize("name", ["python-expert", "Code Reviewer", "résumé-writer", "v1.2", "a_b"])
def test_valid_names_pass(name: str) -> None:
    assert validate_agent_name(name) == name


def test_valid_names_are_remembered_up_to_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    remembered: set[str] = set()
    monkeypatch.setattr(_agentspec, "_VALID_NAMES", remembered)
    monkeypatch.setattr(_agentspec, "_MAX_REMEMBERED", 3)
    for name in ["a", "b", "a", "c", "d", "e"]:
        validate_agent_name(name)
    with pytest.raises(InvalidAgentNameError):
        validate_agent_name("a/b")
    assert remembered == {"a", "b", "c"}

    def no_full_check(name: str) -> str | None:
        raise AssertionError("a remembered name was checked again")

    monkeypatch.setattr(_agentspec, "_name_problem", no_full_check)
    assert validate_agent_name("b") == "b"


def test_name_is_validated_before_any_lookup(
    project: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(project / "secret.md", agent_md("secret"))
    registry = AgentRegistry([project / "agents"], home=home, include_builtin=False)

    def no_scan(*args: object) -> None:
        raise AssertionError("scanned before validating the name")

    monkeypatch.setattr(_agentscan.Scanner, "scan", no_scan)
    monkeypatch.setattr(AgentRegistry, "_check", no_scan)
    with pytest.raises(InvalidAgentNameError):
        registry.get("../secret")
    assert "../secret" not in registry


def test_agents_are_found_by_declared_name_not_by_path(project: Path, home: Path) -> None:
    write(project / "secret.md", agent_md("secret"))
    write(project / "agents" / "ok.md", agent_md("ok"))
    registry = AgentRegistry(home=home, include_builtin=False)
    assert registry.names() == ["ok"]
    with pytest.raises(AgentNotFoundError):
        registry.get("secret")


def test_agent_spec_made_in_code_validates_its_name() -> None:
    with pytest.raises(InvalidAgentNameError):
        AgentSpec(name="a/b", description="", system_prompt="x")
    spec = AgentSpec(name="echo", description="", system_prompt="x", tools=["Read"])  # type: ignore[arg-type]
    assert spec.tools == ("Read",)


# -- not found -------------------------------------------------------------------------------


def test_not_found_lists_close_matches_and_searched_dirs(project: Path, home: Path) -> None:
    write(project / "agents" / "code-reviewer.md", agent_md("code-reviewer"))
    write(project / "agents" / "python-expert.md", agent_md("python-expert"))
    registry = AgentRegistry(home=home, include_builtin=False)
    with pytest.raises(AgentNotFoundError) as info:
        registry.get("code-reveiwer")
    err = info.value
    assert err.name == "code-reveiwer"
    assert err.suggestions[0] == "code-reviewer"
    assert "python-expert" not in err.suggestions
    message = str(err)
    assert "Did you mean: code-reviewer" in message
    assert str(project / "agents") in message
    assert f"{project / '.claude' / 'agents'} (missing)" in message
    assert f"{home / '.claude' / 'agents'} (missing)" in message


def test_not_found_suggests_names_containing_the_query(home: Path) -> None:
    registry = only_dirs(CORPUS, home=home)
    with pytest.raises(AgentNotFoundError) as info:
        registry.get("code-reviewer")
    assert "comprehensive-review-code-reviewer" in str(info.value)
    assert all("code-reviewer" in s for s in info.value.suggestions)
    assert info.value.suggestions


def test_not_found_explains_a_file_without_front_matter(project: Path, home: Path) -> None:
    write(project / "agents" / "notes.md", "# Notes\n\nYou are a note taker.\n")
    registry = AgentRegistry(home=home, include_builtin=False)
    with pytest.raises(AgentNotFoundError, match=r"notes\.md has no front matter"):
        registry.get("notes")


def test_not_found_explains_a_file_declaring_another_name(project: Path, home: Path) -> None:
    write(project / "agents" / "foo.md", agent_md("bar"))
    registry = AgentRegistry(home=home, include_builtin=False)
    with pytest.raises(AgentNotFoundError, match=r"foo\.md declares the name 'bar'") as info:
        registry.get("foo")
    assert info.value.suggestions == ["bar"]


def test_not_found_explains_a_skipped_file_each_time(project: Path, home: Path) -> None:
    agents = project / "agents"
    write(agents / "sql.md", agent_md("sql", temperature="hot"))
    write(agents / "query.md", agent_md("'sql-helper'  # quoted", max_tokens="0"))
    write(agents / "bin.md", b"---\nname: other\n---\n\x00")
    write(agents / "ok.md", agent_md("ok"))
    registry = AgentRegistry(home=home, include_builtin=False)
    with pytest.warns(AgentFileWarning) as record:
        assert registry.names() == ["ok"]
    assert len(record) == 3
    for _ in range(2):  # warned once, explained at every lookup (a warning would fail here)
        with pytest.raises(AgentNotFoundError) as info:
            registry.get("sql")
        message = str(info.value)
        assert f"{agents / 'sql.md'} declares the name 'sql' but was skipped: " in message
        assert "sql.md:4: 'temperature' must be a number between 0 and 1, got 'hot'." in message
    with pytest.raises(AgentNotFoundError, match=r"query\.md declares the name 'sql-helper' but"):
        registry.get("sql-helper")
    with pytest.raises(AgentNotFoundError, match=r"bin\.md was skipped: .*binary file"):
        registry.get("bin")
    with pytest.raises(AgentNotFoundError) as info:
        registry.get("query")  # named query.md, declares another name: the stem counts too
    assert "query.md was skipped: " in str(info.value)
    with pytest.raises(AgentNotFoundError) as info:
        registry.get("okay")
    assert "skipped" not in str(info.value)


# -- search path and precedence ----------------------------------------------------------------


def test_search_path_order(project: Path, home: Path, tmp_path: Path) -> None:
    configured = tmp_path / "configured"
    registry = AgentRegistry([configured], home=home)
    path = registry.search_path
    assert path[:4] == [
        configured,
        project / "agents",
        project / ".claude" / "agents",
        home / ".claude" / "agents",
    ]
    assert len(path) == 5
    assert (path[4] / "writer.md").is_file()


def test_search_path_lists_a_directory_once(project: Path, home: Path) -> None:
    registry = AgentRegistry([Path("agents"), project / "agents"], home=home, include_builtin=False)
    assert registry.search_path == [
        project / "agents",
        project / ".claude" / "agents",
        home / ".claude" / "agents",
    ]


def test_precedence_across_directories(project: Path, home: Path, tmp_path: Path) -> None:
    configured = tmp_path / "configured"
    files = [
        write(configured / "w.md", agent_md("writer", body="configured")),
        write(project / "agents" / "w.md", agent_md("writer", body="dot-agents")),
        write(project / ".claude" / "agents" / "w.md", agent_md("writer", body="dot-claude")),
        write(home / ".claude" / "agents" / "w.md", agent_md("writer", body="home")),
    ]
    registry = AgentRegistry([configured], home=home, check_interval_s=0)
    for path, body in zip(files, ["configured", "dot-agents", "dot-claude", "home"], strict=True):
        spec = registry.get("writer")
        assert (spec.source, spec.system_prompt) == (path, body)
        path.unlink()
    builtin = registry.get("writer")
    assert builtin.source == registry.search_path[-1] / "writer.md"
    assert builtin.model == "inherit"

    registry.register(AgentSpec(name="writer", description="in code", system_prompt="mine"))
    assert registry.get("writer").system_prompt == "mine"
    assert registry.get("writer").source is None


def test_relative_configured_dir_follows_the_working_directory(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "one" / "mine" / "a.md", agent_md("pick", body="one"))
    write(tmp_path / "two" / "mine" / "a.md", agent_md("pick", body="two"))
    clock = Clock()
    registry = only_dirs(Path("mine"), home=home, check_interval_s=60, clock=clock)
    monkeypatch.chdir(tmp_path / "one")
    assert registry.get("pick").system_prompt == "one"
    monkeypatch.chdir(tmp_path / "two")
    assert registry.get("pick").system_prompt == "one"  # within the interval
    clock.advance(60)
    assert registry.get("pick").system_prompt == "two"


def test_from_config_uses_agents_dirs(tmp_path: Path, home: Path) -> None:
    write(tmp_path / "cfg" / "x.md", agent_md("from-config"))
    config = Config.load(env={}, agents_dirs=[str(tmp_path / "cfg")])
    registry = AgentRegistry.from_config(config)
    assert registry.search_path[0] == tmp_path / "cfg"
    assert registry.get("from-config").source == tmp_path / "cfg" / "x.md"


# -- names, stems, scanning --------------------------------------------------------------------


def test_name_comes_from_front_matter_else_the_file_stem(tmp_path: Path, home: Path) -> None:
    write(tmp_path / "a" / "foo.md", agent_md("bar"))
    write(tmp_path / "a" / "baz.md", agent_md(None))
    registry = only_dirs(tmp_path / "a", home=home)
    assert registry.names() == ["bar", "baz"]
    assert registry.get("baz").source == tmp_path / "a" / "baz.md"
    assert "foo" not in registry


def test_scan_is_recursive_and_skips_hidden_directories(tmp_path: Path, home: Path) -> None:
    root = tmp_path / "a"
    write(root / "team" / "deep" / "nested.md", agent_md("nested"))
    write(root / "x.md", agent_md("x", body="real"))
    write(root / ".ipynb_checkpoints" / "x-checkpoint.md", agent_md("x", body="checkpoint"))
    write(root / ".git" / "y.md", agent_md("y"))
    write(root / ".hidden.md", agent_md("hidden"))
    write(root / "notes.txt", agent_md("txt"))
    registry = only_dirs(root, home=home)
    assert registry.names() == ["nested", "x"]
    assert registry.get("x").system_prompt == "real"


def test_duplicate_names_in_one_directory_first_sorted_path_wins(
    tmp_path: Path, home: Path
) -> None:
    root = tmp_path / "a"
    write(root / "b-plugin" / "dup.md", agent_md("dup", body="second"))
    write(root / "a-plugin" / "dup.md", agent_md("dup", body="first"))
    registry = only_dirs(root, home=home)
    with pytest.warns(AgentFileWarning, match=r"a-plugin/dup\.md and .*b-plugin/dup\.md"):
        spec = registry.get("dup")
    assert spec.system_prompt == "first"


def test_same_name_in_two_directories_is_not_a_warning(tmp_path: Path, home: Path) -> None:
    write(tmp_path / "a" / "dup.md", agent_md("dup", body="a"))
    write(tmp_path / "b" / "dup.md", agent_md("dup", body="b"))
    registry = only_dirs(tmp_path / "a", tmp_path / "b", home=home)
    assert registry.get("dup").system_prompt == "a"  # a warning would fail (filterwarnings=error)


# -- the corpus --------------------------------------------------------------------------------


def simple_extract(path: Path) -> dict[str, object]:
    """What a person reads in a corpus file, without YAML: name, description, model, prompt."""
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "---"
    end = lines.index("---", 1)
    fields: dict[str, list[str]] = {}
    key = ""
    for line in lines[1:end]:
        if line[:1].isalpha() and ":" in line:
            key, _, text = line.partition(":")
            fields[key] = [text.strip()]
        else:
            fields[key].append(line.strip())

    def value(key: str) -> str | None:
        if key not in fields:
            return None
        first, *rest = fields[key]
        if first in (">", ">-", "|", "|-"):
            return " ".join(r for r in rest if r)
        if first[:1] in "\"'":
            return first[1:-1]
        return " ".join([first, *rest]).strip()

    tools = value("tools")
    return {
        "name": value("name") or path.stem,
        "description": value("description"),
        "model": value("model"),
        "tools": ()
        if tools is None or tools == "[]"
        else tuple(t.strip() for t in tools.split(",")),
        "prompt": "\n".join(lines[end + 1 :]).strip(),
    }


def test_corpus_has_202_agent_files() -> None:
    assert len(AGENT_FILES) == 202
    assert (CORPUS / "wshobson-agents" / "LICENSE").is_file()


@pytest.mark.parametrize("path", AGENT_FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_corpus_file_loads_as_a_person_reads_it(path: Path) -> None:
    spec = AgentSpec.from_file(path)
    expected = simple_extract(path)
    got = {
        "name": spec.name,
        "description": spec.description,
        "model": spec.model,
        "tools": spec.tools,
        "prompt": spec.system_prompt,
    }
    assert got == expected
    assert spec.source == path
    assert spec.description and spec.system_prompt and spec.model


def test_corpus_directory_loads_every_agent(home: Path) -> None:
    registry = only_dirs(CORPUS, home=home)
    assert len(registry) == 202
    for path in AGENT_FILES:
        name = simple_extract(path)["name"]
        assert isinstance(name, str)
        assert registry.get(name).source == path
    renamed = [s for s in registry if s.source is not None and s.source.stem != s.name]
    assert len(renamed) == 95  # counted with grep: `name:` differs from the file stem
    assert {s.model for s in registry} == {"sonnet", "opus", "haiku", "inherit", "fable"}


TRICKY: dict[str, dict[str, Any]] = {
    # folded `>` description, `tools: []`, model inherit, prompt opening with a heading
    "arm-cortex-microcontrollers/agents/arm-cortex-expert.md": dict(
        name="arm-cortex-expert",
        description=(
            "Senior embedded software engineer specializing in firmware and driver development "
            "for ARM Cortex-M microcontrollers (Teensy, STM32, nRF52, SAMD). Decades of experience "
            "writing reliable, optimized, and maintainable embedded code with deep expertise in "
            "memory barriers, DMA/cache coherency, interrupt-driven I/O, and peripheral drivers."
        ),
        model="inherit",
        tools=(),
        prompt_start="# @arm-cortex-expert\n\n## 🎯 Role & Objectives",
    ),
    # quoted description, tools as a comma string
    "plugin-eval/agents/eval-judge.md": dict(
        name="eval-judge",
        description=(
            "LLM judge for plugin quality assessment. Scores skills on triggering accuracy, "
            "orchestration fitness, output quality, and scope calibration using anchored rubrics."
        ),
        model="sonnet",
        tools=("Read", "Grep", "Glob"),
        prompt_start="You are a quality judge for Claude Code plugin skills.",
    ),
    # `>-` description, a `color` key, one MCP tool, <example> blocks in the body
    "meigen-ai-design/agents/image-generator.md": dict(
        name="image-generator",
        description=(
            "Image generation executor agent. Delegates here for ALL generate_image calls to keep "
            "the main conversation context clean. Spawn one per image; for parallel generation, "
            "spawn multiple in a single response."
        ),
        model="inherit",
        tools=("mcp__meigen__generate_image",),
        prompt_start="You are an image generation executor.",
    ),
    "meigen-ai-design/agents/gallery-researcher.md": dict(
        name="gallery-researcher",
        description=(
            "Gallery search and inspiration agent. Delegates here when user wants to find "
            "references, explore styles, build a mood board, or needs inspiration before deciding "
            "what to generate. Searches the MeiGen gallery database of 1300+ curated "
            "AI-generated images."
        ),
        model="haiku",
        tools=("mcp__meigen__search_gallery", "mcp__meigen__get_inspiration"),
        prompt_start="You are a visual research assistant.",
    ),
    # `>-` description with quotes, an em dash and a slash inside
    "meigen-ai-design/agents/prompt-crafter.md": dict(
        name="prompt-crafter",
        description=(
            "Batch prompt writing agent. Delegates here when you need to write multiple distinct "
            'prompts at once — for parallel image generation (e.g., "5 logo concepts"), '
            "serial-to-parallel workflows (e.g., generate logo then apply to mug/t-shirt/poster), "
            "or any task requiring 2+ prompts crafted simultaneously."
        ),
        model="haiku",
        tools=(),
        prompt_start="You are an expert AI image generation prompt writer.",
    ),
    # name differs from the file stem
    "comprehensive-review/agents/code-reviewer.md": dict(
        name="comprehensive-review-code-reviewer",
        model="opus",
        tools=(),
    ),
    # unknown model value, tools before model, a colour
    "agent-teams/agents/team-lead.md": dict(
        name="team-lead",
        model="fable",
        tools=(
            "Read",
            "Glob",
            "Grep",
            "Bash",
            "Agent",
            "TeamCreate",
            "TeamDelete",
            "TaskCreate",
            "TaskList",
            "TaskGet",
            "TaskUpdate",
            "SendMessage",
        ),
        prompt_start="You are an expert team orchestrator",
    ),
    "framework-migration/agents/legacy-modernizer.md": dict(
        name="framework-migration-legacy-modernizer", model="fable"
    ),
    # quoted description, no tools
    "pptx-deck-creation/agents/pptx-deck-creation-builder.md": dict(
        name="pptx-deck-creation-builder",
        description=(
            "Use when creating, repairing, or auditing a production-ready editable PowerPoint "
            "(PPTX) deck from a brief, source material, or reference deck."
        ),
        model="inherit",
        prompt_start="# PPTX Deck Creation Builder\n\nCreate editable PowerPoint decks",
    ),
    # `>` folded description over five lines, haiku
    "social-publishing/agents/social-publishing-publisher.md": dict(
        name="social-publishing-publisher",
        model="haiku",
        tools=("Read", "Write", "Bash", "WebFetch"),
        description_end="Requires a SocialClaw workspace API key (SOCIALCLAW_API_KEY).",
    ),
}


@pytest.mark.parametrize("relpath", sorted(TRICKY))
def test_tricky_corpus_files(relpath: str) -> None:
    spec = AgentSpec.from_file(CORPUS / "wshobson-agents" / "plugins" / relpath)
    want = TRICKY[relpath]
    assert spec.name == want["name"]
    assert spec.model == want["model"]
    if "description" in want:
        assert spec.description == want["description"]
    if "description_end" in want:
        assert spec.description.endswith(str(want["description_end"]))
        assert "\n" not in spec.description
    if "tools" in want:
        assert spec.tools == want["tools"]
    if "prompt_start" in want:
        assert spec.system_prompt.startswith(str(want["prompt_start"]))
    assert not spec.system_prompt.startswith("---")


# -- leniency and unusable files ---------------------------------------------------------------


def test_lenient_yaml_is_read_with_a_warning_naming_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "helper.md",
        "---\nname: helper\n"
        "description: Use this agent when: the user asks for help. Handles C# code #1\n"
        "model: sonnet\ntools: Read, Grep\n---\nYou help.\n",
    )
    with pytest.warns(AgentFileWarning, match=r"helper\.md:3: front matter is not valid YAML"):
        spec = AgentSpec.from_file(path)
    assert spec.name == "helper"
    assert spec.description == "Use this agent when: the user asks for help. Handles C# code #1"
    assert (spec.model, spec.tools, spec.system_prompt) == ("sonnet", ("Read", "Grep"), "You help.")


def test_lenient_description_keeps_example_blocks(tmp_path: Path) -> None:
    path = write(
        tmp_path / "reviewer.md",
        "---\nname: reviewer\ndescription: Use this agent after writing code. Examples:\n"
        '<example>\nContext: The user wrote a function.\nuser: "Please review it"\n'
        'assistant: "I\'ll use the reviewer agent"\n</example>\nmodel: opus\ncolor: red\n'
        "---\nReview code.\n",
    )
    with pytest.warns(AgentFileWarning, match=r"reviewer\.md:3:"):
        spec = AgentSpec.from_file(path)
    assert spec.description == (
        "Use this agent after writing code. Examples: <example> Context: The user wrote a "
        'function. user: "Please review it" assistant: "I\'ll use the reviewer agent" </example>'
    )
    assert spec.model == "opus"


def test_lenient_reading_of_lists_blocks_and_typed_values(tmp_path: Path) -> None:
    path = write(
        tmp_path / "l.md",
        "---\n# a comment\nname: lenient\ndescription: Handles this: that\n"
        "tools:\n  - Read\n  - 'Bash(npm run test:*)'\ntemperature: 0.3  # low\ncache: yes\n"
        "max_tokens: 100\nnotes: |\n  a\n  b\n---\nBody\n",
    )
    with pytest.warns(AgentFileWarning, match=r"l\.md:4:"):
        spec = AgentSpec.from_file(path)
    assert spec.description == "Handles this: that"
    assert spec.tools == ("Read", "Bash(npm run test:*)")
    assert (spec.temperature, spec.cache, spec.max_tokens) == (0.3, True, 100)


def test_hash_in_a_plain_description_is_kept_as_text(tmp_path: Path) -> None:
    path = write(
        tmp_path / "h.md",
        "---\nname: h\ndescription: Reviews C# code #dotnet\nmodel: sonnet # cheaper\n---\nB\n",
    )
    with pytest.warns(AgentFileWarning, match=r"h\.md:3: ' #' in the description"):
        spec = AgentSpec.from_file(path)
    assert spec.description == "Reviews C# code #dotnet"
    assert spec.model == "sonnet"


def test_lenient_warning_is_given_once_per_file_version(tmp_path: Path, home: Path) -> None:
    write(tmp_path / "a" / "x.md", "---\nname: x\ndescription: a: b\n---\nB\n")
    registry = only_dirs(tmp_path / "a", home=home, check_interval_s=0)
    with pytest.warns(AgentFileWarning) as record:
        assert registry.get("x").description == "a: b"
        registry.names()
        assert len(registry) == 1
    assert len(record) == 1


def test_unusable_files_are_skipped_with_a_warning_while_others_load(
    tmp_path: Path, home: Path
) -> None:
    root = tmp_path / "a"
    write(root / "good.md", agent_md("good"))
    write(root / "README.md", "# Agents\n\nSome notes about this folder.\n")
    bad: dict[str, str | bytes] = {
        "unclosed.md": "---\nname: unclosed\nYou are...\n",
        "binary.md": b"---\nname: bin\n---\n\x00\x01\x02",
        "latin1.md": "---\nname: caf\xe9\n---\nBody\n".encode("latin-1"),
        "empty-body.md": "---\nname: empty\ndescription: nothing\n---\n\n  \n",
        "bad-temp.md": agent_md("hot", temperature="hot"),
        "bad-name.md": agent_md("../escape"),
        "prose.md": "---\nthis is not front matter at all\n---\nBody\n",
        "bad-tools.md": agent_md("t", tools="{Read: yes}"),
    }
    for filename, text in bad.items():
        write(root / filename, text)
    registry = only_dirs(root, home=home)
    with pytest.warns(AgentFileWarning) as record:
        assert registry.names() == ["good"]
    messages = [str(w.message) for w in record]
    assert len(messages) == len(bad)
    for filename in bad:
        assert sum(filename in m for m in messages) == 1, filename
    assert not any("README.md" in m for m in messages)
    assert any("bad-temp.md:4: 'temperature' must be a number" in m for m in messages)
    assert any("unclosed.md:1: front matter opened with '---' is never" in m for m in messages)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("temperature", "hot", "'temperature' must be a number between 0 and 1"),
        ("temperature", "1.5", "'temperature' must be a number between 0 and 1"),
        ("temperature", "true", "'temperature' must be a number between 0 and 1"),
        ("max_tokens", "0", "'max_tokens' must be a positive integer"),
        ("max_tokens", "many", "'max_tokens' must be a positive integer"),
        ("max_tokens", "[1]", "'max_tokens' must be a positive integer"),
        ("cache", "maybe", "'cache' must be true or false"),
        ("tools", "{Read: yes}", "'tools' must be a comma-separated string or a list"),
        ("tools", "[1, [2]]", "'tools' must be a comma-separated string or a list"),
        ("model", "[a, b]", "'model' must be text"),
        ("description", "{a: b}", "'description' must be text"),
    ],
)
def test_wrong_value_types_name_file_line_and_key(
    tmp_path: Path, key: str, value: str, expected: str
) -> None:
    path = write(tmp_path / "typed.md", agent_md("typed", **{key: value}))
    line = 3 if key == "description" else 4
    with pytest.raises(AgentFileError, match=rf"typed\.md:{line}: {expected}"):
        AgentSpec.from_file(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("You are an agent without front matter.", "no front matter"),
        ("---\nname: x\n", "never closed"),
        ("---\nname: x\n---\n   \n", "has no system prompt"),
        ("---\nname: a/b\n---\nBody", "path separator"),
        ("---\n- a\n- b\n---\nBody", "not 'key: value'"),
    ],
)
def test_from_markdown_raises_for_text_it_cannot_understand(text: str, message: str) -> None:
    with pytest.raises(AgentFileError, match=message):
        AgentSpec.from_markdown(text, default_name="x")


def test_from_file_raises_for_binary_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(AgentFileError, match=r"bin\.md: binary file"):
        AgentSpec.from_file(write(tmp_path / "bin.md", b"---\nname: x\n---\n\x00"))
    with pytest.raises(AgentFileError, match=r"l1\.md: not UTF-8"):
        AgentSpec.from_file(write(tmp_path / "l1.md", b"---\nname: caf\xe9\n---\nB"))
    with pytest.raises(AgentFileError, match="cannot be read"):
        AgentSpec.from_file(tmp_path / "missing.md")


def test_from_markdown_needs_a_name_from_somewhere() -> None:
    with pytest.raises(AgentFileError, match="no 'name'"):
        AgentSpec.from_markdown("---\ndescription: d\n---\nBody")
    assert AgentSpec.from_markdown("---\n---\nBody", default_name="stem").name == "stem"
    assert AgentSpec.from_markdown("---\n---\nBody", source=Path("/x/file.md")).name == "file"


def test_crlf_bom_and_blank_lines_before_front_matter(tmp_path: Path) -> None:
    text = b"\xef\xbb\xbf\r\n---\r\nname: w\r\nmodel: haiku\r\n---\r\nLine 1\r\nLine 2\r\n"
    path = write(tmp_path / "w.md", text)
    spec = AgentSpec.from_file(path)
    assert (spec.name, spec.model, spec.system_prompt) == ("w", "haiku", "Line 1\nLine 2")


# -- field forms -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        ("Read, Grep, Glob", ("Read", "Grep", "Glob")),
        ("Read", ("Read",)),
        ("[Read, Grep]", ("Read", "Grep")),
        ("[]", ()),
        ("", ()),
        ("\n  - Read\n  - Bash(npm run test:*)", ("Read", "Bash(npm run test:*)")),
        (None, ()),
    ],
)
def test_tools_forms(tools: str | None, expected: tuple[str, ...]) -> None:
    fields = {} if tools is None else {"tools": tools}
    assert AgentSpec.from_markdown(agent_md("t", **fields)).tools == expected


@pytest.mark.parametrize(
    ("model", "expected", "resolved"),
    [
        ("claude-opus-4-1-20250805", "claude-opus-4-1-20250805", "claude-opus-4-1-20250805"),
        ("fable", "fable", "fable"),
        ("sonnet", "sonnet", "claude-sonnet-5-5"),
        ("inherit", "inherit", "claude-sonnet-5-5"),
        ("", None, "claude-sonnet-5-5"),
        (None, None, "claude-sonnet-5-5"),
    ],
)
def test_model_is_passed_through(model: str | None, expected: str | None, resolved: str) -> None:
    fields = {} if model is None else {"model": model}
    spec = AgentSpec.from_markdown(agent_md("m", **fields))
    assert spec.model == expected
    assert Config.load(env={}).resolve_model(spec.model) == resolved


def test_optional_values_are_typed() -> None:
    spec = AgentSpec.from_markdown(
        agent_md("t", temperature="0", max_tokens="2_048", cache="false", model="'4'")
    )
    assert (spec.temperature, spec.max_tokens, spec.cache, spec.model) == (0.0, 2048, False, "4")
    assert isinstance(spec.temperature, float) and isinstance(spec.max_tokens, int)
    # YAML 1.1 would read these as booleans and numbers; an agent file means the text
    spec = AgentSpec.from_markdown("---\nname: no\ndescription: 1.5\nmodel: on\n---\nB")
    assert (spec.name, spec.description, spec.model) == ("no", "1.5", "on")
    assert AgentSpec.from_markdown(agent_md("t", cache="true")).cache is True
    assert AgentSpec.from_markdown(agent_md("t")).cache is None


def test_prompt_hash_and_equality() -> None:
    a = AgentSpec(name="a", description="", system_prompt="Be brief.")
    assert a.prompt_hash == hashlib.sha256(b"Be brief.").hexdigest()
    assert a.prompt_hash is a.prompt_hash  # computed once
    b = AgentSpec.from_markdown("---\nname: a\n---\nBe brief.", source=Path("/x/a.md"))
    assert b.prompt_hash == a.prompt_hash
    assert a == b and hash(a) == hash(b)  # where it was loaded from is not part of the agent
    other = AgentSpec(name="a", description="", system_prompt="Be long.")
    assert other.prompt_hash != a.prompt_hash


# -- freshness ---------------------------------------------------------------------------------


def bump(path: Path, text: str) -> None:
    """Rewrite `path` and move its mtime forward, as a later edit would."""
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_editing_an_agent_file_is_picked_up_within_the_interval(tmp_path: Path, home: Path) -> None:
    path = write(tmp_path / "a" / "e.md", agent_md("edit", body="one"))
    clock = Clock()
    registry = only_dirs(tmp_path / "a", home=home, check_interval_s=0.5, clock=clock)
    assert registry.get("edit").system_prompt == "one"
    bump(path, agent_md("edit", body="two"))  # same size: only the mtime tells
    clock.advance(0.4)
    assert registry.get("edit").system_prompt == "one"  # not looked at yet
    clock.advance(0.1)
    assert registry.get("edit").system_prompt == "two"
    bump(path, agent_md("renamed", body="two"))
    assert registry.get("renamed").source == path  # not found: re-checked at once
    with pytest.raises(AgentNotFoundError):
        registry.get("edit")


def test_with_no_interval_every_get_sees_an_edit(tmp_path: Path, home: Path) -> None:
    path = write(tmp_path / "a" / "e.md", agent_md("edit", body="one"))
    registry = only_dirs(tmp_path / "a", home=home, check_interval_s=0)
    assert registry.get("edit").system_prompt == "one"
    bump(path, agent_md("edit", body="two"))
    assert registry.get("edit").system_prompt == "two"


def test_refresh_makes_the_next_get_look_again(tmp_path: Path, home: Path) -> None:
    path = write(tmp_path / "a" / "e.md", agent_md("edit", body="one"))
    registry = only_dirs(tmp_path / "a", home=home, check_interval_s=3600)
    assert registry.get("edit").system_prompt == "one"
    bump(path, agent_md("edit", body="two"))
    registry.refresh()
    assert registry.get("edit").system_prompt == "two"


def test_new_shadowing_and_deleted_files_are_picked_up(tmp_path: Path, home: Path) -> None:
    low = write(tmp_path / "low" / "x.md", agent_md("x", body="low"))
    registry = only_dirs(tmp_path / "high", tmp_path / "low", home=home, check_interval_s=0)
    assert registry.get("x").system_prompt == "low"
    write(tmp_path / "low" / "new.md", agent_md("new"))
    assert "new" in registry
    write(tmp_path / "high" / "sub" / "x.md", agent_md("x", body="high"))
    assert registry.get("x").system_prompt == "high"
    (tmp_path / "high" / "sub" / "x.md").unlink()
    assert registry.get("x").source == low
    low.unlink()
    with pytest.raises(AgentNotFoundError):
        registry.get("x")


def test_unchanged_files_are_not_parsed_again(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(5):
        write(tmp_path / "a" / f"{i}.md", agent_md(f"agent-{i}"))
    registry = only_dirs(tmp_path / "a", home=home, check_interval_s=0)
    assert len(registry) == 5
    reads: list[Path] = []
    real_read = _agentfile.read_agent_text

    def counting_read(path: Path) -> str:
        reads.append(path)
        return real_read(path)

    monkeypatch.setattr(_agentfile, "read_agent_text", counting_read)
    registry.get("agent-1")
    assert reads == []
    bump(tmp_path / "a" / "3.md", agent_md("agent-3", body="changed"))
    assert registry.get("agent-1").system_prompt == "You are a test agent."
    assert reads == [tmp_path / "a" / "3.md"]
    assert registry.get("agent-3").system_prompt == "changed"


def test_refresh_forgets_the_scan(tmp_path: Path, home: Path) -> None:
    write(tmp_path / "a" / "1" / "d.md", agent_md("d"))
    write(tmp_path / "a" / "2" / "d.md", agent_md("d"))
    registry = only_dirs(tmp_path / "a", home=home)
    with pytest.warns(AgentFileWarning, match="declared by both"):
        registry.get("d")
    registry.get("d")  # no second warning for the same files
    registry.refresh()
    with pytest.warns(AgentFileWarning, match="declared by both"):
        registry.get("d")


def test_lookups_within_the_interval_make_no_system_calls(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What keeps `get` cheap (its speed is measured in benchmarks, not here): within the
    # interval a known name is a dictionary lookup, without stat or getcwd.
    clock = Clock()
    registry = only_dirs(CORPUS, home=home, check_interval_s=0.5, clock=clock)
    spec = registry.get("eval-judge")
    checked_at = clock.now
    calls: list[str] = []
    real_stat, real_getcwd = os.stat, os.getcwd

    def counting_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        calls.append(f"stat {path}")
        return real_stat(path, *args, **kwargs)

    def counting_getcwd() -> str:
        calls.append("getcwd")
        return real_getcwd()

    monkeypatch.setattr(os, "stat", counting_stat)
    monkeypatch.setattr(os, "getcwd", counting_getcwd)
    for _ in range(1000):
        clock.advance(0.0004)  # 0.4 s in all
        assert registry.get("eval-judge") is spec
        assert registry.get("comprehensive-review-code-reviewer").name.endswith("reviewer")
    assert calls == []
    clock.now = checked_at + 0.5
    assert registry.get("eval-judge") is spec  # the interval is up: one check of everything
    assert calls.count("getcwd") == 1
    assert len(calls) > len(AGENT_FILES)
    calls.clear()
    assert registry.get("eval-judge") is spec
    assert calls == []


@pytest.mark.parametrize("advance", [0.0, 1.0], ids=["within", "after"])
def test_get_neither_parses_nor_walks_when_nothing_changed(
    home: Path, monkeypatch: pytest.MonkeyPatch, advance: float
) -> None:
    # Within the interval a lookup stats nothing; after it, it stats the files and directories
    # the index depends on, and still never reads, parses or walks the directories.
    clock = Clock()
    registry = only_dirs(CORPUS, home=home, check_interval_s=0.5, clock=clock)
    spec = registry.get("eval-judge")
    assert spec.source is not None
    stats: list[str] = []
    reads: list[Path] = []
    walks: list[Path] = []
    real_stamp, real_read, real_walk = _agentscan.stamp, _agentfile.read_agent_text, _agentscan.walk

    def counting_stamp(path: str) -> tuple[int, int, int]:
        stats.append(path)
        return real_stamp(path)

    def counting_read(path: Path) -> str:
        reads.append(path)
        return real_read(path)

    def counting_walk(root: Path, stamps: dict[str, tuple[int, int, int]]) -> list[str]:
        walks.append(root)
        return real_walk(root, stamps)

    monkeypatch.setattr(_agentscan, "stamp", counting_stamp)
    monkeypatch.setattr(_agentfile, "read_agent_text", counting_read)
    monkeypatch.setattr(_agentscan, "walk", counting_walk)
    n = 50
    for _ in range(n):
        clock.advance(advance)
        assert registry.get("eval-judge") is spec
    assert reads == [] and walks == []
    if advance:
        assert stats.count(str(spec.source)) == n  # each get re-checked every stamp once
        assert len(set(stats)) > len(AGENT_FILES)
    else:
        assert stats == []


# -- collection API ----------------------------------------------------------------------------


def test_register_names_len_iter_contains(tmp_path: Path, home: Path) -> None:
    write(tmp_path / "a" / "f.md", agent_md("from-file"))
    registry = only_dirs(tmp_path / "a", home=home)
    registry.register(AgentSpec(name="in-code", description="made here", system_prompt="Hi"))
    assert registry.names() == ["from-file", "in-code"]
    assert len(registry) == 2
    assert [s.name for s in registry] == ["from-file", "in-code"]
    assert "in-code" in registry and "from-file" in registry
    assert "nope" not in registry and "../x" not in registry and 3 not in registry
    with pytest.raises(TypeError):
        registry.register("in-code")  # type: ignore[arg-type]


def test_to_dataframe(tmp_path: Path, home: Path) -> None:
    write(tmp_path / "a" / "f.md", agent_md("from-file", model="haiku", description="Files"))
    registry = only_dirs(tmp_path / "a", home=home)
    registry.register(AgentSpec(name="in-code", description="made here", system_prompt="Hi"))
    df = registry.to_dataframe()
    assert list(df.columns) == ["name", "description", "model", "source"]
    assert df["name"].tolist() == ["from-file", "in-code"]
    assert df["description"].tolist() == ["Files", "made here"]
    assert df.loc[0, "model"] == "haiku"
    assert df.loc[0, "source"] == str(tmp_path / "a" / "f.md")
    assert df[["model", "source"]].iloc[1].isna().all()  # None, shown as missing by pandas


def test_list_agents_uses_the_config(
    tmp_path: Path, project: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(home))
    write(tmp_path / "cfg" / "s.md", agent_md("sql-helper", model="opus"))
    df = list_agents(Config.load(env={}, agents_dirs=[str(tmp_path / "cfg")]))
    assert list(df.columns) == ["name", "description", "model", "source"]
    assert set(df["name"]) == {"sql-helper", *BUILTIN_NAMES}
    assert df.set_index("name").loc["sql-helper", "model"] == "opus"


# -- shipped agents ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_agents(name: str, home: Path, tmp_path: Path) -> None:
    registry = AgentRegistry(home=home, cwd=tmp_path)
    spec = registry.get(name)
    assert spec.source is not None and spec.source.parent == registry.search_path[-1]
    assert spec.source.name == f"{name}.md"
    assert spec.model in ("sonnet", "inherit")
    assert len(spec.description) > 40
    assert 10 <= len(spec.system_prompt.splitlines()) <= 25
    assert spec.system_prompt.startswith("You are")


def test_builtins_are_exactly_the_four(home: Path, tmp_path: Path) -> None:
    assert AgentRegistry(home=home, cwd=tmp_path).names() == BUILTIN_NAMES


@pytest.mark.parametrize(
    ("name", "model", "extra"),
    [
        ("sql-expert", "sonnet", {"temperature": 0.2, "max_tokens": 2048}),
        ("security-auditor", "opus", {"temperature": 0.0, "tools": ("Read", "Grep", "Glob")}),
        ("summarizer", "haiku", {"max_tokens": 600, "cache": True}),
    ],
)
def test_example_agents(name: str, model: str, extra: dict[str, object]) -> None:
    spec = AgentSpec.from_file(EXAMPLES / f"{name}.md")
    assert (spec.name, spec.model) == (name, model)
    for key, value in extra.items():
        assert getattr(spec, key) == value
    assert spec.system_prompt.startswith("You ")


def test_an_empty_model_in_an_agent_file_is_refused(tmp_path: Path) -> None:
    from agentnb.agents import AgentSpec
    from agentnb.errors import AgentFileError

    with pytest.raises(AgentFileError, match="'model' must be a model id or alias"):
        AgentSpec.from_markdown("---\nname: blank\nmodel: ''\n---\nYou help.")
    assert AgentSpec.from_markdown("---\nname: fine\n---\nYou help.").model is None
