"""Jobs survive `kill -9`; none runs twice; old results are purged."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from llava_bridge.errors import ConfigurationError
from llava_bridge.server.jobs.sqlite import SQLiteJobStore
from tests.server.conftest import APP, wait_completed
from tests.support.local_server import running_server


def _rows(db_path: str) -> dict[str, sqlite3.Row]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return {row["id"]: row for row in conn.execute("SELECT id, state, attempts, completed_at FROM jobs")}


def _start_lines(db_path: str) -> dict[str, int]:
    """How many times each job was handed to the backend, from its "Started on" log lines."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT job_id, COUNT(*) FROM job_logs WHERE message LIKE 'Started on %' GROUP BY job_id"
        ).fetchall()
    return dict(rows)


def test_sigkill_with_50_queued_jobs_then_restart_runs_each_once(tmp_path: Path, data_uri: str) -> None:
    db_path = str(tmp_path / "jobs.db")
    with running_server(
        "--backend", "fake", "--fake-latency", "30", "--concurrency", "2", db_path=db_path
    ) as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            jobs = [
                http.post(f"/{APP}", json={"image_url": data_uri, "prompt": f"job {n}"}).json()
                for n in range(50)
            ]
        assert len({job["request_id"] for job in jobs}) == 50
        deadline = time.monotonic() + 30
        while True:  # both workers busy, and their "Started on" lines written
            running = {k for k, row in _rows(db_path).items() if row["state"] == "IN_PROGRESS"}
            if len(running) == 2 and running <= set(_start_lines(db_path)):
                break
            assert time.monotonic() < deadline, "the jobs did not start"
            time.sleep(0.02)
        server.kill()

        before = _rows(db_path)
        assert len(before) == 50  # every answered submit is on disk
        interrupted = {job_id for job_id, row in before.items() if row["state"] == "IN_PROGRESS"}
        assert {row["state"] for row in before.values()} <= {"IN_QUEUE", "IN_PROGRESS"}
        assert interrupted == running

        server.restart("--fake-latency", "0.02", "--concurrency", "8")  # same database, same port
        with httpx.Client(timeout=10) as http:
            for job in jobs:
                wait_completed(http, job["status_url"], timeout=30)
                result = http.get(job["response_url"])
                assert result.status_code == 200
                assert result.json()["output"].startswith("This is a fake")

        after = _rows(db_path)
        assert all(row["state"] == "COMPLETED" for row in after.values())
        for job_id, row in after.items():
            # a job is handed to the backend once; only the ones cut off by the kill get a second go
            assert row["attempts"] == (2 if job_id in interrupted else 1), job_id
        assert _start_lines(db_path) == {job_id: row["attempts"] for job_id, row in after.items()}

        server.restart()  # completed jobs never run again
        time.sleep(0.5)
        again = _rows(db_path)
        assert {k: (r["attempts"], r["completed_at"]) for k, r in again.items()} == {
            k: (r["attempts"], r["completed_at"]) for k, r in after.items()
        }


def test_results_are_purged_after_the_retention_time(data_uri: str) -> None:
    with (
        running_server("--backend", "fake", "--result-retention", "1.5") as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        job = http.post(f"/{APP}", json={"image_url": data_uri, "prompt": "?"}).json()
        wait_completed(http, job["status_url"])
        assert http.get(job["response_url"]).status_code == 200
        deadline = time.monotonic() + 30
        while http.get(job["response_url"]).status_code != 404:
            assert time.monotonic() < deadline, "the result was not purged"
            time.sleep(0.1)
        assert http.get(job["status_url"]).status_code == 404


def test_two_servers_cannot_share_a_database(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    first = SQLiteJobStore(path)
    try:
        with pytest.raises(ConfigurationError, match="Another llava-bridge server"):
            SQLiteJobStore(path)
    finally:
        first.close_now()
    SQLiteJobStore(path).close_now()  # free again once the first one closed


def test_graceful_stop_puts_running_jobs_back_in_the_queue(tmp_path: Path, data_uri: str) -> None:
    db_path = str(tmp_path / "jobs.db")
    with running_server("--backend", "fake", "--fake-latency", "30", db_path=db_path) as server:
        job = httpx.post(f"{server.base_url}/{APP}", json={"image_url": data_uri, "prompt": "?"}).json()
        deadline = time.monotonic() + 30
        while _rows(db_path)[job["request_id"]]["state"] != "IN_PROGRESS":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        started = time.monotonic()
        server.stop()  # SIGTERM
        assert server.process is not None and server.process.returncode in (
            0,
            -15,
        )  # uvicorn re-raises SIGTERM
        assert time.monotonic() - started < 20  # did not wait for the 30 s job
        assert _rows(db_path)[job["request_id"]]["state"] == "IN_QUEUE"
        server.restart("--fake-latency", "0")
        with httpx.Client(timeout=10) as http:
            wait_completed(http, job["status_url"])
        assert _rows(db_path)[job["request_id"]]["attempts"] == 2
