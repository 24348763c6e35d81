"""Structured answers (`schema=`), the cached `prefix` and `sample`: options, simulator, pipeline.

Covers `agentnb.schema`, `agentnb.orchestrator.structured`, `agentnb.backends.sim_structured` and
the request fields they add, on the simulator and on the real SDK over the simulator's transport.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import httpx2
import pandas as pd
import pydantic
import pytest

from agentnb import AgentRegistry, AgentResult, AsyncAgentOrchestrator, Config
from agentnb.backends import (
    AnthropicBackend,
    Backend,
    BackendRequest,
    BackendResponse,
    Message,
    SimulatedBackend,
)
from agentnb.backends.sim_http import AGENT_HEADER, SimulatorTransport
from agentnb.backends.sim_structured import broken, fill
from agentnb.errors import OptionError, SchemaError
from agentnb.options import CallOptions
from agentnb.orchestrator.structured import REPAIR
from agentnb.schema import TOOL_NAME, AnswerSchema

MODEL = "claude-sonnet-5-5"
REVIEW: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "verdict": {"enum": ["keep", "fix", "drop"]},
        "summary": {"type": "string", "maxLength": 80},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        "confidence": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "details": {
            "type": "object",
            "properties": {"lines": {"type": "integer"}, "ok": {"type": "boolean"}},
            "required": ["lines", "ok"],
        },
    },
    "required": ["score", "verdict", "summary"],
}


class Review(pydantic.BaseModel):
    score: int = pydantic.Field(ge=1, le=5)
    verdict: Literal["keep", "fix", "drop"]
    summary: str


@dataclasses.dataclass
class Row:
    name: str
    count: int


class Spy(SimulatedBackend):
    """A simulator that keeps every request it was sent."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(latency_s=0.0, jitter=0.0, **kwargs)
        self.requests: list[BackendRequest] = []

    async def create(self, request: BackendRequest) -> BackendResponse:
        self.requests.append(request)
        return await super().create(request)


class Recording(SimulatorTransport):
    """The simulator's transport, keeping each request's JSON body."""

    def __init__(self, backend: SimulatedBackend) -> None:
        super().__init__(backend)
        self.bodies: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        self.bodies.append(json.loads(request.content))
        return await super().handle_async_request(request)


def orchestrator(
    backend: Backend, tmp_path: Path | None = None, **settings: Any
) -> AsyncAgentOrchestrator:
    cfg = Config.load(
        env={},
        backend="simulated",
        cache_enabled=tmp_path is not None,
        cache_dir=tmp_path or Path("unused"),
        progress=False,
        **settings,
    )
    return AsyncAgentOrchestrator(
        cfg, backend=backend, agents=AgentRegistry(include_default_dirs=False)
    )


@pytest.fixture
def spy() -> Spy:
    return Spy()


@pytest.fixture
async def orch(spy: Spy) -> AsyncIterator[AsyncAgentOrchestrator]:
    o = orchestrator(spy)
    yield o
    await o.aclose()


@pytest.fixture
async def cached(spy: Spy, tmp_path: Path) -> AsyncIterator[AsyncAgentOrchestrator]:
    o = orchestrator(spy, tmp_path / "cache")
    yield o
    await o.aclose()


# -- the schema option ------------------------------------------------------------------------
def test_a_schema_from_a_dict_a_pydantic_model_or_a_dataclass() -> None:
    from_dict = AnswerSchema.of(REVIEW)
    assert from_dict.json == REVIEW and from_dict.json is not REVIEW  # a private copy
    assert list(from_dict.json["properties"]) == list(REVIEW["properties"])  # order kept
    reordered = dict(reversed(list(REVIEW.items())))
    assert AnswerSchema.of(reordered) == from_dict and hash(AnswerSchema.of(reordered)) == hash(
        from_dict
    )
    model = AnswerSchema.of(Review)
    assert model.json["type"] == "object" and model.json["required"] == [
        "score",
        "verdict",
        "summary",
    ]
    assert model.source is Review and model.title == "Review"
    dc = AnswerSchema.of(Row)
    assert dc.json["properties"]["count"]["type"] == "integer" and dc.source is Row
    opts = CallOptions.build({"schema": Review})
    assert isinstance(opts.schema, AnswerSchema) and opts.schema == model
    assert CallOptions(schema=model).schema is model
    assert CallOptions.build({"schema": REVIEW}, source="map").schema == from_dict


def test_a_schema_is_checked_where_the_option_is_built() -> None:
    with pytest.raises(OptionError) as info:
        CallOptions.build({"schema": {"type": "array", "items": {}}}, source="map")
    assert info.value.option == "schema" and "JSON Schema of an object" in str(info.value)
    with pytest.raises(OptionError, match=r"valid JSON Schema \(schema\.properties\.n\.type"):
        CallOptions.build({"schema": {"type": "object", "properties": {"n": {"type": "integr"}}}})
    with pytest.raises(OptionError, match="that JSON can spell"):
        CallOptions.build({"schema": {"type": "object", "examples": [object()]}})
    with pytest.raises(OptionError, match="got the class str"):
        CallOptions.build({"schema": str})


