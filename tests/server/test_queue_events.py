"""The queue is event-driven: status streams wake on job changes and never re-read on a timer.

Counted, not timed: while a job runs for seconds, its status stream reads the job a
bounded number of times (a 0.1 s poll would read it dozens of times), and yet it
sees every state and every log line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from llava_bridge.backends.fake import FakeBackend
from llava_bridge.server.app import create_app
from llava_bridge.server.changes import JobChanges
from llava_bridge.server.context import ServerContext
from llava_bridge.server.settings import ServerSettings
from tests.server.conftest import APP, serve_in_thread

JOB_SECONDS = 3.0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, FastAPI]]:
    backend = FakeBackend(latency=JOB_SECONDS)
    app = create_app(backend, ServerSettings(db_path=str(tmp_path / "jobs.db"), concurrency=1))
    with serve_in_thread(app) as url:
        yield url, app


def _count_reads(app: FastAPI) -> dict[str, int]:
    """Wrap the running store's `get` and `logs` to count calls."""
    context: ServerContext = app.state.llava_bridge
    store: Any = context.store
    counts = {"get": 0, "logs": 0}
    for name in counts:
        original = getattr(store, name)

        async def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            counts[_name] += 1
            return await _original(*args, **kwargs)

        setattr(store, name, counted)
    return counts


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]


def test_a_status_stream_reads_on_changes_only(served: tuple[str, FastAPI], data_uri: str) -> None:
    url, app = served
    counts = _count_reads(app)
    with httpx.Client(base_url=url, timeout=30) as http:
        job = http.post(f"/{APP}", json={"image_url": data_uri, "prompt": "?"}).json()
        with http.stream("GET", job["status_url"] + "/stream", params={"logs": "1"}) as response:
            events = _events(response)
    assert events[-1]["status"] == "COMPLETED"
    messages = [line["message"] for event in events for line in event["logs"] or []]
    assert messages[0].startswith("Started on") and messages[-1].startswith("Completed in")
    # claimed, a line, a line, completed (+ the first read and a heartbeat or two): far below
    # the ~30 reads a 0.1 s poll makes in 3 s
    assert counts["get"] <= 8, counts
    assert counts["logs"] <= 8, counts


def test_a_queued_jobs_stream_sees_its_position_move(served: tuple[str, FastAPI], data_uri: str) -> None:
    url, _ = served
    with httpx.Client(base_url=url, timeout=30) as http:
        first = http.post(f"/{APP}", json={"image_url": data_uri, "prompt": "first"}).json()
        second = http.post(f"/{APP}", json={"image_url": data_uri, "prompt": "second"}).json()
        with http.stream("GET", second["status_url"] + "/stream") as response:
            events = _events(response)
        assert http.get(first["response_url"]).status_code == 200
    states = [event["status"] for event in events]
    assert states[0] == "IN_QUEUE" and events[0]["queue_position"] in (0, 1)
    assert "IN_PROGRESS" in states and states[-1] == "COMPLETED"


async def test_job_changes_wake_the_right_watches() -> None:
    changes = JobChanges()
    changes.bind(asyncio.get_running_loop())
    plain, with_logs, other = changes.watch("a"), changes.watch("a", logs=True), changes.watch("b")
    changes.logged(["a"])
    assert await with_logs.wait(10) == "job"
    assert await plain.wait(0) == "timeout"  # log lines do not wake a watch that wants none
    changes.watch_queue(plain)
    changes.queue_moved()
    assert await plain.wait(10) == "queue"
    changes.job_changed("a", completed=True)  # a change before the wait is not lost
    assert await plain.wait(10) == "job"
    assert await other.wait(0) == "timeout"
    changes.forget(other)
    assert not changes._jobs and not changes._queue  # completed and forgotten watches are gone
    await asyncio.to_thread(changes.logged_threadsafe, ["a"])  # from another thread: no error


def test_a_completed_jobs_stream_is_one_event_with_all_its_logs(
    served: tuple[str, FastAPI], data_uri: str
) -> None:
    url, _ = served
    with httpx.Client(base_url=url, timeout=30) as http:
        job = http.post(f"/{APP}", json={"image_url": data_uri, "prompt": "?"}).json()
        with http.stream("GET", job["status_url"] + "/stream") as response:
            assert _events(response)[-1]["status"] == "COMPLETED"
        with http.stream("GET", job["status_url"] + "/stream", params={"logs": "1"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = _events(response)
    assert [event["status"] for event in events] == ["COMPLETED"]
    messages = [line["message"] for line in events[0]["logs"]]
    assert messages[0].startswith("Started on") and messages[-1].startswith("Completed in")
