"""The error tree drawn in errors.py and docs/reliability.md names every public error class."""

from __future__ import annotations

from pathlib import Path

import pytest

from llava_bridge import errors

ROOT = Path(__file__).resolve().parents[2]
CLASSES = sorted(
    name for name in errors.__all__ if isinstance(getattr(errors, name), type) and name != "LlavaError"
)
"""Every public error below the root `LlavaError`, which heads the tree."""


@pytest.mark.parametrize(
    "tree",
    [errors.__doc__ or "", (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")],
    ids=["errors.py", "docs/reliability.md"],
)
def test_the_error_tree_names_every_public_error(tree: str) -> None:
    drawn = {line.split("── ")[1].split()[0] for line in tree.splitlines() if "── " in line}
    assert [name for name in CLASSES if name not in drawn] == []
    assert "LlavaError" in tree
