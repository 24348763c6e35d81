"""The API key never reaches a log line, the SDK's own DEBUG records included."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from agentnb.backends import AnthropicBackend, BackendRequest, SimulatedBackend
from agentnb.backends import simulator_transport as make_transport

KEY = "sk-ant-test-0123456789abcdef-never-shown"


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """Everything logged anywhere at DEBUG, as a user who turned on logging would see it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", "anthropic", "httpx2")}
    root.addHandler(handler)
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


async def test_sdk_debug_records_of_child_loggers_are_redacted(debug_log: io.StringIO) -> None:
    backend = AnthropicBackend(
        api_key=KEY,
        base_url="http://simulator.invalid",
        transport=make_transport(SimulatedBackend(latency_s=0)),
    )
    try:
        await backend.create(BackendRequest(model="claude-sonnet-5-5", task="Hi", agent="writer"))
        # What a server echoing the key would make the SDK log, from a child of `anthropic`:
        logging.getLogger("anthropic._base_client").debug("response body: invalid key %s", KEY)
        try:
            raise ValueError(f"bad header {KEY}")
        except ValueError:
            logging.getLogger("httpx2").exception("request failed")
    finally:
        await backend.aclose()
    text = debug_log.getvalue()
    assert "invalid key ***" in text and "bad header ***" in text
    assert KEY not in text


def test_handlers_added_later_and_extra_fields_are_redacted() -> None:
    from agentnb._redact import protect

    before = io.StringIO()  # a handler that was there when the client was built
    early = logging.StreamHandler(before)
    early.setFormatter(logging.Formatter("%(message)s | %(detail)s"))
    logging.getLogger().addHandler(early)
    try:
        protect(KEY)  # as agentnb does when it builds a client
        after = io.StringIO()
        late = logging.StreamHandler(after)  # added afterwards: no filter of ours on it
        log = logging.getLogger("some.user.module")
        log.addHandler(late)
        try:
            log.warning("token %s", KEY, extra={"detail": f"header x-api-key: {KEY}"})
        finally:
            log.removeHandler(late)
    finally:
        logging.getLogger().removeHandler(early)
    assert after.getvalue().strip() == "token ***"
    assert before.getvalue().strip() == "token *** | header x-api-key: ***"
    protect(KEY)  # a second client: the factory is wrapped once, not twice
    record = logging.getLogRecordFactory()("n", 10, "p", 1, f"again {KEY}", (), None)
    assert record.getMessage() == "again ***"
