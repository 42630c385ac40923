"""Configuration: keys and where they go, hosts, options on the wire, profiles, validation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx
import pytest

from llava_bridge import (
    AuthenticationError,
    Backend,
    ConfigurationError,
    ContextOverflowError,
    MissingCredentialsError,
    VisionRequest,
)
from llava_bridge.backends.fal.backend import FalBackend
from tests.fal.fal_test_server import FalTestServer

SECRET = "sk-very-secret-123"


def _refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no network call was expected, got {request.url}")


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "LLAVA_FAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_a_missing_key_raises_at_the_first_call_before_any_network(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    backend = FalBackend(http_client=httpx.Client(transport=httpx.MockTransport(_refuse)))  # no error yet

    with pytest.raises(MissingCredentialsError, match="FAL_KEY"):
        backend.generate(VisionRequest(prompt="hi"))


async def test_a_missing_key_raises_on_the_async_path_too(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    backend = FalBackend(async_http_client=httpx.AsyncClient(transport=httpx.MockTransport(_refuse)))

    with pytest.raises(MissingCredentialsError):
        await backend.agenerate(VisionRequest(prompt="hi"))


@pytest.mark.parametrize(
    ("env", "expected"),
    [({"FAL_KEY": "abc"}, "Key abc"), ({"FAL_KEY_ID": "id", "FAL_KEY_SECRET": "sec"}, "Key id:sec")],
)
def test_keys_from_the_environment_go_to_fal_hosts(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    _clean_env(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"output": "ok"})

    backend = FalBackend(mode="run", http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    backend.generate(VisionRequest(prompt="hi"))

    assert str(seen[0].url) == "https://fal.run/fal-ai/llava-llama3-8b-v11"
    assert seen[0].headers["authorization"] == expected
    assert seen[0].headers["user-agent"].startswith("llava-bridge/")


def test_an_environment_key_is_not_sent_to_a_server_of_your_own(
    server: FalTestServer, make_backend: Callable[..., FalBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_backend().generate(VisionRequest(prompt="hi"))  # builds with a clean environment
    monkeypatch.setenv("FAL_KEY", SECRET)

    make_backend().generate(VisionRequest(prompt="hi"))

    assert all("authorization" not in r.headers for r in server.requests)


def test_an_explicit_key_is_sent_to_every_host(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    server.require_key = SECRET
    backend = make_backend(api_key=SECRET)

    backend.generate(VisionRequest(prompt="hi"))

    assert {r.headers.get("authorization") for r in server.requests} == {f"Key {SECRET}"}


def test_the_key_never_shows_in_a_repr_an_error_or_a_log(
    server: FalTestServer, make_backend: Callable[..., FalBackend], caplog: pytest.LogCaptureFixture
) -> None:
    server.require_key = "the-right-key"
    backend = make_backend(api_key=SECRET)

    with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationError) as info:
        backend.generate(VisionRequest(prompt="hi"))

    texts = [repr(backend), str(info.value), repr(info.value), repr(info.value.body), caplog.text]
    texts += [repr(backend._ctx()), repr(backend._ctx().config)]
    assert all(SECRET not in text for text in texts)
    assert "did not accept the api_key= given in code" in str(info.value)


def test_llava_fal_base_url_points_all_four_hosts_at_one_server(
    server: FalTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_env(monkeypatch)
    monkeypatch.setenv("LLAVA_FAL_BASE_URL", server.url + "/")
    from tests.fal.conftest import photo_bytes

    with FalBackend(poll_interval=0.02) as backend:
        assert backend.generate(VisionRequest(prompt="hi", image=photo_bytes())).text.startswith(
            "I see a 896x672"
        )
        assert list(backend.stream(VisionRequest(prompt="hi")))[-1].result is not None

    assert {r.route for r in server.requests} >= {"token", "cdn_upload", "submit", "result", "stream"}


def test_job_options_travel_as_fal_headers_and_query(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    backend = make_backend(
        start_timeout=30,
        priority="low",
        hint="gpu-a",
        webhook_url="https://example.com/hook",
        headers={"X-Fal-Store-IO": "1"},
    )

    backend.generate(VisionRequest(prompt="hi"))
    list(backend.stream(VisionRequest(prompt="hi")))

    for call in (server.calls("submit")[0], server.calls("stream")[0]):
        assert call.headers["x-fal-request-timeout"] == "30"
        assert call.headers["x-fal-queue-priority"] == "low"
        assert call.headers["x-fal-runner-hint"] == "gpu-a"
        assert call.headers["x-fal-store-io"] == "1"
    assert server.calls("submit")[0].query == {"fal_webhook": "https://example.com/hook"}
    assert "x-fal-queue-priority" not in server.calls("result")[0].headers


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("fal-ai/llava-llama3-8b-v11", "max_new_tokens"),
        ("fal-ai/llavav15-13b", "max_new_tokens"),
        ("fal-ai/llava-next", "max_tokens"),
        ("someone/another-llava", "max_new_tokens"),
    ],
)
def test_endpoint_profiles_name_the_token_field(
    server: FalTestServer, make_backend: Callable[..., FalBackend], model: str, field: str
) -> None:
    result = make_backend(model=model).generate(VisionRequest(prompt="hi", max_new_tokens=40, top_p=0.9))

    call = server.calls("submit")[0]
    assert call.path == f"/{model}" and call.json()[field] == 40 and call.json()["top_p"] == 0.9
    assert server.calls("result")[0].path.startswith(f"/{model}/requests/")
    assert result.model == model


def test_a_request_may_name_its_own_endpoint(server: FalTestServer, backend: FalBackend) -> None:
    result = backend.generate(VisionRequest(prompt="hi", model="fal-ai/llava-next"))

    assert result.model == "fal-ai/llava-next" and server.calls("submit")[0].path == "/fal-ai/llava-next"


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "batch"},
        {"priority": "high"},
        {"timeout": -1},
        {"timeout": float("nan")},
        {"start_timeout": 0},
        {"max_retries": -1},
        {"inline_threshold": -5},
        {"text_only": "skip"},
        {"model": "not an endpoint"},
        {"base_url": "ftp://example.com"},
        {"headers": {"X-Bad": 1}},
        {"on_queue_update": "print"},
    ],
)
def test_bad_settings_are_refused_with_a_configuration_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        FalBackend(**options)  # type: ignore[arg-type]


def test_it_is_a_backend_with_estimated_token_counts() -> None:
    backend = FalBackend(api_key="k")

    assert isinstance(backend, Backend)
    assert backend.model_name == "fal-ai/llava-llama3-8b-v11"
    assert backend.context_window == 4096 and backend.exact_token_counts is False
    assert backend.count_tokens("abcdef") == 2


def test_a_conversation_too_long_for_the_context_fails_before_any_network() -> None:
    backend = FalBackend(api_key="k", http_client=httpx.Client(transport=httpx.MockTransport(_refuse)))

    with pytest.raises(ContextOverflowError):
        backend.generate(VisionRequest(prompt="word " * 12_000))


async def test_sync_calls_work_inside_a_running_event_loop(backend: FalBackend) -> None:
    # What a Jupyter cell does: no asyncio.run inside the sync path.
    assert backend.generate(VisionRequest(prompt="in a loop")).text.endswith("in a loop")


def test_one_backend_serves_several_event_loops_in_turn(backend: FalBackend) -> None:
    async def ask() -> str:
        return (await backend.agenerate(VisionRequest(prompt="loop"))).text

    assert asyncio.run(ask()) == asyncio.run(ask())


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"headers": {"X-Trace": "a\r\nX-Evil: 1"}}, "line break"),
        ({"headers": {"Bad Name": "v"}}, "header name"),
        ({"headers": {"": "v"}}, "header name"),
        ({"api_key": "sk-123\nsecond-line"}, "copy the key again"),
    ],
)
def test_headers_and_keys_that_could_split_a_request_are_refused_at_construction(
    options: dict[str, object], says: str
) -> None:
    with pytest.raises(ConfigurationError, match=says) as caught:
        FalBackend(base_url="http://127.0.0.1:9", **options)  # type: ignore[arg-type]

    assert "sk-123" not in str(caught.value)
