"""The local backend in Ray actors: each builds a tiny random-weight LLaVA from its spec (CPU here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray.data

from llava_bridge.ray import BackendSpec, describe_dataset
from tests.ray.conftest import png

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_each_actor_loads_the_model_from_the_spec_and_describes(tmp_path: Path) -> None:
    from llava_bridge.testing import build_tiny_llava

    model = build_tiny_llava(tmp_path)
    spec = BackendSpec("local", model=str(model), options={"local_files_only": True})
    ds = ray.data.from_items([{"id": index, "bytes": png(index)} for index in range(6)])
    described = describe_dataset(ds, spec, num_gpus=0, max_new_tokens=8, keep_images=False)
    rows = described.take_all()
    assert sorted(row["id"] for row in rows) == list(range(6))
    assert all(row["error"] is None and row["description"] is not None for row in rows)
    assert {row["model"] for row in rows} == {str(model)}
    assert all("bytes" not in row for row in rows)  # keep_images=False dropped them on the actors
