"""`describe_dataset` and `LlavaDescriber` on a local Ray cluster, against `serve --backend fake`."""

from __future__ import annotations

import base64
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray.data
from bench.soak import server_jobs

from llava_bridge.errors import ConfigurationError
from llava_bridge.ray import CANCELLED, NOT_STARTED, BackendSpec, CancelSignal, describe_dataset
from tests.ray.conftest import png, write_images
from tests.support.local_server import running_server

pytestmark = pytest.mark.usefixtures("ray_cluster")


def fal_spec(base_url: str) -> BackendSpec:
    return BackendSpec("fal", base_url=base_url, api_key="test-key")


def test_300_images_are_300_rows_each_described_once(tmp_path: Path) -> None:
    db_path = str(tmp_path / "jobs.db")
    with running_server("--backend", "fake", "--fake-latency", "0.05", db_path=db_path) as server:
        ds = ray.data.from_items([{"id": index, "bytes": png(index)} for index in range(300)])
        described = describe_dataset(ds, fal_spec(server.base_url), prompt="[ray300] Describe the image.")
        rows = described.drop_columns(["bytes"]).take_all()
    assert sorted(row["id"] for row in rows) == list(range(300))
    assert [row["error"] for row in rows if row["error"]] == []
    assert all(row["description"] and row["model"] for row in rows)
    jobs = [job for job in server_jobs(db_path) if job.tag == "ray300"]
    assert len(jobs) == 300  # the server saw one job per image
    assert all(job.executions == 1 for job in jobs)
    assert {row["request_id"] for row in rows} == {job.id for job in jobs}


def test_a_bad_image_is_one_rows_error_not_a_failed_batch(tmp_path: Path) -> None:
    good = write_images(tmp_path, 2)
    (tmp_path / "notes.png").write_text("not an image")
    data_uri = "data:image/png;base64," + base64.b64encode(png(7)).decode()
    sources = [good[0], str(tmp_path / "missing.png"), str(tmp_path / "notes.png"), data_uri, good[1]]
    ds = ray.data.from_items([{"source": source} for source in sources], override_num_blocks=1)
    rows = describe_dataset(ds, BackendSpec("fake"), actors=1).take_all()
    by_source = {row["source"]: row for row in rows}
    assert len(rows) == 5
    for source in (good[0], good[1], data_uri):
        assert by_source[source]["error"] is None and by_source[source]["description"]
    assert by_source[str(tmp_path / "missing.png")]["error"].startswith("InvalidImageError: Cannot read")
    notes = by_source[str(tmp_path / "notes.png")]
    assert notes["error"].startswith("InvalidImageError: notes.png: Not an image")
    assert notes["description"] is None


def test_images_from_ray_readers_bytes_and_pixel_arrays(tmp_path: Path) -> None:
    write_images(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(png(1)[:40])
    spec = BackendSpec("fake", options={"fake_answers": "image-facts"})
    files = ray.data.read_binary_files(str(tmp_path), include_paths=True)
    by_path = {Path(row["path"]).name: row for row in describe_dataset(files, spec, actors=1).take_all()}
    assert by_path["broken.png"]["error"].startswith("InvalidImageError")
    assert all(by_path[f"img{i:04d}.png"]["description"].startswith("(fake) A 8x8 image") for i in range(3))
    pixels = ray.data.read_images(str(tmp_path / "img0000.png"), include_paths=True)
    rows = describe_dataset(pixels, spec, actors=1).take_all()
    assert [row["description"][:19] for row in rows] == ["(fake) A 8x8 image,"]


def test_cancel_stops_the_jobs_in_flight_and_later_batches(tmp_path: Path) -> None:
    db_path = str(tmp_path / "jobs.db")
    with running_server("--backend", "fake", "--fake-latency", "30", db_path=db_path) as server:
        cancel = CancelSignal()
        ds = ray.data.from_items([{"bytes": png(index)} for index in range(12)], override_num_blocks=3)
        described = describe_dataset(
            ds, fal_spec(server.base_url), actors=1, max_in_flight=4, batch_size=4, cancel_signal=cancel
        ).drop_columns(["bytes"])
        rows: list[dict[str, Any]] = []
        consumer = threading.Thread(target=lambda: rows.extend(described.iter_rows()), daemon=True)
        consumer.start()
        deadline = time.monotonic() + 120
        while sum(job.executions for job in server_jobs(db_path)) < 4:  # four jobs are running
            assert time.monotonic() < deadline, "no job started"
            time.sleep(0.2)
        cancel.cancel()
        consumer.join(120)
        assert not consumer.is_alive()
        assert cancel.wait_idle(30)
        cancel.close()
        with sqlite3.connect(db_path) as conn:
            flagged = conn.execute("SELECT COUNT(*) FROM jobs WHERE cancel_requested = 1").fetchone()[0]
    errors = [row["error"] for row in rows]
    assert len(rows) == 12 and errors.count(CANCELLED) == 4 and errors.count(NOT_STARTED) == 8
    assert len(server_jobs(db_path)) == 4 and flagged == 4  # the running jobs were cancelled; no more began


def test_the_local_backend_on_a_cluster_without_gpus_is_refused_up_front() -> None:
    ds = ray.data.from_items([{"source": "cat.png"}])
    with pytest.raises(ConfigurationError, match="this Ray cluster has no GPU"):
        describe_dataset(ds, BackendSpec("local"))
