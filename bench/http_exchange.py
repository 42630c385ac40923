"""One HTTP exchange on a warm loopback connection: FalBackend's own pools against httpx.

The fal test server (its own process) answers a status GET of a finished job; each client
sends the same request N times on one kept-alive connection. Printed per exchange: wall
time and this process's CPU time (user + system, so the kernel's share of loopback counts).

Usage: python bench/http_exchange.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "bench")]

import httpx  # noqa: E402
from fal_overhead import start_server  # noqa: E402

from llava_bridge.backends._transport.async_pool import AsyncPool  # noqa: E402
from llava_bridge.backends._transport.effects import HttpRequest  # noqa: E402
from llava_bridge.backends._transport.sync_pool import SyncPool  # noqa: E402

HEADERS = {"Authorization": "Key bench-key"}


def measure(call: Callable[[], Any], n: int) -> tuple[float, float]:
    call()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        call()
    return (time.perf_counter() - wall) / n * 1e3, (time.process_time() - cpu) / n * 1e3


async def ameasure(call: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float]:
    await call()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await call()
    return (time.perf_counter() - wall) / n * 1e3, (time.process_time() - cpu) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    n = parser.parse_args().requests
    process, url = start_server(0.0)
    try:
        with httpx.Client() as client:
            job = client.post(f"{url}/fal-ai/llava-llama3-8b-v11", json={"prompt": "hi"}).json()
            time.sleep(0.1)  # finished
            status_url = f"{url}/fal-ai/llava-llama3-8b-v11/requests/{job['request_id']}/status"
            request = HttpRequest("GET", status_url, headers=HEADERS)
            pool = SyncPool()
            rows = {
                "httpx.Client": measure(lambda: client.get(status_url, headers=HEADERS).json(), n),
                "our SyncPool": measure(lambda: pool.send(request).json(), n),  # type: ignore[union-attr]
            }
            pool.close()

        async def async_rows() -> None:
            async with httpx.AsyncClient() as aclient:
                apool = AsyncPool()

                async def ours() -> Any:
                    return (await apool.send(request)).json()  # type: ignore[union-attr]

                async def theirs() -> Any:
                    return (await aclient.get(status_url, headers=HEADERS)).json()

                rows["httpx.AsyncClient"] = await ameasure(theirs, n)
                rows["our AsyncPool"] = await ameasure(ours, n)
                await apool.aclose()

        asyncio.run(async_rows())
    finally:
        process.terminate()
        process.wait(10)
    print(f"\nOne status GET on a warm loopback connection, {n} in a row\n")
    print("| client | wall per exchange (ms) | client CPU per exchange (ms) |")
    print("|---|---|---|")
    for name, (wall, cpu) in rows.items():
        print(f"| {name} | {wall:.3f} | {cpu:.3f} |")
    sync_ratio = rows["httpx.Client"][1] / rows["our SyncPool"][1]
    async_ratio = rows["httpx.AsyncClient"][1] / rows["our AsyncPool"][1]
    print(f"\nhttpx uses {sync_ratio:.1f}x our CPU sync, {async_ratio:.1f}x async")


if __name__ == "__main__":
    main()
