"""The offline simulator as a real HTTP/1.1 server on loopback: `python -m agentnb simulate`.

One process holds one `SimulatedBackend`, so its quotas (`sim_limits`, `sim_spend_limit_usd`)
are shared by every client that connects: kernels, scripts and worker processes pointed at
`ANTHROPIC_BASE_URL=http://127.0.0.1:PORT` pace themselves against one simulated organisation,
as they would against the API. Each request is answered by `sim_http.handle_messages_request`,
so the server speaks exactly what the in-process transport does: JSON and SSE, the API's error
bodies, `request-id`, rate-limit and `retry-after` headers, `count_tokens`.

It is HTTP/1.1 over asyncio streams with `h11` (keep-alive, chunked SSE, a task per
connection), on uvloop where it is installed. A `connection` fault resets the connection; a
`timeout` fault holds the answer back until the client gives up. It listens on loopback only,
unless told otherwise (`allow_remote`): it has no authentication worth the name.

`GET /agentnb/stats` answers what the simulator counted (`stats`), so that a benchmark or a test
can check from outside that its clients kept to the quota: `calls` (every call since it started,
refused ones included), then over the calls still in its log (`logged`, the last `log_limit`):
`accepted` (answered), `rate_limited` (429s: the quota's, or an injected `rate_limit` fault's),
`errors` (every other failure: faults, the spend limit, cancelled), `in_flight`, and
`accepted_starts`, when each accepted call started, in seconds after the first one (monotonic
clock, oldest first). `limits` gives, for each model class called so far, its limits per minute
(`rpm`, `itpm`, `otpm`, as the rate-limit headers state them) and `burst_s`, the seconds' worth
its buckets hold (read from the headers' `remaining` and `reset`: short by at most one unit's
worth of its finest-grained kind, as `remaining` is rounded down).

Example:
    python -m agentnb simulate --port 8765 --limits '{"*": {"rpm": 600}}'
    ANTHROPIC_BASE_URL=http://127.0.0.1:8765 ANTHROPIC_API_KEY=sk-test python my_script.py
    curl http://127.0.0.1:8765/agentnb/stats
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import ipaddress
import signal
from collections.abc import Callable
from typing import Any

import h11
import httpx2

from ..errors import ConfigError
from ..quota import RateLimits, model_class
from .batch import MAX_BATCH_BYTES
from .sim_http import error_response, handle_messages_request
from .simulated import SimulatedBackend

__all__ = ["STATS_PATH", "check_host", "run", "serve", "stats"]

#: Where the server answers its counts (`stats`).
STATS_PATH = "/agentnb/stats"

_MAX_BODY = 32 * 1024 * 1024  # the Messages API's own request size limit
_BATCHES_TARGET = b"/v1/messages/batches"  # whose bodies may reach MAX_BATCH_BYTES
_READ_SIZE = 64 * 1024


def check_host(host: str, *, allow_remote: bool = False) -> str:
    """`host` to listen on, or `ConfigError` for a non-loopback one without `allow_remote`.

    `localhost` becomes `127.0.0.1`, so that port 0 gives one port (not one per address).

    Example:
        >>> check_host("localhost"), check_host("::1")
        ('127.0.0.1', '::1')
    """
    if host == "localhost":
        return "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not (loopback or allow_remote):
        raise ConfigError(
            f"simulate: {host!r} is not a loopback address; the simulator accepts any API key, "
            "so it listens on 127.0.0.1 or ::1 unless --allow-remote is given"
        )
    return host


def run(backend: SimulatedBackend, host: str, port: int, *, ready: Callable[[str], None]) -> None:
    """Serve `backend` on `host:port` until SIGINT or SIGTERM, on a loop of its own (uvloop
    where installed); `ready(url)` is called once it listens (with the real port for port 0)."""
    from ..loop import default_loop_kind

    factory = None
    if default_loop_kind() == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C cancels instead
                loop.add_signal_handler(sig, stop.set)
        try:
            await serve(backend, host, port, ready=ready, stop=stop)
        finally:
            for sig in signals:
                with contextlib.suppress(NotImplementedError):
                    loop.remove_signal_handler(sig)

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


async def serve(
    backend: SimulatedBackend,
    host: str,
    port: int,
    *,
    ready: Callable[[str], None],
    stop: asyncio.Event,
) -> None:
    """Serve `backend` on `host:port` until `stop` is set; then close every connection."""
    connections: set[asyncio.Task[None]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await _Connection(backend, reader, writer).serve()
        except (ConnectionError, h11.ProtocolError):
            pass  # the client went away or spoke nonsense: nothing to answer
        finally:
            connections.discard(task)
            writer.close()

    try:
        listener = await asyncio.start_server(connected, host, port, backlog=1024)
    except OSError as exc:
        raise ConfigError(
            f"simulate: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    try:
        bound = listener.sockets[0].getsockname()[1]
        ready(f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}")
        await stop.wait()
    finally:
        listener.close()
        # The connection tasks are the server's, not ours to await one by one: cancel, then wait.
        pending = set(connections)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        await listener.wait_closed()
        await backend.aclose()


class _Connection:
    """One client's connection: requests read and answered in turn (HTTP/1.1 keep-alive)."""

    def __init__(
        self, backend: SimulatedBackend, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.backend = backend
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER)

    async def serve(self) -> None:
        conn = self.h11
        while True:
            try:
                request = await self._next_event()
                if not isinstance(request, h11.Request):
                    return  # closed between requests
                body = bytearray()
                limit = MAX_BATCH_BYTES if request.target.startswith(_BATCHES_TARGET) else _MAX_BODY
                while not isinstance(event := await self._next_event(), h11.EndOfMessage):
                    if not isinstance(event, h11.Data):
                        return
                    body += event.data
                    if len(body) > limit:
                        size = f"{limit // 2**20} MB"
                        await self._send(_refusal(413, f"the request body is over {size}"))
                        return
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(_refusal(400, f"malformed HTTP request: {exc}"))
                return
            if not await self._answer(request, bytes(body)):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # h11 says the connection must close (Connection: close, HTTP/1.0...)
            conn.start_next_cycle()

    async def _next_event(self) -> object:
        conn = self.h11
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await self.reader.read(_READ_SIZE))

    async def _answer(self, event: h11.Request, body: bytes) -> bool:
        """Answer one request; False when the connection is to be dropped."""
        target = event.target.decode("ascii", "replace")
        try:
            request = httpx2.Request(
                event.method.decode("ascii", "replace"),
                f"http://simulator{target}" if target.startswith("/") else target,
                headers=list(event.headers),
                content=body,
            )
        except (httpx2.InvalidURL, ValueError):
            await self._send(error_response(400, f"bad request target {target!r}"))
            return True
        if request.method == "GET" and request.url.path == STATS_PATH:
            await self._send(httpx2.Response(200, json=stats(self.backend)))
            return True
        try:
            response = await handle_messages_request(self.backend, request)
        except (httpx2.ConnectError, httpx2.TimeoutException):
            # A `connection` fault, or a `timeout` one whose client has stopped waiting.
            self.writer.transport.abort()
            return False
        await self._send(response, head=event.method == b"HEAD")
        return True

    async def _send(self, response: httpx2.Response, *, head: bool = False) -> None:
        conn, writer = self.h11, self.writer
        try:
            reason = http.HTTPStatus(response.status_code).phrase
        except ValueError:
            reason = "Overloaded" if response.status_code == 529 else ""
        writer.write(
            conn.send(
                h11.Response(
                    status_code=response.status_code,
                    headers=list(response.headers.raw),
                    reason=reason,
                )
            )
        )
        try:
            if head:
                pass
            elif response.is_stream_consumed:
                if response.content:
                    writer.write(conn.send(h11.Data(data=response.content)))
            else:  # an SSE stream: each event goes out as the simulation produces it
                async for chunk in response.aiter_raw():
                    writer.write(conn.send(h11.Data(data=chunk)))
                    await writer.drain()
        finally:
            await response.aclose()
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()


