"""`JobChanges`: wakes whoever waits on a job when it changes, instead of re-reading on a timer.

The runner says when a job changed (claimed, completed, cancelled), when it got a
log line, and when the queue moved (a job left it, so positions changed). A
status stream registers a `Watch` *before* it reads the job, so a change that
lands between its read and its wait still wakes it; a watch that asked for no log
lines is not woken by them. A completed job's watches are dropped (nothing more
will happen to it). Everything runs on the server's event loop;
`logged_threadsafe` is for log lines made on other threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable
from typing import Literal

__all__ = ["JobChanges", "Watch", "WakeReason"]

WakeReason = Literal["job", "queue", "timeout"]


class Watch:
    """One waiter on one job; `wait` returns why it woke."""

    __slots__ = ("_event", "_reason", "job_id", "logs")

    def __init__(self, job_id: str, logs: bool) -> None:
        self.job_id = job_id
        self.logs = logs
        self._event = asyncio.Event()
        self._reason: WakeReason = "timeout"

    def _wake(self, reason: WakeReason) -> None:
        if not self._event.is_set():
            self._reason = reason
            self._event.set()

    async def wait(self, timeout: float) -> WakeReason:
        """Until the job changes (or the queue moves, if watched), or `timeout` seconds pass."""
        if not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self._event.wait()
        reason = self._reason if self._event.is_set() else "timeout"
        self._event.clear()
        self._reason = "timeout"
        return reason


class JobChanges:
    """Who waits on which job, and on the queue; see the module docstring."""

    def __init__(self) -> None:
        self._jobs: dict[str, set[Watch]] = {}
        self._queue: set[Watch] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the waiters run on (for `job_changed_threadsafe`)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def watch(self, job_id: str, *, logs: bool = False) -> Watch:
        """A watch that wakes on the next change of `job_id` (and log line, with `logs`).

        `forget` it when done (or it goes when the job completes).
        """
        watch = Watch(job_id, logs)
        self._jobs.setdefault(job_id, set()).add(watch)
        return watch

    def watch_queue(self, watch: Watch) -> None:
        """Also wake `watch` the next time the queue moves."""
        self._queue.add(watch)

    def forget(self, watch: Watch) -> None:
        watches = self._jobs.get(watch.job_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._jobs[watch.job_id]
        self._queue.discard(watch)

    def job_changed(self, job_id: str, *, completed: bool = False) -> None:
        """Wake the watches of this job; a `completed` job's watches are then dropped."""
        watches = self._jobs.pop(job_id, set()) if completed else self._jobs.get(job_id, ())
        for watch in watches:
            watch._wake("job")
            if completed:
                self._queue.discard(watch)

    def logged(self, job_ids: Iterable[str]) -> None:
        """These jobs got a log line: wake their watches that want log lines."""
        for job_id in job_ids:
            for watch in self._jobs.get(job_id, ()):
                if watch.logs:
                    watch._wake("job")

    def queue_moved(self) -> None:
        """Wake the watches waiting for queue positions (each once)."""
        watches, self._queue = self._queue, set()
        for watch in watches:
            watch._wake("queue")

    def logged_threadsafe(self, job_ids: Iterable[str]) -> None:
        """`logged` from any thread."""
        ids = tuple(job_ids)
        if threading.get_ident() == self._loop_thread:
            self.logged(ids)
        elif self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: no one is waiting
                self._loop.call_soon_threadsafe(self.logged, ids)
