"""`BackendSpec`: a backend by name and settings, small enough to send to every Ray actor.

A backend object holds connections, threads or a model, none of which travel between
processes; the spec does, and each actor builds its own backend from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from llava_bridge.backends.base import Backend
from llava_bridge.backends.factory import BACKEND_NAMES, make_backend
from llava_bridge.errors import ConfigurationError

__all__ = ["BackendFactory", "BackendSpec", "build_backend"]

BackendFactory = Callable[[], Backend]
"""A function that builds a backend; Ray pickles it (with cloudpickle) to each actor."""


@dataclass(frozen=True)
class BackendSpec:
    """What `make_backend` needs: the CLI's backend name (fal, local, openai, fake) and settings.

    `api_key` is kept as a `SecretStr`: it never shows in a repr. Without one, each actor
    reads its own environment (FAL_KEY), as the CLI does; on a cluster of several machines,
    set it there or pass `api_key`. `options` go to the backend's constructor (for example
    `device_map` for `local`, `fake_answers` for `fake`).
    """

    name: str
    model: str | None = None
    base_url: str | None = None
    api_key: SecretStr | None = None
    fake_latency: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in BACKEND_NAMES:
            raise ConfigurationError(
                f"Unknown backend {self.name!r}; choose one of {', '.join(BACKEND_NAMES)}."
            )
        if isinstance(self.api_key, str):
            object.__setattr__(self, "api_key", SecretStr(self.api_key))

    @property
    def uses_gpu(self) -> bool:
        """Whether the backend runs the model in the actor's own process (one GPU each)."""
        return self.name == "local"

    def build(self) -> Backend:
        """A new backend from this spec (in the process that calls it)."""
        return make_backend(
            self.name,
            model=self.model,
            api_key=self.api_key.get_secret_value() if self.api_key is not None else None,
            base_url=self.base_url,
            fake_latency=self.fake_latency,
            **dict(self.options),
        )


def build_backend(backend: BackendSpec | BackendFactory) -> Backend:
    """A backend from a spec or a factory function."""
    if isinstance(backend, BackendSpec):
        return backend.build()
    if not callable(backend):
        raise ConfigurationError(
            f"backend= takes a BackendSpec or a function that returns a backend, not "
            f"{type(backend).__name__}; a backend object cannot be sent to Ray's actors."
        )
    return backend()
