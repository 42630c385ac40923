"""OpenAICompatBackend against a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llava_bridge import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DeadlineExceededError,
    ImageInput,
    Message,
    NotFoundError,
    RateLimitError,
    ServerError,
    VisionRequest,
)
from llava_bridge.backends._transport.async_pool import AsyncPool
from llava_bridge.backends._transport.choice import PROXY_VARIABLES
from llava_bridge.backends._transport.effects import Compute, HttpRequest, OpenStream
from llava_bridge.backends._transport.httpx_adapter import HttpxAsync, HttpxSync
from llava_bridge.backends._transport.sync_pool import SyncPool
from llava_bridge.backends.base import Backend
from llava_bridge.backends.openai_compat.backend import OpenAICompatBackend, chat_completions_url
from llava_bridge.backends.openai_compat.flows import generate_flow, stream_flow
from llava_bridge.backends.openai_compat.settings import OpenAISettings
from llava_bridge.backends.openai_compat.wire import StreamAssembler, build_call, parse_completion

from .conftest import colour_image
from .openai_test_server import OpenAITestServer


@pytest.fixture
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer() as running:
        yield running


@pytest.fixture
def backend(server: OpenAITestServer) -> Iterator[OpenAICompatBackend]:
    with OpenAICompatBackend(server.base_url, max_retries=2) as client:
        yield client


def image_request(**kwargs: Any) -> VisionRequest:
    return VisionRequest(prompt="What is this?", image=colour_image(1), **kwargs)


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://localhost:8000", "http://localhost:8000/v1/chat/completions"),
        ("http://localhost:1234/v1/", "http://localhost:1234/v1/chat/completions"),
        ("http://h:11434/v1/chat/completions", "http://h:11434/v1/chat/completions"),
    ],
)
def test_base_url_forms(base: str, url: str) -> None:
    assert chat_completions_url(base) == url


def test_bad_base_url_and_options() -> None:
    with pytest.raises(ConfigurationError, match="http"):
        OpenAICompatBackend("localhost:8000")
    with pytest.raises(ConfigurationError, match="max_retries"):
        OpenAICompatBackend("http://localhost:8000", max_retries=-1)


def test_request_body_is_native_messages_with_a_data_uri_image(
    server: OpenAITestServer, backend: OpenAICompatBackend
) -> None:
    request = VisionRequest(
        messages=(
            Message(role="system", content="Be brief."),
            Message(role="user", content="Look at this."),
            Message(role="assistant", content="OK."),
            Message(role="user", content="What colour?"),
        ),
        image=colour_image(2),
        image_turn=1,
        max_new_tokens=50,
        temperature=0.2,
        stop=("END",),
    )
    result = backend.generate(request)
    body = server.requests[-1]
    assert body["model"] == "llava-llama3"
    assert body["max_tokens"] == 50 and body["temperature"] == 0.2 and "top_p" not in body
    assert body["stop"] == ["<|eot_id|>", "END"]
    assert body["stream"] is False
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    image_turn = body["messages"][1]["content"]
    assert image_turn[0]["type"] == "image_url" and image_turn[1] == {"type": "text", "text": "Look at this."}
    uri = image_turn[0]["image_url"]["url"]
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == colour_image(2).data
    assert body["messages"][3]["content"] == "What colour?"
    assert result.text == "I see 1 image(s). You said: What colour?"
    assert result.usage.estimated is False and result.usage.completion_tokens == 8
    assert result.finish_reason == "stop" and result.request_id == "chatcmpl-test"


def test_text_only_and_url_images(server: OpenAITestServer, backend: OpenAICompatBackend) -> None:
    assert backend.generate(VisionRequest(prompt="hi")).text == "I see 0 image(s). You said: hi"
    assert server.requests[-1]["messages"] == [{"role": "user", "content": "hi"}]
    backend.generate(VisionRequest(prompt="hi", image=ImageInput.from_url("https://example.com/a.png")))
    part = server.requests[-1]["messages"][0]["content"][0]
    assert part == {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}


def test_large_images_are_downscaled_before_sending(
    server: OpenAITestServer, backend: OpenAICompatBackend
) -> None:
    big = colour_image(3, size=(2000, 1500))
    backend.generate(VisionRequest(prompt="hi", image=big))
    uri = server.requests[-1]["messages"][0]["content"][0]["image_url"]["url"]
    sent = ImageInput.from_data_uri(uri)
    assert sent.size == (896, 672)


def test_api_key_is_sent_and_never_shown(server: OpenAITestServer) -> None:
    server.api_key = "sk-secret-123"
    with OpenAICompatBackend(server.base_url, api_key="sk-secret-123") as good:
        assert good.generate(VisionRequest(prompt="hi")).text
        assert "sk-secret-123" not in repr(good)
    assert server.headers[-1]["authorization"] == "Bearer sk-secret-123"
    with OpenAICompatBackend(server.base_url, api_key="wrong-key") as bad:
        with pytest.raises(AuthenticationError, match="invalid api key") as caught:
            bad.generate(VisionRequest(prompt="hi"))
        assert "wrong-key" not in str(caught.value)


def test_max_tokens_gives_length(backend: OpenAICompatBackend) -> None:
    result = backend.generate(image_request(max_new_tokens=3))
    assert result.text == "I see 1" and result.finish_reason == "length"


def test_stop_tokens_leaked_by_the_server_are_cut(
    server: OpenAITestServer, backend: OpenAICompatBackend
) -> None:
    server.leak_stop_tokens = True
    result = backend.generate(image_request())
    assert result.text == "I see 1 image(s). You said: What is this?"
    assert result.finish_reason == "stop"
    chunks = list(backend.stream(image_request()))
    assert "".join(c.delta for c in chunks) == result.text
    assert chunks[-1].result is not None and chunks[-1].result.finish_reason == "stop"


def test_stream_joins_and_reports_usage(server: OpenAITestServer, backend: OpenAICompatBackend) -> None:
    chunks = list(backend.stream(image_request()))
    assert server.requests[-1]["stream"] is True
    assert server.requests[-1]["stream_options"] == {"include_usage": True}
    assert len(chunks) > 5
    final = chunks[-1].result
    assert final is not None
    assert "".join(c.delta for c in chunks) == final.text == backend.generate(image_request()).text
    assert final.usage.estimated is False and final.usage.completion_tokens == 9
    assert final.finish_reason == "stop" and "time_to_first_token" in final.metrics


def test_stream_with_a_user_stop_string(backend: OpenAICompatBackend) -> None:
    chunks = list(backend.stream(image_request(stop=("You said",))))
    assert "".join(c.delta for c in chunks) == "I see 1 image(s). "


async def test_async_generate_and_stream(server: OpenAITestServer) -> None:
    async with OpenAICompatBackend(server.base_url) as backend:
        result = await backend.agenerate(image_request())
        chunks = [chunk async for chunk in backend.astream(image_request())]
    assert result.text == "I see 1 image(s). You said: What is this?"
    assert "".join(c.delta for c in chunks) == result.text
    assert chunks[-1].result is not None and chunks[-1].result.usage == result.usage


@pytest.mark.parametrize("status", [429, 503])
def test_rate_limits_and_ingress_errors_are_retried(
    server: OpenAITestServer, backend: OpenAICompatBackend, status: int
) -> None:
    server.fail_next(status=status, count=2, headers={"retry-after-ms": "1"})
    assert backend.generate(image_request()).text.startswith("I see 1")
    assert len(server.requests) == 3


async def test_async_retries_then_gives_up(server: OpenAITestServer, backend: OpenAICompatBackend) -> None:
    server.fail_next(status=429, count=3, headers={"retry-after": "0"})
    with pytest.raises(RateLimitError, match="injected failure"):
        await backend.agenerate(image_request())
    assert len(server.requests) == 3  # max_retries=2


def test_streams_are_retried_before_the_first_byte(
    server: OpenAITestServer, backend: OpenAICompatBackend
) -> None:
    server.fail_next(status=429, headers={"retry-after": "0"})
    assert list(backend.stream(image_request()))[-1].result is not None
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, BadRequestError), (404, NotFoundError), (500, ServerError)],
)
def test_errors_that_are_not_retried(
    server: OpenAITestServer, backend: OpenAICompatBackend, status: int, error: type[Exception]
) -> None:
    server.fail_next(status=status, message=f"model says {status}")
    with pytest.raises(error, match=f"model says {status}"):
        backend.generate(image_request())
    assert len(server.requests) == 1


def test_a_dropped_connection_after_sending_is_not_retried(
    server: OpenAITestServer, backend: OpenAICompatBackend
) -> None:
    server.fail_next("drop")
    with pytest.raises(APIConnectionError, match="not re-sent"):
        backend.generate(image_request())
    assert len(server.requests) == 1


def test_a_stream_broken_midway_is_an_error(server: OpenAITestServer, backend: OpenAICompatBackend) -> None:
    server.fail_next("break_stream")
    with pytest.raises(APIConnectionError, match="broke while reading"):
        list(backend.stream(image_request()))


def test_a_stream_that_ends_early_is_an_error(server: OpenAITestServer, backend: OpenAICompatBackend) -> None:
    server.fail_next("truncate")
    with pytest.raises(APIConnectionError, match="ended before"):
        list(backend.stream(image_request()))


def test_read_timeout(server: OpenAITestServer) -> None:
    server.fail_next("delay", seconds=1.0)
    with OpenAICompatBackend(server.base_url, timeout=0.2) as backend, pytest.raises(APITimeoutError):
        backend.generate(image_request())
    assert len(server.requests) == 1


def test_connection_refused_is_retried_then_raised() -> None:
    backend = OpenAICompatBackend(f"http://127.0.0.1:{unused_port()}", max_retries=1)
    with backend, pytest.raises(APIConnectionError, match="is the server running"):
        backend.generate(image_request())


def test_not_an_openai_server(server: OpenAITestServer) -> None:
    with OpenAICompatBackend(server.base_url + "/v2") as backend, pytest.raises(NotFoundError):
        backend.generate(image_request())


def test_injected_http_clients_are_used_and_left_open(server: OpenAITestServer) -> None:
    seen: list[str] = []
    client = httpx.Client(event_hooks={"request": [lambda request: seen.append(str(request.url))]})
    with OpenAICompatBackend(server.base_url, http_client=client) as backend:
        backend.generate(image_request())
    assert seen == [f"{server.base_url}/v1/chat/completions"]
    assert not client.is_closed
    client.close()


def test_it_is_a_backend(backend: OpenAICompatBackend) -> None:
    assert isinstance(backend, Backend) and backend.exact_token_counts is False


def test_against_the_tiny_model_behind_the_server(batched: Any) -> None:
    """The same answer through HTTP as in process: the image and turns arrive intact."""

    def run_model(payload: dict[str, Any]) -> str:
        messages, image = [], None
        for message in payload["messages"]:
            content = message["content"]
            if not isinstance(content, str):
                image = ImageInput.from_url(content[0]["image_url"]["url"])
                content = content[1]["text"]
            messages.append(Message(role=message["role"], content=content))
        request = VisionRequest(messages=tuple(messages), image=image, max_new_tokens=payload["max_tokens"])
        return str(batched.generate(request).text)

    request = VisionRequest(prompt="w1 w2 w3", image=colour_image(0), max_new_tokens=12)
    with OpenAITestServer(run_model) as server, OpenAICompatBackend(server.base_url) as backend:
        assert backend.generate(request).text == batched.generate(request).text


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_injected_async_http_client_is_used_and_left_open(server: OpenAITestServer) -> None:
    seen: list[str] = []

    async def record(request: httpx.Request) -> None:
        seen.append(str(request.url))

    client = httpx.AsyncClient(event_hooks={"request": [record]})
    async with OpenAICompatBackend(server.base_url, async_http_client=client) as backend:
        assert (await backend.agenerate(image_request())).text.startswith("I see 1")
        chunks = [chunk async for chunk in backend.astream(image_request())]
    assert chunks[-1].result is not None
    assert seen == [f"{server.base_url}/v1/chat/completions"] * 2
    assert not client.is_closed
    await client.aclose()


@pytest.mark.parametrize("proxy", [None, "http://127.0.0.1:9"])
async def test_own_connections_go_through_httpx_only_behind_a_proxy(
    monkeypatch: pytest.MonkeyPatch, proxy: str | None
) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if proxy is not None:
        monkeypatch.setenv("HTTPS_PROXY", proxy)
    async with OpenAICompatBackend("http://127.0.0.1:9") as backend:
        transports = (backend._transports.sync(), backend._transports.for_running_loop())
    expected = (SyncPool, AsyncPool) if proxy is None else (HttpxSync, HttpxAsync)
    assert isinstance(transports[0], expected[0]) and isinstance(transports[1], expected[1])


def test_image_work_is_handed_to_the_driver_before_anything_is_sent() -> None:
    """The first step of both flows is a Compute, which the async driver runs in a thread."""
    settings = OpenAISettings(url="http://127.0.0.1:9/v1/chat/completions", model="m")
    for flow in (generate_flow(settings, image_request()), stream_flow(settings, image_request())):
        first = next(flow)
        assert isinstance(first, Compute)
        assert isinstance(flow.send(first.function()), OpenStream | HttpRequest)
        flow.close()


@pytest.mark.parametrize(
    "body",
    [b"<html>busy</html>", b"[" * 100_000, b'{"choices": []}', b'{"choices": [{"message": {"content": 3}}]}'],
)
def test_a_2xx_that_is_not_a_completion_is_a_typed_error(body: bytes) -> None:
    call = build_call(
        image_request(), model="m", stream=False, context_window=4096, resize=None, extra_body={}
    )
    with pytest.raises(APIStatusError, match="not with an OpenAI chat completion"):
        parse_completion(body, call, "http://h/v1/chat/completions")


@pytest.mark.parametrize("data", ["not json", "[" * 100_000, "[1]", '{"choices": [3]}'])
def test_a_stream_event_that_is_not_a_chunk_is_a_typed_error(data: str) -> None:
    call = build_call(
        image_request(), model="m", stream=True, context_window=4096, resize=None, extra_body={}
    )
    with pytest.raises(APIStatusError, match="not with an OpenAI chat completion"):
        StreamAssembler(call, "http://h/v1/chat/completions").feed(data)


def test_an_unexplained_500_is_tried_once_without_stop_and_stop_is_left_out_after(
    server: OpenAITestServer, backend: OpenAICompatBackend, caplog: pytest.LogCaptureFixture
) -> None:
    server.fail_next("unexplained")
    server.leak_stop_tokens = True  # stops still cut on the client
    first = backend.generate(image_request())
    second = backend.generate(image_request())
    assert first.text == second.text == "I see 1 image(s). You said: What is this?"
    assert ["stop" in payload for payload in server.requests] == [True, False, False]
    assert sum("failed on a request with 'stop'" in r.getMessage() for r in caplog.records) == 1


def test_when_leaving_stop_out_fails_too_the_error_is_raised_and_stop_kept(
    server: OpenAITestServer, backend: OpenAICompatBackend
) -> None:
    server.fail_next("unexplained", count=2)
    with pytest.raises(ServerError, match="Internal Server Error"):
        backend.generate(image_request())
    backend.generate(image_request())
    assert ["stop" in payload for payload in server.requests] == [True, False, True]


def test_a_stream_whose_first_event_is_a_bare_error_is_opened_again_without_stop(
    server: OpenAITestServer, backend: OpenAICompatBackend
) -> None:
    server.fail_next("error_event")
    chunks = list(backend.stream(image_request()))
    assert "".join(c.delta for c in chunks) == "I see 1 image(s). You said: What is this?"
    assert ["stop" in payload for payload in server.requests] == [True, False]


def test_send_stop_set_by_hand_is_never_learned(server: OpenAITestServer) -> None:
    server.fail_next("unexplained")
    with OpenAICompatBackend(server.base_url, send_stop=True) as backend:
        with pytest.raises(ServerError):
            backend.generate(image_request())
        backend.generate(image_request())
    with OpenAICompatBackend(server.base_url, send_stop=False) as backend:
        backend.generate(image_request())
        list(backend.stream(image_request()))
    assert ["stop" in payload for payload in server.requests] == [True, True, False, False]
    with pytest.raises(ConfigurationError, match="send_stop"):
        OpenAICompatBackend(server.base_url, send_stop="no")  # type: ignore[arg-type]


@pytest.mark.parametrize("stream", [False, True])
def test_total_timeout_bounds_the_whole_call(server: OpenAITestServer, stream: bool) -> None:
    server.fail_next("delay", seconds=3.0)
    backend = OpenAICompatBackend(server.base_url, timeout=60, total_timeout=0.3)
    with backend, pytest.raises(DeadlineExceededError, match="total_timeout=0.3s"):
        list(backend.stream(image_request())) if stream else backend.generate(image_request())
    assert len(server.requests) == 1
    with pytest.raises(ConfigurationError, match="total_timeout"):
        OpenAICompatBackend(server.base_url, total_timeout=0)
