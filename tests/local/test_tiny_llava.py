"""The tiny LLaVA builder gives the same model on every transformers version, in both layouts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from llava_bridge.testing.tiny_llava import _legacy_name, build_model, build_tokenizer

pytest.importorskip("torch")
pytest.importorskip("transformers")

WEIGHTS_SHA256_SEED_0 = "dd364780089d6da3"
"""Fingerprint of seed 0's weights, the same on transformers 4.47, 4.48, 4.52, 4.57 and 5.24."""


def fingerprint(seed: int) -> str:
    model = build_model(build_tokenizer(), seed)
    digest = hashlib.sha256()
    weights = {_legacy_name(name): weight for name, weight in model.named_parameters()}
    assert len(weights) == len(list(model.parameters())), "two weights got the same legacy name"
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(weights[name].detach().numpy().tobytes())
    return digest.hexdigest()[:16]


def test_the_same_seed_gives_the_same_weights_on_every_transformers_version() -> None:
    assert fingerprint(0) == WEIGHTS_SHA256_SEED_0
    assert fingerprint(1) != WEIGHTS_SHA256_SEED_0


def test_legacy_names_are_the_xtuner_ones(legacy_dir: Path) -> None:
    from safetensors.torch import load_file

    names = set(load_file(str(legacy_dir / "model.safetensors")))
    assert "language_model.lm_head.weight" in names
    assert "vision_tower.vision_model.embeddings.class_embedding" in names
    assert all(
        n.startswith(
            (
                "language_model.model.",
                "language_model.lm_head.",
                "vision_tower.vision_model.",
                "multi_modal_projector.",
            )
        )
        for n in names
    )


def test_unknown_weight_names_are_refused() -> None:
    with pytest.raises(AssertionError, match="unexpected weight"):
        _legacy_name("model.something_new.weight")
