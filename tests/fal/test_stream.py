"""`/stream` (SSE partial output) and the synchronous run mode, over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from llava_bridge import APIConnectionError, DeadlineExceededError, RateLimitError, VisionRequest
from llava_bridge.backends.fal.backend import FalBackend
from tests.fal.fal_test_server import FalTestServer


def _words(server: FalTestServer, arguments: dict[str, Any]) -> str:
    return "one two three four five six seven eight nine ten"


def test_stream_yields_only_the_new_text_of_each_event(server: FalTestServer, backend: FalBackend) -> None:
    server.responder = _words
    chunks = list(backend.stream(VisionRequest(prompt="count")))

    assert len(chunks) > 3
    assert "".join(c.delta for c in chunks) == "one two three four five six seven eight nine ten"
    assert all(c.result is None for c in chunks[:-1])
    final = chunks[-1].result
    assert final is not None and final.text == "one two three four five six seven eight nine ten"
    assert final.request_id and final.request_id.startswith("stream-")
    assert server.calls("stream")[0].path == "/run/fal-ai/llava-llama3-8b-v11/stream"


def test_stream_stops_at_a_stop_string_on_the_client(server: FalTestServer, backend: FalBackend) -> None:
    server.responder = _words
    chunks = list(backend.stream(VisionRequest(prompt="count", stop=["five"])))

    assert "".join(c.delta for c in chunks) == "one two three four "
    assert chunks[-1].result is not None and chunks[-1].result.finish_reason == "stop"


@pytest.mark.parametrize("token", ["<|eot_id|>", "<|end_of_text|>"])
def test_llama3_special_tokens_end_the_answer(server: FalTestServer, backend: FalBackend, token: str) -> None:
    server.responder = lambda s, a: f"A cat.{token}assistant\n\nMore"

    assert backend.generate(VisionRequest(prompt="hi")).text == "A cat."
    assert "".join(c.delta for c in backend.stream(VisionRequest(prompt="hi"))) == "A cat."


def test_finish_reason_is_length_when_the_answer_fills_max_new_tokens(
    server: FalTestServer, backend: FalBackend
) -> None:
    server.responder = lambda s, a: "word " * (a["max_new_tokens"])

    result = backend.generate(VisionRequest(prompt="hi", max_new_tokens=20))

    assert result.finish_reason == "length" and result.usage.completion_tokens <= 20


def test_a_stream_refused_with_429_is_retried_within_the_retry_after_cap(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    server.responder = _words
    backend = make_backend(read_timeout=5.0)
    server.fail("stream", "http", code=429, body={"detail": "busy"}, headers={"Retry-After": "0"})

    assert list(backend.stream(VisionRequest(prompt="hi")))[-1].result is not None
    assert len(server.calls("stream")) == 2

    server.fail("stream", "http", code=429, body={"detail": "busy"}, headers={"Retry-After": "999"})
    with pytest.raises(RateLimitError):
        list(backend.stream(VisionRequest(prompt="hi")))


def test_a_stream_whose_connection_breaks_raises_a_connection_error(
    server: FalTestServer, backend: FalBackend
) -> None:
    server.fail("stream", "reset_after")

    with pytest.raises(APIConnectionError):
        list(backend.stream(VisionRequest(prompt="hi")))
    assert len(server.calls("stream")) == 1


def test_a_stream_past_its_timeout_raises_deadline_exceeded(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    server.job_seconds = 3.0
    with pytest.raises(DeadlineExceededError):
        list(make_backend(timeout=0.5).stream(VisionRequest(prompt="hi")))


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_stream_that_stalls_late_ends_at_the_deadline_not_a_read_timeout_later(
    server: FalTestServer, make_backend: Callable[..., FalBackend], transport: str, mode: str
) -> None:
    if transport == "httpx" and mode == "sync":
        pytest.skip("httpx fixes a sync read's timeout when the request is sent")
    server.job_seconds, server.stream_words = 2.5, 1  # the first event comes at 2.5 s...
    server.fail("stream", "stall_after", events=1, seconds=30.0)  # ...then nothing
    backend = make_backend(timeout=3.0)
    started = time.monotonic()

    with pytest.raises(DeadlineExceededError):
        if mode == "sync":
            list(backend.stream(VisionRequest(prompt="hi")))
        else:
            [chunk async for chunk in backend.astream(VisionRequest(prompt="hi"))]

    # Bounding each read only when the stream opened would have waited until 2.5 + 3.0 s at least.
    assert time.monotonic() - started < 5.0


async def test_astream_matches_stream(server: FalTestServer, backend: FalBackend) -> None:
    server.responder = _words
    sync = [c.delta for c in backend.stream(VisionRequest(prompt="x"))]
    chunks = [c.delta async for c in backend.astream(VisionRequest(prompt="x"))]
    await backend.aclose()

    assert chunks == sync


def test_run_mode_is_one_synchronous_call(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    result = make_backend(mode="run").generate(VisionRequest(prompt="quick", stop=["You asked"]))

    assert [r.route for r in server.requests] == ["run"]
    assert server.calls("run")[0].path == "/run/fal-ai/llava-llama3-8b-v11"
    assert result.text == "I see a 64x64 image. " and result.request_id and result.finish_reason == "stop"


def test_run_mode_with_a_timeout_raises_deadline_exceeded(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    server.job_seconds = 3.0
    with pytest.raises(DeadlineExceededError, match="timeout=0.5s"):
        make_backend(mode="run", timeout=0.5).generate(VisionRequest(prompt="slow"))
