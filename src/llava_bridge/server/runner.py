"""Workers that take jobs from the durable queue and feed them to the backend.

`concurrency` workers each claim the oldest queued job and await
`backend.agenerate`, so up to `concurrency` jobs reach the backend at once and a
batching backend can batch them. Synchronous runs and streams share the same
slots. Idle workers sleep until a submit wakes one (no polling). Every change of a
job (claimed, a log line, completed, cancelled) is announced on `changes`, which
wakes the status streams waiting on it. Cancelling a running job cancels its task;
stopping the server puts running jobs back in the queue. A purge task deletes old
results and files.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from llava_bridge.backends.base import Backend
from llava_bridge.server.changes import JobChanges
from llava_bridge.server.images.loader import ImageResolver
from llava_bridge.server.inputs import LlavaInput, error_answer, output_body, to_vision_request
from llava_bridge.server.jobs.protocol import CANCELLED_BODY, CANCELLED_STATUS, CancelOutcome, Job, JobStore
from llava_bridge.server.logcapture import JobLogHandler, job_context, utc_timestamp
from llava_bridge.server.settings import ServerSettings
from llava_bridge.types import VisionChunk, VisionRequest, VisionResult

__all__ = ["JobRunner"]

logger = logging.getLogger("llava_bridge.server")
_PACKAGE_LOGGER = logging.getLogger("llava_bridge")

START_TIMEOUT_BODY = {
    "detail": "The request did not start before its X-Fal-Request-Timeout ran out.",
    "error_type": "request_timeout",
}


class JobRunner:
    """Runs queued jobs on the backend; see the module docstring."""

    def __init__(
        self, store: JobStore, backend: Backend, resolver: ImageResolver, settings: ServerSettings
    ) -> None:
        self.store = store
        self.backend = backend
        self.resolver = resolver
        self.settings = settings
        self.slots = asyncio.Semaphore(settings.concurrency)
        self.changes = JobChanges()
        self._submits: asyncio.Queue[None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._running: dict[str, asyncio.Task[tuple[int, Any, float | None]]] = {}
        self._running_ids: tuple[str, ...] = ()
        self._cancel_pending: set[str] = set()
        self._handler = JobLogHandler(self, self._sink_logs, lambda: self._running_ids)
        self._restore_level: int | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Re-queue jobs a previous process left running, then start workers and the purger."""
        self.changes.bind(asyncio.get_running_loop())
        requeued = await self.store.requeue_interrupted(now=time.time())
        if requeued:
            logger.warning("Re-queued %d job(s) that were running when the server last stopped.", requeued)
        _PACKAGE_LOGGER.addHandler(self._handler)
        if _PACKAGE_LOGGER.level == logging.NOTSET:
            self._restore_level = logging.NOTSET
            _PACKAGE_LOGGER.setLevel(logging.INFO)
        self._tasks = [
            asyncio.create_task(self._work(), name=f"llava-bridge-worker-{n}")
            for n in range(self.settings.concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._purge_forever(), name="llava-bridge-purger"))

    async def stop(self) -> None:
        """Stop workers; jobs they were running go back to the queue."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        _PACKAGE_LOGGER.removeHandler(self._handler)
        if self._restore_level is not None:
            _PACKAGE_LOGGER.setLevel(self._restore_level)
            self._restore_level = None

    def wake(self) -> None:
        """A job was queued: wake one idle worker."""
        self._submits.put_nowait(None)

    # -- queue workers -----------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            async with self.slots:
                job = await self.store.claim(now=time.time())
                if job is not None:
                    self.changes.job_changed(job.id)
                    self.changes.queue_moved()
                    await self._run_claimed(job)
                    continue
            await self._submits.get()  # one token per submit: at most one empty claim per job

    async def _run_claimed(self, job: Job) -> None:
        if job.start_deadline is not None and time.time() > job.start_deadline:
            await self._complete(job.id, 504, START_TIMEOUT_BODY, None)
            return
        task = asyncio.create_task(self._execute(job))
        self._running[job.id] = task
        self._running_ids = tuple(self._running)
        if job.id in self._cancel_pending:
            task.cancel()
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:  # the server is stopping: hand the job back to the queue
            task.cancel()
            await asyncio.wait({task})
            await self.store.requeue(job.id)
            self.changes.job_changed(job.id)
            raise
        finally:
            self._running.pop(job.id, None)
            self._running_ids = tuple(self._running)
            self._cancel_pending.discard(job.id)
        if task.cancelled():
            self._log(job.id, "WARN", "Cancelled while running.")
            await self._complete(job.id, CANCELLED_STATUS, CANCELLED_BODY, None)
        else:
            status, body, inference_time = task.result()
            await self._complete(job.id, status, body, inference_time)

    async def _execute(self, job: Job) -> tuple[int, Any, float | None]:
        """Run one job; every failure becomes an (HTTP status, body) answer."""
        with job_context(self, job.id):
            attempt = f" (attempt {job.attempts})" if job.attempts > 1 else ""
            self._log(job.id, "INFO", f"Started on {self.backend.model_name}{attempt}.")
            started = time.perf_counter()
            try:
                result = await self._generate(job.input, job.image_file)
            except Exception as exc:
                status, body = error_answer(exc)
                if status >= 500:
                    logger.error("Job %s failed: %s: %s", job.id, type(exc).__name__, exc)
                else:
                    self._log(job.id, "ERROR", f"Refused: {exc}")
                return status, body, None
            elapsed = time.perf_counter() - started
            self._log(job.id, "INFO", _speed_line(result, elapsed))
            return 200, output_body(result), elapsed

    async def _complete(self, job_id: str, status: int, body: Any, inference_time: float | None) -> None:
        await self.store.complete(
            job_id, status=status, body=body, now=time.time(), inference_time=inference_time
        )
        self.changes.job_changed(job_id, completed=True)

    # -- shared with synchronous runs ----------------------------------------------------

    async def _request(self, arguments: dict[str, Any], image_file: str | None) -> VisionRequest:
        parsed = LlavaInput.model_validate(arguments)
        image = await self.resolver.load(parsed.image_url, image_file)
        return to_vision_request(parsed, image)

    async def _generate(self, arguments: dict[str, Any], image_file: str | None) -> VisionResult:
        request = await self._request(arguments, image_file)
        return await self.backend.agenerate(request)

    async def run_now(self, arguments: dict[str, Any], image_file: str | None) -> VisionResult:
        """A synchronous run: no queue, but it waits for a free slot."""
        async with self.slots:
            with job_context(self, None):
                return await self._generate(arguments, image_file)

    async def stream_now(
        self, arguments: dict[str, Any], image_file: str | None
    ) -> AsyncGenerator[VisionChunk, None]:
        """Stream an answer; the request is checked (and the image loaded) before the first chunk."""
        async with self.slots:
            with job_context(self, None):
                request = await self._request(arguments, image_file)
            chunks = aiter(self.backend.astream(request))
            try:
                while True:
                    with job_context(self, None):  # entered and left within one step: no yield inside
                        chunk = await anext(chunks, None)
                    if chunk is None:
                        return
                    yield chunk
            finally:
                closer = getattr(chunks, "aclose", None)
                if closer is not None:
                    await closer()

    # -- cancel, logs, purge ---------------------------------------------------------------

    async def cancel(self, job_id: str) -> CancelOutcome:
        outcome = await self.store.cancel(job_id, now=time.time())
        if outcome == "CANCELLATION_REQUESTED":
            task = self._running.get(job_id)
            if task is not None:
                task.cancel()
            else:
                self._cancel_pending.add(job_id)
        self.changes.job_changed(job_id, completed=outcome == "OK")
        if outcome == "OK":
            self.changes.queue_moved()
        return outcome

    def _log(self, job_id: str, level: str, message: str) -> None:
        self._sink_logs((job_id,), level, message)

    def _sink_logs(self, job_ids: Sequence[str], level: str, message: str) -> None:
        """Store log lines; callable from any thread, in order with later job updates.

        Watchers are woken after the line is handed to the store, so their next read sees it.
        """
        self.store.append_logs(job_ids, level, message, utc_timestamp())
        self.changes.logged_threadsafe(job_ids)

    async def purge_once(self) -> None:
        now = time.time()
        cutoff = now - self.settings.result_retention_s
        jobs = await self.store.purge_jobs(completed_before=cutoff)
        files = await self.store.purge_files(now=now)
        if jobs or files:
            logger.info("Purged %d old result(s) and %d expired file(s).", jobs, files)

    async def _purge_forever(self) -> None:
        while True:
            try:
                await self.purge_once()
            except Exception:
                logger.exception("Purging old results failed; will retry.")
            await asyncio.sleep(self.settings.purge_interval_s)


def _speed_line(result: VisionResult, elapsed: float) -> str:
    tokens = result.usage.completion_tokens
    rate = f", {tokens / elapsed:.1f} tokens/s" if elapsed > 0 and tokens else ""
    batch = int(result.metrics.get("batch_size", 1))
    together = f", in a batch of {batch}" if batch > 1 else ""
    return f"Completed in {elapsed:.2f} s: {tokens} tokens{rate}{together}."
