"""Constructor arguments of the LangChain classes, checked the way partner packages check theirs.

An unknown argument is refused with the closest known name (`max_token` -> `max_tokens`)
instead of being dropped; a connection setting next to `backend=` is refused, since
the backend has its own; sampling values are checked when the object is built, not at
the first call. Errors are llava-bridge's own types, raised as they are (not inside a
pydantic ValidationError).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import AliasChoices, BaseModel, ValidationError

from llava_bridge import defaults
from llava_bridge.errors import ConfigurationError, InvalidPromptError, LlavaError
from llava_bridge.types import MAX_NEW_TOKENS_LIMIT

__all__ = [
    "CONNECTION_SETTINGS",
    "accepted_names",
    "check_backend_conflicts",
    "check_sampling",
    "check_unknown",
    "default_deadline",
    "llava_error_inside",
    "value_of",
]

CONNECTION_SETTINGS = ("model", "timeout", "max_retries", "api_key", "base_url")
"""Settings of the default FalBackend; with `backend=` they belong on that backend instead."""


def accepted_names(model: type[BaseModel]) -> dict[str, str]:
    """Every name a constructor takes (field names and their aliases) -> the field name."""
    names: dict[str, str] = {}
    for field_name, info in model.model_fields.items():
        names[field_name] = field_name
        if info.alias:
            names[info.alias] = field_name
        if isinstance(info.validation_alias, AliasChoices):
            for choice in info.validation_alias.choices:
                if isinstance(choice, str):
                    names[choice] = field_name
        elif isinstance(info.validation_alias, str):
            names[info.validation_alias] = field_name
    return names


def check_unknown(owner: str, given: Iterable[str], names: Mapping[str, str]) -> None:
    """Refuse names the constructor does not take, suggesting the closest one; and one setting given twice."""
    for key in given:
        if key not in names:
            close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ConfigurationError(f"{owner} got an unknown argument {key!r}.{hint}")
    fields: dict[str, str] = {}
    for key in given:
        field = names[key]
        if field in fields:
            raise ConfigurationError(
                f"{owner} got both {fields[field]!r} and {key!r}, which are the same setting; give one."
            )
        fields[field] = key


def value_of(data: Mapping[str, Any], field: str, names: Mapping[str, str]) -> tuple[str, Any] | None:
    """(the name used, its value) for `field` in constructor arguments, under any of its names."""
    for key, value in data.items():
        if names.get(key) == field:
            return key, value
    return None


def check_backend_conflicts(owner: str, data: Mapping[str, Any], names: Mapping[str, str]) -> None:
    """Refuse connection settings given together with `backend=` (they would be ignored)."""
    if data.get("backend") is None:
        return
    given = [
        found[0]
        for field in CONNECTION_SETTINGS
        if field != "model" and (found := value_of(data, field, names)) is not None and found[1] is not None
    ]
    if given:
        raise ConfigurationError(
            f"{owner} got backend= together with {', '.join(given)}, which only configure the default "
            "FalBackend and would be ignored. Set them on the backend you pass (e.g. "
            "FalBackend(timeout=..., max_retries=...)), or drop backend=."
        )


def check_sampling(data: Mapping[str, Any], names: Mapping[str, str]) -> None:
    """temperature in [0, 2], top_p in (0, 1], max_tokens in [1, limit]; else InvalidPromptError."""
    if (found := value_of(data, "temperature", names)) is not None and found[1] is not None:
        _check_number(found[0], found[1], low=0.0, high=2.0, low_open=False)
    if (found := value_of(data, "top_p", names)) is not None and found[1] is not None:
        _check_number(found[0], found[1], low=0.0, high=1.0, low_open=True)
    if (found := value_of(data, "max_tokens", names)) is not None:
        name, value = found
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NEW_TOKENS_LIMIT:
            raise InvalidPromptError(
                f"{name} must be a whole number from 1 to {MAX_NEW_TOKENS_LIMIT}, not {value!r}."
            )


def default_deadline(data: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """`data` with `timeout` set to DEFAULT_ADAPTER_TIMEOUT_S when no timeout and no backend is given.

    An explicit `timeout=None` stays None: no deadline.
    """
    if data.get("backend") is not None or value_of(data, "timeout", names) is not None:
        return dict(data)
    return {**data, "timeout": defaults.DEFAULT_ADAPTER_TIMEOUT_S}


def llava_error_inside(exc: ValidationError) -> LlavaError | None:
    """The llava-bridge error a validator raised, when that is what pydantic wrapped."""
    for error in exc.errors():
        original = (error.get("ctx") or {}).get("error")
        if isinstance(original, LlavaError):
            return original
    return None


def _check_number(name: str, value: Any, *, low: float, high: float, low_open: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidPromptError(f"{name} must be a number, not {value!r}.")
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        bounds = f"above {low:g}" if low_open else f"at least {low:g}"
        raise InvalidPromptError(f"{name} must be {bounds} and at most {high:g}, not {value}.")
