"""Benchmark image preparation: CPU per 12 MP image, and `describe` throughput, today's code beside ours.

    python bench/image_prep.py                       # both parts, 200 images for describe
    python bench/image_prep.py --count 50 --skip-old # quicker; no comparison with the old tree

Part 1, CPU per image (`time.process_time`, best of a few runs, so all decoder
threads count) for a 4032x3024 JPEG (q92), the same pixels as a PNG and as a HEIC:

- ours: `ImageInput.from_bytes(data).prepared()` (header probe, one decode, JPEG draft);
- naive Pillow: open, full decode, Lanczos to the same size, save JPEG q90;
- floor: what the decoder cannot avoid: JPEG draft mode (libjpeg's own 1/2-1/8
  scaling), then Lanczos and save; other formats have no draft mode, so their
  floor is a full decode, `reduce`-assisted Lanczos and save;
- old: `ImageInput.from_bytes(data).resized()` of commit 30e4bcb (before this
  work), run in a subprocess with that tree's `src` first on `PYTHONPATH`.

Part 2, `llava-bridge describe` of `--count` distinct 12 MP JPEGs through
`llava-bridge serve --backend fake` at `--concurrency` 16: each tree's CLI
against each tree's server (subprocesses), images/s and client CPU per image.

Part 3, the longest event-loop gap while `await ChatLlava(...).ainvoke(...)` sends a 12 MP
JPEG (a data URI block) through FalBackend to `serve --backend fake`: a 5 ms ticker runs
beside the call, each tree's code in its own subprocess against one server; a warm-up call,
then the median and worst of 5 calls, each with a photo not sent before.

The photos are the sample photos in ../shared/data upscaled to 12 MP with sensor-
like noise added, so they cost what a phone photo costs to decode. The old tree
is made with `git worktree add --detach /tmp/work/old_tree 30e4bcb` when missing.
Results are printed as tables; nothing is asserted.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from llava_bridge import ImageInput, ResizePolicy

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = str(ROOT / "tests" / "support")
"""Holds loop_gaps.py, the event-loop ticker shared with the tests (stdlib and Pillow only)."""
PHOTOS = ROOT.parent / "shared" / "data"
OLD_COMMIT = "30e4bcb"
SIZE = (4032, 3024)
_READY = re.compile(r"llava-bridge serving on (http://\S+)")

OLD_PREPARE = """
import sys, time
from llava_bridge import ImageInput
data = open(sys.argv[1], "rb").read()
runs = []
for _ in range(int(sys.argv[2])):
    started = time.process_time()
    try:
        ImageInput.from_bytes(data).resized()
    except Exception as exc:
        print("refused:", type(exc).__name__)
        raise SystemExit(0)
    runs.append(time.process_time() - started)
print(min(runs))
"""


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [list(header), *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}\n")
    for index, row in enumerate(cells):
        print(
            "| "
            + " | ".join(
                c.ljust(w) if not i else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            + " |"
        )
        if index == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


# -- the images ------------------------------------------------------------------------------


def photo(name: str, seed: int = 0) -> Image.Image:
    """A sample photo upscaled to 12 MP, with noise a phone's sensor would leave."""
    base = Image.open(PHOTOS / name).convert("RGB").resize(SIZE, Image.Resampling.LANCZOS)
    noise = Image.merge("RGB", [Image.effect_noise(SIZE, 24 + seed % 5) for _ in range(3)])
    return Image.blend(base, noise, 0.12)


