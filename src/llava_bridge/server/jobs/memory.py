"""`MemoryJobStore`: a `JobStore` in this process's memory (`--db memory://`).

Nothing survives a restart: for tests, demos and throwaway servers. Also the
smallest complete example of a store; a new one (Postgres, Redis) follows it
and is registered with one line in `jobs/__init__.py`.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Sequence
from typing import Any

from llava_bridge.server.jobs.protocol import (
    CANCELLED_BODY,
    CANCELLED_STATUS,
    CancelOutcome,
    Job,
    JobState,
    LogEntry,
    StoredFile,
    error_fields,
    new_file_id,
)

__all__ = ["MemoryJobStore"]


@dataclasses.dataclass
class _File:
    content_type: str
    file_name: str | None
    data: bytes | None
    expires_at: float


class MemoryJobStore:
    """Jobs, log lines and files in dicts, behind one lock (log lines come from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._jobs: dict[str, Job] = {}
        self._logs: dict[str, list[LogEntry]] = {}
        self._files: dict[str, _File] = {}
        self._closed = False

    @classmethod
    async def open(cls, location: str) -> MemoryJobStore:
        """A new empty store; `location` (what follows ``memory://``) is ignored."""
        return cls()

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
        with self._lock:
            job = self._jobs.get(job_id)
            created = job is None
            if job is None:
                job = Job(
                    seq=next(self._seq),
                    id=job_id,
                    app=app,
                    endpoint=endpoint,
                    input=dict(arguments),
                    image_file=image_file,
                    state="IN_QUEUE",
                    attempts=0,
                    cancel_requested=False,
                    created_at=now,
                    start_deadline=start_deadline,
                    started_at=None,
                    completed_at=None,
                    result_status=None,
                    result_body=None,
                    error=None,
                    error_type=None,
                    inference_time=None,
                )
                self._jobs[job_id] = job
            position = self._position(job) if job.state == "IN_QUEUE" else 0
        return created, job, position

    async def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    async def queue_position(self, job: Job) -> int:
        with self._lock:
            return self._position(job)

    def _position(self, job: Job) -> int:
        return sum(1 for other in self._jobs.values() if other.state == "IN_QUEUE" and other.seq < job.seq)

    async def claim(self, *, now: float) -> Job | None:
        with self._lock:
            queued = [job for job in self._jobs.values() if job.state == "IN_QUEUE"]
            if not queued:
                return None
            oldest = min(queued, key=lambda job: job.seq)
            return self._update(oldest, state="IN_PROGRESS", attempts=oldest.attempts + 1, started_at=now)

    async def complete(
        self, job_id: str, *, status: int, body: Any, now: float, inference_time: float | None = None
    ) -> bool:
        with self._lock:
            return self._complete(job_id, ("IN_PROGRESS",), status, body, now, inference_time)

    def _complete(
        self,
        job_id: str,
        from_states: Sequence[JobState],
        status: int,
        body: Any,
        now: float,
        inference_time: float | None = None,
    ) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.state not in from_states:
            return False
        error, error_type = error_fields(status, body)
        self._update(
            job,
            state="COMPLETED",
            completed_at=now,
            result_status=status,
            result_body=body,
            error=error,
            error_type=error_type,
            inference_time=inference_time,
        )
        return True

    def _update(self, job: Job, **changes: Any) -> Job:
        job = dataclasses.replace(job, **changes)
        self._jobs[job.id] = job
        return job

    async def cancel(self, job_id: str, *, now: float) -> CancelOutcome:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return "NOT_FOUND"
            if job.state == "COMPLETED":
                return "ALREADY_COMPLETED"
            if job.state == "IN_PROGRESS":
                self._update(job, cancel_requested=True)
                return "CANCELLATION_REQUESTED"
            self._complete(job_id, ("IN_QUEUE",), CANCELLED_STATUS, CANCELLED_BODY, now)
            return "OK"

    async def requeue(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.state == "IN_PROGRESS":
                self._update(job, state="IN_QUEUE")

    async def requeue_interrupted(self, *, now: float) -> int:
        with self._lock:
            requeued = 0
            for job in list(self._jobs.values()):
                if job.state != "IN_PROGRESS":
                    continue
                if job.cancel_requested:
                    self._complete(job.id, ("IN_PROGRESS",), CANCELLED_STATUS, CANCELLED_BODY, now)
                else:
                    self._update(job, state="IN_QUEUE")
                    requeued += 1
            return requeued

    async def purge_jobs(self, *, completed_before: float) -> int:
        with self._lock:
            old = [
                job.id
                for job in self._jobs.values()
                if job.completed_at is not None and job.completed_at < completed_before
            ]
            for job_id in old:
                del self._jobs[job_id]
                self._logs.pop(job_id, None)
            return len(old)

    # -- log lines -------------------------------------------------------------------------

    def append_logs(self, job_ids: Sequence[str], level: str, message: str, timestamp: str) -> None:
        with self._lock:
            if self._closed:
                return
            for job_id in job_ids:
                entry = LogEntry(next(self._seq), timestamp, level, message)
                self._logs.setdefault(job_id, []).append(entry)

    async def logs(self, job_id: str, *, after: int = 0) -> list[LogEntry]:
        with self._lock:
            return [entry for entry in self._logs.get(job_id, ()) if entry.seq > after]

    # -- files -------------------------------------------------------------------------------

    async def put_file(
        self, data: bytes, *, content_type: str, file_name: str | None, now: float, expires_at: float
    ) -> str:
        return self._add_file(_File(content_type, file_name, bytes(data), expires_at))

    async def create_pending(
        self, *, content_type: str, file_name: str | None, now: float, expires_at: float
    ) -> str:
        return self._add_file(_File(content_type, file_name, None, expires_at))

    def _add_file(self, file: _File) -> str:
        file_id = new_file_id()
        with self._lock:
            self._files[file_id] = file
        return file_id

    async def fill_pending(self, file_id: str, data: bytes, content_type: str | None) -> bool:
        with self._lock:
            file = self._files.get(file_id)
            if file is None or file.data is not None:
                return False
            file.data = bytes(data)
            file.content_type = content_type or file.content_type
            return True

    async def get_file(self, file_id: str, *, now: float) -> StoredFile | None:
        with self._lock:
            file = self._files.get(file_id)
            if file is None or file.data is None or file.expires_at <= now:
                return None
            return StoredFile(file_id, file.content_type, file.file_name, file.data)

    async def purge_files(self, *, now: float) -> int:
        with self._lock:
            expired = [file_id for file_id, file in self._files.items() if file.expires_at <= now]
            for file_id in expired:
                del self._files[file_id]
            return len(expired)

    # -- lifetime ----------------------------------------------------------------------------

    async def close(self) -> None:
        with self._lock:
            self._closed = True
