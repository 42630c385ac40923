"""Formats people have: HEIC (with and without the [heif] extra), AVIF, TIFF; what each is sent as."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, features

from llava_bridge import ImageInput, InvalidImageError
from llava_bridge.defaults import IMAGE_SUFFIXES
from llava_bridge.grid import tile_images
from llava_bridge.images import sniff_mime_type
from tests.support.images import encode, marked_upright, sideways_photo

from .test_image_orientation import assert_upright

pillow_heif = pytest.importorskip("pillow_heif", reason="HEIC tests need the [heif] extra (pillow-heif)")
needs_avif = pytest.mark.skipif(not features.check("avif"), reason="this Pillow was built without AVIF")


@pytest.fixture(scope="module")
def heic_bytes() -> bytes:
    """A portrait photo as an iPhone writes it: HEIC, with its rotation in the file."""
    pillow_heif.register_heif_opener()
    return sideways_photo("HEIF", quality=90)


def test_heic_bytes_are_read_and_sent_as_an_upright_jpeg(heic_bytes: bytes) -> None:
    assert sniff_mime_type(heic_bytes) == "image/heic"
    image = ImageInput.from_bytes(heic_bytes)
    assert image.mime_type == "image/heic" and image.size == (60, 80)
    sent = image.prepared()
    assert sent.mime_type == "image/jpeg" and sent.data is not None
    assert_upright(Image.open(io.BytesIO(sent.data)))
    assert sent.to_data_uri().startswith("data:image/jpeg;base64,")


def test_a_heic_path_is_read(heic_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(heic_bytes)
    assert Path(path).suffix.lower() in IMAGE_SUFFIXES
    image = ImageInput.from_path(path)
    assert image.mime_type == "image/heic" and image.source == str(path)
    assert_upright(image.to_pil())


@pytest.fixture
def without_pillow_heif(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # `import pillow_heif` now fails, as if the extra were not installed
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    yield


@pytest.mark.usefixtures("without_pillow_heif")
def test_without_the_extra_heic_names_the_extra(heic_bytes: bytes, tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match=r'\[heif\] extra: pip install -e "\.\[heif\]"') as info:
        ImageInput.from_bytes(heic_bytes)
    assert "HEIC" in str(info.value)
    path = tmp_path / "photo.heic"
    path.write_bytes(heic_bytes)
    with pytest.raises(InvalidImageError, match=r"photo\.heic: .*\[heif\] extra"):
        ImageInput.from_path(path)


@needs_avif
def test_avif_is_read_upright_and_sent_as_jpeg() -> None:
    data = sideways_photo("AVIF", quality=90)
    assert sniff_mime_type(data) == "image/avif"
    image = ImageInput.from_bytes(data)
    assert image.mime_type == "image/avif" and image.size == (60, 80)
    sent = image.prepared()
    assert sent.mime_type == "image/jpeg" and sent.data is not None
    assert_upright(Image.open(io.BytesIO(sent.data)))


@needs_avif
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_cut_avif_is_an_invalid_image(keep: float) -> None:
    data = encode(Image.effect_noise((64, 48), 50).convert("RGB"), "AVIF", quality=90)
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):  # Pillow's AVIF raises RuntimeError
        ImageInput.from_bytes(data[: int(len(data) * keep)]).prepared()


def test_tiff_is_read_and_sent_as_jpeg() -> None:
    data = encode(marked_upright(), "TIFF")
    for order in (data, encode(marked_upright(), "TIFF", compression="tiff_lzw")):
        image = ImageInput.from_bytes(order)
        assert image.mime_type == "image/tiff" and image.size == (60, 80)
        sent = image.prepared()
        assert sent.mime_type == "image/jpeg" and sent.data is not None
        assert_upright(Image.open(io.BytesIO(sent.data)))


@pytest.mark.parametrize(
    ("declared", "bytes_are"),
    [("image/jpeg", "PNG"), ("image/png", "JPEG"), ("image/webp", "PNG"), ("text/plain", "JPEG")],
)
def test_a_wrong_declared_type_is_ignored(declared: str, bytes_are: str) -> None:
    data = encode(marked_upright(), bytes_are)
    mime = f"image/{bytes_are.lower()}"
    image = ImageInput.from_bytes(data, declared)
    assert image.mime_type == mime
    sent = image.prepared()
    assert sent is image and sent.to_data_uri().startswith(f"data:{mime};base64,")


def see_through(picture: Image.Image) -> Image.Image:
    """`picture` with a transparent strip along its bottom edge."""
    picture = picture.convert("RGBA")
    picture.paste((0, 0, 0, 0), (0, picture.height - 4, picture.width, picture.height))
    return picture


@pytest.mark.parametrize(
    ("picture", "format", "sent_as"),
    [
        (marked_upright(), "WEBP", "image/jpeg"),  # a photo in another format: JPEG
        (marked_upright(), "BMP", "image/jpeg"),
        (see_through(marked_upright()), "WEBP", "image/png"),  # transparency: PNG
        (marked_upright().convert("P"), "GIF", "image/png"),  # a palette: PNG
        (see_through(marked_upright()), "PNG", "image/png"),  # PNG as it is
    ],
    ids=["webp-photo", "bmp", "webp-alpha", "gif", "png-alpha"],
)
def test_what_goes_on_the_wire_is_jpeg_or_png(picture: Image.Image, format: str, sent_as: str) -> None:
    sent = ImageInput.from_bytes(encode(picture, format)).prepared()
    assert sent.mime_type == sent_as
    assert sent.data is not None and sniff_mime_type(sent.data) == sent_as
    assert_upright(Image.open(io.BytesIO(sent.data)))


def test_a_shrunk_transparent_image_keeps_its_alpha() -> None:
    picture = Image.new("RGBA", (2000, 1600), (0, 0, 0, 0))
    picture.paste((10, 200, 10, 255), (0, 0, 1000, 1600))
    sent = ImageInput.from_bytes(encode(picture, "PNG")).prepared()
    assert sent.mime_type == "image/png" and sent.size == (840, 672)
    assert sent.data is not None
    decoded = Image.open(io.BytesIO(sent.data))
    assert decoded.mode == "RGBA" and decoded.getpixel((800, 300))[3] == 0  # type: ignore[index]


def test_a_shrunk_png_photo_goes_as_jpeg() -> None:
    picture = Image.merge("RGB", [Image.linear_gradient("L").resize((1400, 1000))] * 3)
    sent = ImageInput.from_bytes(encode(picture, "PNG")).prepared()
    assert sent.mime_type == "image/jpeg" and sent.size == (941, 672)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom",  # an MP4 video, not an image
        b"II*\x00" + b"\x00" * 40,  # a TIFF header with nothing behind it
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",  # a HEIC brand with no image boxes
    ],
)
def test_bytes_that_only_start_like_an_image_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidImageError):
        ImageInput.from_bytes(data)


def test_a_grid_of_heic_tiff_and_webp_photos_has_every_tile_upright(heic_bytes: bytes) -> None:
    photos = [heic_bytes, sideways_photo("TIFF"), sideways_photo("WEBP", orientation=8)]
    grid = tile_images([ImageInput.from_bytes(data) for data in photos]).to_pil()
    assert grid.size == (672, 672)  # 2 x 2 cells of 336 px, the fourth empty
    for left, top in ((0, 0), (336, 0), (0, 336)):
        assert_upright(grid.crop((left + 138, top + 128, left + 198, top + 208)))
