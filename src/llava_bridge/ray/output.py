"""Where `describe --engine ray` writes its records: JSONL, or Parquet when `--out` ends in .parquet.

Both hold the in-process schema (`source`, `description`, `model`, `request_id`, `error`).
JSONL is appended line by line, so even a crash leaves a valid file. Parquet is written
to ``OUT.partial`` in row groups and renamed to `out` when the run ends (interrupted or
not), so `out` is always a whole file; `--resume` reads the records that succeeded from
either.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from llava_bridge.describe import RECORD_FIELDS, JsonlWriter, done_records
from llava_bridge.errors import InvalidRequestError

__all__ = ["RECORD_SCHEMA", "ParquetWriter", "RecordWriter", "is_parquet", "open_writer", "previous_records"]

RECORD_SCHEMA = pa.schema([(name, pa.string()) for name in RECORD_FIELDS])
ROW_GROUP = 1024


class RecordWriter(Protocol):
    """Takes one record at a time; `close(keep=False)` drops a file that holds nothing."""

    described: int

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self, *, keep: bool) -> None: ...


def is_parquet(out: Path) -> bool:
    return out.suffix.lower() == ".parquet"


def previous_records(out: Path) -> list[dict[str, Any]]:
    """The records of an earlier run that succeeded (the ones `--resume` skips)."""
    if not is_parquet(out):
        return done_records(out)
    if not out.exists():
        return []
    try:
        table = pq.read_table(out, columns=list(RECORD_FIELDS))
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise InvalidRequestError(
            f"Cannot resume from {str(out)!r}: it is not a describe Parquet file ({exc}); "
            "pass --overwrite to replace it."
        ) from None
    return [record for record in table.to_pylist() if record["error"] is None and record["source"]]


def open_writer(out: Path, kept: list[dict[str, Any]]) -> RecordWriter:
    """A writer for `out` that first writes `kept` (the records a resumed run keeps)."""
    if is_parquet(out):
        return ParquetWriter(out, kept)
    return JsonlWriter(out, [json.dumps(record, ensure_ascii=False) for record in kept])


class ParquetWriter:
    """Buffers records into row groups of ``OUT.partial``; `close` renames it to `out`."""

    def __init__(self, out: Path, kept: list[dict[str, Any]]) -> None:
        self.out = out
        self.partial = out.with_name(out.name + ".partial")
        self.described = 0
        self._kept = len(kept)
        self._rows: list[dict[str, Any]] = list(kept)
        self._file: pq.ParquetWriter | None = None

    def write(self, record: dict[str, Any]) -> None:
        self._rows.append({name: record.get(name) for name in RECORD_FIELDS})
        self.described += record["error"] is None
        if len(self._rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        if self._file is None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._file = pq.ParquetWriter(self.partial, RECORD_SCHEMA)
            except OSError as exc:
                raise InvalidRequestError(f"Cannot write {str(self.out)!r}: {exc}.") from None
        self._file.write_table(pa.Table.from_pylist(self._rows, schema=RECORD_SCHEMA))
        self._rows = []

    def close(self, *, keep: bool) -> None:
        """Finish the file and put it at `out`; unless `keep`, a run that described nothing writes none."""
        drop = not keep and not self._kept and not self.described
        if drop:
            self._rows = []
        self._flush()
        if self._file is None:
            return
        self._file.close()
        if drop:
            self.partial.unlink(missing_ok=True)
        else:
            os.replace(self.partial, self.out)
