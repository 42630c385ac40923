"""LlavaLLM against FakeBackend: chat, streaming, async, completion, budget, usage, pickling."""

from __future__ import annotations

import base64
import pickle
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.base.llms.types import AudioBlock
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.llms import LLM, ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.prompts import PromptTemplate
from llama_index.core.schema import ImageDocument, ImageNode

from llava_bridge import ConfigurationError, ContextOverflowError, FakeBackend
from llava_bridge.llama_index import LlavaLLM

from .conftest import PicklableFake, colour_png, describe_colour, dominant_name


def ask(*blocks: TextBlock | ImageBlock) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, blocks=list(blocks))]


def test_is_a_llama_index_llm() -> None:
    names = [base.__name__ for base in LlavaLLM.__mro__]
    assert BaseLLM.__name__ in names and LLM.__name__ in names


def test_metadata_follows_backend_and_settings() -> None:
    llm = LlavaLLM(backend=FakeBackend(context_window=3000, model_name="m1"), max_new_tokens=100)
    meta = llm.metadata
    assert (meta.context_window, meta.num_output, meta.model_name) == (3000, 100, "m1")
    assert meta.is_chat_model and not meta.is_function_calling_model


@pytest.mark.parametrize("source", ["bytes", "path", "buffer"])
def test_chat_with_an_image_block(source: str, colour_backend: FakeBackend, tmp_path: Path) -> None:
    png = colour_png("olive", "pink")
    if source == "bytes":
        block = ImageBlock(image=png)
    elif source == "path":
        (tmp_path / "x.png").write_bytes(png)
        block = ImageBlock(path=tmp_path / "x.png")
    else:
        import io

        block = ImageBlock(image=io.BytesIO(png))
    response = LlavaLLM(backend=colour_backend).chat(ask(block, TextBlock(text="Describe it.")))
    assert response.message.content == "A picture dominated by the colour olive."
    assert response.message.role == MessageRole.ASSISTANT
    assert colour_backend.history[-1].image.data == png  # type: ignore[union-attr]


def test_chat_with_a_url_passes_the_url(colour_backend: FakeBackend) -> None:
    url = "https://192.0.2.1/photos/cat.png"
    response = LlavaLLM(backend=colour_backend).chat(ask(ImageBlock(url=url), TextBlock(text="Describe it.")))
    assert response.message.content == f"An image at {url}."


def test_usage_lands_where_token_counting_reads_it(colour_backend: FakeBackend) -> None:
    counter = TokenCountingHandler()
    llm = LlavaLLM(backend=colour_backend, callback_manager=CallbackManager([counter]))
    response = llm.chat(ask(ImageBlock(image=colour_png("red")), TextBlock(text="Describe it.")))
    usage = response.raw["usage"]  # type: ignore[index]
    assert usage["completion_tokens"] == 7  # seven words from the fake
    assert usage["total_tokens"] == usage["prompt_tokens"] + 7
    assert usage["estimated"] is True
    assert response.additional_kwargs["prompt_tokens"] == usage["prompt_tokens"]
    assert counter.prompt_llm_token_count == usage["prompt_tokens"]
    assert counter.completion_llm_token_count == 7


def test_stream_chat_yields_cumulative_text_and_usage_last(colour_backend: FakeBackend) -> None:
    llm = LlavaLLM(backend=colour_backend)
    chunks = list(llm.stream_chat(ask(ImageBlock(image=colour_png("navy")), TextBlock(text="?"))))
    assert len(chunks) == 7
    assert "".join(c.delta or "" for c in chunks) == "A picture dominated by the colour navy."
    assert [c.message.content for c in chunks][:2] == ["A", "A picture"]
    assert chunks[-1].raw["usage"]["completion_tokens"] == 7  # type: ignore[index]
    assert all(not c.raw for c in chunks[:-1])


async def test_achat_and_astream_chat(colour_backend: FakeBackend) -> None:
    llm = LlavaLLM(backend=colour_backend)
    messages = ask(ImageBlock(image=colour_png("mint")), TextBlock(text="?"))
    response = await llm.achat(messages)
    assert response.message.content == "A picture dominated by the colour mint."
    stream = await llm.astream_chat(messages)
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].message.content == response.message.content
    assert "".join(c.delta or "" for c in chunks) == response.message.content


