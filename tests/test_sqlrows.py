"""`write_rows`: many rows a statement write what one statement a row writes, in order."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentnb._sqlrows import ROWS, write_rows

SCHEMA = (
    "CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)",
    "CREATE TABLE n (id INTEGER PRIMARY KEY, inserts INTEGER, updates INTEGER)",
    "INSERT INTO n VALUES (0, 0, 0)",
    "CREATE TRIGGER t_insert AFTER INSERT ON t BEGIN "
    "UPDATE n SET inserts = inserts + 1 WHERE id = 0; END",
    "CREATE TRIGGER t_update AFTER UPDATE OF v ON t BEGIN "
    "UPDATE n SET updates = updates + 1 WHERE id = 0; END",
)
UPSERT = "INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v"


def database() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for statement in SCHEMA:
        conn.execute(statement)
    return conn


def contents(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
    rows = conn.execute("SELECT k, v FROM t ORDER BY k").fetchall()
    return rows, conn.execute("SELECT inserts, updates FROM n").fetchall()


@given(st.lists(st.tuples(st.sampled_from("abcdefghij"), st.integers(0, 9)), max_size=3 * ROWS))
def test_the_same_writes_as_one_statement_a_row(rows: list[tuple[str, int]]) -> None:
    """Conflicts within a statement resolve in order, and the triggers fire for every row."""
    one, many = database(), database()
    one.executemany(UPSERT, rows)
    write_rows(many, UPSERT, [value for row in rows for value in row])
    assert contents(many) == contents(one)


def test_whole_statements_then_the_rest_one_by_one() -> None:
    conn = database()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    values: list[Any] = []
    for i in range(2 * ROWS + 3):
        values += (f"k{i}", i)
    write_rows(conn, UPSERT, values)
    inserts = {s for s in statements if s.startswith("INSERT INTO t")}  # triggers trace it again
    assert sorted(s.count("), (") + 1 for s in inserts) == [1, 1, 1, ROWS, ROWS]  # rows each
    assert contents(conn)[1] == [(2 * ROWS + 3, 0)]


def test_a_statement_that_is_not_one_row_of_values_is_refused() -> None:
    with pytest.raises(ValueError, match="one-row INSERT"):
        write_rows(database(), "DELETE FROM t WHERE k = ?", ["a"])
