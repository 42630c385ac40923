"""Describe many images into a JSONL file: what `llava-bridge describe` runs.

Each finished image is one line `{source, description, model, request_id, error}`,
written whole and flushed, so an interrupted run leaves a valid file and `resume`
picks up where it stopped (images that failed are tried again). A cancelled run
(Ctrl-C) cancels the jobs in flight and waits for their cancels. An error that every
image would hit (no key, a rejected key, a bad setting) stops the run at once, and a
run that described nothing leaves no file behind.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from llava_bridge.backends.base import Backend
from llava_bridge.defaults import DESCRIBE_PROMPT, IMAGE_SUFFIXES
from llava_bridge.errors import AuthenticationError, ConfigurationError, InvalidRequestError, LlavaError
from llava_bridge.images import ImageInput
from llava_bridge.types import VisionRequest

__all__ = [
    "DEFAULT_DESCRIBE_PROMPT",
    "RECORD_FIELDS",
    "RUN_STOPPERS",
    "DescribeSummary",
    "JsonlWriter",
    "check_output_path",
    "describe_image",
    "describe_to_jsonl",
    "done_records",
    "expand_sources",
    "format_summary",
    "image_for_source",
]

DEFAULT_DESCRIBE_PROMPT = DESCRIBE_PROMPT
RUN_STOPPERS = (ConfigurationError, AuthenticationError)
"""Errors every image would hit: they stop the whole run instead of failing each image."""
RECORD_FIELDS = ("source", "description", "model", "request_id", "error")
"""The fields of one output record, in order; `error` is None when the image was described."""


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
        elif Path(argument).exists():
            sources.append(argument)
        else:
            raise InvalidRequestError(
                f"{argument!r} does not exist; give image files, a directory, a glob such as "
                "'photos/**/*.jpg', URLs, or a .txt file of them."
            )
    unique = list(dict.fromkeys(sources))
    if not unique:
        raise InvalidRequestError(
            "No images found in " + ", ".join(repr(a) for a in arguments) + "; give image files, "
            "a directory, a glob such as 'photos/**/*.jpg', URLs, or a .txt file of them."
        )
    return unique


def check_output_path(out: Path) -> None:
    """Raise `InvalidRequestError` unless `out` can be created or replaced as a file."""
    if out.is_dir():
        raise InvalidRequestError(
            f"{str(out)!r} is a directory; give a file path such as {str(out / 'captions.jsonl')!r}."
        )
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InvalidRequestError(f"Cannot write {str(out)!r}: {str(parent)!r} is not a directory.")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise InvalidRequestError(
            f"Cannot write {str(out)!r}: permission denied; choose another output file."
        )


@dataclass
class DescribeSummary:
    """What a run did."""

    total: int
    skipped: int = 0
    described: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False
    cancelled: int = 0
    """Images whose job was in flight when the run was interrupted (their jobs were cancelled)."""

    @property
    def not_started(self) -> int:
        """Images an interrupted run never reached."""
        done = self.skipped + self.described + len(self.failures) + self.cancelled
        return max(self.total - done, 0)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.interrupted


def done_records(out: Path) -> list[dict[str, Any]]:
    """The records of a previous JSONL run that succeeded (lines cut by a crash are skipped)."""
    kept: list[dict[str, Any]] = []
    if not out.exists():
        return kept
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(record, dict) and record.get("error") is None and "source" in record:
            kept.append(record)
    return kept


def _done_sources(out: Path) -> tuple[list[str], set[str]]:
    """Valid lines of a previous run that succeeded, and their sources."""
    records = done_records(out)
    kept = [json.dumps(record, ensure_ascii=False) for record in records]
    return kept, {record["source"] for record in records}


def image_for_source(source: str) -> ImageInput:
    """A source string as an image: a URL or data URI as is, anything else read as a path."""
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

    def finish(self) -> None:
        """End a bar that an interruption left mid-line."""
        if self.enabled and 0 < self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()


class JsonlWriter:
    """Appends whole, flushed lines to `out`; the file is created with the first line."""

    def __init__(self, out: Path, kept: list[str]) -> None:
        self.out, self.kept = out, kept
        self.file: TextIO | None = None
        self.described = 0

    def write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            self._open()
        assert self.file is not None
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()
        self.described += record["error"] is None

    def _open(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.file = self.out.open("w", encoding="utf-8")
        except OSError as exc:
            raise InvalidRequestError(f"Cannot write {str(self.out)!r}: {exc.strerror or exc}.") from None
        for line in self.kept:
            self.file.write(line + "\n")
        self.file.flush()

    def close(self, *, keep: bool) -> None:
        """Close the file; unless `keep`, remove it when this run created it and described nothing."""
        if self.file is None:
            return
        self.file.close()
        if not keep and not self.kept and not self.described:
            self.out.unlink(missing_ok=True)


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
    """Describe each source with `backend`, appending one JSON line per image to `out`.

    Cancelling the task (Ctrl-C under `asyncio.run`) cancels the jobs in flight, waits
    for their cancels, and returns a summary with `interrupted` set. A `ConfigurationError`
    or `AuthenticationError` stops the run and is raised.
    """
    if concurrency < 1:
        raise InvalidRequestError("concurrency must be at least 1.")
    VisionRequest(prompt=prompt, max_new_tokens=max_new_tokens)  # validate settings up front
    check_output_path(out)
    kept, done = _done_sources(out) if resume else ([], set())
    todo = [s for s in sources if s not in done]
    summary = DescribeSummary(total=len(sources), skipped=len(sources) - len(todo))
    started = time.monotonic()
    bar = _Progress(len(todo), progress_stream, progress)
    semaphore = asyncio.Semaphore(concurrency)
    writer = JsonlWriter(out, kept)

    async def one(source: str) -> None:
        async with semaphore:
            try:
                record = await _describe_one(backend, source, prompt, max_new_tokens)
            except asyncio.CancelledError:
                summary.cancelled += 1  # its job, if any, was cancelled before this
                raise
        writer.write(record)
        if record["error"] is None:
            summary.described += 1
        else:
            summary.failures[source] = record["error"]
        bar.update(record["error"] is not None)

    stopped = False
    try:
        async with asyncio.TaskGroup() as group:  # a failure or a cancel cancels the rest, and waits
            for source in todo:
                group.create_task(one(source))
    except (asyncio.CancelledError, KeyboardInterrupt):
        summary.interrupted = True
    except BaseExceptionGroup as group:
        stopped = True
        raise group.exceptions[0] from None
    finally:
        writer.close(keep=not stopped)
        bar.finish()
    summary.seconds = time.monotonic() - started
    return summary


async def _describe_one(backend: Backend, source: str, prompt: str, max_new_tokens: int) -> dict[str, Any]:
    outcome = await describe_image(
        backend, lambda: image_for_source(source), prompt=prompt, max_new_tokens=max_new_tokens
    )
    return {"source": source, **outcome}


async def describe_image(
    backend: Backend, load_image: Callable[[], ImageInput], *, prompt: str, max_new_tokens: int
) -> dict[str, Any]:
    """One image's `description`, `model`, `request_id` and `error` (None when described).

    `load_image` runs in a worker thread (it may read a file or decode pixels). A
    `LlavaError` becomes the record's `error` ("ClassName: message"), except the
    `RUN_STOPPERS`, which are raised: every other image would hit them too.
    """
    record: dict[str, Any] = {"description": None, "model": None, "request_id": None}
    try:
        image = await asyncio.to_thread(load_image)
        request = VisionRequest(prompt=prompt, image=image, max_new_tokens=max_new_tokens)
        result = await backend.agenerate(request)
    except RUN_STOPPERS:
        raise
    except LlavaError as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        return record
    record.update(description=result.text, model=result.model, request_id=result.request_id, error=None)
    return record


def format_summary(summary: DescribeSummary, out: Path) -> Iterable[str]:
    """Human lines for the end of a run; an interrupted run gets exactly one."""
    if summary.interrupted:
        failed = f", {len(summary.failures)} failed" if summary.failures else ""
        where = f"-> {out}; run again with --resume to finish" if out.exists() else "-> nothing written"
        yield (
            f"Interrupted: {summary.described} image(s) described{failed}, {summary.cancelled} in flight "
            f"cancelled, {summary.not_started} not started {where}."
        )
        return
    yield (
        f"Described {summary.described} image(s) in {summary.seconds:.1f} s -> {out}"
        + (f" ({summary.skipped} already done)" if summary.skipped else "")
    )
    if summary.failures:
        yield f"{len(summary.failures)} failed:"
        for source, error in summary.failures.items():
            yield f"  {source}: {error.splitlines()[0]}"
