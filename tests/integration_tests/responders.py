"""A fake model that follows the request: JSON for the schema or keys the prompt asks for, else text.

Used as `FakeBackend(answer)` so LangChain's structured-output tests get parseable
answers computed from what ChatLlava actually sent.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llava_bridge import VisionRequest

_SCHEMA = re.compile(r"JSON schema:\n(\{.*\})\s*$", re.S)
_KEYS = re.compile(r"Use these keys: ([^\n]+)\.\s*$")


def _value(name: str, spec: dict[str, Any]) -> Any:
    kinds = [spec.get("type")] + [option.get("type") for option in spec.get("anyOf", [])]
    if "integer" in kinds:
        return 3
    if "number" in kinds:
        return 1.5
    if "boolean" in kinds:
        return True
    if "array" in kinds:
        return []
    return f"A {name} about a cat and a laser pointer."


def answer(request: VisionRequest) -> str:
    """The answer a compliant model would give to this request's latest turn."""
    prompt = request.prompt
    if match := _SCHEMA.search(prompt):
        properties = json.loads(match.group(1)).get("properties", {})
        return json.dumps({name: _value(name, spec) for name, spec in properties.items()})
    if match := _KEYS.search(prompt):
        return json.dumps({key.strip(): _value(key.strip(), {}) for key in match.group(1).split(",")})
    seen = "an image" if request.image is not None else "no image"
    return f"Hello! I looked at {seen} and read your message of {len(prompt)} characters."
