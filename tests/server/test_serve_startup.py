"""`llava-bridge serve` start-up: a local model loads before the server says it serves,
a broken one stops it with one line, the fake backend says its answers are fake, and a
key on the command line is warned about."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llava_bridge.server.cli import API_KEY_ENV, FAKE_NOTE
from tests.support.local_server import running_server


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    """`serve` expected to fail: run to its end."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    env.pop(API_KEY_ENV, None)
    return subprocess.run(
        [sys.executable, "-m", "llava_bridge.cli", "serve", "--port", "0", "--db", ":memory:", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def _assert_one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "serving on" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert all(fragment in errors[0] for fragment in fragments), errors[0]
    assert "Traceback" not in result.stderr


def test_the_fake_backend_says_its_answers_are_fake() -> None:
    with running_server("--backend", "fake") as server:
        lines = server.stderr_text().splitlines()
    assert lines.count(f"llava-bridge serve: {FAKE_NOTE}") == 1


def test_a_key_on_the_command_line_is_warned_about_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with running_server("--api-key", "cmdline-key-7e2") as server:
        warnings = [line for line in server.stderr_text().splitlines() if "--api-key" in line]
    assert len(warnings) == 1 and API_KEY_ENV in warnings[0]
    assert "cmdline-key-7e2" not in server.stderr_text()
    with running_server(env={API_KEY_ENV: "env-key-7e2"}) as server:
        assert "--api-key" not in server.stderr_text()


def test_a_missing_local_model_stops_serve_with_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    _assert_one_error_line(_serve("--backend", "local", "--model", missing), missing)


def test_local_flags_need_the_local_backend() -> None:
    _assert_one_error_line(_serve("--backend", "fake", "--dtype", "float16"), "--dtype", "--backend local")


@pytest.mark.slow
def test_a_local_model_loads_before_serving_and_broken_weights_stop_it(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llava_bridge.testing import build_tiny_llava

    model_dir = build_tiny_llava(tmp_path / "tiny-llava")
    flags = ("--backend", "local", "--model", str(model_dir), "--device", "cpu", "--dtype", "float32")
    with running_server(*flags, env={"HF_HUB_OFFLINE": "1"}, timeout=120) as server:
        log = server.stderr_text()  # what was logged by the time it said it serves
    assert "dtype float32, device cpu" in log and f"Loaded {model_dir} in " in log, log

    broken = tmp_path / "broken-llava"
    shutil.copytree(model_dir, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not weights")
    _assert_one_error_line(_serve(*flags[:3], str(broken), *flags[4:]), str(broken))
