"""Ctrl-C on `llava-bridge describe --engine ray`: the jobs in flight on the actors are cancelled.

The CLI runs as a real process joined to the session's cluster (--address); the test
waits for its jobs to be running by watching the server's database, never by sleeping.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench.soak import server_jobs

from tests.ray.conftest import write_images
from tests.support.local_server import running_server

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def test_ctrl_c_cancels_the_jobs_in_flight_and_says_so(ray_cluster: str, tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 8)
    out, db_path = tmp_path / "captions.jsonl", str(tmp_path / "jobs.db")
    with running_server("--backend", "fake", "--fake-latency", "300", db_path=db_path) as server:
        command = [sys.executable, "-m", "llava_bridge.cli", "describe", str(tmp_path / "photos")]
        command += ["--out", str(out), "--engine", "ray", "--address", ray_cluster, "--actors", "1"]
        command += ["--concurrency", "4", "--backend", "fal", "--base-url", server.base_url]
        command += ["--api-key", "test-key", "--no-progress"]
        env = dict(os.environ)  # the cluster's settings (HOME, RAY_*) go along
        process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while sum(job.executions for job in server_jobs(db_path)) < 4:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "no job started"
                time.sleep(0.2)
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        with sqlite3.connect(db_path) as conn:
            flagged = conn.execute("SELECT COUNT(*) FROM jobs WHERE cancel_requested = 1").fetchone()[0]
    assert process.returncode == 130, stderr
    assert "Interrupted: 0 image(s) described, 4 in flight cancelled, 4 not started" in stderr
    assert len(server_jobs(db_path)) == 4 and flagged == 4
    assert not out.exists()
