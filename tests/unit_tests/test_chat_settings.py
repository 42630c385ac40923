"""ChatLlava's settings behave like the partner chat models': checked when built, aliases, serializable."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core import exceptions as lc_errors
from langchain_core.load import dumpd, dumps, load
from langchain_core.runnables import ConfigurableField

from llava_bridge import FakeBackend, FalBackend
from llava_bridge._version import __version__
from llava_bridge.defaults import DEFAULT_ADAPTER_TIMEOUT_S
from llava_bridge.errors import APIConnectionError, ConfigurationError, InvalidImageError, InvalidPromptError
from llava_bridge.langchain import ChatLlava, is_retryable

BAD_SETTINGS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"max_token": 50}, ConfigurationError, "unknown argument 'max_token'. Did you mean max_tokens?"),
    ({"temprature": 0.2}, ConfigurationError, "Did you mean temperature?"),
    ({"frobnicate": 1}, ConfigurationError, "unknown argument 'frobnicate'."),
    ({"backend": FakeBackend(), "timeout": 5}, ConfigurationError, "backend= together with timeout"),
    ({"backend": FakeBackend(), "request_timeout": 5}, ConfigurationError, "together with request_timeout"),
    ({"backend": FakeBackend(), "max_retries": 0}, ConfigurationError, "together with max_retries"),
    ({"backend": FakeBackend(), "api_key": "k"}, ConfigurationError, "together with api_key"),
    ({"backend": FakeBackend(), "base_url": "http://127.0.0.1:1"}, ConfigurationError, "with base_url"),
    ({"timeout": 5, "request_timeout": 6}, ConfigurationError, "both 'timeout' and 'request_timeout'"),
    ({"stop": ["a"], "stop_sequences": ["b"]}, ConfigurationError, "both 'stop' and 'stop_sequences'"),
    ({"temperature": -1}, InvalidPromptError, "temperature must be at least 0 and at most 2, not -1"),
    ({"temperature": 2.5}, InvalidPromptError, "temperature must be"),
    ({"temperature": float("nan")}, InvalidPromptError, "temperature must be a number"),
    ({"top_p": 0}, InvalidPromptError, "top_p must be above 0 and at most 1, not 0"),
    ({"top_p": 1.5}, InvalidPromptError, "top_p must be above 0"),
    ({"max_tokens": 0}, InvalidPromptError, "max_tokens must be a whole number from 1"),
    ({"max_new_tokens": 100_000}, InvalidPromptError, "max_new_tokens must be a whole number"),
]


@pytest.mark.parametrize(("settings", "error", "message"), BAD_SETTINGS)
def test_bad_settings_raise_when_built(
    settings: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        ChatLlava(**settings)
    assert message in str(caught.value)


def test_partner_names_are_aliases() -> None:
    llm = ChatLlava(
        model_name="fal-ai/llava-next", request_timeout=30, stop_sequences=["END"], max_new_tokens=9
    )
    assert (llm.model, llm.model_name, llm.timeout, llm.stop, llm.max_tokens) == (
        "fal-ai/llava-next",
        "fal-ai/llava-next",
        30.0,
        ["END"],
        9,
    )
    assert ChatLlava(backend=FakeBackend(model_name="mine")).model_name == "mine"


def test_none_is_not_a_conflict_with_backend() -> None:
    """configurable_fields rebuilds a model from all its fields; unset connection settings are None."""
    llm = ChatLlava(backend=FakeBackend(), timeout=None, api_key=None, max_retries=None, base_url=None)
    assert llm.timeout is None
    configurable = llm.configurable_fields(temperature=ConfigurableField(id="temperature"))
    assert configurable.invoke("hi", config={"configurable": {"temperature": 0.5}}).content


def test_default_deadline_reaches_the_default_backend() -> None:
    llm = ChatLlava(api_key="k")
    assert llm.timeout == DEFAULT_ADAPTER_TIMEOUT_S == 120.0
    backend = llm.get_backend()
    assert isinstance(backend, FalBackend) and backend.timeout == DEFAULT_ADAPTER_TIMEOUT_S
    assert ChatLlava(timeout=None, api_key="k").get_backend().timeout is None
    assert ChatLlava(request_timeout=7, api_key="k").get_backend().timeout == 7.0


def test_profile_version_stamp_and_identity() -> None:
    llm = ChatLlava()
    assert llm.profile is not None
    assert llm.profile["structured_output"] is True and llm.profile["image_inputs"] is True
    assert llm.profile["tool_calling"] is False
    assert llm.metadata is not None and llm.metadata["lc_versions"]["llava-bridge"] == __version__
    assert ChatLlava.is_lc_serializable() and llm.lc_secrets == {"api_key": "FAL_KEY"}


def test_dumpd_load_round_trip_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAL_KEY", raising=False)
    llm = ChatLlava(
        model="fal-ai/llava-next",
        api_key="sk-very-secret",
        base_url="http://127.0.0.1:9",
        request_timeout=30,
        temperature=0.2,
        top_p=0.9,
        stop_sequences=["END"],
        multi_image="first",
    )
    data = dumpd(llm)
    text = json.dumps(data)
    assert "sk-very-secret" not in text and "sk-very-secret" not in dumps(llm)
    assert data["kwargs"]["api_key"] == {"lc": 1, "type": "secret", "id": ["FAL_KEY"]}
    revived = load(data, valid_namespaces=["llava_bridge"], allowed_objects=[ChatLlava])
    assert isinstance(revived, ChatLlava) and revived.api_key is None
    for field in (
        "model",
        "base_url",
        "timeout",
        "temperature",
        "top_p",
        "stop",
        "multi_image",
        "max_tokens",
    ):
        assert getattr(revived, field) == getattr(llm, field), field
    with_key = load(
        data, valid_namespaces=["llava_bridge"], allowed_objects=[ChatLlava], secrets_map={"FAL_KEY": "k2"}
    )
    assert with_key.api_key is not None and with_key.api_key.get_secret_value() == "k2"


def test_no_deadline_survives_a_round_trip() -> None:
    revived = load(
        dumpd(ChatLlava(timeout=None)), valid_namespaces=["llava_bridge"], allowed_objects=[ChatLlava]
    )
    assert revived.timeout is None


def test_a_model_with_a_backend_serializes_as_not_implemented() -> None:
    data = dumpd(ChatLlava(backend=FakeBackend()))
    assert data["type"] == "not_implemented"
    with pytest.raises(NotImplementedError):
        load(data, valid_namespaces=["llava_bridge"], allowed_objects=[ChatLlava])


def test_with_retry_does_not_retry_an_invalid_image() -> None:
    backend = FakeBackend(error=InvalidImageError("The bytes are not an image."))
    llm = ChatLlava(backend=backend).with_retry(exponential_jitter_params={"initial": 0.01, "max": 0.02})
    with pytest.raises(InvalidImageError):
        llm.invoke("hi")
    assert len(backend.history) == 1


def test_with_retry_retries_what_can_succeed() -> None:
    backend = FakeBackend(error=APIConnectionError("The connection was reset."))
    llm = ChatLlava(backend=backend).with_retry(exponential_jitter_params={"initial": 0.01, "max": 0.02})
    with pytest.raises(APIConnectionError):
        llm.invoke("hi")
    assert len(backend.history) == 3


def test_is_retryable_reads_both_error_trees() -> None:
    assert is_retryable(APIConnectionError("reset")) and not is_retryable(InvalidImageError("x"))
    assert is_retryable(lc_errors.ModelRateLimitError("slow down"))
    assert not is_retryable(lc_errors.ModelAuthenticationError("bad key"))
    assert not is_retryable(TypeError("a bug"))
