"""`llava-bridge serve` with a zero-latency fake backend: what the queue adds, side by side.

For each server tree (this checkout, and with `--old-src` another one, e.g. a worktree of
an older commit) a real `python -m llava_bridge.server --backend fake` process is started
on 127.0.0.1 with an SQLite job database in a temporary folder. Measured, with a small
PNG sent as a data URI:

1. per-job p50 latency, one job at a time: the backend called in this process; `/run`;
   the queue (submit, status stream until COMPLETED, result: fal's clients' three
   exchanges); and `/v1/chat/completions` when the server has that route;
2. jobs/s and p50 at concurrency C (default 64) for the same routes.

The client is a small keep-alive HTTP/1.1 client on h11 (one connection per concurrent
job), so the client's own cost stays small next to the server's. Also printed: the
server's CPU per job and the machine's load average (other work on the machine slows
every column alike; compare the ratios).

Usage: python bench/serve_throughput.py [--old-src /tmp/old/src] [--sequential 200]
[--requests 1000] [--concurrency 64] [--server-concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]

import h11  # noqa: E402
from PIL import Image  # noqa: E402

from llava_bridge.backends.fake import FakeBackend  # noqa: E402
from llava_bridge.images import ImageInput  # noqa: E402
from llava_bridge.types import VisionRequest  # noqa: E402

APP = "fal-ai/llava-llama3-8b-v11"
READY = re.compile(r"^llava-bridge serving on http://([^:]+):(\d+)$")


def small_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


DATA_URI = small_png()
FAL_BODY = json.dumps({"image_url": DATA_URI, "prompt": "What is this?", "max_new_tokens": 16}).encode()
CHAT_BODY = json.dumps(
    {
        "model": APP,
        "max_tokens": 16,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": DATA_URI}},
                ],
            }
        ],
    }
).encode()


class Connection:
    """One kept-alive HTTP/1.1 connection; `request` returns (status, body)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.conn = h11.Connection(h11.CLIENT)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None or self.conn.our_state is not h11.IDLE:
            await self._reconnect()
        assert self.reader is not None and self.writer is not None
        headers = [("Host", f"{self.host}:{self.port}")]
        if body:
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        elif method != "GET":
            headers.append(("Content-Length", "0"))
        data = self.conn.send(h11.Request(method=method, target=path, headers=headers))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        self.writer.write(data)
        status, chunks = 0, []
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection")
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return status, b"".join(chunks)

    async def _reconnect(self) -> None:
        await self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.conn = h11.Connection(h11.CLIENT)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def run_job(conn: Connection) -> None:
    status, body = await conn.request("POST", f"/run/{APP}", FAL_BODY)
    assert status == 200, (status, body[:200])


async def queue_job(conn: Connection) -> None:
    status, body = await conn.request("POST", f"/{APP}", FAL_BODY)
    assert status == 200, (status, body[:200])
    request_id = json.loads(body)["request_id"]
    status, body = await conn.request("GET", f"/{APP}/requests/{request_id}/status/stream")
    assert status == 200 and b'"COMPLETED"' in body, (status, body[-200:])
    status, body = await conn.request("GET", f"/{APP}/requests/{request_id}")
    assert status == 200, (status, body[:200])


async def chat_job(conn: Connection) -> None:
    status, body = await conn.request("POST", "/v1/chat/completions", CHAT_BODY)
    assert status == 200, (status, body[:200])


BACKEND = FakeBackend()
REQUEST = VisionRequest(prompt="What is this?", image=ImageInput.from_data_uri(DATA_URI), max_new_tokens=16)


async def in_process_job(conn: Connection) -> None:
    await BACKEND.agenerate(REQUEST)


Job = Callable[[Connection], Awaitable[None]]


async def sequential(host: str, port: int, job: Job, n: int) -> float:
    """p50 ms of `n` jobs one at a time on one connection (after 10 warm-up jobs)."""
    conn = Connection(host, port)
    times = []
    for index in range(n + 10):
        started = time.perf_counter()
        await job(conn)
        if index >= 10:
            times.append(time.perf_counter() - started)
    await conn.close()
    return statistics.median(times) * 1e3


async def concurrent(host: str, port: int, job: Job, n: int, concurrency: int) -> tuple[float, float]:
    """(jobs/s, p50 ms) of `n` jobs with `concurrency` at once, one connection each."""
    pending = iter(range(n))
    times: list[float] = []

    async def worker() -> None:
        conn = Connection(host, port)
        for _ in pending:
            started = time.perf_counter()
            await job(conn)
            times.append(time.perf_counter() - started)
        await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return n / wall, statistics.median(times) * 1e3