def test_problems_name_the_path_of_the_first_error() -> None:
    schema = AnswerSchema.of(REVIEW)
    good = {"score": 3, "verdict": "keep", "summary": "fine"}
    assert schema.problem(good) is None
    assert (
        schema.problem({**good, "score": 7}) == "answer.score: 7 is greater than the maximum of 5"
    )
    assert schema.problem({"score": 3, "verdict": "keep"}) == (
        "answer: 'summary' is a required property"
    )
    assert schema.problem({**good, "tags": [1]}) == "answer.tags[0]: 1 is not of type 'string'"
    assert schema.problem([1]) == "answer: not a JSON object"
    # A pydantic model is validated by pydantic: its own validators run too.
    assert AnswerSchema.of(Review).problem({**good, "score": 7}) == (
        "answer.score: Input should be less than or equal to 5 (got 7)"
    )


# -- the simulator's structured answers ---------------------------------------------------------
@pytest.mark.parametrize("source", [REVIEW, Review, Row])
def test_simulated_data_follows_the_schema_and_breaks_it_when_told(source: Any) -> None:
    schema = AnswerSchema.of(source)
    for digest in range(200):
        data = fill(schema, ["Quarterly", "revenue", "growth"], digest)
        assert schema.problem(data) is None, (digest, data)
        assert schema.problem(broken(schema, data)) is not None
    assert fill(schema, ["x"], 7) == fill(schema, ["x"], 7)  # deterministic


def test_nested_refs_formats_and_recursion_are_followed() -> None:
    class Node(pydantic.BaseModel):
        name: str
        children: list[Node] = []

    class Event(pydantic.BaseModel):
        when: pydantic.AwareDatetime
        contact: str | None = pydantic.Field(None, json_schema_extra={"format": "email"})
        id: pydantic.UUID4
        tree: Node
        pair: tuple[int, str]
        ratio: float = pydantic.Field(gt=0, lt=1, multiple_of=0.25)

    schema = AnswerSchema.of(Event)
    for digest in range(100):
        data = fill(schema, ["apples"], digest)
        assert schema.problem(data) is None, data
        assert AnswerSchema.of(schema.json).problem(data) is None  # jsonschema agrees


async def test_structured_answers_come_back_as_data(orch: AsyncAgentOrchestrator) -> None:
    result = await orch.execute_agent("code-reviewer", "Review the invoice parser", schema=REVIEW)
    assert result.data is not None and AnswerSchema.of(REVIEW).problem(result.data) is None
    assert json.loads(result.text) == result.data and result.stop_reason == "tool_use"
    assert "invoice" in result.data["summary"] or "parser" in result.data["summary"]
    assert "```json" in result._repr_markdown_()
    assert AgentResult.from_dict(result.to_dict()).data == result.data
    plain = await orch.execute_agent("code-reviewer", "Review the invoice parser")
    assert plain.data is None and plain.stop_reason == "end_turn"


async def test_rows_of_answers_make_columns(orch: AsyncAgentOrchestrator) -> None:
    tasks = [f"Review module {name}" for name in ("billing", "search", "upload", "export")]
    results = await orch.execute_multiple([("code-reviewer", t) for t in tasks], schema=Review)
    frame = pd.DataFrame([r.data for r in results if isinstance(r, AgentResult)])
    assert list(frame.columns) == ["score", "verdict", "summary"] and len(frame) == 4
    assert frame["score"].between(1, 5).all() and set(frame["verdict"]) <= {"keep", "fix", "drop"}
    assert all(Review.model_validate(row) for row in frame.to_dict("records"))


# -- the validation stage ---------------------------------------------------------------------
async def test_an_invalid_answer_gets_one_repair_turn(
    orch: AsyncAgentOrchestrator, spy: Spy
) -> None:
    spy.inject("invalid_output")
    result = await orch.execute_agent("code-reviewer", "Review the date helpers", schema=REVIEW)
    assert result.data is not None and AnswerSchema.of(REVIEW).problem(result.data) is None
    first, second = spy.requests  # exactly two requests
    problem = "answer.score: 7 is greater than the maximum of 5"
    assert second.task == REPAIR.format(tool=TOOL_NAME, problem=problem)
    assert second.history[0] == Message("user", "Review the date helpers")
    assert (
        second.history[1].role == "assistant"
        and json.loads(second.history[1].content)["score"] == 7
    )
    assert second.schema == first.schema and result.attempts == 2
    records = orch.metrics()
    assert len(records) == 1 and records["attempts"].iloc[0] == 2
    # The call paid for both turns.
    one = (await spy.create(first)).usage
    assert result.usage.output_tokens > one.output_tokens


