"""CLI errors give CLI advice: flags and arguments, never `pathlib.Path` or `api_key=`."""

from __future__ import annotations

from pathlib import Path

import pytest

from llava_bridge.cli.main import main
from llava_bridge.cli.messages import cli_message

DATA = Path(__file__).resolve().parents[1] / "data"
PYTHON_ADVICE = ("pathlib", "api_key=", "base_url=", "from_path", "allow_local_paths")


@pytest.mark.parametrize(
    ("library", "cli"),
    [
        (
            "No fal API key found: set the FAL_KEY environment variable, or pass api_key= to the backend.",
            "No fal API key found: set the FAL_KEY environment variable, or pass --api-key.",
        ),
        (
            "Check FAL_KEY (or api_key=): the server did not accept it.",
            "Check FAL_KEY (or --api-key): the server did not accept it.",
        ),
        (
            "'x' is not an http(s) URL or a data URI. To read a local file, pass a pathlib.Path or "
            "ImageInput.from_path(...) (tools: allow_local_paths=True).",
            "'x' is not an http(s) URL or a data URI. To read a local file, "
            "give the file's path as the image argument.",
        ),
        (
            "Choose another with model= (e.g. 'fal-ai/llava-next').",
            "Choose another with --model (e.g. 'fal-ai/llava-next').",
        ),
        ("pass base_url= or set max_new_tokens= lower", "pass --base-url or set --max-new-tokens lower"),
        ("Nothing to change here.", "Nothing to change here."),
    ],
)
def test_library_advice_becomes_flags(library: str, cli: str) -> None:
    assert cli_message(library) == cli


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "LLAVA_FAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["ask", str(DATA / "coffee.png"), "hi"], 1, "--api-key"),
        (["ask", "--backend", "fake", "ftp://example.com/a.png", "hi"], 2, "the image argument"),
        (["ask", "--backend", "fake", "missing.png", "hi"], 2, "Cannot read image file 'missing.png'"),
        (["ask", "--backend", "fake", str(Path(__file__)), "hi"], 2, "Not an image"),
        (["ask", "--backend", "fake", str(DATA), "hi"], 2, "is not a file"),
    ],
    ids=["missing key", "bad URL scheme", "missing file", "not an image", "a directory"],
)
def test_cli_errors_are_one_line_of_cli_advice(
    no_key: None, args: list[str], code: int, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llava-bridge: error:"), lines
    assert says in lines[0]
    assert not any(advice in lines[0] for advice in PYTHON_ADVICE), lines[0]
