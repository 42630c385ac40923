"""`GroupCommitThread`: the one thread that uses an SQLite connection, committing work in groups.

Work items are functions of the connection, run in the order they were handed in.
Whatever is waiting when the thread looks runs as one transaction: each item in its
own savepoint (a failing item is rolled back alone and its caller gets the error),
then one COMMIT, and only then are the callers answered. So under load many
submits share one disk sync, and an answer never reports something not yet committed.

An item marked `durable` makes its group commit with ``synchronous=FULL`` (the WAL is
synced to disk: the change survives power loss); other groups commit with
``synchronous=NORMAL`` (written to the operating system before the answer: the
change survives the server being killed, not a power cut).
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["GroupCommitThread"]

T = TypeVar("T")

MAX_GROUP = 512
"""The most items one transaction takes (the rest wait for the next one)."""


@dataclass(frozen=True)
class _Item:
    work: Callable[[sqlite3.Connection], Any]
    future: Future[Any] | None
    durable: bool


class GroupCommitThread:
    """Runs work on the connection `connect()` opens, on a thread of its own; see the module docstring."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, name: str) -> None:
        self._items: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        ready: Future[sqlite3.Connection] = Future()
        self._thread = threading.Thread(target=self._run, args=(connect, ready), name=name, daemon=True)
        self._thread.start()
        self._conn = ready.result()  # raises what connect() raised

    def submit(self, work: Callable[[sqlite3.Connection], T], *, durable: bool = False) -> Future[T]:
        """Queue `work(connection)`; the future has its result once its group committed.

        Raises RuntimeError once the thread is closed.
        """
        future: Future[T] = Future()
        self._put(_Item(work, future, durable))
        return future

    def post(self, work: Callable[[sqlite3.Connection], Any]) -> None:
        """Queue `work` without waiting for it (dropped quietly once closed)."""
        try:
            self._put(_Item(work, None, False))
        except RuntimeError:
            pass

    def _put(self, item: _Item) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("The job database is closed.")
            self._items.put(item)

    def close(self) -> None:
        """Run what is queued, close the connection and end the thread (blocks)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._items.put(None)
        self._thread.join()

    # -- the thread ------------------------------------------------------------------------

    def _run(self, connect: Callable[[], sqlite3.Connection], ready: Future[sqlite3.Connection]) -> None:
        try:
            conn = connect()
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(conn)
        synchronous = ""
        try:
            while True:
                first = self._items.get()
                if first is None:
                    return
                group = [first]
                stop = False
                while len(group) < MAX_GROUP:
                    try:
                        item = self._items.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    group.append(item)
                wanted = "FULL" if any(item.durable for item in group) else "NORMAL"
                if wanted != synchronous:
                    conn.execute(f"PRAGMA synchronous={wanted}")
                    synchronous = wanted
                _run_group(conn, group)
                if stop:
                    return
        finally:
            conn.close()


def _run_group(conn: sqlite3.Connection, group: list[_Item]) -> None:
    outcomes: list[tuple[bool, Any]] = []
    try:
        conn.execute("BEGIN")
        for item in group:
            if item.future is not None and not item.future.set_running_or_notify_cancel():
                outcomes.append((False, None))  # its caller gave up before it ran, as with an executor
                continue
            conn.execute("SAVEPOINT item")
            try:
                result = item.work(conn)
            except Exception as exc:
                conn.execute("ROLLBACK TO item")
                conn.execute("RELEASE item")
                outcomes.append((False, exc))
            else:
                conn.execute("RELEASE item")
                outcomes.append((True, result))
        conn.execute("COMMIT")
    except Exception as exc:  # BEGIN or COMMIT failed (disk full, I/O error): nothing was kept
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        outcomes = [(False, exc)] * len(group)
    for item, (ok, value) in zip(group, outcomes, strict=True):
        if item.future is None or item.future.cancelled():
            continue
        if ok:
            item.future.set_result(value)
        else:
            item.future.set_exception(value)
