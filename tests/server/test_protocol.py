"""fal's queue, run, stream and storage protocol, spoken over HTTP to a real server process."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server.conftest import APP, wait_completed
from tests.support.local_server import LocalServer, running_server


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    # 1 s a job: a status read right after submit finds it unfinished even on a busy machine.
    with running_server("--backend", "fake", "--fake-latency", "1") as running:
        yield running


@pytest.fixture(scope="module")
def slow_server() -> Iterator[LocalServer]:
    """One job at a time, 30 s each (every test cancels its own): jobs wait in the queue."""
    with running_server("--backend", "fake", "--fake-latency", "30", "--concurrency", "1") as running:
        yield running


@pytest.fixture
def client(server: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        yield http


def _submit(http: httpx.Client, data_uri: str, **extra: Any) -> dict[str, Any]:
    response = http.post(f"/{APP}", json={"image_url": data_uri, "prompt": "What is this?", **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _sse_events(response: httpx.Response) -> list[tuple[str, Any]]:
    events, name, data = [], "message", []
    for line in response.iter_lines():
        if not line:
            if data:
                events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    return events


def test_submit_answers_with_fal_fields_and_urls(
    server: LocalServer, client: httpx.Client, data_uri: str
) -> None:
    body = _submit(client, data_uri)
    job = body["request_id"]
    assert body["status"] == "IN_QUEUE"
    assert isinstance(body["queue_position"], int)
    assert body["response_url"] == f"{server.base_url}/{APP}/requests/{job}"
    assert body["status_url"] == body["response_url"] + "/status"
    assert body["cancel_url"] == body["response_url"] + "/cancel"
    wait_completed(client, body["status_url"])


def test_status_is_202_until_completed_then_200_with_logs_and_metrics(
    client: httpx.Client, data_uri: str
) -> None:
    job = _submit(client, data_uri)
    first = client.get(job["status_url"])
    assert first.status_code == 202
    assert first.json()["status"] in ("IN_QUEUE", "IN_PROGRESS")
    assert first.json()["logs"] is None  # logs only when asked for
    done = wait_completed(client, job["status_url"])
    assert done["metrics"]["inference_time"] >= 1.0
    assert done["error"] is None and done["error_type"] is None
    messages = [line["message"] for line in done["logs"]]
    assert messages[0].startswith("Started on fake-llava")
    assert messages[-1].startswith("Completed in")
    assert "tokens/s" in messages[-1]
    assert {line["level"] for line in done["logs"]} == {"INFO"}
    assert all(line["source"] == "USER" and line["timestamp"] for line in done["logs"])
    again = client.get(job["status_url"], params={"logs": "true"}).json()
    assert again["logs"] == done["logs"]  # cumulative: the same lines again, none lost
    result = client.get(job["response_url"])
    assert result.status_code == 200
    assert result.headers["x-fal-request-id"] == job["request_id"]
    assert result.json()["output"] == "This is a fake answer from FakeBackend."
    assert result.json()["partial"] is False


def test_status_stream_sends_new_logs_only_and_ends_at_completed(client: httpx.Client, data_uri: str) -> None:
    job = _submit(client, data_uri)
    with client.stream("GET", job["status_url"] + "/stream", params={"logs": "1"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(response)
    statuses = [body["status"] for _, body in events]
    assert statuses[-1] == "COMPLETED"
    assert "COMPLETED" not in statuses[:-1]
    streamed = [line for _, body in events for line in body["logs"]]
    final = client.get(job["status_url"], params={"logs": "1"}).json()["logs"]
    assert streamed == final  # the deltas add up to the cumulative logs, with no repeats


def test_sync_run_answers_in_the_same_response(client: httpx.Client, data_uri: str) -> None:
    response = client.post(
        f"/run/{APP}", json={"image_url": data_uri, "prompt": "What?", "max_new_tokens": 3}
    )
    assert response.status_code == 200
    assert response.json() == {
        "output": "This is a",
        "partial": False,
        "finish_reason": "length",
        "usage": {"prompt_tokens": response.json()["usage"]["prompt_tokens"], "completion_tokens": 3},
    }


def test_stream_sends_growing_partial_outputs_then_the_final_one(client: httpx.Client, data_uri: str) -> None:
    with client.stream(
        "POST", f"/run/{APP}/stream", json={"image_url": data_uri, "prompt": "What?"}
    ) as response:
        assert response.status_code == 200
        events = [body for _, body in _sse_events(response)]
    assert len(events) > 2
    assert all(event["partial"] for event in events[:-1])
    assert events[-1]["partial"] is False
    assert events[-1]["output"] == "This is a fake answer from FakeBackend."
    for before, after in itertools.pairwise(events):
        assert after["output"].startswith(before["output"])


def test_stream_refuses_bad_input_before_streaming(client: httpx.Client) -> None:
    response = client.post(f"/run/{APP}/stream", json={"image_url": "ftp://x/y.png", "prompt": "What?"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "image_url"]


def test_cancel_outcomes_and_queue_positions(slow_server: LocalServer, data_uri: str) -> None:
    with httpx.Client(base_url=slow_server.base_url, timeout=10) as http:
        running = _submit(http, data_uri)
        queued = _submit(http, data_uri)
        last = _submit(http, data_uri)
        deadline = time.monotonic() + 30
        while http.get(running["status_url"]).json()["status"] != "IN_PROGRESS":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert http.get(queued["status_url"]).json()["queue_position"] == 0
        assert http.get(last["status_url"]).json()["queue_position"] == 1

        removed = http.put(queued["cancel_url"])
        assert (removed.status_code, removed.json()["status"]) == (200, "OK")
        assert http.get(last["status_url"]).json()["queue_position"] == 0
        cancelled = http.get(queued["response_url"])
        assert cancelled.status_code == 499
        assert cancelled.json()["error_type"] == "client_cancelled"
        assert http.get(queued["status_url"]).json()["error_type"] == "client_cancelled"

        signalled = http.put(running["cancel_url"])
        assert (signalled.status_code, signalled.json()["status"]) == (202, "CANCELLATION_REQUESTED")
        started = time.monotonic()
        done = wait_completed(http, running["status_url"], timeout=25)
        assert time.monotonic() - started < 15  # stopped, not run to the end of its 30 s
        assert done["error_type"] == "client_cancelled"

        again = http.put(running["cancel_url"])
        assert (again.status_code, again.json()["status"]) == (400, "ALREADY_COMPLETED")
        unknown = http.put(f"/{APP}/requests/no-such-id/cancel")
        assert (unknown.status_code, unknown.json()["status"]) == (404, "NOT_FOUND")
        assert http.put(last["cancel_url"]).json()["status"] in ("OK", "CANCELLATION_REQUESTED")


def test_start_timeout_header_fails_a_job_that_waited_too_long(
    slow_server: LocalServer, data_uri: str
) -> None:
    with httpx.Client(base_url=slow_server.base_url, timeout=10) as http:
        blocker = _submit(http, data_uri)
        late = http.post(
            f"/{APP}", json={"image_url": data_uri, "prompt": "?"}, headers={"X-Fal-Request-Timeout": "0.2"}
        ).json()
        time.sleep(0.4)
        http.put(blocker["cancel_url"])
        done = wait_completed(http, late["status_url"], timeout=10)
        assert done["error_type"] == "request_timeout"
        result = http.get(late["response_url"])
        assert result.status_code == 504
        bad = http.post(
            f"/{APP}", json={"image_url": data_uri, "prompt": "?"}, headers={"X-Fal-Request-Timeout": "x"}
        )
        assert bad.status_code == 400


@pytest.mark.parametrize(
    ("method", "path", "payload", "status"),
    [
        ("POST", f"/{APP}", {"prompt": "no image"}, 422),
        ("POST", f"/{APP}", {"image_url": "data:image/png;base64,AAAA", "prompt": "?"}, 422),
        ("POST", f"/{APP}", {"image_url": "x", "prompt": "?", "max_new_tokens": 0}, 422),
        ("POST", f"/{APP}", {"image_url": "x", "prompt": "?", "temperature": 9}, 422),
        ("POST", f"/{APP}", {"image_url": "file:///etc/passwd", "prompt": "?"}, 422),
        ("POST", f"/{APP}", {"image_url": "gopher://x/", "prompt": "?"}, 422),
        ("POST", f"/{APP}", [1, 2], 422),
        ("POST", "/fal-ai/not-served", {"image_url": "x", "prompt": "?"}, 404),
        ("GET", f"/{APP}/requests/unknown/status", None, 404),
        ("GET", f"/{APP}/requests/unknown", None, 404),
        ("GET", "/fal-ai/not-served/requests/unknown/status", None, 404),
        ("POST", f"/{APP}?fal_webhook=http://example.com/hook", {"image_url": "x", "prompt": "?"}, 400),
        ("DELETE", f"/{APP}", None, 405),
    ],
)
def test_bad_input_gets_a_4xx_with_detail(
    client: httpx.Client, method: str, path: str, payload: Any, status: int
) -> None:
    response = client.request(method, path, json=payload)
    assert response.status_code == status, response.text
    assert "detail" in response.json()
    assert client.get("/health").status_code == 200


def test_whitespace_prompt_and_invalid_json_are_422(client: httpx.Client, data_uri: str) -> None:
    blank = client.post(f"/{APP}", json={"image_url": data_uri, "prompt": "   "})
    assert blank.status_code == 422
    assert "prompt" in blank.json()["detail"][0]["loc"]
    broken = client.post(f"/{APP}", content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 422
    assert isinstance(broken.json()["detail"], list)


def test_result_before_completion_is_a_400(slow_server: LocalServer, data_uri: str) -> None:
    with httpx.Client(base_url=slow_server.base_url, timeout=10) as http:
        job = _submit(http, data_uri)
        early = http.get(job["response_url"])
        assert early.status_code == 400
        assert "in progress" in early.json()["detail"]
        http.put(job["cancel_url"])


def test_uploads_are_served_back_and_usable_as_image_url(client: httpx.Client, png_bytes: bytes) -> None:
    token = client.post("/rest/storage/auth/token", params={"storage_type": "fal-cdn-v3"}, json={}).json()
    assert token["token_type"] == "Bearer"
    assert token["base_url"].endswith("/cdn")
    uploaded = client.post(
        token["base_url"] + "/files/upload",
        content=png_bytes,
        headers={
            "Content-Type": "image/png",
            "X-Fal-File-Name": "red.png",
            "Authorization": f"Bearer {token['token']}",
        },
    )
    assert uploaded.status_code == 200
    access_url = uploaded.json()["access_url"]
    served = client.get(access_url)
    assert (served.content, served.headers["content-type"]) == (png_bytes, "image/png")

    initiated = client.post(
        "/rest/storage/upload/initiate", json={"file_name": "a.png", "content_type": "image/png"}
    ).json()
    assert client.put(
        initiated["upload_url"], content=png_bytes, headers={"Content-Type": "image/png"}
    ).is_success
    assert client.put(initiated["upload_url"], content=b"again").status_code == 404  # one-time URL
    assert client.get(initiated["file_url"]).content == png_bytes

    # The server's own file URL is on 127.0.0.1, which the SSRF guard refuses for other URLs.
    job = _submit(client, access_url)
    wait_completed(client, job["status_url"])
    assert client.get(job["response_url"]).json()["output"].startswith("This is a fake")
    missing = client.post(
        f"/{APP}", json={"image_url": access_url.rsplit("/", 1)[0] + "/AAAAAAAAAAAA", "prompt": "?"}
    )
    assert missing.status_code == 422
    assert client.get("/cdn/files/unknown-file-id").status_code == 404


def test_openapi_lists_the_routes(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/{owner}/{alias}",
        "/{owner}/{alias}/requests/{request_id}/status",
        "/{owner}/{alias}/requests/{request_id}/status/stream",
        "/{owner}/{alias}/requests/{request_id}",
        "/{owner}/{alias}/requests/{request_id}/cancel",
        "/run/{owner}/{alias}",
        "/run/{owner}/{alias}/stream",
        "/rest/storage/auth/token",
        "/rest/storage/upload/initiate",
        "/cdn/files/upload",
        "/cdn/files/{file_id}",
    ):
        assert path in paths
