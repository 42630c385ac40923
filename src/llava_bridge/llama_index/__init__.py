"""LlamaIndex integration: `LlavaLLM`, `LlavaToolSpec` and `ImageDescriber`.

Needs the `llama-index` extra: ``pip install "llava-bridge[llama-index]"``.
"""

from __future__ import annotations

from .._extras import require_extra

require_extra("llama-index", "llama_index.core", what="llava_bridge.llama_index")

from .describer import DEFAULT_IMAGE_PROMPT, ImageDescriber, ImageDescriptionError, NodeFailure  # noqa: E402 (the extra is checked first)
from .llm import LlavaLLM  # noqa: E402 (the extra is checked first)
from .messages import MultiImagePolicy  # noqa: E402 (the extra is checked first)
from .tools import DEFAULT_DESCRIBE_PROMPT, LlavaToolSpec  # noqa: E402 (the extra is checked first)

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
