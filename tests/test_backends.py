"""Backends: the simulator, its HTTP transport, and the SDK backend driven through it (offline)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import inspect
import json
import math
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from agentnb.backends import (
    BACKENDS,
    SIMULATED_NOTE,
    AnthropicBackend,
    Backend,
    BackendRequest,
    BackendResponse,
    Message,
    SimulatedBackend,
    make_backend,
    parse_retry_after,
    register_backend,
    simulator_transport,
)
from agentnb.backends import anthropic as anthropic_backend
from agentnb.config import Config, Secret
from agentnb.errors import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    BadRequestError,
    ConfigError,
    OverloadedError,
    RateLimitError,
    RetryableError,
    ServerError,
    error_for_status,
)

MODEL = "claude-sonnet-5-5"
SYSTEM = "You are a careful Python expert. Answer briefly and precisely. " * 4


def req(task: str = "Review the function parse_config for bugs", **kw: Any) -> BackendRequest:
    kw.setdefault("model", MODEL)
    kw.setdefault("agent", "python-expert")
    return BackendRequest(task=task, **kw)


async def run(backend: Backend, request: BackendRequest, mode: str = "create") -> BackendResponse:
    """One call through `create` or `stream` (checking the stream's shape on the way)."""
    if mode == "create":
        return await backend.create(request)
    items = [item async for item in backend.stream(request)]
    assert isinstance(items[-1], BackendResponse)
    assert all(isinstance(i, str) for i in items[:-1])
    return items[-1]


class FakeClock:
    """A settable monotonic clock for the rpm window and prompt-cache TTL."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder(httpx2.AsyncBaseTransport):
    """Wraps a transport, keeping each request's JSON body (and optionally editing headers)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, drop_header: str | None = None) -> None:
        self.inner = inner
        self.drop_header = drop_header
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[httpx2.Headers] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        self.bodies.append(json.loads(request.content))
        self.headers.append(request.headers.copy())
        if self.drop_header:
            del request.headers[self.drop_header]
        return await self.inner.handle_async_request(request)


# -- the contract, for both backends -------------------------------------------------------


async def test_create_returns_text_model_stop_reason_usage(any_backend: Backend) -> None:
    response = await any_backend.create(req())
    assert response.text.startswith(SIMULATED_NOTE)
    assert response.model == MODEL
    assert response.stop_reason == "end_turn"
    assert response.usage.input_tokens >= 1 and response.usage.output_tokens >= 1
    assert response.usage.output_tokens == math.ceil(len(response.text) / 4)
    assert response.backend == any_backend.kind
    assert response.request_id and response.request_id.startswith("req_sim_")


async def test_answers_are_deterministic_and_say_they_are_simulated(any_backend: Backend) -> None:
    first = await any_backend.create(req())
    again = await any_backend.create(req())
    other = await any_backend.create(req("Explain asyncio cancellation"))
    assert first.text == again.text
    assert other.text != first.text
    for response in (first, other):
        assert "Simulated answer" in response.text and "no API call was made" in response.text
    assert "asyncio" in other.text and "cancellation" in other.text  # refers to the task


async def test_stream_yields_deltas_then_one_final_response(any_backend: Backend) -> None:
    items = [item async for item in any_backend.stream(req())]
    deltas, finals = items[:-1], [i for i in items if isinstance(i, BackendResponse)]
    assert len(finals) == 1 and isinstance(items[-1], BackendResponse)
    assert len(deltas) >= 2 and all(isinstance(d, str) and d for d in deltas)
    assert "".join(str(d) for d in deltas) == items[-1].text
    assert items[-1].text == (await any_backend.create(req())).text
    assert items[-1].usage.output_tokens >= 1 and items[-1].stop_reason == "end_turn"


@pytest.mark.parametrize("mode", ["create", "stream"])
async def test_stop_sequences_end_the_answer_at_the_first_one(
    any_backend: Backend, sim_backend: SimulatedBackend, mode: str
) -> None:
    full = (await sim_backend.create(req())).text
    bullet = full.index("\n- ")
    stops = ("never written", "\n- ", full[bullet - 3 : bullet])  # the last one comes first
    assert full.find(stops[2], len(SIMULATED_NOTE)) == bullet - 3
    response = await run(any_backend, req(stop_sequences=stops), mode)
    assert response.text == full[: bullet - 3] and response.text.startswith(SIMULATED_NOTE)
    assert response.stop_reason == "stop_sequence" and response.stop_sequence == stops[2]
    assert response.usage.output_tokens == math.ceil(len(response.text) / 4)
    unused = await run(any_backend, req(stop_sequences=("never written",)), mode)
    assert unused.text == full and unused.stop_reason == "end_turn"
    assert unused.stop_sequence is None


FAULTS: list[tuple[str, type[BackendError], int | None, bool]] = [
    ("rate_limit", RateLimitError, 429, True),
    ("server_error", ServerError, 500, True),
    ("overloaded", OverloadedError, 529, True),
    ("connection", BackendConnectionError, None, True),
    ("bad_request", BadRequestError, 400, False),
    ("authentication", AuthenticationError, 401, False),
]


@pytest.mark.parametrize("mode", ["create", "stream"])
@pytest.mark.parametrize(("kind", "cls", "status", "retryable"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_each_fault_kind_raises_its_agentnb_error(
    any_backend: Backend,
    sim_backend: SimulatedBackend,
    mode: str,
    kind: str,
    cls: type[BackendError],
    status: int | None,
    retryable: bool,
) -> None:
    sim_backend.inject(kind, retry_after=2.5)
    seen: list[object] = []
    with pytest.raises(cls) as info:
        if mode == "create":
            await any_backend.create(req())
        else:
            async for item in any_backend.stream(req()):
                seen.append(item)
    error = info.value
    assert type(error) is cls and type(error).__module__ == "agentnb.errors"
    assert seen == []  # faults raise before any delta
    assert error.retryable is retryable
    assert error.status_code == status
    if kind == "rate_limit":
        assert isinstance(error, RateLimitError)
    if retryable and status is not None:  # the server's hint, on 429 as on 529 and 500
        assert isinstance(error, RetryableError) and error.retry_after == 2.5
    if status is not None:
        assert error.request_id and error.request_id.startswith("req_sim_")
    assert sim_backend.calls[-1].error == kind and sim_backend.in_flight == 0
    assert (await run(any_backend, req(), mode)).text  # the fault was used up


async def test_timeout_fault_hangs_until_the_caller_gives_up(
    any_backend: Backend, sim_backend: SimulatedBackend
) -> None:
    sim_backend.inject("timeout")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await any_backend.create(req())
    assert sim_backend.in_flight == 0 and sim_backend.calls[-1].error == "timeout"


async def test_timeout_fault_with_short_hang_is_a_backend_timeout(
    any_backend: Backend, sim_backend: SimulatedBackend
) -> None:
    sim_backend.hang_s = 0.01
    sim_backend.inject("timeout")
    with pytest.raises(BackendTimeoutError):
        await any_backend.create(req())


async def test_prompt_caching_writes_then_reads(any_backend: Backend) -> None:
    cached = req(system=SYSTEM, prompt_caching=True)
    system_tokens = math.ceil(len(SYSTEM) / 4)
    task_tokens = math.ceil(len(cached.task) / 4)
    first = (await any_backend.create(cached)).usage
    second = (await any_backend.create(cached)).usage
    assert (first.cache_write_tokens, first.cache_read_tokens) == (system_tokens, 0)
    assert (second.cache_write_tokens, second.cache_read_tokens) == (0, system_tokens)
    assert first.input_tokens == second.input_tokens == task_tokens
    plain = (await any_backend.create(req(system=SYSTEM))).usage
    assert (plain.cache_write_tokens, plain.cache_read_tokens) == (0, 0)
    assert plain.input_tokens == math.ceil((len(SYSTEM) + len(cached.task)) / 4)


async def test_concurrent_calls_are_all_in_flight_together(
    any_backend: Backend, sim_backend: SimulatedBackend
) -> None:
    sim_backend.latency_s = 0.3  # long enough for all 20 to start before the first ends
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(any_backend.create(req(f"task number {i}"))) for i in range(20)]
    assert sim_backend.peak_in_flight == 20 and sim_backend.in_flight == 0
    assert len({t.result().text for t in tasks}) == 20
    assert all(c.ok for c in sim_backend.calls)


async def test_abandoned_stream_ends_its_call(
    any_backend: Backend, sim_backend: SimulatedBackend
) -> None:
    stream = any_backend.stream(req())
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        async for _ in stream:
            break
    for _ in range(10):  # the HTTP path closes its response a few loop turns later
        if sim_backend.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert sim_backend.in_flight == 0
    assert sim_backend.calls[-1].ok is False and sim_backend.calls[-1].error == "cancelled"


# -- the HTTP transport --------------------------------------------------------------------


@pytest.fixture
async def http(sim_backend: SimulatedBackend) -> Any:
    async with httpx2.AsyncClient(
        transport=simulator_transport(sim_backend), base_url="http://sim"
    ) as client:
        yield client


BODY = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "hi there"}]}
AUTH = {"x-api-key": "sk-test"}


