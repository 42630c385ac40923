"""The backend an adapter uses: the one passed in, or a `FalBackend` built from its fields."""

from __future__ import annotations

import threading
from typing import Any, Protocol

from pydantic import SecretStr

from llava_bridge.backends.base import Backend
from llava_bridge.errors import ConfigurationError

__all__ = ["build_fal_backend", "check_backend", "lazy_backend", "provider_name"]


def build_fal_backend(
    *,
    model: str | None,
    api_key: SecretStr | None,
    base_url: str | None,
    timeout: float | None,
    max_retries: int | None,
) -> Backend:
    """A `FalBackend` from the adapter's fields; unset fields keep FalBackend's defaults."""
    from llava_bridge.backends.fal.backend import FalBackend

    kwargs: dict[str, Any] = {
        "api_key": api_key.get_secret_value() if api_key is not None else None,
        "base_url": base_url,
        "timeout": timeout,
    }
    if max_retries is not None:
        kwargs["max_retries"] = max_retries
    return FalBackend(model, **kwargs) if model else FalBackend(**kwargs)


class _BackendOwner(Protocol):
    """A LangChain object with llava-bridge backend fields."""

    @property
    def backend(self) -> Any: ...
    @property
    def model(self) -> str | None: ...
    @property
    def api_key(self) -> SecretStr | None: ...
    @property
    def base_url(self) -> str | None: ...
    @property
    def timeout(self) -> float | None: ...
    @property
    def max_retries(self) -> int | None: ...

    _default_backend: Backend | None
    _backend_lock: threading.Lock


def lazy_backend(owner: _BackendOwner) -> Backend:
    """`owner.backend`, or a FalBackend built from its fields on first use (once, thread-safely)."""
    if owner.backend is not None:
        backend: Backend = owner.backend
        return backend
    with owner._backend_lock:
        if owner._default_backend is None:
            owner._default_backend = build_fal_backend(
                model=owner.model,
                api_key=owner.api_key,
                base_url=owner.base_url,
                timeout=owner.timeout,
                max_retries=owner.max_retries,
            )
        return owner._default_backend


def check_backend(value: Any) -> Any:
    """Refuse a `backend=` that does not implement the `Backend` protocol."""
    if value is not None and not isinstance(value, Backend):
        raise ConfigurationError(
            f"backend= takes a llava_bridge backend (FalBackend, TransformersBackend, "
            f"OpenAICompatBackend, FakeBackend), not a {type(value).__name__}."
        )
    return value


def provider_name(backend: Backend | None) -> str:
    """A short provider name for tracing: 'fal' by default, else from the backend's class."""
    if backend is None:
        return "fal"
    name = type(backend).__name__.removesuffix("Backend").lower()
    return name or "llava"
