"""Collect ``metrics.json`` files of ``anodiff evaluate`` into one markdown table.

Run: ``.venv/bin/python benchmarks/collect.py LABEL=EVAL_DIR [LABEL=EVAL_DIR ...]``; the
columns are those of ``anodiff benchmark``'s results.md (train_seconds read from the run's
train.log when the evaluation folder sits inside the run folder).
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import datetime
from pathlib import Path

from anodiff.report.tables import RESULT_COLUMNS, markdown_table


def train_seconds(eval_dir: Path) -> float:
    """Seconds between the first and the last line of the run's train.log (NaN if none)."""
    log = eval_dir.parent / "train.log"
    if not log.is_file():
        return math.nan
    stamps = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
              for line in log.read_text().splitlines() if line[:4].isdigit()]
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entries", nargs="+", help="LABEL=EVAL_DIR")
    parser.add_argument("--dataset", default="tumour")
    args = parser.parse_args()
    rows = []
    for entry in args.entries:
        label, _, folder = entry.partition("=")
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
        rows.append({**metrics, "dataset": args.dataset, "method": label,
                     "train_seconds": train_seconds(Path(folder))})
    print(markdown_table(rows, RESULT_COLUMNS), end="")

if __name__ == "__main__":
    main()
