"""Many rows written with few SQLite statements: what SQLite does once a statement (preparing
its run, the journal of its triggers) done once for `ROWS` rows.

`write_rows(conn, sql, values)` runs the one-row INSERT `sql` (one `VALUES (?, ...)` group) for
every row whose values `values` holds one after the other, `ROWS` rows a statement (the same
INSERT with that many groups: the same writes, in the same order, conflicts included) and the
rest one by one. The response cache's batch writes and the batch ledger's request rows go this
way: a third less of SQLite's time a row than `executemany`.

Example:
    >>> import sqlite3
    >>> conn = sqlite3.connect(":memory:")
    >>> _ = conn.execute("CREATE TABLE t (a PRIMARY KEY, b)")
    >>> write_rows(conn, "INSERT OR REPLACE INTO t (a, b) VALUES (?, ?)", [*range(500), 0, -1])
    >>> conn.execute("SELECT count(*), sum(b) FROM t").fetchone()  # the last row replaced (0, 1)
    (250, 62498)
"""

from __future__ import annotations

import functools
import re
import sqlite3
from typing import Any

__all__ = ["ROWS", "write_rows"]

#: Rows of one statement: at 8 values a row, within even the oldest SQLite's 999 parameters.
ROWS = 100
_GROUP = re.compile(r"VALUES\s*(\((?:\?\s*,\s*)*\?\))")


def write_rows(conn: sqlite3.Connection, sql: str, values: list[Any]) -> None:
    """Run `sql` (one row's INSERT) for each row of `values` (see the module docstring)."""
    many, width = _statement(sql)
    step = ROWS * width
    whole = len(values) - len(values) % step
    for start in range(0, whole, step):
        conn.execute(many, values[start : start + step])
    if whole < len(values):
        conn.executemany(sql, (values[i : i + width] for i in range(whole, len(values), width)))


@functools.lru_cache(maxsize=16)
def _statement(sql: str) -> tuple[str, int]:
    """`sql` with `ROWS` groups of values, and how many values a row has."""
    found = _GROUP.search(sql)
    if found is None:
        raise ValueError(f"not a one-row INSERT ... VALUES (?, ...): {sql!r}")
    group = found.group(1)
    many = sql[: found.start(1)] + ", ".join([group] * ROWS) + sql[found.end(1) :]
    return many, group.count("?")
