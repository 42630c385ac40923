"""The job queue's SQL: one connection, no IO beyond it, no event loop (`sqlite.py` runs it).

The states and guarantees are `JobStore`'s (`protocol.py`). Each step is one
transaction; only IN_QUEUE rows can be claimed.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from llava_bridge.server.jobs.protocol import (
    CANCELLED_BODY,
    CANCELLED_STATUS,
    CancelOutcome,
    Job,
    JobState,
    LogEntry,
    error_fields,
)

__all__ = [
    "add_logs",
    "cancel",
    "claim",
    "complete",
    "get",
    "logs",
    "purge_jobs",
    "queue_position",
    "requeue",
    "requeue_interrupted",
    "submit",
    "transaction",
]


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One all-or-nothing step: BEGIN IMMEDIATE ... COMMIT, or a savepoint inside a transaction."""
    if conn.in_transaction:
        conn.execute("SAVEPOINT step")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO step")
            conn.execute("RELEASE step")
            raise
        conn.execute("RELEASE step")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["input"] = json.loads(values["input"])
    values["result_body"] = None if values["result_body"] is None else json.loads(values["result_body"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    return Job(**values)


def submit(
    conn: sqlite3.Connection,
    *,
    job_id: str,
    app: str,
    endpoint: str,
    arguments: dict[str, Any],
    image_file: str | None,
    now: float,
    start_deadline: float | None = None,
) -> tuple[bool, Job, int]:
    """Queue a job unless one with this id exists: (created, the job, its queue position)."""
    with transaction(conn):
        created = (
            conn.execute(
                "INSERT OR IGNORE INTO jobs "
                "(id, app, endpoint, input, image_file, state, created_at, start_deadline) "
                "VALUES (?, ?, ?, ?, ?, 'IN_QUEUE', ?, ?)",
                (job_id, app, endpoint, json.dumps(arguments), image_file, now, start_deadline),
            ).rowcount
            == 1
        )
        job = get(conn, job_id)
        assert job is not None
        position = queue_position(conn, job) if job.state == "IN_QUEUE" else 0
    return created, job, position


def get(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else _job(row)


def queue_position(conn: sqlite3.Connection, job: Job) -> int:
    """How many queued jobs are ahead of `job`."""
    row = conn.execute(
        "SELECT COUNT(*) FROM jobs WHERE state = 'IN_QUEUE' AND seq < ?", (job.seq,)
    ).fetchone()
    return int(row[0])


def claim(conn: sqlite3.Connection, *, now: float) -> Job | None:
    """Move the oldest queued job to IN_PROGRESS and return it (None when the queue is empty)."""
    row = conn.execute(
        "UPDATE jobs SET state = 'IN_PROGRESS', attempts = attempts + 1, started_at = ? "
        "WHERE seq = (SELECT seq FROM jobs WHERE state = 'IN_QUEUE' ORDER BY seq LIMIT 1) "
        "AND state = 'IN_QUEUE' RETURNING *",
        (now,),
    ).fetchone()
    return None if row is None else _job(row)


def complete(
    conn: sqlite3.Connection,
    job_id: str,
    *,
    status: int,
    body: Any,
    now: float,
    inference_time: float | None = None,
    from_states: Sequence[JobState] = ("IN_PROGRESS",),
) -> bool:
    """Store a job's result; False when the job was not in one of `from_states`."""
    error, error_type = error_fields(status, body)
    marks = ",".join("?" for _ in from_states)
    cursor = conn.execute(
        "UPDATE jobs SET state = 'COMPLETED', completed_at = ?, result_status = ?, result_body = ?, "
        f"error = ?, error_type = ?, inference_time = ? WHERE id = ? AND state IN ({marks})",
        (now, status, json.dumps(body), error, error_type, inference_time, job_id, *from_states),
    )
    return cursor.rowcount == 1


def cancel(conn: sqlite3.Connection, job_id: str, *, now: float) -> CancelOutcome:
    """Cancel a job: a queued one completes as cancelled; a running one is flagged."""
    with transaction(conn):
        row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return "NOT_FOUND"
        if row["state"] == "COMPLETED":
            return "ALREADY_COMPLETED"
        if row["state"] == "IN_PROGRESS":
            conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return "CANCELLATION_REQUESTED"
        complete(
            conn, job_id, status=CANCELLED_STATUS, body=CANCELLED_BODY, now=now, from_states=("IN_QUEUE",)
        )
        return "OK"


def requeue(conn: sqlite3.Connection, job_id: str) -> None:
    """Put a running job back in the queue (the server is shutting down)."""
    conn.execute("UPDATE jobs SET state = 'IN_QUEUE' WHERE id = ? AND state = 'IN_PROGRESS'", (job_id,))


def requeue_interrupted(conn: sqlite3.Connection, *, now: float) -> int:
    """At start-up: running jobs of a previous process go back to the queue (cancelled ones end)."""
    with transaction(conn):
        for row in conn.execute(
            "SELECT id FROM jobs WHERE state = 'IN_PROGRESS' AND cancel_requested = 1"
        ).fetchall():
            complete(conn, row["id"], status=CANCELLED_STATUS, body=CANCELLED_BODY, now=now)
        cursor = conn.execute("UPDATE jobs SET state = 'IN_QUEUE' WHERE state = 'IN_PROGRESS'")
    return cursor.rowcount


def add_logs(
    conn: sqlite3.Connection, job_ids: Sequence[str], level: str, message: str, timestamp: str
) -> None:
    """Append one log line to each of `job_ids`."""
    with transaction(conn):
        conn.executemany(
            "INSERT INTO job_logs (job_id, timestamp, level, message) VALUES (?, ?, ?, ?)",
            [(job_id, timestamp, level, message) for job_id in job_ids],
        )


def logs(conn: sqlite3.Connection, job_id: str, *, after: int = 0) -> list[LogEntry]:
    """A job's log lines after log number `after`, oldest first."""
    rows = conn.execute(
        "SELECT seq, timestamp, level, message FROM job_logs WHERE job_id = ? AND seq > ? ORDER BY seq",
        (job_id, after),
    ).fetchall()
    return [LogEntry(row["seq"], row["timestamp"], row["level"], row["message"]) for row in rows]


def purge_jobs(conn: sqlite3.Connection, *, completed_before: float) -> int:
    """Delete results (and their logs) of jobs completed before the cutoff."""
    with transaction(conn):
        conn.execute(
            "DELETE FROM job_logs WHERE job_id IN "
            "(SELECT id FROM jobs WHERE state = 'COMPLETED' AND completed_at < ?)",
            (completed_before,),
        )
        cursor = conn.execute(
            "DELETE FROM jobs WHERE state = 'COMPLETED' AND completed_at < ?", (completed_before,)
        )
    return cursor.rowcount