async def test_still_invalid_is_a_schema_error_and_is_never_cached(
    cached: AsyncAgentOrchestrator, spy: Spy
) -> None:
    spy.inject("invalid_output", times=2)
    with pytest.raises(SchemaError) as info:
        await cached.execute_agent("code-reviewer", "Review the retry loop", schema=REVIEW)
    assert info.value.path == "answer.score" and info.value.agent == "code-reviewer"
    assert str(info.value).endswith("answer.score: 7 is greater than the maximum of 5")
    assert spy.call_count == 2
    assert cached.metrics()["error_type"].iloc[0] == "SchemaError"
    again = await cached.execute_agent("code-reviewer", "Review the retry loop", schema=REVIEW)
    assert spy.call_count == 3 and not again.cached  # nothing was stored: asked again
    hit = await cached.execute_agent("code-reviewer", "Review the retry loop", schema=REVIEW)
    assert spy.call_count == 3 and hit.cached and hit.data == again.data
    assert hit.data is not None
    hit.data["score"] = 99  # each reader gets its own fields
    third = await cached.execute_agent("code-reviewer", "Review the retry loop", schema=REVIEW)
    assert third.data == again.data


async def test_a_pydantic_schema_error_names_the_field(
    orch: AsyncAgentOrchestrator, spy: Spy
) -> None:
    spy.inject("invalid_output", times=2)
    with pytest.raises(SchemaError, match=r"answer\.score: Input should be less than or equal"):
        await orch.execute_agent("writer", "Rate this haiku", schema=Review)


async def test_the_invalid_share_setting(tmp_path: Path) -> None:
    always = SimulatedBackend.from_config(
        Config.load(env={}, sim_invalid_rate=1.0, sim_latency_s=0, state_dir=tmp_path)
    )
    async with orchestrator(always) as o:
        with pytest.raises(SchemaError):
            await o.execute_agent("writer", "Rate this", schema=Review)
    some = SimulatedBackend(latency_s=0, invalid_rate=0.5)
    async with orchestrator(some) as o:
        tasks = [("writer", f"Rate poem number {i}") for i in range(40)]
        results = await o.execute_multiple(tasks, schema=Review, return_exceptions=True)
    repaired = [r for r in results if isinstance(r, AgentResult) and r.attempts == 2]
    failed = [r for r in results if isinstance(r, SchemaError)]
    assert repaired and failed and len(repaired) + len(failed) < 40
    assert all(isinstance(r, (AgentResult, SchemaError)) for r in results)
    with pytest.raises(ValueError, match="invalid_rate"):
        SimulatedBackend(invalid_rate=2)


async def test_a_streamed_structured_answer_arrives_whole(orch: AsyncAgentOrchestrator) -> None:
    stream = orch.stream_agent("writer", "Rate the sonnet", schema=Review)
    chunks = [chunk async for chunk in stream]
    assert stream.result is not None and stream.result.data is not None
    assert chunks == [stream.result.text] and json.loads(chunks[0]) == stream.result.data


# -- over the real SDK ------------------------------------------------------------------------
async def test_the_sdk_path_sends_a_forced_tool_and_returns_its_input() -> None:
    sim = SimulatedBackend(latency_s=0, jitter=0)
    transport = Recording(sim)
    sdk = AnthropicBackend(api_key="sk-test", base_url="http://sim", transport=transport)
    async with orchestrator(sdk) as o:
        result = await o.execute_agent("code-reviewer", "Review the cache layer", schema=REVIEW)
        sim.inject("invalid_output")
        repaired = await o.execute_agent("code-reviewer", "Review the quota layer", schema=Review)
    body = transport.bodies[0]
    assert body["tools"] == [
        {"name": TOOL_NAME, "description": body["tools"][0]["description"], "input_schema": REVIEW}
    ]
    assert body["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    direct = await sim.create(
        BackendRequest(
            model=result.model,
            task="Review the cache layer",
            agent="code-reviewer",
            system=o.agents.get("code-reviewer").system_prompt,
            max_tokens=body["max_tokens"],
            schema=AnswerSchema.of(REVIEW),
        )
    )
    assert result.data == direct.data and result.text == direct.text
    assert result.stop_reason == "tool_use" and result.backend == "anthropic"
    assert repaired.attempts == 2 and Review.model_validate(repaired.data)
    fix = transport.bodies[-1]["messages"]
    assert [m["role"] for m in fix] == ["user", "assistant", "user"]
    assert "answer.score: Input should be less than or equal to 5" in fix[-1]["content"]


