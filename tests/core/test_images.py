"""ImageInput: sniffing, validation, bad input, data URIs, resizing, hashing."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava_bridge import ImageInput, InvalidImageError, ResizePolicy
from llava_bridge.images import MAX_PIXELS, sniff_mime_type
from tests.support.images import png_claiming, png_with_bad_pixels

from .conftest import encode


@pytest.mark.parametrize(
    ("format", "mime"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("WEBP", "image/webp"),
        ("GIF", "image/gif"),
        ("BMP", "image/bmp"),
    ],
)
def test_sniffs_every_supported_type(format: str, mime: str) -> None:
    data = encode(Image.new("RGB", (20, 10), (1, 2, 3)), format)
    assert sniff_mime_type(data) == mime
    image = ImageInput.from_bytes(data)
    assert image.mime_type == mime
    assert image.size == (20, 10)


def test_declared_type_is_ignored_in_favour_of_bytes_when_generic(png_bytes: bytes) -> None:
    assert ImageInput.from_bytes(png_bytes, "application/octet-stream").mime_type == "image/png"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"hello, this is plain text", "look like text"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
        (b"<html><body>nope</body></html>", "HTML"),
        (b"", "empty"),
        (b"PK\x03\x04zipzipzip", "ZIP"),
    ],
)
def test_non_images_are_refused_with_what_they_look_like(data: bytes, fragment: str) -> None:
    with pytest.raises(InvalidImageError, match=fragment) as info:
        ImageInput.from_bytes(data)
    assert "JPEG, PNG" in str(info.value)


def test_truncated_jpeg_is_refused_without_decoding_it() -> None:
    big = encode(Image.effect_noise((256, 256), 60).convert("RGB"), "JPEG", quality=90)
    with pytest.raises(InvalidImageError, match="corrupt or truncated .*end-of-image"):
        ImageInput.from_bytes(big[: len(big) // 2])


def test_truncated_png_is_refused(coffee_path: Path) -> None:
    data = coffee_path.read_bytes()
    with pytest.raises(InvalidImageError, match="truncated"):
        ImageInput.from_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("policy", [ResizePolicy(), None])
def test_pixel_data_that_does_not_decode_is_refused_when_prepared(policy: ResizePolicy | None) -> None:
    image = ImageInput.from_bytes(png_with_bad_pixels())  # every chunk whole: made without decoding
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        image.prepared(policy)
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        image.to_pil()


def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(InvalidImageError, match="too many pixels|over the limit"):
        ImageInput.from_bytes(png_claiming(30_000, 30_000))


def test_pixel_cap_is_exact() -> None:
    side = int(MAX_PIXELS**0.5) + 1
    with pytest.raises(InvalidImageError, match=f"{MAX_PIXELS:,}"):
        ImageInput.from_bytes(png_claiming(side, side))


def test_zero_pixel_image_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="no pixels|corrupt"):
        ImageInput.from_bytes(png_claiming(0, 10))


def test_extreme_aspect_ratio_is_refused() -> None:
    data = encode(Image.new("L", (4000, 1)))
    with pytest.raises(InvalidImageError, match="Crop it"):
        ImageInput.from_bytes(data)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "javascript:alert(1)",
        "ftp://example.com/cat.png",
        "gopher://x/y",
        "http:///nohost",
    ],
)
def test_refused_url_schemes(url: str) -> None:
    with pytest.raises(InvalidImageError, match="scheme|no host"):
        ImageInput.from_url(url)
    with pytest.raises(InvalidImageError):
        ImageInput.coerce(url)


def test_url_is_kept_and_never_fetched() -> None:
    image = ImageInput.from_url("https://example.invalid/cat.jpg")
    assert image.is_url and image.url == "https://example.invalid/cat.jpg"
    assert image.data is None and image.size is None
    with pytest.raises(InvalidImageError, match="sent by URL"):
        image.to_data_uri()


def test_data_uri_round_trip(png_bytes: bytes) -> None:
    image = ImageInput.from_bytes(png_bytes)
    uri = image.to_data_uri()
    assert uri.startswith("data:image/png;base64,")
    again = ImageInput.from_url(uri)
    assert again.data == png_bytes
    assert again == image and again.sha256 == image.sha256


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("data:image/png;base64", "Malformed"),
        ("data:image/png,rawbytes", "not base64"),
        ("data:image/png;base64,@@@@", "invalid base64"),
        ("data:;base64,aGVsbG8=", "Not an image"),
    ],
)
def test_malformed_data_uris(uri: str, fragment: str) -> None:
    with pytest.raises(InvalidImageError, match=fragment):
        ImageInput.from_data_uri(uri)


def test_data_uri_whose_declared_type_disagrees_goes_by_its_bytes(
    png_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    uri = "data:image/jpeg;base64," + base64.b64encode(png_bytes).decode()
    with caplog.at_level(logging.DEBUG, logger="llava_bridge.images"):
        image = ImageInput.from_data_uri(uri)
    assert image.mime_type == "image/png" and image.data == png_bytes
    assert image.prepared().to_data_uri().startswith("data:image/png;base64,")
    (record,) = [r for r in caplog.records if "declared as" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert "declared as image/jpeg but its bytes are image/png" in record.getMessage()


def test_jpg_alias_is_accepted(jpeg_bytes: bytes) -> None:
    uri = "data:image/jpg;base64," + base64.b64encode(jpeg_bytes).decode()
    assert ImageInput.from_data_uri(uri).mime_type == "image/jpeg"


def test_plain_strings_are_not_read_as_paths_unless_allowed(coffee_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="pathlib.Path"):
        ImageInput.coerce(str(coffee_path))
    assert ImageInput.coerce(str(coffee_path), allow_paths=True).mime_type == "image/png"
    assert ImageInput.coerce(coffee_path).size == (600, 400)


def test_missing_path_says_so(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="Cannot read image file"):
        ImageInput.from_path(tmp_path / "nope.png")
    with pytest.raises(InvalidImageError, match="not a file"):
        ImageInput.from_path(tmp_path)


def test_coerce_refuses_other_types() -> None:
    with pytest.raises(InvalidImageError, match="Cannot use a int"):
        ImageInput.coerce(42)


def test_from_pil_round_trips() -> None:
    pil = Image.new("RGBA", (10, 12), (1, 2, 3, 128))
    image = ImageInput.from_pil(pil)
    assert image.mime_type == "image/png" and image.size == (10, 12)
    assert ImageInput.from_pil(pil, format="JPEG").mime_type == "image/jpeg"


def test_resize_policy_keeps_short_side_above_model_input() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(1500, 2000, 3), dtype=np.uint8)
    image = ImageInput.from_bytes(encode(Image.fromarray(pixels), "JPEG", quality=92))
    small = image.resized(ResizePolicy(short_side=504))
    assert small.size == (672, 504)
    assert small.mime_type == "image/jpeg"
    assert len(small.data or b"") < len(image.data or b"")
    assert image.resized() is not image


def test_small_images_are_sent_unchanged(png_bytes: bytes) -> None:
    image = ImageInput.from_bytes(png_bytes)
    assert image.resized() is image


def test_resize_policy_refuses_sizes_below_the_model_input() -> None:
    with pytest.raises(ValueError, match="at least 336"):
        ResizePolicy(short_side=300)


def test_repr_is_short_and_has_no_payload(png_bytes: bytes) -> None:
    image = ImageInput.from_bytes(png_bytes)
    assert repr(image) == f"ImageInput(image/png, 64x48, {len(png_bytes):,} bytes)"
    long_url = "https://example.com/" + "a" * 500
    assert len(repr(ImageInput.from_url(long_url))) < 120


def test_to_pil_decodes(png_bytes: bytes) -> None:
    pil = ImageInput.from_bytes(png_bytes).to_pil()
    assert pil.mode == "RGB" and pil.getpixel((0, 0)) == (200, 30, 30)


def test_polyglot_png_with_trailing_zip_is_still_a_png(png_bytes: bytes) -> None:
    image = ImageInput.from_bytes(png_bytes + b"PK\x03\x04" + b"\0" * 100)
    assert image.mime_type == "image/png"


def test_gif_animation_uses_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    image = ImageInput.from_bytes(buffer.getvalue())
    assert image.mime_type == "image/gif"
    assert image.to_pil().getpixel((0, 0))[0] > 200  # type: ignore[index]
