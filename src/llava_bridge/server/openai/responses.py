"""OpenAI's answer bodies: a chat completion, its streamed chunks, the model list."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from llava_bridge.types import Usage, VisionResult

__all__ = ["DONE_EVENT", "Completion", "chunk_event", "model_body", "models_body"]

DONE_EVENT = "data: [DONE]\n\n"
"""The event that ends every stream."""

OWNER = "llava-bridge"


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


class Completion:
    """One completion's id, creation time and model, and the bodies made for it."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def body(self, result: VisionResult) -> dict[str, Any]:
        """The whole answer (`object: chat.completion`)."""
        message = {"role": "assistant", "content": result.text, "refusal": None}
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": result.finish_reason or "stop",
        }
        return {**self._head("chat.completion"), "choices": [choice], "usage": usage_body(result.usage)}

    def chunk(
        self, delta: dict[str, Any], finish_reason: str | None = None, *, with_usage_field: bool = False
    ) -> dict[str, Any]:
        """One streamed piece (`object: chat.completion.chunk`) with one choice."""
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        body = {**self._head("chat.completion.chunk"), "choices": [choice]}
        if with_usage_field:
            body["usage"] = None
        return body

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        """The last chunk when `stream_options.include_usage` is set: no choices, the usage."""
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": usage_body(usage)}

    def _head(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
        }


def chunk_event(body: dict[str, Any]) -> str:
    """One server-sent event carrying `body` as JSON."""
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


def model_body(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": OWNER}


def models_body(models: tuple[str, ...], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_body(model, created) for model in models]}
