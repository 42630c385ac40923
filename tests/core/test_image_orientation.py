"""EXIF orientation: a phone's portrait photo (stored sideways, Orientation=6) reaches the model upright."""

from __future__ import annotations

import io

import pytest
from PIL import ExifTags, Image

from llava_bridge import ImageInput, ResizePolicy
from llava_bridge.grid import tile_images
from tests.support.images import MARKER, encode, marked_upright, sideways_photo, upright_marker_box

ORIENTATION = ExifTags.Base.Orientation


def assert_upright(picture: Image.Image, width: int = 60, height: int = 80) -> None:
    """The red block sits across the top quarter and nowhere else."""
    assert picture.size == (width, height)
    rgb = picture.convert("RGB")
    left, top, right, bottom = upright_marker_box(width, height)
    inside = rgb.getpixel(((left + right) // 2, (top + bottom) // 2))
    below = rgb.getpixel((width // 2, height * 3 // 4))
    side = rgb.getpixel((width - 2, height // 2))
    assert _near(inside, MARKER), inside
    assert not _near(below, MARKER) and not _near(side, MARKER), (below, side)


def _near(pixel: object, colour: tuple[int, int, int]) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(int(a) - b) < 40 for a, b in zip(pixel, colour, strict=False))


def orientation_tag(data: bytes) -> object:
    return Image.open(io.BytesIO(data)).getexif().get(ORIENTATION)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_sideways_photo_is_sent_upright_without_the_tag(orientation: int) -> None:
    image = ImageInput.from_bytes(sideways_photo(orientation=orientation))
    assert image.orientation == orientation
    assert image.size == (60, 80)  # as seen, not as stored
    sent = image.prepared()  # small enough not to shrink: turned and re-encoded all the same
    assert sent is not image and sent.mime_type == "image/jpeg" and sent.orientation == 1
    assert sent.data is not None and orientation_tag(sent.data) is None
    assert_upright(Image.open(io.BytesIO(sent.data)))


def test_a_large_portrait_photo_is_shrunk_by_its_upright_sides() -> None:
    image = ImageInput.from_bytes(sideways_photo(width=1512, height=2016, quality=92))
    sent = image.prepared(ResizePolicy(short_side=504))
    assert sent.size == (504, 672)
    assert sent.data is not None and orientation_tag(sent.data) is None
    assert_upright(Image.open(io.BytesIO(sent.data)), 504, 672)


def test_no_policy_still_turns_the_photo_upright() -> None:
    sent = ImageInput.from_bytes(sideways_photo()).prepared(None)
    assert sent.data is not None and orientation_tag(sent.data) is None
    assert_upright(Image.open(io.BytesIO(sent.data)))


def test_an_upright_photo_goes_as_it_is() -> None:
    data = encode(marked_upright(), "JPEG", quality=90)
    image = ImageInput.from_bytes(data)
    assert image.orientation == 1
    assert image.prepared() is image and image.prepared(None) is image


@pytest.mark.parametrize("format", ["PNG", "WEBP", "TIFF"])
def test_orientation_is_applied_in_other_formats(format: str) -> None:
    sent = ImageInput.from_bytes(sideways_photo(format)).prepared()
    assert sent.mime_type in ("image/jpeg", "image/png")
    assert sent.data is not None
    assert_upright(Image.open(io.BytesIO(sent.data)))


def test_to_pil_is_upright() -> None:
    image = ImageInput.from_bytes(sideways_photo())
    assert_upright(image.to_pil())
    assert_upright(image.to_pil(size_hint=(30, 40)), 30, 40)  # JPEG draft: half scale, upright
    assert image.to_pil(size_hint=(40, 50)).size == (60, 80)  # half would be too small: full size


def test_from_pil_turns_an_opened_phone_photo_upright() -> None:
    opened = Image.open(io.BytesIO(sideways_photo()))  # what a user's Image.open gives: sideways + tag
    image = ImageInput.from_pil(opened)
    assert image.size == (60, 80) and image.orientation == 1
    assert_upright(image.to_pil())


def test_each_tile_of_a_grid_is_upright() -> None:
    photos = [ImageInput.from_bytes(sideways_photo()), ImageInput.from_bytes(sideways_photo("PNG"))]
    grid = tile_images(photos)
    picture = grid.to_pil()
    assert picture.size == (672, 336)
    for left in (0, 336):
        tile = picture.crop((left, 0, left + 336, 336))
        # each 60x80 photo is scaled up to nothing: thumbnail keeps it 60x80, centred in its cell
        assert_upright(tile.crop((138, 128, 198, 208)))
