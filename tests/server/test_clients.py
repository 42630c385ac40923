"""The official fal-client and our FalBackend, unchanged, against a real server process.

fal_client builds `https://{FAL_QUEUE_RUN_HOST}/...` URLs at import time; the
tests point its URL constants at the server (the same layout `FalBackend`'s
`base_url=` uses: queue at the root, run under /run, rest under /rest, cdn under /cdn).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fal_client
import fal_client.client as fal_client_module
import httpx
import pytest

from llava_bridge import FalBackend, ImageInput, UnprocessableEntityError, VisionRequest
from llava_bridge.backends.fal.protocol import CDN_PREFIX, REST_PREFIX, RUN_PREFIX
from tests.server.conftest import APP
from tests.support.local_server import LocalServer, running_server

KEY = "client-test-key"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with running_server("--backend", "fake", "--fake-latency", "0.2", "--api-key", KEY) as running:
        yield running


@pytest.fixture
def fal_hosts(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    base = server.base_url
    monkeypatch.setattr(fal_client_module, "QUEUE_URL_FORMAT", f"{base}/")
    monkeypatch.setattr(fal_client_module, "RUN_URL_FORMAT", f"{base}{RUN_PREFIX}/")
    monkeypatch.setattr(fal_client_module, "REST_URL", f"{base}{REST_PREFIX}")
    monkeypatch.setattr(fal_client_module, "CDN_URL", f"{base}{CDN_PREFIX}")


@pytest.mark.usefixtures("fal_hosts")
def test_fal_client_subscribe_with_logs(data_uri: str) -> None:
    updates: list[Any] = []
    client = fal_client.SyncClient(key=KEY)
    output = client.subscribe(
        APP, {"image_url": data_uri, "prompt": "What?"}, with_logs=True, on_queue_update=updates.append
    )
    assert output["output"] == "This is a fake answer from FakeBackend."
    logs = [
        line["message"]
        for update in updates
        if isinstance(update, fal_client.InProgress)
        for line in update.logs
    ]
    assert any(message.startswith("Started on") for message in logs)


@pytest.mark.usefixtures("fal_hosts")
def test_fal_client_submit_status_result_cancel(data_uri: str) -> None:
    client = fal_client.SyncClient(key=KEY)
    handle = client.submit(APP, {"image_url": data_uri, "prompt": "What?"})
    assert isinstance(handle.status(), (fal_client.Queued, fal_client.InProgress))
    assert handle.get()["output"].startswith("This is a fake")
    done = handle.status(with_logs=True)
    assert isinstance(done, fal_client.Completed)
    assert done.metrics["inference_time"] >= 0.2
    assert client.result(APP, handle.request_id)["partial"] is False
    with pytest.raises(fal_client.FalClientHTTPError) as caught:
        handle.cancel()
    assert caught.value.status_code == 400  # ALREADY_COMPLETED


@pytest.mark.usefixtures("fal_hosts")
def test_fal_client_run_stream_and_upload(png_bytes: bytes) -> None:
    client = fal_client.SyncClient(key=KEY)
    url = client.upload(png_bytes, "image/png", file_name="red.png")
    assert url.startswith(fal_client_module.CDN_URL)
    assert client.run(APP, {"image_url": url, "prompt": "What?"})["output"].startswith("This is")
    events = list(client.stream(APP, {"image_url": url, "prompt": "What?"}))
    assert events[-1] == {
        "output": "This is a fake answer from FakeBackend.",
        "partial": False,
        "finish_reason": "stop",
        "usage": events[-1]["usage"],
    }


@pytest.mark.usefixtures("fal_hosts")
async def test_fal_client_async_subscribe_and_errors(data_uri: str) -> None:
    client = fal_client.AsyncClient(key=KEY)
    output = await client.subscribe(APP, {"image_url": data_uri, "prompt": "What?"})
    assert output["output"].startswith("This is a fake")
    with pytest.raises(fal_client.FalClientHTTPError) as caught:
        await client.submit(APP, {"image_url": "http://169.254.169.254/latest/meta-data", "prompt": "?"})
    assert caught.value.status_code == 422
    with pytest.raises(fal_client.FalClientHTTPError) as wrong_key:
        await fal_client.AsyncClient(key="nope").run(APP, {"image_url": data_uri, "prompt": "?"})
    assert wrong_key.value.status_code == 401


@pytest.mark.parametrize("mode", ["queue", "run"])
def test_fal_backend_generate_and_stream(server: LocalServer, mode: str, png_bytes: bytes) -> None:
    image = ImageInput.from_bytes(png_bytes)
    with FalBackend(base_url=server.base_url, api_key=KEY, mode=mode) as backend:  # type: ignore[arg-type]
        result = backend.generate(VisionRequest(prompt="What is this?", image=image))
        assert result.text == "This is a fake answer from FakeBackend."
        if mode == "queue":
            assert result.request_id and result.metrics["inference_time"] >= 0.2
            assert any(line.startswith("Completed in") for line in result.logs)
        chunks = list(backend.stream(VisionRequest(prompt="What is this?", image=image)))
        assert "".join(chunk.delta for chunk in chunks) == result.text


async def test_fal_backend_async_uploads_to_the_server(server: LocalServer, png_bytes: bytes) -> None:
    image = ImageInput.from_bytes(png_bytes)
    async with FalBackend(base_url=server.base_url, api_key=KEY, inline_threshold=0) as backend:
        result = await backend.agenerate(VisionRequest(prompt="What is this?", image=image))
        assert result.text.startswith("This is a fake")
        assert backend.uploads == 1


def test_fal_backend_sees_the_servers_422(server: LocalServer) -> None:
    with FalBackend(base_url=server.base_url, api_key=KEY) as backend:
        request = VisionRequest(prompt="What is this?", image=ImageInput.from_url("http://10.0.0.1/cat.png"))
        with pytest.raises(UnprocessableEntityError) as caught:
            backend.generate(request)
    assert "non-public address" in str(caught.value)
    assert httpx.get(f"{server.base_url}/health").status_code == 200
