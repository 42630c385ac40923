"""Which column of a Ray Data batch holds the images, and each value as an `ImageInput`.

Ray Data's readers name them: `read_images` gives pixel arrays in ``image``,
`read_binary_files` gives file bytes in ``bytes``; a table of paths or URLs is read
from ``source``, ``path`` or ``url``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from PIL import Image

from llava_bridge.describe import image_for_source
from llava_bridge.errors import InvalidImageError, InvalidRequestError
from llava_bridge.images import ImageInput

__all__ = ["IMAGE_COLUMNS", "image_column_of", "image_loader"]

IMAGE_COLUMNS = ("image", "bytes", "source", "path", "url")
"""Columns looked for, in this order, when no `image_column` is given."""


def image_column_of(columns: Iterable[str], chosen: str | None = None) -> str:
    """The image column among `columns`: `chosen` if given, else the first of `IMAGE_COLUMNS`."""
    names = list(columns)
    if chosen is not None:
        if chosen not in names:
            raise InvalidRequestError(
                f"The dataset has no column {chosen!r} (it has {', '.join(names)}); "
                "pass image_column= with one of them."
            )
        return chosen
    for name in IMAGE_COLUMNS:
        if name in names:
            return name
    raise InvalidRequestError(
        f"No image column among {', '.join(names)}; name one with image_column= "
        f"(it may hold bytes, pixel arrays, paths or URLs)."
    )


def image_loader(value: Any) -> Callable[[], ImageInput]:
    """A function that turns one column value into an `ImageInput` (run it off the event loop)."""
    return lambda: _to_image(value)


def _to_image(value: Any) -> ImageInput:
    if isinstance(value, np.ndarray) and value.dtype != object:
        return _from_pixels(value)
    if isinstance(value, (bytes, bytearray, memoryview, np.bytes_)):
        return ImageInput.from_bytes(bytes(value))
    if isinstance(value, (str, np.str_)):
        return image_for_source(str(value))
    if value is None:
        raise InvalidImageError("The image is missing (the column's value is null).")
    return ImageInput.coerce(value)


def _from_pixels(pixels: np.ndarray[Any, Any]) -> ImageInput:
    """Pixel arrays as `read_images` gives them: H x W, or H x W x 1, 3 or 4 channels."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise InvalidImageError(
            f"A pixel array of shape {pixels.shape} is not an image; give H x W or H x W x 3 (or 4)."
        )
    if pixels.dtype != np.uint8:
        if np.issubdtype(pixels.dtype, np.floating) and pixels.size and float(np.nanmax(pixels)) <= 1.0:
            pixels = pixels * 255.0
        pixels = np.clip(np.nan_to_num(pixels), 0, 255).astype(np.uint8)
    return ImageInput.from_pil(Image.fromarray(np.ascontiguousarray(pixels)))
