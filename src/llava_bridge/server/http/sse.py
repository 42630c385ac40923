"""Server-sent events, as fal's status stream and `/stream` send them."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["sse_event"]


def sse_event(data: Any, event: str | None = None) -> str:
    """One event: an optional `event:` line and one `data:` line of JSON."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n"
