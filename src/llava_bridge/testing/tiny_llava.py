"""Build a tiny random-weight LLaVA, fully offline.

Two layouts on disk:

- `build_tiny_llava(dir)`: saved by the installed transformers (model + processor).
- `build_legacy_xtuner_layout(dir)`: laid out like `xtuner/llava-llama-3-8b-v1_1-transformers`
  (saved by transformers 4.40): legacy weight names, a 4.40-style config.json, a
  generation_config.json with only `<|end_of_text|>`, tokenizer files and a
  preprocessor_config.json, but no processor_config.json and no chat template.

Both hold the same weights for the same seed, on every transformers version (4.47 to 5.x):
the weights are drawn per name, not by transformers' own initialisation. The tokenizer is a WordLevel one over
the Llama-3 special tokens plus words `w0`..`w39`, with a BOS post-processor like
Llama-3's; `<image>` and `<pad>` are added the way xtuner's conversion script does.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
WORDS = ["system", "user", "assistant", *(f"w{i}" for i in range(40)), "[UNK]"]
IMAGE_SIDE = 28
PATCH = 14
IMAGE_TOKENS = (IMAGE_SIDE // PATCH) ** 2  # 4 in this model; 576 in the real one
INIT_RANGE = 0.2
"""Large enough that greedy outputs depend on the prompt and the image."""


def build_tokenizer() -> Any:
    """A Llama-3-like tokenizer: BOS added on encode, `<image>` and `<pad>` added after."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")
    core.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", vocab["<|begin_of_text|>"])]
    )
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        unk_token="[UNK]",
        additional_special_tokens=SPECIAL_TOKENS[2:],
        model_input_names=["input_ids", "attention_mask"],
    )
    # as xtuner's convert_xtuner_weights_to_hf.py does
    tokenizer.add_tokens(AddedToken("<image>", special=True, normalized=False), special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return tokenizer


def build_image_processor() -> Any:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIDE}, crop_size={"height": IMAGE_SIDE, "width": IMAGE_SIDE}
    )


def build_model(tokenizer: Any, seed: int = 0) -> Any:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=INIT_RANGE,
    )
    vision = CLIPVisionConfig(
        image_size=IMAGE_SIDE,
        patch_size=PATCH,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=16,
        initializer_range=INIT_RANGE,
    )
    config = LlavaConfig(  # type: ignore[call-arg]
        text_config=text,
        vision_config=vision,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=IMAGE_TOKENS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        initializer_range=INIT_RANGE,
    )
    model = LlavaForConditionalGeneration(config).eval()  # type: ignore[no-untyped-call]
    _fill_weights(model, seed)
    return model


def _fill_weights(model: Any, seed: int) -> None:
    """Set every weight from its layout-independent name and the seed, so that the same seed
    gives the same model on every transformers version (their random initialisation differs).

    Norm weights are 1 and their biases 0; every other weight is normal(0, INIT_RANGE) drawn
    from a generator seeded by the seed and the weight's legacy name, rounded to float16 so that
    the legacy layout's float16 file holds exactly the same weights.
    """
    import torch

    norms = {
        f"{module_name}.{param_name}"
        for module_name, module in model.named_modules()
        if "norm" in type(module).__name__.lower()
        for param_name, _ in module.named_parameters(recurse=False)
    }
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if name in norms:
                weight.fill_(1.0 if name.endswith("weight") else 0.0)
                continue
            generator = torch.Generator().manual_seed(
                seed * 1_000_003 + zlib.crc32(_legacy_name(name).encode())
            )
            values = (torch.randn(weight.shape, generator=generator) * INIT_RANGE).to(torch.float16)
            weight.copy_(values.to(weight.dtype))


def build_tiny_llava(directory: Path, seed: int = 0) -> Path:
    """Save a tiny LLaVA and its processor with the installed transformers."""
    from transformers import LlavaProcessor

    tokenizer = build_tokenizer()
    processor = LlavaProcessor(  # type: ignore[no-untyped-call]
        build_image_processor(),
        tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    build_model(tokenizer, seed).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


_LEGACY_PREFIXES = (
    # transformers >= 4.52 (the vision tower lost `vision_model.` in 5.0)
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
    ("model.vision_tower.vision_model.", "vision_tower.vision_model."),
    ("model.vision_tower.", "vision_tower.vision_model."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    # transformers < 4.52 already uses the 4.40 names
    ("language_model.", "language_model."),
    ("vision_tower.vision_model.", "vision_tower.vision_model."),
    ("multi_modal_projector.", "multi_modal_projector."),
)


def _legacy_name(name: str) -> str:
    """The transformers 4.40 weight name of a LlavaForConditionalGeneration weight (any version)."""
    for current, legacy in _LEGACY_PREFIXES:
        if name.startswith(current):
            return legacy + name[len(current) :]
    raise AssertionError(f"unexpected weight {name}")


def build_legacy_xtuner_layout(directory: Path, seed: int = 0) -> Path:
    """Lay out a tiny LLaVA the way the xtuner repo is: 4.40 names, no processor config."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed)
    weights = {_legacy_name(k): v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    text, vision = model.config.text_config, model.config.vision_config
    config = {
        "architectures": ["LlavaForConditionalGeneration"],
        "ignore_index": -100,
        "image_token_index": model.config.image_token_index,
        "model_type": "llava",
        "pad_token_id": tokenizer.pad_token_id,
        "projector_hidden_act": "gelu",
        "text_config": {
            "model_type": "llama",
            "vocab_size": text.vocab_size,
            "hidden_size": text.hidden_size,
            "intermediate_size": text.intermediate_size,
            "num_hidden_layers": text.num_hidden_layers,
            "num_attention_heads": text.num_attention_heads,
            "num_key_value_heads": text.num_key_value_heads,
            "max_position_embeddings": text.max_position_embeddings,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "rms_norm_eps": text.rms_norm_eps,
            "rope_theta": 500000.0,
            "torch_dtype": "float16",
        },
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.40.1",
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": vision.hidden_size,
            "image_size": vision.image_size,
            "intermediate_size": vision.intermediate_size,
            "num_attention_heads": vision.num_attention_heads,
            "num_hidden_layers": vision.num_hidden_layers,
            "patch_size": vision.patch_size,
            "projection_dim": vision.projection_dim,
        },
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
    }
    # the model's own rope_theta: an attribute before transformers 5, in rope_parameters since
    rope_theta = (getattr(text, "rope_parameters", None) or {}).get("rope_theta")
    config["text_config"]["rope_theta"] = rope_theta or text.rope_theta
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "generation_config.json").write_text(
        json.dumps({"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id})
    )
    tokenizer.save_pretrained(directory)
    tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "pad_token": "<pad>"})
    )
    build_image_processor().save_pretrained(directory)
    assert not (directory / "processor_config.json").exists()
    return directory
