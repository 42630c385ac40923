"""Helpers for testing code that uses llava-bridge, offline.

- `FakeBackend` (in `llava_bridge`) answers without a model.
- `build_tiny_llava(path)` writes a tiny random-weight LLaVA (a few hundred KB) that
  `TransformersBackend(str(path), local_files_only=True)` loads through the real
  loading code; its answers are gibberish by design. Needs the `[local]` extra.
"""

from __future__ import annotations

from llava_bridge.testing.tiny_llava import IMAGE_TOKENS, build_legacy_xtuner_layout, build_tiny_llava

__all__ = ["IMAGE_TOKENS", "build_legacy_xtuner_layout", "build_tiny_llava"]
