"""Soak test: FalBackend -> fault proxy -> `llava-bridge serve --backend fake`, counting what is lost.

    python bench/soak.py                                 # 2,000 requests at concurrency 64
    python bench/soak.py --requests 500 --concurrency 32 --max-seconds 120

Three scenarios, each against a real server process on 127.0.0.1 (its SQLite job
database is read afterwards to count what the server really ran):

1. Faults: 10% of HTTP calls get one of the proxy's seven faults (`bench/fault_proxy.py`).
   Every request ends completed, failed with a typed `LlavaError` (by class), or lost
   (anything else: an untyped exception, a wrong answer, or no answer within
   `--request-cap` seconds). Each request's prompt carries a unique tag, so the jobs
   the server ran for it can be counted: a tag with two jobs is a duplicate submit.
2. SIGKILL: the server is killed with `kill -9` mid-run and restarted on the same
   database and port; clients resume their accepted jobs by request id. Every submit
   that was answered must end with its result.
3. Deadlines: jobs whose `timeout=` is shorter than the fake latency; every one the
   client abandons must be cancelled on the server.

Every phase is bounded in time (`--max-seconds` for the whole run); what finished is
reported. Nothing is asserted here; `tests/reliability` runs the same core with tiny counts.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fault_proxy import FAULTS, FaultProxy  # noqa: E402
from tests.support.local_server import LocalServer, running_server  # noqa: E402

from llava_bridge import FalBackend, ImageInput, LlavaError, VisionRequest  # noqa: E402
from llava_bridge.errors import AmbiguousSubmitError, DeadlineExceededError  # noqa: E402

__all__ = [
    "DeadlineReport",
    "FaultReport",
    "KillReport",
    "deadline_soak",
    "fault_soak",
    "kill_soak",
    "main",
]

FAKE_ANSWER = "This is a fake answer from FakeBackend."
REQUEST_CAP = 90.0
"""Seconds one request may take before it counts as hung (lost)."""


def _image() -> ImageInput:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (40, 120, 200)).save(buffer, format="PNG")
    return ImageInput.from_bytes(buffer.getvalue())


def _request(image: ImageInput, tag: str) -> VisionRequest:
    return VisionRequest(prompt=f"[{tag}] What is in this image?", image=image, max_new_tokens=32)


def _tag_of(prompt: str) -> str | None:
    return prompt[1 : prompt.index("]")] if prompt.startswith("[") and "]" in prompt else None


# -- what the server ran, from its database -------------------------------------------------


@dataclass(frozen=True)
class ServerJob:
    id: str
    tag: str | None
    state: str
    attempts: int
    result_status: int | None
    error_type: str | None
    executions: int
    """Times the job was handed to the backend ("Started on" log lines)."""


def server_jobs(db_path: str) -> list[ServerJob]:
    """Every job in the server's database, with its tag and how many times it ran."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as conn:
        started = dict(
            conn.execute(
                "SELECT job_id, COUNT(*) FROM job_logs WHERE message LIKE 'Started on %' GROUP BY job_id"
            ).fetchall()
        )
        rows = conn.execute(
            "SELECT id, input, state, attempts, result_status, error_type FROM jobs"
        ).fetchall()
    jobs = []
    for job_id, raw, state, attempts, status, error_type in rows:
        prompt = json.loads(raw).get("prompt", "")
        jobs.append(
            ServerJob(job_id, _tag_of(prompt), state, attempts, status, error_type, started.get(job_id, 0))
        )
    return jobs


def _by_tag(jobs: Sequence[ServerJob]) -> dict[str, list[ServerJob]]:
    grouped: dict[str, list[ServerJob]] = {}
    for job in jobs:
        if job.tag is not None:
            grouped.setdefault(job.tag, []).append(job)
    return grouped


async def _run_bounded(
    jobs: Sequence[Callable[[], Awaitable[Any]]], concurrency: int, wall_s: float
) -> tuple[list[Any], int, int]:
    """Run `jobs` at most `concurrency` at a time within `wall_s`; (results, cut off, never started)."""
    gate = asyncio.Semaphore(concurrency)
    stop_at = time.monotonic() + wall_s
    started = 0

    async def guarded(job: Callable[[], Awaitable[Any]]) -> Any:
        nonlocal started
        async with gate:
            if time.monotonic() >= stop_at:
                return None
            started += 1
            return await job()

    tasks = [asyncio.ensure_future(guarded(job)) for job in jobs]
    done, pending = await asyncio.wait(tasks, timeout=max(stop_at - time.monotonic(), 0.1))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    results = [task.result() for task in tasks if task in done and task.result() is not None]
    return results, len(pending), len(jobs) - started


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


