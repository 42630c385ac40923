"""A client-proposed request id makes submits idempotent (X-Llava-Request-Id)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from llava_bridge import FakeBackend
from llava_bridge.server.background import BackgroundServer

ENDPOINT = "fal-ai/llava-llama3-8b-v11"
IMAGE = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
)


@pytest.fixture
def served() -> Iterator[tuple[str, FakeBackend]]:
    backend = FakeBackend("ok", latency=0.05)
    with BackgroundServer(backend) as server:
        yield server.url, backend


def wait_done(client: httpx.Client, base: str, request_id: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if client.get(f"{base}/fal-ai/llava-llama3-8b-v11/requests/{request_id}/status").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError("the job did not complete")


def test_a_repeated_submit_with_the_same_id_returns_the_same_job(served: tuple[str, FakeBackend]) -> None:
    base, backend = served
    proposed = str(uuid.uuid4())
    body = {"image_url": IMAGE, "prompt": "What is it?"}
    with httpx.Client(timeout=10) as client:
        first = client.post(f"{base}/{ENDPOINT}", json=body, headers={"X-Llava-Request-Id": proposed})
        second = client.post(f"{base}/{ENDPOINT}", json=body, headers={"X-Llava-Request-Id": proposed})
        assert first.status_code == second.status_code == 200
        assert first.json()["request_id"] == second.json()["request_id"] == proposed
        wait_done(client, base, proposed)
        third = client.post(f"{base}/{ENDPOINT}", json=body, headers={"X-Llava-Request-Id": proposed})
        assert third.json()["status"] == "COMPLETED"
        assert client.get(f"{base}/fal-ai/llava-llama3-8b-v11/requests/{proposed}").json()["output"] == "ok"
    assert len(backend.history) == 1


def test_the_same_id_for_a_different_request_is_a_409(served: tuple[str, FakeBackend]) -> None:
    base, _ = served
    proposed = str(uuid.uuid4())
    with httpx.Client(timeout=10) as client:
        client.post(
            f"{base}/{ENDPOINT}",
            json={"image_url": IMAGE, "prompt": "a"},
            headers={"X-Llava-Request-Id": proposed},
        )
        clash = client.post(
            f"{base}/{ENDPOINT}",
            json={"image_url": IMAGE, "prompt": "b"},
            headers={"X-Llava-Request-Id": proposed},
        )
    assert clash.status_code == 409 and "already used" in clash.json()["detail"]


@pytest.mark.parametrize("bad", ["not-a-uuid", "", "x" * 500])
def test_a_proposed_id_must_be_a_uuid(served: tuple[str, FakeBackend], bad: str) -> None:
    base, _ = served
    with httpx.Client(timeout=10) as client:
        answer = client.post(
            f"{base}/{ENDPOINT}",
            json={"image_url": IMAGE, "prompt": "a"},
            headers={"X-Llava-Request-Id": bad},
        )
        assert answer.status_code == 400 and "UUID" in answer.json()["detail"]
        assert client.post(f"{base}/{ENDPOINT}", json={"image_url": IMAGE, "prompt": "a"}).status_code == 200
