"""Keep API keys out of every log line, the SDK's own DEBUG logs included.

agentnb's own loggers never write a key. The `anthropic` SDK and the HTTP client under it may,
at DEBUG level (a server that echoes the key back in an error body, logged by
`anthropic._base_client`). A filter on the `anthropic` logger would not see those records: a
logger's filters apply only to records logged on that very logger, not on its children. So the
redaction is a filter on the *handlers* that emit them: those of the root logger, of the SDK's
and HTTP clients' loggers, and Python's last-resort handler. `protect(key)` is called each time
agentnb builds an SDK client with a key.

A handler added later (a user turning on logging after the first call) has no filter yet, so
`protect` also wraps the log record factory once: every record made afterwards, by any logger,
has the secrets scrubbed from its message and arguments as it is made, before any handler sees
it. The factory only pays for that while a secret is registered. The handler filters also scrub
the record's `extra` fields (set after the factory ran) and its exception text (formatted
later): a handler added after the last client was built sees those unscrubbed, but neither
agentnb nor the SDK puts request data in them.

Example:
    >>> import io, logging
    >>> stream = io.StringIO()
    >>> handler = logging.StreamHandler(stream)
    >>> logging.getLogger("anthropic").addHandler(handler)
    >>> protect("sk-ant-example-0123456789")
    >>> logging.getLogger("anthropic._base_client").warning("key sk-ant-example-0123456789")
    >>> stream.getvalue()
    'key ***\\n'
    >>> logging.getLogger("anthropic").removeHandler(handler)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["KeyRedactor", "protect", "redactor"]

#: Loggers whose handlers get the filter ("" is the root logger).
LOGGERS = ("", "anthropic", "httpx", "httpx2", "httpcore")
#: Shorter values are not redacted (they would mangle ordinary words).
MIN_SECRET_CHARS = 8


class KeyRedactor(logging.Filter):
    """Replaces every known secret in a record's message (and traceback text) with `***`."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._factory: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def add(self, secret: str) -> None:
        """Redact `secret` from now on."""
        if len(secret) >= MIN_SECRET_CHARS:
            with self._lock:
                self._secrets = self._secrets | {secret}

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        if not secrets:
            return True
        self.scrub(record, secrets)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _scrub(record.exc_text, secrets)
        return True

    def scrub(self, record: logging.LogRecord, secrets: frozenset[str]) -> None:
        """Scrub the record's message (with its arguments) and its `extra` string fields."""
        message = record.getMessage()
        clean = _scrub(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        for name, value in record.__dict__.items():
            if name not in _STANDARD and isinstance(value, str):
                scrubbed = _scrub(value, secrets)
                if scrubbed is not value:
                    record.__dict__[name] = scrubbed

    def make_record(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        """The wrapped record factory: the record as made, scrubbed while secrets exist."""
        record = self._factory(*args, **kwargs)
        secrets = self._secrets
        if secrets:
            self.scrub(record, secrets)
        return record

    def install(self) -> None:
        """Wrap the process's log record factory (once)."""
        with self._lock:
            current = logging.getLogRecordFactory()
            if current != self.make_record:  # bound methods: equal, never identical
                self._factory = current
                logging.setLogRecordFactory(self.make_record)


#: The attributes every `LogRecord` has: anything else came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}


def _scrub(text: str, secrets: frozenset[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


_redactor = KeyRedactor()


def redactor() -> KeyRedactor:
    """The process's one redacting filter."""
    return _redactor


def protect(secret: str) -> None:
    """Redact `secret` in every record the current handlers of `LOGGERS` emit."""
    _redactor.add(secret)
    _redactor.install()
    handlers = [h for name in LOGGERS for h in logging.getLogger(name).handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if _redactor not in handler.filters:
            handler.addFilter(_redactor)
