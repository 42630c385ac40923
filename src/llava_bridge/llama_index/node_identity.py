"""Which image a node holds, as LlamaIndex's `IngestionCache` can tell, and binary text.

The cache keys a step's output on the input nodes' text and metadata only, never on
image bytes or `image_path`: two nodes with the same text and metadata but different
images share one cache entry, and the second gets the first one's description. So
an image must be named in its node's text or metadata before the pipeline runs:
`identify_images` writes the image's sha256 into `metadata["image_sha256"]`.

`SimpleDirectoryReader` without a reader for images reads an image file as text
(its raw bytes), which no text step should see; `looks_binary` spots it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from llama_index.core.schema import BaseNode, MetadataMode

from llava_bridge.llama_index.images import ImageSourceKind, node_image_source, stored_bytes

__all__ = ["IMAGE_SHA256_KEY", "identify_images", "is_identified", "looks_binary", "set_hidden_metadata"]

IMAGE_SHA256_KEY = "image_sha256"
"""Metadata key for the hex sha256 of a node's image bytes."""

IDENTITY_KEYS = (IMAGE_SHA256_KEY, "file_path", "file_name", "image_path", "image_url", "image_id", "url")
"""Metadata keys whose value names the image (any one is enough)."""

_SAMPLE = 4096


def identify_images(nodes: Sequence[BaseNode], metadata_keys: Sequence[str] = ()) -> list[BaseNode]:
    """Write each image node's image sha256 (or its URL) into its metadata; returns the nodes.

    Run it before an `IngestionPipeline` with a cache when nodes hold image bytes or
    paths that their text and metadata do not name. Reads path images (a file that
    cannot be read is named by `metadata["image_path"]`); never fetches URLs (a URL
    node gets `metadata["image_url"]`). The keys stay out of the text that is
    embedded or shown to an LLM.
    """
    for node in nodes:
        source = node_image_source(node, metadata_keys)
        if source is None:
            continue
        kind, value, _ = source
        if kind == "url":
            set_hidden_metadata(node, "image_url", str(value))
            continue
        try:
            set_hidden_metadata(node, IMAGE_SHA256_KEY, image_sha256(kind, value))
        except OSError:  # an unreadable file: named by its path; describing it will say why
            set_hidden_metadata(node, "image_path", str(value))
    return list(nodes)


def image_sha256(kind: ImageSourceKind, value: bytes | str) -> str:
    """The sha256 of the image bytes a node source stands for ("data" or "path")."""
    data = stored_bytes(value) if isinstance(value, bytes) else Path(value).expanduser().read_bytes()
    return hashlib.sha256(data).hexdigest()


def is_identified(node: BaseNode, metadata_keys: Sequence[str] = ()) -> bool:
    """Whether the node's cache key (its text and metadata) names its image."""
    metadata = node.metadata or {}
    if any(str(metadata.get(key) or "").strip() for key in (*IDENTITY_KEYS, *metadata_keys)):
        return True
    source = node_image_source(node, metadata_keys)
    if source is None or source[0] == "data":
        return False
    return str(source[1]) in node.get_content(metadata_mode=MetadataMode.ALL)


def looks_binary(text: str) -> bool:
    """Whether text is really a binary file's bytes (NULs or many control characters)."""
    sample = text[:_SAMPLE]
    if not sample:
        return False
    if "\x00" in sample:
        return True
    odd = sum(1 for char in sample if (ord(char) < 32 and char not in "\t\n\r\f\v") or char == "\ufffd")
    return odd > len(sample) // 10


def set_hidden_metadata(node: BaseNode, key: str, value: str) -> None:
    """Set `metadata[key]`, kept out of the embedded and LLM-visible text."""
    node.metadata[key] = value
    for excluded in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
        if key not in excluded:
            excluded.append(key)
