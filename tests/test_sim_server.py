"""`python -m agentnb simulate`: the simulator as a real HTTP server on loopback, driven by the
real `anthropic` SDK (sync, streaming, count_tokens), its quota shared by every client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam

from agentnb.__main__ import main
from agentnb.backends import SIMULATED_NOTE, AnthropicBackend, BackendRequest, BackendResponse
from agentnb.errors import RateLimitError
from agentnb.quota import parse_rate_limits

SONNET = "claude-sonnet-5-5"
HAIKU = "claude-haiku-5-5"
# Haiku and Opus: one request per 10 s (a burst of one), to see one client's use from another.
LIMITS = {
    "haiku": {"rpm": 6},
    "opus": {"rpm": 6},
    "*": {"rpm": 100_000, "itpm": 10_000_000, "otpm": 1_000_000},
}
OPUS = "claude-opus-5-5"
MESSAGES: list[MessageParam] = [{"role": "user", "content": "Review parse_config for bugs"}]


class Server:
    """`python -m agentnb simulate --port 0 ...` in a subprocess, and the URL it printed."""

    def __init__(self, cwd: Path, *flags: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTNB_", "ANTHROPIC_"))}
        env["AGENTNB_SIM_JITTER"] = "0"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentnb", "simulate", "--port", "0", *flags],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        timer = threading.Timer(60, self.proc.kill)  # a server that never says it is ready
        timer.start()
        try:
            line = self.proc.stdout.readline() if self.proc.stdout else ""
        finally:
            timer.cancel()
        prefix = "agentnb simulator listening on "
        assert line.startswith(prefix), (line, self.stop(signal.SIGTERM))
        self.url = line[len(prefix) :].strip()

    def stop(self, sig: signal.Signals) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        tmp_path_factory.mktemp("simulate"), "--latency", "0.01", "--limits", json.dumps(LIMITS)
    )
    yield running
    code, _, err = running.stop(signal.SIGTERM)
    assert code == 0 and err == "", err


@pytest.fixture
def client(server: Server) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="sk-test", base_url=server.url, max_retries=0) as sdk:
        yield sdk


def test_the_sdk_gets_answers_and_every_rate_limit_header(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(model=SONNET, max_tokens=200, messages=MESSAGES)
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text.startswith(SIMULATED_NOTE)
    headers = raw.headers
    assert headers["request-id"].startswith("req_sim_") and raw.request_id == headers["request-id"]
    for kind in ("requests", "input-tokens", "output-tokens", "tokens"):
        for part in ("limit", "remaining", "reset"):
            assert f"anthropic-ratelimit-{kind}-{part}" in headers
    assert headers["anthropic-ratelimit-requests-limit"] == "100000"
    limits = parse_rate_limits(headers)
    assert limits is not None and limits.output_tokens is not None
    assert limits.output_tokens.limit == 1_000_000


def test_the_sdk_streams_with_the_headers_first(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=SONNET, max_tokens=200, messages=MESSAGES) as stream:
        assert stream.response.headers["anthropic-ratelimit-requests-limit"] == "100000"
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 2 and "".join(pieces) == final.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 1


def test_count_tokens_over_http_is_what_create_reports(client: anthropic.Anthropic) -> None:
    system = "You are terse. " * 40
    counted = client.messages.count_tokens(model=SONNET, system=system, messages=MESSAGES)
    created = client.messages.create(model=SONNET, system=system, max_tokens=50, messages=MESSAGES)
    usage = created.usage
    total = (
        usage.input_tokens
        + (usage.cache_read_input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
    )
    assert counted.input_tokens == total


def test_two_clients_share_one_quota(server: Server) -> None:
    first = anthropic.Anthropic(api_key="sk-a", base_url=server.url, max_retries=0)
    second = anthropic.Anthropic(api_key="sk-b", base_url=server.url, max_retries=0)
    with first, second:
        raw = first.messages.with_raw_response.create(model=HAIKU, max_tokens=50, messages=MESSAGES)
        assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0"
        with pytest.raises(anthropic.RateLimitError) as info:
            second.messages.create(model=HAIKU, max_tokens=50, messages=MESSAGES)
    response = info.value.response
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "6 requests per minute" in info.value.message
    assert 1 <= int(response.headers["retry-after"]) <= 10
    assert response.headers["anthropic-ratelimit-requests-limit"] == "6"
    assert response.headers["request-id"].startswith("req_sim_")


async def test_the_sdk_backend_reads_the_servers_limits(server: Server) -> None:
    backend = AnthropicBackend(api_key="sk-test", base_url=server.url)
    try:
        request = BackendRequest(model=SONNET, task="Explain retries", agent="writer")
        created = await backend.create(request)
        assert created.limits is not None and created.limits.requests is not None
        assert created.limits.requests.limit == 100_000
        items = [item async for item in backend.stream(request._replace(task="Stream it"))]
        final = items[-1]
        assert isinstance(final, BackendResponse) and final.limits is not None
        assert await backend.count_tokens(request) == created.usage.input_tokens
        with pytest.raises(RateLimitError) as info:  # opus's quota: one per 10 s
            for i in range(2):
                await backend.create(request._replace(model=OPUS, task=f"opus {i}"))
        assert info.value.retry_after is not None and info.value.limits is not None
    finally:
        await backend.aclose()


def test_errors_are_typed_as_the_apis(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=SONNET, max_tokens=0, messages=MESSAGES)
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.get("/v1/nowhere", cast_to=object)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert missing.value.response.headers["request-id"]


def test_keep_alive_and_a_malformed_request(server: Server) -> None:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({"model": SONNET, "max_tokens": 20, "messages": MESSAGES}).encode()
    request = (
        f"POST /v1/messages HTTP/1.1\r\nHost: sim\r\nx-api-key: k\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request + request)  # two requests, one connection
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < 2 or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400 ")


def test_the_stats_endpoint_counts_what_the_quota_accepted_and_refused(tmp_path: Path) -> None:
    limits = {"haiku": {"rpm": 6}, "*": {"rpm": 6000, "itpm": 600_000, "burst_s": 0.5}}
    running = Server(tmp_path, "--latency", "0", "--limits", json.dumps(limits))
    try:
        with anthropic.Anthropic(api_key="sk-test", base_url=running.url, max_retries=0) as sdk:
            for _ in range(2):
                sdk.messages.create(model=SONNET, max_tokens=20, messages=MESSAGES)
            sdk.messages.create(model=HAIKU, max_tokens=20, messages=MESSAGES)
            with pytest.raises(anthropic.RateLimitError):  # haiku: one request per 10 s
                sdk.messages.create(model=HAIKU, max_tokens=20, messages=MESSAGES)
        with urllib.request.urlopen(f"{running.url}/agentnb/stats", timeout=10) as response:
            assert response.headers["content-type"] == "application/json"
            counted = json.load(response)
    finally:
        running.stop(signal.SIGTERM)
    starts = counted.pop("accepted_starts")
    sonnet, haiku = counted.pop("limits").values()
    assert counted == {
        "calls": 4,
        "logged": 4,
        "accepted": 3,
        "rate_limited": 1,
        "errors": 0,
        "in_flight": 0,
    }
    assert len(starts) == 3 and starts[0] == 0.0 and starts == sorted(starts)
    assert sonnet == {"rpm": 6000, "itpm": 600_000, "otpm": None, "burst_s": 0.5}
    # Haiku's bucket holds one request (at least one, whatever the rate): 10 s of 6 a minute.
    assert haiku["rpm"] == 6 and haiku["burst_s"] == pytest.approx(10.0, abs=0.1)


def test_sigint_stops_the_server_cleanly(tmp_path: Path) -> None:
    running = Server(tmp_path, "--latency", "0")
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    code, out, err = running.stop(signal.SIGINT)
    assert (code, out, err) == (0, "", "")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=5).close()


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--port", "70000"], "--port"),
        (["--port", "x"], "--port"),
        (["--port", "0", "--host", "8.8.8.8"], "loopback"),
        (["--port", "0", "--latency", "soon"], "--latency"),
        (["--port", "0", "--latency", "-1"], "sim_latency_s"),
        (["--port", "0", "--limits", "{bad"], "--limits"),
        (["--port", "0", "--limits", '{"*": {"rpx": 1}}'], "rpx"),
    ],
)
def test_bad_flags_are_one_line_errors(
    flags: list[str], words: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.chdir(Path(__file__).parent)  # no agentnb.yaml of anyone's
    assert main(["simulate", *flags]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("agentnb: error:")
    assert words in lines[0]
