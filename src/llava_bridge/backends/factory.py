"""Build a backend by name: what the CLI and the server use."""

from __future__ import annotations

from typing import Any, Literal

from ..errors import ConfigurationError
from .base import Backend
from .fake import FakeBackend

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
    **options: Any,
) -> Backend:
    """A backend from its CLI name; `model`, `api_key` and `base_url` go where they apply."""
    if name == "fake":
        return FakeBackend(latency=fake_latency, model_name=model or "fake-llava")
    if name == "fal":
        from .fal import FalBackend

        kwargs: dict[str, Any] = {"api_key": api_key, "base_url": base_url, **options}
        return FalBackend(model, **kwargs) if model else FalBackend(**kwargs)
    if name == "local":
        from .transformers import TransformersBackend

        return TransformersBackend(model, **options) if model else TransformersBackend(**options)
    if name == "openai":
        from .openai_compat import OpenAICompatBackend

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