async def test_sync_and_async_paths_agree(tmp_path: Path) -> None:
    """Every public method, sync and async, on the same inputs gives the same answer and usage."""
    backend = FakeBackend(describe_colour)
    llm = LlavaLLM(backend=backend, max_new_tokens=5)
    path = tmp_path / "a.png"
    path.write_bytes(colour_png("maroon", "beige"))
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Be short."),
        *ask(ImageBlock(path=path), TextBlock(text="Colour?")),
    ]
    node = ImageNode(image=base64.b64encode(colour_png("maroon")).decode())

    def key(text: str | None, raw: Any) -> tuple[Any, ...]:
        return (text, raw["usage"], raw["finish_reason"], raw["model"])

    sync = [
        key(llm.chat(messages).message.content, llm.chat(messages).raw),
        key(*_last(list(llm.stream_chat(messages)))),
        key(
            llm.complete("Colour?", image_documents=[node]).text,
            llm.complete("Colour?", image_documents=[node]).raw,
        ),
        key(*_last_completion(list(llm.stream_complete("Colour?", image_documents=[node])))),
    ]
    chat = await llm.achat(messages)
    completion = await llm.acomplete("Colour?", image_documents=[node])
    astream = [c async for c in await llm.astream_chat(messages)]
    astream_completion = [c async for c in await llm.astream_complete("Colour?", image_documents=[node])]
    asynchronous = [
        key(chat.message.content, chat.raw),
        key(*_last(astream)),
        key(completion.text, completion.raw),
        key(*_last_completion(astream_completion)),
    ]
    assert sync == asynchronous
    assert sync[0][0] == "A picture dominated by the" and sync[0][2] == "length"
    assert [r.max_new_tokens for r in backend.history] == [5] * len(backend.history)


def _last(chunks: list[Any]) -> tuple[str | None, Any]:
    return chunks[-1].message.content, chunks[-1].raw


def _last_completion(chunks: list[Any]) -> tuple[str | None, Any]:
    return chunks[-1].text, chunks[-1].raw


def test_per_call_settings_override_fields(colour_backend: FakeBackend) -> None:
    llm = LlavaLLM(backend=colour_backend, max_new_tokens=50, temperature=0.1)
    response = llm.chat(ask(TextBlock(text="Hi")), max_new_tokens=2, temperature=0.7, stop="asked")
    request = colour_backend.history[-1]
    assert (request.max_new_tokens, request.temperature, request.stop) == (2, 0.7, ("asked",))
    assert response.message.content == "No image."
    assert response.raw["finish_reason"] == "length"  # type: ignore[index]


def test_old_turns_are_trimmed_to_the_context_window() -> None:
    backend = FakeBackend("ok", context_window=1200)
    history: list[ChatMessage] = []
    for turn in range(6):
        history.append(ChatMessage(role=MessageRole.USER, content=f"question {turn} " + "x" * 300))
        history.append(ChatMessage(role=MessageRole.ASSISTANT, content="answer " + "y" * 300))
    history.append(ChatMessage(role=MessageRole.USER, content="last question"))
    LlavaLLM(backend=backend, max_new_tokens=100).chat(history)
    sent = backend.history[-1].messages
    assert sent[-1].content == "last question"
    assert 1 < len(sent) < len(history)


def test_a_turn_that_cannot_fit_is_a_clear_value_error() -> None:
    backend = FakeBackend("ok", context_window=1000)
    llm = LlavaLLM(backend=backend, max_new_tokens=100)
    with pytest.raises(ValueError, match="Shorten the message or lower max_new_tokens") as caught:
        llm.chat([ChatMessage(role=MessageRole.USER, content="word " * 2000)])
    assert isinstance(caught.value, ContextOverflowError)
    assert backend.history == []


def test_bad_blocks_fail_before_anything_is_sent(colour_backend: FakeBackend) -> None:
    llm = LlavaLLM(backend=colour_backend)
    bad = [ChatMessage(role=MessageRole.USER, blocks=[AudioBlock(audio=b"RIFF"), TextBlock(text="?")])]
    with pytest.raises(ValueError, match="text and images only"):
        llm.chat(bad)
    with pytest.raises(ValueError, match="text and images only"):
        llm.stream_chat(bad)  # raised on the call, not at the first chunk
    assert colour_backend.history == []


