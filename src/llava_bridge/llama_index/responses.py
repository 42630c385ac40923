"""Core results to LlamaIndex `ChatResponse`s, with usage where `TokenCountingHandler` reads it."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole

from llava_bridge.types import VisionChunk, VisionResult

__all__ = ["StreamAssembler", "chat_response", "raw_result"]


def raw_result(result: VisionResult) -> dict[str, Any]:
    """The result as a plain dict; `usage` has prompt/completion/total tokens and `estimated`."""
    return {
        "text": result.text,
        "usage": usage_dict(result),
        "finish_reason": result.finish_reason,
        "model": result.model,
        "request_id": result.request_id,
        "metrics": dict(result.metrics),
        "logs": list(result.logs),
    }


def usage_dict(result: VisionResult) -> dict[str, Any]:
    usage = result.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "estimated": usage.estimated,
    }


def chat_response(result: VisionResult) -> ChatResponse:
    """A complete answer; usage in `raw["usage"]`, mirrored in `additional_kwargs`."""
    return ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, content=result.text),
        raw=raw_result(result),
        additional_kwargs=usage_dict(result),
    )


class StreamAssembler:
    """Turns streamed chunks into cumulative `ChatResponse`s; the last one carries usage."""

    def __init__(self) -> None:
        self.text = ""

    def feed(self, chunk: VisionChunk) -> ChatResponse:
        self.text += chunk.delta
        if chunk.result is None:
            return ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=self.text), delta=chunk.delta
            )
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=chunk.result.text),
            delta=chunk.delta,
            raw=raw_result(chunk.result),
            additional_kwargs=usage_dict(chunk.result),
        )
