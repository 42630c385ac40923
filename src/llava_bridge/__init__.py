"""llava-bridge: LLaVA Llama3 8B (on fal or your own GPU) for LangChain and LlamaIndex."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .backends.base import Backend
from .backends.fake import FakeBackend
from .errors import (
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
    UnprocessableEntityError,
    UnsupportedContentError,
)
from .images import ImageInput, ResizePolicy
from .types import Message, Usage, VisionChunk, VisionRequest, VisionResult

if TYPE_CHECKING:
    from .backends.fal import AsyncFalRequestHandle, FalBackend, FalRequestHandle, FalStatus, LogLine
    from .backends.openai_compat import OpenAICompatBackend
    from .backends.transformers import TransformersBackend

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
    "AsyncFalRequestHandle": ".backends.fal",
    "FalBackend": ".backends.fal",
    "FalRequestHandle": ".backends.fal",
    "FalStatus": ".backends.fal",
    "LogLine": ".backends.fal",
    "OpenAICompatBackend": ".backends.openai_compat",
    "TransformersBackend": ".backends.transformers",
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
