"""Describe many images into a JSONL file: what `llava-bridge describe` runs.

Each finished image is one line `{source, description, model, request_id, error}`,
written whole and flushed, so an interrupted run leaves a valid file and `resume`
picks up where it stopped (images that failed are tried again).
"""

from __future__ import annotations

import asyncio
import glob
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from llava_bridge.backends.base import Backend
from llava_bridge.errors import InvalidRequestError, LlavaError
from llava_bridge.images import ImageInput
from llava_bridge.types import VisionRequest

__all__ = ["DEFAULT_DESCRIBE_PROMPT", "DescribeSummary", "describe_to_jsonl", "expand_sources"]

DEFAULT_DESCRIBE_PROMPT = (
    "Describe this image in detail for a search index: the main subjects, setting, colours, "
    "any visible text, and anything unusual."
)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})


def expand_sources(arguments: Sequence[str]) -> list[str]:
    """Paths, directories (recursive), globs, URLs and `.txt` lists -> image sources, in order."""
    sources: list[str] = []
    for argument in arguments:
        if argument.startswith(("http://", "https://", "data:")):
            sources.append(argument)
        elif any(ch in argument for ch in "*?["):
            matches = sorted(glob.glob(argument, recursive=True))
            sources.extend(m for m in matches if Path(m).suffix.lower() in IMAGE_SUFFIXES)
        elif Path(argument).is_dir():
            files = sorted(p for p in Path(argument).rglob("*") if p.is_file())
            sources.extend(str(p) for p in files if p.suffix.lower() in IMAGE_SUFFIXES)
        elif argument.endswith(".txt") and Path(argument).is_file():
            for line in Path(argument).read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    sources.append(line)
        else:
            sources.append(argument)
    unique = list(dict.fromkeys(sources))
    if not unique:
        raise InvalidRequestError(
            "No images found in " + ", ".join(repr(a) for a in arguments) + "; give image files, "
            "a directory, a glob such as 'photos/**/*.jpg', URLs, or a .txt file of them."
        )
    return unique


@dataclass
class DescribeSummary:
    """What a run did."""

    total: int
    skipped: int = 0
    described: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures and not self.interrupted


def _done_sources(out: Path) -> tuple[list[str], set[str]]:
    """Valid lines of a previous run that succeeded, and their sources."""
    kept: list[str] = []
    done: set[str] = set()
    if not out.exists():
        return kept, done
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(record, dict) and record.get("error") is None and "source" in record:
            kept.append(line)
            done.add(record["source"])
    return kept, done


def _image_for(source: str) -> ImageInput:
    if source.startswith(("http://", "https://", "data:")):
        return ImageInput.from_url(source)
    return ImageInput.from_path(source)


class _Progress:
    """A one-line progress bar with rate and ETA, redrawn in place on stderr."""

    def __init__(self, total: int, stream: TextIO | None, enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream or sys.stderr, enabled
        self.done = self.failed = 0
        self.start = time.monotonic()

    def update(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        failed_note = f", {self.failed} failed" if self.failed else ""
        self.stream.write(
            f"\r[{bar}] {self.done}/{self.total} {rate:.1f} img/s ETA {eta:4.0f}s{failed_note}  "
        )
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


async def describe_to_jsonl(
    backend: Backend,
    sources: Sequence[str],
    out: Path,
    *,
    prompt: str = DEFAULT_DESCRIBE_PROMPT,
    concurrency: int = 4,
    resume: bool = False,
    max_new_tokens: int = 256,
    progress: bool = True,
    progress_stream: TextIO | None = None,
) -> DescribeSummary:
    """Describe each source with `backend`, appending one JSON line per image to `out`."""
    if concurrency < 1:
        raise InvalidRequestError("concurrency must be at least 1.")
    VisionRequest(prompt=prompt, max_new_tokens=max_new_tokens)  # validate settings up front
    kept, done = _done_sources(out) if resume else ([], set())
    todo = [s for s in sources if s not in done]
    summary = DescribeSummary(total=len(sources), skipped=len(sources) - len(todo))
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    bar = _Progress(len(todo), progress_stream, progress)
    semaphore = asyncio.Semaphore(concurrency)
    with out.open("w", encoding="utf-8") as file:
        for line in kept:
            file.write(line + "\n")
        file.flush()

        async def one(source: str) -> None:
            async with semaphore:
                record = await _describe_one(backend, source, prompt, max_new_tokens)
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
            file.flush()
            if record["error"] is None:
                summary.described += 1
            else:
                summary.failures[source] = record["error"]
            bar.update(record["error"] is not None)

        tasks = [asyncio.ensure_future(one(source)) for source in todo]
        try:
            await asyncio.gather(*tasks)
        except (asyncio.CancelledError, KeyboardInterrupt):
            summary.interrupted = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    summary.seconds = time.monotonic() - started
    return summary


async def _describe_one(backend: Backend, source: str, prompt: str, max_new_tokens: int) -> dict[str, Any]:
    record: dict[str, Any] = {"source": source, "description": None, "model": None, "request_id": None}
    try:
        image = await asyncio.to_thread(_image_for, source)
        request = VisionRequest(prompt=prompt, image=image, max_new_tokens=max_new_tokens)
        result = await backend.agenerate(request)
    except LlavaError as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        return record
    record.update(description=result.text, model=result.model, request_id=result.request_id, error=None)
    return record


def format_summary(summary: DescribeSummary, out: Path) -> Iterable[str]:
    """Human lines for the end of a run."""
    verb = "Interrupted after" if summary.interrupted else "Described"
    yield (
        f"{verb} {summary.described} image(s) in {summary.seconds:.1f} s -> {out}"
        + (f" ({summary.skipped} already done)" if summary.skipped else "")
    )
    if summary.failures:
        yield f"{len(summary.failures)} failed:"
        for source, error in summary.failures.items():
            yield f"  {source}: {error.splitlines()[0]}"
