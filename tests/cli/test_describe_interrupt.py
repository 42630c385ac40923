"""`llava-bridge describe` as a user runs it: Ctrl-C, a missing key, bad paths.

Ctrl-C is sent to a real process describing against the fal test server; the test
waits for the jobs to be in flight by watching the server, never by sleeping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from llava_bridge.cli.main import main
from tests.fal.fal_test_server import FalTestServer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

CONCURRENCY = 3
KEY = "describe-test-key"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(8):
        Image.new("RGB", (40, 30), (index * 30, 100, 200)).save(folder / f"img{index}.png")
    return folder


@pytest.fixture
def slow_server() -> Iterator[FalTestServer]:
    """Jobs that run for minutes: only a cancel ends them within a test."""
    with FalTestServer(job_seconds=300.0, require_key=KEY) as server:
        yield server


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "LLAVA_FAL_"))}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(name, None)
    return env


def _start_describe(server: FalTestServer, photos: Path, out: Path) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "llava_bridge.cli",
        "describe",
        str(photos),
        "--out",
        str(out),
        "--base-url",
        server.url,
        "--api-key",
        KEY,
        "--concurrency",
        str(CONCURRENCY),
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_clean_env()
    )


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], what: str) -> None:
    """Poll `condition` (state the server observed) until it holds; fail if the process ends."""
    deadline = time.monotonic() + 60
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"describe ended before {what}: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _running(server: FalTestServer) -> int:
    return sum(job.status == "IN_PROGRESS" for job in list(server.jobs.values()))


def test_ctrl_c_cancels_every_job_in_flight_and_prints_one_line(
    slow_server: FalTestServer, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "captions.jsonl"
    process = _start_describe(slow_server, photos, out)
    _wait_for(lambda: _running(slow_server) == CONCURRENCY, process, "jobs in flight")
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    jobs = list(slow_server.jobs.values())
    assert len(jobs) == CONCURRENCY
    # Every cancel was sent before the exit; on a busy machine the test server (a thread of
    # this process) may handle the last ones a moment after the client stopped waiting.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(job.status == "COMPLETED" for job in jobs):
        time.sleep(0.02)
    assert len(slow_server.calls("cancel")) == CONCURRENCY
    assert all(job.cancelled for job in jobs), [(job.id, job.status) for job in jobs]
    assert not any(job.status in ("IN_QUEUE", "IN_PROGRESS") for job in jobs)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert f"{CONCURRENCY} in flight cancelled" in lines[0] and "5 not started" in lines[0]
    assert "0 image(s) described" in lines[0] and "nothing written" in lines[0]
    assert KEY not in stdout + stderr


def test_a_second_ctrl_c_exits_at_once(slow_server: FalTestServer, photos: Path, tmp_path: Path) -> None:
    slow_server.fail("cancel", "stall", times=CONCURRENCY, seconds=300.0)  # cancels that never end
    process = _start_describe(slow_server, photos, tmp_path / "captions.jsonl")
    _wait_for(lambda: _running(slow_server) == CONCURRENCY, process, "jobs in flight")
    process.send_signal(signal.SIGINT)
    _wait_for(lambda: len(slow_server.calls("cancel")) >= 1, process, "the first cancel")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)  # far less than the stalled cancels
    assert process.returncode == 130
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted again" in lines[0], stderr


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "LLAVA_FAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_a_missing_key_stops_before_the_first_image_and_writes_nothing(
    no_key: None, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path(photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # fails before the backend
    out = tmp_path / "captions.jsonl"
    assert main(["describe", str(photos), "--out", str(out)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("llava-bridge: error: MissingCredentialsError:") and "FAL_KEY" in lines[0]
    assert "--api-key" in lines[0] and "api_key=" not in lines[0]
    assert not out.exists()
    assert main(["describe", "--backend", "fake", str(photos), "--out", str(out)]) == 1  # broken.png
    assert out.exists()  # the next run is not blocked by a left-over file


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llava_bridge.cli", *args],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
    )


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("missing source", "does not exist"),
        ("out is a directory", "is a directory"),
        ("out is a directory, --overwrite", "is a directory"),
        ("out's parent is a file", "is not a directory"),
    ],
)
def test_bad_paths_are_usage_errors(case: str, fragment: str, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "captions.jsonl"
    args = ["describe", "--backend", "fake", str(photos), "--out", str(out)]
    if case == "missing source":
        args[3] = str(tmp_path / "no-such-folder")
    elif case.startswith("out is a directory"):
        out.mkdir()
        args += ["--overwrite"] if "overwrite" in case else []
    else:
        (tmp_path / "a-file").write_text("x")
        args[5] = str(tmp_path / "a-file" / "captions.jsonl")
    result = _run_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llava-bridge: error:") and fragment in lines[0], lines
    assert "Traceback" not in result.stderr
    assert not out.is_file()
