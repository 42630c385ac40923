"""llava-bridge: LLaVA Llama3 8B (on fal or your own GPU) for LangChain and LlamaIndex."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llava_bridge._version import __version__
from llava_bridge.backends.base import Backend
from llava_bridge.backends.fake import FakeBackend
from llava_bridge.errors import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContextOverflowError,
    DeadlineExceededError,
    InvalidImageError,
    InvalidPromptError,
    InvalidRequestError,
    JobFailedError,
    LlavaError,
    MissingCredentialsError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServerUnreachableError,
    UnprocessableEntityError,
    UnsupportedContentError,
)
from llava_bridge.images import ImageInput, ResizePolicy
from llava_bridge.types import Message, Usage, VisionChunk, VisionRequest, VisionResult

if TYPE_CHECKING:
    from llava_bridge.backends.fal.backend import (
        AsyncFalRequestHandle,
        FalBackend,
        FalRequestHandle,
        FalStatus,
        LogLine,
    )
    from llava_bridge.backends.local.backend import TransformersBackend
    from llava_bridge.backends.openai_compat.backend import OpenAICompatBackend

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousSubmitError",
    "AuthenticationError",
    "Backend",
    "BadRequestError",
    "ConfigurationError",
    "ContextOverflowError",
    "DeadlineExceededError",
    "AsyncFalRequestHandle",
    "FakeBackend",
    "FalBackend",
    "FalRequestHandle",
    "FalStatus",
    "ImageInput",
    "InvalidImageError",
    "InvalidPromptError",
    "InvalidRequestError",
    "JobFailedError",
    "LlavaError",
    "LogLine",
    "Message",
    "MissingCredentialsError",
    "NotFoundError",
    "OpenAICompatBackend",
    "PermissionDeniedError",
    "RateLimitError",
    "ResizePolicy",
    "ServerError",
    "ServerUnreachableError",
    "TransformersBackend",
    "UnprocessableEntityError",
    "UnsupportedContentError",
    "Usage",
    "VisionChunk",
    "VisionRequest",
    "VisionResult",
    "__version__",
]

_LAZY = {
    "AsyncFalRequestHandle": ".backends.fal.backend",
    "FalBackend": ".backends.fal.backend",
    "FalRequestHandle": ".backends.fal.backend",
    "FalStatus": ".backends.fal.backend",
    "LogLine": ".backends.fal.backend",
    "OpenAICompatBackend": ".backends.openai_compat.backend",
    "TransformersBackend": ".backends.local.backend",
}


def __getattr__(name: str) -> Any:
    """Import backends on first use, so `import llava_bridge` stays light."""
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name], __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'llava_bridge' has no attribute {name!r}")
