"""One contract for every `JobStore`: the SQLite store and the in-memory one pass the same tests.

Step by step, no clock (every time is passed in), no sleeps. Durability across a
reopen is SQLite's alone. The last tests plug a store in by its `--db` scheme
and run a job through the server over real HTTP.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from llava_bridge.backends.fake import FakeBackend
from llava_bridge.errors import ConfigurationError
from llava_bridge.server.app import create_app
from llava_bridge.server.jobs import STORES, open_job_store
from llava_bridge.server.jobs.memory import MemoryJobStore
from llava_bridge.server.jobs.protocol import CANCELLED_BODY, CANCELLED_STATUS, Job, JobStore
from llava_bridge.server.jobs.sqlite import SQLiteJobStore
from llava_bridge.server.settings import ServerSettings
from tests.server.conftest import APP, serve_in_thread, wait_completed


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    opened: JobStore
    if request.param == "sqlite":
        opened = await SQLiteJobStore.open(str(tmp_path / "jobs.db"))
    else:
        opened = await MemoryJobStore.open("")
    try:
        yield opened
    finally:
        await opened.close()


async def _submit(
    store: JobStore, job_id: str, now: float = 1.0, **arguments: object
) -> tuple[bool, Job, int]:
    return await store.submit(
        job_id=job_id, app=APP, endpoint=APP, arguments=dict(arguments), image_file=None, now=now
    )


async def _run(store: JobStore, job_id: str, now: float) -> None:
    """Claim `job_id` (it must be the oldest queued) and complete it at `now`."""
    claimed = await store.claim(now=now)
    assert claimed is not None and claimed.id == job_id
    assert await store.complete(job_id, status=200, body={"output": job_id}, now=now)


# -- jobs ----------------------------------------------------------------------------------


async def test_submit_queues_in_order_and_a_resubmit_returns_the_first_job(store: JobStore) -> None:
    answers = [await _submit(store, name, now=n, prompt=name) for n, name in enumerate("abc")]
    assert [(created, job.state, position) for created, job, position in answers] == [
        (True, "IN_QUEUE", 0),
        (True, "IN_QUEUE", 1),
        (True, "IN_QUEUE", 2),
    ]
    created, job, position = await _submit(store, "b", now=9, prompt="other")
    assert not created and position == 1
    assert job.input == {"prompt": "b"} and job.created_at == 1  # the first submit's job, unchanged
    got = await store.get("c")
    assert got is not None and got.input == {"prompt": "c"} and got.attempts == 0
    assert await store.get("missing") is None


async def test_claim_takes_the_oldest_queued_job_once(store: JobStore) -> None:
    for name in "ab":
        await _submit(store, name)
    first = await store.claim(now=5)
    assert first is not None
    assert (first.id, first.state, first.attempts, first.started_at) == ("a", "IN_PROGRESS", 1, 5)
    b = await store.get("b")
    assert b is not None and await store.queue_position(b) == 0
    second = await store.claim(now=6)
    assert second is not None and second.id == "b"
    assert await store.claim(now=7) is None


async def test_a_completed_job_is_never_claimed_completed_or_cancelled_again(store: JobStore) -> None:
    await _submit(store, "a")
    assert not await store.complete("a", status=200, body={}, now=2)  # not running yet
    await _run(store, "a", now=3)
    assert not await store.complete("a", status=200, body={"output": "y"}, now=4)
    assert await store.requeue_interrupted(now=5) == 0
    assert await store.claim(now=6) is None
    assert await store.cancel("a", now=7) == "ALREADY_COMPLETED"
    job = await store.get("a")
    assert job is not None
    assert (job.state, job.result_status, job.result_body, job.completed_at) == (
        "COMPLETED",
        200,
        {"output": "a"},
        3,
    )


async def test_failures_of_the_request_show_in_the_status_refusals_do_not(store: JobStore) -> None:
    for name in ("crashed", "refused"):
        await _submit(store, name)
    await store.claim(now=2)
    await store.claim(now=2)
    crash = {"detail": "The model crashed.", "error_type": "runner_server_error"}
    refusal = {"detail": [{"loc": ["body", "prompt"], "msg": "too long"}]}
    assert await store.complete("crashed", status=500, body=crash, now=3, inference_time=None)
    assert await store.complete("refused", status=422, body=refusal, now=3, inference_time=0.5)
    crashed, refused = await store.get("crashed"), await store.get("refused")
    assert crashed is not None and refused is not None
    assert (crashed.error, crashed.error_type, crashed.result_body) == (
        "The model crashed.",
        "runner_server_error",
        crash,
    )
    assert (refused.error, refused.error_type, refused.inference_time) == (None, None, 0.5)


async def test_cancel_answers_by_state(store: JobStore) -> None:
    for name in ("running", "queued"):
        await _submit(store, name)
    await store.claim(now=2)
    assert await store.cancel("running", now=3) == "CANCELLATION_REQUESTED"
    flagged = await store.get("running")
    assert flagged is not None and flagged.cancel_requested and flagged.state == "IN_PROGRESS"
    assert await store.cancel("queued", now=4) == "OK"
    cancelled = await store.get("queued")
    assert cancelled is not None
    assert (cancelled.state, cancelled.result_status, cancelled.result_body) == (
        "COMPLETED",
        CANCELLED_STATUS,
        CANCELLED_BODY,
    )
    assert cancelled.error_type == "client_cancelled"
    assert await store.cancel("missing", now=5) == "NOT_FOUND"
    assert await store.claim(now=6) is None  # a cancelled queued job never runs


async def test_requeued_jobs_keep_their_place_and_cancelled_ones_end_at_restart(store: JobStore) -> None:
    for name in ("first", "flagged", "last"):
        await _submit(store, name)
    await store.claim(now=2)
    await store.claim(now=2)
    await store.cancel("flagged", now=3)
    assert await store.requeue_interrupted(now=4) == 1
    flagged = await store.get("flagged")
    assert flagged is not None and flagged.result_body == CANCELLED_BODY
    again = await store.claim(now=5)
    assert again is not None and (again.id, again.attempts) == ("first", 2)  # ahead of "last" again
    await store.requeue("first")  # a graceful stop hands it back
    first = await store.get("first")
    assert first is not None and first.state == "IN_QUEUE" and await store.queue_position(first) == 0
    await store.requeue("last")  # not running: nothing changes
    last = await store.get("last")
    assert last is not None and last.state == "IN_QUEUE" and last.attempts == 0


# -- logs and purging ----------------------------------------------------------------------


async def test_log_lines_arrive_in_order_from_any_thread_before_later_updates(store: JobStore) -> None:
    for name in "ab":
        await _submit(store, name)
    claimed = await store.claim(now=2)
    assert claimed is not None
    store.append_logs(["a", "b"], "INFO", "shared", "t1")
    writer = threading.Thread(target=store.append_logs, args=(["a"], "WARN", "from a thread", "t2"))
    writer.start()
    writer.join()
    assert await store.complete("a", status=200, body={}, now=3)
    lines = await store.logs("a")
    assert [(line.level, line.message, line.timestamp) for line in lines] == [
        ("INFO", "shared", "t1"),
        ("WARN", "from a thread", "t2"),
    ]
    assert lines[0].to_json() == {"message": "shared", "level": "INFO", "source": "USER", "timestamp": "t1"}
    assert [line.message for line in await store.logs("a", after=lines[0].seq)] == ["from a thread"]
    assert [line.message for line in await store.logs("b")] == ["shared"]
    assert await store.logs("missing") == []


async def test_purge_deletes_only_old_completed_jobs_and_their_logs(store: JobStore) -> None:
    for name, now in (("old", 100.0), ("new", 200.0), ("queued", 50.0)):
        await _submit(store, name, now=now)
    for name, now in (("old", 100.0), ("new", 200.0)):
        store.append_logs([name], "INFO", "line", "t")
        await _run(store, name, now=now)
    store.append_logs(["queued"], "INFO", "line", "t")
    assert await store.purge_jobs(completed_before=150.0) == 1
    assert await store.get("old") is None and await store.logs("old") == []
    assert await store.get("new") is not None and len(await store.logs("new")) == 1
    assert await store.get("queued") is not None  # queued jobs are never purged
    assert len(await store.logs("queued")) == 1


# -- files ---------------------------------------------------------------------------------


async def test_files_are_served_until_they_expire(store: JobStore) -> None:
    file_id = await store.put_file(
        b"\x89PNG", content_type="image/png", file_name="a.png", now=1, expires_at=10
    )
    stored = await store.get_file(file_id, now=9.9)
    assert stored is not None
    assert (stored.id, stored.content_type, stored.file_name, stored.data) == (
        file_id,
        "image/png",
        "a.png",
        b"\x89PNG",
    )
    assert await store.get_file(file_id, now=10) is None  # expired
    assert await store.get_file("unknown-id-1234", now=1) is None
    other = await store.put_file(b"x", content_type="text/plain", file_name=None, now=1, expires_at=20)
    assert other != file_id
    assert await store.purge_files(now=15) == 1
    assert await store.get_file(other, now=15) is not None


async def test_a_pending_upload_is_filled_once(store: JobStore) -> None:
    file_id = await store.create_pending(
        content_type="application/octet-stream", file_name="b.jpg", now=1, expires_at=10
    )
    assert await store.get_file(file_id, now=2) is None  # reserved, no bytes yet
    assert await store.fill_pending(file_id, b"jpeg", "image/jpeg")
    assert not await store.fill_pending(file_id, b"other", None)  # once only
    assert not await store.fill_pending("never-initiated", b"x", None)
    stored = await store.get_file(file_id, now=2)
    assert stored is not None and (stored.data, stored.content_type, stored.file_name) == (
        b"jpeg",
        "image/jpeg",
        "b.jpg",
    )
    kept = await store.create_pending(content_type="image/png", file_name=None, now=1, expires_at=10)
    assert await store.fill_pending(kept, b"png", None)  # no Content-Type: the reserved one stays
    kept_file = await store.get_file(kept, now=2)
    assert kept_file is not None and kept_file.content_type == "image/png"


# -- what only SQLite promises -------------------------------------------------------------


async def test_sqlite_keeps_accepted_jobs_logs_and_files_across_a_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    store = await SQLiteJobStore.open(path)
    await _submit(store, "a", prompt="kept")
    await _submit(store, "b")
    await store.claim(now=2)
    store.append_logs(["a"], "INFO", "started", "t")
    file_id = await store.put_file(b"x", content_type="image/png", file_name=None, now=1, expires_at=10)
    await store.close()

    reopened = await open_job_store(path)
    try:
        assert isinstance(reopened, SQLiteJobStore)
        assert await reopened.requeue_interrupted(now=3) == 1
        job = await reopened.get("a")
        assert job is not None and job.input == {"prompt": "kept"} and job.state == "IN_QUEUE"
        assert [line.message for line in await reopened.logs("a")] == ["started"]
        assert await reopened.get_file(file_id, now=2) is not None
    finally:
        await reopened.close()


async def test_the_memory_store_starts_empty_each_time() -> None:
    first = await open_job_store("memory://")
    await _submit(first, "a")
    await first.close()
    second = await open_job_store("memory://")
    assert isinstance(second, MemoryJobStore) and await second.get("a") is None
    await second.close()


# -- choosing a store ----------------------------------------------------------------------


async def test_the_location_scheme_picks_the_store(tmp_path: Path) -> None:
    by_url = await open_job_store(f"sqlite://{tmp_path / 'by-url.db'}")
    await by_url.close()
    assert isinstance(by_url, SQLiteJobStore) and (tmp_path / "by-url.db").exists()
    with pytest.raises(ConfigurationError, match=r"'postgres://'.*sqlite://, memory://") as caught:
        await open_job_store("postgres://user:hunter2@db.example/jobs")
    assert "hunter2" not in str(caught.value)


async def test_a_new_store_is_one_registry_line(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    async def open_recording(location: str) -> JobStore:
        made.append(location)
        return MemoryJobStore()

    monkeypatch.setitem(STORES, "recording", open_recording)
    store = await open_job_store("recording://somewhere/jobs")
    assert made == ["somewhere/jobs"] and isinstance(store, MemoryJobStore)


@pytest.mark.parametrize("location", ["memory://", "sqlite"])
def test_the_server_runs_jobs_and_uploads_on_the_chosen_store(
    location: str, tmp_path: Path, data_uri: str, png_bytes: bytes
) -> None:
    db = location if location == "memory://" else str(tmp_path / "jobs.db")
    app = create_app(FakeBackend(), ServerSettings(db_path=db))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        upload = http.post("/cdn/files/upload", content=png_bytes, headers={"Content-Type": "image/png"})
        assert upload.status_code == 200, upload.text
        for image_url in (data_uri, upload.json()["access_url"]):
            job = http.post(f"/{APP}", json={"image_url": image_url, "prompt": "what?"}).json()
            status = wait_completed(http, job["status_url"])
            assert status["logs"][-1]["message"].startswith("Completed in")
            result = http.get(job["response_url"])
            assert result.status_code == 200 and result.json()["output"]
