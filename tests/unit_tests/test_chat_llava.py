"""ChatLlava over real backends (FakeBackend and a streaming test backend): calls, streams, limits, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core import exceptions as lc_errors
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from pydantic import BaseModel, SecretStr

from llava_bridge import (
    AmbiguousSubmitError,
    ConfigurationError,
    ContextOverflowError,
    FakeBackend,
    MissingCredentialsError,
    Usage,
    VisionRequest,
)
from llava_bridge.errors import status_error
from llava_bridge.langchain import ChatLlava

from .streaming_backend import DeltaBackend


def image_message(png_b64: str, text: str = "What is this?") -> HumanMessage:
    return HumanMessage(
        content=[
            {"type": "text", "text": text},
            {"type": "image", "base64": png_b64, "mime_type": "image/png"},
        ]
    )


def test_invoke_sends_one_request_and_reports_metadata(png_b64: str) -> None:
    backend = FakeBackend("A cup of coffee on a table.")
    llm = ChatLlava(backend=backend, max_tokens=32, temperature=0.1)
    answer = llm.invoke([SystemMessage("Be brief."), image_message(png_b64)])
    assert answer.content == "A cup of coffee on a table."
    (request,) = backend.history
    assert request.image is not None and request.image.mime_type == "image/png"
    assert (request.max_new_tokens, request.temperature) == (32, 0.1)
    meta = answer.response_metadata
    assert meta["model_name"] == "fake-llava" and meta["finish_reason"] == "stop"
    assert meta["request_id"].startswith("fake-") and meta["usage_estimated"] is True
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["input_tokens"] > 576  # the image's tokens are counted
    assert answer.usage_metadata["output_tokens"] == 7  # FakeBackend counts words
    assert answer.usage_metadata["total_tokens"] == answer.usage_metadata["input_tokens"] + 7


async def test_sync_and_async_calls_agree(png_b64: str) -> None:
    llm = ChatLlava(backend=FakeBackend("Same answer every time."))
    messages = [image_message(png_b64)]
    sync, asynchronous = llm.invoke(messages), await llm.ainvoke(messages)
    assert sync.content == asynchronous.content
    assert sync.usage_metadata == asynchronous.usage_metadata
    streamed = [c async for c in llm.astream(messages)]
    assert "".join(str(c.content) for c in streamed) == sync.content


def test_stream_puts_metadata_and_usage_on_the_last_chunk_only() -> None:
    chunks = list(ChatLlava(backend=FakeBackend("one two three")).stream("hi"))
    assert [c.content for c in chunks] == ["one", " two", " three"]
    assert all(not c.response_metadata and c.usage_metadata is None for c in chunks[:-1])
    assert chunks[-1].chunk_position == "last"
    assert chunks[-1].response_metadata["model_name"] == "fake-llava"
    assert chunks[-1].usage_metadata is not None


def test_stop_truncates_on_the_client_and_stops_the_stream_early() -> None:
    backend = DeltaBackend(["The ", "cat ", "sat. ", "END", " more", " and", " more"])
    llm = ChatLlava(backend=backend)
    chunks = list(llm.stream("hi", stop=["END"]))
    text = "".join(str(c.content) for c in chunks)
    assert text == "The cat sat. "
    assert backend.pulled == 4 and backend.closed
    assert chunks[-1].response_metadata["finish_reason"] == "stop"
    assert chunks[-1].usage_metadata is not None and chunks[-1].usage_metadata["output_tokens"] > 0
    assert llm.invoke("hi", stop=["sat"]).content == "The cat "
    assert ChatLlava(backend=backend, stop=["cat"]).invoke("hi").content == "The "


def test_stop_split_across_deltas_is_held_back() -> None:
    backend = DeltaBackend(["ab", "cE", "N", "Dxyz"])
    chunks = list(ChatLlava(backend=backend).stream("hi", stop=["END"]))
    assert "".join(str(c.content) for c in chunks) == "abc"


async def test_async_stream_stops_early_too() -> None:
    backend = DeltaBackend(["a ", "b ", "STOP", "c ", "d "])
    chunks = [c async for c in ChatLlava(backend=backend).astream("hi", stop=["STOP"])]
    assert "".join(str(c.content) for c in chunks) == "a b "
    assert backend.pulled == 3


def test_stops_go_to_the_backend_which_cuts_them_once() -> None:
    backend = DeltaBackend(["a ", "STOP", " b"], apply_stops=False)  # a backend that ignores stops
    llm = ChatLlava(backend=backend, stop=["STOP"])
    assert llm.invoke("hi").content == "a STOP b"  # ChatLlava does not cut a second time
    assert "".join(str(c.content) for c in llm.stream("hi")) == "a STOP b"
    assert backend.requests[-1].stop == ("STOP",)


def test_exact_usage_from_the_backend_is_not_flagged() -> None:
    backend = DeltaBackend(["Hello"], usage=Usage(prompt_tokens=11, completion_tokens=2, estimated=False))
    answer = ChatLlava(backend=backend).invoke("hi")
    assert answer.usage_metadata == {"input_tokens": 11, "output_tokens": 2, "total_tokens": 13}
    assert answer.response_metadata["usage_estimated"] is False
    assert answer.response_metadata["finish_reason"] == "length"


def test_per_call_model_override_and_ls_params() -> None:
    backend = FakeBackend("ok")
    llm = ChatLlava(backend=backend, max_tokens=20, stop=["x"])
    assert llm.model == "fake-llava"
    answer = llm.invoke("hi", model="fal-ai/llava-next")
    assert backend.history[-1].model == "fal-ai/llava-next"
    assert answer.response_metadata["model_name"] == "fal-ai/llava-next"
    params = llm._get_ls_params(model="other")
    assert params["ls_model_name"] == "other" and params["ls_provider"] == "fake"
    assert params["ls_max_tokens"] == 20 and params["ls_stop"] == ["x"]


def test_default_backend_model_name_and_field_aliases() -> None:
    llm = ChatLlava(model_name="fal-ai/llava-next", max_new_tokens=12, api_key="fal-secret-key")
    assert (llm.model, llm.max_tokens) == ("fal-ai/llava-next", 12)
    assert llm._get_ls_params()["ls_provider"] == "fal"
    assert "fal-secret-key" not in repr(llm) and "fal-secret-key" not in str(llm.model_dump())


def test_unknown_call_options_are_refused() -> None:
    with pytest.raises(TypeError, match="max_new_token"):
        ChatLlava(backend=FakeBackend()).invoke("hi", max_new_token=5)


def test_a_backend_that_is_not_one_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="backend= takes a llava_bridge backend"):
        ChatLlava(backend=object())


def test_old_turns_are_trimmed_to_fit_and_reported(png_b64: str) -> None:
    backend = FakeBackend("ok", context_window=1000)
    history = [HumanMessage("old question " * 40), AIMessage("old answer " * 40)] * 3
    answer = ChatLlava(backend=backend, max_tokens=100).invoke([*history, image_message(png_b64)])
    assert answer.response_metadata["dropped_turns"] >= 2
    assert backend.history[-1].image is not None  # the latest turn and its image are kept


def test_context_overflow_is_langchains_error_and_ours(png_b64: str) -> None:
    llm = ChatLlava(backend=FakeBackend("ok", context_window=1000), max_tokens=100)
    with pytest.raises(lc_errors.ContextOverflowError) as caught:
        llm.invoke([image_message(png_b64, "describe " * 400)])
    assert isinstance(caught.value, ContextOverflowError)
    assert caught.value.is_retryable is False
    assert caught.value.needed > caught.value.available
    assert "Shorten the message" in str(caught.value)


@pytest.mark.parametrize(
    ("error", "langchain_class", "retryable"),
    [
        (status_error(429, {"detail": "slow down"}), lc_errors.ModelRateLimitError, True),
        (status_error(503, {"detail": "down"}), lc_errors.ModelAPIError, True),
        (status_error(401, {"detail": "bad key"}), lc_errors.ModelAuthenticationError, False),
        (status_error(422, {"detail": "bad image"}), lc_errors.ModelInvalidRequestError, False),
        (MissingCredentialsError(), lc_errors.ModelAuthenticationError, False),
        (AmbiguousSubmitError("submit broke after sending"), lc_errors.ModelConnectionError, False),
    ],
)
async def test_backend_errors_become_langchain_model_errors(
    error: Exception, langchain_class: type[Exception], retryable: bool
) -> None:
    llm = ChatLlava(backend=FakeBackend(error=error))
    for call in (lambda: llm.invoke("hi"), lambda: list(llm.stream("hi"))):
        with pytest.raises(langchain_class) as caught:
            call()
        assert isinstance(caught.value, type(error))
        assert caught.value.is_retryable is retryable
        assert str(caught.value) == str(error)
    with pytest.raises(langchain_class):
        await llm.ainvoke("hi")
    if isinstance(error, AmbiguousSubmitError):
        assert caught.value.request_id is None


def test_unsupported_content_is_a_non_retryable_invalid_request() -> None:
    llm = ChatLlava(backend=FakeBackend())
    with pytest.raises(lc_errors.ModelInvalidRequestError, match="audio block") as caught:
        llm.invoke(
            [HumanMessage(content=["hi", {"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}])]
        )
    assert caught.value.is_retryable is False


def test_text_only_turns_go_to_the_backend_without_a_placeholder() -> None:
    backend = FakeBackend("ok")
    ChatLlava(backend=backend).invoke("hello")
    assert backend.history[-1].image is None
    with pytest.raises(lc_errors.ModelInvalidRequestError, match="no image"):
        ChatLlava(backend=backend, text_only="error").invoke("hello")


def test_token_counts_include_the_image(png_b64: str) -> None:
    llm = ChatLlava(backend=FakeBackend())
    with_image = llm.get_num_tokens_from_messages([image_message(png_b64)])
    without = llm.get_num_tokens_from_messages([HumanMessage("What is this?")])
    assert with_image - without == 576
    assert llm.get_num_tokens("abcdef") == 2


def test_bind_tools_says_to_use_the_tool() -> None:
    with pytest.raises(NotImplementedError, match="LlavaImageTool"):
        ChatLlava(backend=FakeBackend()).bind_tools([])


class Caption(BaseModel):
    caption: str
    objects: list[str]


def answer_from_schema(request: VisionRequest) -> str:
    """Answer JSON for the schema the prompt carries (a fake model that follows instructions)."""
    schema = json.loads(request.prompt.split("JSON schema:\n", 1)[1])
    values = {"caption": "A cup.", "objects": ["cup", "saucer"]}
    return "```json\n" + json.dumps({key: values[key] for key in schema["properties"]}) + "\n```"


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_puts_the_schema_in_the_prompt_and_parses(method: Any, png_b64: str) -> None:
    backend = FakeBackend(answer_from_schema)
    chain = ChatLlava(backend=backend).with_structured_output(Caption, method=method)
    assert chain.invoke([image_message(png_b64)]) == Caption(caption="A cup.", objects=["cup", "saucer"])
    assert '"objects"' in backend.history[-1].prompt
    parsed = list(ChatLlava(backend=backend).with_structured_output(Caption.model_json_schema()).stream("hi"))
    assert parsed[-1] == {"caption": "A cup.", "objects": ["cup", "saucer"]}


def test_json_mode_names_the_keys_and_include_raw_reports_parse_errors() -> None:
    backend = FakeBackend(['{"caption": "x", "objects": []}', "not json at all"])
    chain = ChatLlava(backend=backend).with_structured_output(Caption, method="json_mode", include_raw=True)
    good = chain.invoke("hi")
    assert good["parsed"] == Caption(caption="x", objects=[]) and good["parsing_error"] is None
    assert backend.history[-1].prompt.endswith("Use these keys: caption, objects.")
    bad = chain.invoke("hi")
    assert bad["parsed"] is None and isinstance(bad["raw"], AIMessage)
    assert bad["parsing_error"] is not None


def test_structured_output_refuses_unknown_methods_and_missing_schemas() -> None:
    llm = ChatLlava(backend=FakeBackend())
    with pytest.raises(ValueError, match="Unknown structured-output method"):
        llm.with_structured_output(Caption, method="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a schema"):
        llm.with_structured_output(None)
    assert llm.with_structured_output(None, method="json_mode") is not None


def test_streaming_field_routes_invoke_through_the_stream() -> None:
    backend = DeltaBackend(["a", "b"])
    answer = ChatLlava(backend=backend, streaming=True).invoke("hi")
    assert answer.content == "ab" and backend.closed


def test_chunks_sum_to_the_invoke_message(png_b64: str) -> None:
    llm = ChatLlava(backend=FakeBackend("Exactly this text."))
    full: Any = None
    for chunk in llm.stream([image_message(png_b64)]):
        assert isinstance(chunk, AIMessageChunk)
        full = chunk if full is None else full + chunk
    assert full.content == "Exactly this text."
    assert full.response_metadata["model_name"] == "fake-llava"


def test_api_key_is_a_secret_and_fal_key_is_left_to_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAL_KEY", "env-key-123")
    assert ChatLlava().api_key is None  # FalBackend's key rule decides where FAL_KEY goes
    llm = ChatLlava(api_key="code-key-456")
    assert isinstance(llm.api_key, SecretStr) and llm.api_key.get_secret_value() == "code-key-456"
    assert "code-key-456" not in repr(llm)


def test_default_backend_is_fal_built_from_the_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    from llava_bridge import FalBackend

    monkeypatch.delenv("FAL_KEY", raising=False)
    llm = ChatLlava(model="fal-ai/llava-next", api_key="fal-k", base_url="http://127.0.0.1:9", timeout=5)
    backend = llm.get_backend()
    assert isinstance(backend, FalBackend) and backend.model_name == "fal-ai/llava-next"
    assert backend is llm.get_backend()  # made once
    assert "fal-k" not in repr(backend)


def test_missing_key_fails_at_the_first_call_as_an_authentication_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "LLAVA_FAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    llm = ChatLlava()  # constructing needs no key
    with pytest.raises(lc_errors.ModelAuthenticationError, match="FAL_KEY") as caught:
        llm.invoke("hi")
    assert isinstance(caught.value, MissingCredentialsError) and caught.value.is_retryable is False
