"""Fixtures: the tiny LLaVA built once per session, and backends loaded from it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from llava_bridge import ImageInput
from llava_bridge.testing import build_legacy_xtuner_layout, build_tiny_llava

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def legacy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return build_legacy_xtuner_layout(tmp_path_factory.mktemp("xtuner-legacy"))


@pytest.fixture(scope="session")
def batched(tiny_dir: Path) -> Iterator[object]:
    """Batches of up to 8, collected for 50 ms so that concurrent test requests meet."""
    from llava_bridge.backends.local.backend import TransformersBackend

    backend = TransformersBackend(str(tiny_dir), local_files_only=True, max_batch_size=8, batch_wait_ms=50)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def serial(tiny_dir: Path) -> Iterator[object]:
    """The same model, one request at a time."""
    from llava_bridge.backends.local.backend import TransformersBackend

    backend = TransformersBackend(str(tiny_dir), local_files_only=True, max_batch_size=1, batch_wait_ms=0)
    yield backend
    backend.close()


def colour_image(index: int, size: tuple[int, int] = (40, 30)) -> ImageInput:
    from PIL import Image

    colour = ((index * 53) % 256, (index * 97 + 40) % 256, (200 - index * 31) % 256)
    return ImageInput.from_pil(Image.new("RGB", size, colour))
