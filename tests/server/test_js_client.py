"""fal's JavaScript client (@fal-ai/client, pinned in tests/server/js/package.json) against a real
server process: subscribe with logs, queue submit/status/result/cancel, storage upload, run,
stream, and a typed 422 whose message is readable.

Needs Node.js and the package installed: ``npm ci --prefix tests/server/js``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import APP
from tests.support.local_server import running_server

JS_DIR = Path(__file__).resolve().parent / "js"
KEY = "js-client-key"
FAKE_ANSWER = "This is a fake answer from FakeBackend."


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory, png_bytes: bytes) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "@fal-ai" / "client").is_dir():
        pytest.skip("needs Node.js and `npm ci --prefix tests/server/js`")
    image = tmp_path_factory.mktemp("js") / "red.png"
    image.write_bytes(png_bytes)
    flags = ("--fake-latency", "0.5", "--api-key", KEY, "--concurrency", "1")
    with running_server(*flags) as server:
        env = {
            **os.environ,
            "LLAVA_BASE": server.base_url,
            "LLAVA_KEY": KEY,
            "LLAVA_APP": APP,
            "LLAVA_IMAGE": str(image),
        }
        done = subprocess.run(
            [node, "fal_client_check.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["base_url"] = server.base_url
    return result


def test_storage_upload_gives_a_url_on_the_server(seen: dict[str, Any]) -> None:
    assert seen["upload"]["url"].startswith(f"{seen['base_url']}/cdn/files/")


def test_subscribe_with_logs(seen: dict[str, Any]) -> None:
    subscribed = seen["subscribe"]
    assert subscribed["output"] == FAKE_ANSWER
    assert subscribed["requestId"]
    assert "COMPLETED" in subscribed["statuses"]
    assert any(line.startswith("Started on") for line in subscribed["logs"])


def test_queue_submit_status_result_and_cancel(seen: dict[str, Any]) -> None:
    queue = seen["queue"]
    assert queue["firstStatus"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert queue["resultOutput"] == FAKE_ANSWER
    assert queue["resultRequestId"] == queue["requestId"]
    assert queue["cancelledStatus"] == "COMPLETED"  # cancelled while queued behind three others
    assert queue["cancelCompleted"] == {"name": "ApiError", "status": 400}  # ALREADY_COMPLETED


def test_run_and_stream_carry_request_ids(seen: dict[str, Any]) -> None:
    assert seen["run"]["output"] == FAKE_ANSWER
    assert seen["run"]["requestId"]
    stream = seen["stream"]
    assert stream["events"] >= 2 and stream["lastPartial"] is False
    assert stream["doneOutput"] == FAKE_ANSWER
    assert stream["requestId"]


def test_a_422_is_a_validation_error_with_a_readable_message(seen: dict[str, Any]) -> None:
    invalid = seen["invalid"]
    assert invalid["isValidationError"] and invalid["isApiError"] and invalid["status"] == 422
    assert invalid["message"] == "max_new_tokens: Input should be a valid integer"
    assert invalid["fields"] == ["max_new_tokens"]
