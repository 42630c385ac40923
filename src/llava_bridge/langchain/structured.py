"""Structured output for a model without tools or a JSON mode: instructions in the prompt, then parsing.

The instructions are `llava_bridge.structured_output`'s (the server's /v1 route uses the same).
`json_schema` puts the schema in the prompt; `json_mode` asks for a JSON object
(naming the schema's top-level keys when a schema is given) and leaves the rest to
the caller's prompt. `function_calling` is accepted and handled as `json_schema`.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Literal

from langchain_core.language_models import LanguageModelInput
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema
from langchain_core.utils.pydantic import is_basemodel_subclass

from llava_bridge.errors import InvalidRequestError
from llava_bridge.structured_output import JsonMethod, json_instructions

__all__ = ["StructuredMethod", "json_instructions", "output_parser", "structured_runnable"]

StructuredMethod = Literal["json_schema", "json_mode", "function_calling"]


def output_parser(schema: Any) -> JsonOutputParser:
    """A parser that yields a pydantic object for a pydantic class, else a dict."""
    if isinstance(schema, type) and is_basemodel_subclass(schema):
        return PydanticOutputParser(pydantic_object=schema)
    return JsonOutputParser()


def structured_runnable(
    model: Runnable[LanguageModelInput, Any],
    schema: Any,
    *,
    method: str,
    include_raw: bool,
) -> Runnable[LanguageModelInput, Any]:
    """`model` bound to answer in JSON for `schema`, piped into a parser (or a raw/parsed map)."""
    if method not in ("json_schema", "json_mode", "function_calling"):
        raise InvalidRequestError(
            f"Unknown structured-output method {method!r}; use 'json_schema' or 'json_mode' "
            "('function_calling' is handled as 'json_schema': LLaVA has no tools)."
        )
    if schema is None and method != "json_mode":
        raise InvalidRequestError(f"method={method!r} needs a schema; pass one or use method='json_mode'.")
    json_schema = convert_to_json_schema(schema) if schema is not None else None
    effective: JsonMethod = "json_mode" if method == "json_mode" else "json_schema"
    bind: dict[str, Any] = {"json_instructions": json_instructions(effective, json_schema)}
    if schema is not None:
        bind["ls_structured_output_format"] = {"kwargs": {"method": method}, "schema": schema}
    bound = model.bind(**bind)
    parser = output_parser(schema)
    if not include_raw:
        return bound | parser
    parse = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    no_parse = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | parse.with_fallbacks([no_parse], exception_key="parsing_error")
