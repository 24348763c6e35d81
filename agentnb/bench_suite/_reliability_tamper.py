"""Rows of `responses.db` tampered with on disk: is each one refused, counted, never served?

For each kind of tampering a writer stores three entries, the file is edited behind its back
with plain `sqlite3` (as whoever can write the cache directory could), and a fresh cache reads
them: a tampered row must be a miss counted in `integrity_failures`, while the untouched control
entry is still served (so a reader that serves nothing cannot pass). Changes to the columns the
HMAC does not cover (`agent`, `expires_at`) are reported apart, without a goal.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path

from ..cache import ResponseCache
from ..cache.integrity import Signer
from ..cache.schema import DB_NAME
from ..config import Config
from ..loop import run_sync
from ._common import _SECRET, Row
from ._reliability_common import probe_row, scratch_dir
from ._reliability_kill import entry_key, entry_payload

__all__ = ["TAMPERS", "UNSIGNED", "bench_tamper"]

#: Edits one row (`key`; `other` is a second entry for swaps) through a connection to the file.
Tamper = Callable[[sqlite3.Connection, str, str], None]


def _get(conn: sqlite3.Connection, key: str) -> tuple[bytes, bytes]:
    value, mac = conn.execute("SELECT value, mac FROM entries WHERE key = ?", (key,)).fetchone()
    return bytes(value), bytes(mac)


def _set(conn: sqlite3.Connection, key: str, column: str, value: object) -> None:
    conn.execute(f"UPDATE entries SET {column} = ? WHERE key = ?", (value, key))


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def _flip_value(conn: sqlite3.Connection, key: str, other: str) -> None:
    value, _ = _get(conn, key)
    _set(conn, key, "value", _flip(value, len(value) // 2))


def _flip_mac(conn: sqlite3.Connection, key: str, other: str) -> None:
    _, mac = _get(conn, key)
    _set(conn, key, "mac", _flip(mac, 0))


def _truncate(conn: sqlite3.Connection, key: str, other: str) -> None:
    value, _ = _get(conn, key)
    _set(conn, key, "value", value[: len(value) // 2])


def _swap(conn: sqlite3.Connection, key: str, other: str) -> None:
    # Both rows keep a MAC that is genuine, only for the other key.
    (v1, m1), (v2, m2) = _get(conn, key), _get(conn, other)
    conn.execute("UPDATE entries SET value = ?, mac = ? WHERE key = ?", (v2, m2, key))
    conn.execute("UPDATE entries SET value = ?, mac = ? WHERE key = ?", (v1, m1, other))


def _resigned(secret: bytes, value: bytes | None = None) -> Tamper:
    def tamper(conn: sqlite3.Connection, key: str, other: str) -> None:
        new = _get(conn, key)[0] if value is None else value
        agent, expires_at = conn.execute(
            "SELECT agent, expires_at FROM entries WHERE key = ?", (key,)
        ).fetchone()
        conn.execute(
            "UPDATE entries SET value = ?, mac = ? WHERE key = ?",
            (new, Signer(secret).sign(key, new, agent, expires_at), key),
        )

    return tamper


def _column(column: str, value: object) -> Tamper:
    def tamper(conn: sqlite3.Connection, key: str, other: str) -> None:
        _set(conn, key, column, value)

    return tamper


def _null(column: str) -> Tamper:
    """Rebuild the table without its NOT NULL constraints (as an editor of the file could),
    then set `column` NULL."""

    def tamper(conn: sqlite3.Connection, key: str, other: str) -> None:
        conn.executescript(
            "CREATE TABLE loose (key TEXT PRIMARY KEY, agent TEXT, value BLOB, mac BLOB, "
            "size INTEGER, created_at REAL, accessed_at REAL, expires_at REAL);"
            "INSERT INTO loose SELECT * FROM entries; DROP TABLE entries;"
            "ALTER TABLE loose RENAME TO entries;"
        )
        _set(conn, key, column, None)

    return tamper


#: The tamperings that must be refused, by name.
TAMPERS: dict[str, Tamper] = {
    "a byte of the value flipped": _flip_value,
    "a byte of the HMAC flipped": _flip_mac,
    "value truncated to half": _truncate,
    "values and HMACs swapped between two keys": _swap,
    "signed with another secret (wrong key)": _resigned(b"someone else's secret, 32 bytes"),
    "garbage JSON, correctly signed": _resigned(_SECRET, b"{not json"),
    "a JSON list, correctly signed": _resigned(_SECRET, b"[1, 2]"),
    "HMAC emptied": _column("mac", b""),
    "HMAC as text": _column("mac", "not a mac"),
    "value as text": _column("value", '{"text": "hi"}'),
    "expires_at not a number": _column("expires_at", "soon"),
    "value NULL": _null("value"),
    "HMAC NULL": _null("mac"),
    "agent NULL": _null("agent"),
    # The agent and the expiry are signed too: neither can be edited into a served entry.
    "agent column renamed": _column("agent", "someone-else"),
    "expires_at pushed 10 years on": _column("expires_at", 4.0e9),
}
#: Changes to columns outside the HMAC: reported, with no goal (none left since they are signed).
UNSIGNED: dict[str, Tamper] = {}


def _try(kind: str, tamper: Tamper, tmp: Path) -> tuple[list[bool], bool, int]:
    """(for each tampered key: served?, control served?, integrity failures counted)."""
    cache_dir = tmp / kind.replace(" ", "-").replace("'", "").replace("/", "-")
    cfg = Config(cache_backend="sqlite", cache_dir=cache_dir)
    keys = [entry_key("tamper", i) for i in range(3)]
    writer = ResponseCache(cfg, secret=_SECRET)
    try:
        for i, key in enumerate(keys):
            run_sync(writer.set(key, entry_payload("tamper", i, 200), agent="writer"))
    finally:
        writer.close()
    conn = sqlite3.connect(cache_dir / DB_NAME, isolation_level=None)
    try:
        tamper(conn, keys[0], keys[1])
    finally:
        conn.close()
    touched = keys[:2] if tamper is _swap else keys[:1]
    reader = ResponseCache(cfg, secret=_SECRET)
    try:
        served = [run_sync(reader.get(k)) is not None for k in touched]
        control = run_sync(reader.get(keys[2])) == (entry_payload("tamper", 2, 200), "disk")
        return served, control, int(reader.stats()["integrity_failures"])
    finally:
        reader.close()


def bench_tamper(
    tampers: Mapping[str, Tamper] = TAMPERS, unsigned: Mapping[str, Tamper] = UNSIGNED
) -> list[Row]:
    """Each of `tampers` on a fresh database; a row for them, and one for `unsigned`."""
    refused = tried = 0
    failures = []
    with scratch_dir("tamper") as tmp:
        for kind, tamper in tampers.items():
            served, control, counted = _try(kind, tamper, tmp)
            tried += len(served)
            ok = not any(served) and counted == len(served)
            if ok and control:
                refused += len(served)
                continue
            why = [f"served {sum(served)} of {len(served)}"] if any(served) else []
            why += [] if counted == len(served) else [f"{counted} integrity failures counted"]
            why += [] if control else ["the untouched entry was not served"]
            failures.append(f"{kind}: {', '.join(why)}")
        rows = [
            probe_row(
                "tampered rows refused",
                f"{len(tampers)} kinds of tampering of responses.db rows, read by a fresh cache",
                tried,
                f"{refused} of {tried} refused and counted in integrity_failures",
                "all refused, none served",
                refused == tried and tried > 0,
                detail="an untouched entry is served beside each",
                failures=failures,
            )
        ]
        if unsigned:
            served_unsigned = [k for k, t in unsigned.items() if any(_try(k, t, tmp)[0])]
            rows.append(
                probe_row(
                    "unsigned columns changed",
                    f"{', '.join(unsigned)} (outside the HMAC)",
                    len(unsigned),
                    f"{len(served_unsigned)} of {len(unsigned)} still served"
                    + (f": {', '.join(served_unsigned)}" if served_unsigned else ""),
                    "",
                    None,
                    detail="no goal: the payload served is the genuine one",
                )
            )
    return rows
