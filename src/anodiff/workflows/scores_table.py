"""``scores.csv`` of ``anodiff detect``: one row per input case, kept across runs.

Rerunning ``detect`` into the same folder (a cohort processed in batches, a failed case
retried) updates the rows of the inputs it processes and keeps every other row, in the
order they were first written; the file is rewritten atomically after each case, so a
crash leaves the previous complete version. Rows are keyed by the ``input`` column (the
path the case was read from, as given).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anodiff.data.datasets.tables import read_csv
from anodiff.errors import AnodiffError
from anodiff.outputs import write_text_atomic


class ScoresTable:
    """The rows of a ``scores.csv`` (earlier ones first), updated and written in place."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        """Read the earlier rows; a file in the way that is not a scores.csv is a named
        error (raised before any work, as detect makes the table first)."""
        self.path, self.columns = path, list(columns)
        self.rows: dict[str, dict[str, Any]] = {}
        if path.exists() and not path.is_file():
            raise AnodiffError(f"{path}: a folder where detect writes its scores.csv; choose "
                               "another --out")
        if path.is_file():
            for _, row in read_csv(path, ["input", "status"]):
                self.rows[row["input"]] = {c: row.get(c, "") for c in self.columns}

    def put(self, row: dict[str, Any]) -> None:
        """Add the row of an input, or replace the earlier row of the same input; write."""
        self.rows[str(row["input"])] = {c: row.get(c) for c in self.columns}
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows.values())
        write_text_atomic(self.path, buffer.getvalue())

    def done(self, source: str, outputs: Path, name: str) -> bool:
        """Whether ``source`` has an ``ok`` row whose anomaly map is still in ``outputs``."""
        row = self.rows.get(source)
        return row is not None and row.get("status") == "ok" and any(
            outputs.glob(f"{_glob_safe(name)}_anomaly_map*"))


def _glob_safe(name: str) -> str:
    """``name`` with glob's special characters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
