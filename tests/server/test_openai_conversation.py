"""What an OpenAI chat request becomes for the backend: turns, the image chosen, settings, JSON
instructions; and failures as OpenAI-shaped answers.

The server runs in this process so that `FakeBackend.history` shows each request it got.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from llava_bridge import FakeBackend, Message
from llava_bridge.errors import (
    APIConnectionError,
    APITimeoutError,
    ContextOverflowError,
    DeadlineExceededError,
    InvalidImageError,
    JobFailedError,
    RateLimitError,
    ServerError,
    UnsupportedContentError,
)
from llava_bridge.server import ServerSettings, create_app
from llava_bridge.server.openai.errors import from_exception
from tests.server.conftest import APP, LocalHTTP, serve_in_thread


def _data_uri(size: tuple[int, int], colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


BLUE = _data_uri((40, 30), (30, 60, 220))


@pytest.fixture(scope="module")
def served(http_pair: tuple[LocalHTTP, LocalHTTP]) -> Iterator[tuple[str, FakeBackend]]:
    allowed, _ = http_pair
    backend = FakeBackend.image_facts()
    settings = ServerSettings(db_path=":memory:", allowed_url_hosts=(allowed.hostport,))
    with serve_in_thread(create_app(backend, settings)) as url:
        yield url, backend


@pytest.fixture
def sdk(served: tuple[str, FakeBackend]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{served[0]}/v1", api_key="none", max_retries=0) as client:
        yield client


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def test_turns_roles_and_the_image_of_the_latest_user_turn_with_one(
    served: tuple[str, FakeBackend], sdk: openai.OpenAI, data_uri: str
) -> None:
    _, backend = served
    answer = sdk.chat.completions.create(
        model=APP,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": [{"type": "text", "text": "Old picture"}, _image(BLUE)]},
            {"role": "assistant", "content": "A blue one."},
            {"role": "user", "content": [{"type": "text", "text": "And this?"}, _image(data_uri)]},
            {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Sure?"}, {"type": "text", "text": "Really?"}],
            },
        ],
    )
    request = backend.history[-1]
    assert request.messages == (
        Message(role="system", content="Be brief.\n\nAnswer in English."),
        Message(role="user", content="Old picture"),
        Message(role="assistant", content="A blue one."),
        Message(role="user", content="And this?"),
        Message(role="assistant", content="Red."),
        Message(role="user", content="Sure?\nReally?"),
    )
    assert request.image_turn == 3
    assert answer.choices[0].message.content == "(fake) A 64x48 image, mostly red."


def test_only_the_sent_turns_images_are_fetched(
    served: tuple[str, FakeBackend], sdk: openai.OpenAI, http_pair: tuple[LocalHTTP, LocalHTTP]
) -> None:
    allowed, _ = http_pair
    before = len(allowed.hosts)
    sdk.chat.completions.create(
        model=APP,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Old"}, _image(allowed.url("/image.png"))]},
            {"role": "assistant", "content": "Seen."},
            {"role": "user", "content": [{"type": "text", "text": "New"}, _image(BLUE)]},
        ],
    )
    assert len(allowed.hosts) == before
    sdk.chat.completions.create(
        model=APP,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "?"}, _image(allowed.url("/image.png"))]}
        ],
    )
    assert len(allowed.hosts) == before + 1


def test_several_images_are_tiled_and_too_many_refused_unfetched(
    served: tuple[str, FakeBackend], sdk: openai.OpenAI, http_pair: tuple[LocalHTTP, LocalHTTP]
) -> None:
    _, backend = served
    sdk.chat.completions.create(
        model=APP,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Compare"}, _image(BLUE), _image(BLUE)]}
        ],
    )
    tiled = backend.history[-1].image
    assert tiled is not None and tiled.size is not None and tiled.size != (40, 30)
    allowed, _ = http_pair
    before = len(allowed.hosts)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model=APP,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "?"}] + [_image(allowed.url("/image.png"))] * 5,
                }
            ],
        )
    assert "at most 4" in caught.value.message
    assert len(allowed.hosts) == before


def test_settings_reach_the_backend(served: tuple[str, FakeBackend], sdk: openai.OpenAI) -> None:
    _, backend = served
    sdk.chat.completions.create(
        model=APP,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=40,
        max_completion_tokens=20,
        temperature=0.5,
        top_p=0.9,
        stop="END",
        seed=7,
        user="someone",
    )
    request = backend.history[-1]
    assert (request.max_new_tokens, request.temperature, request.top_p, request.stop) == (
        20,
        0.5,
        0.9,
        ("END",),
    )
    sdk.chat.completions.create(model=APP, messages=[{"role": "user", "content": "hi"}])
    assert backend.history[-1].max_new_tokens == 256


def test_json_schema_response_format_appends_the_schema(
    served: tuple[str, FakeBackend], sdk: openai.OpenAI
) -> None:
    _, backend = served
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    sdk.chat.completions.create(
        model=APP,
        messages=[{"role": "user", "content": "Which colour?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "colour", "schema": schema}},
    )
    assert backend.history[-1].prompt == (
        "Which colour?\n\nReply with one JSON object and nothing else: no prose, no code fences. "
        'It must match this JSON schema:\n{"type":"object","properties":{"colour":{"type":"string"}},'
        '"required":["colour"]}'
    )


def test_a_file_uploaded_to_this_server_is_read_from_its_store(
    served: tuple[str, FakeBackend], sdk: openai.OpenAI, png_bytes: bytes
) -> None:
    url, _ = served
    uploaded = httpx.post(f"{url}/cdn/files/upload", content=png_bytes, headers={"Content-Type": "image/png"})
    access_url = uploaded.json()["access_url"]
    answer = sdk.chat.completions.create(
        model=APP, messages=[{"role": "user", "content": [{"type": "text", "text": "?"}, _image(access_url)]}]
    )
    assert answer.choices[0].message.content == "(fake) A 64x48 image, mostly red."


def test_a_failure_mid_stream_is_an_error_event_then_done(data_uri: str) -> None:
    class BreaksMidStream(FakeBackend):
        async def astream(self, request: Any) -> Any:
            yield await anext(aiter(super().astream(request)))
            raise ServerError("the GPU fell over", status_code=500)

    with serve_in_thread(create_app(BreaksMidStream(), ServerSettings(db_path=":memory:"))) as url:
        body = {"model": APP, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        text = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).text
        with (
            openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0) as client,
            pytest.raises(openai.APIError, match="the GPU fell over"),
        ):
            list(client.chat.completions.create(model=APP, messages=body["messages"], stream=True))
    events = [event for event in text.split("\n\n") if event]
    assert '"error":' in events[-2] and "the GPU fell over" in events[-2]
    assert events[-1] == "data: [DONE]"


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ContextOverflowError("too long", needed=9000, available=8192), 400, "context_length_exceeded"),
        (InvalidImageError("not an image"), 400, "invalid_image"),
        (UnsupportedContentError("no audio"), 400, "invalid_value"),
        (RateLimitError("slow down", status_code=429), 429, "rate_limit_exceeded"),
        (ServerError("upstream broke", status_code=500), 502, "upstream_error"),
        (APITimeoutError("too slow"), 504, "timeout"),
        (DeadlineExceededError("out of time", timeout=5.0, request_id=None), 504, "timeout"),
        (JobFailedError("the job failed", request_id="r1"), 502, "upstream_error"),
        (APIConnectionError("refused"), 503, "service_unavailable"),
        (RuntimeError("surprise"), 500, None),
    ],
)
def test_failures_map_to_the_statuses_openai_clients_know(
    error: Exception, status: int, code: str | None
) -> None:
    answer = from_exception(error)
    assert (answer.status, answer.code) == (status, code)
    assert set(answer.body()["error"]) == {"message", "type", "param", "code"}
