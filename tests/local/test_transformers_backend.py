"""TransformersBackend on the tiny random-weight LLaVA, loaded through the production path."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from llava_bridge import (
    ConfigurationError,
    ContextOverflowError,
    ImageInput,
    InvalidImageError,
    LlavaError,
    Message,
    VisionRequest,
    VisionResult,
)
from llava_bridge.backends.base import Backend
from llava_bridge.backends.local.backend import TransformersBackend
from llava_bridge.prompts import render_llama3
from llava_bridge.testing import IMAGE_TOKENS

from .conftest import colour_image

PROMPTS = ["w1 w2 w3", "w5", "w7 w7", "w9 w10 w11 w12", "w30", "w3 w4", "w20 w21 w22", "w13"]


def requests(max_new_tokens: int = 24, *, images: bool = True) -> list[VisionRequest]:
    return [
        VisionRequest(prompt=p, image=colour_image(i) if images else None, max_new_tokens=max_new_tokens)
        for i, p in enumerate(PROMPTS)
    ]


def summary(result: VisionResult) -> tuple[str, int, int, str | None]:
    return (result.text, result.usage.prompt_tokens, result.usage.completion_tokens, result.finish_reason)


def run_in_threads(backend: TransformersBackend, batch: Sequence[VisionRequest]) -> list[VisionResult]:
    results: list[VisionResult | None] = [None] * len(batch)
    barrier = threading.Barrier(len(batch))

    def work(index: int) -> None:
        barrier.wait(timeout=10)
        results[index] = backend.generate(batch[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batch))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


# -- import hygiene and configuration ---------------------------------------------------------


def test_importing_the_package_and_making_a_backend_does_not_import_torch() -> None:
    code = (
        "import sys, llava_bridge\n"
        "from llava_bridge import TransformersBackend, OpenAICompatBackend\n"
        "TransformersBackend('some/model', local_files_only=True)\n"
        "OpenAICompatBackend('http://127.0.0.1:9')\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_missing_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(ConfigurationError, match=r'pip install -e "\.\[local\]"'):
        TransformersBackend("some/model")


def test_quantization_without_bitsandbytes_is_a_clear_error() -> None:
    pytest.importorskip("torch")
    if __import__("importlib.util").util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    with pytest.raises(ConfigurationError, match="bitsandbytes"):
        TransformersBackend("some/model", quantization="4bit")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"batch_wait_ms": -1}, "batch_wait_ms"),
        ({"device": "cpu", "device_map": "auto"}, "not both"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TransformersBackend("some/model", **kwargs)


def test_a_missing_model_offline_is_a_configuration_error(tmp_path: Path) -> None:
    backend = TransformersBackend(str(tmp_path / "nothing-here"), local_files_only=True)
    with pytest.raises(ConfigurationError, match="local_files_only=True"):
        backend.count_tokens("hello")


def test_it_is_a_backend(batched: TransformersBackend) -> None:
    assert isinstance(batched, Backend)
    assert batched.exact_token_counts is True


# -- correctness --------------------------------------------------------------------------------


def test_batched_equals_one_by_one(batched: TransformersBackend, serial: TransformersBackend) -> None:
    batch = requests()
    one_by_one = [serial.generate(r) for r in batch]
    together = run_in_threads(batched, batch)
    assert [summary(r) for r in together] == [summary(r) for r in one_by_one]
    assert max(r.metrics["batch_size"] for r in together) > 1, "the requests were not batched"
    assert {r.finish_reason for r in one_by_one} == {"stop", "length"}, "want rows cut at EOS and at length"


def test_asyncio_tasks_are_batched_without_blocking_the_loop(
    batched: TransformersBackend, serial: TransformersBackend
) -> None:
    batch = requests(images=False)
    expected = [summary(serial.generate(r)) for r in batch]

    async def main() -> tuple[list[VisionResult], int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.create_task(ticker())
        results = await asyncio.gather(*(batched.agenerate(r) for r in batch))
        done.set()
        await tick_task
        return list(results), ticks

    results, ticks = asyncio.run(main())
    assert [summary(r) for r in results] == expected
    assert max(r.metrics["batch_size"] for r in results) > 1
    assert ticks > 5, "the event loop was blocked while the model ran"


def test_stream_joins_to_the_generated_text(batched: TransformersBackend) -> None:
    for request in requests()[:4]:
        expected = batched.generate(request)
        chunks = list(batched.stream(request))
        assert chunks[-1].result is not None
        assert "".join(c.delta for c in chunks) == expected.text
        assert summary(chunks[-1].result) == summary(expected)
        assert len(chunks) > 3


async def test_astream_joins_to_the_generated_text(batched: TransformersBackend) -> None:
    request = requests()[0]
    expected = await batched.agenerate(request)
    chunks = [chunk async for chunk in batched.astream(request)]
    assert "".join(c.delta for c in chunks) == expected.text
    assert chunks[-1].result is not None and summary(chunks[-1].result) == summary(expected)
    assert "time_to_first_token" in chunks[-1].result.metrics


def test_stop_strings_cut_generation_streaming_and_not(batched: TransformersBackend) -> None:
    base = VisionRequest(prompt="w1 w2 w3", image=colour_image(0), max_new_tokens=24)
    full = batched.generate(base)
    words = full.text.split()
    stop_word = words[len(words) // 2]
    cut_at = full.text.index(stop_word)
    stopped = batched.generate(base.model_copy(update={"stop": (stop_word,)}))
    assert stopped.text == full.text[:cut_at]
    assert stopped.finish_reason == "stop"
    # exactly the tokens it took to write the stop word: each word is one token here
    assert stopped.usage.completion_tokens < full.usage.completion_tokens
    assert batched.count_tokens(stopped.text + stop_word) <= stopped.usage.completion_tokens
    streamed = list(batched.stream(base.model_copy(update={"stop": (stop_word,)})))
    assert "".join(c.delta for c in streamed) == stopped.text
    assert streamed[-1].result is not None and summary(streamed[-1].result) == summary(stopped)


def test_usage_is_exact_against_plain_generate(tiny_dir: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir).eval()
    backend = TransformersBackend.from_model(model, processor, model_name="tiny")
    tokenizer = processor.tokenizer
    stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|eot_id|>", "<|end_of_text|>")]
    try:
        for index, request in enumerate(requests()):
            result = backend.generate(request)
            text = tokenizer.bos_token + render_llama3(request.messages, 0)
            inputs = processor(
                text=[text],
                images=[colour_image(index).to_pil()],
                return_tensors="pt",
                add_special_tokens=False,
            )
            new = model.generate(**inputs, max_new_tokens=24, do_sample=False, eos_token_id=stops)
            new = new[0, inputs["input_ids"].shape[1] :].tolist()
            assert result.usage.prompt_tokens == inputs["input_ids"].shape[1]
            assert result.usage.completion_tokens == len(new)
            assert result.usage.estimated is False
            content = new[:-1] if new[-1] in stops else new
            assert result.text == tokenizer.decode(content, skip_special_tokens=True)
            assert result.finish_reason == ("stop" if new[-1] in stops else "length")
    finally:
        backend.close()


def test_image_tokens_are_counted_in_the_prompt(batched: TransformersBackend) -> None:
    with_image = batched.generate(VisionRequest(prompt="w1 w2", image=colour_image(1), max_new_tokens=2))
    text_only = batched.generate(VisionRequest(prompt="w1 w2", max_new_tokens=2))
    # "<image>\n" becomes IMAGE_TOKENS image tokens; the newline is whitespace for this tokenizer
    assert with_image.usage.prompt_tokens - text_only.usage.prompt_tokens == IMAGE_TOKENS
    assert with_image.usage.completion_tokens == 2 or with_image.finish_reason == "stop"


def test_text_only_requests_run_without_pixel_values(tiny_dir: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir).eval()
    seen: list[bool] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        # transformers 5 runs the vision tower up front and passes `mm_encoder_outputs`
        seen.append(kwargs.get("pixel_values") is not None or bool(kwargs.get("mm_encoder_outputs")))

    model.register_forward_pre_hook(record, with_kwargs=True)
    with TransformersBackend.from_model(model, processor) as backend:
        result = backend.generate(VisionRequest(prompt="w3 w4", max_new_tokens=3))
        assert result.text and not any(seen)
        seen.clear()
        backend.generate(VisionRequest(prompt="w3 w4", image=colour_image(2), max_new_tokens=3))
        assert seen[0] is True, "the first step of an image request gets pixel_values"
        assert not any(seen[1:]), "later steps read the image from the cache"


def test_count_tokens_is_the_tokenizers_count(batched: TransformersBackend) -> None:
    assert batched.count_tokens("w1 w2 w3") == 3
    assert batched.count_tokens("<|eot_id|>w1") == 2


def test_long_history_is_trimmed_and_an_oversized_turn_is_refused(tiny_dir: Path) -> None:
    with TransformersBackend(str(tiny_dir), local_files_only=True, context_window=700) as backend:
        history = [Message(role="user", content="w1 " * 30), Message(role="assistant", content="w2 " * 30)]
        request = VisionRequest(
            messages=(*history * 3, Message(role="user", content="w3")),
            image=colour_image(0),
            max_new_tokens=4,
        )
        result = backend.generate(request)
        assert result.usage.prompt_tokens < 700
        with pytest.raises(ContextOverflowError):
            backend.generate(VisionRequest(prompt="w1 " * 200, image=colour_image(0), max_new_tokens=4))


def test_url_images_are_not_fetched(batched: TransformersBackend) -> None:
    request = VisionRequest(prompt="w1", image=ImageInput.from_url("https://example.com/cat.png"))
    with pytest.raises(InvalidImageError, match="does not fetch image URLs unless asked: pass fetch_urls="):
        batched.generate(request)


def test_a_literal_image_placeholder_in_text_does_not_break_the_prompt(batched: TransformersBackend) -> None:
    result = batched.generate(VisionRequest(prompt="w1 <image> w2", max_new_tokens=3))
    assert result.usage.completion_tokens >= 1


def test_sampling_runs_and_is_not_batched_with_greedy(batched: TransformersBackend) -> None:
    sampled = VisionRequest(prompt="w1", image=colour_image(3), max_new_tokens=6, temperature=0.7, top_p=0.9)
    greedy = VisionRequest(prompt="w1", image=colour_image(3), max_new_tokens=6)
    results = run_in_threads(batched, [sampled, greedy, sampled, greedy])
    assert all(r.metrics["batch_size"] <= 2 for r in results)
    assert all(r.finish_reason in ("stop", "length") for r in results)


def test_an_abandoned_stream_frees_the_worker(batched: TransformersBackend) -> None:
    stream = batched.stream(VisionRequest(prompt="w1", image=colour_image(4), max_new_tokens=200))
    next(stream)
    stream.close()
    started = time.monotonic()
    assert batched.generate(VisionRequest(prompt="w2", max_new_tokens=2)).text is not None
    assert time.monotonic() - started < 10


def test_progress_is_logged(tiny_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llava_bridge.backends.local.backend")
    with TransformersBackend(str(tiny_dir), local_files_only=True) as backend:
        backend.generate(VisionRequest(prompt="w1", max_new_tokens=2))
    messages = [r.getMessage() for r in caplog.records if r.name == "llava_bridge.backends.local.backend"]
    assert any(m.startswith("Loading ") for m in messages)
    assert any(m.startswith("Batch of 1:") and "tokens/s" in m for m in messages)


def test_closed_backend_refuses_requests(tiny_dir: Path) -> None:
    backend = TransformersBackend(str(tiny_dir), local_files_only=True)
    backend.close()
    with pytest.raises(LlavaError, match="closed"):
        backend.generate(VisionRequest(prompt="w1", max_new_tokens=2))


def test_chat_template_matches_render_llama3(batched: TransformersBackend) -> None:
    processor = batched._ensure_processor()
    conversation = [
        {"role": "system", "content": "w1"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "w2 w3"}]},
    ]
    rendered = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    messages = [Message(role="system", content="w1"), Message(role="user", content="w2 w3")]
    assert rendered == processor.tokenizer.bos_token + render_llama3(messages, 1)


# -- the xtuner repo's legacy layout --------------------------------------------------------------


def test_legacy_xtuner_layout_loads_with_the_fixes(legacy_dir: Path, tiny_dir: Path) -> None:
    with TransformersBackend(str(legacy_dir), local_files_only=True) as legacy:
        processor = legacy._ensure_processor()
        assert (processor.patch_size, processor.vision_feature_select_strategy) == (14, "default")
        assert processor.num_additional_image_tokens == 1
        assert processor.chat_template is not None
        assert processor.tokenizer.padding_side == "left"
        results = [legacy.generate(r) for r in requests()[:3]]  # never "Image features ... do not match"
        assert all(r.usage.prompt_tokens > IMAGE_TOKENS for r in results)
        engine = legacy._ensure_engine()
        stop_ids = set(engine._loaded.stop_token_ids)
        eot = processor.tokenizer.convert_tokens_to_ids("<|eot_id|>")
        assert eot in stop_ids, "the legacy generation_config lacks <|eot_id|>; the loader must add it"
    with TransformersBackend(str(tiny_dir), local_files_only=True) as modern:
        # the legacy weights are the same (in fp16), so the answers are too
        assert [r.text for r in results] == [modern.generate(r).text for r in requests()[:3]]


def test_legacy_weights_load_bit_identical(legacy_dir: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from llava_bridge.testing.tiny_llava import _legacy_name

    with TransformersBackend(str(legacy_dir), local_files_only=True, dtype="float16") as backend:
        model = backend._ensure_engine()._loaded.model
        saved = load_file(str(legacy_dir / "model.safetensors"))
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, saved[_legacy_name(name)]), name


def test_legacy_layout_answers_text_only_and_image_requests(legacy_dir: Path) -> None:
    # its config has no image_seq_length (576 by default): transformers 4.47 then took its old
    # merge path for 4-token images and crashed on text-only prompts, unless the loader turns it off
    from llava_bridge.backends.local.loading import transformers_version

    with TransformersBackend(str(legacy_dir), local_files_only=True) as legacy:
        text_only = legacy.generate(VisionRequest(prompt="w1 w2", max_new_tokens=2))
        with_image = legacy.generate(VisionRequest(prompt="w1 w2", image=colour_image(1), max_new_tokens=2))
        assert with_image.usage.prompt_tokens - text_only.usage.prompt_tokens == IMAGE_TOKENS
        config = legacy._ensure_engine()._loaded.model.config
        assert config.image_seq_length == (0 if transformers_version() < (4, 48) else 576)
