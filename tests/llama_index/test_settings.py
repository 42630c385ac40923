"""LlavaLLM's connection settings are pydantic fields, and every component has a finite default deadline."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.extractors import SummaryExtractor
from llama_index.core.ingestion.pipeline import get_transformation_hash
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.schema import ImageNode, TextNode

from llava_bridge import DeadlineExceededError, FakeBackend, FalBackend, defaults
from llava_bridge.llama_index import ImageDescriber, ImageDescriptionError, LlavaLLM, LlavaToolSpec
from tests.fal.fal_test_server import FalTestServer

from .conftest import colour_png, data_uri

SECRET = "sk-settings-4711"


@pytest.fixture(autouse=True)
def no_fal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "LLAVA_FAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_settings_are_fields() -> None:
    llm = LlavaLLM(model="fal-ai/llava-next", timeout=7, max_retries=1, context_window=2048)
    assert (llm.model, llm.timeout, llm.max_retries, llm.context_window) == ("fal-ai/llava-next", 7, 1, 2048)
    assert llm.metadata.model_name == "fal-ai/llava-next"
    assert llm.metadata.context_window == 2048
    assert isinstance(llm.backend, FalBackend) and llm.backend.timeout == 7


def test_to_dict_and_from_dict_round_trip_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    llm = LlavaLLM(
        model="fal-ai/llava-next",
        api_key=SECRET,
        base_url="http://127.0.0.1:9",
        timeout=7,
        max_retries=1,
        context_window=2048,
        max_new_tokens=40,
    )
    data = llm.to_dict()
    assert SECRET not in str(data) and "api_key" not in data
    clone = LlavaLLM.from_dict(data)
    assert clone.to_dict() == data
    assert (clone.backend.model_name, clone.backend.timeout) == ("fal-ai/llava-next", 7)  # type: ignore[attr-defined]
    assert clone.api_key is None
    assert LlavaLLM.from_json(LlavaLLM(timeout=None).to_json()).timeout is None  # no limit survives too


def test_with_a_backend_the_fields_describe_it() -> None:
    llm = LlavaLLM(backend=FakeBackend(model_name="fake-llava"))
    assert (llm.model, llm.timeout, llm.max_retries) == ("fake-llava", None, None)
    assert llm.context_window == llm.backend.context_window


def test_cache_key_of_a_component_holding_the_llm_holds_the_model() -> None:
    nodes = [TextNode(text="A caption.")]
    keys = {
        model: get_transformation_hash(nodes, SummaryExtractor(llm=LlavaLLM(model=model, api_key=SECRET)))
        for model in ("fal-ai/llava-next", "fal-ai/llava-llama3-8b-v11")
    }
    assert len(set(keys.values())) == 2
    extractor = SummaryExtractor(llm=LlavaLLM(model="fal-ai/llava-next", api_key=SECRET))
    assert "fal-ai/llava-next" in str(extractor.to_dict())
    assert SECRET not in str(extractor.to_dict())


def test_the_default_deadline_is_the_shared_constant() -> None:
    expected = defaults.DEFAULT_ADAPTER_TIMEOUT_S
    assert LlavaLLM().timeout == expected
    for component in (LlavaLLM(), LlavaToolSpec(), ImageDescriber()):
        assert isinstance(component.backend, FalBackend)
        assert component.backend.timeout == expected
    assert LlavaLLM(timeout=None).backend.timeout is None  # type: ignore[attr-defined]
    assert LlavaToolSpec(timeout=None).backend.timeout is None  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def stuck_queue() -> Iterator[FalTestServer]:
    """A fal-protocol server whose jobs wait 60 s in the queue."""
    with FalTestServer(queue_seconds=60.0) as server:
        yield server


def _ask_llm(url: str) -> Any:
    return LlavaLLM(base_url=url, api_key="test").chat([ChatMessage(role=MessageRole.USER, content="Hi")])


async def _ask_tool(url: str) -> Any:
    return await LlavaToolSpec(base_url=url, api_key="test").adescribe_image(data_uri(colour_png("red")))


async def _describe(url: str) -> Any:
    node = ImageNode(image=base64.b64encode(colour_png("navy")).decode(), metadata={"file_name": "navy.png"})
    return await ImageDescriber(base_url=url, api_key="test").acall([node])


@pytest.mark.parametrize("call", [_ask_llm, _ask_tool, _describe], ids=["llm", "tool", "describer"])
async def test_the_default_deadline_cancels_a_job_stuck_in_the_queue(
    stuck_queue: FalTestServer, monkeypatch: pytest.MonkeyPatch, call: Any
) -> None:
    stuck_queue.reset(queue_seconds=60.0)
    monkeypatch.setattr(defaults, "DEFAULT_ADAPTER_TIMEOUT_S", 1.0)
    with pytest.raises((DeadlineExceededError, ImageDescriptionError)) as caught:
        result = call(stuck_queue.url)
        if hasattr(result, "__await__"):
            await result
    assert "cancelled" in str(caught.value)
    [job] = stuck_queue.jobs.values()
    assert job.cancelled
    assert [c.route for c in stuck_queue.requests][-1] == "cancel"
