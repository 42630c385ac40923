"""`ImageDescriber`: an ingestion step that writes LLaVA's description of each image into its node."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode, TransformComponent
from pydantic import SecretStr
from tqdm.auto import tqdm

from llava_bridge.backends.base import Backend
from llava_bridge.defaults import DESCRIBE_PROMPT
from llava_bridge.errors import AuthenticationError, ConfigurationError, LlavaError, PermissionDeniedError
from llava_bridge.images import ImageInput
from llava_bridge.llama_index._backend import (
    DEFAULT_TIMEOUT,
    TimeoutSetting,
    ensure_picklable,
    resolve_backend,
    restore_with_backend,
)
from llava_bridge.llama_index.images import image_from_node, node_has_image
from llava_bridge.types import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS_LIMIT, VisionRequest

__all__ = ["DEFAULT_IMAGE_PROMPT", "ImageDescriber", "ImageDescriptionError", "NodeFailure"]

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_PROMPT = DESCRIBE_PROMPT

_PICKLE_ADVICE = (
    "IngestionPipeline pickles its steps when run with num_workers > 1: run it without "
    "num_workers, since ImageDescriber already sends num_workers requests at once itself."
)

_FATAL = (ConfigurationError, AuthenticationError, PermissionDeniedError)
"""Errors every node would hit alike: raised at once instead of collected."""


@dataclass(frozen=True)
class NodeFailure:
    """One node whose image could not be described."""

    node_id: str
    error: LlavaError

    def __str__(self) -> str:
        return f"node {self.node_id}: {type(self.error).__name__}: {self.error}"


class ImageDescriptionError(LlavaError):
    """Some images could not be described; `failures` lists each node and its error."""

    def __init__(self, failures: Sequence[NodeFailure], total: int) -> None:
        shown = "\n".join(f"- {failure}" for failure in failures[:5])
        more = f"\n- ... and {len(failures) - 5} more" if len(failures) > 5 else ""
        super().__init__(
            f"{len(failures)} of {total} images could not be described:\n{shown}{more}\n"
            "Fix those images, or set on_error='skip' (drop those nodes) or 'keep' (keep them "
            "undescribed, with the error in metadata)."
        )
        self.failures = tuple(failures)


Outcome = str | NodeFailure


class ImageDescriber(TransformComponent):
    """Describes the image of each node with LLaVA, so any text embedding model can index it.

    Takes `ImageNode`s, `ImageDocument`s (and `Node`s with an `image_resource`), and
    nodes whose metadata holds an image path or URL under `image_metadata_keys`;
    other nodes pass through unchanged. The description goes into the node text
    (after any text already there) or, with `output="metadata"`, into
    `metadata[metadata_key]`.

    Up to `num_workers` requests run at once, inside this component (threads when
    called synchronously, tasks when awaited): do not use the pipeline's own
    `num_workers`. Per-node errors are collected; `on_error` says whether to raise
    them together ("raise"), drop those nodes ("skip") or keep them undescribed
    with the error in `metadata[metadata_key + "_error"]` ("keep").

    The pipeline cache key holds the settings that change the output (prompt,
    output, model, ...), not the backend object nor `num_workers`, `show_progress`
    or `in_place`. Note that LlamaIndex keys the cache on node text and metadata,
    not image bytes: keep each image's identity (e.g. `file_path`) in its metadata.
    """

    prompt: str = Field(
        default=DEFAULT_IMAGE_PROMPT, min_length=1, description="What to ask about each image."
    )
    output: Literal["text", "metadata"] = Field(default="text", description="Where the description goes.")
    metadata_key: str = Field(default="image_description", description="Metadata key for output='metadata'.")
    image_metadata_keys: list[str] = Field(
        default_factory=lambda: ["image_path", "image_url"],
        description="Metadata keys that may hold an image path or URL on ordinary text nodes.",
    )
    max_new_tokens: int = Field(default=DEFAULT_MAX_NEW_TOKENS, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    model_name: str = Field(default="", description="The backend's model (set from the backend).")
    on_error: Literal["raise", "skip", "keep"] = Field(default="raise")
    num_workers: int = Field(default=4, ge=1, exclude=True, description="Requests at once.")
    show_progress: bool = Field(default=False, exclude=True)
    in_place: bool = Field(default=True, exclude=True, description="Write into the given nodes.")

    _backend: Backend = PrivateAttr()

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        model: str | None = None,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        timeout: TimeoutSetting = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        **fields: Any,
    ) -> None:
        chosen = resolve_backend(
            backend,
            model=model,
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
        )
        fields["model_name"] = chosen.model_name
        super().__init__(**fields)
        self._backend = chosen

    @classmethod
    def class_name(cls) -> str:
        return "LlavaImageDescriber"

    @property
    def backend(self) -> Backend:
        return self._backend

    # -- sync: a bounded thread pool ------------------------------------------------------

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        nodes = self._own(nodes)
        jobs = [index for index, node in enumerate(nodes) if self._has_image(node)]
        outcomes: dict[int, Outcome] = {}
        with self._progress(len(jobs)) as bar:
            if self.num_workers == 1 or len(jobs) <= 1:
                for index in jobs:
                    outcomes[index] = _outcome(self._describe, nodes[index])
                    bar.update(1)
            else:
                outcomes = self._run_threads(nodes, jobs, bar.update)
        return self._apply(nodes, outcomes)

    def _run_threads(
        self, nodes: list[BaseNode], jobs: list[int], advance: Callable[[int], object]
    ) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        with ThreadPoolExecutor(min(self.num_workers, len(jobs)), "llava-describe") as pool:
            futures: dict[Future[Outcome], int] = {
                pool.submit(_outcome, self._describe, nodes[index]): index for index in jobs
            }
            pending: Iterable[Future[Outcome]] = futures
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    error = future.exception()
                    if error is not None:
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise error
                    outcomes[futures[future]] = future.result()
                    advance(1)
        return outcomes

    def _describe(self, node: BaseNode) -> str:
        return self._backend.generate(self._request(self._image(node))).text.strip()

    # -- async: bounded tasks -----------------------------------------------------------

    async def acall(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        nodes = self._own(nodes)
        jobs = [index for index, node in enumerate(nodes) if self._has_image(node)]
        semaphore = asyncio.Semaphore(self.num_workers)

        async def job(index: int) -> tuple[int, Outcome]:
            async with semaphore:
                return index, await _aoutcome(self._adescribe, nodes[index])

        outcomes: dict[int, Outcome] = {}
        tasks = [asyncio.ensure_future(job(index)) for index in jobs]
        with self._progress(len(jobs)) as bar:
            try:
                for next_done in asyncio.as_completed(tasks):
                    index, outcome = await next_done
                    outcomes[index] = outcome
                    bar.update(1)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return self._apply(nodes, outcomes)

    async def _adescribe(self, node: BaseNode) -> str:
        # Reading a path or decoding bytes happens off the event loop; URLs are not fetched.
        image = await asyncio.to_thread(self._image, node)
        return (await self._backend.agenerate(self._request(image))).text.strip()

    # -- the IO-free parts ----------------------------------------------------------------

    def _own(self, nodes: Sequence[BaseNode]) -> list[BaseNode]:
        return list(nodes) if self.in_place else copy.deepcopy(list(nodes))

    def _has_image(self, node: BaseNode) -> bool:
        return node_has_image(node, self.image_metadata_keys)

    def _image(self, node: BaseNode) -> ImageInput:
        return image_from_node(node, self.image_metadata_keys)

    def _request(self, image: ImageInput) -> VisionRequest:
        """One question about one image; the backend fits it to its context."""
        return VisionRequest(
            prompt=self.prompt, image=image, max_new_tokens=self.max_new_tokens, temperature=self.temperature
        )

    def _progress(self, total: int) -> Any:
        return tqdm(total=total, desc="Describing images", unit="image", disable=not self.show_progress)

    def _apply(self, nodes: list[BaseNode], outcomes: dict[int, Outcome]) -> list[BaseNode]:
        """Write descriptions; handle failures as `on_error` says."""
        failures = [(i, o) for i, o in sorted(outcomes.items()) if isinstance(o, NodeFailure)]
        if failures and self.on_error == "raise":
            raise ImageDescriptionError([f for _, f in failures], total=len(outcomes))
        if failures:
            logger.warning(
                "%d of %d images could not be described (%s); first: %s",
                len(failures),
                len(outcomes),
                "nodes dropped" if self.on_error == "skip" else "kept undescribed",
                failures[0][1],
            )
        dropped = {i for i, _ in failures} if self.on_error == "skip" else set()
        for index, outcome in outcomes.items():
            if isinstance(outcome, NodeFailure):
                if self.on_error == "keep":
                    _mark_failed(nodes[index], f"{self.metadata_key}_error", outcome)
            else:
                self._write(nodes[index], outcome)
        return [node for index, node in enumerate(nodes) if index not in dropped]

    def _write(self, node: BaseNode, description: str) -> None:
        if self.output == "metadata":
            node.metadata[self.metadata_key] = description
            return
        existing = node.get_content(metadata_mode=MetadataMode.NONE).strip()
        node.set_content(f"{existing}\n\n{description}" if existing else description)

    # -- pickling keeps the backend (BaseComponent would silently drop it) ----------------

    def __getstate__(self) -> dict[Any, Any]:
        ensure_picklable(self._backend, "ImageDescriber", _PICKLE_ADVICE)
        return super().__getstate__()

    def __setstate__(self, state: dict[Any, Any]) -> None:
        restore_with_backend(self, state)


def _outcome(describe: Callable[[BaseNode], str], node: BaseNode) -> Outcome:
    try:
        return describe(node)
    except _FATAL:
        raise
    except LlavaError as error:
        return NodeFailure(node.node_id, error)


async def _aoutcome(describe: Callable[[BaseNode], Any], node: BaseNode) -> Outcome:
    try:
        description: str = await describe(node)
        return description
    except _FATAL:
        raise
    except LlavaError as error:
        return NodeFailure(node.node_id, error)


def _mark_failed(node: BaseNode, key: str, failure: NodeFailure) -> None:
    node.metadata[key] = f"{type(failure.error).__name__}: {failure.error}"
    for excluded in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
        if key not in excluded:
            excluded.append(key)
