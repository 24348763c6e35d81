"""The batch ledger: intents before batches, their ids and states, HMACs that refuse forgeries."""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import stat
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentnb.cache.integrity import Signer
from agentnb.errors import ConfigError
from agentnb.orchestrator import ledger as ledger_module
from agentnb.orchestrator.ledger import DB_NAME, KEEP_S, BatchLedger

SIGNER = Signer(b"ledger test secret")


def rows(job: str, n: int, part: int = 0) -> list[tuple[str, str, str, str, bool]]:
    return [(f"{job}-{part}-{i}", f"{i:064x}", "writer", "claude-sonnet-5-5", i % 2 == 0)
            for i in range(n)]  # fmt: skip


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[BatchLedger]:
    made = BatchLedger.open(tmp_path / "state", SIGNER)
    yield made
    await made.aclose()


async def test_an_intent_then_its_id_then_its_end(ledger: BatchLedger) -> None:
    await ledger.intent("job1", 0, "simulated", rows("job1", 3))
    (entry,) = await ledger.batches()
    assert (entry.state, entry.batch_id, entry.requests, entry.scope) == (
        "intent", None, 3, "simulated"
    )  # fmt: skip
    await ledger.update("job1", 0, "sent", batch_id="msgbatch_1")
    sent = await ledger.batch("msgbatch_1")
    assert sent is not None and sent.state == "sent" and sent.sent_at is not None
    await ledger.update("job1", 0, "collected")
    done = await ledger.batch("msgbatch_1")
    assert done is not None and done.state == "collected" and done.ended_at is not None
    found = await ledger.lookup(["job1-0-0", "job1-0-1", "nobody"])
    assert sorted(found) == ["job1-0-0", "job1-0-1"]
    assert found["job1-0-0"].cache and not found["job1-0-1"].cache
    assert found["job1-0-1"].key == f"{1:064x}" and found["job1-0-1"].agent == "writer"
    assert ledger.integrity_failures == 0


async def test_batches_are_listed_newest_first(ledger: BatchLedger) -> None:
    for job in ("old", "new"):
        await ledger.intent(job, 0, "simulated", rows(job, 1))
    assert [b.job for b in await ledger.batches()] == ["new", "old"]


async def test_many_requests_are_written_a_chunk_a_transaction(
    ledger: BatchLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "CHUNK", 7)
    await ledger.intent("big", 0, "simulated", rows("big", 50))
    found = await ledger.lookup([f"big-0-{i}" for i in range(50)])
    assert len(found) == 50


def forge(path: Path, sql: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql)


async def test_an_edited_request_row_is_refused_and_counted(ledger: BatchLedger) -> None:
    await ledger.intent("job1", 0, "simulated", rows("job1", 2))
    # Point a request at another cache key: its answer would poison that key.
    forge(ledger.path, f"UPDATE requests SET key = '{'f' * 64}' WHERE custom_id = 'job1-0-0'")
    found = await ledger.lookup(["job1-0-0", "job1-0-1"])
    assert list(found) == ["job1-0-1"]
    assert ledger.integrity_failures == 1


async def test_a_forged_request_row_is_refused(ledger: BatchLedger) -> None:
    await ledger.intent("job1", 0, "simulated", rows("job1", 1))
    forge(
        ledger.path,
        "INSERT INTO requests VALUES ('job1-0-9', 'job1', 0, 'abc', 'writer', 'm', 1, "
        "x'00000000000000000000000000000000000000000000000000000000000000ff')",
    )
    assert await ledger.lookup(["job1-0-9"]) == {}
    assert ledger.integrity_failures == 1


async def test_an_edited_batch_row_is_refused_and_never_signed_again(ledger: BatchLedger) -> None:
    await ledger.intent("job1", 0, "simulated", rows("job1", 1))
    await ledger.update("job1", 0, "sent", batch_id="msgbatch_1")
    forge(ledger.path, "UPDATE batches SET batch_id = 'msgbatch_evil'")
    assert await ledger.batch("msgbatch_evil") is None
    await ledger.update("job1", 0, "collected")  # refused: the forgery is not laundered
    assert await ledger.batches() == []
    assert ledger.integrity_failures >= 2


async def test_rows_written_with_another_secret_are_refused(tmp_path: Path) -> None:
    first = BatchLedger.open(tmp_path, SIGNER)
    await first.intent("job1", 0, "simulated", rows("job1", 1))
    await first.aclose()
    other = BatchLedger.open(tmp_path, Signer(b"another secret"))
    assert await other.batches() == [] and await other.lookup(["job1-0-0"]) == {}
    assert other.integrity_failures == 2
    await other.aclose()


async def test_rows_older_than_the_api_keeps_results_are_dropped(tmp_path: Path) -> None:
    now = [1_000_000.0]
    early = BatchLedger(tmp_path / DB_NAME, SIGNER, clock=lambda: now[0])
    await early.intent("job1", 0, "simulated", rows("job1", 2))
    await early.aclose()
    now[0] += KEEP_S + 1
    late = BatchLedger(tmp_path / DB_NAME, SIGNER, clock=lambda: now[0])
    assert await late.batches() == []
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert conn.execute("SELECT count(*) FROM requests").fetchone() == (0,)
    await late.aclose()


async def test_the_state_dir_is_made_private_and_the_database_uses_wal(tmp_path: Path) -> None:
    made = BatchLedger.open(tmp_path / "a" / "state", SIGNER)
    assert stat.S_IMODE((tmp_path / "a" / "state").stat().st_mode) == 0o700
    assert made.path == (tmp_path / "a" / "state" / DB_NAME).resolve()
    await made.batches()  # opened on first use, on the ledger's thread
    with sqlite3.connect(made.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    made.close()


async def test_an_unusable_state_dir_is_one_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"state_dir .* is a file"):
        BatchLedger.open(tmp_path / "file", SIGNER)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / DB_NAME).mkdir()  # a directory where the database should be
    ledger = BatchLedger.open(tmp_path / "dir", SIGNER)
    with pytest.raises(ConfigError, match="cannot open the batch ledger"):
        await ledger.batches()
    await ledger.aclose()


async def test_a_closed_ledger_refuses_work(tmp_path: Path) -> None:
    made = BatchLedger.open(tmp_path, SIGNER)
    await made.aclose()
    with pytest.raises(Exception, match="closed"):
        await made.batches()


async def test_a_forked_child_writes_through_its_own_connection(ledger: BatchLedger) -> None:
    await ledger.intent("parent", 0, "simulated", rows("parent", 1))
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # the child: no event loop of the parent's, so a fresh one
        import asyncio

        try:
            asyncio.run(ledger.intent("child", 0, "simulated", rows("child", 2)))
            os.write(write_end, b"ok")
        finally:
            os._exit(0)
    ready, _, _ = select.select([read_end], [], [], 20)
    answer = os.read(read_end, 10) if ready else b"<no answer: the child hung>"
    os.close(read_end)
    os.close(write_end)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert answer == b"ok"
    assert {b.job for b in await ledger.batches()} == {"parent", "child"}
    assert len(await ledger.lookup(["child-0-0", "child-0-1", "parent-0-0"])) == 3
