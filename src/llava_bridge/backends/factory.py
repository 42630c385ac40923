"""Build a backend by name: what the CLI and the server use."""

from __future__ import annotations

import importlib
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
    **options: Any,
) -> Backend:
    """A backend from its CLI name; `model`, `api_key` and `base_url` go where they apply.

    `fake_answers` picks what the fake backend says: ``canned`` (one fixed sentence),
    ``image-facts`` (the image's size and colour), or ``package.module:function``, a
    function of the `VisionRequest` (for testing your own agents against the server).
    """
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
        if model:
            kwargs["model"] = model
        return OpenAICompatBackend(base_url, **kwargs)
    raise ConfigurationError(f"Unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}.")


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
