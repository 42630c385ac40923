"""The API reference shows each public constructor's parameters, and src cites only what is in the repo."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# One parameter of each public constructor, as the built API page must show it.
PARAMETERS = {
    "FalBackend": ["inline_threshold", "stream_idle_timeout", "async_http_client"],
    "TransformersBackend": ["quantization", "batch_wait_ms"],
    "OpenAICompatBackend": ["extra_body", "context_window"],
    "FakeBackend": ["latency"],
    "ImageInput": ["from_bytes"],
}


@pytest.fixture(scope="module")
def api_page(tmp_path_factory: pytest.TempPathFactory) -> str:
    site = tmp_path_factory.mktemp("site")
    mkdocs = Path(sys.executable).parent / "mkdocs"
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return re.sub(r"<[^>]+>", "", (site / "api" / "index.html").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_the_api_page_shows_each_constructors_parameters(api_page: str, name: str) -> None:
    start = api_page.index(f"{name}(")  # the signature, rendered under the class heading
    shown = api_page[start : start + 4000]
    for parameter in PARAMETERS[name]:
        assert parameter in shown, f"{name}'s {parameter} is missing from the API reference"


def test_docstrings_cite_only_files_in_the_repo() -> None:
    cited = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "src").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "reference/" in line or "DESIGN.md" in line
    ]
    assert cited == [], "these cite files outside the repo; say what they say, or cite docs/"
