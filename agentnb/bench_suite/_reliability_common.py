"""What the reliability probes share: their rows, captured log records, a scoped environment.

A probe's row says what was tried, how many times, what held, and the goal (`probe_row`); the
names of the cases that did not hold ride along under the private key `_failures`, which the
suite prints under the table. The probes run inside the bench's own process, so whatever they
change there (loggers, environment variables, the working directory) is put back when they end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from ._common import Row, _goal

__all__ = [
    "MESSAGE_LIMIT",
    "captured_logs",
    "probe_row",
    "record_text",
    "scoped_environ",
    "scratch_dir",
]

#: Longest message a refused input may give (one line, and a bounded one).
MESSAGE_LIMIT = 500


def probe_row(
    figure: str,
    tried: str,
    n: int,
    held: str,
    goal: str,
    met: bool | None,
    *,
    detail: str = "",
    failures: Iterable[str] = (),
) -> Row:
    """One row of the reliability table; `failures` names what did not hold (printed below)."""
    row: Row = {"figure": figure, "tried": tried, "n": n, "held": held, "detail": detail}
    _goal(row, goal, met, measured=held, what=figure)
    failed = list(failures)
    if failed:
        row["_failures"] = failed
    return row


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def captured_logs(
    attach_to: str, *levels_of: str, level: int = logging.DEBUG
) -> Iterator[list[logging.LogRecord]]:
    """Collect every record reaching logger `attach_to` ("" for the root), with `attach_to`
    and the loggers `levels_of` set to `level` meanwhile; all is put back after.

    A handler of our own also keeps the probes' expected warnings (a tampered row, Redis gone)
    off the terminal: `logging.lastResort` only prints when no handler is found.
    """
    records: list[logging.LogRecord] = []
    handler = _ListHandler(records)
    loggers = [logging.getLogger(name) for name in (attach_to, *levels_of)]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    loggers[0].addHandler(handler)
    try:
        yield records
    finally:
        loggers[0].removeHandler(handler)
        for lg, old in zip(loggers, saved, strict=True):
            lg.setLevel(old)


def record_text(record: logging.LogRecord) -> str:
    """Everything a log record carries: its message, its fields and any traceback."""
    parts = [record.getMessage(), repr(vars(record))]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


@contextlib.contextmanager
def scoped_environ(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables; restore them after."""
    saved = {k: os.environ.get(k) for k in changes}
    try:
        for k, v in changes.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory, removed with everything in it at the end."""
    path = Path(tempfile.mkdtemp(prefix=f"agentnb-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
