"""In-process `describe` vs `describe --engine ray` on one machine, same backend and concurrency.

    python bench/ray_describe.py                        # 2,000 images, concurrency 16
    python bench/ray_describe.py --images 500 --latency 0.05

Both engines describe the same folder of small PNGs through FalBackend against one
`llava-bridge serve --backend fake --fake-answers image-facts` process on 127.0.0.1
(each job takes `--latency` seconds; answers depend on the image). Ray runs on a local
cluster (`llava_bridge.ray.local_cluster`: 127.0.0.1, no dashboard), started once and
timed apart. Printed: wall time of each run, Ray's overhead as a ratio to the
in-process run at the same total concurrency (goal <= 1.3x), throughput per actor for
1, 2 and 4 actors of `--per-actor` requests each, and whether every run wrote the same
(source, description) pairs. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import time
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


def run_in_process(base_url: str, folder: Path, out: Path, concurrency: int) -> float:
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
    asyncio.run(go())
    return time.monotonic() - started


def run_ray(base_url: str, folder: Path, out: Path, actors: int, concurrency: int) -> float:
    spec = BackendSpec("fal", base_url=base_url, api_key=KEY)
    options = RayDescribeOptions(
        prompt=PROMPT, max_new_tokens=256, concurrency=concurrency, actors=actors, progress=False
    )
    started = time.monotonic()
    summary = describe_with_ray([str(folder)], out, spec, options)
    assert summary.ok, summary.failures
    return time.monotonic() - started


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
            rows: list[tuple[str, int, int, float]] = []
            process_s = run_in_process(url, folder, root / "process.jsonl", args.concurrency)
            rows.append(("in-process describe", 0, args.concurrency, process_s))
            started = time.monotonic()
            with local_cluster(num_cpus=os.cpu_count()):
                cluster_s = time.monotonic() - started
                same = run_ray(url, folder, root / "ray-same.jsonl", 2, args.concurrency)
                rows.append(("ray, same concurrency", 2, args.concurrency, same))
                for actors in (1, 2, 4):
                    name = f"ray-{actors}.jsonl"
                    seconds = run_ray(url, folder, root / name, actors, actors * args.per_actor)
                    label = f"ray, {actors} actor(s) x {args.per_actor}"
                    rows.append((label, actors, actors * args.per_actor, seconds))
        reference = pairs(root / "process.jsonl")
        outputs = ["ray-same.jsonl", "ray-1.jsonl", "ray-2.jsonl", "ray-4.jsonl"]
        identical = all(pairs(root / name) == reference for name in outputs)
    print(f"{images} images, fake job latency {args.latency} s, {os.cpu_count()} CPUs")
    print(f"Ray cluster start (once, not in the runs): {cluster_s:.1f} s")
    print()
    print("| run | actors | in flight | wall s | img/s | img/s per actor | vs in-process |")
    print("|---|---|---|---|---|---|---|")
    for name, actors, in_flight, seconds in rows:
        rate = images / seconds
        per_actor = f"{rate / actors:.1f}" if actors else "-"
        ratio = f"{seconds / process_s:.2f}x"
        print(
            f"| {name} | {actors or '-'} | {in_flight} | {seconds:.1f} | {rate:.1f} | {per_actor} | {ratio} |"
        )
    print()
    print(f"Ray overhead at the same concurrency: {same / process_s:.2f}x (goal <= 1.3x)")
    print(f"Same (source, description) set in every run: {identical}")


if __name__ == "__main__":
    main()
