"""Benchmark TransformersBackend: micro-batching on CPU, and the full-size model on a GPU.

    python bench/local_backend.py            # CPU, tiny random model: 32 concurrent requests
    python bench/local_backend.py --gpu      # CUDA, full-size LLaVA-Llama-3-8B with random bf16 weights

CPU mode builds the tiny random-weight LLaVA of the tests and answers 32 requests
through the micro-batcher (32 threads at once) and one by one; goal: >= 4x the
throughput. GPU mode builds the real architecture (the xtuner LlavaConfig, 8.36 B
parameters) with random weights on the GPU — nothing is downloaded — and measures
decode tokens/s at batch 1 against the memory-bandwidth limit, aggregate tokens/s
at batch 32 and the time to first token with 576 image tokens, beside plain
`model.generate` as the baseline. GPU mode needs only torch, transformers and
llava_bridge. Results are printed as tables; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llava_bridge import ImageInput, VisionRequest, VisionResult
from llava_bridge.backends.local.backend import TransformersBackend

ROOT = Path(__file__).resolve().parent.parent


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in header], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print(
            "  ".join(
                cell.rjust(width) if i else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    return str(value)


def run_concurrently(backend: TransformersBackend, requests: Sequence[VisionRequest]) -> list[VisionResult]:
    results: list[VisionResult | None] = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def work(index: int) -> None:
        barrier.wait()
        results[index] = backend.generate(requests[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r for r in results if r is not None]


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


# -- CPU: micro-batching on the tiny model ---------------------------------------------------


def cpu_benchmark(requests_count: int, max_new_tokens: int) -> None:
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from llava_bridge.testing import build_tiny_llava

    with tempfile.TemporaryDirectory() as tmp:
        directory = build_tiny_llava(Path(tmp) / "tiny-llava")
        requests = [
            VisionRequest(
                prompt=" ".join(f"w{(i * 7 + j) % 40}" for j in range(1 + i % 5)),
                image=ImageInput.from_pil(Image.new("RGB", (64, 48), ((i * 53) % 256, (i * 97) % 256, 120))),
                max_new_tokens=max_new_tokens,
            )
            for i in range(requests_count)
        ]
        batched = TransformersBackend(
            str(directory), local_files_only=True, max_batch_size=requests_count
        ).load()
        serial = TransformersBackend(
            str(directory), local_files_only=True, max_batch_size=1, batch_wait_ms=0
        ).load()
        serial.generate(requests[0])  # warm up both
        batched.generate(requests[0])

        one_by_one, serial_s = timed(lambda: [serial.generate(r) for r in requests])
        together, batched_s = timed(lambda: run_concurrently(batched, requests))
        threads_serial, threads_serial_s = timed(lambda: run_concurrently(serial, requests))
        same = [r.text for r in together] == [r.text for r in one_by_one]
        tokens = sum(r.usage.completion_tokens for r in one_by_one)
        rows = [
            ["one by one (sequential calls)", requests_count, serial_s, tokens, tokens / serial_s, 1.0],
            [
                "32 threads, max_batch_size=1",
                requests_count,
                threads_serial_s,
                tokens,
                tokens / threads_serial_s,
                serial_s / threads_serial_s,
            ],
            [
                f"32 threads, micro-batched (<= {requests_count})",
                requests_count,
                batched_s,
                tokens,
                tokens / batched_s,
                serial_s / batched_s,
            ],
        ]
        table(
            f"CPU, tiny random LLaVA, {requests_count} requests x {max_new_tokens} new tokens (greedy)",
            ["mode", "requests", "wall s", "new tokens", "tokens/s", "vs one by one"],
            rows,
        )
        sizes = sorted({int(r.metrics["batch_size"]) for r in together})
        print(f"\nbatch sizes used: {sizes}; batched answers equal one-by-one answers: {same}")
        print(
            f"goal >= 4x: {'met' if serial_s / batched_s >= 4 else 'NOT met'} ({serial_s / batched_s:.1f}x)"
        )
        del threads_serial
        batched.close()
        serial.close()


# -- GPU: the full-size architecture with random weights -------------------------------------

SPECIAL_IDS = {
    "<|begin_of_text|>": 128000,
    "<|end_of_text|>": 128001,
    "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007,
    "<|eot_id|>": 128009,
    "<image>": 128257,
    "<pad>": 128258,
}
VOCAB_SIZE = 128320


def full_size_processor() -> Any:
    """A WordLevel tokenizer over the real vocabulary size with Llama-3's special ids, and CLIP-336."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    by_id = {index: token for token, index in SPECIAL_IDS.items()}
    vocab = {by_id.get(i, f"w{i}"): i for i in range(VOCAB_SIZE)}
    vocab["[UNK]"] = vocab.pop("w0")
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<pad>",
        unk_token="[UNK]",
        additional_special_tokens=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<image>"],
        model_input_names=["input_ids", "attention_mask"],
    )
    images = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return LlavaProcessor(
        images,
        tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def full_size_model() -> Any:
    """xtuner/llava-llama-3-8b-v1_1-transformers' LlavaConfig, random bf16 weights, on the GPU."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    text = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        bos_token_id=128000,
        eos_token_id=128001,
        pad_token_id=128258,
        tie_word_embeddings=False,
    )
    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
    )
    config = LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=128257,
        pad_token_id=128258,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=576,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlavaForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    return model.eval()


def measure_bandwidth_gbps() -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), in GB/s."""
    import torch

    source = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    target.copy_(source)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        target.copy_(source)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    del source, target
    return 2 * 10 * 2 * 1024**3 / elapsed / 1e9


def gpu_benchmark(decode_tokens: int, batch: int) -> None:
    import torch

    if not torch.cuda.is_available():
        print(
            "--gpu needs a CUDA GPU visible to torch (torch.cuda.is_available() is False); nothing was run."
        )
        raise SystemExit(2)
    from PIL import Image

    print(f"GPU: {torch.cuda.get_device_name()}; building the full-size model with random bf16 weights...")
    processor = full_size_processor()
    model, build_s = timed(full_size_model)
    language = model.model.language_model
    weight_bytes = sum(p.numel() * p.element_size() for p in language.parameters())
    weight_bytes += model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    print(
        f"built in {build_s:.0f}s; {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, "
        f"{weight_bytes / 1e9:.2f} GB read per decode step"
    )
    bandwidth = measure_bandwidth_gbps()
    limit = bandwidth * 1e9 / weight_bytes
    backend = TransformersBackend.from_model(
        model, processor, model_name="llava-llama3-8b-random", max_batch_size=batch
    )
    tokenizer = processor.tokenizer
    prompt = " ".join(f"w{1000 + i}" for i in range(24))
    image = ImageInput.from_pil(Image.new("RGB", (640, 480), (120, 90, 200)))
    stops = list(backend._ensure_engine()._loaded.stop_token_ids)

    def ours(tokens: int, with_image: bool = False) -> float:
        request = VisionRequest(prompt=prompt, image=image if with_image else None, max_new_tokens=tokens)
        torch.cuda.synchronize()
        _, elapsed = timed(lambda: backend.generate(request))
        torch.cuda.synchronize()
        return elapsed

    def plain_inputs(rows: int, with_image: bool) -> Any:
        text = (
            tokenizer.bos_token
            + f"<|start_header_id|>user<|end_header_id|>\n\n{'<image>' if with_image else ''}{prompt}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        )
        pil = [image.to_pil()] * rows if with_image else None
        inputs = processor(
            text=[text] * rows, images=pil, return_tensors="pt", padding=True, add_special_tokens=False
        )
        inputs = inputs.to("cuda")
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
        return inputs

    def plain(tokens: int, rows: int = 1, with_image: bool = False) -> float:
        inputs = plain_inputs(rows, with_image)
        torch.cuda.synchronize()
        with torch.inference_mode():
            _, elapsed = timed(
                lambda: model.generate(
                    **inputs,
                    max_new_tokens=tokens,
                    min_new_tokens=tokens,
                    do_sample=False,
                    eos_token_id=stops,
                    pad_token_id=128258,
                )
            )
        torch.cuda.synchronize()
        return elapsed

    ours(8), plain(8)  # warm up
    ours_decode = (decode_tokens - 1) / (ours(decode_tokens) - ours(1))
    plain_decode = (decode_tokens - 1) / (plain(decode_tokens) - plain(1))
    ours_ttft = min(ours(1, with_image=True) for _ in range(3))
    plain_ttft = min(plain(1, with_image=True) for _ in range(3))
    stream_ttft = next(
        c.result.metrics["time_to_first_token"]
        for c in backend.stream(VisionRequest(prompt=prompt, image=image, max_new_tokens=2))
        if c.result
    )
    requests = [
        VisionRequest(prompt=f"w{2000 + i} {prompt}", max_new_tokens=decode_tokens) for i in range(batch)
    ]
    torch.cuda.synchronize()
    results, batch_s = timed(lambda: run_concurrently(backend, requests))
    ours_aggregate = sum(r.usage.completion_tokens for r in results) / batch_s
    plain_aggregate = batch * decode_tokens / plain(decode_tokens, rows=batch)
    table(
        f"GPU, full-size LLaVA-Llama-3-8B (random bf16 weights), copy bandwidth {bandwidth:,.0f} GB/s, limit {limit:.0f} tokens/s",
        ["measure", "llava-bridge", "plain model.generate", "ours / plain", "ours / limit"],
        [
            [
                "decode tokens/s, batch 1",
                ours_decode,
                plain_decode,
                ours_decode / plain_decode,
                f"{ours_decode / limit:.0%}",
            ],
            [
                f"aggregate tokens/s, batch {batch}",
                ours_aggregate,
                plain_aggregate,
                ours_aggregate / plain_aggregate,
                "-",
            ],
            ["TTFT s, 576 image tokens (1 new token)", ours_ttft, plain_ttft, ours_ttft / plain_ttft, "-"],
            ["TTFT s, streamed (first token out)", stream_ttft, "-", "-", "-"],
        ],
    )
    print(f"goal decode >= 60% of the limit: {'met' if ours_decode >= 0.6 * limit else 'NOT met'}")
    backend.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gpu", action="store_true", help="full-size model on CUDA instead of the tiny CPU model"
    )
    parser.add_argument("--requests", type=int, default=32, help="concurrent requests (CPU mode)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="new tokens per request (CPU mode)")
    parser.add_argument("--decode-tokens", type=int, default=256, help="new tokens per request (GPU mode)")
    parser.add_argument(
        "--batch", type=int, default=32, help="batch size for the aggregate measure (GPU mode)"
    )
    args = parser.parse_args(argv)
    if args.gpu:
        gpu_benchmark(args.decode_tokens, args.batch)
    else:
        cpu_benchmark(args.requests, args.max_new_tokens)


if __name__ == "__main__":
    main()
