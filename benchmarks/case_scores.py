"""Does scores.csv tell healthy cases from lesioned ones? The case score against the older
columns, per track, for models trained with ``anodiff train`` and run with ``anodiff detect``.

Run: ``.venv/bin/python benchmarks/case_scores.py --data runs/synth --out runs/i20/case_scores
[--method threshold --set method.mask=otsu ...] [--run tumour=RUN ...] [--tracks tumour]``.
For every track folder under ``--data`` (or those of ``--tracks``) it trains the method
(``--preset``, default cpu; one run per track, reused when present; ``--run`` gives a
trained one instead, e.g. one that ``anodiff export --refit`` brought up to date),
runs ``detect`` on every test case and writes, per track: the AUROC over test cases
(lesioned vs healthy) of ``case_score`` (brain share above the healthy-FPR threshold),
``flagged_fraction`` (brain share of the written mask) and ``score`` (the largest slice
score), and the share of healthy and of lesioned test cases with ``case_anomalous`` set.
Prints a markdown table and writes ``case_scores.csv`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import nibabel as nib
import numpy as np

from anodiff.evaluation.metrics import auroc
from anodiff.report.tables import markdown_table
from anodiff.workflows.detect import detect_inputs
from anodiff.workflows.run import config_values, train_run

COLUMNS = ("track", "method", "n_healthy", "n_lesioned", "case_score_auroc",
           "flagged_fraction_auroc", "score_auroc", "healthy_flagged", "lesioned_flagged",
           "case_threshold")


def test_cases(track: Path) -> list[tuple[Path, bool]]:
    """The test cases of a track and whether each has a lesion (its segmentation)."""
    with open(track / "splits.csv", newline="") as f:
        names = [row["case"] for row in csv.DictReader(f) if row["split"] == "test"]
    return [(track / name, bool(np.asarray(nib.load(track / name / f"{name}_seg.nii.gz")
                                           .dataobj).any())) for name in names]


def measure(track: Path, run: Path, out: Path, method: str) -> dict[str, object]:
    """Detect on every test case of ``track`` and score the columns of scores.csv."""
    cases = test_cases(track)
    report = detect_inputs(run, [path for path, _ in cases], out, progress=False)
    rows = {row.name: row for row in report.rows if row.status == "ok"}
    lesioned = np.array([has for path, has in cases])
    column = {key: np.array([getattr(rows[path.name], key) for path, _ in cases], float)
              for key in ("case_score", "flagged_fraction", "score")}
    flagged = np.array([bool(rows[path.name].case_anomalous) for path, _ in cases])
    return {"track": track.name, "method": method, "n_healthy": int((~lesioned).sum()),
            "n_lesioned": int(lesioned.sum()),
            **{f"{key}_auroc": round(auroc(lesioned, values), 3)
               for key, values in column.items()},
            "healthy_flagged": round(float(flagged[~lesioned].mean()), 3)
            if (~lesioned).any() else math.nan,
            "lesioned_flagged": round(float(flagged[lesioned].mean()), 3),
            "case_threshold": rows[cases[0][0].name].case_threshold}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--method", default="threshold")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--run", dest="runs", action="append", default=[],
                        help="TRACK=RUN: a trained run to use for that track")
    parser.add_argument("--tracks", nargs="*", default=None)
    args = parser.parse_args()
    given = dict(item.split("=", 1) for item in args.runs)
    values = config_values(None, args.overrides)
    label = " ".join([args.method, *args.overrides]) if not given else \
        " ".join(sorted(set(given.values())))
    results = []
    for track in sorted(p for p in args.data.iterdir() if (p / "splits.csv").is_file()):
        if args.tracks is not None and track.name not in args.tracks:
            continue
        run = Path(given.get(track.name, args.out / track.name / "run"))
        if not (run / "model").is_dir():
            train_run(args.method, track, run, preset=args.preset, values=values)
        results.append(measure(track, run, args.out / track.name / "detect", label))
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "case_scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(results)
    print(markdown_table(results, COLUMNS))


if __name__ == "__main__":
    main()
