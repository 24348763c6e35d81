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

Example:
    python -m agentnb simulate --port 8765 --limits '{"*": {"rpm": 600}}'
    ANTHROPIC_BASE_URL=http://127.0.0.1:8765 ANTHROPIC_API_KEY=sk-test python my_script.py
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import ipaddress
import signal
from collections.abc import Callable

import h11
import httpx2

from ..errors import ConfigError
from .sim_http import error_response, handle_messages_request
from .simulated import SimulatedBackend

__all__ = ["check_host", "run", "serve"]

_MAX_BODY = 32 * 1024 * 1024  # the Messages API's own request size limit
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
                while not isinstance(event := await self._next_event(), h11.EndOfMessage):
                    if not isinstance(event, h11.Data):
                        return
                    body += event.data
                    if len(body) > _MAX_BODY:
                        await self._send(_refusal(413, "the request body is over 32 MB"))
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


def _refusal(status: int, message: str) -> httpx2.Response:
    """An error after which the connection closes (the request could not be read whole)."""
    response = error_response(status, message)
    response.headers["connection"] = "close"
    return response
