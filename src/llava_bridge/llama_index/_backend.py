"""Choosing the backend and pickling a component with its backend."""

from __future__ import annotations

import enum
import pickle
from typing import Any, Final, Literal

from pydantic import SecretStr

from llava_bridge import defaults
from llava_bridge.backends.base import Backend
from llava_bridge.defaults import DEFAULT_ENDPOINT
from llava_bridge.errors import ConfigurationError

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT",
    "FAL_SETTINGS",
    "DefaultTimeout",
    "default_timeout",
    "ensure_picklable",
    "resolve_backend",
    "restore_with_backend",
]

DEFAULT_MODEL = DEFAULT_ENDPOINT
"""The fal endpoint the adapters use when no backend is given."""

FAL_SETTINGS: Final = ("model", "api_key", "base_url", "timeout", "max_retries")
"""Constructor settings that configure the default `FalBackend` (and only it)."""


class DefaultTimeout(enum.Enum):
    """Marks "no timeout= given": the adapters' default deadline applies."""

    DEFAULT = "default"

    def __repr__(self) -> str:
        return "DEFAULT_ADAPTER_TIMEOUT_S"


DEFAULT_TIMEOUT: Final = DefaultTimeout.DEFAULT
"""The default of every adapter's `timeout=`: `defaults.DEFAULT_ADAPTER_TIMEOUT_S` seconds."""

TimeoutSetting = float | None | Literal[DefaultTimeout.DEFAULT]


def default_timeout() -> float:
    """The adapters' default whole-call deadline, read when a component is built."""
    return defaults.DEFAULT_ADAPTER_TIMEOUT_S


def resolve_backend(
    backend: Backend | None,
    *,
    model: str | None = None,
    api_key: str | SecretStr | None = None,
    base_url: str | None = None,
    timeout: TimeoutSetting = DEFAULT_TIMEOUT,
    max_retries: int | None = None,
) -> Backend:
    """`backend` as given, or a `FalBackend` built from the other arguments.

    The fal settings only configure the default backend; giving them along with a
    backend is an error, so that a setting is never silently ignored. Without
    `timeout=`, the default backend gets the adapters' finite default deadline;
    `timeout=None` waits without limit.
    """
    fal_options: dict[str, Any] = {
        "api_key": api_key,
        "base_url": base_url,
        "timeout": None if timeout is DEFAULT_TIMEOUT else timeout,
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

    given["timeout"] = default_timeout() if timeout is DEFAULT_TIMEOUT else timeout
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
    The fal settings recorded in the fields describe that backend, so they are not
    given again.
    """
    backend = (state.get("__pydantic_private__") or {})["_backend"]
    fields = {name: value for name, value in state["__dict__"].items() if name not in FAL_SETTINGS}
    component.__init__(backend=backend, **fields)
