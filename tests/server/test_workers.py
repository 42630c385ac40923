"""Workers: concurrent jobs reach the backend together, backend logs reach the right jobs, failures map."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from llava_bridge import (
    ConfigurationError,
    InvalidPromptError,
    Usage,
    VisionChunk,
    VisionRequest,
    VisionResult,
)
from llava_bridge.server import ServerSettings, create_app
from tests.server.conftest import APP, serve_in_thread, wait_completed

log = logging.getLogger("llava_bridge.tests.recording")


class RecordingBackend:
    """Holds each request a while, records how many run at once, and logs like a batching backend."""

    model_name = "recording"
    context_window = 4096
    exact_token_counts = False

    def __init__(self, hold: float = 0.4, batch: int = 4) -> None:
        self.hold = hold
        self.batch = batch
        self.active = 0
        self.peak = 0

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def agenerate(self, request: VisionRequest) -> VisionResult:
        if request.prompt == "explode":
            raise RuntimeError("the GPU caught fire")
        if request.prompt == "refuse":
            raise InvalidPromptError("This prompt is not allowed here.")
        self.active += 1
        self.peak = max(self.peak, self.active)
        log.info("working on %s", request.prompt)
        await asyncio.to_thread(log.info, "tokenized %s in a thread", request.prompt)
        if self.active == self.batch:  # a record made outside any job: e.g. the batcher's own thread
            thread = threading.Thread(target=log.info, args=(f"batch of {self.batch} requests",))
            thread.start()
            thread.join()
        await asyncio.sleep(self.hold)
        self.active -= 1
        return VisionResult(
            text=f"echo {request.prompt}", usage=Usage(completion_tokens=2), finish_reason="stop"
        )

    def generate(self, request: VisionRequest) -> VisionResult:
        raise NotImplementedError("the server only calls the async methods")

    def stream(self, request: VisionRequest) -> Iterator[VisionChunk]:
        raise NotImplementedError("the server only calls the async methods")

    async def astream(self, request: VisionRequest) -> AsyncIterator[VisionChunk]:
        yield VisionChunk(delta="half ")
        if request.prompt == "break":
            raise RuntimeError("stream broke")
        yield VisionChunk(delta="done", result=VisionResult(text="half done"))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, RecordingBackend]]:
    backend = RecordingBackend()
    app = create_app(backend, ServerSettings(db_path=str(tmp_path / "jobs.db"), concurrency=4))
    with serve_in_thread(app) as url:
        yield url, backend


def test_concurrent_jobs_reach_the_backend_together_and_logs_go_to_their_jobs(
    served: tuple[str, RecordingBackend], data_uri: str
) -> None:
    url, backend = served
    with httpx.Client(base_url=url, timeout=10) as http:
        jobs = [
            http.post(f"/{APP}", json={"image_url": data_uri, "prompt": f"job-{n}"}).json() for n in range(4)
        ]
        done = [wait_completed(http, job["status_url"]) for job in jobs]
        outputs = [http.get(job["response_url"]).json()["output"] for job in jobs]
    assert backend.peak == 4
    assert outputs == [f"echo job-{n}" for n in range(4)]
    for n, status in enumerate(done):
        messages = [line["message"] for line in status["logs"]]
        assert f"working on job-{n}" in messages
        assert f"tokenized job-{n} in a thread" in messages
        others = {f"working on job-{m}" for m in range(4) if m != n}
        assert not others & set(messages)  # another job's lines never leak in
        assert "batch of 4 requests" in messages  # made outside any job: every running job gets it
        assert messages[-1].startswith("Completed in")


def test_backend_failures_become_fal_errors_and_the_server_keeps_serving(
    served: tuple[str, RecordingBackend], data_uri: str
) -> None:
    url, _ = served
    with httpx.Client(base_url=url, timeout=10) as http:
        crash = http.post(f"/{APP}", json={"image_url": data_uri, "prompt": "explode"}).json()
        status = wait_completed(http, crash["status_url"])
        assert status["error_type"] == "runner_server_error"
        assert "GPU caught fire" in status["error"]
        assert any(line["level"] == "ERROR" for line in status["logs"])
        result = http.get(crash["response_url"])
        assert result.status_code == 500
        assert result.headers["x-fal-error-type"] == "runner_server_error"

        refused = http.post(f"/{APP}", json={"image_url": data_uri, "prompt": "refuse"}).json()
        status = wait_completed(http, refused["status_url"])
        assert status["error"] is None  # the model refusing input is read from the result, as on fal
        result = http.get(refused["response_url"])
        assert result.status_code == 422
        assert result.json()["detail"][0]["msg"] == "This prompt is not allowed here."

        run = http.post(f"/run/{APP}", json={"image_url": data_uri, "prompt": "explode"})
        assert run.status_code == 500
        assert run.json()["error_type"] == "runner_server_error"
        assert http.get("/health").json()["model"] == "recording"


def test_a_stream_that_breaks_ends_with_an_error_event(
    served: tuple[str, RecordingBackend], data_uri: str
) -> None:
    url, _ = served
    with httpx.Client(base_url=url, timeout=10) as http:
        response = http.post(f"/run/{APP}/stream", json={"image_url": data_uri, "prompt": "break"})
    assert response.status_code == 200
    text = response.text
    assert 'data: {"output": "half ", "partial": true}' in text
    assert "event: error" in text
    assert "stream broke" in text


@pytest.mark.parametrize(
    "options",
    [
        {"concurrency": 0},
        {"endpoints": ("no-slash",)},
        {"allowed_url_hosts": ("10.0.0.1",)},
        {"max_body_bytes": 1},
    ],
)
def test_bad_settings_are_refused_with_advice(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        ServerSettings(db_path=":memory:", **options)  # type: ignore[arg-type]
