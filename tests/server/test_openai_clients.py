"""OpenAI's own clients, unchanged, against a real `llava-bridge serve` process.

The server runs the fake backend with `--fake-answers image-facts`: it answers with
the image's size and main colour, or echoes the latest prompt when there is no
image, so each answer shows what reached the backend.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.server.conftest import APP, LocalHTTP
from tests.support.local_server import LocalServer, running_server

KEY = "openai-test-key"
RED = "(fake) A 64x48 image, mostly red."
ALIAS = APP.split("/")[1]


@pytest.fixture(scope="module")
def server(http_pair: tuple[LocalHTTP, LocalHTTP]) -> Iterator[LocalServer]:
    allowed, _ = http_pair
    with running_server(
        "--backend",
        "fake",
        "--fake-answers",
        "image-facts",
        "--api-key",
        KEY,
        "--allow-url-host",
        allowed.hostport,
        "--max-body-mb",
        "1",
    ) as running:
        yield running


@pytest.fixture
def client(server: LocalServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, max_retries=0) as sdk:
        yield sdk


def _image_message(url: str, text: str = "What is this?") -> dict[str, Any]:
    return {
        "role": "user",
        "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}],
    }


# -- the openai SDK ---------------------------------------------------------------------


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids[0] == APP and "fake-llava" in ids
    assert client.models.retrieve(APP).id == APP
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_sync_completion_with_a_data_uri_image(client: openai.OpenAI, data_uri: str) -> None:
    completion = client.chat.completions.create(
        model=APP,
        messages=[{"role": "system", "content": "Be brief."}, _image_message(data_uri)],
        max_tokens=50,
        temperature=0,
    )
    assert completion.object == "chat.completion"
    assert completion.model == APP
    assert completion.choices[0].message.content == RED
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 6
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 6


def test_bare_alias_text_only_turns_and_max_completion_tokens(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=ALIAS,
        messages=[
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": "and then?"},
        ],
        max_completion_tokens=3,
    )
    assert completion.choices[0].message.content == "(fake) There is"
    assert completion.choices[0].finish_reason == "length"


def test_stop_strings_cut_the_answer(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=APP, messages=[{"role": "user", "content": "hello"}], stop=["no image"]
    )
    assert completion.choices[0].message.content == "(fake) There is "


def test_http_image_url_is_fetched_through_the_guard(
    client: openai.OpenAI, http_pair: tuple[LocalHTTP, LocalHTTP]
) -> None:
    allowed, refused = http_pair
    completion = client.chat.completions.create(
        model=APP, messages=[_image_message(allowed.url("/image.png"))]
    )
    assert completion.choices[0].message.content == RED
    before = len(refused.hosts)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=APP, messages=[_image_message(refused.url("/image.png"))])
    assert caught.value.code == "invalid_image"
    assert len(refused.hosts) == before  # never contacted


def test_stream_with_include_usage(client: openai.OpenAI, data_uri: str) -> None:
    chunks = list(
        client.chat.completions.create(
            model=APP,
            messages=[_image_message(data_uri)],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == RED
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert len({chunk.id for chunk in chunks}) == 1


def test_stream_without_usage_ends_with_done(server: LocalServer) -> None:
    body = {"model": APP, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert '"usage"' not in response.text


async def test_async_client_create_and_stream(server: LocalServer, data_uri: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, max_retries=0) as sdk:
        completion = await sdk.chat.completions.create(model=APP, messages=[_image_message(data_uri)])
        assert completion.choices[0].message.content == RED
        stream = await sdk.chat.completions.create(
            model=APP, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        assert "".join(pieces) == "(fake) There is no image. You said: hi"


def test_json_object_response_format_adds_the_instructions(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=APP,
        messages=[{"role": "user", "content": "List two colours."}],
        response_format={"type": "json_object"},
    )
    answer = completion.choices[0].message.content or ""
    assert answer.endswith(
        "List two colours.\n\nReply with one JSON object and nothing else: no prose, no code fences."
    )


# -- errors, as the SDK's exception classes -----------------------------------------------


def test_wrong_or_missing_key_is_an_authentication_error(server: LocalServer) -> None:
    with (
        openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="wrong-key", max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        sdk.chat.completions.create(model=APP, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "invalid_api_key"
    assert (
        httpx.get(f"{server.base_url}/v1/models", headers={"Authorization": f"Key {KEY}"}).status_code == 200
    )
    response = httpx.get(f"{server.base_url}/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert KEY not in response.text


def test_routes_it_does_not_serve_are_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model=APP, prompt="hi")
    assert "is_chat_model=True" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model=APP, input="hi")


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found"
    assert APP in caught.value.message


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": "5"}, "max_tokens"),
        ({"max_tokens": 5.0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"n": 2}, "n"),
        ({"stop": ["END", ""]}, "stop.1"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema",
        ),
    ],
)
def test_bad_parameters_are_bad_requests(client: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=APP, messages=[{"role": "user", "content": "hi"}], extra_body=extra
        )
    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], "messages.0.content.0"),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]},
                {"role": "user", "content": "and?"},
            ],
            "messages.1.content.0",
        ),
        ([{"role": "tool", "content": "42", "tool_call_id": "a"}], "messages.0.role"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}], "messages"),
        ([], "messages"),
    ],
)
def test_messages_it_cannot_take_are_bad_requests(
    client: openai.OpenAI, messages: list[dict[str, Any]], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=APP, messages=messages)  # type: ignore[arg-type]
    assert caught.value.param == param


def test_a_broken_image_is_a_bad_request_before_the_stream_starts(client: openai.OpenAI) -> None:
    broken = "data:image/png;base64," + base64.b64encode(b"not a png").decode()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=APP, messages=[_image_message(broken)], stream=True)
    assert caught.value.code == "invalid_image"


def test_a_body_over_the_cap_is_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=APP, messages=[{"role": "user", "content": "x" * 2_000_000}])
    assert caught.value.status_code == 413


# -- frameworks that speak OpenAI's API ------------------------------------------------------


def test_langchain_chat_openai_with_an_image_block(server: LocalServer, png_bytes: bytes) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, model=APP, max_retries=0)  # type: ignore[arg-type]
    message = HumanMessage(
        content=[
            {"type": "text", "text": "What colour is it?"},
            {"type": "image", "base64": base64.b64encode(png_bytes).decode(), "mime_type": "image/png"},
        ]
    )
    answer = llm.invoke([message])
    assert answer.content == RED
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] == 6
    assert "".join(str(chunk.content) for chunk in llm.stream([message])) == RED


async def test_init_chat_model_openai_provider(server: LocalServer) -> None:
    from langchain.chat_models import init_chat_model

    model = init_chat_model(f"openai:{APP}", base_url=f"{server.base_url}/v1", api_key=KEY)
    assert (await model.ainvoke("hello")).content == "(fake) There is no image. You said: hello"


def test_llama_index_openai_like_with_an_image_block(server: LocalServer, png_bytes: bytes) -> None:
    from llama_index.core.llms import ChatMessage, ImageBlock, TextBlock
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(
        model=APP,
        api_base=f"{server.base_url}/v1",
        api_key=KEY,
        is_chat_model=True,
        context_window=8192,
        max_retries=0,
    )
    message = ChatMessage(
        role="user",
        blocks=[TextBlock(text="What colour?"), ImageBlock(image=png_bytes, image_mimetype="image/png")],
    )
    assert llm.chat([message]).message.content == RED
    assert llm.complete("hi").text == "(fake) There is no image. You said: hi"


async def test_our_openai_compat_backend_against_it(server: LocalServer, png_bytes: bytes) -> None:
    from llava_bridge import ImageInput, OpenAICompatBackend, VisionRequest

    request = VisionRequest(prompt="What?", image=ImageInput.from_bytes(png_bytes), stop=["zzz"])
    async with OpenAICompatBackend(base_url=f"{server.base_url}/v1", api_key=KEY, model=APP) as backend:
        result = await backend.agenerate(request)
        pieces = [chunk.delta async for chunk in backend.astream(VisionRequest(prompt="hello there"))]
    assert (result.text, result.finish_reason, result.usage.completion_tokens) == (RED, "stop", 6)
    assert "".join(pieces) == "(fake) There is no image. You said: hello there"
