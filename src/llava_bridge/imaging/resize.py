"""The downscale rule: how small an image may get before it is sent."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MODEL_IMAGE_SIDE", "ResizePolicy"]

MODEL_IMAGE_SIDE = 336
"""The vision tower sees 336 x 336."""


@dataclass(frozen=True)
class ResizePolicy:
    """How to shrink an image before sending it.

    The model sees 336 x 336, so sending 12 MP wastes bandwidth. Images whose short
    side is above `short_side` are downscaled so the short side equals it (keeping
    it comfortably above 336 px), the long side is capped at `max_long_side`, and
    the result is re-encoded (JPEG at `jpeg_quality`, or PNG for images with
    transparency or a palette). JPEG and PNG images that are small enough, upright
    and at most `max_bytes` are sent as they are.
    """

    short_side: int = 672
    max_long_side: int = 2016
    jpeg_quality: int = 90
    max_bytes: int = 2 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.short_side < MODEL_IMAGE_SIDE:
            raise ValueError(f"short_side must be at least {MODEL_IMAGE_SIDE} (the model's input size)")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be between 1 and 100")

    def target_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The size to resize to, or None when the image is small enough already."""
        scale = min(1.0, self.short_side / min(width, height), self.max_long_side / max(width, height))
        if scale >= 1.0:
            return None
        return max(1, round(width * scale)), max(1, round(height * scale))
