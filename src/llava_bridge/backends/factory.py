"""Build a backend by name: what the CLI and the server use."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping
from typing import Any, Literal, cast

from llava_bridge.backends.base import Backend
from llava_bridge.backends.fake import CANNED_ANSWER, FakeBackend, Responder, describe_image_facts
from llava_bridge.errors import ConfigurationError

__all__ = ["BACKEND_NAMES", "BackendName", "make_backend"]

BackendName = Literal["fal", "local", "openai", "fake"]
BACKEND_NAMES: tuple[BackendName, ...] = ("fal", "local", "openai", "fake")


def make_backend(
    name: str,
    *,
    model: str | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    fake_latency: float = 0.0,
    fake_answers: str = "canned",
    upstream_extra_body: str | Mapping[str, Any] | None = None,
    upstream_stop: bool | None = None,
    upstream_timeout: float | None = None,
    upstream_key_env: str | None = None,
    **options: Any,
) -> Backend:
    """A backend from its CLI name; `model`, `api_key` and `base_url` go where they apply.

    `fake_answers` picks what the fake backend says: ``canned`` (one fixed sentence),
    ``image-facts`` (the image's size and colour), or ``package.module:function``, a
    function of the `VisionRequest` (for testing your own agents against the server).
    The ``upstream_*`` settings are the openai backend's (`--upstream-extra-body` as JSON
    text or a mapping, `--no-upstream-stop`, `--upstream-timeout`, and `--upstream-key-env`:
    the name of the environment variable with the upstream key); `options` go to the
    backend's constructor as they are.
    """
    upstream = {
        "--upstream-extra-body": upstream_extra_body,
        "--no-upstream-stop": upstream_stop,
        "--upstream-timeout": upstream_timeout,
        "--upstream-key-env": upstream_key_env,
    }
    given = [flag for flag, value in upstream.items() if value is not None]
    if given and name != "openai":
        raise ConfigurationError(f"{', '.join(given)} only apply to --backend openai.")
    if name == "fake":
        return FakeBackend(
            _fake_responder(fake_answers), latency=fake_latency, model_name=model or "fake-llava"
        )
    if name == "fal":
        from llava_bridge.backends.fal.backend import FalBackend

        kwargs: dict[str, Any] = {"api_key": api_key, "base_url": base_url, **options}
        return FalBackend(model, **kwargs) if model else FalBackend(**kwargs)
    if name == "local":
        from llava_bridge.backends.local.backend import TransformersBackend

        return TransformersBackend(model, **options) if model else TransformersBackend(**options)
    if name == "openai":
        from llava_bridge.backends.openai_compat.backend import OpenAICompatBackend

        if not base_url:
            raise ConfigurationError(
                "The openai backend needs the server's URL: pass --base-url http://HOST:PORT "
                "(vLLM, llama.cpp server, LM Studio or Ollama)."
            )
        kwargs = {"api_key": api_key, **options}
        if upstream_key_env is not None:
            kwargs["api_key"] = _key_from(upstream_key_env)
        if model:
            kwargs["model"] = model
        if upstream_extra_body is not None:
            kwargs["extra_body"] = _extra_body(upstream_extra_body)
        if upstream_stop is not None:
            kwargs["send_stop"] = upstream_stop
        if upstream_timeout is not None:
            kwargs["total_timeout"] = upstream_timeout
        return OpenAICompatBackend(base_url, **kwargs)
    raise ConfigurationError(f"Unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}.")


def _key_from(variable: str) -> str:
    """`--upstream-key-env`: the key in that environment variable."""
    key = os.environ.get(variable, "").strip()
    if not key:
        raise ConfigurationError(
            f"--upstream-key-env {variable}: that environment variable is not set or empty; "
            f"export {variable}=<the upstream server's API key> first."
        )
    return key


def _extra_body(value: str | Mapping[str, Any]) -> dict[str, Any]:
    """`--upstream-extra-body`: a JSON object of fields merged into every upstream request."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigurationError(
                f"--upstream-extra-body is not valid JSON ({exc}); give an object such as "
                "'{\"stop_token_ids\": [128009]}'."
            ) from None
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"--upstream-extra-body must be a JSON object of request fields, not {value!r}."
        )
    return dict(value)


def _fake_responder(spec: str) -> str | Responder:
    """The fake backend's answers for a `fake_answers` setting."""
    if spec == "canned":
        return CANNED_ANSWER
    if spec == "image-facts":
        return describe_image_facts
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"fake answers {spec!r}: use 'canned', 'image-facts' or 'package.module:function'."
        )
    try:
        responder = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"fake answers {spec!r} cannot be imported: {exc}.") from None
    if not callable(responder):
        raise ConfigurationError(f"fake answers {spec!r} is not a function of the request.")
    return cast(Responder, responder)