@dataclass
class Server:
    process: subprocess.Popen[str]
    host: str
    port: int
    folder: tempfile.TemporaryDirectory[str]
    lines: list[str] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.folder.cleanup()


def start_server(src: Path, server_concurrency: int) -> Server:
    folder = tempfile.TemporaryDirectory(prefix="serve-bench-")
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}
    env.pop("LLAVA_BRIDGE_SERVER_KEY", None)
    command = [
        sys.executable,
        "-m",
        "llava_bridge.server",
        "--backend",
        "fake",
        "--port",
        "0",
        "--db",
        os.environ.get("BENCH_DB", f"{folder.name}/jobs.db"),
        "--concurrency",
        str(server_concurrency),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=folder.name
    )
    assert process.stdout is not None
    found: list[tuple[str, int]] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            match = READY.match(line.strip())
            if match and not found:
                found.append((match.group(1), int(match.group(2))))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(60)
    if not found:
        process.kill()
        raise SystemExit(f"the server from {src} did not start")
    return Server(process, found[0][0], found[0][1], folder)


async def has_chat_route(server: Server) -> bool:
    conn = Connection(server.host, server.port)
    try:
        status, _ = await conn.request("GET", "/v1/models")
    finally:
        await conn.close()
    return status == 200


@dataclass
class Measures:
    label: str
    values: dict[str, float] = field(default_factory=dict)


async def measure_tree(label: str, src: Path, args: argparse.Namespace) -> Measures:
    server = start_server(src, args.server_concurrency)
    measures = Measures(label)
    try:
        routes: list[tuple[str, Job]] = [("run", run_job), ("queue", queue_job)]
        if await has_chat_route(server):
            routes.append(("chat", chat_job))
        for name, job in routes:
            measures.values[f"{name} p50 ms (1 at a time)"] = await sequential(
                server.host, server.port, job, args.sequential
            )
        for name, job in routes:
            cpu = server.cpu_seconds()
            rate, p50 = await concurrent(server.host, server.port, job, args.requests, args.concurrency)
            measures.values[f"{name} jobs/s (c={args.concurrency})"] = rate
            measures.values[f"{name} p50 ms (c={args.concurrency})"] = p50
            measures.values[f"{name} server CPU ms/job"] = (server.cpu_seconds() - cpu) / args.requests * 1e3
    finally:
        server.stop()
    return measures


def print_table(columns: list[Measures], in_process: dict[str, float]) -> None:
    keys: list[str] = list(in_process)
    for column in columns:
        keys += [key for key in column.values if key not in keys]
    labels = [column.label for column in columns]
    header = ["measure", *labels] + (["now / today"] if len(columns) == 2 else [])
    rows = []
    for key in keys:
        cells = []
        for column in columns:
            value = in_process.get(key, column.values.get(key))
            cells.append("-" if value is None else f"{value:,.2f}")
        ratio = ""
        if len(columns) == 2 and key not in in_process:
            old, new = columns[1].values.get(key), columns[0].values.get(key)
            ratio = f"{new / old:.2f}x" if old and new else "-"
        rows.append([key, *cells] + ([ratio] if len(columns) == 2 else []))
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print("| " + " | ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old-src", type=Path, default=None, help="another tree's src/, printed beside")
    parser.add_argument("--old-label", default="today", help="that column's title")
    parser.add_argument("--sequential", type=int, default=200, help="jobs one at a time per route")
    parser.add_argument("--requests", type=int, default=1000, help="jobs per concurrent run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--server-concurrency", type=int, default=8, help="the server's --concurrency")
    args = parser.parse_args()

    load_before = os.getloadavg()
    in_process = {
        "in-process backend p50 ms": await sequential("", 0, in_process_job, args.sequential),
    }
    rate, _ = await concurrent("", 0, in_process_job, args.requests, args.concurrency)
    in_process[f"in-process backend jobs/s (c={args.concurrency})"] = rate
    columns = [await measure_tree("now", ROOT / "src", args)]
    if args.old_src is not None:
        columns.append(await measure_tree(args.old_label, args.old_src, args))
    load_after = os.getloadavg()
    print(
        f"{os.cpu_count()} CPUs; load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"(1 min); {args.sequential} sequential jobs, {args.requests} at c={args.concurrency}; "
        f"server --concurrency {args.server_concurrency}, --db {os.environ.get('BENCH_DB', 'SQLite file')}"
    )
    print_table(columns, in_process)


if __name__ == "__main__":
    asyncio.run(main())