# -- 1. faults --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    tag: str
    kind: str
    """"completed", "failed" (a typed LlavaError) or "lost"."""
    detail: str = ""
    """The error class for "failed"; what went wrong for "lost"."""
    latency: float = 0.0


@dataclass
class FaultReport:
    requests: int
    concurrency: int
    outcomes: list[Outcome]
    cut_off: int
    not_started: int
    wall_s: float
    faults: Counter[tuple[str, str]]
    jobs: list[ServerJob]

    @property
    def completed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == "completed"]

    @property
    def failed(self) -> Counter[str]:
        return Counter(o.detail for o in self.outcomes if o.kind == "failed")

    @property
    def lost(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == "lost"]

    @property
    def duplicated_tags(self) -> list[str]:
        """Requests for which the server queued more than one job (a submit sent twice)."""
        return [tag for tag, jobs in _by_tag(self.jobs).items() if len(jobs) > 1]

    @property
    def jobs_run_twice(self) -> list[ServerJob]:
        """Jobs the backend was handed more than once."""
        return [job for job in self.jobs if job.executions > 1]

    @property
    def ambiguous_that_ran(self) -> int:
        """AmbiguousSubmitError raised, yet the server had queued (and ran) the job."""
        tags = _by_tag(self.jobs)
        return sum(1 for o in self.outcomes if o.detail == AmbiguousSubmitError.__name__ and o.tag in tags)

    @property
    def completed_without_one_job(self) -> int:
        """Completed requests whose tag does not have exactly one completed 200 job (should be 0)."""
        tags = _by_tag(self.jobs)
        return sum(
            1
            for o in self.completed
            if [(j.state, j.result_status) for j in tags.get(o.tag, [])] != [("COMPLETED", 200)]
        )

    @property
    def unfinished_jobs(self) -> int:
        return sum(1 for job in self.jobs if job.state != "COMPLETED")


async def _one(backend: FalBackend, image: ImageInput, tag: str, cap: float) -> Outcome:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(backend.agenerate(_request(image, tag)), cap)
    except LlavaError as exc:
        return Outcome(tag, "failed", type(exc).__name__)
    except TimeoutError:
        return Outcome(tag, "lost", f"no answer within {cap:g} s")
    except Exception as exc:  # anything untyped is a bug: counted as lost
        return Outcome(tag, "lost", f"{type(exc).__name__}: {exc}")
    if result.text != FAKE_ANSWER:
        return Outcome(tag, "lost", f"wrong answer {result.text[:60]!r}")
    return Outcome(tag, "completed", latency=time.perf_counter() - started)


async def _wait_drained(db_path: str, wall_s: float) -> list[ServerJob]:
    """The server's jobs once none is queued or running (or when `wall_s` runs out)."""
    stop_at = time.monotonic() + wall_s
    while True:
        jobs = server_jobs(db_path)
        if all(job.state == "COMPLETED" for job in jobs) or time.monotonic() > stop_at:
            return jobs
        await asyncio.sleep(0.2)


def fault_soak(
    requests: int = 2000,
    concurrency: int = 64,
    *,
    fault_rate: float = 0.1,
    faults: Sequence[str] = FAULTS,
    fake_latency: float = 0.05,
    wall_s: float = 420.0,
    request_cap: float = REQUEST_CAP,
    seed: int = 0,
) -> FaultReport:
    """Scenario 1: `requests` calls through the fault proxy; see the module docstring."""
    with tempfile.TemporaryDirectory(prefix="llava-soak-") as folder:
        db_path = os.path.join(folder, "jobs.db")
        with running_server(*_server_args(fake_latency, concurrency), db_path=db_path) as server:
            with FaultProxy(server.port, fault_rate=fault_rate, faults=faults, seed=seed) as proxy:
                started = time.monotonic()
                outcomes, cut_off, not_started = asyncio.run(
                    _fault_clients(proxy.url, requests, concurrency, wall_s, request_cap)
                )
                elapsed = time.monotonic() - started
            jobs = asyncio.run(_wait_drained(db_path, 30))
        return FaultReport(requests, concurrency, outcomes, cut_off, not_started, elapsed, proxy.counts, jobs)


