"""`JobStore`: what the routes and the runner need from the durable job queue and file store.

A job is IN_QUEUE, then IN_PROGRESS (claimed by a worker; `attempts` counts
claims), then COMPLETED with a result (an HTTP status and a JSON body). Each step
is atomic, and only IN_QUEUE jobs can be claimed, so a completed job never runs
again. After a crash, `requeue_interrupted` puts IN_PROGRESS jobs back at their
old place in the queue. Uploaded files live beside the jobs until they expire.

Every time is passed in (`now`), so a store never reads the clock. Stores live
behind `open_job_store` (`jobs/__init__.py`); the routes never see how a store
keeps its data.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from llava_bridge.backends.fal.protocol import CancelOutcome, JobState

__all__ = [
    "CANCELLED_BODY",
    "CANCELLED_STATUS",
    "CancelOutcome",
    "Job",
    "JobState",
    "JobStore",
    "LogEntry",
    "StoredFile",
    "error_fields",
    "new_file_id",
]

CANCELLED_STATUS = 499
CANCELLED_BODY = {"detail": "The request was cancelled.", "error_type": "client_cancelled"}


@dataclass(frozen=True)
class Job:
    """One queued, running or completed job."""

    seq: int
    """Queue order: a job with a lower `seq` was submitted earlier."""
    id: str
    app: str
    endpoint: str
    input: dict[str, Any]
    image_file: str | None
    state: JobState
    attempts: int
    cancel_requested: bool
    created_at: float
    start_deadline: float | None
    started_at: float | None
    completed_at: float | None
    result_status: int | None
    result_body: Any
    error: str | None
    error_type: str | None
    inference_time: float | None


@dataclass(frozen=True)
class LogEntry:
    """One status log line, as fal sends it; `seq` grows with each line a store keeps."""

    seq: int
    timestamp: str
    level: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"message": self.message, "level": self.level, "source": "USER", "timestamp": self.timestamp}


@dataclass(frozen=True)
class StoredFile:
    """An uploaded file's bytes and how to serve them."""

    id: str
    content_type: str
    file_name: str | None
    data: bytes


def new_file_id() -> str:
    """A random, unguessable file id (128 bits)."""
    return secrets.token_urlsafe(16)


def error_fields(status: int, body: Any) -> tuple[str | None, str | None]:
    """The status's `error` and `error_type` for a result.

    A failure of the request itself (a body with `error_type`: cancelled, timed
    out, the model crashed) is shown in the status. The model refusing the input
    (422 with a `detail` list) is not: clients read it from the result, with its
    status code, as fal's clients do.
    """
    raw_type = body.get("error_type") if isinstance(body, dict) else None
    if status < 400 or not isinstance(raw_type, str):
        return None, None
    detail = body.get("detail")
    return (detail if isinstance(detail, str) else json.dumps(detail)), raw_type


class JobStore(Protocol):
    """The server's jobs, their log lines and uploaded files; see the module docstring.

    All methods but `append_logs` are awaited on the event loop and must not block it.
    """

    # -- jobs ------------------------------------------------------------------------

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
        """Queue a job unless one with this id exists: (created, the job, its queue position).

        Once this returns, the job survives a crash of the server (for durable stores).
        """
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def queue_position(self, job: Job) -> int:
        """How many queued jobs are ahead of `job`."""
        ...

    async def claim(self, *, now: float) -> Job | None:
        """Move the oldest queued job to IN_PROGRESS and return it (None when the queue is empty)."""
        ...

    async def complete(
        self, job_id: str, *, status: int, body: Any, now: float, inference_time: float | None = None
    ) -> bool:
        """Store a running job's result; False when the job was not IN_PROGRESS."""
        ...

    async def cancel(self, job_id: str, *, now: float) -> CancelOutcome:
        """A queued job completes as cancelled (OK); a running one is flagged (CANCELLATION_REQUESTED)."""
        ...

    async def requeue(self, job_id: str) -> None:
        """Put a running job back in the queue (the server is shutting down)."""
        ...

    async def requeue_interrupted(self, *, now: float) -> int:
        """At start-up: running jobs of a previous process go back to the queue (cancelled ones end)."""
        ...

    async def purge_jobs(self, *, completed_before: float) -> int:
        """Delete results (and their logs) of jobs completed before the cutoff; queued ones stay."""
        ...

    # -- log lines ---------------------------------------------------------------------

    def append_logs(self, job_ids: Sequence[str], level: str, message: str, timestamp: str) -> None:
        """Append one line to each of `job_ids`, from any thread, without blocking.

        The line is stored before any job update requested after this call.
        Dropped quietly once the store is closed.
        """
        ...

    async def logs(self, job_id: str, *, after: int = 0) -> list[LogEntry]:
        """A job's log lines with `seq` above `after`, oldest first."""
        ...

    # -- files ---------------------------------------------------------------------------

    async def put_file(
        self, data: bytes, *, content_type: str, file_name: str | None, now: float, expires_at: float
    ) -> str:
        """Store bytes; return the new file's id."""
        ...

    async def create_pending(
        self, *, content_type: str, file_name: str | None, now: float, expires_at: float
    ) -> str:
        """Reserve an id whose bytes come later with `fill_pending`."""
        ...

    async def fill_pending(self, file_id: str, data: bytes, content_type: str | None) -> bool:
        """Give a reserved id its bytes, once; False when there is no such empty reservation."""
        ...

    async def get_file(self, file_id: str, *, now: float) -> StoredFile | None:
        """The file with its bytes, or None when unknown, not yet uploaded, or expired."""
        ...

    async def purge_files(self, *, now: float) -> int:
        """Delete expired files."""
        ...

    # -- lifetime ------------------------------------------------------------------------

    async def close(self) -> None:
        """Finish queued work and release the store (its lock, its connection)."""
        ...
