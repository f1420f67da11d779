"""The CSV files of a dataset folder: ``splits.csv`` (volumes) and ``labels.csv`` (images).

Every problem names the file and, where there is one, the line: a missing column, a
duplicated or unknown key, an unknown split, a label other than 0, 1 or empty, an
unreadable or malformed file (bad encoding, an unbalanced quote).
"""

from __future__ import annotations

import csv
from pathlib import Path

from anodiff.data.datasets.slices import SPLITS
from anodiff.errors import AnodiffError


def read_table(
    path: Path, keys: list[str], key_column: str, *, with_label: bool
) -> tuple[dict[str, str], dict[str, int]]:
    """``({key: split}, {key: label})`` from splits.csv / labels.csv, checked against ``keys``.

    Without the file every key is ``train`` and unlabelled; an empty label cell is no label.
    """
    if not path.exists():
        return dict.fromkeys(keys, "train"), {}
    columns = [key_column, "label", "split"] if with_label else [key_column, "split"]
    splits: dict[str, str] = {}
    labels: dict[str, int] = {}
    for line, row in read_csv(path, columns):
        key, split = row[key_column].strip(), row["split"].strip()
        if key in splits:
            raise AnodiffError(f"{path}:{line}: '{key}' appears twice")
        if split not in SPLITS:
            raise AnodiffError(f"{path}:{line}: unknown split '{split}' for '{key}'; use {SPLITS}")
        splits[key] = split
        label = row["label"].strip() if with_label else ""
        if label not in ("", "0", "1"):
            raise AnodiffError(f"{path}:{line}: label '{label}' for '{key}' is not 0, 1 or empty")
        if label:
            labels[key] = int(label)
    unknown = sorted(set(splits) - set(keys))
    if unknown:
        raise AnodiffError(f"{path}: {key_column}s without a file: {unknown[:5]}")
    unlisted = sorted(set(keys) - set(splits))
    if unlisted:
        raise AnodiffError(f"{path}: no row for {key_column}s {unlisted[:5]}")
    return splits, labels


def read_csv(path: Path, columns: list[str]) -> list[tuple[int, dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise AnodiffError(
                    f"{path}: missing column(s) {missing}; expected header {','.join(columns)}"
                )
            rows, end = [], reader.line_num  # physical lines read so far (the header)
            for row in reader:
                line, end = end + 1, reader.line_num  # a quoted cell may span lines
                if None in row or any(row.get(c) is None for c in columns):
                    raise AnodiffError(
                        f"{path}:{line}: expected {len(reader.fieldnames or [])} fields "
                        f"({','.join(reader.fieldnames or [])}), got another count (a stray "
                        "comma, a missing cell or an unbalanced quote?)")
                rows.append((line, row))
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise AnodiffError(f"{path}: unreadable CSV ({err})") from err


