"""The server's jobs and uploaded files behind one `JobStore` protocol (`protocol.py`).

`open_job_store(location)` picks the store from the location's scheme: a plain
path (or ``:memory:``) or ``sqlite://PATH`` is SQLite (`sqlite.py`, durable),
``memory://`` keeps everything in this process (`memory.py`). Another store is
one module with an async `open(location)` class method plus one line in `STORES`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from llava_bridge.errors import ConfigurationError
from llava_bridge.server.jobs.memory import MemoryJobStore
from llava_bridge.server.jobs.protocol import JobStore
from llava_bridge.server.jobs.sqlite import SQLiteJobStore

__all__ = ["STORES", "JobStore", "check_job_store_location", "open_job_store"]

STORES: dict[str, Callable[[str], Awaitable[JobStore]]] = {
    "sqlite": SQLiteJobStore.open,
    "memory": MemoryJobStore.open,
}
"""URL scheme -> the store's opener, which gets what follows ``scheme://``."""


def check_job_store_location(location: str) -> None:
    """Raise ConfigurationError (naming --db) when no store is known for `location`'s scheme."""
    _opener(location)


def _opener(location: str) -> tuple[Callable[[str], Awaitable[JobStore]], str]:
    scheme, separator, rest = location.partition("://")
    if not separator:
        return SQLiteJobStore.open, location
    opener = STORES.get(scheme.lower())
    if opener is None:
        raise ConfigurationError(
            f"No job store is known for '{scheme}://' locations (--db); use a file path (SQLite) "
            f"or one of {', '.join(name + '://' for name in STORES)}."
        )
    return opener, rest


async def open_job_store(location: str) -> JobStore:
    """Open the store `location` names (see the module docstring)."""
    opener, rest = _opener(location)
    return await opener(rest)