def encoded(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


# -- part 1: CPU per image -------------------------------------------------------------------


def best_cpu(function: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.process_time()
        function()
        times.append(time.process_time() - started)
    return min(times)


def naive(data: bytes, target: tuple[int, int]) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return encoded(image.resize(target, Image.Resampling.LANCZOS), "JPEG", quality=90)


def floor(data: bytes, target: tuple[int, int]) -> bytes:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", target)  # JPEG only; a no-op for other formats
    image = image.convert("RGB").resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return encoded(image, "JPEG", quality=90)


def old_cpu(old_tree: Path | None, data: bytes, runs: int) -> str | float:
    if old_tree is None:
        return "-"
    with tempfile.NamedTemporaryFile(suffix=".img") as file:
        file.write(data)
        file.flush()
        env = {**os.environ, "PYTHONPATH": str(old_tree / "src")}
        done = subprocess.run(
            [sys.executable, "-c", OLD_PREPARE, file.name, str(runs)], env=env, capture_output=True, text=True
        )
    out = done.stdout.strip()
    return out if out.startswith("refused") or done.returncode else float(out) * 1000


def prepare_cpu(old_tree: Path | None) -> None:
    picture = photo("astronaut.png")
    samples = {"JPEG 4032x3024 q92": encoded(picture, "JPEG", quality=92)}
    samples["PNG 4032x3024"] = encoded(picture, "PNG", compress_level=6)
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        samples["HEIC 4032x3024"] = encoded(picture, "HEIF", quality=90)
    except ImportError:
        print("pillow-heif is not installed: no HEIC row (install the [heif] extra)")
    target = ResizePolicy().target_size(*SIZE)
    assert target is not None
    rows = []
    for name, data in samples.items():
        runs = 7 if name.startswith("JPEG") else 3
        ours = best_cpu(lambda data=data: ImageInput.from_bytes(data).prepared(), runs) * 1000
        plain = best_cpu(lambda data=data: naive(data, target), runs) * 1000
        least = best_cpu(lambda data=data: floor(data, target), runs) * 1000
        old = old_cpu(old_tree, data, runs)
        old_ratio = f"{old / ours:.1f}x" if isinstance(old, float) else "-"
        rows.append(
            [
                name,
                f"{len(data) / 1e6:.1f} MB",
                ours,
                least,
                plain,
                old if isinstance(old, str) else round(old, 1),
                f"{ours / least:.2f}x",
                f"{plain / ours:.1f}x",
                old_ratio,
            ]
        )
    table(
        f"CPU ms per image to {target[0]}x{target[1]} JPEG (best of runs; lower is better)",
        [
            "image",
            "size",
            "ours",
            "floor",
            "naive Pillow",
            f"old ({OLD_COMMIT})",
            "ours/floor",
            "naive/ours",
            "old/ours",
        ],
        rows,
    )


def metadata_cpu(old_tree: Path | None) -> None:
    """A JPEG with 700 EXIF segments of 64 KB: Pillow joins them quadratically when it opens the file."""
    small = encoded(photo("rocket.jpg").resize((1008, 756)), "JPEG", quality=90)
    body = b"Exif\x00\x00" + b"\x00" * (65533 - 6)
    data = small[:2] + (b"\xff\xe1\xff\xff" + body) * 700 + small[2:]
    ours = best_cpu(lambda: ImageInput.from_bytes(data).prepared(), 3) * 1000
    old = old_cpu(old_tree, data, 1)
    table(
        "CPU ms to accept and prepare a JPEG with 700 EXIF segments of 64 KB",
        ["image", "size", "ours", f"old ({OLD_COMMIT})"],
        [
            [
                "1008x756 JPEG + 700 APP1",
                f"{len(data) / 1e6:.1f} MB",
                ours,
                old if isinstance(old, str) else round(old),
            ]
        ],
    )


# -- part 2: describe through serve --backend fake ---------------------------------------------


def write_photos(folder: Path, count: int) -> None:
    """`count` distinct 12 MP JPEGs: four photos, each file told apart by a comment segment."""
    bases = [
        encoded(photo(name, seed), "JPEG", quality=92)
        for seed, name in enumerate(
            sorted(p.name for p in PHOTOS.glob("*.*") if p.suffix in (".png", ".jpg"))
        )
    ]
    for index in range(count):
        base = bases[index % len(bases)]
        comment = f"photo {index}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        (folder / f"IMG_{index:04d}.jpg").write_bytes(base[:2] + segment + base[2:])


LOOP_GAP = """
import asyncio, base64, statistics, sys
from pathlib import Path
from langchain_core.messages import HumanMessage
from llava_bridge.langchain import ChatLlava
from loop_gaps import ticker_gap  # tests/support: the same 5 ms ticker the tests use

async def gap(model, path):
    uri = "data:image/jpeg;base64," + base64.b64encode(Path(path).read_bytes()).decode()
    message = HumanMessage(content=[{"type": "text", "text": "What?"}, {"type": "image_url", "image_url": {"url": uri}}])
    worst, _ = await ticker_gap(model.ainvoke([message]))
    return worst * 1000

async def main():
    model = ChatLlava(base_url=sys.argv[1], api_key="bench", max_retries=0)
    paths = sys.argv[2:]
    await gap(model, paths[0])  # warm-up: first-use imports are not image work
    gaps = [await gap(model, path) for path in paths[1:]]
    print(statistics.median(gaps), max(gaps))

asyncio.run(main())
"""


def loop_gaps(old_tree: Path | None) -> None:
    """Part 3: each tree's ChatLlava.ainvoke of 12 MP JPEGs beside a 5 ms ticker, one server."""
    trees = [("ours", ROOT)] + ([(f"old ({OLD_COMMIT})", old_tree)] if old_tree else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="image-prep-gap-") as work:
        folder = Path(work)
        write_photos(folder, 6 * len(trees))
        photos = sorted(str(p) for p in folder.glob("*.jpg"))
        server = fake_server(work, {**os.environ, "PYTHONPATH": str(ROOT / "src")})
        try:
            url = _server_url(server)
            for index, (label, tree) in enumerate(trees):
                done = subprocess.run(
                    [sys.executable, "-c", LOOP_GAP, url, *photos[index * 6 : index * 6 + 6]],
                    env={
                        **os.environ,
                        "PYTHONPATH": os.pathsep.join([str(tree / "src"), SUPPORT]),
                        "FAL_KEY": "",
                    },
                    capture_output=True,
                    text=True,
                    check=True,
                )
                median, worst = (float(x) for x in done.stdout.split()[-2:])
                rows.append([label, median, worst])
        finally:
            server.terminate()
            server.wait(timeout=10)
    table(
        "longest event-loop gap during ChatLlava.ainvoke of a 12 MP JPEG (5 ms ticker; goal <= 20 ms)",
        ["code", "median of 5 calls (ms)", "worst of 5 (ms)"],
        rows,
    )


def describe_rate(tree: Path, folder: Path, concurrency: int) -> tuple[float, float, float, int]:
    """(images/s, client and server CPU ms per image, images described) for one tree's CLI and server."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "FAL_KEY": ""}
    count = len(list(folder.glob("*.jpg")))
    with tempfile.TemporaryDirectory(prefix="image-prep-") as work:
        server = fake_server(work, env)
        try:
            url = _server_url(server)
            out = Path(work) / "out.jsonl"
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "llava_bridge.cli",
                    "describe",
                    str(folder),
                    "--out",
                    str(out),
                    "--backend",
                    "fal",
                    "--base-url",
                    url,
                    "--api-key",
                    "bench",
                    "--concurrency",
                    str(concurrency),
                    "--no-progress",
                ],
                env=env,
                check=True,
                capture_output=True,
            )
            elapsed = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            described = sum(1 for line in out.read_text().splitlines() if '"description"' in line)
        finally:
            server.terminate()
            server.wait(timeout=10)
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)  # now with the server's CPU too
    client = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / count * 1000
    served = (ended.ru_utime + ended.ru_stime - after.ru_utime - after.ru_stime) / count * 1000
    return count / elapsed, client, served, described


def fake_server(work: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """`llava-bridge serve --backend fake` on a free port, its jobs in `work`; read its URL with _server_url."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llava_bridge.cli",
            "serve",
            "--backend",
            "fake",
            "--port",
            "0",
            "--db",
            f"{work}/jobs.db",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _server_url(server: subprocess.Popen[str]) -> str:
    assert server.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        match = _READY.search(line)
        if match:
            return match.group(1)
        if not line and server.poll() is not None:
            break
    raise RuntimeError("the server did not start")


def describe_throughput(old_tree: Path | None, count: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory(prefix="image-prep-photos-") as folder:
        write_photos(Path(folder), count)
        rows = []
        trees = [("ours", ROOT)] + ([(f"old ({OLD_COMMIT})", old_tree)] if old_tree else [])
        rates = {}
        for label, tree in trees:
            rate, client, served, described = describe_rate(tree, Path(folder), concurrency)
            rates[label] = rate
            rows.append([label, described, rate, client, served])
    if old_tree:
        ratio = rates["ours"] / rates[f"old ({OLD_COMMIT})"]
        rows = [[*row, f"{rates[row[0]] / rates[f'old ({OLD_COMMIT})']:.1f}x"] for row in rows]
        print(f"\nours / old: {ratio:.1f}x images/s")
    table(
        f"describe {count} distinct 12 MP JPEGs via serve --backend fake, --concurrency {concurrency}",
        [
            "code",
            "described",
            "images/s",
            "client CPU ms/image",
            "server CPU ms/image",
            *(["vs old"] if old_tree else []),
        ],
        rows,
    )


def old_tree_path(path: Path, skip: bool) -> Path | None:
    if skip:
        return None
    if not (path / "src" / "llava_bridge").is_dir():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), OLD_COMMIT], check=True
        )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="photos for describe (default 200)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--old-tree", type=Path, default=Path("/tmp/work/old_tree"))
    parser.add_argument("--skip-old", action="store_true", help="no comparison with the old tree")
    parser.add_argument("--skip-describe", action="store_true")
    parser.add_argument("--skip-loop", action="store_true", help="no event-loop gap measurement")
    args = parser.parse_args()
    old_tree = old_tree_path(args.old_tree, args.skip_old)
    print(f"Python {sys.version.split()[0]}, Pillow {Image.__version__}, {os.cpu_count()} CPUs")  # type: ignore[attr-defined]
    prepare_cpu(old_tree)
    metadata_cpu(old_tree)
    if not args.skip_loop:
        loop_gaps(old_tree)
    if not args.skip_describe:
        describe_throughput(old_tree, args.count, args.concurrency)


if __name__ == "__main__":
    main()
