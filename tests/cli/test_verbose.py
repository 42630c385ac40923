"""`-v` logs each HTTP request (method, URL, status, ms) on stderr, never the key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fal.fal_test_server import FalTestServer

DATA = Path(__file__).resolve().parents[1] / "data"
KEY = "verbose-canary-key-5b1f"
ENDPOINT = "fal-ai/llava-llama3-8b-v11"


@pytest.fixture(scope="module")
def server() -> Iterator[FalTestServer]:
    with FalTestServer(require_key=KEY) as running:
        yield running


def _ask(server: FalTestServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "LLAVA_FAL_"))}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "llava_bridge.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize("where", ["before the command", "after the command"])
def test_v_logs_submit_status_and_result_with_their_statuses(server: FalTestServer, where: str) -> None:
    ask = ["ask", str(DATA / "coffee.png"), "what is it?", "--base-url", server.url, "--api-key", KEY]
    result = _ask(server, *(["-v", *ask] if where == "before the command" else [*ask, "-v"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("I see a ")
    requests = [line for line in result.stderr.splitlines() if "llava_bridge.http" in line]
    base = re.escape(f"{server.url}/{ENDPOINT}")
    patterns = {
        "submit": rf"POST {base} -> 200 \(\d+ ms\)$",
        "status": rf"GET {base}/requests/[\w-]+/status(/stream)? -> 200 \(\d+ ms\)$",
        "result": rf"GET {base}/requests/[\w-]+ -> 200 \(\d+ ms\)$",
    }
    for name, pattern in patterns.items():
        assert any(re.search(pattern, line) for line in requests), (name, requests)
    assert KEY not in result.stderr + result.stdout
    assert "?" not in "".join(requests)  # no query strings


def test_without_v_nothing_is_logged(server: FalTestServer) -> None:
    result = _ask(server, "ask", str(DATA / "coffee.png"), "hi", "--base-url", server.url, "--api-key", KEY)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
