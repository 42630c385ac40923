"""One local Ray cluster for the Ray tests (2 CPUs, 127.0.0.1 only), and small images to describe.

`local_cluster` sets the environment Ray's processes start with (usage stats off, a
private short RAY_TMPDIR, a HOME holding an empty ray_bootstrap_config.yaml so nothing
asks cloud metadata addresses) before `ray.init`, and puts it back after shutdown.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray reads these two at import
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
pytest.importorskip("ray.data", reason="the [ray] extra is not installed")

from llava_bridge.ray import local_cluster


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A running local cluster; yields its address (for the CLI's --address)."""
    import ray

    # 4 logical CPUs on the 2 real ones: the actors of a finished run may still hold their slots
    # while the next run's read tasks and actors start; with 2, a loaded machine could starve them.
    with local_cluster(num_cpus=4):
        yield ray.get_runtime_context().gcs_address


def png(index: int, size: int = 8) -> bytes:
    """A small PNG whose colour encodes `index` (so every image is different)."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (index % 256, index // 256 % 256, 77)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_images(folder: Path, count: int, start: int = 0) -> list[str]:
    """`count` PNG files in `folder`; their paths as the CLI names them, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        path = folder / f"img{index:04d}.png"
        path.write_bytes(png(index))
        paths.append(str(path))
    return paths
