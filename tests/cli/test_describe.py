"""`llava-bridge describe`: sources, JSONL output, resume, failures, interruption."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from llava_bridge import FakeBackend, InvalidRequestError
from llava_bridge.cli.main import main
from llava_bridge.describe import describe_to_jsonl, expand_sources


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for index, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 200, 0)]):
        Image.new("RGB", (40, 30), colour).save(folder / f"img{index}.png")
    Image.new("RGB", (40, 30), (250, 250, 250)).save(folder / "nested" / "deep.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return folder


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_expand_sources(photos: Path, tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text("# a comment\nhttps://example.com/a.png\n\n" + str(photos / "img0.png") + "\n")
    found = expand_sources([str(photos), str(photos / "*.png"), str(listing)])
    assert found[0] == str(photos / "broken.png")
    assert str(photos / "nested" / "deep.jpg") in found
    assert "https://example.com/a.png" in found
    assert not any(s.endswith("notes.txt") for s in found)
    assert len(found) == len(set(found))
    with pytest.raises(InvalidRequestError, match="No images found"):
        expand_sources([str(tmp_path / "*.webp")])


def test_describe_writes_one_line_per_image_and_reports_failures(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "captions.jsonl"
    code = main(["describe", "--backend", "fake", str(photos), "--out", str(out), "--concurrency", "3"])
    assert code == 1  # broken.png failed
    records = read_jsonl(out)
    assert len(records) == 5
    assert set(records[0]) == {"source", "description", "model", "request_id", "error"}
    failed = [r for r in records if r["error"]]
    assert len(failed) == 1 and str(failed[0]["source"]).endswith("broken.png")
    assert "corrupt or truncated" in str(failed[0]["error"])
    err = capsys.readouterr().err
    assert "Described 4 image(s)" in err and "1 failed" in err and "broken.png" in err


def test_resume_skips_done_images_and_retries_failures(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "captions.jsonl"
    backend = FakeBackend.image_facts()
    sources = expand_sources([str(photos)])
    first = asyncio.run(describe_to_jsonl(backend, sources, out, progress=False))
    assert first.described == 4 and len(first.failures) == 1
    (photos / "broken.png").unlink()
    Image.new("RGB", (40, 30), (0, 0, 0)).save(photos / "broken.png")
    with out.open("a") as file:
        file.write('{"source": "half a line')  # what a crash mid-write would leave
    second = asyncio.run(describe_to_jsonl(backend, sources, out, resume=True, progress=False))
    assert second.skipped == 4 and second.described == 1 and second.ok
    records = read_jsonl(out)
    assert len(records) == 5 and all(r["error"] is None for r in records)
    assert len(backend.history) == 5  # the broken file never reached the backend


def test_existing_output_is_not_overwritten_by_accident(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "captions.jsonl"
    out.write_text('{"source": "x", "error": null}\n')
    assert main(["describe", "--backend", "fake", str(photos), "--out", str(out)]) == 2
    assert main(["describe", "--backend", "fake", str(photos), "--out", str(out), "--overwrite"]) == 1


def test_progress_bar_shows_rate_and_eta(photos: Path, tmp_path: Path) -> None:
    import io

    stream = io.StringIO()
    asyncio.run(
        describe_to_jsonl(
            FakeBackend(), [str(photos / "img0.png")] * 1, tmp_path / "o.jsonl", progress_stream=stream
        )
    )
    assert "1/1" in stream.getvalue() and "img/s" in stream.getvalue() and "ETA" in stream.getvalue()


# The child restores Python's SIGINT handler: a runner started in the background by a
# non-interactive shell (as CI may be) passes SIGINT down ignored, and asyncio.run then never sees it.
SCRIPT = """
import asyncio, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from llava_bridge import FakeBackend
from llava_bridge.describe import describe_to_jsonl
sources = [sys.argv[1]] * 1 + [f"https://example.com/{i}.png" for i in range(40)]
summary = asyncio.run(describe_to_jsonl(FakeBackend(latency=0.5), sources, Path(sys.argv[2]), concurrency=2,
                                        progress=False))
print("interrupted" if summary.interrupted else "finished", summary.described, flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_leaves_a_valid_file(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "captions.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(photos / "img0.png"), str(out)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=30)
    assert stdout.startswith("interrupted")
    records = read_jsonl(out)  # every line parses
    assert 3 <= len(records) < 41
    assert int(stdout.split()[1]) == len(records)
