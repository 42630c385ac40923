"""Photo-sized test images built in memory (no files, no downloads)."""

from __future__ import annotations

import functools
import io

from PIL import Image

__all__ = ["twelve_megapixel_jpeg"]


@functools.cache
def twelve_megapixel_jpeg() -> bytes:
    """A 4000x3000 JPEG (quality 90) with noise over a gradient, so decoding costs what a photo's does."""
    size = (4000, 3000)
    noise = Image.effect_noise(size, 48)
    gradient = Image.linear_gradient("L").resize(size)
    image = Image.merge("RGB", (noise, gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
