"""`llava-bridge describe --engine ray`: the same run as the in-process describe, on Ray Data.

Sources are expanded as the in-process engine does (files, folders, globs, URLs, .txt
lists); a storage URI such as ``s3://bucket/photos/`` is read by Ray Data itself. Records
stream back to this process, which writes them (JSONL or Parquet) as batches finish.
The first Ctrl-C cancels the requests in flight on every actor and waits for their
cancels; a second exits at once.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import SecretStr

from llava_bridge.cli.interrupt import SECOND_CTRL_C
from llava_bridge.defaults import IMAGE_SUFFIXES
from llava_bridge.describe import (
    DEFAULT_DESCRIBE_PROMPT,
    RECORD_FIELDS,
    DescribeSummary,
    check_output_path,
    expand_sources,
)
from llava_bridge.errors import InvalidRequestError, LlavaError
from llava_bridge.ray.cancel import CANCELLED, NOT_STARTED, CancelSignal
from llava_bridge.ray.cluster import local_cluster
from llava_bridge.ray.describer import HTTP_ACTORS, describe_dataset
from llava_bridge.ray.output import open_writer, previous_records
from llava_bridge.ray.spec import BackendSpec

__all__ = ["RayDescribeOptions", "describe_from_args", "describe_with_ray", "split_sources"]

CANCEL_WAIT_S = 60.0
"""How long an interrupted run waits for the actors' cancels before it stops anyway."""
_PLAIN_SCHEMES = ("http://", "https://", "data:")


@dataclass(frozen=True)
class RayDescribeOptions:
    """The CLI's settings for one run."""

    prompt: str
    max_new_tokens: int
    concurrency: int
    actors: int | None = None
    address: str | None = None
    resume: bool = False
    progress: bool = True


def describe_from_args(args: argparse.Namespace) -> DescribeSummary:
    """Run `llava-bridge describe --engine ray` from the CLI's parsed arguments."""
    spec = BackendSpec(
        args.backend,
        model=args.model,
        base_url=args.base_url,
        api_key=SecretStr(args.api_key) if args.api_key else None,
        fake_latency=getattr(args, "fake_latency", 0.0),
    )
    options = RayDescribeOptions(
        prompt=args.prompt or DEFAULT_DESCRIBE_PROMPT,
        max_new_tokens=args.max_new_tokens,
        concurrency=args.concurrency,
        actors=args.actors,
        address=args.address,
        resume=args.resume,
        progress=not args.no_progress,
    )
    return describe_with_ray(args.sources, args.out, spec, options)


def split_sources(arguments: Sequence[str]) -> tuple[list[str], list[str]]:
    """Storage URIs Ray Data reads itself (s3://, gs://, ...), and the expanded local sources."""
    uris = [a for a in arguments if "://" in a and not a.startswith(_PLAIN_SCHEMES)]
    rest = [a for a in arguments if a not in uris]
    return uris, expand_sources(rest) if rest else []


def describe_with_ray(
    arguments: Sequence[str], out: Path, spec: BackendSpec, options: RayDescribeOptions
) -> DescribeSummary:
    """Describe the images `arguments` name into `out` on a Ray cluster (a local one by default)."""
    check_output_path(out)
    uris, sources = split_sources(arguments)
    if uris and sources:
        raise InvalidRequestError(
            "Give either storage URIs (" + ", ".join(uris) + ") or local files and URLs, not both in one run."
        )
    kept = previous_records(out) if options.resume else []
    done = {record["source"] for record in kept}
    todo = [source for source in sources if source not in done]
    summary = DescribeSummary(total=len(sources), skipped=len(sources) - len(todo))
    started = time.monotonic()
    if sources and not todo:
        return summary
    with _cluster(options.address):
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = options.progress
        context.raise_original_map_exception = True  # an actor's LlavaError reaches us as itself
        ds = _read_uris(uris, done) if uris else ray.data.from_items([{"source": s} for s in todo])
        cancel = CancelSignal()
        try:
            _run(ds, "bytes" if uris else "source", spec, options, cancel, out, kept, summary)
        finally:
            cancel.close()
    if uris:  # the count is known only now
        summary.skipped = len(done)
        summary.total = summary.skipped + summary.described + len(summary.failures) + summary.cancelled
    summary.seconds = time.monotonic() - started
    return summary


