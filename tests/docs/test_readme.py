"""Every ```python block of the README runs, offline, as a reader would paste it.

The blocks are written for fal. Here `LLAVA_FAL_BASE_URL` points FalBackend at a
real `llava-bridge serve --backend fake` process on 127.0.0.1 and no key is set,
so the very same code runs with no network. Each block runs in a fresh
interpreter, in a folder holding `cat.png`, so it must stand alone. Blocks fenced
as ```py (not ```python) are shown but not run: they need a GPU or model weights.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.local_server import LocalServer, running_server

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CAT = ROOT / "src" / "llava_bridge" / "data" / "chelsea.png"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    return [match.group(1) for match in BLOCK.finditer(text)]


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with running_server("--backend", "fake") as running:
        yield running


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(index: int, server: LocalServer, tmp_path: Path) -> None:
    shutil.copy(CAT, tmp_path / "cat.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    env["LLAVA_FAL_BASE_URL"] = server.base_url
    result = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"README block {index} failed:\n{BLOCKS[index]}\n{result.stderr}"
    assert result.stdout.strip(), f"README block {index} printed nothing"
