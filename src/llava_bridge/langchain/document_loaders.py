"""`LlavaImageLoader`: one LangChain `Document` per image, its text LLaVA's description."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from langchain_core.document_loaders import BaseLoader
from langchain_core.documents import Document
from pydantic import SecretStr

from llava_bridge import errors
from llava_bridge.backends.base import Backend
from llava_bridge.defaults import DEFAULT_ADAPTER_TIMEOUT_S, DESCRIBE_PROMPT, IMAGE_SUFFIXES
from llava_bridge.images import ImageInput
from llava_bridge.langchain import settings
from llava_bridge.langchain._backend import build_fal_backend, check_backend
from llava_bridge.types import DEFAULT_MAX_NEW_TOKENS, VisionRequest, VisionResult

__all__ = ["DEFAULT_PROMPT", "IMAGE_SUFFIXES", "ImageFailure", "LlavaImageLoader"]

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = DESCRIBE_PROMPT
_PER_IMAGE_ERRORS = (
    errors.InvalidRequestError,
    errors.UnprocessableEntityError,
    errors.BadRequestError,
    errors.JobFailedError,
)
"""Failures that concern one image; any other error (credentials, network) stops the load."""


@dataclass(frozen=True)
class ImageFailure:
    """An image that was skipped, and why."""

    source: str
    error: Exception


class LlavaImageLoader(BaseLoader):
    """Describe images with LLaVA into Documents, for RAG over image collections.

    Give `sources` (local paths, http(s) URLs or data URIs) and/or a `directory`
    with a `glob`. Local files are read because you named them; URLs are passed to
    the backend as they are. Each Document's `page_content` is the description,
    its metadata the `source`, `mime_type`, `width`, `height`, `size_bytes` (when
    known), `model` and `request_id`. Up to `max_concurrency` images are described
    at once; Documents come back in input order. An image that fails (not an
    image, rejected by the server) is skipped and recorded in `failures`
    (`on_error="skip"`) or raised (`on_error="raise"`).

    The default FalBackend gives each image a whole-call deadline of `timeout` seconds
    (`DEFAULT_ADAPTER_TIMEOUT_S`, 120 s, unless given; None: no limit); a job still
    queued or running then is cancelled. With `backend=`, set these on that backend:
    `api_key`, `base_url`, `timeout` and `max_retries` next to it raise ConfigurationError.
    """

    def __init__(
        self,
        sources: str | PathLike[str] | Sequence[str | PathLike[str]] = (),
        *,
        directory: str | PathLike[str] | None = None,
        glob: str = "**/*",
        prompt: str = DEFAULT_PROMPT,
        backend: Backend | None = None,
        model: str | None = None,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        timeout: float | None = DEFAULT_ADAPTER_TIMEOUT_S,
        max_retries: int | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        max_concurrency: int = 4,
        show_progress: bool = False,
        on_error: Literal["skip", "raise"] = "skip",
    ) -> None:
        if max_concurrency < 1:
            raise errors.ConfigurationError("max_concurrency must be at least 1.")
        if on_error not in ("skip", "raise"):
            raise errors.ConfigurationError(f"on_error must be 'skip' or 'raise', not {on_error!r}.")
        if isinstance(sources, (str, PathLike)):
            sources = [sources]
        self.sources: list[str | PathLike[str]] = list(sources)
        self.directory = Path(directory) if directory is not None else None
        self.glob = glob
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.max_concurrency = max_concurrency
        self.show_progress = show_progress
        self.on_error = on_error
        self.failures: list[ImageFailure] = []
        self._backend: Backend | None = check_backend(backend)
        self._fal_options: dict[str, Any] = {
            "model": model,
            "api_key": SecretStr(api_key) if isinstance(api_key, str) else api_key,
            "base_url": base_url,
            "timeout": timeout,
            "max_retries": max_retries,
        }
        if backend is not None:
            given = {k: v for k, v in self._fal_options.items() if v is not None}
            if given.get("timeout") == DEFAULT_ADAPTER_TIMEOUT_S:
                del given["timeout"]
            names = {key: key for key in given}
            settings.check_backend_conflicts(type(self).__name__, {"backend": backend, **given}, names)
        if self.directory is not None and not self.directory.is_dir():
            raise errors.ConfigurationError(f"{str(self.directory)!r} is not a directory.")
        if not self.sources and self.directory is None:
            raise errors.ConfigurationError("Give image sources, or a directory (and glob) to find them in.")

    def get_backend(self) -> Backend:
        """The backend images go to (the default FalBackend is made on first use)."""
        if self._backend is None:
            self._backend = build_fal_backend(**self._fal_options)
        return self._backend

    def __repr__(self) -> str:
        return f"LlavaImageLoader(sources={len(self.sources)}, directory={str(self.directory)!r})"

    # -- what to load -----------------------------------------------------------------

    def image_sources(self) -> list[str | PathLike[str]]:
        """Every source to describe: the given ones, then the directory's images in sorted order."""
        found: list[str | PathLike[str]] = list(self.sources)
        if self.directory is not None:
            matches = sorted(p for p in self.directory.glob(self.glob) if p.is_file())
            found.extend(p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES)
        return found

    def _request(self, source: str | PathLike[str]) -> VisionRequest:
        image = ImageInput.coerce(source, allow_paths=True)
        return VisionRequest(
            prompt=self.prompt,
            image=image,
            max_new_tokens=self.max_new_tokens,
            model=self._fal_options["model"],
        )

    def _document(self, request: VisionRequest, result: VisionResult) -> Document:
        image = request.image
        assert image is not None
        size = image.size
        metadata: dict[str, Any] = {
            "source": image.source,
            "mime_type": image.mime_type,
            "width": size[0] if size else None,
            "height": size[1] if size else None,
            "size_bytes": len(image.data) if image.data is not None else None,
            "model": result.model or self.get_backend().model_name,
            "request_id": result.request_id,
        }
        return Document(
            page_content=result.text, metadata={k: v for k, v in metadata.items() if v is not None}
        )

    # -- sync -----------------------------------------------------------------------------

    def _describe(self, source: str | PathLike[str]) -> Document | ImageFailure:
        try:
            request = self._request(source)
            return self._document(request, self.get_backend().generate(request))
        except _PER_IMAGE_ERRORS as exc:
            return self._failure(source, exc)

    def lazy_load(self) -> Iterator[Document]:
        """Describe the images with a pool of `max_concurrency` threads, yielding in input order."""
        sources = self.image_sources()
        progress = self._progress(len(sources))
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="llava-loader")
        window: deque[Future[Document | ImageFailure]] = deque()
        try:
            for source in sources:
                window.append(pool.submit(self._describe, source))
                if len(window) >= self.max_concurrency:
                    yield from self._collect(window.popleft().result(), progress)
            while window:
                yield from self._collect(window.popleft().result(), progress)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if progress is not None:
                progress.close()

    # -- async ----------------------------------------------------------------------------

    async def _adescribe(self, source: str | PathLike[str]) -> Document | ImageFailure:
        try:
            request = await asyncio.to_thread(self._request, source)
            return self._document(request, await self.get_backend().agenerate(request))
        except _PER_IMAGE_ERRORS as exc:
            return self._failure(source, exc)

    async def alazy_load(self) -> AsyncIterator[Document]:
        """Describe up to `max_concurrency` images at once, yielding in input order."""
        sources = await asyncio.to_thread(self.image_sources)
        progress = self._progress(len(sources))
        window: deque[asyncio.Task[Document | ImageFailure]] = deque()
        try:
            for source in sources:
                window.append(asyncio.ensure_future(self._adescribe(source)))
                if len(window) >= self.max_concurrency:
                    for document in self._collect(await window.popleft(), progress):
                        yield document
            while window:
                for document in self._collect(await window.popleft(), progress):
                    yield document
        finally:
            for task in window:
                task.cancel()
            if window:
                await asyncio.gather(*window, return_exceptions=True)
            if progress is not None:
                progress.close()

    # -- shared -----------------------------------------------------------------------------

    def _failure(self, source: str | PathLike[str], error: Exception) -> ImageFailure:
        label = _label(source)
        if self.on_error == "raise":
            error.add_note(f"while describing image {label}")
            raise error
        logger.warning("Skipped image %s: %s", label, error)
        return ImageFailure(label, error)

    def _collect(self, outcome: Document | ImageFailure, progress: Any) -> Iterator[Document]:
        if progress is not None:
            progress.update(1)
        if isinstance(outcome, ImageFailure):
            self.failures.append(outcome)
        else:
            yield outcome

    def _progress(self, total: int) -> Any:
        if not self.show_progress:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            raise errors.ConfigurationError(
                "show_progress=True needs tqdm; from a clone of the repository: pip install -e '.[progress]'."
            ) from None
        return tqdm(total=total, desc="Describing images", unit="image")


def _label(source: str | PathLike[str]) -> str:
    text = str(source)
    if text.startswith("data:"):
        return "data URI"
    return text if len(text) <= 120 else text[:117] + "..."
