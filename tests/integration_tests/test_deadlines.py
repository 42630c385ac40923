"""The LangChain classes have a finite default deadline, and a job stuck in the queue is cancelled.

The fal-protocol test server keeps every job IN_QUEUE for a minute. The deadline is
one wall clock over the whole call (FalBackend's `timeout=`): when it runs out the
job is cancelled on the server, and the caller gets a timeout error.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core import exceptions as lc_errors
from langchain_core.messages import HumanMessage, ToolMessage

from llava_bridge import DeadlineExceededError, FalBackend, defaults
from llava_bridge.langchain import ChatLlava, LlavaImageLoader, LlavaImageTool
from tests.fal.fal_test_server import FalTestServer

from .conftest import DATA

SHORT = 1.0
"""Seconds: the deadline these tests give (a job would otherwise wait 60 s in the queue)."""
URL = "https://example.com/cat.png"


@pytest.fixture(scope="module")
def stuck_server() -> Iterator[FalTestServer]:
    """A fal-protocol server whose jobs wait in the queue for a minute."""
    with FalTestServer(queue_seconds=60.0) as server:
        yield server


def only_job_was_cancelled(server: FalTestServer, before: set[str]) -> str:
    (new,) = set(server.jobs) - before
    assert server.jobs[new].cancelled, "the job stuck in the queue was not cancelled"
    return new


def test_the_default_deadline_is_the_shared_constant() -> None:
    assert defaults.DEFAULT_ADAPTER_TIMEOUT_S == 120.0
    for backend in (
        ChatLlava(api_key="k").get_backend(),
        LlavaImageTool(api_key="k").get_backend(),
        LlavaImageLoader("photo.jpg", api_key="k").get_backend(),
    ):
        assert isinstance(backend, FalBackend) and backend.timeout == 120.0


def test_chat_model_default_deadline_cancels_a_queued_job(
    stuck_server: FalTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "DEFAULT_ADAPTER_TIMEOUT_S", SHORT)
    llm = ChatLlava(base_url=stuck_server.url, api_key="k")
    assert llm.timeout == SHORT
    before = set(stuck_server.jobs)
    message = HumanMessage(content=[{"type": "text", "text": "What?"}, {"type": "image", "url": URL}])
    with pytest.raises(lc_errors.ModelTimeoutError) as caught:
        llm.invoke([message])
    assert isinstance(caught.value, DeadlineExceededError) and "cancelled" in str(caught.value)
    assert caught.value.request_id == only_job_was_cancelled(stuck_server, before)


async def test_tool_default_deadline_cancels_a_queued_job(
    stuck_server: FalTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "DEFAULT_ADAPTER_TIMEOUT_S", SHORT)
    tool = LlavaImageTool(base_url=stuck_server.url, api_key="k")
    before = set(stuck_server.jobs)
    call = {"type": "tool_call", "name": tool.name, "id": "c1", "args": {"image": URL, "question": "What?"}}
    message = await tool.ainvoke(call)
    assert isinstance(message, ToolMessage) and message.status == "error"
    assert "unavailable right now" in str(message.content)
    only_job_was_cancelled(stuck_server, before)


def test_loader_deadline_cancels_a_queued_job(stuck_server: FalTestServer) -> None:
    loader = LlavaImageLoader(DATA / "coffee.png", base_url=stuck_server.url, api_key="k", timeout=SHORT)
    before = set(stuck_server.jobs)
    with pytest.raises(DeadlineExceededError, match="cancelled"):
        loader.load()
    only_job_was_cancelled(stuck_server, before)
