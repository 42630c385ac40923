"""Choosing the backend and pickling a component with its backend."""

from __future__ import annotations

import pickle
from typing import Any

from pydantic import SecretStr

from llava_bridge.backends.base import Backend
from llava_bridge.defaults import DEFAULT_ENDPOINT
from llava_bridge.errors import ConfigurationError

__all__ = ["DEFAULT_MODEL", "ensure_picklable", "resolve_backend", "restore_with_backend"]

DEFAULT_MODEL = DEFAULT_ENDPOINT
"""The fal endpoint the adapters use when no backend is given."""


def resolve_backend(
    backend: Backend | None,
    *,
    model: str | None = None,
    api_key: str | SecretStr | None = None,
    base_url: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
) -> Backend:
    """`backend` as given, or a `FalBackend` built from the other arguments.

    The fal settings only configure the default backend; giving them along with a
    backend is an error, so that a setting is never silently ignored.
    """
    fal_options: dict[str, Any] = {
        "api_key": api_key,
        "base_url": base_url,
        "timeout": timeout,
        "max_retries": max_retries,
    }
    given = {name: value for name, value in fal_options.items() if value is not None}
    if backend is not None:
        if given or model is not None:
            names = ", ".join(f"{name}=" for name in [*given, *(["model"] if model else [])])
            raise ConfigurationError(
                f"{names} configure the default FalBackend, but backend= was given too; "
                "set them on the backend you pass instead."
            )
        if not isinstance(backend, Backend):
            raise ConfigurationError(
                f"backend= must be a llava_bridge Backend (FalBackend, TransformersBackend, "
                f"OpenAICompatBackend, FakeBackend), not {type(backend).__name__}."
            )
        return backend
    from llava_bridge.backends.fal.backend import FalBackend

    return FalBackend(model or DEFAULT_MODEL, **given)


def ensure_picklable(backend: Backend, owner: str, advice: str = "") -> None:
    """Raise a clear error when `backend` cannot travel to another process."""
    try:
        pickle.dumps(backend)
    except Exception as exc:
        raise ConfigurationError(
            f"{owner} cannot be pickled (e.g. to send it to worker processes) because its backend "
            f"({type(backend).__name__}) cannot be; create it in the process that uses it. {advice}".rstrip()
        ) from exc


def restore_with_backend(component: Any, state: dict[Any, Any]) -> None:
    """Unpickle `component` by running its `__init__` again with the pickled backend.

    `BaseComponent` would otherwise drop the private `_backend`; for `__setstate__`.
    """
    backend = (state.get("__pydantic_private__") or {})["_backend"]
    component.__init__(backend=backend, **state["__dict__"])
