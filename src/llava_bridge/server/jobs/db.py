"""The server's SQLite database: WAL mode, one owner process, one thread for all queries.

Every query runs on a single dedicated thread (`call` from async code, `submit`
from any thread), so the connection is never shared between threads at once
and the event loop never blocks on disk. Commits are `synchronous=FULL`: a
submit that was answered is on disk and survives `kill -9` (and power loss).
A lock file next to the database stops two servers from using it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, TypeVar

from llava_bridge.errors import ConfigurationError

__all__ = ["Database", "transaction"]

T = TypeVar("T")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    app TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    input TEXT NOT NULL,
    image_file TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    start_deadline REAL,
    started_at REAL,
    completed_at REAL,
    result_status INTEGER,
    result_body TEXT,
    error TEXT,
    error_type TEXT,
    inference_time REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_by_completion ON jobs (completed_at);
CREATE TABLE IF NOT EXISTS job_logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_logs_by_job ON job_logs (job_id, seq);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    content_type TEXT NOT NULL,
    file_name TEXT,
    data BLOB,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_expiry ON files (expires_at);
"""


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Database:
    """An open SQLite database and the one thread that queries it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llava-bridge-db")
        self._lock_file: IO[bytes] | None = None
        try:
            self._conn = self._executor.submit(self._open).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            self._release_lock()
            raise

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
            self._lock_file = _lock(self.path + ".lock")
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            self._release_lock()
            raise ConfigurationError(f"Cannot open the job database {self.path!r}: {exc}.") from None
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"The job database {self.path!r} was made by a newer llava-bridge; "
                "upgrade llava-bridge or use another --db."
            )
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return conn

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the database thread and await its result."""
        return await asyncio.wrap_future(self._executor.submit(fn, self._conn))

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> Future[T] | None:
        """Queue `fn(connection)` from any thread; None when the database is closed."""
        try:
            return self._executor.submit(fn, self._conn)
        except RuntimeError:  # executor shut down
            return None

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the database thread and wait (not from the event loop)."""
        return self._executor.submit(fn, self._conn).result()

    def close(self) -> None:
        """Finish queued work, close the connection and release the lock."""
        try:
            self._executor.submit(self._conn.close).result()
        except RuntimeError:
            return
        self._executor.shutdown(wait=True)
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _lock(path: str) -> IO[bytes]:
    handle = open(path, "ab")  # noqa: SIM115 - held open for the server's lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        db = path.removesuffix(".lock")
        raise ConfigurationError(
            f"Another llava-bridge server is using the job database {db!r}; "
            "stop it or start this one with another --db PATH."
        ) from None
    return handle
