"""Every fault the fal test server can inject, and what FalBackend makes of it (real HTTP)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import pytest

from llava_bridge import (
    AmbiguousSubmitError,
    APIConnectionError,
    DeadlineExceededError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    UnprocessableEntityError,
    VisionRequest,
)
from llava_bridge.backends.fal.backend import FalBackend
from tests.fal.fal_test_server import FalTestServer, fal_error, ingress_error

ASK = VisionRequest(prompt="What is in the picture?")


def test_429_is_retried_after_retry_after(server: FalTestServer, backend: FalBackend) -> None:
    server.fail(
        "submit", "http", code=429, body={"detail": "Too many requests"}, headers={"Retry-After": "0.4"}
    )

    started = time.monotonic()
    result = backend.generate(ASK)

    assert time.monotonic() - started >= 0.4
    assert len(server.calls("submit")) == 2 and len(server.jobs) == 1
    assert result.text.endswith(ASK.prompt)


def test_429_asking_for_longer_than_the_cap_raises_at_once(
    server: FalTestServer, backend: FalBackend
) -> None:
    server.fail("submit", "http", code=429, body={"detail": "Slow down"}, headers={"Retry-After": "3600"})

    started = time.monotonic()
    with pytest.raises(RateLimitError, match="Slow down") as info:
        backend.generate(ASK)

    assert time.monotonic() - started < 10.0  # waiting even the 30 s cap would fail this
    assert info.value.status_code == 429 and len(server.calls("submit")) == 1


def test_ingress_502_without_request_id_is_retried(server: FalTestServer, backend: FalBackend) -> None:
    server.fail("submit", "http", **ingress_error(502))

    result = backend.generate(ASK)

    assert len(server.calls("submit")) == 2 and len(server.jobs) == 1
    assert result.request_id in server.jobs


def test_fal_503_with_request_id_is_not_retried(server: FalTestServer, backend: FalBackend) -> None:
    params = fal_error(503, "runner_scheduling_failure")
    server.fail("submit", "http", **params)

    with pytest.raises(ServerError, match="No runner could take the request") as info:
        backend.generate(ASK)

    error = info.value
    assert error.status_code == 503 and error.error_type == "runner_scheduling_failure"
    assert error.request_id == params["headers"]["x-fal-request-id"]
    assert error.body == params["body"]
    assert len(server.calls("submit")) == 1


def test_user_timeout_504_is_not_retried(server: FalTestServer, backend: FalBackend) -> None:
    server.fail(
        "submit",
        "http",
        code=504,
        body={"detail": "Request timed out", "error_type": "request_timeout"},
        headers={"X-Fal-Request-Timeout-Type": "user"},
    )

    with pytest.raises(ServerError, match="request_timeout"):
        backend.generate(ASK)
    assert len(server.calls("submit")) == 1


def test_connection_reset_before_the_submit_is_received_is_retried(
    server: FalTestServer, backend: FalBackend, caplog: pytest.LogCaptureFixture
) -> None:
    server.refuse_connections(hold=0.5)

    with caplog.at_level(logging.DEBUG, logger="llava_bridge.fal"):
        result = backend.generate(ASK)

    assert any("submit" in r.getMessage() and "retry" in r.getMessage() for r in caplog.records)
    assert len(server.calls("submit")) == 1 and len(server.jobs) == 1
    assert result.request_id in server.jobs


def test_connection_reset_after_the_submit_is_received_is_never_resent(
    server: FalTestServer, backend: FalBackend
) -> None:
    server.fail("submit", "reset_after")

    with pytest.raises(AmbiguousSubmitError, match="may be queued") as info:
        backend.generate(ASK)

    assert not info.value.retryable
    assert len(server.calls("submit")) == 1
    assert len(server.jobs) == 1  # the job was queued once, and only once


def test_truncated_json_from_a_submit_is_ambiguous(server: FalTestServer, backend: FalBackend) -> None:
    server.fail("submit", "truncate")

    with pytest.raises(AmbiguousSubmitError, match="not valid JSON"):
        backend.generate(ASK)
    assert len(server.calls("submit")) == 1


def test_truncated_json_from_a_result_is_fetched_again(server: FalTestServer, backend: FalBackend) -> None:
    server.fail("result", "truncate")

    result = backend.generate(ASK)

    assert result.text.endswith(ASK.prompt)
    assert server.jobs[result.request_id or ""].result_fetches == 2


def test_a_stalled_status_stream_falls_back_to_polling(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    server.fail("status_stream", "stall", seconds=30.0)
    backend = make_backend(stream_idle_timeout=0.3)

    started = time.monotonic()
    result = backend.generate(ASK)

    assert time.monotonic() - started < 10.0  # did not wait out the 30 s stall
    assert result.logs == ("loading model", "generating")
    assert server.calls("status")


def test_a_stalled_status_poll_is_retried_after_the_read_timeout(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    server.fail("status", "stall", seconds=3.0)
    backend = make_backend(status_stream=False, read_timeout=0.3)

    result = backend.generate(ASK)

    assert result.text.endswith(ASK.prompt)
    assert len(server.calls("status")) >= 2


def test_client_timeout_cancels_the_job_then_raises_with_its_id(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    server.job_seconds = 30.0
    server.fail("status", "stall", seconds=30.0, times=3)
    backend = make_backend(status_stream=False, timeout=0.8)

    started = time.monotonic()
    with pytest.raises(DeadlineExceededError, match="cancelled") as info:
        backend.generate(ASK)

    assert time.monotonic() - started < 10.0  # did not wait out the 30 s stall
    request_id = info.value.request_id
    assert request_id in server.jobs and server.jobs[request_id].cancelled
    assert info.value.timeout == 0.8
    assert [c.route for c in server.requests][-1] == "cancel"


def test_client_timeout_while_queued_on_the_stream_also_cancels(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    server.queue_seconds = 5.0
    backend = make_backend(timeout=1.0, stream_idle_timeout=0.3)

    with pytest.raises(DeadlineExceededError) as info:
        backend.generate(ASK)

    assert server.jobs[info.value.request_id or ""].cancelled


def test_status_stream_unavailable_falls_back_to_polling(server: FalTestServer, backend: FalBackend) -> None:
    server.fail("status_stream", "http", code=405, body={"detail": "Method Not Allowed"})

    result = backend.generate(ASK)

    assert result.logs == ("loading model", "generating")
    assert len(server.calls("status_stream")) == 1 and server.calls("status")


def test_422_detail_list_is_rendered_as_readable_lines(server: FalTestServer, backend: FalBackend) -> None:
    detail = [
        {"loc": ["body", "image_url"], "msg": "Image is too large", "type": "image_too_large"},
        {"loc": ["body", "prompt"], "msg": "field required", "type": "missing"},
    ]
    server.fail("result", "http", code=422, body={"detail": detail}, headers={"x-fal-request-id": "x"})

    with pytest.raises(UnprocessableEntityError) as info:
        backend.generate(ASK)

    message = str(info.value)
    assert "- image_url: Image is too large" in message and "- prompt: field required" in message
    assert info.value.body == {"detail": detail} and info.value.request_id in server.jobs
    assert len(server.calls("result")) == 1


def test_403_locked_shows_the_detail_verbatim_and_is_not_retried(
    server: FalTestServer, backend: FalBackend
) -> None:
    detail = "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."
    server.fail("submit", "http", code=403, body={"detail": detail})

    with pytest.raises(PermissionDeniedError) as info:
        backend.generate(ASK)

    assert detail in str(info.value)
    assert len(server.calls("submit")) == 1


def test_404_says_the_endpoint_may_be_retired_and_how_to_choose_another(
    server: FalTestServer, backend: FalBackend
) -> None:
    server.fail("submit", "http", code=404, body={"detail": 'Application "llava-llama3-8b-v11" not found'})

    with pytest.raises(NotFoundError, match="model=") as info:
        backend.generate(ASK)

    assert "retired" in str(info.value) and "not found" in str(info.value)


def test_fal_500_from_the_result_is_the_jobs_answer_and_not_retried(
    server: FalTestServer, backend: FalBackend
) -> None:
    server.fail("result", "http", **fal_error(500, "runner_server_error"))

    with pytest.raises(ServerError):
        backend.generate(ASK)
    assert len(server.calls("result")) == 1


def test_ingress_errors_on_reads_are_retried(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    server.fail("status", "http", **ingress_error(503))
    server.fail("result", "http", **ingress_error(504))
    backend = make_backend(status_stream=False)

    result = backend.generate(ASK)

    assert result.text.endswith(ASK.prompt) and len(server.calls("result")) == 2


def test_nothing_listening_is_a_connection_error_not_an_ambiguous_one(
    make_backend: Callable[..., FalBackend],
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = make_backend(base_url=f"http://127.0.0.1:{port}", max_retries=1)

    with pytest.raises(APIConnectionError, match="after 2 attempts") as info:
        backend.generate(ASK)

    assert not isinstance(info.value, AmbiguousSubmitError)
