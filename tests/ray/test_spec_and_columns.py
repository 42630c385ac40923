"""What travels to the actors, and how column values become images (no cluster needed)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from llava_bridge.errors import ConfigurationError, InvalidImageError, InvalidRequestError
from llava_bridge.ray import BackendSpec
from llava_bridge.ray.columns import image_column_of, image_loader
from tests.ray.conftest import png


def test_a_spec_pickles_with_its_key_and_never_shows_it() -> None:
    spec = BackendSpec("fal", base_url="http://127.0.0.1:9", api_key="sk-secret-123")
    copy = pickle.loads(pickle.dumps(spec))
    assert copy == spec and copy.api_key is not None
    assert copy.api_key.get_secret_value() == "sk-secret-123"
    assert "sk-secret-123" not in repr(spec) and "sk-secret-123" not in str(spec)


def test_a_spec_builds_its_backend_and_refuses_unknown_names() -> None:
    backend = BackendSpec("fake", model="my-fake").build()
    assert backend.model_name == "my-fake"
    with pytest.raises(ConfigurationError, match="choose one of fal, local, openai, fake"):
        BackendSpec("falx")


def test_the_image_column_is_found_by_name_or_named() -> None:
    assert image_column_of(["path", "bytes"]) == "bytes"
    assert image_column_of(["image", "path"]) == "image"
    assert image_column_of(["id", "photo"], "photo") == "photo"
    with pytest.raises(InvalidRequestError, match="image_column="):
        image_column_of(["id", "caption"])
    with pytest.raises(InvalidRequestError, match="no column 'photo'"):
        image_column_of(["id"], "photo")


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((6, 5, 3), dtype=np.uint8),
        np.zeros((6, 5), dtype=np.uint8),
        np.zeros((6, 5, 1), dtype=np.uint8),
        np.full((6, 5, 4), 0.5, dtype=np.float32),
    ],
)
def test_pixel_arrays_become_images(pixels: np.ndarray) -> None:
    assert image_loader(pixels)().size == (5, 6)


def test_bytes_become_images_and_bad_values_are_invalid_images() -> None:
    assert image_loader(png(3))().size == (8, 8)
    with pytest.raises(InvalidImageError, match="shape"):
        image_loader(np.zeros((2, 2, 7), dtype=np.uint8))()
    with pytest.raises(InvalidImageError, match="missing"):
        image_loader(None)()
    with pytest.raises(InvalidImageError, match="Not an image"):
        image_loader(b"plain text")()
