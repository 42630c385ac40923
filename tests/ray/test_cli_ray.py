"""`llava-bridge describe --engine ray` on the session's local cluster, against `serve --backend fake`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from bench.soak import server_jobs

from llava_bridge.cli.main import main
from llava_bridge.describe import RECORD_FIELDS
from tests.ray.conftest import write_images
from tests.support.local_server import running_server

pytestmark = pytest.mark.usefixtures("ray_cluster")


def describe(folder: Path, out: Path, url: str, *extra: str, tag: str = "cli") -> int:
    backend = ["--backend", "fal", "--base-url", url, "--api-key", "test-key"]
    prompt = ["--prompt", f"[{tag}] Describe the image.", "--no-progress"]
    return main(["describe", str(folder), "--out", str(out), *backend, *prompt, *extra])


def jsonl(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_jsonl_run_has_the_in_process_schema_and_resume_skips_done_images(tmp_path: Path) -> None:
    folder, db_path = tmp_path / "photos", str(tmp_path / "jobs.db")
    first = write_images(folder, 30)
    (folder / "broken.png").write_text("not an image")
    with running_server("--backend", "fake", "--fake-latency", "0.05", db_path=db_path) as server:
        assert describe(folder, tmp_path / "process.jsonl", server.base_url, tag="process") == 1
        out = tmp_path / "ray.jsonl"
        assert describe(folder, out, server.base_url, "--engine", "ray", tag="first") == 1  # broken.png
        later = write_images(folder, 10, start=30)
        assert describe(folder, out, server.base_url, "--engine", "ray", "--resume", tag="resumed") == 1
    process, records = jsonl(tmp_path / "process.jsonl"), jsonl(out)
    assert all(list(record) == list(RECORD_FIELDS) for record in process + records)
    assert {r["source"] for r in process} == {r["source"] for r in records} - set(later)
    described = [r["source"] for r in records if r["error"] is None]
    assert sorted(described) == sorted(first + later)  # each once: done ones kept, new ones added
    assert [r["error"].split(":")[0] for r in records if r["error"]] == ["InvalidImageError"]
    tags = [job.tag for job in server_jobs(db_path)]
    assert tags.count("first") == 30 and tags.count("resumed") == 10  # resume skipped the 30 done


def test_parquet_output_and_resume(tmp_path: Path) -> None:
    folder, db_path, out = tmp_path / "photos", str(tmp_path / "jobs.db"), tmp_path / "captions.parquet"
    write_images(folder, 12)
    with running_server("--backend", "fake", "--fake-latency", "0.05", db_path=db_path) as server:
        assert describe(folder, out, server.base_url, "--engine", "ray", tag="first") == 0
        write_images(folder, 4, start=12)
        assert describe(folder, out, server.base_url, "--engine", "ray", "--resume", tag="resumed") == 0
    table = pq.read_table(out)
    assert table.column_names == list(RECORD_FIELDS)
    assert table.num_rows == 16 and len(set(table.column("source").to_pylist())) == 16
    assert not out.with_name(out.name + ".partial").exists()
    tags = [job.tag for job in server_jobs(db_path)]
    assert tags.count("first") == 12 and tags.count("resumed") == 4


def test_a_rejected_key_stops_the_run_and_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, out = tmp_path / "photos", tmp_path / "captions.jsonl"
    write_images(folder, 3)
    with running_server("--backend", "fake", env={"LLAVA_BRIDGE_SERVER_KEY": "right-key"}) as server:
        assert describe(folder, out, server.base_url, "--engine", "ray") == 1
    assert "AuthenticationError" in capsys.readouterr().err
    assert not out.exists()


def test_parquet_needs_the_ray_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_images(tmp_path, 1)
    assert describe(tmp_path, tmp_path / "out.parquet", "http://127.0.0.1:9") == 2
    assert "--engine ray" in capsys.readouterr().err


def test_a_storage_uri_is_read_by_ray_data_and_resumed(tmp_path: Path) -> None:
    folder, out, db_path = tmp_path / "photos", tmp_path / "captions.jsonl", str(tmp_path / "jobs.db")
    paths = write_images(folder, 5)
    uri = f"local://{folder}"  # read by Ray Data's file readers, as s3:// or gs:// would be
    with running_server("--backend", "fake", db_path=db_path) as server:
        assert main_uri(uri, out, server.base_url) == 0
        paths += write_images(folder, 2, start=5)
        assert main_uri(uri, out, server.base_url, "--resume") == 0
    records = jsonl(out)
    assert sorted(r["source"] for r in records) == sorted(paths)
    assert all(r["error"] is None for r in records)
    assert len(server_jobs(db_path)) == 7  # the resumed run sent only the 2 new images


def main_uri(uri: str, out: Path, url: str, *extra: str) -> int:
    backend = ["--backend", "fal", "--base-url", url, "--api-key", "test-key"]
    return main(["describe", uri, "--out", str(out), "--engine", "ray", "--no-progress", *backend, *extra])
