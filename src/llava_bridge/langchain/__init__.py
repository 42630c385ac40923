"""LangChain adapters: `ChatLlava` (chat model), `LlavaImageTool` (agent tool), `LlavaImageLoader`.

Needs the `langchain` extra: ``pip install "llava-bridge[langchain]"``.
"""

from __future__ import annotations

from .chat_models import ChatLlava
from .document_loaders import LlavaImageLoader
from .tools import LlavaImageTool

__all__ = ["ChatLlava", "LlavaImageLoader", "LlavaImageTool"]
