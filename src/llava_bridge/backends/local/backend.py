"""`TransformersBackend`: LLaVA Llama3 8B in this process, on your GPU (or CPU).

Needs the `[local]` extra (`pip install -e ".[local]"` from a clone); importing this
module does not import torch or transformers, they load with the model.

Concurrent requests, from threads (`generate`) or asyncio tasks (`agenerate`),
are micro-batched: one worker thread owns the model, collects requests for
`batch_wait_ms` and runs up to `max_batch_size` of them as one left-padded batch.
A streaming request (`stream`/`astream`) runs alone, not batched, so that its
tokens can be sent as they are made. Progress (loading, batch sizes, tokens/s)
is logged to `logging.getLogger("llava_bridge.backends.local.backend")` at INFO.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from llava_bridge.backends.base import Closeable
from llava_bridge.backends.image_urls.fetcher import ImageFetcher
from llava_bridge.backends.image_urls.options import fetcher_for, with_fetched_image
from llava_bridge.backends.local.batcher import MicroBatcher
from llava_bridge.backends.local.loading import LoadOptions, check_local_extra
from llava_bridge.errors import ConfigurationError, InvalidImageError
from llava_bridge.prompts import CONTEXT_WINDOW, fit_to_context, render_llama3
from llava_bridge.types import VisionChunk, VisionRequest, VisionResult

if TYPE_CHECKING:
    from typing import Self

    from llava_bridge.backends.local.engine import LocalEngine, LocalJob

__all__ = ["DEFAULT_LOCAL_MODEL", "TransformersBackend"]

DEFAULT_LOCAL_MODEL = "xtuner/llava-llama-3-8b-v1_1-transformers"
_END = object()


class TransformersBackend(Closeable):
    """LLaVA in process with transformers: exact token counts, micro-batching, streaming.

    The model loads on first use, or when `load()` is called. Greedy decoding unless
    the request sets a temperature above 0.
    """

    exact_token_counts = True

    def __init__(
        self,
        model: str = DEFAULT_LOCAL_MODEL,
        *,
        device: str | None = None,
        device_map: str | dict[str, Any] | None = None,
        dtype: Any = None,
        quantization: Literal["4bit", "8bit"] | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        max_batch_size: int = 8,
        batch_wait_ms: float = 5.0,
        context_window: int | None = None,
        fetch_urls: bool | ImageFetcher = False,
        allow_private_urls: bool = False,
    ) -> None:
        """A LLaVA checkpoint, loaded lazily in this process.

        Args:
            model: A Hub id or a local directory of a LLaVA checkpoint in Hugging Face
                format; the fixes its processor and generation config need are applied
                on load.
            device: Where the weights go (`"cuda"`, `"cuda:1"`, `"mps"`, `"cpu"`);
                default: CUDA when available, else Apple's MPS, else the CPU.
            device_map: An accelerate device map instead (`"auto"` spreads the model
                over several GPUs); not with `device`.
            dtype: The weights' dtype (`torch.float16`, `"bfloat16"`, `"fp16"`...);
                default: bfloat16 on CUDA, float16 on MPS, float32 on the CPU.
            quantization: `"4bit"` or `"8bit"` through bitsandbytes (a CUDA GPU).
            local_files_only: Never download; the model must be in the Hub cache or
                a directory.
            revision: The Hub revision (branch, tag or commit) to load.
            max_batch_size: The most concurrent requests run as one batch.
            batch_wait_ms: How long the worker collects requests before running a
                batch (0: run at once).
            context_window: Tokens the model holds; older turns are trimmed to fit.
                Default: the model's own limit, at most the package's context window.
            fetch_urls: False (default): a URL image is refused (download it and pass
                its bytes). True: fetch it through the SSRF guard (private and loopback
                addresses refused, 20 s, 20 MB, the pixel cap), off the event loop. An
                `ImageFetcher` sets its own guard and limits.
            allow_private_urls: With `fetch_urls=True`, fetch from private and loopback
                addresses too (an image server on your own network).
        """
        if quantization not in (None, "4bit", "8bit"):
            raise ConfigurationError(f"quantization must be '4bit', '8bit' or None, not {quantization!r}.")
        check_local_extra(quantization)
        if device is not None and device_map is not None:
            raise ConfigurationError("Give device= or device_map=, not both.")
        self.model_name = model
        self._options = LoadOptions(
            model=model,
            device=device,
            device_map=device_map,
            dtype=dtype,
            quantization=quantization,
            local_files_only=local_files_only,
            revision=revision,
        )
        self._fetcher = fetcher_for(fetch_urls, allow_private_urls)
        self._own_fetcher = not isinstance(fetch_urls, ImageFetcher)
        self._setup(max_batch_size, batch_wait_ms, context_window)

    @classmethod
    def from_model(
        cls,
        model: Any,
        processor: Any,
        *,
        model_name: str | None = None,
        max_batch_size: int = 8,
        batch_wait_ms: float = 5.0,
        context_window: int | None = None,
    ) -> Self:
        """Wrap a LLaVA model and processor you loaded yourself; the same fixes are applied."""
        check_local_extra()
        from llava_bridge.backends.local.loading import apply_fixes, prepare_loaded

        backend = cls.__new__(cls)
        backend.model_name = model_name or str(getattr(model, "name_or_path", "") or "llava")
        backend._options = LoadOptions(model=backend.model_name)
        backend._fetcher, backend._own_fetcher = None, False
        backend._setup(max_batch_size, batch_wait_ms, context_window)
        apply_fixes(processor, model.config)
        backend._install(processor, model.config)
        backend._engine = backend._make_engine(prepare_loaded(model, processor))
        return backend

    def _setup(self, max_batch_size: int, batch_wait_ms: float, context_window: int | None) -> None:
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ConfigurationError(f"max_batch_size must be a positive integer, not {max_batch_size!r}.")
        if not 0 <= batch_wait_ms <= 1000:
            raise ConfigurationError(f"batch_wait_ms must be between 0 and 1000, not {batch_wait_ms!r}.")
        self.context_window = context_window or CONTEXT_WINDOW
        self._context_window_given = context_window is not None
        self._load_lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()
        self._processor: Any = None
        self._engine: LocalEngine | None = None
        self._batcher: MicroBatcher[LocalJob, VisionResult] = MicroBatcher(
            self._run_batch,
            batch_key=lambda job: job.batch_key,
            max_batch_size=max_batch_size,
            wait_s=batch_wait_ms / 1000,
            name=f"llava-bridge-{self.model_name}",
        )

    # -- loading -----------------------------------------------------------------------

    def load(self) -> Self:
        """Load the processor and the weights now (otherwise the first request does)."""
        self._ensure_engine()
        return self

    def _ensure_processor(self) -> Any:
        if self._processor is None:
            with self._load_lock:
                if self._processor is None:
                    from llava_bridge.backends.local.loading import load_config_and_processor

                    config, processor = load_config_and_processor(self._options)
                    self._install(processor, config)
        return self._processor

    def _install(self, processor: Any, config: Any) -> None:
        text_config = getattr(config, "text_config", config)
        longest = getattr(text_config, "max_position_embeddings", None)
        if not self._context_window_given and isinstance(longest, int):
            self.context_window = min(self.context_window, longest)
        self._processor = processor

    def _ensure_engine(self) -> LocalEngine:
        if self._engine is None:
            processor = self._ensure_processor()
            with self._load_lock:
                if self._engine is None:
                    from llava_bridge.backends.local.loading import load_model

                    self._engine = self._make_engine(load_model(self._options, processor))
        return self._engine

    def _make_engine(self, loaded: Any) -> LocalEngine:
        from llava_bridge.backends.local.engine import LocalEngine

        return LocalEngine(loaded, self._tokenizer_lock)

    # -- the Backend protocol -------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Exact: the number of tokens the model's tokenizer makes of `text`."""
        tokenizer = self._ensure_processor().tokenizer
        with self._tokenizer_lock:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, request: VisionRequest) -> VisionResult:
        job = self._prepare(request)
        return self._batcher.submit(job).result()

    async def agenerate(self, request: VisionRequest) -> VisionResult:
        job = await asyncio.to_thread(self._prepare, request)
        return await asyncio.wrap_future(self._batcher.submit(job))

    def stream(self, request: VisionRequest) -> Iterator[VisionChunk]:
        """Yield text as it is made (this request runs alone); the last chunk has the result."""
        job = self._prepare(request)
        events: queue.SimpleQueue[object] = queue.SimpleQueue()
        cancel = threading.Event()
        future = self._batcher.submit_alone(lambda: self._run_stream(job, events.put, cancel))
        future.add_done_callback(lambda _: events.put(_END))
        try:
            while (item := events.get()) is not _END:
                yield VisionChunk(delta=str(item))
            yield VisionChunk(delta="", result=future.result())
        finally:
            cancel.set()
            future.cancel()

    async def astream(self, request: VisionRequest) -> AsyncIterator[VisionChunk]:
        """Async `stream`: the event loop is never blocked while the model works."""
        job = await asyncio.to_thread(self._prepare, request)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[object] = asyncio.Queue()

        def push(item: object) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening
                pass

        cancel = threading.Event()
        future = self._batcher.submit_alone(lambda: self._run_stream(job, push, cancel))
        future.add_done_callback(lambda _: push(_END))
        try:
            while (item := await events.get()) is not _END:
                yield VisionChunk(delta=str(item))
            yield VisionChunk(delta="", result=future.result())
        finally:
            cancel.set()
            future.cancel()

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker thread; requests still queued fail. The model is released."""
        self._batcher.close()
        self._engine = None
        if self._fetcher is not None and self._own_fetcher:
            self._fetcher.close()

    def __repr__(self) -> str:
        state = "loaded" if self._engine is not None else "not loaded"
        return f"TransformersBackend(model={self.model_name!r}, {state})"

    # -- internals --------------------------------------------------------------------------

    def _prepare(self, request: VisionRequest) -> LocalJob:
        """Trim to the context, render the Llama-3 prompt and decode the image (caller's thread)."""
        from llava_bridge.backends.local.engine import LocalJob

        trimmed, _ = fit_to_context(
            request, context_window=self.context_window, count_tokens=self.count_tokens
        )
        if self._fetcher is not None:
            trimmed = with_fetched_image(trimmed, self._fetcher)
        image = trimmed.image
        if image is not None and image.is_url:
            raise InvalidImageError(
                "TransformersBackend does not fetch image URLs unless asked: pass fetch_urls=True "
                "(SSRF-guarded), or download the image and pass its bytes, a pathlib.Path or a PIL image."
            )
        bos = self._ensure_processor().tokenizer.bos_token or ""
        temperature = trimmed.temperature or 0.0
        return LocalJob(
            prompt=bos + render_llama3(trimmed.messages, trimmed.image_index),
            image=image.to_pil() if image is not None else None,
            max_new_tokens=trimmed.max_new_tokens,
            stop=trimmed.stop,
            sampling=(temperature, trimmed.top_p or 1.0) if temperature > 0 else None,
            model_name=self.model_name,
        )

    def _run_batch(self, jobs: Any) -> list[VisionResult]:
        return self._ensure_engine().run_batch(jobs)

    def _run_stream(
        self, job: LocalJob, emit: Callable[[str], None], cancel: threading.Event
    ) -> VisionResult:
        return self._ensure_engine().run_stream(job, emit, cancel)
