"""Every public error pickles with its message and attributes (multiprocessing and Ray send them)."""

from __future__ import annotations

import inspect
import pickle
from typing import Any

import pytest

from llava_bridge import errors

SAMPLE_ARGUMENTS: dict[str, Any] = {
    "message": "something went wrong; do this instead",
    "status_code": 418,
    "request_id": "req-123",
    "error_type": "runner_scheduling_failure",
    "body": {"detail": [{"loc": ["body", "prompt"], "msg": "too long"}]},
    "needed": 9000,
    "available": 8192,
    "timeout": 2.5,
    "url": "http://gpu-box:8000/fal-ai/llava-llama3-8b-v11",
    "reason": "the submit request failed after 5 attempts: connection refused",
}

ERROR_CLASSES = sorted(
    (value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Exception)),
    key=lambda cls: cls.__name__,
)


def build(cls: type[Exception]) -> Exception:
    """An instance of `cls` with every constructor argument set to a sample value."""
    try:
        parameters = inspect.signature(cls).parameters
    except ValueError:  # no __init__ of its own: Exception's (message)
        return cls(SAMPLE_ARGUMENTS["message"])
    positional = [
        SAMPLE_ARGUMENTS[name] for name, p in parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    keywords = {name: SAMPLE_ARGUMENTS[name] for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    return cls(*positional, **keywords)


def test_the_table_covers_every_public_error() -> None:
    public = {name for name in errors.__all__ if isinstance(getattr(errors, name), type)}
    assert public <= {cls.__name__ for cls in ERROR_CLASSES}
    assert len(ERROR_CLASSES) >= 20


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_an_error_survives_pickling_with_its_attributes(cls: type[Exception]) -> None:
    error = build(cls)
    error.__dict__.setdefault("note_set_later", "kept too")
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(error, protocol=protocol))
        assert type(copy) is cls
        assert str(copy) == str(error)
        assert copy.args == error.args
        assert vars(copy) == vars(error)


def test_an_error_from_status_error_keeps_its_class_and_fields() -> None:
    error = errors.status_error(401, {"detail": "Invalid key"}, request_id="r-9", endpoint="fal-ai/x")
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, errors.AuthenticationError)
    assert (copy.status_code, copy.request_id, copy.body) == (401, "r-9", {"detail": "Invalid key"})
    assert str(copy) == str(error)
