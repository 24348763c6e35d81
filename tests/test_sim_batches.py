"""Message Batches in the simulator (`sim_batches`, `sim_batch_http`) and in the SDK backend:
the real `anthropic` SDK over the in-process transport and over `python -m agentnb simulate`."""

from __future__ import annotations

import collections
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from test_sim_server import Server

from agentnb.backends import (
    SIMULATED_NOTE,
    AnthropicBackend,
    Backend,
    BackendRequest,
    Message,
    SimulatedBackend,
    sim_batch_http,
    sim_batches,
    simulator_transport,
)
from agentnb.backends.batch import MAX_BATCH_REQUESTS, BatchInfo, BatchRequest, BatchResult
from agentnb.backends.sim_batches import SimBatches
from agentnb.errors import (
    BadRequestError,
    NotFoundError,
    OverloadedError,
    ServerError,
)

MODEL = "claude-sonnet-5-5"
SYSTEM = "You are a careful Python expert. Answer briefly and precisely. " * 4


class Clock:
    """POSIX seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def req(task: str, **kw: Any) -> BackendRequest:
    kw.setdefault("model", MODEL)
    return BackendRequest(task=task, **kw)


def batch(n: int, prefix: str = "r") -> list[BatchRequest]:
    return [BatchRequest(f"{prefix}-{i}", req(f"Sort list number {i} quickly")) for i in range(n)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> SimBatches:
    """A store whose batches take 10 (fake) seconds."""
    return SimBatches(tmp_path / "batches", latency_s=10.0, clock=clock)


@pytest.fixture
def sim(store: SimBatches) -> SimulatedBackend:
    return SimulatedBackend(latency_s=0, jitter=0, batches=store)


@pytest.fixture
async def sdk(sim: SimulatedBackend) -> AsyncIterator[AnthropicBackend]:
    """The SDK backend, its HTTP answered by `sim` (batches included)."""
    backend = AnthropicBackend(
        api_key="sk-test", base_url="http://simulator.invalid", transport=simulator_transport(sim)
    )
    yield backend
    await backend.aclose()


async def results(backend: Backend, batch_id: str) -> dict[str, BatchResult]:
    return {r.custom_id: r async for r in backend.batch_results(batch_id)}


async def test_the_sdk_round_trip_answers_as_create_does(
    sim: SimulatedBackend, sdk: AnthropicBackend, clock: Clock
) -> None:
    assert sim.supports_batches and sdk.supports_batches
    expert = {"agent": "python-expert", "system": SYSTEM, "prompt_caching": True}
    turns = (Message("user", "Hi"), Message("assistant", "Hello"))
    requests = [
        BatchRequest("plain", req("Review parse_config for bugs", agent="code-reviewer")),
        BatchRequest("cached-1", req("Sort a list", **expert)),
        BatchRequest("cached-2", req("Merge two dicts", **expert)),
        BatchRequest("history", req("And now?", history=turns, agent="writer")),
        BatchRequest("stopped", req("Review the cache", stop_sequences=("- ",), max_tokens=50)),
    ]
    created = await sdk.batch_create(requests)
    assert created.status == "in_progress" and created.counts.processing == len(requests)
    assert created.id.startswith("msgbatch_sim_") and created.ended_at is None
    assert created.expires_at == pytest.approx(created.created_at + 86_400)
    with pytest.raises(BadRequestError, match="not ended"):
        await results(sdk, created.id)
    clock.now += 10.0
    ended = await sdk.batch_retrieve(created.id)
    assert ended.ended and ended.counts.succeeded == len(requests)
    assert ended.ended_at == pytest.approx(created.created_at + 10.0)

    got = await results(sdk, created.id)
    fresh = SimulatedBackend(latency_s=0, jitter=0)  # a cold prompt cache, requests in order
    for custom_id, request in requests:
        answer = await fresh.create(request)
        result = got[custom_id]
        assert result.kind == "succeeded" and result.response is not None
        assert result.response.text == answer.text  # the agent's name reached the simulator
        assert result.response.usage == answer.usage
        assert (result.response.stop_reason, result.response.stop_sequence) == (
            answer.stop_reason,
            answer.stop_sequence,
        )
    assert got["cached-2"].response is not None
    assert got["cached-2"].response.usage.cache_read_tokens > 0
    assert got["stopped"].response is not None
    assert got["stopped"].response.stop_reason == "stop_sequence"
    assert sim.call_count == 0  # a batch is no call: it takes nothing from the rate limits
    native = await results(sim, created.id)
    assert {k: r.response.text for k, r in native.items() if r.response} == {
        k: r.response.text for k, r in got.items() if r.response
    }


async def test_counts_move_as_requests_end_and_larger_batches_take_longer(
    sim: SimulatedBackend, store: SimBatches, clock: Clock
) -> None:
    store.error_rate, store.expire_rate = 0.2, 0.1
    info = await sim.batch_create(batch(2500))  # 2.5 x 1,000 requests: 25 s
    seen: list[BatchInfo] = []
    for _ in range(25):
        clock.now += 1.0
        seen.append(await sim.batch_retrieve(info.id))
    assert all(i.counts.total == 2500 for i in seen)
    assert [i.status for i in seen] == ["in_progress"] * 24 + ["ended"]
    processing = [i.counts.processing for i in seen[:-1]]
    assert processing == sorted(processing, reverse=True) and processing[0] > processing[-1]
    assert all(i.counts.expired == 0 for i in seen[:-1])  # expired only once it ends
    final = seen[-1].counts
    assert final.processing == 0 and final.expired > 0 and final.errored > 0
    kinds = collections.Counter(r.kind for r in (await results(sim, info.id)).values())
    assert kinds == {
        "succeeded": final.succeeded,
        "errored": final.errored,
        "expired": final.expired,
    }


async def test_errored_and_expired_shares_are_honoured_and_reproducible(
    tmp_path: Path, sdk: AnthropicBackend, store: SimBatches, clock: Clock
) -> None:
    def fates(seed: int, where: str) -> Any:
        return SimulatedBackend(
            seed=seed,
            batches=SimBatches(tmp_path / where, latency_s=0, error_rate=0.2, expire_rate=0.1),
        )

    async def kinds(backend: SimulatedBackend) -> list[tuple[str, str, str]]:
        info = await backend.batch_create(batch(2000))
        got = await results(backend, info.id)
        return [(k, r.kind, type(r.error).__name__) for k, r in sorted(got.items())]

    first = await kinds(fates(1, "a"))
    assert first == await kinds(fates(1, "b"))  # same seed, fresh store: the same fates
    assert first != await kinds(fates(2, "c"))
    shares = collections.Counter(kind for _, kind, _ in first)
    assert abs(shares["errored"] / 2000 - 0.2) < 0.04
    assert abs(shares["expired"] / 2000 - 0.1) < 0.04
    errors = collections.Counter(name for _, kind, name in first if kind == "errored")
    assert set(errors) == {"OverloadedError", "ServerError", "BadRequestError"}
    assert 0.6 < (errors["OverloadedError"] + errors["ServerError"]) / shares["errored"] < 0.95
    # A follow-up batch retrying the same custom ids draws afresh, as a real retry would.
    again = fates(1, "a")
    assert await kinds(again) != first

    # Over the SDK, an errored request carries the error its type names.
    store.error_rate = 0.5
    info = await sdk.batch_create(batch(40))
    clock.now += 10.0
    errored = [r.error for r in (await results(sdk, info.id)).values() if r.kind == "errored"]
    assert errored and all(e is not None for e in errored)
    for error in errored:
        assert isinstance(error, (OverloadedError, ServerError, BadRequestError))
        assert error.retryable == (not isinstance(error, BadRequestError))


async def test_cancel_lets_the_tick_in_flight_end_and_cancels_the_rest(
    sdk: AnthropicBackend, sim: SimulatedBackend, store: SimBatches, clock: Clock
) -> None:
    store.expire_rate = 0.1
    info = await sdk.batch_create(batch(100))
    clock.now += 3.05  # 30 ticks of 0.1 s done, the 31st in flight
    canceling = await sdk.batch_cancel(info.id)
    assert canceling.status == "canceling"
    assert canceling.cancel_initiated_at == pytest.approx(clock.now)
    assert canceling.counts.canceled == 0 and canceling.counts.processing > 0
    clock.now += 0.06
    ended = await sdk.batch_retrieve(info.id)
    assert ended.ended and ended.ended_at == pytest.approx(info.created_at + 3.1)
    counts = ended.counts
    assert counts.expired == 0 and counts.canceled >= 69 and counts.total == 100
    assert counts.succeeded + counts.canceled == 100
    got = await results(sdk, info.id)
    assert [got[f"r-{i}"].kind for i in range(31, 100)] == ["canceled"] * 69
    assert collections.Counter(r.kind for r in got.values()) == {
        "succeeded": counts.succeeded,
        "canceled": counts.canceled,
    }
    assert await sim.batch_cancel(info.id) == ended  # an ended batch stays as it is


async def test_batches_are_listed_newest_first_in_pages(
    sdk: AnthropicBackend, sim: SimulatedBackend, clock: Clock
) -> None:
    made = []
    for i in range(5):
        made.append((await sdk.batch_create(batch(2, prefix=f"b{i}"))).id)
        clock.now += 1.0
    newest_first = made[::-1]
    assert [b.id for b in await sdk.batch_list(limit=3)] == newest_first[:3]
    assert [b.id for b in await sim.batch_list()] == newest_first
    async with anthropic.AsyncAnthropic(
        api_key="sk-test",
        base_url="http://simulator.invalid",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=simulator_transport(sim)),
    ) as client:
        page = await client.messages.batches.list(limit=2)
        assert [b.id for b in page.data] == newest_first[:2] and page.has_more
        assert [b.id async for b in client.messages.batches.list(limit=2)] == newest_first
        newer = await client.messages.batches.list(before_id=made[0], limit=2)
        assert [b.id for b in newer.data] == newest_first[2:4] and newer.has_more


async def test_custom_ids_are_checked_and_a_refused_batch_leaves_nothing(
    sim: SimulatedBackend, sdk: AnthropicBackend, store: SimBatches
) -> None:
    good = req("Sort a list")
    for backend in (sim, sdk):
        with pytest.raises(BadRequestError, match="'bad id!'"):
            await backend.batch_create([BatchRequest("ok", good), BatchRequest("bad id!", good)])
        with pytest.raises(BadRequestError, match=r"'twice'.*more than once"):
            await backend.batch_create([BatchRequest("twice", good)] * 2)
        with pytest.raises(BadRequestError, match="1 to 100,000"):
            await backend.batch_create([])
    with pytest.raises(BadRequestError, match=r"requests\.1\.params\.max_tokens"):
        await sdk.batch_create([BatchRequest("a", good), BatchRequest("b", req("x", max_tokens=0))])
    assert await sim.batch_list() == [] and list(store.root.iterdir()) == []


async def test_the_apis_size_limits_are_refused(
    sim: SimulatedBackend, sdk: AnthropicBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = BatchRequest("same", req("Sort a list"))
    with pytest.raises(BadRequestError, match="not 100,001"):
        await sim.batch_create([one] * (MAX_BATCH_REQUESTS + 1))  # refused before the ids
    monkeypatch.setattr(sim_batches, "MAX_BATCH_BYTES", 1000)
    with pytest.raises(BadRequestError, match="at most 1,000 bytes"):
        await sim.batch_create(batch(20))
    monkeypatch.setattr(sim_batch_http, "MAX_BATCH_BYTES", 1000)
    with pytest.raises(BadRequestError, match="413"):
        await sdk.batch_create(batch(20))
    assert await sim.batch_list() == []


async def test_unknown_ids_are_404_and_never_a_path(
    sim: SimulatedBackend, sdk: AnthropicBackend
) -> None:
    for backend in (sim, sdk):
        for batch_id in ("msgbatch_sim_" + "0" * 24, "../../etc/passwd", "msgbatch_x"):
            with pytest.raises(NotFoundError):
                await backend.batch_retrieve(batch_id)
            with pytest.raises(NotFoundError):
                await backend.batch_cancel(batch_id)
    transport = simulator_transport(sim)
    async with httpx2.AsyncClient(transport=transport, base_url="http://sim") as http:
        answer = await http.get("/v1/messages/batches/nope/results", headers={"x-api-key": "k"})
    assert answer.status_code == 404
    assert answer.json()["error"]["type"] == "not_found_error"


async def test_another_backend_collects_a_batch_and_reads_it_in_chunks(
    tmp_path: Path, sim: SimulatedBackend, store: SimBatches, clock: Clock
) -> None:
    requests = [BatchRequest(f"c{i}", req(f"Explain item {i} " * 20)) for i in range(3000)]
    info = await sim.batch_create(requests)
    clock.now += 30.0
    other = SimulatedBackend(seed=7, batches=SimBatches(store.root, clock=clock))
    assert (await other.batch_retrieve(info.id)).ended
    chunks = list(other.batches.result_chunks(info.id))
    assert len(chunks) > 2 and sum(map(len, chunks)) == 3000  # never one list of them all
    expected = await SimulatedBackend(latency_s=0).create(requests[-1].request)
    last = chunks[-1][-1]  # the submitter's seed (0) made the answers, not the reader's
    assert last.custom_id == "c2999" and last.response is not None
    assert last.response.text == expected.text
    spent = store.cpu_s
    assert spent > 0 and other.batches.cpu_s > 0  # the simulator's own CPU, to subtract


async def test_the_agents_name_goes_only_to_a_transport_that_asks(
    sim: SimulatedBackend,
) -> None:
    bodies: list[dict[str, Any]] = []

    async def api(request: httpx2.Request) -> httpx2.Response:
        bodies.append(json.loads(request.content))
        assert "x-agentnb-agent" not in request.headers
        return await simulator_transport(sim).handle_async_request(request)

    backend = AnthropicBackend(
        api_key="sk-test", base_url="http://api.invalid", transport=httpx2.MockTransport(api)
    )
    try:
        await backend.batch_create([BatchRequest("a", req("Sort a list", agent="writer"))])
    finally:
        await backend.aclose()
    assert set(bodies[0]["requests"][0]["params"]) == {"model", "max_tokens", "messages"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    cwd = tmp_path_factory.mktemp("simulate-batches")
    state = cwd / "state"
    (cwd / "agentnb.yaml").write_text(f"sim_batch_latency_s: 0.05\nstate_dir: {state}\n")
    running = Server(cwd, "--latency", "0")
    yield running, state
    code, _, err = running.stop(signal.SIGTERM)
    assert code == 0 and err == "", err


async def test_the_simulate_server_runs_a_batch_for_the_sdk(server: tuple[Server, Path]) -> None:
    running, state = server
    tasks = {f"t{i}": f"Review module number {i} for bugs" for i in range(3)}
    with anthropic.Anthropic(api_key="sk-test", base_url=running.url, max_retries=0) as client:
        created = client.messages.batches.create(
            requests=[
                {
                    "custom_id": key,
                    "params": {
                        "model": MODEL,
                        "max_tokens": 300,
                        "messages": [{"role": "user", "content": task}],
                    },
                }
                for key, task in tasks.items()
            ]
        )
        assert created.processing_status == "in_progress" and created.results_url is None
        while (got := client.messages.batches.retrieve(created.id)).processing_status != "ended":
            time.sleep(0.01)
        assert got.request_counts.succeeded == 3
        assert got.results_url == f"{running.url}/v1/messages/batches/{created.id}/results"
        lines = {line.custom_id: line.result for line in client.messages.batches.results(got.id)}
    simulated = SimulatedBackend(latency_s=0)
    for key, task in tasks.items():
        result = lines[key]
        assert result.type == "succeeded"
        text = result.message.content[0]
        assert text.type == "text" and text.text.startswith(SIMULATED_NOTE)
        assert text.text == (await simulated.create(req(task, max_tokens=300))).text
    # This process collects the batch the server made, from the files it keeps.
    here = SimulatedBackend(batches=SimBatches(state / "simulator" / "batches"))
    assert (await here.batch_retrieve(created.id)).counts.succeeded == 3
    assert {r.custom_id async for r in here.batch_results(created.id)} == set(tasks)
