"""Loading a LLaVA checkpoint with the fixes this model family needs.

The fixes: the processor gets `patch_size`,
`vision_feature_select_strategy` and `num_additional_image_tokens` from the
model's own config (checkpoints saved by transformers 4.40, like the xtuner one,
have none, which breaks image-token expansion), our Llama-3 chat template, left
padding for batches, and generation stops on `<|eot_id|>` as well as
`<|end_of_text|>` (the shipped generation config lists only the latter).

torch and transformers are imported inside functions only.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from llava_bridge.backends.local.template import LLAMA3_IMAGE_CHAT_TEMPLATE
from llava_bridge.errors import ConfigurationError

if TYPE_CHECKING:
    import torch

__all__ = [
    "INSTALL_HINT",
    "LoadOptions",
    "LoadedModel",
    "apply_fixes",
    "check_local_extra",
    "dtype_keyword",
    "load_config_and_processor",
    "load_model",
    "transformers_version",
]

logger = logging.getLogger("llava_bridge.backends.local.backend")

INSTALL_HINT = 'pip install -e ".[local]" (from a clone of llava-bridge)'
STOP_TOKENS = ("<|eot_id|>", "<|end_of_text|>")
"""Llama-3 special tokens that end an answer."""
Quantization = Literal["4bit", "8bit"]


def check_local_extra(quantization: Quantization | None = None) -> None:
    """Raise ConfigurationError when torch/transformers (or bitsandbytes) are missing."""
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(
            f"TransformersBackend needs {' and '.join(missing)}, which are not installed: run {INSTALL_HINT}."
        )
    if quantization is not None and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigurationError(
            f"quantization={quantization!r} needs bitsandbytes (and a CUDA GPU): "
            "run pip install 'bitsandbytes>=0.46.1', or pass quantization=None."
        )


@dataclass(frozen=True)
class LoadOptions:
    """Where and how to load the model."""

    model: str
    device: str | None = None
    device_map: str | dict[str, Any] | None = None
    dtype: Any = None
    quantization: Quantization | None = None
    local_files_only: bool = False
    revision: str | None = None


@dataclass
class LoadedModel:
    """The model, its processor and what generation needs to know about them."""

    model: Any
    processor: Any
    tokenizer: Any
    stop_token_ids: tuple[int, ...]
    pad_token_id: int
    device: torch.device
    dtype: torch.dtype


def resolve_device(device: str | None) -> str:
    """The device to use: the one given, else CUDA, else Apple MPS, else CPU."""
    import torch

    if device is not None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigurationError(
                f"device={device!r} but CUDA is not available to torch; install a CUDA build of torch "
                "or pass device='cpu'."
            )
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: Any, device: str) -> torch.dtype:
    """bf16 on CUDA, fp16 on MPS, fp32 on CPU, unless a dtype (or its name) was given."""
    import torch

    if dtype is None:
        if device.startswith("cuda"):
            return torch.bfloat16
        return torch.float16 if device.startswith("mps") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    resolved = getattr(torch, names.get(str(dtype), str(dtype)), None)
    if not isinstance(resolved, torch.dtype):
        raise ConfigurationError(
            f"dtype={dtype!r} is not a torch dtype; use 'bfloat16', 'float16' or 'float32'."
        )
    return resolved


def _transformers() -> Any:
    """The transformers module, imported on first use (and typed loosely)."""
    import importlib

    return importlib.import_module("transformers")


def _hub_kwargs(options: LoadOptions) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"local_files_only": options.local_files_only}
    if options.revision is not None:
        kwargs["revision"] = options.revision
    return kwargs


def _load_error(options: LoadOptions, what: str, exc: Exception) -> ConfigurationError:
    where = (
        "Only files already on this machine are used (local_files_only=True): download it first "
        f"(huggingface-cli download {options.model}) or pass a local directory."
        if options.local_files_only
        else "Check the name (or directory), your network, and HF_TOKEN for gated models."
    )
    return ConfigurationError(f"Could not load the {what} of {options.model!r}: {exc}\n{where}")


def load_config_and_processor(options: LoadOptions) -> tuple[Any, Any]:
    """The model config and its processor, with the fixes applied (no weights loaded)."""
    transformers = _transformers()
    started = time.perf_counter()
    try:
        config = transformers.AutoConfig.from_pretrained(options.model, **_hub_kwargs(options))
        processor = transformers.AutoProcessor.from_pretrained(options.model, **_hub_kwargs(options))
    except (OSError, ValueError) as exc:
        raise _load_error(options, "processor", exc) from None
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        raise ConfigurationError(
            f"{options.model!r} has no LLaVA processor (tokenizer + image processor); "
            "give a LLaVA checkpoint in Hugging Face format, e.g. xtuner/llava-llama-3-8b-v1_1-transformers."
        )
    apply_fixes(processor, config)
    logger.info("Loaded processor of %s in %.1fs", options.model, time.perf_counter() - started)
    return config, processor


def apply_fixes(processor: Any, config: Any) -> None:
    """Set what LLaVA checkpoints saved by old transformers lack, from the model's config."""
    vision = getattr(config, "vision_config", None)
    if vision is None or not (hasattr(config, "image_token_index") or hasattr(config, "image_token_id")):
        raise ConfigurationError(
            f"The config ({type(config).__name__}) is not a LLaVA config; give a LLaVA checkpoint "
            "in Hugging Face format (LlavaForConditionalGeneration)."
        )
    has_cls_token = getattr(vision, "model_type", "") == "clip_vision_model"
    wanted = {
        "patch_size": vision.patch_size,
        "vision_feature_select_strategy": getattr(config, "vision_feature_select_strategy", "default"),
        "num_additional_image_tokens": 1 if has_cls_token else 0,
    }
    for name, value in wanted.items():
        current = getattr(processor, name, None)
        if current != value:
            logger.info("Processor fix: %s %r -> %r", name, current, value)
            setattr(processor, name, value)
    processor.chat_template = LLAMA3_IMAGE_CHAT_TEMPLATE
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    image_token = getattr(processor, "image_token", "<image>")
    image_id = tokenizer.convert_tokens_to_ids(image_token)
    expected = getattr(config, "image_token_id", None)
    if expected is None:
        expected = config.image_token_index
    if image_id != expected:
        raise ConfigurationError(
            f"The tokenizer maps {image_token!r} to id {image_id} but the model expects {expected}; "
            "the tokenizer and the weights come from different checkpoints."
        )
    if tokenizer.pad_token is None:
        pad_id = getattr(config, "pad_token_id", None) or getattr(config.text_config, "pad_token_id", None)
        if pad_id is not None:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
        else:
            tokenizer.pad_token = tokenizer.eos_token


