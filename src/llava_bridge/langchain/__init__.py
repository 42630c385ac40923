"""LangChain adapters: `ChatLlava` (chat model), `LlavaImageTool` (agent tool), `LlavaImageLoader`.

Needs the `langchain` extra; from a clone of the repository: ``pip install -e ".[langchain]"``.
"""

from __future__ import annotations

from llava_bridge._extras import require_extra

require_extra("langchain", "langchain_core", what="llava_bridge.langchain")

from llava_bridge.langchain.chat_models import ChatLlava  # noqa: E402 (the extra is checked first)
from llava_bridge.langchain.document_loaders import LlavaImageLoader  # noqa: E402 (the extra is checked first)
from llava_bridge.langchain.errors import is_retryable  # noqa: E402 (the extra is checked first)
from llava_bridge.langchain.tools import LlavaImageTool  # noqa: E402 (the extra is checked first)

__all__ = ["ChatLlava", "LlavaImageLoader", "LlavaImageTool", "is_retryable"]
