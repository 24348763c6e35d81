"""Keep API keys out of every log line, the SDK's own DEBUG logs included.

agentnb's own loggers never write a key. The `anthropic` SDK and the HTTP client under it may,
at DEBUG level (a server that echoes the key back in an error body, logged by
`anthropic._base_client`). A filter on the `anthropic` logger would not see those records: a
logger's filters apply only to records logged on that very logger, not on its children. So the
redaction is a filter on the *handlers* that emit them: those of the root logger, of the SDK's
and HTTP clients' loggers, and Python's last-resort handler. `protect(key)` is called each time
agentnb builds an SDK client with a key (handlers added after that are covered at the next
client agentnb builds).

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

    def add(self, secret: str) -> None:
        """Redact `secret` from now on."""
        if len(secret) >= MIN_SECRET_CHARS:
            with self._lock:
                self._secrets = self._secrets | {secret}

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        if not secrets:
            return True
        message = record.getMessage()
        clean = _scrub(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _scrub(record.exc_text, secrets)
        return True


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
    handlers = [h for name in LOGGERS for h in logging.getLogger(name).handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if _redactor not in handler.filters:
            handler.addFilter(_redactor)
