"""Which model ids `/v1/models` lists and `/v1/chat/completions` accepts."""

from __future__ import annotations

from dataclasses import dataclass

from llava_bridge.server.openai.errors import OpenAIError

__all__ = ["ServedModels"]


@dataclass(frozen=True)
class ServedModels:
    """The served endpoint ids and the backend's model name; bare aliases are accepted too.

    `fal-ai/llava-llama3-8b-v11` can also be asked for as `llava-llama3-8b-v11`.
    """

    endpoints: tuple[str, ...]
    backend_model: str

    @property
    def listed(self) -> tuple[str, ...]:
        """The ids `/v1/models` shows, the endpoints first."""
        return tuple(dict.fromkeys((*self.endpoints, self.backend_model)))

    def accepted(self) -> frozenset[str]:
        aliases = (endpoint.split("/", 1)[-1] for endpoint in self.endpoints)
        return frozenset((*self.listed, *aliases))

    def resolve(self, model: str) -> str:
        """`model` when this server answers for it, else a 404 naming what it serves."""
        if model in self.accepted():
            return model
        raise OpenAIError(
            404,
            f"The model '{model}' does not exist on this server; it serves {', '.join(self.listed)}.",
            param="model",
            code="model_not_found",
        )
