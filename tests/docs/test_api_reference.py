"""The API reference shows each public constructor's parameters, and src cites only what is in the repo."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llava_bridge import FakeBackend, FalBackend

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


DOCUMENTED = {"FalBackend": FalBackend, "FakeBackend": FakeBackend}
"""Constructors whose every parameter has an Args entry that the API page must render."""


def _args(cls: type) -> dict[str, str]:
    """The `Args:` section of `cls`'s docstring: parameter -> its description's first words."""
    doc = inspect.getdoc(cls) or ""
    section = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    entries = re.findall(r"^    (\w+): (.+)$", section, flags=re.MULTILINE)
    return {name: " ".join(text.replace("`", "").split()[:6]) for name, text in entries}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_every_constructor_parameter_has_an_args_entry(name: str) -> None:
    cls = DOCUMENTED[name]
    parameters = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert sorted(_args(cls)) == sorted(parameters)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_the_api_page_renders_each_parameters_description(api_page: str, name: str) -> None:
    start = api_page.index("Parameters:", api_page.index(f"{name}("))
    table = " ".join(api_page[start : start + 40_000].split())
    for parameter, description in _args(DOCUMENTED[name]).items():
        assert re.search(rf"\b{parameter} .{{0,80}}?{re.escape(description)}", table), (
            f"{name}'s {parameter} ({description}...) is not in the API page's parameter table"
        )


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
