"""A micro-batcher: one worker thread runs concurrent jobs together, in batches.

Callers on any thread `submit` a job and get a `concurrent.futures.Future`; sync
callers wait on it, asyncio callers `await asyncio.wrap_future(...)` it without
blocking their loop. The worker thread owns the model: when it is idle, the
first job opens a window of `wait_s` seconds in which more jobs join its batch;
while it is busy, jobs queue up and the next batch takes all of them (up to
`max_batch_size`, all with the same `batch_key`). `submit_alone` runs a function
on the worker by itself (streaming requests use it).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from llava_bridge.errors import LlavaError

__all__ = ["BatcherClosedError", "MicroBatcher"]

logger = logging.getLogger("llava_bridge.backends.local.backend")

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")


class BatcherClosedError(LlavaError):
    """The backend was closed; its worker no longer runs requests."""


@dataclass
class _Entry(Generic[JobT, ResultT]):
    future: Future[ResultT]
    job: JobT | None = None
    alone: Callable[[], ResultT] | None = None
    key: Hashable = None


_CLOSE = object()


class MicroBatcher(Generic[JobT, ResultT]):
    """Collects jobs from many threads and runs them in batches on one worker thread."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[JobT]], Sequence[ResultT]],
        *,
        batch_key: Callable[[JobT], Hashable],
        max_batch_size: int = 8,
        wait_s: float = 0.005,
        name: str = "llava-bridge-worker",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if wait_s < 0:
            raise ValueError("batch wait must not be negative")
        self._run_batch = run_batch
        self._batch_key = batch_key
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self._name = name
        self._queue: queue.SimpleQueue[_Entry[JobT, ResultT] | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- callers' side ------------------------------------------------------------

    def submit(self, job: JobT) -> Future[ResultT]:
        """Queue a job for batching; the future resolves to its result."""
        return self._put(_Entry(Future(), job=job, key=self._batch_key(job)))

    def submit_alone(self, function: Callable[[], ResultT]) -> Future[ResultT]:
        """Run `function` on the worker thread, in no batch."""
        return self._put(_Entry(Future(), alone=function))

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the worker; queued jobs fail with BatcherClosedError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._queue.put(_CLOSE)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def _put(self, entry: _Entry[JobT, ResultT]) -> Future[ResultT]:
        with self._lock:
            if self._closed:
                raise BatcherClosedError("This backend was closed; create a new one to run more requests.")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._queue.put(entry)
        return entry.future

    # -- the worker ---------------------------------------------------------------

    def _loop(self) -> None:
        pending: deque[_Entry[JobT, ResultT]] = deque()
        closing = False
        while not closing:
            if not pending:
                if self._take(self._queue.get(), pending):
                    break
                if pending[-1].alone is None:
                    closing = self._collect(pending, time.monotonic() + self.wait_s)
            closing = self._drain(pending) or closing
            if not closing:
                self._run_next(pending)
        # Nothing is queued after _CLOSE (close() refuses new jobs first), so `pending` is all.
        for entry in pending:
            if entry.future.set_running_or_notify_cancel():
                entry.future.set_exception(
                    BatcherClosedError("The backend was closed before this request ran.")
                )

    def _collect(self, pending: deque[_Entry[JobT, ResultT]], deadline: float) -> bool:
        """Wait until `deadline` for more jobs to fill the batch; True when closing."""
        while sum(1 for e in pending if e.alone is None) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                if self._take(self._queue.get(timeout=remaining), pending):
                    return True
            except queue.Empty:
                return False
        return False

    def _drain(self, pending: deque[_Entry[JobT, ResultT]]) -> bool:
        """Move every queued job into `pending` without waiting; True when closing."""
        while True:
            try:
                if self._take(self._queue.get_nowait(), pending):
                    return True
            except queue.Empty:
                return False

    @staticmethod
    def _take(item: object, pending: deque[_Entry[JobT, ResultT]]) -> bool:
        """Add a queued job to `pending`; True when `item` is the close marker instead."""
        if item is _CLOSE:
            return True
        assert isinstance(item, _Entry)
        pending.append(item)
        return False

    def _run_next(self, pending: deque[_Entry[JobT, ResultT]]) -> None:
        first = pending.popleft()
        if first.alone is not None:
            if first.future.set_running_or_notify_cancel():
                _settle(first.future, first.alone)
            return
        batch = [first]
        for entry in list(pending):
            if len(batch) >= self.max_batch_size:
                break
            if entry.alone is None and entry.key == first.key:
                batch.append(entry)
                pending.remove(entry)
        running = [entry for entry in batch if entry.future.set_running_or_notify_cancel()]
        if not running:
            return
        jobs = [entry.job for entry in running]
        logger.debug("Running a batch of %d (%d waiting)", len(running), len(pending))
        try:
            results = self._run_batch(jobs)  # type: ignore[arg-type]
        except Exception as exc:  # every caller of the batch gets the error
            for entry in running:
                entry.future.set_exception(exc)
            return
        for entry, result in zip(running, results, strict=True):
            entry.future.set_result(result)


def _settle(future: Future[ResultT], function: Callable[[], ResultT]) -> None:
    try:
        result = function()
    except Exception as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)