@contextlib.contextmanager
def _cluster(address: str | None) -> Iterator[None]:
    """The cluster at `address`, a new local one, or the one this process is already connected to."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address is None:
        with local_cluster(num_cpus=os.cpu_count()):
            yield
        return
    ray.init(address=address)
    try:
        yield
    finally:
        ray.shutdown()


def _read_uris(uris: list[str], done: set[str]) -> Any:
    """Image files under storage URIs, read by Ray Data: columns `source` and `bytes`."""
    import ray.data
    from ray.data.expressions import col

    suffixes = sorted(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES)
    read = ray.data.read_binary_files(uris, include_paths=True, file_extensions=suffixes)
    read = read.rename_columns({"path": "source"})
    if done:
        read = read.filter(expr=col("source").not_in(sorted(done)))
    return read


def _run(
    ds: Any,
    image_column: str,
    spec: BackendSpec,
    options: RayDescribeOptions,
    cancel: CancelSignal,
    out: Path,
    kept: list[dict[str, Any]],
    summary: DescribeSummary,
) -> None:
    actors = options.actors or (None if spec.uses_gpu else min(HTTP_ACTORS, options.concurrency))
    in_flight = math.ceil(options.concurrency / actors) if actors else None
    described = describe_dataset(
        ds,
        spec,
        image_column=image_column,
        prompt=options.prompt,
        max_new_tokens=options.max_new_tokens,
        actors=actors,
        max_in_flight=in_flight,
        keep_images=False,
        cancel_signal=cancel,
    )
    writer = open_writer(out, kept)
    stopped = False
    with _ctrl_c(cancel) as interrupted:
        try:
            for batch in described.iter_batches(batch_size=None, batch_format="pyarrow"):
                for record in batch.select(list(RECORD_FIELDS)).to_pylist():
                    _take(record, writer, summary)
                if interrupted.is_set():
                    summary.interrupted = True
                    if cancel.wait_idle(CANCEL_WAIT_S):
                        break
        except Exception as exc:
            stopped = True
            cause = _llava_cause(exc)
            if cause is None:
                raise
            raise cause from None
        finally:
            writer.close(keep=not stopped)
    summary.interrupted = summary.interrupted or interrupted.is_set()


def _take(record: dict[str, Any], writer: Any, summary: DescribeSummary) -> None:
    if record["error"] in (CANCELLED, NOT_STARTED):
        summary.cancelled += record["error"] == CANCELLED
        return
    writer.write(record)
    if record["error"] is None:
        summary.described += 1
    else:
        summary.failures[record["source"]] = record["error"]


def _llava_cause(exc: BaseException) -> LlavaError | None:
    """The llava-bridge error an actor raised, out of Ray's wrappers."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "cause", None)  # Ray's RayTaskError keeps the actor's exception here
        if isinstance(current, LlavaError) and not isinstance(inner, BaseException):
            return current
        if isinstance(current, BaseExceptionGroup):
            current = current.exceptions[0]
        else:
            current = inner if isinstance(inner, BaseException) else current.__cause__
    return None


@contextlib.contextmanager
def _ctrl_c(cancel: CancelSignal) -> Iterator[threading.Event]:
    """While the run goes on: a first Ctrl-C cancels (in a helper thread), a second exits now."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_ctrl_c(signum: int, frame: FrameType | None) -> None:
        if interrupted.is_set():
            print(SECOND_CTRL_C, file=sys.stderr, flush=True)
            os._exit(130)
        interrupted.set()
        print("\nllava-bridge: cancelling the jobs in flight on every actor...", file=sys.stderr, flush=True)
        threading.Thread(target=cancel.cancel, daemon=True).start()

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)
