"""A CSV log written as rows come (``history.csv``): a reader never sees a half line.

The header, and the rows so far when they must be rewritten (a resumed run, a new column), are
written atomically (temporary file, rename); every other row is appended as one ``write`` of one
whole line, flushed and fsynced.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from climai.io.atomic import write_text


def _csv_text(rows: Iterable[dict[str, Any]], fields: list[str], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class CsvLog:
    """``path`` holding ``rows`` (columns: ``fields``, then any new key in first-seen order)."""

    def __init__(self, path: str | Path, fields: Iterable[str]) -> None:
        self.path = Path(path)
        self.fields = list(fields)
        self.rows: list[dict[str, Any]] = []

    def reset(self, rows: list[dict[str, Any]]) -> None:
        """Write the header and ``rows`` atomically, replacing the file."""
        self.rows = [dict(r) for r in rows]
        self.fields += [k for r in self.rows for k in r if k not in self.fields]
        self.fields = list(dict.fromkeys(self.fields))
        write_text(self.path, _csv_text(self.rows, self.fields, header=True))

    def append(self, row: dict[str, Any]) -> None:
        """Add ``row``: one appended line, or the whole file rewritten if it brings a new column."""
        if any(k not in self.fields for k in row) or not self.path.exists():
            self.reset([*self.rows, row])
            return
        line = _csv_text([row], self.fields, header=False)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.rows.append(dict(row))
