"""Backend log records (logger "llava_bridge") become status log lines of jobs.

A record made while a job runs (in its task, or a thread it started) goes to
that job. A record made outside any job (model loading, a batch of several
jobs) goes to every job running at that moment. The server's own operational
records outside jobs are not copied.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime

__all__ = ["JobLogHandler", "fal_level", "job_context", "utc_timestamp"]

LogSink = Callable[[Sequence[str], str, str], None]
"""Receives (job ids, fal level, message)."""

_current_job: ContextVar[tuple[object, str | None] | None] = ContextVar("llava_bridge_job", default=None)


def fal_level(levelno: int) -> str:
    """fal's log level names: DEBUG, INFO, WARN, ERROR."""
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARN"
    if levelno >= logging.INFO:
        return "INFO"
    return "DEBUG"


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat()


@contextlib.contextmanager
def job_context(owner: object, job_id: str | None) -> Iterator[None]:
    """Records made inside belong to `job_id` of `owner` (None: to no job)."""
    token = _current_job.set((owner, job_id))
    try:
        yield
    finally:
        _current_job.reset(token)


class JobLogHandler(logging.Handler):
    """Hands records to `sink` for the job they belong to (see the module docstring)."""

    def __init__(self, owner: object, sink: LogSink, running: Callable[[], Sequence[str]]) -> None:
        super().__init__(level=logging.INFO)
        self._owner = owner
        self._sink = sink
        self._running = running

    def emit(self, record: logging.LogRecord) -> None:
        context = _current_job.get()
        if context is not None:
            owner, job_id = context
            if owner is not self._owner or job_id is None:
                return
            targets: Sequence[str] = (job_id,)
        elif record.name.startswith("llava_bridge.server"):
            return
        else:
            targets = self._running()
        if not targets:
            return
        try:
            message = record.getMessage()
        except Exception:
            self.handleError(record)
            return
        self._sink(targets, fal_level(record.levelno), message)
