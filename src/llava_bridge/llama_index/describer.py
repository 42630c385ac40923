"""`ImageDescriber`: an ingestion step that writes LLaVA's description of each image into its node."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, Literal

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ImageBlock, MessageRole, TextBlock
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.llm import LLM
from llama_index.core.schema import BaseNode, MetadataMode, TransformComponent
from pydantic import SecretStr
from tqdm.auto import tqdm

from llava_bridge.backends.base import Backend
from llava_bridge.defaults import DESCRIBE_PROMPT
from llava_bridge.errors import ConfigurationError
from llava_bridge.images import ImageInput
from llava_bridge.llama_index._backend import (
    DEFAULT_TIMEOUT,
    TimeoutSetting,
    ensure_picklable,
    resolve_backend,
    restore_with_backend,
)
from llava_bridge.llama_index.describe_outcomes import (
    Described,
    ImageDescriptionError,
    NodeFailure,
    Outcome,
    UnidentifiedImageError,
    aoutcome_of,
    mark_failed,
    outcome_of,
)
from llava_bridge.llama_index.images import image_from_node, node_has_image
from llava_bridge.llama_index.node_identity import (
    IMAGE_SHA256_KEY,
    is_identified,
    looks_binary,
    set_hidden_metadata,
)
from llava_bridge.types import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS_LIMIT, VisionRequest

__all__ = [
    "DEFAULT_IMAGE_PROMPT",
    "ImageDescriber",
    "ImageDescriptionError",
    "NodeFailure",
    "UnidentifiedImageError",
]

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_PROMPT = DESCRIBE_PROMPT

_PICKLE_ADVICE = (
    "IngestionPipeline pickles its steps when run with num_workers > 1: run it without "
    "num_workers, since ImageDescriber already sends num_workers requests at once itself."
)

_LLM_SETTINGS = ("max_new_tokens", "temperature")
"""Fields that a given llm= sets itself."""


class ImageDescriber(TransformComponent):
    """Describes the image of each node with LLaVA, so any text embedding model can index it.

    Takes `ImageNode`s, `ImageDocument`s (and `Node`s with an `image_resource`), and
    nodes whose metadata holds an image path or URL under `image_metadata_keys`;
    `SimpleDirectoryReader` Documents of image files (whose text is the file's raw
    bytes) are read from their `file_path`; other nodes pass through unchanged, with a
    warning for those whose text is binary. The description goes into the node text
    (after any text already there; binary text is dropped) or, with
    `output="metadata"`, into `metadata[metadata_key]`; the image's sha256 goes into
    `metadata["image_sha256"]`.

    Requests go to `backend=` (default: fal, as in `LlavaLLM`), or to `llm=`: a
    configured `LlavaLLM`, or any LlamaIndex LLM that takes `ImageBlock`s, whose own
    settings (model, max tokens, ...) then apply.

    Up to `num_workers` requests run at once, inside this component (threads when
    called synchronously, tasks when awaited): do not use the pipeline's own
    `num_workers`. Per-node errors are collected; `on_error` says whether to raise
    them together ("raise"), drop those nodes ("skip") or keep them undescribed
    with the error in `metadata[metadata_key + "_error"]` ("keep").

    The pipeline cache key holds the settings that change the output (prompt,
    output, model, ...), not the backend object nor `num_workers`, `show_progress`
    or `in_place`. LlamaIndex keys the cache on node text and metadata, not image
    bytes, so a node whose text and metadata do not name its image (no `file_path`,
    `file_name`, `image_id`, `image_sha256`, ...) is refused with
    `UnidentifiedImageError` before any request: run `identify_images(nodes)` first.
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
    model_name: str = Field(default="", description="The backend's or LLM's model (set from it).")
    llm_settings: dict[str, Any] = Field(
        default_factory=dict, description="The settings of the llm= given (part of the cache key)."
    )
    on_error: Literal["raise", "skip", "keep"] = Field(default="raise")
    num_workers: int = Field(default=4, ge=1, exclude=True, description="Requests at once.")
    show_progress: bool = Field(default=False, exclude=True)
    in_place: bool = Field(default=True, exclude=True, description="Write into the given nodes.")

    _backend: Backend | None = PrivateAttr(default=None)
    _llm: LLM | None = PrivateAttr(default=None)

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        llm: LLM | None = None,
        model: str | None = None,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        timeout: TimeoutSetting = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        **fields: Any,
    ) -> None:
        if llm is not None:
            fal: dict[str, Any] = {
                "model": model,
                "api_key": api_key,
                "base_url": base_url,
                "max_retries": max_retries,
            }
            fal["timeout"] = None if timeout is DEFAULT_TIMEOUT else timeout
            _check_llm(llm, backend, fal, fields)
            fields["model_name"] = llm.metadata.model_name
            fields["llm_settings"] = llm.to_dict()
            super().__init__(**fields)
            self._llm = llm
            return
        chosen = resolve_backend(
            backend,
            model=model,
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
        )
        fields["model_name"] = chosen.model_name
        fields.pop("llm_settings", None)
        super().__init__(**fields)
        self._backend = chosen

    @classmethod
    def class_name(cls) -> str:
        return "LlavaImageDescriber"

    @property
    def backend(self) -> Backend | None:
        """The backend that answers (a `LlavaLLM`'s own with llm=; None for another LLM)."""
        backend = getattr(self._llm, "backend", None)
        return backend if isinstance(backend, Backend) else self._backend

    @property
    def llm(self) -> LLM | None:
        """The LLM given as llm=, if any."""
        return self._llm

    # -- sync: a bounded thread pool ------------------------------------------------------

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        nodes = self._own(nodes)
        jobs = self._jobs(nodes)
        outcomes: dict[int, Outcome] = {}
        with self._progress(len(jobs)) as bar:
            if self.num_workers == 1 or len(jobs) <= 1:
                for index in jobs:
                    outcomes[index] = outcome_of(self._describe, nodes[index])
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
                pool.submit(outcome_of, self._describe, nodes[index]): index for index in jobs
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

    def _describe(self, node: BaseNode) -> Described:
        image = self._image(node)
        if self._llm is not None:
            return Described(_answer(self._llm.chat(self._messages(image))), image.sha256)
        assert self._backend is not None
        return Described(self._backend.generate(self._request(image)).text.strip(), image.sha256)

    # -- async: bounded tasks -----------------------------------------------------------

    async def acall(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        owned = await asyncio.to_thread(self._own, nodes)
        jobs = await asyncio.to_thread(self._jobs, owned)
        semaphore = asyncio.Semaphore(self.num_workers)

        async def job(index: int) -> tuple[int, Outcome]:
            async with semaphore:
                return index, await aoutcome_of(self._adescribe, owned[index])

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
        return self._apply(owned, outcomes)

    async def _adescribe(self, node: BaseNode) -> Described:
        # Reading, decoding, hashing and block-building run off the event loop; URLs are not fetched.
        image, messages = await asyncio.to_thread(self._prepare, node)
        if self._llm is not None:
            return Described(_answer(await self._llm.achat(messages)), image.sha256)
        assert self._backend is not None
        return Described((await self._backend.agenerate(self._request(image))).text.strip(), image.sha256)

    def _prepare(self, node: BaseNode) -> tuple[ImageInput, list[ChatMessage]]:
        """The node's image (hashed) and, for llm=, the message that asks about it."""
        image = self._image(node)
        _ = image.sha256
        return image, (self._messages(image) if self._llm is not None else [])

    # -- the IO-free parts ----------------------------------------------------------------

    def _own(self, nodes: Sequence[BaseNode]) -> list[BaseNode]:
        return list(nodes) if self.in_place else copy.deepcopy(list(nodes))

    def _jobs(self, nodes: Sequence[BaseNode]) -> list[int]:
        """The indexes of image nodes; refuses unnamed images, warns about binary text."""
        jobs = [index for index, node in enumerate(nodes) if self._has_image(node)]
        unnamed = [nodes[i].node_id for i in jobs if not is_identified(nodes[i], self.image_metadata_keys)]
        if unnamed:
            raise UnidentifiedImageError(unnamed)
        images = set(jobs)
        binary = [node for i, node in enumerate(nodes) if i not in images and looks_binary(_text(node))]
        if binary:
            names = ", ".join(str(n.metadata.get("file_name") or n.node_id) for n in binary[:3])
            logger.warning(
                "%d node(s) (%s) have binary text that is not an image this step can read; they pass "
                "through unchanged and would be embedded as noise. Remove them before indexing.",
                len(binary),
                names,
            )
        return jobs

    def _has_image(self, node: BaseNode) -> bool:
        return node_has_image(node, self.image_metadata_keys)

    def _messages(self, image: ImageInput) -> list[ChatMessage]:
        block = (
            ImageBlock(url=image.url)
            if image.url is not None
            else ImageBlock(image=image.data, image_mimetype=image.mime_type)
        )
        return [ChatMessage(role=MessageRole.USER, blocks=[block, TextBlock(text=self.prompt)])]

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
                    mark_failed(nodes[index], f"{self.metadata_key}_error", outcome)
            else:
                self._write(nodes[index], outcome)
        return [node for index, node in enumerate(nodes) if index not in dropped]

    def _write(self, node: BaseNode, described: Described) -> None:
        set_hidden_metadata(node, IMAGE_SHA256_KEY, described.image_sha256)
        existing = _text(node).strip()
        if looks_binary(existing):  # a reader's raw file bytes, not text
            existing = ""
            node.set_content("")
        if self.output == "metadata":
            node.metadata[self.metadata_key] = described.text
            return
        node.set_content(f"{existing}\n\n{described.text}" if existing else described.text)

    # -- pickling keeps the backend (BaseComponent would silently drop it) ----------------

    def __getstate__(self) -> dict[Any, Any]:
        if self._llm is not None:
            ensure_picklable(self._llm, "ImageDescriber", _PICKLE_ADVICE)  # type: ignore[arg-type]
        else:
            assert self._backend is not None
            ensure_picklable(self._backend, "ImageDescriber", _PICKLE_ADVICE)
        return super().__getstate__()

    def __setstate__(self, state: dict[Any, Any]) -> None:
        llm = (state.get("__pydantic_private__") or {}).get("_llm")
        if llm is not None:
            fields = {k: v for k, v in state["__dict__"].items() if k not in _LLM_SETTINGS}
            self.__init__(llm=llm, **fields)  # type: ignore[misc]
        else:
            restore_with_backend(self, state)


def _check_llm(llm: LLM, backend: Backend | None, fal: dict[str, Any], fields: dict[str, Any]) -> None:
    """llm= replaces the backend and its settings: giving both is an error."""
    given = [f"{name}=" for name, value in fal.items() if value is not None]
    given += [f"{name}=" for name in _LLM_SETTINGS if name in fields]
    if backend is not None:
        given.insert(0, "backend=")
    if given:
        raise ConfigurationError(
            f"llm= brings its own model and settings, so {', '.join(given)} cannot be given with it; "
            "configure the LLM instead (e.g. LlavaLLM(max_new_tokens=..., timeout=...))."
        )
    if not isinstance(llm, LLM):
        raise ConfigurationError(f"llm= must be a LlamaIndex LLM (e.g. LlavaLLM), not {type(llm).__name__}.")


def _answer(response: ChatResponse) -> str:
    return (response.message.content or "").strip()


def _text(node: BaseNode) -> str:
    return node.get_content(metadata_mode=MetadataMode.NONE)
