"""A caller that stops waiting (a cancelled task, Ctrl-C) cancels its job on the server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from llava_bridge import FakeBackend, FalBackend, FalStatus, ImageInput, VisionRequest
from llava_bridge.server.background import BackgroundServer
from tests.reliability.conftest import png
from tests.support.local_server import LocalServer, running_server

STATUS = "{base}/fal-ai/llava-llama3-8b-v11/requests/{id}/status"


@pytest.fixture
def slow_server() -> Iterator[str]:
    with BackgroundServer(FakeBackend("late", latency=30.0)) as server:  # only a cancel ends a job early
        yield server.url


def final_status(base: str, request_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer = httpx.get(STATUS.format(base=base, id=request_id), timeout=5)
        if answer.status_code == 200:
            body: dict[str, object] = answer.json()
            return body
        time.sleep(0.05)
    raise AssertionError("the job never completed")


async def started_then(action: str, base: str) -> str:
    seen: list[str] = []

    def note(status: FalStatus) -> None:
        seen.append(status.request_id)

    request = VisionRequest(prompt="Slow?", image=ImageInput.from_bytes(png()))
    backend = FalBackend(base_url=base, on_queue_update=note)
    try:
        call = backend.agenerate(request)
        if action == "wait_for":
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(call, timeout=3.0)
        else:
            task = asyncio.ensure_future(call)
            while not seen:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await backend.aclose()
    assert seen, "no status update arrived"
    return seen[0]


@pytest.mark.parametrize("action", ["cancel", "wait_for"])
def test_a_cancelled_task_cancels_its_job(action: str, slow_server: str) -> None:
    request_id = asyncio.run(started_then(action, slow_server))
    status = final_status(slow_server, request_id)
    assert status["error_type"] == "client_cancelled"


SCRIPT = """
import sys
from llava_bridge import FalBackend, ImageInput, VisionRequest
from tests.reliability.conftest import png
backend = FalBackend(base_url=sys.argv[1], on_queue_update=lambda s: print(s.request_id, flush=True))
try:
    backend.generate(VisionRequest(prompt="Slow?", image=ImageInput.from_bytes(png())))
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_in_a_sync_call_cancels_its_job() -> None:
    server: LocalServer
    with running_server("--backend", "fake", "--fake-latency", "30") as server:
        process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, server.base_url],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        assert process.stdout is not None
        request_id = process.stdout.readline().strip()
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=20)
        assert "interrupted" in rest
        status = final_status(server.base_url, request_id)
    assert status["error_type"] == "client_cancelled"


def test_ctrl_c_inside_the_status_callback_cancels_the_job_too(slow_server: str) -> None:
    seen: list[str] = []

    def interrupt(status: FalStatus) -> None:
        seen.append(status.request_id)
        raise KeyboardInterrupt  # what Ctrl-C does while the callback prints

    with (
        FalBackend(base_url=slow_server, on_queue_update=interrupt) as backend,
        pytest.raises(KeyboardInterrupt),
    ):
        backend.generate(VisionRequest(prompt="Slow?", image=ImageInput.from_bytes(png())))

    assert final_status(slow_server, seen[0])["error_type"] == "client_cancelled"


def test_a_task_cancelled_while_its_async_callback_waits_cancels_the_job(slow_server: str) -> None:
    seen: list[str] = []

    async def linger(status: FalStatus) -> None:
        seen.append(status.request_id)
        await asyncio.sleep(30)

    async def main() -> None:
        async with FalBackend(base_url=slow_server, on_queue_update=linger) as backend:
            task = asyncio.ensure_future(
                backend.agenerate(VisionRequest(prompt="Slow?", image=ImageInput.from_bytes(png())))
            )
            while not seen:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert final_status(slow_server, seen[0])["error_type"] == "client_cancelled"
