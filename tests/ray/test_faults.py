"""A tenth of the HTTP calls faulted: every row ends described or with a typed error; no job runs twice."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray.data
from bench.fault_proxy import FaultProxy
from bench.soak import server_jobs

from llava_bridge import errors
from llava_bridge.ray import BackendSpec, describe_dataset
from tests.ray.conftest import png
from tests.support.local_server import running_server

pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_faulted_calls_end_in_descriptions_or_typed_errors_and_no_job_runs_twice(tmp_path: Path) -> None:
    db_path = str(tmp_path / "jobs.db")
    with (
        running_server("--backend", "fake", "--fake-latency", "0.05", db_path=db_path) as server,
        FaultProxy(server.port, fault_rate=0.1, stall_s=1.0) as proxy,
    ):
        ds = ray.data.from_items([{"id": index, "bytes": png(index)} for index in range(150)])
        spec = BackendSpec("fal", base_url=proxy.url, api_key="test-key")
        described = describe_dataset(ds, spec, prompt="[faults] Describe the image.")
        rows = described.drop_columns(["bytes"]).take_all()
    assert proxy.faulted() > 0
    assert sorted(row["id"] for row in rows) == list(range(150))
    for row in rows:
        if row["error"] is None:
            assert row["description"] and row["request_id"]
        else:
            assert row["error"].split(":")[0] in errors.__all__, row["error"]
    jobs = [job for job in server_jobs(db_path) if job.tag == "faults"]
    assert all(job.executions <= 1 for job in jobs)  # no job ran twice
    assert len(jobs) <= 150  # no image was submitted as two jobs
    described = [row["request_id"] for row in rows if row["error"] is None]
    assert len(set(described)) == len(described) and set(described) <= {job.id for job in jobs}