async def test_transport_answers_with_the_api_json_shape(http: httpx2.AsyncClient) -> None:
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    body = {
        **BODY,
        "max_tokens": 1024,  # room for the whole answer, so stop_reason is end_turn
        "system": system,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    r = await http.post("/v1/messages", json=body, headers=AUTH)
    assert r.status_code == 200 and r.headers["request-id"].startswith("req_sim_")
    data = r.json()
    assert (
        data["id"].startswith("msg_") and data["type"] == "message" and data["role"] == "assistant"
    )
    assert (
        data["model"] == MODEL
        and data["stop_reason"] == "end_turn"
        and data["stop_sequence"] is None
    )
    assert data["content"][0]["type"] == "text" and data["content"][0]["text"].startswith(
        SIMULATED_NOTE
    )
    usage = data["usage"]
    assert usage["cache_creation_input_tokens"] == math.ceil(len("Be brief.") / 4)
    assert usage["cache_read_input_tokens"] == 0 and usage["input_tokens"] >= 1


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        json.dumps([1, 2]).encode(),
        json.dumps({k: v for k, v in BODY.items() if k != "model"}).encode(),
        json.dumps({k: v for k, v in BODY.items() if k != "max_tokens"}).encode(),
        json.dumps({k: v for k, v in BODY.items() if k != "messages"}).encode(),
        json.dumps({**BODY, "messages": []}).encode(),
        json.dumps({**BODY, "messages": [{"role": "robot", "content": "x"}]}).encode(),
        json.dumps(
            {**BODY, "messages": [{"role": "user", "content": [{"type": "image"}]}]}
        ).encode(),
        json.dumps({**BODY, "temperature": 3}).encode(),
        json.dumps({**BODY, "max_tokens": 0}).encode(),
        json.dumps({**BODY, "stop_sequences": "END"}).encode(),
        json.dumps({**BODY, "stop_sequences": [""]}).encode(),
        json.dumps({**BODY, "stop_sequences": ["END", 7]}).encode(),
    ],
    ids=[
        "not-json",
        "not-object",
        "no-model",
        "no-max-tokens",
        "no-messages",
        "empty-messages",
        "bad-role",
        "image-block",
        "temperature",
        "zero-max-tokens",
        "stop-sequences-not-a-list",
        "empty-stop-sequence",
        "stop-sequence-not-a-string",
    ],
)
async def test_transport_rejects_malformed_bodies_with_400(
    http: httpx2.AsyncClient, sim_backend: SimulatedBackend, body: bytes
) -> None:
    r = await http.post(
        "/v1/messages", content=body, headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    assert sim_backend.call_count == 0


async def test_transport_echoes_the_stop_sequence_in_json_and_sse(
    http: httpx2.AsyncClient,
) -> None:
    body = {**BODY, "max_tokens": 1024, "stop_sequences": ["\n- "]}
    data = (await http.post("/v1/messages", json=body, headers=AUTH)).json()
    assert (data["stop_reason"], data["stop_sequence"]) == ("stop_sequence", "\n- ")
    assert "\n- " not in data["content"][0]["text"]
    async with http.stream(
        "POST", "/v1/messages", json={**body, "stream": True}, headers=AUTH
    ) as r:
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    delta = next(json.loads(x[6:]) for x in lines if '"message_delta"' in x)["delta"]
    assert delta == {"stop_reason": "stop_sequence", "stop_sequence": "\n- "}


async def test_transport_refuses_sampling_parameters_from_api_version_2026_10_21(
    http: httpx2.AsyncClient,
) -> None:
    new = {**AUTH, "anthropic-version": "2026-10-21"}
    for name, value in [("temperature", 1.0), ("top_p", 0.9), ("top_k", 5)]:
        r = await http.post("/v1/messages", json={**BODY, name: value}, headers=new)
        assert (
            r.status_code == 400
            and r.json()["error"]["message"] == f"{name}: Extra inputs are not permitted"
        )
    old = {**AUTH, "anthropic-version": "2023-06-01"}
    assert (
        await http.post("/v1/messages", json={**BODY, "temperature": 0.5}, headers=old)
    ).status_code == 200


async def test_transport_requires_credentials(http: httpx2.AsyncClient) -> None:
    r = await http.post("/v1/messages", json=BODY)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    ok = await http.post("/v1/messages", json=BODY, headers={"authorization": "Bearer sk-x"})
    assert ok.status_code == 200
    assert (await http.get("/v1/messages", headers=AUTH)).status_code == 404


@pytest.mark.parametrize(
    ("kind", "status", "error_type"),
    [
        ("rate_limit", 429, "rate_limit_error"),
        ("overloaded", 529, "overloaded_error"),
        ("server_error", 500, "api_error"),
        ("authentication", 401, "authentication_error"),
    ],
)
async def test_transport_sends_errors_as_the_api_does(
    http: httpx2.AsyncClient, sim_backend: SimulatedBackend, kind: str, status: int, error_type: str
) -> None:
    sim_backend.inject(kind, retry_after=3)
    r = await http.post("/v1/messages", json=BODY, headers=AUTH)
    assert r.status_code == status
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == error_type
    assert r.headers["request-id"].startswith("req_sim_")
    assert r.headers.get("retry-after") == (None if kind == "authentication" else "3")


async def test_transport_connection_fault_is_a_connect_error(
    http: httpx2.AsyncClient, sim_backend: SimulatedBackend
) -> None:
    sim_backend.inject("connection")
    with pytest.raises(httpx2.ConnectError):
        await http.post("/v1/messages", json=BODY, headers=AUTH)


async def test_transport_streams_sse_events_in_api_order(http: httpx2.AsyncClient) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    async with http.stream(
        "POST", "/v1/messages", json={**BODY, "stream": True}, headers=AUTH
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        name = ""
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    names = [n for n, _ in events]
    deltas = names.count("content_block_delta")
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert deltas >= 2 and all(data["type"] == n for n, data in events)
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"


async def test_sse_deltas_arrive_before_the_call_has_finished(
    sdk_backend: AnthropicBackend, sim_backend: SimulatedBackend
) -> None:
    sim_backend.latency_s = 0.2
    seen: list[tuple[bool, int]] = []  # (call finished?, in flight) when each delta arrived
    async for item in sdk_backend.stream(req()):
        if isinstance(item, str):
            seen.append((sim_backend.calls[-1].ended is not None, sim_backend.in_flight))
    assert len(seen) >= 2
    assert seen[0] == (False, 1)  # a buffered body would only arrive after the call ended
    assert sim_backend.calls[-1].ok is True and sim_backend.calls[-1].streamed


async def test_sdk_malformed_request_is_a_bad_request(sdk_backend: AnthropicBackend) -> None:
    with pytest.raises(BadRequestError) as info:
        await sdk_backend.create(req(max_tokens=0))
    assert info.value.status_code == 400 and not info.value.retryable
    assert "max_tokens" in str(info.value)


async def test_sdk_missing_api_key_header_is_an_authentication_error(
    sim_backend: SimulatedBackend,
) -> None:
    strip = Recorder(simulator_transport(sim_backend), drop_header="authorization")
    backend = AnthropicBackend(api_key="sk-test", base_url="http://sim", transport=strip)
    with pytest.raises(AuthenticationError) as info:
        await backend.create(req())
    await backend.aclose()
    assert info.value.status_code == 401 and not info.value.retryable
    assert sim_backend.call_count == 0


# -- the simulator -------------------------------------------------------------------------


async def test_rpm_limit_uses_a_sliding_minute() -> None:
    clock = FakeClock()
    sim = SimulatedBackend(latency_s=0, rpm_limit=3, clock=clock)
    for step in (0.0, 10.0, 5.0):
        clock.now += step
        await sim.create(req())
    with pytest.raises(RateLimitError) as info:
        await sim.create(req())
    assert info.value.retry_after == pytest.approx(45.0)  # first slot frees at t0 + 60
    clock.now += 45.0
    await sim.create(req())
    with pytest.raises(RateLimitError) as info:
        await sim.create(req())
    assert info.value.retry_after == pytest.approx(10.0)
    assert [c.ok for c in sim.calls] == [True, True, True, False, True, False]


async def test_fault_rate_is_deterministic_per_seed() -> None:
    kinds = ("rate_limit", "server_error", "overloaded", "connection")

    async def pattern(seed: int) -> list[str]:
        sim = SimulatedBackend(latency_s=0, seed=seed, fault_rate=0.3, fault_kinds=kinds)
        out = []
        for i in range(60):
            try:
                await sim.create(req(f"task {i % 7}"))
                out.append("ok")
            except BackendError as exc:
                out.append(type(exc).__name__)
        return out

    first = await pattern(1)
    assert first == await pattern(1)
    assert first != await pattern(2)
    assert 5 <= sum(p != "ok" for p in first) <= 35
    assert len(set(first)) >= 3
    never = SimulatedBackend(latency_s=0, fault_rate=0.0)
    always = SimulatedBackend(latency_s=0, fault_rate=1.0, fault_kinds=["overloaded"])
    assert (await never.create(req())).text
    with pytest.raises(OverloadedError):
        await always.create(req())


async def test_latency_per_agent_function_and_tokens() -> None:
    sim = SimulatedBackend(
        latency_s=0.5,
        jitter=0.0,
        latencies={"slow": 0.05, "fast": 0.0},
        latency_fn=lambda r: 0.02 if "quick" in r.task else 0.03,
    )
    delays = {}
    for agent, task in [("slow", "x"), ("fast", "x"), ("other", "quick one"), ("other", "long")]:
        call = await sim.begin(req(task, agent=agent))
        delays[agent, task] = call.delay
        await call.wait()
    assert delays == {
        ("slow", "x"): 0.05,
        ("fast", "x"): 0.0,
        ("other", "quick one"): 0.02,
        ("other", "long"): 0.03,
    }
    per_token = SimulatedBackend(latency_s=0.01, latency_per_token_s=0.001, jitter=0.0)
    call = await per_token.begin(req())
    assert call.delay == pytest.approx(0.01 + 0.001 * call.response.usage.output_tokens)
    await call.wait()
    started = time.monotonic()
    await SimulatedBackend(latencies={"slow": 0.05}, jitter=0.0).create(req(agent="slow"))
    assert time.monotonic() - started >= 0.04  # it really sleeps


async def test_jitter_is_seeded_per_request() -> None:
    sim = SimulatedBackend(latency_s=0.002, jitter=0.5)
    delays = []
    for i in [*range(20), 0]:
        call = await sim.begin(req(f"task {i}"))
        delays.append(call.delay)
        await call.wait()
    assert delays[-1] == delays[0]
    assert all(0.001 <= d <= 0.003 for d in delays) and len(set(delays)) > 10


async def test_inject_can_target_one_agent() -> None:
    sim = SimulatedBackend(latency_s=0)
    sim.inject("server_error", times=2, agent="writer")
    assert (await sim.create(req(agent="python-expert"))).text
    for _ in range(2):
        with pytest.raises(ServerError):
            await sim.create(req(agent="writer"))
    assert (await sim.create(req(agent="writer"))).text
    assert [c.error for c in sim.calls] == [None, "server_error", "server_error", None]
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim.inject("meltdown")


async def test_text_depends_on_seed_agent_and_model_not_on_order() -> None:
    requests = [req(f"Explain topic {i}", agent=a) for i in range(6) for a in ("writer", "coder")]
    sim_a, sim_b = SimulatedBackend(latency_s=0.001), SimulatedBackend(latency_s=0)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(sim_a.create(r)) for r in requests]
    sequential = [(await sim_b.create(r)).text for r in reversed(requests)]
    assert [t.result().text for t in tasks] == sequential[::-1]
    base = (await sim_b.create(req())).text
    assert (await SimulatedBackend(latency_s=0, seed=9).create(req())).text != base
    assert (await sim_b.create(req(agent="writer"))).text != base
    assert (await sim_b.create(req(model="claude-haiku-5-5"))).text != base


async def test_answers_look_like_the_agent() -> None:
    sim = SimulatedBackend(latency_s=0)
    code = (await sim.create(req("Speed up load_records", agent="python-expert"))).text
    prose = (await sim.create(req("Summarise the quarterly report", agent="writer"))).text
    assert "```python" in code and "## " in code and "load_records" in code
    assert "```" not in prose and "## Draft" in prose and "- " in prose
    assert all(100 < len(t) < 1000 for t in (code, prose))


async def test_max_tokens_truncates_but_keeps_the_note() -> None:
    sim = SimulatedBackend(latency_s=0)
    response = await sim.create(req(max_tokens=30))
    assert response.stop_reason == "max_tokens" and len(response.text) <= 120
    assert response.text.startswith(SIMULATED_NOTE)


async def test_call_log_and_reset() -> None:
    clock = FakeClock()
    sim = SimulatedBackend(latency_s=0, clock=clock)
    await sim.create(req("first", history=(Message("user", "a"), Message("assistant", "b"))))
    record = sim.calls[0]
    assert (record.agent, record.model, record.task, record.ok) == (
        "python-expert",
        MODEL,
        "first",
        True,
    )
    assert record.started == record.ended == 1000.0 and sim.call_count == 1
    sim.reset_log()
    assert sim.calls == [] and sim.call_count == 0 and sim.peak_in_flight == 0


async def test_zero_latency_calls_are_cheap() -> None:
    sim = SimulatedBackend(latency_s=0)
    request = req()
    started = time.perf_counter()
    for _ in range(2000):
        await sim.create(request)
    assert (time.perf_counter() - started) / 2000 < 500e-6  # ~5 µs expected; 100x headroom


def test_simulator_refuses_unknown_settings() -> None:
    with pytest.raises(ValueError, match="unknown fault kinds"):
        SimulatedBackend(fault_kinds=["meltdown"])
    with pytest.raises(ValueError, match="fault_rate"):
        SimulatedBackend(fault_rate=2.0)


# -- AnthropicBackend ----------------------------------------------------------------------

KEY = "sk-ant-api03-SECRET-DO-NOT-SHOW"


@pytest.mark.parametrize("key", [KEY, Secret(KEY)], ids=["str", "Secret"])
def test_repr_and_str_never_show_the_key(key: str | Secret) -> None:
    backend = AnthropicBackend(api_key=key, base_url="http://example.invalid")
    for text in (repr(backend), str(backend), f"{backend!r} {backend}"):
        assert KEY not in text and "SECRET" not in text and "api_key=<set>" in text
    assert backend.label == "claude" and backend.kind == "anthropic"


async def test_client_is_created_lazily_and_closed(sim_backend: SimulatedBackend) -> None:
    backend = AnthropicBackend(api_key="sk-test", transport=simulator_transport(sim_backend))
    assert not backend.client_created
    await backend.create(req())
    assert backend.client_created
    await backend.aclose()
    assert not backend.client_created


async def test_request_body_follows_caching_and_drops_temperature(
    sim_backend: SimulatedBackend, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(simulator_transport(sim_backend))
    on = AnthropicBackend(api_key="sk-test", base_url="http://sim", transport=recorder)
    off = AnthropicBackend(
        api_key="sk-test", base_url="http://sim", transport=recorder, prompt_caching=False
    )
    await on.create(req(system="S", prompt_caching=True, temperature=0.5))
    await on.create(req(system="S", prompt_caching=False, temperature=0.7))
    await off.create(req(system="S", prompt_caching=True))
    await on.create(req())
    await on.create(req(stop_sequences=("END", "\n\n")))
    await on.aclose()
    await off.aclose()
    cached, plain, switched_off, bare, stopped = recorder.bodies
    assert cached["system"] == [
        {"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}
    ]
    assert all("temperature" not in body for body in recorder.bodies)  # the API refuses it
    assert [r.message for r in caplog.records].count(
        "temperature=0.5 ignored: the Messages API no longer accepts it"
    ) == 1  # said once
    assert plain["system"] == "S" and switched_off["system"] == "S"
    assert "system" not in bare and bare["messages"] == [{"role": "user", "content": req().task}]
    assert "stop_sequences" not in bare and stopped["stop_sequences"] == ["END", "\n\n"]


async def test_sdk_path_runs_the_same_simulation_as_a_direct_call(
    sdk_backend: AnthropicBackend, sim_backend: SimulatedBackend
) -> None:
    history = (Message("user", "first question"), Message("assistant", "first answer"))
    request = req("follow-up", agent="rédacteur", history=history, system="Be brief.")
    via_sdk = await sdk_backend.create(request)
    direct = await sim_backend.create(request)
    assert via_sdk.text == direct.text and via_sdk.usage.input_tokens == direct.usage.input_tokens
    assert [c.agent for c in sim_backend.calls] == ["rédacteur", "rédacteur"]
    sim_backend.inject("overloaded", agent="writer")
    assert (await sdk_backend.create(req(agent="coder"))).text
    with pytest.raises(OverloadedError):
        await sdk_backend.create(req(agent="writer"))


async def test_agent_header_goes_to_the_simulator_only(sim_backend: SimulatedBackend) -> None:
    recorder = Recorder(simulator_transport(sim_backend))  # not a SimulatorTransport itself
    backend = AnthropicBackend(api_key="sk-test", base_url="http://sim", transport=recorder)
    await backend.create(req(agent="writer"))
    await backend.aclose()
    assert "x-agentnb-agent" not in recorder.headers[0]
    assert sim_backend.calls[-1].agent == ""


class SelfDescribing(Recorder):
    """A transport that names its own answers and wants the agent's name in a header."""

    agentnb_identity = "team-proxy"
    agentnb_agent_header = "x-caller"


async def test_a_transport_can_name_its_answers_and_ask_for_the_agent(
    sim_backend: SimulatedBackend,
) -> None:
    transport = SelfDescribing(simulator_transport(sim_backend))
    direct = AnthropicBackend(api_key="sk-test", base_url="http://sim", transport=transport)
    client = httpx2.AsyncClient(transport=transport)
    wrapped = AnthropicBackend(api_key="sk-test", base_url="http://sim", http_client=client)
    assert direct.cache_identity == wrapped.cache_identity == "team-proxy"
    for backend in (direct, wrapped):
        await backend.create(req(agent="rédacteur"))
        await backend.create(req(agent=""))
        await backend.aclose()
    await client.aclose()
    named = [h.get("x-caller") for h in transport.headers]
    assert named == [urllib.parse.quote("rédacteur", safe=""), None] * 2
    assert all("x-agentnb-agent" not in h for h in transport.headers)


def test_the_sdk_backend_does_not_know_the_simulator() -> None:
    source = inspect.getsource(anthropic_backend)
    assert "sim_http" not in source and "SimulatorTransport" not in source


async def test_the_first_client_is_built_off_the_event_loop(
    sim_backend: SimulatedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the SDK is imported and the client built, other coroutines keep running."""
    build = AnthropicBackend._build_client
    ticked = threading.Event()
    builds: list[tuple[bool, bool]] = []  # (ran off the loop's thread?, saw the ticks?)
    loop_thread = threading.get_ident()

    def slow_build(self: AnthropicBackend) -> Any:
        # Blocks until the ticker below has ticked: it could not, were this on the loop.
        builds.append((threading.get_ident() != loop_thread, ticked.wait(timeout=5)))
        return build(self)

    monkeypatch.setattr(AnthropicBackend, "_build_client", slow_build)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(5):
            await asyncio.sleep(0.01)
            ticks += 1
        ticked.set()

    backend = AnthropicBackend(api_key="sk-test", transport=simulator_transport(sim_backend))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(ticker())
        calls = [tg.create_task(backend.create(req(f"task {i}"))) for i in range(5)]
    await backend.aclose()
    assert builds == [(True, True)]  # one client for the five concurrent first calls
    assert ticks == 5 and all(c.result().text for c in calls)


async def test_huge_max_tokens_falls_back_to_streaming(
    sdk_backend: AnthropicBackend, sim_backend: SimulatedBackend
) -> None:
    response = await sdk_backend.create(req(max_tokens=64_000))
    assert response.text.startswith(SIMULATED_NOTE) and sim_backend.calls[-1].streamed


def echo_key_transport(status: int, headers: dict[str, str] | None = None) -> httpx2.MockTransport:
    def handler(request: httpx2.Request) -> httpx2.Response:
        key = request.headers["authorization"].removeprefix("Bearer ")
        body = {"type": "error", "error": {"type": "x", "message": f"bad key {key}"}}
        return httpx2.Response(
            status, json=body, headers={"request-id": "req_echo", **(headers or {})}
        )

    return httpx2.MockTransport(handler)


async def test_errors_never_carry_the_key() -> None:
    backend = AnthropicBackend(
        api_key=KEY, base_url="http://sim", transport=echo_key_transport(403)
    )
    with pytest.raises(BackendError) as info:
        await backend.create(req())
    await backend.aclose()
    assert KEY not in str(info.value) and "***" in str(info.value)
    assert info.value.status_code == 403 and info.value.request_id == "req_echo"
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({}, None),
    ],
)
async def test_sdk_429_carries_retry_after(headers: dict[str, str], expected: float | None) -> None:
    transport = echo_key_transport(429, headers)
    backend = AnthropicBackend(api_key="sk-test", base_url="http://sim", transport=transport)
    with pytest.raises(RateLimitError) as info:
        await backend.create(req())
    await backend.aclose()
    assert info.value.retry_after == expected and info.value.retryable


def test_parse_retry_after_forms() -> None:
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after({"retry-after": future}) or 0) <= 31
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "nan"}) is None


#: The first SSE event of a streamed answer, for servers written by hand in these tests.
MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": MODEL,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    },
}


async def test_httpx_errors_mid_stream_are_translated() -> None:
    async def broken() -> Any:
        yield f"event: message_start\ndata: {json.dumps(MESSAGE_START)}\n\n".encode()
        raise httpx2.RemoteProtocolError("peer closed connection")

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=broken())

    backend = AnthropicBackend(
        api_key="sk-test", base_url="http://sim", transport=httpx2.MockTransport(handler)
    )
    with pytest.raises(BackendConnectionError):
        async for _ in backend.stream(req()):
            pass
    await backend.aclose()


async def test_missing_credentials_are_an_authentication_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for var in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_PROFILE",
        "ANTHROPIC_IDENTITY_TOKEN",
        "ANTHROPIC_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))
    never = httpx2.MockTransport(lambda r: httpx2.Response(500))
    backend = AnthropicBackend(base_url="https://sim.invalid", transport=never)
    assert "from environment" in repr(backend)
    with pytest.raises(AuthenticationError, match="ANTHROPIC_API_KEY"):
        await backend.create(req())
    # The SDK's own credential errors (here: a profile lookup refusing plain http) translate too.
    with pytest.raises(AuthenticationError):
        await AnthropicBackend(base_url="http://sim.invalid", transport=never).create(req())


def test_make_backend_follows_the_config() -> None:
    sim = make_backend(Config.load(backend="simulated", sim_latency_s=0.5, sim_seed=3, env={}))
    assert isinstance(sim, SimulatedBackend) and (sim.latency_s, sim.seed) == (0.5, 3)
    auto_off = make_backend(Config.load(env={}))
    assert isinstance(auto_off, SimulatedBackend)
    auto_on = make_backend(
        Config.load(env={"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": "http://x"})
    )
    assert isinstance(auto_on, AnthropicBackend) and auto_on.base_url == "http://x"
    assert KEY not in repr(auto_on) and not auto_on.client_created
    forced = make_backend(Config.load(backend="anthropic", prompt_caching=False, env={}))
    assert isinstance(forced, AnthropicBackend) and forced.prompt_caching is False


def test_make_backend_looks_the_name_up_in_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(BACKENDS) >= {"anthropic", "simulated"}
    made: list[Config] = []

    def quiet(cfg: Config) -> Backend:
        made.append(cfg)
        return SimulatedBackend(latency_s=0)

    config = Config.load(backend="simulated", env={})
    monkeypatch.setitem(BACKENDS, "simulated", quiet)
    backend = make_backend(config)
    assert made == [config] and isinstance(backend, SimulatedBackend) and backend.latency_s == 0
    monkeypatch.delitem(BACKENDS, "simulated")
    with pytest.raises(ConfigError, match="unknown backend 'simulated'; registered: anthropic"):
        make_backend(config)


def test_register_backend_adds_one_and_refuses_silent_replacement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("agentnb.backends.registry.BACKENDS", dict(BACKENDS))
    from agentnb.backends import registry

    register_backend("quiet", lambda cfg: SimulatedBackend(latency_s=0))
    assert "quiet" in registry.BACKENDS and "quiet" not in BACKENDS
    with pytest.raises(ValueError, match="already registered"):
        register_backend("quiet", SimulatedBackend.from_config)
    register_backend("quiet", SimulatedBackend.from_config, replace=True)
    assert registry.BACKENDS["quiet"] == SimulatedBackend.from_config
    with pytest.raises(ValueError, match="needs a name"):
        register_backend("", SimulatedBackend.from_config)


def test_backend_classes_expose_their_kind() -> None:
    kinds: dict[str, Callable[[], Backend]] = {
        "simulated": SimulatedBackend,
        "anthropic": AnthropicBackend,
    }
    for kind, make in kinds.items():
        assert make().kind == kind


def test_cache_identity_tells_the_real_api_from_other_servers_and_the_simulator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    sim = SimulatedBackend()
    assert sim.cache_identity == "simulated"
    assert AnthropicBackend().cache_identity == "anthropic"
    assert AnthropicBackend(base_url="https://api.anthropic.com/").cache_identity == "anthropic"
    gateway = AnthropicBackend(base_url="https://gateway.example/v1/")
    assert gateway.cache_identity == "anthropic@https://gateway.example/v1"
    over_sim = AnthropicBackend(transport=simulator_transport(sim))
    assert over_sim.cache_identity == "simulated-http"
    client = httpx2.AsyncClient(transport=simulator_transport(sim))
    assert AnthropicBackend(http_client=client).cache_identity == "simulated-http"
    # The SDK reads ANTHROPIC_BASE_URL when no base_url is given.
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://localhost:8080")
    assert AnthropicBackend().cache_identity == "anthropic@http://localhost:8080"
    identities = {b.cache_identity for b in (sim, AnthropicBackend(), gateway, over_sim)}
    assert len(identities) == 4


def sse_error_transport(error_type: str, headers: dict[str, str] | None = None) -> Any:
    """A server that starts a 200 stream, sends one delta, then an `error` event."""
    events = [
        ("message_start", MESSAGE_START),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
        ),
        ("error", {"type": "error", "error": {"type": error_type, "message": "Overloaded"}}),
    ]
    body = b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
    )

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200,
            headers={
                "content-type": "text/event-stream",
                "request-id": "req_mid",
                **(headers or {}),
            },
            content=body,
        )

    return httpx2.MockTransport(handler)


@pytest.mark.parametrize(
    ("error_type", "cls", "status"),
    [
        ("overloaded_error", OverloadedError, 529),
        ("rate_limit_error", RateLimitError, 429),
        ("api_error", ServerError, 500),
        ("some_new_error", ServerError, 500),
        ("invalid_request_error", BadRequestError, 400),
    ],
)
async def test_an_error_event_mid_stream_is_mapped_by_its_type(
    error_type: str, cls: type[BackendError], status: int
) -> None:
    transport = sse_error_transport(error_type, {"retry-after": "4"})
    backend = AnthropicBackend(api_key="sk-test", base_url="http://sim", transport=transport)
    seen: list[object] = []
    with pytest.raises(BackendError) as info:
        async for item in backend.stream(req()):
            seen.append(item)
    await backend.aclose()
    error = info.value
    assert seen == ["Hi"]
    assert type(error) is cls and error.status_code == status
    assert error.retryable is (status != 400) and error.request_id == "req_mid"
    assert "mid-stream" in str(error) and error_type in str(error)
    if isinstance(error, RetryableError):
        assert error.retry_after == 4.0


@pytest.mark.parametrize("status", [429, 500, 503, 529, 408])
def test_retry_after_is_kept_for_every_retryable_status(status: int) -> None:
    error = error_for_status(status, "busy", retry_after=7.0)
    assert isinstance(error, RetryableError) and error.retry_after == 7.0
    assert error.status_code == status
    assert RetryableError("x").retry_after is None
    assert RateLimitError("x").status_code == 429
    refused = error_for_status(400, "bad", retry_after=7.0)
    assert not refused.retryable and not hasattr(refused, "retry_after")


async def test_sdk_honours_retry_after_on_an_overload(sim_backend: SimulatedBackend) -> None:
    sim_backend.inject("overloaded", retry_after=3)
    backend = AnthropicBackend(
        api_key="sk-test", base_url="http://sim", transport=simulator_transport(sim_backend)
    )
    with pytest.raises(OverloadedError) as info:
        await backend.create(req())
    await backend.aclose()
    assert info.value.retry_after == 3.0
