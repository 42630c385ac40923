"""`--backend local` with a tiny random-weight LLaVA: concurrent jobs are batched, progress is logged."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import APP, wait_completed
from tests.support.local_server import running_server

pytestmark = pytest.mark.slow


def _colour_uri(index: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), ((index * 53) % 256, 100, 200)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_local_backend_batches_concurrent_jobs_and_logs_its_progress(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llava_bridge.testing import build_tiny_llava

    model_dir = build_tiny_llava(tmp_path / "tiny-llava")
    with (
        running_server(
            "--backend", "local", "--model", str(model_dir), "--concurrency", "4", timeout=120
        ) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        jobs = [
            http.post(
                f"/{APP}", json={"image_url": _colour_uri(n), "prompt": f"w{n} w3", "max_new_tokens": 6}
            ).json()
            for n in range(4)
        ]
        statuses = [wait_completed(http, job["status_url"], timeout=90) for job in jobs]
        results = [http.get(job["response_url"]) for job in jobs]
    assert all(result.status_code == 200 for result in results)
    assert all(result.json()["usage"]["completion_tokens"] <= 6 for result in results)
    logs = [[line["message"] for line in status["logs"]] for status in statuses]
    # The model is loaded before the server announces itself (tests/server/test_serve_startup.py),
    # so no job's logs carry the "Loaded ..." line any more.
    assert all(any(message.startswith("Batch of ") for message in job_logs) for job_logs in logs)
    assert all("tokens/s" in job_logs[-1] for job_logs in logs)
    assert any("in a batch of" in job_logs[-1] for job_logs in logs)
