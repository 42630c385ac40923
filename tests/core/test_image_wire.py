"""What a server receives: FalBackend against the real server (in a thread) with a FakeBackend behind it.

The FakeBackend's history holds the image the server decoded from what came over HTTP.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import ExifTags, Image

from llava_bridge import FakeBackend, FalBackend, ImageInput, InvalidImageError, VisionRequest
from tests.support.images import (
    encode,
    marked_upright,
    png_with_bad_pixels,
    sideways_photo,
    twelve_megapixel_jpeg,
)

from .test_image_orientation import assert_upright

pytest.importorskip("fastapi", reason="needs the [server] extra")
from llava_bridge.server.background import BackgroundServer


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[BackgroundServer, FakeBackend]]:
    fake = FakeBackend("seen")
    with BackgroundServer(fake) as running:
        yield running, fake


@pytest.fixture(scope="module")
def served(server: tuple[BackgroundServer, FakeBackend]) -> Iterator[tuple[FalBackend, FakeBackend]]:
    running, fake = server
    with FalBackend(base_url=running.url, api_key="test") as client:
        yield client, fake


def test_without_resizing_a_photo_still_arrives_upright(server: tuple[BackgroundServer, FakeBackend]) -> None:
    running, fake = server
    with FalBackend(base_url=running.url, api_key="test", resize=None) as client:
        got = received((client, fake), ImageInput.from_bytes(sideways_photo("WEBP", orientation=8)))
    assert got.mime_type == "image/jpeg" and got.orientation == 1
    assert_upright(got.to_pil())


def received(served: tuple[FalBackend, FakeBackend], image: ImageInput) -> ImageInput:
    client, fake = served
    before = len(fake.history)
    assert client.generate(VisionRequest(prompt="What is this?", image=image)).text == "seen"
    assert len(fake.history) == before + 1
    got = fake.history[-1].image
    assert got is not None and got.data is not None
    return got


def test_a_portrait_photo_arrives_upright_without_the_tag(served: tuple[FalBackend, FakeBackend]) -> None:
    got = received(served, ImageInput.from_bytes(sideways_photo(orientation=6)))
    assert got.mime_type == "image/jpeg" and got.orientation == 1 and got.size == (60, 80)
    assert got.data is not None
    assert ExifTags.Base.Orientation not in Image.open(io.BytesIO(got.data)).getexif()
    assert_upright(got.to_pil())


def test_png_bytes_declared_as_jpeg_arrive_as_png(served: tuple[FalBackend, FakeBackend]) -> None:
    png = encode(marked_upright(), "PNG")
    got = received(served, ImageInput.from_bytes(png, "image/jpeg"))
    assert got.mime_type == "image/png" and got.data == png


def test_a_heic_photo_arrives_as_an_upright_jpeg(served: tuple[FalBackend, FakeBackend]) -> None:
    pillow_heif = pytest.importorskip("pillow_heif", reason="needs the [heif] extra")
    pillow_heif.register_heif_opener()
    got = received(served, ImageInput.from_bytes(sideways_photo("HEIF", quality=90)))
    assert got.mime_type == "image/jpeg"
    assert_upright(got.to_pil())


def test_a_12_megapixel_photo_arrives_shrunk(served: tuple[FalBackend, FakeBackend]) -> None:
    got = received(served, ImageInput.from_bytes(twelve_megapixel_jpeg()))
    assert got.mime_type == "image/jpeg" and got.size == (896, 672)


def test_pixels_that_do_not_decode_are_refused_before_anything_is_sent(
    served: tuple[FalBackend, FakeBackend],
) -> None:
    client, fake = served
    image = ImageInput.from_bytes(png_with_bad_pixels())  # whole chunks: refused at the decode
    before = len(fake.history)
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        client.generate(VisionRequest(prompt="What is this?", image=image))
    assert len(fake.history) == before


def test_non_image_bytes_are_refused_before_a_request_exists() -> None:
    with pytest.raises(InvalidImageError, match="PDF"):
        ImageInput.from_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj")