def stats(backend: SimulatedBackend) -> dict[str, Any]:
    """What `GET /agentnb/stats` answers of `backend`: its counts (see the module docstring).

    Example:
        >>> stats(SimulatedBackend(latency_s=0))["accepted_starts"]
        []
    """
    log = list(backend.calls)
    starts = [r.started for r in log if r.ok]
    first = starts[0] if starts else 0.0
    refused = sum(1 for r in log if r.error == "rate_limit")
    failed = sum(1 for r in log if r.ok is False)
    limits: dict[str, dict[str, float | None]] = {}
    for model in dict.fromkeys(r.model for r in log):
        cls = model_class(model)
        seen = None if cls in limits else backend.rate_limits(model)
        if seen is not None:
            limits[cls] = _limits_of(seen)
    return {
        "calls": backend.call_count,
        "logged": len(log),
        "accepted": len(starts),
        "rate_limited": refused,
        "errors": failed - refused,
        "in_flight": backend.in_flight,
        "accepted_starts": [round(t - first, 6) for t in starts],
        "limits": limits,
    }


def _limits_of(seen: RateLimits) -> dict[str, float | None]:
    """A class's limits per minute as its headers state them, and the burst its buckets hold:
    what is left plus what refills until the reset (each kind's reading is short by less than
    one unit, `remaining` being rounded down; the largest reading is the closest)."""
    out: dict[str, float | None] = {}
    burst: float | None = None
    for key, level in zip(("rpm", "itpm", "otpm"), seen.levels, strict=True):
        out[key] = None if level is None else float(level.limit)
        if level is not None and level.limit > 0:
            rate = level.limit / 60.0
            reading = (level.remaining + level.reset_s * rate) / rate
            burst = reading if burst is None else max(burst, reading)
    out["burst_s"] = None if burst is None else round(burst, 2)
    return out


def _refusal(status: int, message: str) -> httpx2.Response:
    """An error after which the connection closes (the request could not be read whole)."""
    response = error_response(status, message)
    response.headers["connection"] = "close"
    return response
