"""LlamaIndex integration: `LlavaLLM`, `LlavaToolSpec` and `ImageDescriber`.

Needs the `llama-index` extra; from a clone of the repository: ``pip install -e ".[llama-index]"``.
"""

from __future__ import annotations

from llava_bridge._extras import require_extra

require_extra("llama-index", "llama_index.core", what="llava_bridge.llama_index")

from llava_bridge.llama_index.describer import (  # noqa: E402 (the extra is checked first)
    DEFAULT_IMAGE_PROMPT,
    ImageDescriber,
    ImageDescriptionError,
    NodeFailure,
    UnidentifiedImageError,
)
from llava_bridge.llama_index.llm import LlavaLLM  # noqa: E402 (the extra is checked first)
from llava_bridge.llama_index.messages import MultiImagePolicy  # noqa: E402 (the extra is checked first)
from llava_bridge.llama_index.node_identity import identify_images  # noqa: E402 (the extra is checked first)
from llava_bridge.llama_index.tools import DEFAULT_DESCRIBE_PROMPT, LlavaToolSpec  # noqa: E402 (the extra is checked first)

__all__ = [
    "DEFAULT_DESCRIBE_PROMPT",
    "DEFAULT_IMAGE_PROMPT",
    "ImageDescriber",
    "ImageDescriptionError",
    "LlavaLLM",
    "LlavaToolSpec",
    "MultiImagePolicy",
    "NodeFailure",
    "UnidentifiedImageError",
    "identify_images",
]
