"""Defaults every surface shares, written once: the endpoint, the describe prompts, image suffixes."""

from __future__ import annotations

__all__ = [
    "DEFAULT_ADAPTER_TIMEOUT_S",
    "DEFAULT_ENDPOINT",
    "DESCRIBE_PROMPT",
    "DETAILED_DESCRIBE_PROMPT",
    "IMAGE_SUFFIXES",
]

DEFAULT_ENDPOINT = "fal-ai/llava-llama3-8b-v11"
"""The fal endpoint (and model name) used when none is given."""

DESCRIBE_PROMPT = (
    "Describe this image in detail for a search index: the main subjects, their setting, "
    "colours and positions, any visible text, and anything unusual. Answer in plain sentences."
)
"""What the describing steps (CLI `describe`, `LlavaImageLoader`, `ImageDescriber`) ask of each image."""

DETAILED_DESCRIBE_PROMPT = (
    "Describe this image in detail: the main subjects, their colours, any text, and the setting."
)
"""What an agent's describe tool asks: a description for a reader, not for an index."""

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)
"""File suffixes taken as images when a directory or glob is expanded (the types ImageInput reads)."""

DEFAULT_ADAPTER_TIMEOUT_S = 120.0
"""Whole-call deadline (seconds) the LangChain and LlamaIndex classes use when none is given.

A job stuck in fal's queue is cancelled when it runs out; pass `timeout=None` to wait without limit.
"""
