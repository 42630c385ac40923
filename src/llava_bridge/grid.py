"""Tiling 2-4 images into one picture, for a model that takes one image per request.

The model sees one 336 x 336 square, so in a grid of four each image gets about a
168-pixel cell: enough to compare, not to read small text. Each image is decoded
once, upright (EXIF orientation applied), and a JPEG only at the scale its cell needs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image

from llava_bridge.errors import InvalidImageError
from llava_bridge.images import MODEL_IMAGE_SIDE, ImageInput

__all__ = ["MAX_GRID_IMAGES", "tile_images"]

MAX_GRID_IMAGES = 4
"""More images than this would leave each too small for the model to see."""


def tile_images(images: Sequence[ImageInput]) -> ImageInput:
    """One PNG with the images in a near-square grid, each fitted into a cell of the model's size.

    The images must hold their bytes: URLs are never fetched here. CPU work: async
    callers run it in a thread.
    """
    if not 2 <= len(images) <= MAX_GRID_IMAGES:
        raise InvalidImageError(f"A grid takes 2 to {MAX_GRID_IMAGES} images, not {len(images)}.")
    if any(image.is_url for image in images):
        raise InvalidImageError(
            "multi_image='grid' needs the images themselves, and URLs are not fetched; send them as "
            "bytes (base64 or a local file), or choose multi_image='first' or 'last'."
        )
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    cell = MODEL_IMAGE_SIDE
    canvas = Image.new("RGB", (columns * cell, rows * cell), (255, 255, 255))
    for index, image in enumerate(images):
        picture = image.to_pil(size_hint=(cell, cell))
        picture.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        x = (index % columns) * cell + (cell - picture.width) // 2
        y = (index // columns) * cell + (cell - picture.height) // 2
        canvas.paste(picture, (x, y))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return ImageInput(data=buffer.getvalue(), source=f"grid of {len(images)} images")