async def _fault_clients(
    url: str, requests: int, concurrency: int, wall_s: float, cap: float
) -> tuple[list[Outcome], int, int]:
    image = _image()
    run = uuid.uuid4().hex[:6]
    async with FalBackend(base_url=url) as backend:
        jobs = [
            lambda i=i: _one(backend, image, f"{run}-{i:05d}", cap)  # type: ignore[misc]
            for i in range(requests)
        ]
        return await _run_bounded(jobs, concurrency, wall_s)


def _server_args(fake_latency: float, concurrency: int) -> tuple[str, ...]:
    return (
        "--backend",
        "fake",
        "--fake-latency",
        f"{fake_latency:g}",
        "--concurrency",
        str(concurrency),
        "--log-level",
        "warning",
    )


# -- 2. SIGKILL and restart -------------------------------------------------------------------


@dataclass
class KillReport:
    requests: int
    accepted: set[str]
    """Request ids whose submit was answered."""
    completed: set[str]
    """Request ids whose result the client got."""
    submit_failures: Counter[str]
    resumed: int
    """Results that took more than one `handle.result()` (the client resumed by request id)."""
    lost: list[str]
    restart_s: float
    jobs: list[ServerJob]
    cut_off: int

    @property
    def accepted_not_completed(self) -> set[str]:
        return self.accepted - self.completed

    @property
    def rerun_after_crash(self) -> int:
        return sum(1 for job in self.jobs if job.executions > 1)


async def _kill_client(
    backend: FalBackend, image: ImageInput, tag: str, report: KillReport, resume_until: float
) -> None:
    try:
        handle = await backend.asubmit(_request(image, tag))
    except LlavaError as exc:
        report.submit_failures[type(exc).__name__] += 1
        return
    except Exception as exc:
        report.lost.append(f"submit {tag}: {type(exc).__name__}: {exc}")
        return
    report.accepted.add(handle.request_id)
    tries = 0
    while time.monotonic() < resume_until:
        tries += 1
        try:
            result = await handle.result()
        except LlavaError:
            await asyncio.sleep(0.5)  # the server is down: resume from the request id
            continue
        except Exception as exc:
            report.lost.append(f"result {tag}: {type(exc).__name__}: {exc}")
            return
        if result.text == FAKE_ANSWER:
            report.completed.add(handle.request_id)
            report.resumed += tries > 1
        else:
            report.lost.append(f"result {tag}: wrong answer {result.text[:60]!r}")
        return


