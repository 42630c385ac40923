"""Importing the package stays light, and the public surface is what DESIGN.md names."""

from __future__ import annotations

import subprocess
import sys

import llava_bridge

HEAVY = ["torch", "transformers", "langchain_core", "llama_index", "fastapi", "uvicorn"]


def test_import_pulls_no_heavy_dependency() -> None:
    code = (
        "import sys, llava_bridge; "
        f"heavy = {HEAVY!r}; "
        "loaded = [m for m in heavy if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_public_names() -> None:
    for name in [
        "FalBackend",
        "TransformersBackend",
        "OpenAICompatBackend",
        "FakeBackend",
        "ImageInput",
        "VisionRequest",
        "VisionResult",
        "LlavaError",
    ]:
        assert name in llava_bridge.__all__
    assert sorted(llava_bridge.__all__) == sorted(set(llava_bridge.__all__))


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        llava_bridge.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
