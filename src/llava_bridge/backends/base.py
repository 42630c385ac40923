"""The `Backend` protocol every backend implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Protocol, Self, runtime_checkable

from llava_bridge.types import VisionChunk, VisionRequest, VisionResult

__all__ = ["Backend", "Closeable"]


@runtime_checkable
class Backend(Protocol):
    """Something that answers a `VisionRequest`: fal, a local model, a server, a fake.

    `context_window` is the token window the backend's model has; `exact_token_counts`
    says whether `count_tokens` uses the model's own tokenizer or an estimate.

    A backend fits each request to its context (`prompts.fit_to_context`: oldest
    turns dropped, `ContextOverflowError` when the latest cannot fit) and cuts its
    answer at `request.stop`; callers such as the framework adapters do neither.
    """

    @property
    def model_name(self) -> str:
        """The model or endpoint that answers."""
        ...

    @property
    def context_window(self) -> int:
        """Tokens the model sees in all: prompt, image and answer."""
        ...

    @property
    def exact_token_counts(self) -> bool:
        """Whether `count_tokens` uses the model's own tokenizer."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in the model's prompt (exact or estimated)."""
        ...

    def generate(self, request: VisionRequest) -> VisionResult:
        """Answer the request, blocking."""
        ...

    async def agenerate(self, request: VisionRequest) -> VisionResult:
        """Answer the request without blocking the event loop."""
        ...

    def stream(self, request: VisionRequest) -> Iterator[VisionChunk]:
        """Yield the answer as it is made; the last chunk carries the result."""
        ...

    def astream(self, request: VisionRequest) -> AsyncIterator[VisionChunk]:
        """Async version of `stream`."""
        ...


class Closeable:
    """`with` and `async with` for a backend that holds something (connections, a model, a
    thread): `close()` on the way out, or `aclose()`, which is `close()` unless overridden."""

    def close(self) -> None:
        """Release what the backend holds."""

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
