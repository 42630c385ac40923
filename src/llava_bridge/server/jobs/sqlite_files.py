"""Uploaded files' SQL, kept in the job database until they expire (`sqlite.py` runs it).

Two ways in, as on fal: a direct upload, and initiate-then-PUT (an id reserved
by `create_pending`, its bytes given once by `fill_pending`). Files are served
back by their random id.
"""

from __future__ import annotations

import sqlite3

from llava_bridge.server.jobs.protocol import StoredFile, new_file_id
from llava_bridge.server.jobs.sqlite_jobs import transaction

__all__ = ["create_pending", "fill_pending", "get_file", "purge_files", "put_file"]


def put_file(
    conn: sqlite3.Connection,
    data: bytes,
    *,
    content_type: str,
    file_name: str | None,
    now: float,
    expires_at: float,
) -> str:
    """Store bytes; return the new file's id."""
    file_id = new_file_id()
    conn.execute(
        "INSERT INTO files (id, content_type, file_name, data, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (file_id, content_type, file_name, data, now, expires_at),
    )
    return file_id


def create_pending(
    conn: sqlite3.Connection, *, content_type: str, file_name: str | None, now: float, expires_at: float
) -> str:
    """Reserve an id whose bytes come later with `fill_pending`."""
    file_id = new_file_id()
    conn.execute(
        "INSERT INTO files (id, content_type, file_name, data, created_at, expires_at) "
        "VALUES (?, ?, ?, NULL, ?, ?)",
        (file_id, content_type, file_name, now, expires_at),
    )
    return file_id


def fill_pending(conn: sqlite3.Connection, file_id: str, data: bytes, content_type: str | None) -> bool:
    """Give a reserved id its bytes, once; False when there is no such empty reservation."""
    with transaction(conn):
        cursor = conn.execute(
            "UPDATE files SET data = ?, content_type = COALESCE(?, content_type) "
            "WHERE id = ? AND data IS NULL",
            (data, content_type, file_id),
        )
    return cursor.rowcount == 1


def get_file(conn: sqlite3.Connection, file_id: str, *, now: float) -> StoredFile | None:
    """The file with its bytes, or None when unknown, not yet uploaded, or expired."""
    row = conn.execute(
        "SELECT id, content_type, file_name, data FROM files "
        "WHERE id = ? AND data IS NOT NULL AND expires_at > ?",
        (file_id, now),
    ).fetchone()
    if row is None:
        return None
    return StoredFile(row["id"], row["content_type"], row["file_name"], bytes(row["data"]))


def purge_files(conn: sqlite3.Connection, *, now: float) -> int:
    """Delete expired files."""
    return conn.execute("DELETE FROM files WHERE expires_at <= ?", (now,)).rowcount
