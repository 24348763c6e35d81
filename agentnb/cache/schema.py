"""The disk tier's schema and statements: one table of entries, one row of totals.

- `entries(key, agent, value, mac, size, created_at, accessed_at, expires_at)`: `value` is the
  payload's JSON, `mac` its HMAC (see `integrity`), `size = len(value)`.
- `totals(entries, bytes)`: one row kept exact by triggers, so the size bound and `stats()` never
  scan the table, and the figure stays true whichever process wrote.
- indexes on `accessed_at` (LRU eviction), `agent` (invalidation) and `expires_at` (expiry).

Writes are UPSERTs (`ON CONFLICT DO UPDATE`), not `INSERT OR REPLACE`, whose implicit delete
would skip the delete trigger and leave the totals wrong.
"""

from __future__ import annotations

import sqlite3

__all__ = [
    "DB_NAME",
    "DELETE_EXPIRED",
    "EVICT_LRU",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SELECT",
    "SELECT_MANY",
    "TOTALS",
    "TOUCH",
    "UPSERT",
    "schema_statements",
]

DB_NAME = "responses.db"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    value BLOB NOT NULL,
    mac BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    accessed_at REAL NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS entries_by_access ON entries(accessed_at);
CREATE INDEX IF NOT EXISTS entries_by_agent ON entries(agent);
CREATE INDEX IF NOT EXISTS entries_by_expiry ON entries(expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    entries INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_insert AFTER INSERT ON entries BEGIN
    UPDATE totals SET entries = entries + 1, bytes = bytes + NEW.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS entries_delete AFTER DELETE ON entries BEGIN
    UPDATE totals SET entries = entries - 1, bytes = bytes - OLD.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS entries_resize AFTER UPDATE OF size ON entries BEGIN
    UPDATE totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 0;
END;
"""

SELECT = "SELECT value, mac, agent, expires_at FROM entries WHERE key = ?"
#: `SELECT` of several keys: `marks` is one `?` per key, comma-separated.
SELECT_MANY = "SELECT key, value, mac, agent, expires_at FROM entries WHERE key IN ({marks})"
UPSERT = (
    "INSERT INTO entries (key, agent, value, mac, size, created_at, accessed_at, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET agent = excluded.agent, "
    "value = excluded.value, mac = excluded.mac, size = excluded.size, "
    "created_at = excluded.created_at, accessed_at = excluded.accessed_at, "
    "expires_at = excluded.expires_at"
)
TOUCH = "UPDATE entries SET accessed_at = ? WHERE key = ? AND accessed_at < ?"
TOTALS = "SELECT entries, bytes FROM totals WHERE id = 0"
DELETE_EXPIRED = "DELETE FROM entries WHERE expires_at <= ?"
#: The eviction statement; `tests/test_cache.py` checks its plan walks the index (no scan/sort).
EVICT_LRU = (
    "DELETE FROM entries WHERE rowid IN (SELECT rowid FROM entries ORDER BY accessed_at LIMIT ?)"
)


def schema_statements() -> list[str]:
    """The statements of `SCHEMA` one by one (triggers whole), to run in our own transaction."""
    out: list[str] = []
    current = ""
    for line in SCHEMA.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return out
