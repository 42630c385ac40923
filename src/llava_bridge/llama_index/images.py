"""LlamaIndex images (`ImageBlock`, image nodes) to core `ImageInput`s.

URLs are passed on as URLs and never fetched. Local paths are read, because the
caller named them explicitly in a block or a node. Bytes are decoded from the
base64 LlamaIndex stores them as.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from io import IOBase
from pathlib import Path
from typing import Any, Literal

from llama_index.core.base.llms.types import ImageBlock
from llama_index.core.schema import BaseNode, ImageNode, MediaResource

from llava_bridge.defaults import IMAGE_SUFFIXES
from llava_bridge.errors import InvalidImageError
from llava_bridge.images import ImageInput, sniff_mime_type

__all__ = [
    "ImageSourceKind",
    "block_from_node",
    "image_from_block",
    "image_from_node",
    "node_has_image",
    "node_image_source",
    "stored_bytes",
]

ImageSourceKind = Literal["data", "path", "url"]

_WHITESPACE = b" \t\n\r\v\f"
_CHUNK = 256 * 1024
"""Base64 is decoded in slices of this many characters (a multiple of 4), so that a photo's
megabytes never hold the GIL long enough to stall an event loop in another thread."""


def image_from_block(block: ImageBlock) -> ImageInput:
    """The image an `ImageBlock` holds: bytes or a buffer, a path, or a URL (in that order).

    The bytes decide the type: an `image_mimetype` that disagrees (LlamaIndex
    guesses one from a file suffix) is ignored.
    """
    if block.image is not None:
        return ImageInput.from_bytes(stored_bytes(_read_image_field(block.image)), block.image_mimetype)
    if block.path is not None:
        return ImageInput.from_path(Path(block.path))
    if block.url is not None:
        return ImageInput.from_url(str(block.url))
    raise InvalidImageError("The ImageBlock holds no image; set url=, path= or image= (bytes).")


def node_has_image(node: BaseNode, metadata_keys: Sequence[str] = ()) -> bool:
    """Whether `node` carries an image `image_from_node` can use."""
    return node_image_source(node, metadata_keys) is not None


def image_from_node(node: BaseNode, metadata_keys: Sequence[str] = ()) -> ImageInput:
    """The image of an `ImageNode`, an `ImageDocument`/`Node` with `image_resource`, or a
    node whose metadata names an image path or URL under one of `metadata_keys`."""
    source = node_image_source(node, metadata_keys)
    if source is None:
        raise InvalidImageError(
            f"Node {node.node_id} carries no image; "
            "set its image, image_path or image_url, or put an image path or URL in its metadata."
        )
    kind, value, mime = source
    if kind == "data":
        return ImageInput.from_bytes(stored_bytes(value), mime)
    if kind == "path":
        return ImageInput.from_path(Path(value))
    return ImageInput.from_url(value)


def block_from_node(node: BaseNode | ImageBlock) -> ImageBlock:
    """An `ImageBlock` for an image node (the legacy `image_documents=` call style)."""
    if isinstance(node, ImageBlock):
        return node
    source = node_image_source(node, ())
    if source is None:
        raise InvalidImageError(
            f"image_documents holds a {type(node).__name__} without an image; "
            "pass ImageNode, ImageDocument or ImageBlock objects."
        )
    kind, value, mime = source
    if kind == "data":
        return ImageBlock(image=value, image_mimetype=mime)
    if kind == "path":
        return ImageBlock(path=Path(value), image_mimetype=mime)
    return ImageBlock(url=value, image_mimetype=mime)


# -- helpers ---------------------------------------------------------------------------


def node_image_source(
    node: Any, metadata_keys: Sequence[str]
) -> tuple[ImageSourceKind, Any, str | None] | None:
    """("data" | "path" | "url", value, mimetype) for the node's image, or None.

    A `SimpleDirectoryReader` Document of an image file (its text is the raw bytes)
    is read from its `file_path`.
    """
    if isinstance(node, ImageNode):
        if node.image:
            return "data", node.image.encode("ascii"), node.image_mimetype
        if node.image_path:
            return "path", node.image_path, node.image_mimetype
        if node.image_url:
            return "url", node.image_url, node.image_mimetype
    resource = getattr(node, "image_resource", None)
    if isinstance(resource, MediaResource):
        if resource.data:
            return "data", resource.data, resource.mimetype
        if resource.path:
            return "path", str(resource.path), resource.mimetype
        if resource.url:
            return "url", str(resource.url), resource.mimetype
    metadata = getattr(node, "metadata", None) or {}
    if is_image_file(metadata):
        return "path", str(metadata["file_path"]), None
    for key in metadata_keys:
        value = metadata.get(key)
        if isinstance(value, (str, Path)) and str(value).strip():
            text = str(value).strip()
            is_url = re.match(r"^(https?|data):", text, re.IGNORECASE) is not None
            return ("url" if is_url else "path"), text, None
    return None


def is_image_file(metadata: dict[str, Any]) -> bool:
    """Whether reader metadata (`file_path`, `file_type`) describes an image file we can read."""
    path = metadata.get("file_path")
    if not isinstance(path, (str, Path)) or not str(path).strip():
        return False
    file_type = str(metadata.get("file_type") or "")
    if file_type == "image/svg+xml":
        return False
    return file_type.startswith("image/") or Path(path).suffix.lower() in IMAGE_SUFFIXES


def _read_image_field(image: bytes | IOBase) -> bytes:
    if isinstance(image, bytes):
        return image
    image.seek(0)
    data = image.read()
    image.seek(0)
    if isinstance(data, str):
        data = data.encode("ascii", errors="replace")
    if not isinstance(data, bytes):
        raise InvalidImageError(f"The ImageBlock's buffer gave {type(data).__name__}, not bytes.")
    return data


def stored_bytes(data: bytes) -> bytes:
    """Raw image bytes from what LlamaIndex stores: base64 (usually) or raw bytes."""
    if sniff_mime_type(data) is not None:
        return data
    compact = b"".join(data[i : i + _CHUNK].translate(None, _WHITESPACE) for i in range(0, len(data), _CHUNK))
    try:
        return b"".join(
            binascii.a2b_base64(compact[i : i + _CHUNK], strict_mode=True)
            for i in range(0, len(compact), _CHUNK)
        )
    except (binascii.Error, ValueError):
        return data  # not base64: ImageInput says what the bytes look like
