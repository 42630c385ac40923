"""In-process `describe` vs `describe --engine ray` on one machine, same backend and concurrency.

    python bench/ray_describe.py                        # 2,000 images, concurrency 16
    python bench/ray_describe.py --images 500 --latency 0.05

Both engines describe the same folder of small PNGs through FalBackend against one
`llava-bridge serve --backend fake --fake-answers image-facts` process on 127.0.0.1
(each job takes `--latency` seconds; answers depend on the image). Ray runs on a local
cluster (`llava_bridge.ray.local_cluster`: 127.0.0.1, no dashboard), started once and
timed apart. Printed: wall time of each run and when its first record was written
(Ray starts its actors then), the rate after that first record, Ray's overhead as a
ratio to the in-process run at the same total concurrency (goal <= 1.3x), throughput
per actor for 1, 2 and 4 actors of `--per-actor` requests each, and whether every run
wrote the same (source, description) pairs. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.local_server import running_server  # noqa: E402

from llava_bridge import FalBackend  # noqa: E402
from llava_bridge.describe import describe_to_jsonl, expand_sources  # noqa: E402
from llava_bridge.ray import BackendSpec, local_cluster  # noqa: E402
from llava_bridge.ray.cli_engine import RayDescribeOptions, describe_with_ray  # noqa: E402

PROMPT = "Describe the image."
KEY = "bench-key"


def write_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (index % 256, (index * 7) % 256, (index * 13) % 256)).save(buffer, "PNG")
        (folder / f"img{index:05d}.png").write_bytes(buffer.getvalue())


def pairs(out: Path) -> set[tuple[str, str | None]]:
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return {(record["source"], record["description"]) for record in records}


@dataclass
class Timing:
    wall: float
    first: float
    """Seconds until the first record was in the output file."""


@contextmanager
def first_record(out: Path) -> Iterator[Callable[[], float]]:
    """Watch `out` from a thread; yields a function giving the seconds until it first had a line."""
    started, seen = time.monotonic(), [float("nan")]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if out.exists() and out.stat().st_size:
                seen[0] = time.monotonic() - started
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield lambda: seen[0]
    finally:
        done.set()
        thread.join()


def run_in_process(base_url: str, folder: Path, out: Path, concurrency: int) -> Timing:
    async def go() -> None:
        async with FalBackend(base_url=base_url, api_key=KEY) as backend:
            summary = await describe_to_jsonl(
                backend,
                expand_sources([str(folder)]),
                out,
                prompt=PROMPT,
                concurrency=concurrency,
                progress=False,
            )
        assert summary.ok, summary.failures

    started = time.monotonic()
    with first_record(out) as first:
        asyncio.run(go())
    return Timing(time.monotonic() - started, first())


def run_ray(base_url: str, folder: Path, out: Path, actors: int, concurrency: int) -> Timing:
    spec = BackendSpec("fal", base_url=base_url, api_key=KEY)
    options = RayDescribeOptions(
        prompt=PROMPT, max_new_tokens=256, concurrency=concurrency, actors=actors, progress=False
    )
    started = time.monotonic()
    with first_record(out) as first:
        summary = describe_with_ray([str(folder)], out, spec, options)
    assert summary.ok, summary.failures
    return Timing(time.monotonic() - started, first())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight in all")
    parser.add_argument(
        "--per-actor", type=int, default=8, help="requests in flight per actor (scaling rows)"
    )
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per fake job")
    args = parser.parse_args()
    images = args.images
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        folder, root = Path(tmp, "photos"), Path(tmp)
        write_images(folder, images)
        server_args = ("--backend", "fake", "--fake-answers", "image-facts")
        server_args += ("--fake-latency", str(args.latency), "--concurrency", "64")
        with running_server(*server_args, db_path=str(root / "jobs.db")) as server:
            url = server.base_url
            rows: list[tuple[str, int, int, Timing]] = []
            process = run_in_process(url, folder, root / "process.jsonl", args.concurrency)
            rows.append(("in-process describe", 0, args.concurrency, process))
            started = time.monotonic()
            with local_cluster(num_cpus=os.cpu_count()):
                cluster_s = time.monotonic() - started
                same = run_ray(url, folder, root / "ray-same.jsonl", 2, args.concurrency)
                rows.append(("ray, same concurrency", 2, args.concurrency, same))
                for actors in (1, 2, 4):
                    name = f"ray-{actors}.jsonl"
                    timing = run_ray(url, folder, root / name, actors, actors * args.per_actor)
                    label = f"ray, {actors} actor(s) x {args.per_actor}"
                    rows.append((label, actors, actors * args.per_actor, timing))
        reference = pairs(root / "process.jsonl")
        outputs = ["ray-same.jsonl", "ray-1.jsonl", "ray-2.jsonl", "ray-4.jsonl"]
        identical = all(pairs(root / name) == reference for name in outputs)
    print(f"{images} images, fake job latency {args.latency} s, {os.cpu_count()} CPUs")
    print(f"Ray cluster start (once, not in the runs): {cluster_s:.1f} s")
    print()
    print(
        "| run | actors | in flight | wall s | first record s | img/s | img/s after first | per actor | vs in-process |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, actors, in_flight, timing in rows:
        rate, steady = images / timing.wall, (images - 1) / (timing.wall - timing.first)
        per_actor = f"{steady / actors:.1f}" if actors else "-"
        ratio = f"{timing.wall / process.wall:.2f}x"
        cells = [name, str(actors or "-"), str(in_flight), f"{timing.wall:.1f}", f"{timing.first:.1f}"]
        cells += [f"{rate:.1f}", f"{steady:.1f}", per_actor, ratio]
        print("| " + " | ".join(cells) + " |")
    print()
    steady_ratio = (same.wall - same.first) / (process.wall - process.first)
    print(f"Ray overhead at the same concurrency: {same.wall / process.wall:.2f}x wall (goal <= 1.3x),")
    print(f"{steady_ratio:.2f}x after the first record (once the actors have started)")
    print(f"Same (source, description) set in every run: {identical}")


if __name__ == "__main__":
    main()
