"""LlamaIndex integration: `LlavaLLM`, `LlavaToolSpec` and `ImageDescriber`.

Needs the `llama-index` extra: ``pip install "llava-bridge[llama-index]"``.
"""

from __future__ import annotations

from .describer import DEFAULT_IMAGE_PROMPT, ImageDescriber, ImageDescriptionError, NodeFailure
from .llm import LlavaLLM
from .messages import MultiImagePolicy
from .tools import DEFAULT_DESCRIBE_PROMPT, LlavaToolSpec

__all__ = [
    "DEFAULT_DESCRIBE_PROMPT",
    "DEFAULT_IMAGE_PROMPT",
    "ImageDescriber",
    "ImageDescriptionError",
    "LlavaLLM",
    "LlavaToolSpec",
    "MultiImagePolicy",
    "NodeFailure",
]
