"""Messages name the server by origin: fal's hosts are "fal", a server of the caller's
(`LLAVA_FAL_BASE_URL`, `base_url=`) is named by its scheme, host and port."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from llava_bridge import DeadlineExceededError, VisionRequest
from llava_bridge.backends.fal.backend import FalBackend
from llava_bridge.backends.fal.ops import _deadline_error
from llava_bridge.backends.fal.settings import request_name, server_name
from tests.fal.fal_test_server import FalTestServer

FAL_QUEUE = "https://queue.fal.run"
OWN_QUEUE = "http://gpu-box:8000"


@pytest.mark.parametrize(
    ("url", "server", "job"),
    [
        (FAL_QUEUE, "fal", "fal request r1"),
        ("https://fal.run/fal-ai/llava", "fal", "fal request r1"),
        (OWN_QUEUE, "the server at http://gpu-box:8000", "request r1 to http://gpu-box:8000"),
        ("https://user:pw@llava.example.com/x?q=1", "the server at https://llava.example.com",
         "request r1 to https://llava.example.com"),
        ("http://[::1]:9000", "the server at http://[::1]:9000", "request r1 to http://[::1]:9000"),
    ],
)  # fmt: skip
def test_servers_and_requests_are_named_by_origin(url: str, server: str, job: str) -> None:
    assert server_name(url) == server
    assert request_name(url, "r1") == job


@pytest.mark.parametrize(
    ("url", "request_id", "sent", "says"),
    [
        (FAL_QUEUE, "r1", True, "timeout=2s; fal request r1 was cancelled so that it is not billed further"),
        (OWN_QUEUE, "r1", True,
         "timeout=2s; request r1 to http://gpu-box:8000 was cancelled so that it stops using the server"),
        (FAL_QUEUE, None, True, "before fal gave a request id; if the request reached fal, the job may"),
        (OWN_QUEUE, None, True,
         "before the server at http://gpu-box:8000 gave a request id; if the request reached it, the job"),
        (FAL_QUEUE, None, False, "timeout=2s ran out before anything was sent"),
        (OWN_QUEUE, None, False, "timeout=2s ran out before anything was sent"),
    ],
)  # fmt: skip
def test_deadline_errors_are_worded_by_origin(
    url: str, request_id: str | None, sent: bool, says: str
) -> None:
    error = _deadline_error(2.0, url, request_id, sent=sent)
    assert says in str(error)
    assert error.request_id == request_id and error.timeout == 2.0
    if url == OWN_QUEUE:
        assert "fal" not in str(error)


def test_a_timeout_on_a_server_of_ones_own_names_it_not_fal(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    server.job_seconds = 30.0
    backend = make_backend(timeout=0.8)

    with pytest.raises(DeadlineExceededError) as caught:
        backend.generate(VisionRequest(prompt="What is in the picture?"))

    request_id = caught.value.request_id
    assert request_id is not None and server.jobs[request_id].cancelled
    message = str(caught.value)
    assert f"request {request_id} to {server.url} was cancelled" in message
    assert "fal" not in message
