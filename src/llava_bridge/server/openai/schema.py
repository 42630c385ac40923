"""A pydantic model's JSON schema with its `$defs` inlined, for an OpenAPI request body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["inline_schema"]


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema (by alias) with every `$ref` replaced by its definition (no recursion)."""
    schema = model.model_json_schema(by_alias=True)
    definitions: dict[str, Any] = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return inline(definitions[reference.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result
