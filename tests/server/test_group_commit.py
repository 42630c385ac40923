"""`GroupCommitThread`: items waiting together commit together; a failing item is rolled back alone."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

from llava_bridge.server.jobs.sqlite_thread import GroupCommitThread


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
    return conn


def _values(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT v FROM t ORDER BY rowid")]


def test_a_failing_item_is_rolled_back_alone_and_its_caller_gets_the_error(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    thread = GroupCommitThread(lambda: _connect(path), name="test-db")
    gate = threading.Event()
    try:
        blocker = thread.submit(lambda conn: gate.wait(30))  # holds the thread: the rest queue up

        def insert(value: str) -> Future[None]:
            def work(conn: sqlite3.Connection) -> None:
                conn.execute("INSERT INTO t VALUES (?)", (value,))

            return thread.submit(work)

        def insert_then_fail(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t VALUES ('half')")
            raise ValueError("refused")

        first = insert("first")
        failing = thread.submit(insert_then_fail, durable=True)
        last = insert("last")
        gate.set()
        assert blocker.result(30) is True
        assert first.result(30) is None and last.result(30) is None
        with pytest.raises(ValueError, match="refused"):
            failing.result(30)
        assert _values(path) == ["first", "last"]  # 'half' was rolled back with its item only
    finally:
        gate.set()
        thread.close()
    with pytest.raises(RuntimeError, match="closed"):
        thread.submit(lambda conn: None)
    thread.post(lambda conn: None)  # dropped quietly once closed


def test_a_connection_that_cannot_open_raises_in_the_constructor(tmp_path: Path) -> None:
    def broken() -> sqlite3.Connection:
        raise sqlite3.OperationalError("no such folder")

    with pytest.raises(sqlite3.OperationalError, match="no such folder"):
        GroupCommitThread(broken, name="test-db")
