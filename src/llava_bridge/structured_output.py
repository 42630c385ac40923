"""JSON answers from a model without a JSON mode: instructions appended to the latest user turn.

`json_instructions` is the one wording ChatLlava's structured output and the server's
/v1/chat/completions `response_format` both use (the server must not import LangChain); `with_instructions`
appends it to a request's latest turn, separated by a blank line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from llava_bridge.types import VisionRequest

__all__ = ["JsonMethod", "json_instructions", "with_instructions"]

JsonMethod = Literal["json_schema", "json_mode"]


def json_instructions(method: JsonMethod, schema: Mapping[str, Any] | None) -> str:
    """What to append to the latest user turn so the model answers in JSON."""
    base = "Reply with one JSON object and nothing else: no prose, no code fences."
    if schema is None:
        return base
    if method == "json_mode":
        keys = list(schema.get("properties", {}))
        return f"{base} Use these keys: {', '.join(keys)}." if keys else base
    return f"{base} It must match this JSON schema:\n{json.dumps(schema, separators=(',', ':'))}"


def with_instructions(request: VisionRequest, instructions: str) -> VisionRequest:
    """`request` with `instructions` appended to its latest turn (after a blank line)."""
    latest = request.messages[-1]
    amended = latest.model_copy(update={"content": f"{latest.content}\n\n{instructions}"})
    return request.model_copy(update={"messages": (*request.messages[:-1], amended)})
