"""Running prepared requests through a loaded LLaVA model: batched and streamed.

Only the batcher's worker thread calls `LocalEngine.run_batch` / `run_stream`.
A batch is encoded with left padding and generated in one `model.generate`
call; each row stops at its own EOS, stop string or `max_new_tokens` (a
stopping criterion per row), and is cut there afterwards. This module imports
torch and transformers; it is itself imported lazily.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from llava_bridge.backends.local.loading import LoadedModel
from llava_bridge.stops import StopScanner, cut_at_stop
from llava_bridge.types import FinishReason, Usage, VisionResult

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["LocalEngine", "LocalJob", "Sampling"]

logger = logging.getLogger("llava_bridge.backends.local.backend")

Sampling = tuple[float, float] | None
"""(temperature, top_p) to sample with; None for greedy decoding."""
_STOP_TAIL_TOKENS = 8
"""Tokens decoded beyond a stop string's length when looking for it during generation."""


@dataclass(frozen=True)
class LocalJob:
    """One request, ready for the model: the full prompt text and the decoded image."""

    prompt: str
    image: PILImage | None
    max_new_tokens: int
    stop: tuple[str, ...]
    sampling: Sampling
    model_name: str

    @property
    def batch_key(self) -> tuple[bool, Sampling]:
        """Jobs that can share one `generate` call: same image-or-not and sampling."""
        return (self.image is not None, self.sampling)


@dataclass(frozen=True)
class _Row:
    """What one row of a batch produced."""

    content_ids: list[int]
    completion_tokens: int
    finish_reason: FinishReason


class _RowStops(StoppingCriteria):
    """Stops each row at its own max_new_tokens or stop string, and everything on cancel."""

    def __init__(
        self,
        prompt_length: int,
        jobs: Sequence[LocalJob],
        decode: Callable[[list[int]], str],
        cancel: threading.Event | None,
    ) -> None:
        self._prompt_length = prompt_length
        self._limits = [job.max_new_tokens for job in jobs]
        self._stops = [job.stop for job in jobs]
        self._tails = [max((len(s) for s in job.stop), default=0) + _STOP_TAIL_TOKENS for job in jobs]
        self._decode = decode
        self._cancel = cancel
        self._done = [False] * len(jobs)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self._cancel is not None and self._cancel.is_set():
            return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        generated = input_ids.shape[1] - self._prompt_length
        for row, done in enumerate(self._done):
            if done:
                continue
            if generated >= self._limits[row]:
                self._done[row] = True
            elif self._stops[row]:
                tail = input_ids[row, -min(generated, self._tails[row]) :].tolist()
                self._done[row] = cut_at_stop(self._decode(tail), self._stops[row])[1]
        return torch.tensor(self._done, dtype=torch.bool, device=input_ids.device)


class _DeltaStreamer(BaseStreamer):
    """Decodes a single row's new tokens as they come and emits text deltas, cut at stops."""

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        stop_token_ids: Sequence[int],
        stops: Sequence[str],
        emit: Callable[[str], None],
    ) -> None:
        self._decode = decode
        self._stop_ids = set(stop_token_ids)
        self._scanner = StopScanner(stops)
        self._emit = emit
        self._ids: list[int] = []
        self._shown = 0
        self._prompt_seen = False
        self._ended = False
        self.first_token_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first pushes the prompt
            self._prompt_seen = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        for token in value.reshape(-1).tolist():
            if self._ended or token in self._stop_ids:
                self._ended = True
                return
            self._ids.append(token)
        text = self._decode(self._ids)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            self._send(text)

    def end(self) -> None:
        self._send(self._decode(self._ids))
        tail = self._scanner.flush()
        if tail:
            self._emit(tail)

    def _send(self, text: str) -> None:
        delta, self._shown = text[self._shown :], len(text)
        safe = self._scanner.feed(delta) if delta else ""
        if safe:
            self._emit(safe)