def stop_token_ids(tokenizer: Any, generation_config: Any) -> tuple[int, ...]:
    """`<|eot_id|>`, `<|end_of_text|>` and the generation config's EOS ids, de-duplicated."""
    ids: list[int] = []
    unknown = tokenizer.unk_token_id
    for token in STOP_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != unknown:
            ids.append(token_id)
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.append(configured)
    elif isinstance(configured, (list, tuple)):
        ids.extend(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return tuple(dict.fromkeys(ids))


def _quantization_config(quantization: Quantization, dtype: torch.dtype) -> Any:
    bits_and_bytes = _transformers().BitsAndBytesConfig
    if quantization == "4bit":
        return bits_and_bytes(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=["vision_tower", "multi_modal_projector", "lm_head"],
        )
    return bits_and_bytes(
        load_in_8bit=True, llm_int8_skip_modules=["vision_tower", "multi_modal_projector", "lm_head"]
    )


def transformers_version() -> tuple[int, int]:
    """(major, minor) of the installed transformers."""
    major, minor = (int(part) for part in _transformers().__version__.split(".")[:2])
    return major, minor


def dtype_keyword() -> str:
    """`dtype` on transformers >= 4.56, `torch_dtype` before."""
    return "dtype" if transformers_version() >= (4, 56) else "torch_dtype"


def turn_off_legacy_image_expansion(model: Any) -> None:
    """Make transformers 4.47 trust the processor's `<image>` expansion.

    LLaVA in 4.47 guesses that the prompt was not expanded when a row holds fewer
    image tokens than `config.image_seq_length` (576 unless the config says otherwise),
    and then merges the image the old way: wrong for a checkpoint whose config lacks
    the real count (like the xtuner one), and a crash for text-only prompts, which have
    none. Our processor always expands, so the guess is turned off. 4.48 dropped it.
    """
    config = model.config
    if transformers_version() < (4, 48) and getattr(config, "image_seq_length", 0) != 0:
        logger.info("transformers 4.47 fix: image_seq_length %r -> 0", config.image_seq_length)
        config.image_seq_length = 0


def load_model(options: LoadOptions, processor: Any) -> LoadedModel:
    """Load the weights onto the device and wire in the stop tokens."""
    auto_model = _transformers().AutoModelForImageTextToText
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    device_map = options.device_map
    kwargs: dict[str, Any] = {dtype_keyword(): dtype, **_hub_kwargs(options)}
    if options.quantization is not None:
        if not device.startswith("cuda"):
            raise ConfigurationError("quantization needs a CUDA GPU (bitsandbytes); pass quantization=None.")
        kwargs["quantization_config"] = _quantization_config(options.quantization, dtype)
        device_map = device_map or {"": device}
    if device_map is not None:
        if importlib.util.find_spec("accelerate") is None:
            raise ConfigurationError(f"device_map= needs accelerate: run {INSTALL_HINT}.")
        kwargs["device_map"] = device_map
    logger.info(
        "Loading %s (dtype %s, %s)",
        options.model,
        str(dtype).removeprefix("torch."),
        f"device_map {device_map!r}" if device_map is not None else f"device {device}",
    )
    started = time.perf_counter()
    try:
        model = auto_model.from_pretrained(options.model, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(options, "weights", exc) from None
    if device_map is None:
        model = model.to(device)
    model.eval()
    loaded = prepare_loaded(model, processor)
    logger.info("Loaded %s in %.1fs on %s", options.model, time.perf_counter() - started, loaded.device)
    return loaded


def prepare_loaded(model: Any, processor: Any) -> LoadedModel:
    """Set the stop and pad tokens on an already loaded model and describe it."""
    tokenizer = processor.tokenizer
    turn_off_legacy_image_expansion(model)
    stops = stop_token_ids(tokenizer, model.generation_config)
    model.generation_config.eos_token_id = list(stops)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(
        model=model,
        processor=processor,
        tokenizer=tokenizer,
        stop_token_ids=stops,
        pad_token_id=tokenizer.pad_token_id,
        device=model.device,
        dtype=model.dtype,
    )
