"""The queue protocol end to end over real HTTP: subscribe, logs, handles, cancel, resume."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from llava_bridge import JobFailedError, VisionRequest
from llava_bridge.backends._transport.async_pool import AsyncPool
from llava_bridge.backends._transport.httpx_adapter import HttpxAsync, HttpxSync
from llava_bridge.backends._transport.sync_pool import SyncPool
from llava_bridge.backends.fal.backend import FalBackend, FalStatus
from tests.fal.fal_test_server import FalTestServer


def test_generate_submits_waits_on_the_stream_and_fetches_the_result(
    server: FalTestServer, backend: FalBackend
) -> None:
    result = backend.generate(VisionRequest(prompt="What is this?"))

    assert result.text == "I see a 64x64 image. You asked: What is this?"
    assert result.model == "fal-ai/llava-llama3-8b-v11"
    assert result.request_id in server.jobs
    assert result.logs == ("loading model", "generating")
    assert result.metrics == {"inference_time": 0.05}
    assert result.usage.estimated and result.usage.prompt_tokens > 576
    assert result.finish_reason == "stop"
    assert [r.route for r in server.requests] == ["submit", "status_stream", "result"]
    body = server.calls("submit")[0].json()
    assert body["prompt"] == "What is this?" and body["max_new_tokens"] == 256
    assert body["image_url"].startswith("data:image/png;base64,")


def test_queue_updates_deliver_every_log_line_once(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    server.log_lines = ("one", "two", "three", "four")
    server.queue_seconds = 0.05
    updates: list[FalStatus] = []
    backend = make_backend(on_queue_update=updates.append)

    backend.generate(VisionRequest(prompt="hi"))

    lines = [line.message for update in updates for line in update.logs]
    assert lines == ["one", "two", "three", "four"]
    assert updates[0].status == "IN_QUEUE" and updates[0].queue_position == 0
    assert updates[-1].status == "COMPLETED"


def test_logs_are_delivered_once_when_the_stream_breaks_midway_and_polling_takes_over(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    server.log_lines = ("one", "two", "three", "four")
    server.fail("status_stream", "break_after", events=3)
    updates: list[FalStatus] = []
    backend = make_backend(on_queue_update=updates.append)

    result = backend.generate(VisionRequest(prompt="hi"))

    lines = [line.message for update in updates for line in update.logs]
    assert lines == ["one", "two", "three", "four"]
    assert result.logs == ("one", "two", "three", "four")
    assert len(server.calls("status")) >= 1


def test_polling_alone_delivers_every_log_line_once(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    server.log_lines = ("a", "b", "c")
    updates: list[FalStatus] = []
    backend = make_backend(status_stream=False, on_queue_update=updates.append)

    result = backend.generate(VisionRequest(prompt="hi"))

    assert [line.message for u in updates for line in u.logs] == ["a", "b", "c"]
    assert result.logs == ("a", "b", "c")
    assert not server.calls("status_stream")
    assert all(c.query == {"logs": "1"} for c in server.calls("status"))


def test_a_completed_status_with_an_error_raises_job_failed(
    server: FalTestServer, backend: FalBackend
) -> None:
    server.job_error = ("CUDA out of memory", "runner_server_error")

    with pytest.raises(JobFailedError, match="CUDA out of memory") as info:
        backend.generate(VisionRequest(prompt="hi"))

    assert info.value.error_type == "runner_server_error"
    assert info.value.request_id in server.jobs
    assert not server.calls("result")


def test_submit_returns_a_handle_to_follow_fetch_and_cancel(
    server: FalTestServer, backend: FalBackend
) -> None:
    server.job_seconds = 0.2
    handle = backend.submit(VisionRequest(prompt="hello"))

    assert handle.request_id in server.jobs
    assert handle.status().status in ("IN_QUEUE", "IN_PROGRESS")
    events = list(handle.iter_events())
    assert events[-1].status == "COMPLETED"
    assert [line.message for e in events for line in e.logs] == ["loading model", "generating"]
    assert handle.result().text.endswith("You asked: hello")
    assert handle.cancel() == "ALREADY_COMPLETED"


def test_cancel_stops_a_queued_job(server: FalTestServer, backend: FalBackend) -> None:
    server.queue_seconds = 5.0
    handle = backend.submit(VisionRequest(prompt="hello"))

    assert handle.cancel() == "CANCELLATION_REQUESTED"
    assert server.jobs[handle.request_id].cancelled
    with pytest.raises(JobFailedError, match="cancelled"):
        handle.result()


def test_a_job_is_resumed_by_request_id_from_another_backend(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    request_id = make_backend().submit(VisionRequest(prompt="resume me", stop=["resume"])).request_id

    result = make_backend().handle(request_id).result()

    assert result.request_id == request_id
    assert result.text.endswith("You asked: resume me")  # the submitter's stop is not known here
    assert result.finish_reason is None


def test_status_logs_are_cumulative(server: FalTestServer, backend: FalBackend) -> None:
    handle = backend.submit(VisionRequest(prompt="hello"))
    handle.result()

    status = handle.status()

    assert status.completed and [line.message for line in status.logs] == ["loading model", "generating"]


def test_unknown_request_id_is_refused_or_not_found(backend: FalBackend) -> None:
    from llava_bridge import InvalidRequestError, NotFoundError

    with pytest.raises(InvalidRequestError):
        backend.handle("../etc/passwd")
    with pytest.raises(NotFoundError, match="not found"):
        backend.handle("req-missing").status()


async def test_async_handle_follows_and_fetches(server: FalTestServer, backend: FalBackend) -> None:
    handle = await backend.asubmit(VisionRequest(prompt="async hello"))
    events = [event async for event in handle.iter_events()]
    result = await handle.result()
    status = await handle.status()
    again = await backend.ahandle(handle.request_id).result()

    assert events[-1].completed and status.completed
    assert result.text == again.text and result.text.endswith("async hello")
    assert await handle.cancel() == "ALREADY_COMPLETED"
    await backend.aclose()


async def test_async_callbacks_may_be_coroutines(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    seen: list[str] = []

    async def on_update(status: FalStatus) -> None:
        seen.append(status.status)

    backend = make_backend(on_queue_update=on_update)
    await backend.agenerate(VisionRequest(prompt="hi"))
    await backend.aclose()

    assert seen[-1] == "COMPLETED"


async def test_async_calls_reuse_their_connections_stream_included(
    server: FalTestServer, backend: FalBackend
) -> None:
    for _ in range(3):
        await backend.agenerate(VisionRequest(prompt="Again?"))
    await backend.aclose()

    assert len(server.calls("status_stream")) == 3
    assert server.connections == 2  # one for calls, one for status streams, each kept warm


async def test_concurrent_async_calls_all_answer_and_later_rounds_reuse_the_connections(
    server: FalTestServer, backend: FalBackend
) -> None:
    async def round_of(count: int) -> list[str]:
        asks = (backend.agenerate(VisionRequest(prompt=f"n{i}")) for i in range(count))
        return [result.text.rsplit(" ", 1)[1] for result in await asyncio.gather(*asks)]

    for _ in range(3):
        assert await round_of(20) == [f"n{i}" for i in range(20)]
    await backend.aclose()

    # A call holds at most two connections at once (its status stream and a call), so 20 at
    # a time never need more than 40, however many rounds; without reuse, 3 rounds open 180.
    assert 20 <= server.connections <= 40


async def test_a_status_stream_left_open_after_completed_does_not_hold_the_answer(
    server: FalTestServer, backend: FalBackend
) -> None:
    server.fail("status_stream", "linger", seconds=30.0)
    started = time.monotonic()
    result = await backend.agenerate(VisionRequest(prompt="Quick?"))

    assert result.text.endswith("Quick?")
    assert time.monotonic() - started < 10.0  # did not wait out the 30 s linger


async def test_own_connections_go_through_httpx_only_when_a_proxy_variable_is_set(
    backend: FalBackend, transport: str
) -> None:
    expected = (SyncPool, AsyncPool) if transport == "h1" else (HttpxSync, HttpxAsync)
    assert isinstance(backend._transport(), expected[0])
    assert isinstance(backend._async_transport(), expected[1])
    assert (await backend.agenerate(VisionRequest(prompt="Hi?"))).text