def kill_soak(
    requests: int = 400,
    concurrency: int = 32,
    *,
    fake_latency: float = 0.2,
    kill_after: float = 0.3,
    down_s: float = 5.0,
    wall_s: float = 120.0,
) -> KillReport:
    """Scenario 2: kill -9 the server once `kill_after` of the requests were accepted, then restart it."""
    report = KillReport(requests, set(), set(), Counter(), 0, [], 0.0, [], 0)
    with tempfile.TemporaryDirectory(prefix="llava-soak-") as folder:
        db_path = os.path.join(folder, "jobs.db")
        server_concurrency = max(4, concurrency // 4)  # keep a queue, so jobs wait when the kill comes
        with running_server(*_server_args(fake_latency, server_concurrency), db_path=db_path) as server:
            with FaultProxy(server.port, fault_rate=0.0) as proxy:  # the proxy only stands in for ingress
                asyncio.run(_kill_run(proxy.url, server, report, kill_after, down_s, concurrency, wall_s))
            report.jobs = asyncio.run(_wait_drained(db_path, 30))
    return report


async def _kill_run(
    url: str,
    server: LocalServer,
    report: KillReport,
    kill_after: float,
    down_s: float,
    concurrency: int,
    wall_s: float,
) -> None:
    image = _image()
    run = uuid.uuid4().hex[:6]
    resume_until = time.monotonic() + wall_s

    async def killer() -> None:
        target = max(1, int(report.requests * kill_after))
        while len(report.accepted) < target and time.monotonic() < resume_until:
            await asyncio.sleep(0.01)
        server.kill()
        await asyncio.sleep(down_s)
        started = time.monotonic()
        await asyncio.to_thread(server.restart)  # same database, same port
        report.restart_s = time.monotonic() - started

    async with FalBackend(base_url=url) as backend:
        jobs = [
            lambda i=i: _kill_client(backend, image, f"{run}-{i:05d}", report, resume_until)  # type: ignore[misc]
            for i in range(report.requests)
        ]
        kill_task = asyncio.create_task(killer())
        _, report.cut_off, _ = await _run_bounded(jobs, concurrency, wall_s)
        await kill_task


# -- 3. client deadlines ----------------------------------------------------------------------


@dataclass
class DeadlineReport:
    requests: int
    timeout: float
    fake_latency: float
    fault_rate: float
    errors: Counter[str]
    """What the clients raised, by class."""
    abandoned: set[str]
    """Request ids of DeadlineExceededErrors that carried one (the job had been queued)."""
    jobs: list[ServerJob]

    @property
    def timeouts(self) -> int:
        return self.errors[DeadlineExceededError.__name__]

    @property
    def abandoned_cancelled(self) -> int:
        """Abandoned jobs (known request id) that the server cancelled."""
        return sum(
            1 for job in self.jobs if job.id in self.abandoned and job.error_type == "client_cancelled"
        )

    @property
    def abandoned_ran(self) -> int:
        """Abandoned jobs (known request id) the server ran to the end anyway: should be 0."""
        return sum(1 for job in self.jobs if job.id in self.abandoned and job.result_status == 200)

    @property
    def unknown_ran(self) -> int:
        """Jobs the server ran to the end whose request id the client never learnt (ambiguous submits)."""
        return sum(1 for job in self.jobs if job.id not in self.abandoned and job.result_status == 200)


def deadline_soak(
    requests: int = 100,
    concurrency: int = 32,
    *,
    timeout: float = 0.5,
    fake_latency: float = 3.0,
    fault_rate: float = 0.0,
    wall_s: float = 60.0,
) -> DeadlineReport:
    """Scenario 3: every call has `timeout` < `fake_latency`; count the server's cancels."""
    report = DeadlineReport(requests, timeout, fake_latency, fault_rate, Counter(), set(), [])
    with tempfile.TemporaryDirectory(prefix="llava-soak-") as folder:
        db_path = os.path.join(folder, "jobs.db")
        with running_server(*_server_args(fake_latency, max(4, concurrency // 2)), db_path=db_path) as server:
            # the proxy's faults but no stall: a stall longer than the deadline would hide the cancel
            faults = [f for f in FAULTS if f != "stall"]
            with FaultProxy(server.port, fault_rate=fault_rate, faults=faults) as proxy:
                asyncio.run(_deadline_run(proxy.url, report, concurrency, wall_s))
            report.jobs = asyncio.run(_wait_drained(db_path, fake_latency + 15))
    return report


async def _deadline_run(url: str, report: DeadlineReport, concurrency: int, wall_s: float) -> None:
    image = _image()
    run = uuid.uuid4().hex[:6]

    async def one(tag: str) -> None:
        try:
            await backend.agenerate(_request(image, tag))
        except DeadlineExceededError as exc:
            report.errors[type(exc).__name__] += 1
            if exc.request_id is not None:
                report.abandoned.add(exc.request_id)
        except LlavaError as exc:
            report.errors[type(exc).__name__] += 1
        except Exception as exc:
            report.errors[f"untyped {type(exc).__name__}"] += 1
        else:
            report.errors["answered (no timeout)"] += 1

    async with FalBackend(base_url=url, timeout=report.timeout) as backend:
        jobs = [lambda i=i: one(f"{run}-{i:05d}") for i in range(report.requests)]  # type: ignore[misc]
        await _run_bounded(jobs, concurrency, wall_s)


# -- tables -----------------------------------------------------------------------------------


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table under a title."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [f"\n{title}\n"]
    for index, row in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def fault_table(report: FaultReport) -> str:
    latencies = sorted(o.latency for o in report.completed)
    failed = ", ".join(f"{name} {count}" for name, count in report.failed.most_common()) or "-"
    lost = len(report.lost) + report.cut_off
    rows = [
        ("requests (concurrency)", f"{report.requests:,} ({report.concurrency})"),
        ("HTTP calls / faults injected", f"{sum(report.faults.values()):,} / {_faulted(report.faults):,}"),
        ("completed", f"{len(report.completed):,}"),
        ("failed with a typed error", f"{sum(report.failed.values()):,} ({failed})"),
        ("lost (untyped, wrong or hung)", f"{lost:,}"),
        ("not started (wall-clock cap)", f"{report.not_started:,}"),
        ("requests the server queued twice", f"{len(report.duplicated_tags):,}"),
        ("jobs the server ran twice", f"{len(report.jobs_run_twice):,}"),
        ("AmbiguousSubmitError whose job ran", f"{report.ambiguous_that_ran:,}"),
        ("completed without exactly one job", f"{report.completed_without_one_job:,}"),
        (
            "latency p50 / p99 (completed)",
            f"{_percentile(latencies, 50):.3f} s / {_percentile(latencies, 99):.3f} s",
        ),
        ("wall time", f"{report.wall_s:.1f} s ({len(report.outcomes) / report.wall_s:.1f} requests/s)"),
    ]
    text = table("Faults: 10% of HTTP calls through the proxy get one of seven faults", ("", "value"), rows)
    by_fault = Counter[str]()
    for (_, fault), count in report.faults.items():
        if fault != "ok":
            by_fault[fault] += count
    text += "\n" + table(
        "Faults injected, by kind", ("fault", "calls"), [(f, f"{by_fault[f]:,}") for f in FAULTS]
    )
    if report.lost:
        text += "\n\nLost: " + "; ".join(sorted({o.detail for o in report.lost})[:10])
    return text


def _faulted(counts: Counter[tuple[str, str]]) -> int:
    return sum(n for (_, fault), n in counts.items() if fault != "ok")


def kill_table(report: KillReport) -> str:
    failures = ", ".join(f"{k} {v}" for k, v in report.submit_failures.most_common()) or "-"
    rows = [
        ("requests", f"{report.requests:,}"),
        ("submits answered (accepted)", f"{len(report.accepted):,}"),
        ("submits failed with a typed error", f"{sum(report.submit_failures.values()):,} ({failures})"),
        ("accepted and completed", f"{len(report.completed & report.accepted):,}"),
        ("accepted jobs lost", f"{len(report.accepted_not_completed):,}"),
        ("results fetched after resuming", f"{report.resumed:,}"),
        ("jobs re-run after the crash", f"{report.rerun_after_crash:,}"),
        ("untyped errors", f"{len(report.lost):,}"),
        ("restart time", f"{report.restart_s:.2f} s"),
    ]
    return table("SIGKILL mid-run, restart on the same database and port", ("", "value"), rows)


def deadline_table(reports: Sequence[DeadlineReport]) -> str:
    rows = [
        (
            f"{r.fault_rate:.0%}",
            f"{r.timeout:g} s / {r.fake_latency:g} s",
            f"{r.requests:,}",
            f"{r.timeouts:,}",
            f"{len(r.abandoned):,}",
            f"{r.abandoned_cancelled:,}",
            f"{r.abandoned_ran:,}",
            f"{r.unknown_ran:,}",
            ", ".join(f"{k} {v}" for k, v in r.errors.items() if k != DeadlineExceededError.__name__) or "-",
        )
        for r in reports
    ]
    header = (
        "faults",
        "timeout / latency",
        "requests",
        "DeadlineExceeded",
        "with request id",
        "of those cancelled",
        "of those run anyway",
        "run, id unknown",
        "other errors",
    )
    return table("Client deadlines: abandoned jobs are cancelled", header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--fake-latency", type=float, default=0.05)
    parser.add_argument("--max-seconds", type=float, default=480.0, help="wall-clock cap for the whole run")
    parser.add_argument(
        "--request-cap", type=float, default=REQUEST_CAP, help="seconds before a call is 'hung'"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", action="append", default=[], choices=("faults", "kill", "deadlines"))
    args = parser.parse_args(argv)
    stop_at = time.monotonic() + args.max_seconds
    left = lambda share: max(10.0, min(share, stop_at - time.monotonic()))  # noqa: E731
    print(f"llava-bridge soak: {os.cpu_count()} CPUs, fake latency {args.fake_latency:g} s", flush=True)
    if "faults" not in args.skip:
        report = fault_soak(
            args.requests,
            args.concurrency,
            fault_rate=args.fault_rate,
            fake_latency=args.fake_latency,
            wall_s=left(args.max_seconds - 150),
            request_cap=args.request_cap,
            seed=args.seed,
        )
        print(fault_table(report), flush=True)
    if "kill" not in args.skip:
        print(kill_table(kill_soak(1000, 64, wall_s=left(90))), flush=True)
    if "deadlines" not in args.skip:
        reports = [
            deadline_soak(200, 64, wall_s=left(40)),
            deadline_soak(200, 64, fault_rate=args.fault_rate, wall_s=left(40)),
        ]
        print(deadline_table(reports), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