class LocalEngine:
    """Generates answers for prepared jobs with one loaded model (worker thread only)."""

    def __init__(self, loaded: LoadedModel, tokenizer_lock: threading.Lock) -> None:
        self._loaded = loaded
        self._lock = tokenizer_lock

    def decode(self, ids: list[int]) -> str:
        with self._lock:
            return str(self._loaded.tokenizer.decode(ids, skip_special_tokens=True))

    def run_batch(self, jobs: Sequence[LocalJob]) -> list[VisionResult]:
        """Answer jobs that share a batch key in one left-padded `generate` call."""
        started = time.perf_counter()
        encoded = self._encode(jobs)
        rows = self._generate(jobs, encoded, streamer=None, cancel=None)
        elapsed = time.perf_counter() - started
        new_tokens = sum(row.completion_tokens for row in rows)
        logger.info(
            "Batch of %d: %d new tokens in %.2fs (%.1f tokens/s)",
            len(jobs),
            new_tokens,
            elapsed,
            new_tokens / elapsed if elapsed > 0 else 0.0,
        )
        metrics = {"inference_time": elapsed, "batch_size": float(len(jobs))}
        return [
            self._result(job, row, int(encoded["attention_mask"][index].sum()), metrics)
            for index, (job, row) in enumerate(zip(jobs, rows, strict=True))
        ]

    def run_stream(self, job: LocalJob, emit: Callable[[str], None], cancel: threading.Event) -> VisionResult:
        """Answer one job alone, emitting text deltas as tokens are made."""
        started = time.perf_counter()
        encoded = self._encode([job])
        streamer = _DeltaStreamer(self.decode, self._loaded.stop_token_ids, job.stop, emit)
        (row,) = self._generate([job], encoded, streamer=streamer, cancel=cancel)
        elapsed = time.perf_counter() - started
        metrics = {"inference_time": elapsed, "batch_size": 1.0}
        if streamer.first_token_at is not None:
            metrics["time_to_first_token"] = streamer.first_token_at - started
        logger.info(
            "Stream: %d new tokens in %.2fs (%.1f tokens/s)",
            row.completion_tokens,
            elapsed,
            row.completion_tokens / elapsed if elapsed > 0 else 0.0,
        )
        return self._result(job, row, int(encoded["attention_mask"][0].sum()), metrics)

    # -- steps -------------------------------------------------------------------------

    def _encode(self, jobs: Sequence[LocalJob]) -> Any:
        images = [job.image for job in jobs if job.image is not None]
        with self._lock:
            encoded = self._loaded.processor(
                text=[job.prompt for job in jobs],
                images=images or None,
                padding=True,
                return_tensors="pt",
                add_special_tokens=False,  # the prompt carries its BOS
            )
        encoded = encoded.to(self._loaded.device)
        if "pixel_values" in encoded:
            encoded["pixel_values"] = encoded["pixel_values"].to(self._loaded.dtype)
        return encoded

    def _generate(
        self,
        jobs: Sequence[LocalJob],
        encoded: Any,
        *,
        streamer: _DeltaStreamer | None,
        cancel: threading.Event | None,
    ) -> list[_Row]:
        prompt_length = encoded["input_ids"].shape[1]
        criteria = _RowStops(prompt_length, jobs, self.decode, cancel)
        sampling = jobs[0].sampling
        options: dict[str, Any] = (
            {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            if sampling is None
            else {"do_sample": True, "temperature": sampling[0], "top_p": sampling[1], "top_k": None}
        )
        with torch.inference_mode():
            output = self._loaded.model.generate(
                **encoded,
                max_new_tokens=max(job.max_new_tokens for job in jobs),
                eos_token_id=list(self._loaded.stop_token_ids),
                pad_token_id=self._loaded.pad_token_id,
                stopping_criteria=StoppingCriteriaList([criteria]),
                streamer=streamer,
                **options,
            )
        generated = output[:, prompt_length:].tolist()
        return [self._cut(ids, job) for ids, job in zip(generated, jobs, strict=True)]

    def _cut(self, ids: list[int], job: LocalJob) -> _Row:
        """Cut one row's new tokens at its first EOS, stop string or max_new_tokens."""
        ids = ids[: job.max_new_tokens]
        stop_ids = self._loaded.stop_token_ids
        for index, token in enumerate(ids):
            if token in stop_ids:
                ids = ids[:index]
                return self._cut_at_stop_string(ids, job, eos_counted=index + 1)
        return self._cut_at_stop_string(ids, job, eos_counted=None)

    def _cut_at_stop_string(self, ids: list[int], job: LocalJob, eos_counted: int | None) -> _Row:
        if job.stop and cut_at_stop(self.decode(ids), job.stop)[1]:
            # the fewest tokens whose text holds a stop string: what the model had to make
            low, high = 1, len(ids)
            while low < high:
                middle = (low + high) // 2
                if cut_at_stop(self.decode(ids[:middle]), job.stop)[1]:
                    high = middle
                else:
                    low = middle + 1
            return _Row(ids[:low], low, "stop")
        if eos_counted is not None:
            return _Row(ids, eos_counted, "stop")
        return _Row(ids, len(ids), "length")

    def _result(
        self, job: LocalJob, row: _Row, prompt_tokens: int, metrics: dict[str, float]
    ) -> VisionResult:
        text, _ = cut_at_stop(self.decode(row.content_ids), job.stop)
        return VisionResult(
            text=text,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=row.completion_tokens),
            finish_reason=row.finish_reason,
            model=job.model_name,
            request_id=f"local-{uuid.uuid4().hex[:16]}",
            metrics=dict(metrics),
        )
