"""Preparing for the wire: one decode, JPEG draft mode, bounded metadata, bytes passed through untouched."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from llava_bridge import ImageInput, InvalidImageError, ResizePolicy
from llava_bridge.imaging.jpeg_metadata import MAX_SEGMENTS_WALKED, bound_jpeg_metadata
from llava_bridge.imaging.limits import MAX_METADATA_SEGMENTS
from tests.support.images import encode, jpeg_with_app_segments, marked_upright, twelve_megapixel_jpeg


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every decoder Pillow makes (one per image decode), with its mode and scale."""
    made: list[tuple[str, Any]] = []
    real: Callable[..., Any] = Image._getdecoder  # type: ignore[attr-defined]

    def counting(mode: str, decoder_name: str, args: Any, extra: tuple[Any, ...] = ()) -> Any:
        made.append((decoder_name, extra))
        return real(mode, decoder_name, args, extra)

    monkeypatch.setattr(Image, "_getdecoder", counting)
    return made


def test_a_12_megapixel_jpeg_is_decoded_once_in_draft_mode(decodes: list[tuple[str, Any]]) -> None:
    image = ImageInput.from_bytes(twelve_megapixel_jpeg())
    assert image.size == (4032, 3024) and decodes == []  # made from the header alone
    sent = image.prepared()
    assert sent.size == (896, 672) and sent.mime_type == "image/jpeg"
    assert [name for name, _ in decodes] == ["jpeg"]
    (_, (scale, _)) = decodes[0]
    assert scale == 4  # libjpeg decoded at 1/4 scale: 1008x756, then Lanczos to 896x672


def test_draft_mode_gives_the_size_a_full_decode_gives() -> None:
    data = twelve_megapixel_jpeg()
    policy = ResizePolicy()
    naive = Image.open(io.BytesIO(data))
    naive.load()
    target = policy.target_size(*naive.size)
    assert target is not None
    naive_small = naive.resize(target, Image.Resampling.LANCZOS)
    ours = ImageInput.from_bytes(data).prepared(policy)
    assert ours.size == naive_small.size == (896, 672)
    assert ours.data is not None
    ours_pixels = Image.open(io.BytesIO(ours.data)).convert("L").resize((56, 42))
    naive_pixels = naive_small.convert("L").resize((56, 42))
    difference = ImageStat.Stat(ImageChops.difference(ours_pixels, naive_pixels)).mean[0]
    assert difference < 8  # the same picture, not just the same size


def test_a_small_upright_jpeg_goes_untouched_after_one_cheap_decode(decodes: list[tuple[str, Any]]) -> None:
    data = encode(marked_upright(640, 480), "JPEG", quality=90)
    image = ImageInput.from_bytes(data)
    assert image.prepared() is image and image.data == data
    assert len(decodes) == 1 and decodes[0][1][0] == 8  # checked at 1/8 scale


def test_a_jpeg_over_the_byte_budget_is_recompressed() -> None:
    data = encode(Image.effect_noise((600, 500), 80).convert("RGB"), "JPEG", quality=100)
    sent = ImageInput.from_bytes(data).prepared(ResizePolicy(max_bytes=len(data) // 2))
    assert sent.size == (600, 500) and sent.data is not None and len(sent.data) < len(data)


def test_a_url_is_returned_as_it_is() -> None:
    image = ImageInput.from_url("https://example.invalid/cat.heic")
    assert image.prepared() is image and image.prepared(None) is image


def test_resized_is_prepared_with_the_default_policy() -> None:
    image = ImageInput.from_bytes(twelve_megapixel_jpeg())
    assert image.resized().size == image.prepared().size == image.resized(None).size == (896, 672)


@pytest.mark.timeout(20)
def test_a_jpeg_with_700_exif_segments_is_accepted_with_its_metadata_bounded() -> None:
    data = jpeg_with_app_segments(700)
    image = ImageInput.from_bytes(data)
    assert image.size == (60, 80)
    assert image.data is not None and len(image.data) < 20_000  # one EXIF segment kept of 700
    assert image.data.count(b"\xff\xe1") == 1
    assert image.prepared().mime_type == "image/jpeg"


def test_metadata_within_bounds_is_left_alone() -> None:
    data = jpeg_with_app_segments(MAX_METADATA_SEGMENTS - 2, segment_bytes=100)
    assert bound_jpeg_metadata(data).data is data


def test_a_jpeg_with_more_segments_than_any_camera_writes_is_refused() -> None:
    data = jpeg_with_app_segments(MAX_SEGMENTS_WALKED + 1, segment_bytes=8)
    with pytest.raises(InvalidImageError, match="re-export it"):
        ImageInput.from_bytes(data)


@pytest.mark.parametrize("cut", [3, 10, 25])
def test_a_jpeg_cut_inside_its_headers_is_refused(cut: int) -> None:
    data = jpeg_with_app_segments(40, segment_bytes=50)
    with pytest.raises(InvalidImageError):
        ImageInput.from_bytes(data[:cut])
