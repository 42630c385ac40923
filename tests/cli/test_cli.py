"""The CLI, run as a real process and in process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llava_bridge.cli.main import main

DATA = Path(__file__).resolve().parents[1] / "data"


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    full_env.pop("LLAVA_FAL_BASE_URL", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "llava_bridge.cli", *args],
        capture_output=True,
        text=stdin is None,
        input=stdin,
        env=full_env,
        timeout=60,
    )  # type: ignore[call-overload, no-any-return]


def test_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("ask", "demo", "serve"):
        assert command in result.stdout


def test_ask_with_the_fake_backend() -> None:
    result = run_cli("ask", "--backend", "fake", str(DATA / "coffee.png"), "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "This is a fake answer from FakeBackend."


def test_ask_json_prints_the_whole_result(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "--backend", "fake", "--json", str(DATA / "rocket.jpg"), "hi"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["finish_reason"] == "stop" and payload["usage"]["estimated"] is True


def test_ask_stream(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "--backend", "fake", "--stream", str(DATA / "rocket.jpg"), "hi"]) == 0
    assert capsys.readouterr().out == "This is a fake answer from FakeBackend.\n"


def test_ask_reads_stdin() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llava_bridge.cli", "ask", "--backend", "fake", "-", "hi"],
        input=(DATA / "rocket.jpg").read_bytes(),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["ask", "--backend", "fake", "README.md", "hi"], "Not an image"),
        (["ask", "--backend", "fake", "missing.png", "hi"], "Cannot read image file"),
        (["ask", "--backend", "fake", "ftp://example.com/a.png", "hi"], "only http, https and data"),
        (["ask", "--backend", "fake", str(DATA / "coffee.png"), "   "], "empty or whitespace"),
        (["ask", "--backend", "fake", "--max-new-tokens", "0", str(DATA / "coffee.png"), "hi"], "between 1"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.startswith("llava-bridge: error:")


def test_fal_without_a_key_says_how_to_set_it() -> None:
    result = run_cli("ask", str(DATA / "coffee.png"), "hi")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "FAL_KEY" in lines[0]


def test_demo_runs_offline_and_says_so() -> None:
    result = run_cli("demo")
    assert result.returncode == 0, result.stderr
    assert "offline" in result.stdout and "NOT real model output" in result.stdout
    assert "What are these?" in result.stdout
    assert "local fal-compatible server at http://127.0.0.1:" in result.stdout
    assert "-> a tiny random-weight LLaVA in TransformersBackend" in result.stdout
    assert re.search(r"^Answer: (\w+ ?)+$", result.stdout, re.M), result.stdout
