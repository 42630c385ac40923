"""The soak machinery with tiny counts (not timed), and client deadlines against a real server."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from bench.fault_proxy import FAULTS, FaultProxy
from bench.soak import deadline_soak, fault_soak, server_jobs

from llava_bridge import FalBackend, ImageInput, VisionRequest
from llava_bridge.errors import DeadlineExceededError, LlavaError
from tests.reliability.conftest import png
from tests.support.local_server import running_server


def test_fault_soak_small_run_loses_nothing_and_runs_nothing_twice() -> None:
    report = fault_soak(60, 8, fault_rate=0.25, fake_latency=0.01, wall_s=45, request_cap=30, seed=3)
    assert report.lost == [] and report.cut_off == 0 and report.not_started == 0
    assert len(report.completed) + sum(report.failed.values()) == 60
    assert report.faults and report.faults.total() >= 60 * 3  # submit, status stream, result at least
    assert {fault for (_, fault) in report.faults} > {"ok"}  # faults were injected
    for name in report.failed:  # every failure is one of our typed errors
        assert issubclass(getattr(__import__("llava_bridge.errors", fromlist=[name]), name), LlavaError)
    assert report.duplicated_tags == []
    assert report.jobs_run_twice == []
    assert report.completed_without_one_job == 0
    assert report.unfinished_jobs == 0


def test_deadline_soak_cancels_every_abandoned_job() -> None:
    report = deadline_soak(6, 3, timeout=2.0, fake_latency=15.0, wall_s=60)
    assert report.timeouts == 6
    assert len(report.abandoned) == 6  # every job was queued, so its id was known
    assert report.abandoned_cancelled == 6
    assert report.abandoned_ran == 0


def test_a_deadline_during_a_slow_submit_still_cancels_the_job(tmp_path: Path) -> None:
    """The client's timeout runs out while the submit is on the wire (a slow ingress).

    The submit gets a short grace past the deadline to read its request id; the job is
    then cancelled and the error carries the id, instead of the job running unseen.
    """
    db_path = str(tmp_path / "jobs.db")
    image = ImageInput.from_bytes(png())
    with running_server("--backend", "fake", "--fake-latency", "30", db_path=db_path) as server:
        proxy = FaultProxy(server.port, fault_rate=1.0, faults=["stall"], stall_s=1.0, routes=["submit"])
        with proxy, FalBackend(base_url=proxy.url, timeout=0.5) as backend:
            with pytest.raises(DeadlineExceededError) as raised:
                backend.generate(VisionRequest(prompt="[slow-submit] ?", image=image))
            deadline = time.monotonic() + 10
            while not server_jobs(db_path):
                assert time.monotonic() < deadline, "the stalled submit never reached the server"
                time.sleep(0.05)
            while server_jobs(db_path)[0].error_type is None and time.monotonic() < deadline:
                time.sleep(0.05)  # until the cancel arrives (uncancelled, the job runs 30 s)
            (job,) = server_jobs(db_path)
        assert raised.value.request_id == job.id
        assert job.error_type == "client_cancelled", f"job {job.state}, not cancelled"


def test_fault_proxy_refuses_unknown_faults() -> None:
    with pytest.raises(ValueError, match="unknown faults"):
        FaultProxy(1, faults=["meteor"])
    assert len(FAULTS) == 7
    assert os.path.exists(Path(__file__).resolve().parents[2] / "bench" / "soak.py")
