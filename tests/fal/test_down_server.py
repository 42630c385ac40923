"""A client pointed at a server that is down: one message naming the URL and where it came from."""

from __future__ import annotations

import json
import socket
import traceback
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llava_bridge import FalBackend, ImageInput, JobFailedError, ResizePolicy, VisionRequest, retry
from llava_bridge.backends._transport.effects import (
    Compute,
    HttpRequest,
    HttpResponse,
    Sleep,
    TransportFailure,
)
from llava_bridge.backends._transport.flows import Deadline
from llava_bridge.backends.fal.settings import FalConfig
from llava_bridge.backends.fal.uploads import StorageState, image_url_flow
from llava_bridge.errors import ServerUnreachableError
from tests.fal.conftest import photo_bytes
from tests.fal.fal_test_server import FalTestServer

BIG_PHOTO = photo_bytes(1600, 1200)
"""Big enough to be uploaded (so the upload path, and its fallback, are what meets the dead host)."""
REFUSED = TransportFailure(retry.Failure.NOT_SENT, "ConnectionRefusedError: [Errno 111] Connection refused")


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A URL nothing listens at: the port is held by a bound socket that never listens."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{holder.getsockname()[1]}"
    finally:
        holder.close()


@pytest.fixture(autouse=True)
def no_fal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "LLAVA_FAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def _shown(error: BaseException) -> str:
    """What Python prints for an uncaught `error`."""
    return "".join(traceback.format_exception(error))


@pytest.mark.parametrize("image", [None, BIG_PHOTO], ids=["submit", "upload"])
@pytest.mark.parametrize("named_by", ["env", "code"])
async def test_one_message_names_the_url_where_it_came_from_and_llava_bridge_serve(
    dead_url: str, named_by: str, image: bytes | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if named_by == "env":
        monkeypatch.setenv("LLAVA_FAL_BASE_URL", dead_url)
    options = {"base_url": dead_url} if named_by == "code" else {}
    source = "LLAVA_FAL_BASE_URL" if named_by == "env" else "base_url= in code"
    request = VisionRequest(prompt="hi", image=image)
    with FalBackend(max_retries=1, **options) as backend:
        with pytest.raises(ServerUnreachableError) as sync_error:
            backend.generate(request)
        with pytest.raises(ServerUnreachableError) as async_error:
            await backend.agenerate(request)
        with pytest.raises(ServerUnreachableError) as stream_error:
            list(backend.stream(request))
    for caught in (sync_error, async_error, stream_error):
        message = str(caught.value)
        assert message.startswith(f"Cannot reach the server at {dead_url} (from {source}): the ")
        assert "Is it running? Start one with `llava-bridge serve`" in message
        assert "fal" not in message.replace("LLAVA_FAL_BASE_URL", "")
        printed = _shown(caught.value)
        assert "During handling" not in printed and "direct cause" not in printed
        assert "initiate" not in printed  # no fallback against the same dead host
        assert caught.value.url.startswith(dead_url)


def _drive_upload(config: FalConfig, answer: dict[str, object]) -> tuple[list[str], float, BaseException]:
    """Run the upload flow of a big image step by step; `answer` maps a request label to its
    reply (default: connection refused). Returns the labels sent, the seconds slept, the error."""
    flow = image_url_flow(
        config,
        Deadline(),
        StorageState(),
        ImageInput.from_bytes(BIG_PHOTO),
        policy=ResizePolicy(),
        inline_threshold=0,
    )
    labels: list[str] = []
    slept = 0.0
    reply: object = None
    with pytest.raises(Exception) as caught:
        while True:
            effect = flow.send(reply)
            if isinstance(effect, Compute):
                reply = effect.function()
            elif isinstance(effect, Sleep):
                slept += effect.seconds
                reply = None
            else:
                assert isinstance(effect, HttpRequest)
                labels.append(effect.label)
                reply = answer.get(effect.label, REFUSED)
    return labels, slept, caught.value


def test_a_refused_upload_is_retried_within_the_policy_and_not_sent_to_the_fallback() -> None:
    config = FalConfig(
        queue_url="http://gpu-box:8000", run_url="http://gpu-box:8000/run",
        rest_url="http://gpu-box:8000/rest", cdn_url="http://gpu-box:8000/cdn",
    )  # fmt: skip
    labels, slept, error = _drive_upload(config, {})
    assert isinstance(error, ServerUnreachableError)
    assert labels == ["storage token"] * retry.MAX_ATTEMPTS
    longest = sum(min(retry.BASE_DELAY * 2**n, retry.MAX_DELAY) for n in range(retry.MAX_ATTEMPTS - 1))
    assert 0 < slept <= longest  # bounded by the retry constants: 3.75 s with the defaults


def test_a_refused_cdn_host_falls_back_to_a_storage_host_that_answers() -> None:
    config = FalConfig(
        queue_url="https://queue.fal.run", run_url="https://fal.run",
        rest_url="https://rest.fal.ai", cdn_url="https://v3.fal.media",
    )  # fmt: skip
    token = HttpResponse(200, {}, json.dumps({"token": "t", "token_type": "Bearer"}).encode())
    labels, _, _ = _drive_upload(config, {"storage token": token})
    assert labels[: retry.MAX_ATTEMPTS + 1] == ["storage token"] + ["CDN upload"] * retry.MAX_ATTEMPTS
    assert labels[retry.MAX_ATTEMPTS + 1] == "storage upload initiate"  # another host: worth a try


def test_an_unreachable_fal_host_is_called_fal_and_gets_network_advice() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    client = httpx.Client(transport=httpx.MockTransport(refuse))
    backend = FalBackend(api_key="k", max_retries=0, http_client=client)
    with backend, pytest.raises(ServerUnreachableError) as caught:
        backend.generate(VisionRequest(prompt="hi"))
    message = str(caught.value)
    assert message.startswith("Cannot reach fal at https://queue.fal.run: the submit request failed")
    assert "Check the network connection" in message and "llava-bridge serve" not in message


def test_a_failed_job_on_a_server_that_is_not_fal_is_not_called_fal() -> None:
    with FalTestServer(job_seconds=0.0) as server:
        server.job_error = ("model failed to load", "runner_error")
        with FalBackend(base_url=server.url) as backend, pytest.raises(JobFailedError) as caught:
            backend.generate(VisionRequest(prompt="hi"))
    assert f"to the server at {server.url} failed (runner_error): model failed to load" in str(caught.value)
    assert "fal" not in str(caught.value)


def test_the_cli_prints_one_line_for_a_down_server(
    dead_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from llava_bridge.cli.main import main

    monkeypatch.setenv("LLAVA_FAL_BASE_URL", dead_url)
    (tmp_path / "photo.jpg").write_bytes(BIG_PHOTO)
    assert main(["ask", str(tmp_path / "photo.jpg"), "What is it?"]) == 1
    err = capsys.readouterr().err
    assert f"Cannot reach the server at {dead_url} (from LLAVA_FAL_BASE_URL)" in err
    assert "llava-bridge serve" in err and "Traceback" not in err and "initiate" not in err
