"""Images made on the fly for the core tests."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

DATA = Path(__file__).resolve().parents[1] / "data"


def encode(image: Image.Image, format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


@pytest.fixture
def png_bytes() -> bytes:
    return encode(Image.new("RGB", (64, 48), (200, 30, 30)))


@pytest.fixture
def jpeg_bytes() -> bytes:
    return encode(Image.new("RGB", (64, 48), (30, 30, 200)), "JPEG", quality=90)


@pytest.fixture
def coffee_path() -> Path:
    return DATA / "coffee.png"