async def test_the_sdk_stream_carries_the_tool_input() -> None:
    sim = SimulatedBackend(latency_s=0, jitter=0)
    sdk = AnthropicBackend(api_key="sk-test", base_url="http://sim", transport=Recording(sim))
    request = BackendRequest(model=MODEL, task="Rate it", schema=AnswerSchema.of(Review))
    items = [item async for item in sdk.stream(request)]
    await sdk.aclose()
    final = items[-1]
    assert isinstance(final, BackendResponse) and final.stop_reason == "tool_use"
    assert final.data == (await sim.create(request)).data


# -- the cached prefix ------------------------------------------------------------------------
async def test_a_prefix_is_written_to_the_prompt_cache_once_then_read() -> None:
    sim = SimulatedBackend(latency_s=0, jitter=0)
    prefix = "Summarise in one line, for a busy reader, in plain words: "
    tokens = (len(prefix) + 3) // 4

    def row(task: str, caching: bool = True) -> BackendRequest:
        return BackendRequest(model=MODEL, task=task, prefix=prefix, prompt_caching=caching)

    first, second = [(await sim.create(row(t))).usage for t in ("Paris", "Berlin, in winter")]
    assert (first.cache_write_tokens, first.cache_read_tokens) == (tokens, 0)
    assert (second.cache_write_tokens, second.cache_read_tokens) == (0, tokens)
    assert second.input_tokens == (len("Berlin, in winter") + 3) // 4  # the row's own part
    assert await sim.count_tokens(row("Berlin, in winter")) == second.input_tokens + tokens
    off = (await sim.create(row("Rome", caching=False))).usage
    assert off.cache_read_tokens == off.cache_write_tokens == 0
    assert off.input_tokens == (len(prefix) + len("Rome") + 3) // 4
    # With a system prompt, a new prefix reads the system part and writes its own.
    system = "You summarise." * 20
    with_system = [
        (await sim.create(row(t)._replace(system=system, prefix=p))).usage
        for t, p in (("a", prefix), ("b", prefix), ("c", "Another prefix: "))
    ]
    sys_tokens = (len(system) + 3) // 4
    assert with_system[0].cache_write_tokens == sys_tokens + tokens
    assert with_system[1].cache_read_tokens == sys_tokens + tokens
    assert (with_system[2].cache_read_tokens, with_system[2].cache_write_tokens) == (
        sys_tokens,
        (len("Another prefix: ") + 3) // 4,
    )


async def test_a_prefix_is_its_own_block_over_the_sdk_and_in_the_key(
    orch: AsyncAgentOrchestrator,
) -> None:
    prefix = "Summarise in one line: "
    keys = {orch.prepare("writer", "Paris", prefix=p).key for p in ("", prefix, "Translate: ")}
    assert len(keys) == 3
    assert orch.prepare("writer", "Paris", prefix=prefix).request.prefix == prefix
    sim = SimulatedBackend(latency_s=0, jitter=0)
    transport = Recording(sim)
    sdk = AnthropicBackend(api_key="sk-test", base_url="http://sim", transport=transport)
    request = BackendRequest(
        model=MODEL, task="Paris", prefix=prefix, prompt_caching=True, agent="writer"
    )
    via_sdk = await sdk.create(request)
    again = await sdk.create(request._replace(task="Berlin"))
    await sdk.aclose()
    assert transport.bodies[0]["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": prefix, "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Paris"},
            ],
        }
    ]
    direct = await SimulatedBackend(latency_s=0).create(request)
    assert via_sdk.text == direct.text and via_sdk.usage == direct.usage
    assert again.usage.cache_read_tokens == (len(prefix) + 3) // 4


# -- samples ----------------------------------------------------------------------------------
async def test_a_sample_is_a_new_answer_and_a_new_key(orch: AsyncAgentOrchestrator) -> None:
    keys = {orch.prepare("writer", "A haiku", sample=s).key for s in (0, 1, 2)}
    assert len(keys) == 3
    assert orch.prepare("writer", "A haiku", sample=0).key == orch.prepare("writer", "A haiku").key
    texts = [(await orch.execute_agent("writer", "A haiku", sample=s)).text for s in (0, 1, 0)]
    assert texts[0] != texts[1] and texts[0] == texts[2]
    data = [
        (await orch.execute_agent("writer", "Rate it", schema=REVIEW, sample=s)).data
        for s in range(4)
    ]
    assert len({json.dumps(d) for d in data}) > 1


async def test_a_sample_is_not_sent_to_the_api() -> None:
    transport = Recording(SimulatedBackend(latency_s=0))
    sdk = AnthropicBackend(api_key="sk-test", base_url="http://sim", transport=transport)
    await sdk.create(BackendRequest(model=MODEL, task="A haiku", sample=3))
    await sdk.aclose()
    assert "sample" not in transport.bodies[0] and AGENT_HEADER
