"""`LlavaDescriber`, a callable class for `Dataset.map_batches`, and `describe_dataset`.

Each Ray actor builds its own backend from a `BackendSpec` (or a factory function) and
describes its batches on one event loop that lives as long as the actor (Ray Data runs
an async ``__call__`` there), with at most `max_in_flight` requests at a time. A row
whose image is bad, or whose request fails, gets an `error`; only an error that every
row would hit (a missing or rejected key, a bad setting) fails the run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from llava_bridge.backends.base import Backend
from llava_bridge.describe import DEFAULT_DESCRIBE_PROMPT, describe_image
from llava_bridge.errors import ConfigurationError, InvalidRequestError
from llava_bridge.ray.cancel import CANCELLED, NOT_STARTED, CancelSignal
from llava_bridge.ray.columns import image_column_of, image_loader
from llava_bridge.ray.spec import BackendFactory, BackendSpec, build_backend
from llava_bridge.types import DEFAULT_MAX_NEW_TOKENS, VisionRequest

__all__ = ["OUTPUT_COLUMNS", "LlavaDescriber", "describe_dataset"]

OUTPUT_COLUMNS = ("description", "error", "model", "request_id")
"""The columns `LlavaDescriber` adds to each batch."""

HTTP_ACTORS = 2
HTTP_MAX_IN_FLIGHT = 16
HTTP_BATCH_SIZE = 32
HTTP_CPUS_PER_ACTOR = 0.5
"""Defaults for backends that call a server (fal, openai, a fake): waiting, not computing."""
GPU_MAX_IN_FLIGHT = 8
GPU_BATCH_SIZE = 16
"""Defaults for the local backend: one GPU per actor, a few requests for its micro-batcher."""


class LlavaDescriber:
    """Describes the images of a batch; use it as `ds.map_batches(LlavaDescriber, ...)`.

    `image_column` holds bytes (`read_binary_files`), pixel arrays (`read_images`), or
    paths or URLs; by default the first of image, bytes, source, path, url. The batch
    comes back with the columns `description`, `error`, `model` and `request_id` (and without
    the image column when `keep_images` is false: less to move when only the text matters).
    """

    def __init__(
        self,
        backend: BackendSpec | BackendFactory,
        *,
        image_column: str | None = None,
        prompt: str = DEFAULT_DESCRIBE_PROMPT,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        max_in_flight: int = HTTP_MAX_IN_FLIGHT,
        keep_images: bool = True,
        cancel_actor: Any = None,
    ) -> None:
        if max_in_flight < 1:
            raise InvalidRequestError("max_in_flight must be at least 1.")
        VisionRequest(prompt=prompt, max_new_tokens=max_new_tokens)  # bad settings fail here, once
        self.backend: Backend = build_backend(backend)
        self.image_column = image_column
        self.prompt, self.max_new_tokens, self.max_in_flight = prompt, max_new_tokens, max_in_flight
        self.keep_images = keep_images
        self._cancel_actor = cancel_actor
        self._slots: asyncio.Semaphore | None = None
        self._rows: set[asyncio.Task[dict[str, Any]]] = set()
        self._cancelled = False
        self._watcher: asyncio.Task[None] | None = None

    async def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        column = image_column_of(batch.keys(), self.image_column)
        values = list(batch[column])
        if self._cancel_actor is None:
            records = await self._describe_all(values)
        elif await self._cancel_actor.enter.remote():
            records = [_stopped_record(NOT_STARTED) for _ in values]
        else:
            try:
                records = await self._describe_all(values)
            finally:
                await self._cancel_actor.leave.remote()
        for name in OUTPUT_COLUMNS:
            batch[name] = np.array([record[name] for record in records], dtype=object)
        if not self.keep_images and column != "source":
            del batch[column]
        return batch

    async def _describe_all(self, values: list[Any]) -> list[dict[str, Any]]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)  # one per actor: all its batches share it
        if self._cancel_actor is not None and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch_cancel())
        tasks: list[asyncio.Task[dict[str, Any]]] = []
        try:
            async with asyncio.TaskGroup() as group:  # an error every row would hit cancels the rest
                tasks.extend(group.create_task(self._describe_row(value)) for value in values)
                self._rows.update(tasks)
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None
        finally:
            self._rows.difference_update(tasks)
        return [task.result() for task in tasks]

    async def _describe_row(self, value: Any) -> dict[str, Any]:
        assert self._slots is not None
        started = False
        try:
            async with self._slots:
                if self._cancelled:
                    return _stopped_record(NOT_STARTED)
                started = True
                return await describe_image(
                    self.backend, image_loader(value), prompt=self.prompt, max_new_tokens=self.max_new_tokens
                )
        except asyncio.CancelledError:
            if self._cancelled:  # our own cancel (the run was interrupted): the row says so
                return _stopped_record(CANCELLED if started else NOT_STARTED)
            raise

    async def _watch_cancel(self) -> None:
        try:
            await self._cancel_actor.wait_cancelled.remote()
        except Exception:  # the run ended and its signal is gone: no cancel will come
            return
        self._cancelled = True
        for task in list(self._rows):
            task.cancel()  # the backend cancels the row's job before the task ends


def _stopped_record(error: str) -> dict[str, Any]:
    return {"description": None, "model": None, "request_id": None, "error": error}


def describe_dataset(
    ds: Any,
    backend: BackendSpec | BackendFactory,
    *,
    image_column: str | None = None,
    prompt: str = DEFAULT_DESCRIBE_PROMPT,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    actors: int | None = None,
    max_in_flight: int | None = None,
    batch_size: int | None = None,
    num_gpus: float | None = None,
    num_cpus: float | None = None,
    keep_images: bool = True,
    cancel_signal: CancelSignal | None = None,
) -> Any:
    """`ds` with `description`, `error`, `model` and `request_id` columns, described lazily.

    Defaults: for the local backend, one GPU per actor, one actor per GPU of the cluster,
    8 requests in flight per actor; for backends that call a server (fal, openai, fake),
    2 actors of half a CPU each with 16 requests in flight. `actors` x `max_in_flight`
    is the run's concurrency: keep it within your fal account's or server's limit.
    """
    from ray.data import ActorPoolStrategy

    import ray

    gpu = isinstance(backend, BackendSpec) and backend.uses_gpu
    if gpu:
        num_gpus = 1 if num_gpus is None else num_gpus
        resources: dict[str, float] = ray.cluster_resources() if ray.is_initialized() else {}  # type: ignore[no-untyped-call]
        cluster_gpus = int(resources.get("GPU", 0))
        if ray.is_initialized() and num_gpus > 0 and cluster_gpus == 0:
            raise ConfigurationError(
                "The local backend runs one model per actor on a GPU of its own, and this Ray "
                "cluster has no GPU: add GPU nodes, describe in one process (without --engine ray), "
                "or pass num_gpus=0 to describe_dataset to run on CPUs (slow)."
            )
        actors = actors or max(cluster_gpus, 1)
    actors = actors or HTTP_ACTORS
    if actors < 1:
        raise InvalidRequestError("actors must be at least 1.")
    constructor = {
        "backend": backend,
        "image_column": image_column,
        "prompt": prompt,
        "max_new_tokens": max_new_tokens,
        "max_in_flight": max_in_flight or (GPU_MAX_IN_FLIGHT if gpu else HTTP_MAX_IN_FLIGHT),
        "keep_images": keep_images,
        "cancel_actor": cancel_signal.actor if cancel_signal is not None else None,
    }
    return ds.map_batches(
        LlavaDescriber,
        fn_constructor_kwargs=constructor,
        compute=ActorPoolStrategy(size=actors),
        batch_size=batch_size or (GPU_BATCH_SIZE if gpu else HTTP_BATCH_SIZE),
        batch_format="numpy",
        zero_copy_batch=False,
        num_gpus=num_gpus,
        num_cpus=num_cpus if num_cpus is not None else (1 if gpu else HTTP_CPUS_PER_ACTOR),
        udf_modifying_row_count=False,
    )