async def test_async_stream_with_bad_input_raises_on_the_call(colour_backend: FakeBackend) -> None:
    llm = LlavaLLM(backend=colour_backend)
    with pytest.raises(ValueError, match="5 of them; multi_image='grid' tiles at most 4"):
        await llm.astream_chat(ask(*[ImageBlock(image=colour_png("red"))] * 5, TextBlock(text="?")))


def test_multi_image_policy_field(colour_backend: FakeBackend) -> None:
    llm = LlavaLLM(backend=colour_backend, multi_image="last")
    blocks = [ImageBlock(image=colour_png("red")), ImageBlock(image=colour_png("navy")), TextBlock(text="?")]
    assert llm.chat(ask(*blocks)).message.content == "A picture dominated by the colour navy."
    assert llm.chat(ask(*blocks), multi_image="first").message.content.endswith("red.")  # type: ignore[union-attr]


def test_complete_takes_legacy_image_documents(colour_backend: FakeBackend, tmp_path: Path) -> None:
    path = tmp_path / "doc.png"
    path.write_bytes(colour_png("apricot"))
    llm = LlavaLLM(backend=colour_backend)
    for documents in ([ImageDocument(image_path=str(path))], [ImageBlock(path=path)]):
        response = llm.complete("What colour?", image_documents=documents)
        assert response.text == "A picture dominated by the colour apricot."
    assert colour_backend.history[-1].prompt == "What colour?"


def test_predict_goes_through_chat(colour_backend: FakeBackend) -> None:
    llm = LlavaLLM(backend=colour_backend)
    assert llm.predict(PromptTemplate("Say {word}"), word="hi") == "No image. You asked: Say hi"


def test_fal_settings_with_a_backend_are_refused_without_echoing_the_key() -> None:
    with pytest.raises(
        ConfigurationError, match="api_key=, timeout= configure the default FalBackend"
    ) as caught:
        LlavaLLM(backend=FakeBackend(), api_key="sk-very-secret", timeout=3)
    assert "sk-very-secret" not in str(caught.value)


def test_backend_must_be_a_backend() -> None:
    with pytest.raises(ConfigurationError, match="must be a llava_bridge Backend"):
        LlavaLLM(backend="fal")  # type: ignore[arg-type]


def test_pickling_keeps_the_backend_and_settings() -> None:
    llm = LlavaLLM(backend=PicklableFake(describe_colour, model_name="pickled"), max_new_tokens=33)
    clone = pickle.loads(pickle.dumps(llm))
    assert isinstance(clone.backend, PicklableFake)
    assert (clone.max_new_tokens, clone.metadata.model_name) == (33, "pickled")
    answer = clone.chat(ask(ImageBlock(image=colour_png("lime")), TextBlock(text="?")))
    assert answer.message.content == "A picture dominated by the colour lime."


def test_pickling_an_unpicklable_backend_says_why() -> None:
    with pytest.raises(ConfigurationError, match=r"backend \(FakeBackend\) cannot be"):
        pickle.dumps(LlavaLLM(backend=FakeBackend()))


def test_serialized_llm_holds_no_backend(colour_backend: FakeBackend) -> None:
    data = LlavaLLM(backend=colour_backend, max_new_tokens=12).to_dict()
    assert data["class_name"] == "LlavaLLM"
    assert data["max_new_tokens"] == 12
    assert "backend" not in str(data).lower()


def test_colour_helper_reads_the_dominant_colour() -> None:
    from llava_bridge import ImageInput

    assert dominant_name(ImageInput.from_bytes(colour_png("cyan", "red"))) == "cyan"


async def test_instrumentation_sees_every_chat_path(colour_backend: FakeBackend) -> None:
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events import BaseEvent
    from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent

    class Recorder(BaseEventHandler):
        events: list[str] = []

        def handle(self, event: BaseEvent, **kwargs: Any) -> None:
            if isinstance(event, (LLMChatStartEvent, LLMChatEndEvent)):
                self.events.append(type(event).__name__)

    recorder = Recorder()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(recorder)
    try:
        llm = LlavaLLM(backend=colour_backend)
        messages = ask(TextBlock(text="Hi"))
        llm.chat(messages)
        list(llm.stream_chat(messages))
        await llm.achat(messages)
        [chunk async for chunk in await llm.astream_chat(messages)]
    finally:
        dispatcher.event_handlers.remove(recorder)
    assert recorder.events == ["LLMChatStartEvent", "LLMChatEndEvent"] * 4
