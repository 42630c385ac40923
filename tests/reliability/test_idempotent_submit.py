"""A submit that breaks after it was sent is retried only where that cannot run the job twice.

`llava-bridge serve` adopts the request id FalBackend proposes (X-Llava-Request-Id) and
dedups a re-sent submit; once FalBackend has seen a queue host adopt one, it retries that
host's ambiguous submits. Elsewhere (fal, which ignores the header) it raises
AmbiguousSubmitError as before.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.fault_proxy import FaultProxy
from bench.soak import server_jobs

from llava_bridge import AmbiguousSubmitError, FalBackend, ImageInput, VisionRequest
from tests.reliability.conftest import png
from tests.support.local_server import running_server


def ask(backend: FalBackend, tag: str) -> str:
    image = ImageInput.from_bytes(png())
    return backend.generate(VisionRequest(prompt=f"[{tag}] What is it?", image=image)).text


def runs_of(db_path: str, tag: str) -> int:
    return sum(1 for job in server_jobs(db_path) if job.tag == tag)


@pytest.mark.parametrize("fault", ["reset_after", "truncated"])
def test_a_broken_submit_is_retried_once_the_server_is_known_to_dedup(fault: str, tmp_path: Path) -> None:
    db_path = str(tmp_path / "jobs.db")
    with running_server("--backend", "fake", db_path=db_path) as server:
        proxy = FaultProxy(server.port, fault_rate=0.0, faults=[fault], routes=["submit"])
        with proxy, FalBackend(base_url=proxy.url) as backend:
            ask(backend, "learn")  # the server adopts the proposed id: FalBackend learns it dedups
            proxy.fault_rate, proxy.max_faults = 1.0, 1
            assert ask(backend, "retried")
            assert proxy.faulted() == 1
    assert runs_of(db_path, "retried") == 1


def test_before_the_server_is_known_an_ambiguous_submit_is_not_re_sent(tmp_path: Path) -> None:
    db_path = str(tmp_path / "jobs.db")
    with running_server("--backend", "fake", db_path=db_path) as server:
        proxy = FaultProxy(server.port, fault_rate=1.0, faults=["reset_after"], routes=["submit"])
        proxy.max_faults = 1
        with (
            proxy,
            FalBackend(base_url=proxy.url) as backend,
            pytest.raises(AmbiguousSubmitError, match="may be queued"),
        ):
            ask(backend, "first")
    assert runs_of(db_path, "first") == 1
