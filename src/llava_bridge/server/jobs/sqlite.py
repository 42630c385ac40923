"""`SQLiteJobStore`: the job store in one SQLite file (WAL), one owner process, one query thread.

Every query runs on a single dedicated thread (`sqlite_thread.py`), so the
connection is never shared between threads at once and the event loop never
blocks on disk. What is waiting commits together: under load many jobs share one
disk sync. A submit that was answered is synced to disk (it survives `kill -9` and
power loss); other changes (claims, results, log lines, files) are written to the
operating system before they are answered (they survive `kill -9`; after a power
cut a job that had completed may run again). A lock file next to the database
stops two servers from using it at once, so this store is the database's only
writer: it keeps the jobs it last wrote (`RECENT_JOBS` of them) and answers `get`
for them without a trip to the database thread. The SQL is in `sqlite_jobs.py`
and `sqlite_files.py`.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import IO, Any, TypeVar

from llava_bridge.errors import ConfigurationError
from llava_bridge.server.jobs import sqlite_files, sqlite_jobs
from llava_bridge.server.jobs.protocol import CancelOutcome, Job, LogEntry, StoredFile
from llava_bridge.server.jobs.sqlite_thread import GroupCommitThread

__all__ = ["SQLiteJobStore"]

T = TypeVar("T")

SCHEMA_VERSION = 1
RECENT_JOBS = 4096
"""Jobs kept in memory as last written, for `get` (the oldest are forgotten first)."""

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


class SQLiteJobStore:
    """A `JobStore` in the SQLite file at `path` (``:memory:`` for a throwaway one)."""

    def __init__(self, path: str) -> None:
        """Open (and create) the database; blocks, so call it off the event loop (`open`)."""
        self.path = path
        self._lock_file: IO[bytes] | None = None
        self._recent: OrderedDict[str, Job] = OrderedDict()  # event-loop thread only
        try:
            self._db = GroupCommitThread(self._open, name="llava-bridge-db")
        except BaseException:
            self._release_lock()
            raise

    @classmethod
    async def open(cls, path: str) -> SQLiteJobStore:
        return await asyncio.to_thread(cls, path)

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
        try:
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
        except BaseException:
            conn.close()
            raise
        return conn

    async def _call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, *args, **kwargs)` on the database thread and await its result."""
        return await self._await(fn, args, kwargs, durable=False)

    async def _await(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], *, durable: bool
    ) -> T:
        def work(conn: sqlite3.Connection) -> T:
            return fn(conn, *args, **kwargs)

        return await asyncio.wrap_future(self._db.submit(work, durable=durable))

    # -- jobs ----------------------------------------------------------------------------

    async def submit(
        self,
        *,
        job_id: str,
        app: str,
        endpoint: str,
        arguments: dict[str, Any],
        image_file: str | None,
        now: float,
        start_deadline: float | None = None,
    ) -> tuple[bool, Job, int]:
        submit = functools.partial(
            sqlite_jobs.submit,
            job_id=job_id,
            app=app,
            endpoint=endpoint,
            arguments=arguments,
            image_file=image_file,
            now=now,
            start_deadline=start_deadline,
        )
        created, job, position = await self._await(submit, (), {}, durable=True)  # answered = on disk
        self._remember(job)
        return created, job, position

    def _remember(self, job: Job | None) -> None:
        """Keep `job` as committed (called once the write that returned it has committed)."""
        if job is None:
            return
        self._recent[job.id] = job
        self._recent.move_to_end(job.id)
        if len(self._recent) > RECENT_JOBS:
            self._recent.popitem(last=False)

    async def get(self, job_id: str) -> Job | None:
        recent = self._recent.get(job_id)
        if recent is not None:
            return recent
        return await self._call(sqlite_jobs.get, job_id)

    async def queue_position(self, job: Job) -> int:
        return await self._call(sqlite_jobs.queue_position, job)

    async def claim(self, *, now: float) -> Job | None:
        job = await self._call(sqlite_jobs.claim, now=now)
        self._remember(job)
        return job

    async def complete(
        self, job_id: str, *, status: int, body: Any, now: float, inference_time: float | None = None
    ) -> bool:
        def complete(conn: sqlite3.Connection, job_id: str) -> bool:
            return sqlite_jobs.complete(
                conn, job_id, status=status, body=body, now=now, inference_time=inference_time
            )

        answer: tuple[bool, Job | None] = await self._call(_then_get, complete, job_id)
        done, job = answer
        self._remember(job)
        return done

    async def cancel(self, job_id: str, *, now: float) -> CancelOutcome:
        def cancel(conn: sqlite3.Connection, job_id: str) -> CancelOutcome:
            return sqlite_jobs.cancel(conn, job_id, now=now)

        answer: tuple[CancelOutcome, Job | None] = await self._call(_then_get, cancel, job_id)
        outcome, job = answer
        self._remember(job)
        return outcome

    async def requeue(self, job_id: str) -> None:
        _, job = await self._call(_then_get, sqlite_jobs.requeue, job_id)
        self._remember(job)

    async def requeue_interrupted(self, *, now: float) -> int:
        self._recent.clear()
        return await self._call(sqlite_jobs.requeue_interrupted, now=now)

    async def purge_jobs(self, *, completed_before: float) -> int:
        purged = await self._call(sqlite_jobs.purge_jobs, completed_before=completed_before)
        if purged:
            self._recent.clear()
        return purged

    # -- log lines -------------------------------------------------------------------------

    def append_logs(self, job_ids: Sequence[str], level: str, message: str, timestamp: str) -> None:
        # Queued on the one database thread, so it is written before any later update.
        self._db.post(functools.partial(_add_logs, job_ids=tuple(job_ids), line=(level, message, timestamp)))

    async def logs(self, job_id: str, *, after: int = 0) -> list[LogEntry]:
        return await self._call(sqlite_jobs.logs, job_id, after=after)

    # -- files -------------------------------------------------------------------------------

    async def put_file(
        self, data: bytes, *, content_type: str, file_name: str | None, now: float, expires_at: float
    ) -> str:
        return await self._call(
            sqlite_files.put_file,
            data,
            content_type=content_type,
            file_name=file_name,
            now=now,
            expires_at=expires_at,
        )

    async def create_pending(
        self, *, content_type: str, file_name: str | None, now: float, expires_at: float
    ) -> str:
        return await self._call(
            sqlite_files.create_pending,
            content_type=content_type,
            file_name=file_name,
            now=now,
            expires_at=expires_at,
        )

    async def fill_pending(self, file_id: str, data: bytes, content_type: str | None) -> bool:
        return await self._call(sqlite_files.fill_pending, file_id, data, content_type)

    async def get_file(self, file_id: str, *, now: float) -> StoredFile | None:
        return await self._call(sqlite_files.get_file, file_id, now=now)

    async def purge_files(self, *, now: float) -> int:
        return await self._call(sqlite_files.purge_files, now=now)

    # -- lifetime ----------------------------------------------------------------------------

    async def close(self) -> None:
        await asyncio.to_thread(self.close_now)

    def close_now(self) -> None:
        """Finish queued work, close the connection and release the lock (blocks)."""
        self._db.close()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _then_get(conn: sqlite3.Connection, change: Callable[..., T], job_id: str) -> tuple[T, Job | None]:
    """`change(conn, job_id)`, and the job as it is after it (in the same transaction)."""
    return change(conn, job_id), sqlite_jobs.get(conn, job_id)


def _add_logs(conn: sqlite3.Connection, *, job_ids: tuple[str, ...], line: tuple[str, str, str]) -> None:
    sqlite_jobs.add_logs(conn, job_ids, *line)


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
