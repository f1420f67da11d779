"""One table of every method's fast mode beside its cpu preset (issue 23, "a fast mode for
every method").

Reads ``results.csv`` tables of ``anodiff benchmark`` (committed under
``benchmarks/results/``) and picks one row per (method, mode, track)::

    .venv/bin/python benchmarks/fast_modes.py \\
        --row anoddpm:cpu:tumour=benchmarks/results/issue22_tumour.csv:anoddpm-L100 \\
        --row anoddpm:fast:tumour=benchmarks/results/issue23_students_tumour.csv:ddim-1 \\
        --csv benchmarks/results/issue23_fast_modes.csv

For each method and track it prints the network evaluations per slice, seconds per slice,
pixel AP, per-case Dice at the healthy-FPR threshold and healthy residual of every mode,
and the pixel-AP difference from the ``cpu`` row of the same method and track, with
whether the mode meets the issue's targets: <= 20 evaluations within 0.02 pixel AP
(``fast``), <= 4 within 0.03 (a ``student``). A track written ``tumour@16-cases`` reads the
``tumour`` rows of its table but is its own track, with its own ``cpu`` row: a subset of a
split is compared with the cpu preset on that subset only. Seconds come from the run that made each
table, so compare them within one machine only (each table's BENCHMARKS.md section names
it).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

COLUMNS = ("method", "track", "mode", "nfe_per_image", "seconds_per_image", "pixel_ap",
           "pixel_ap_difference", "volume_dice_fpr", "healthy_residual", "target", "meets",
           "source")
TARGETS = {"fast": (20.0, 0.02), "student": (4.0, 0.03)}  # (most NFE, largest AP loss)


def parse(spec: str) -> tuple[str, str, str, Path, str]:
    """``METHOD:MODE:TRACK=CSV:LABEL`` -> its parts."""
    key, _, source = spec.partition("=")
    parts = key.split(":")
    path, _, label = source.rpartition(":")
    if len(parts) != 3 or not path or not label:
        raise SystemExit(f"--row {spec!r}: expected METHOD:MODE:TRACK=CSV:LABEL")
    return parts[0], parts[1], parts[2], Path(path), label


def read_row(path: Path, track: str, label: str) -> dict[str, str]:
    for row in csv.DictReader(path.open(encoding="utf-8")):
        if row["dataset"] == track and row["method"] == label:
            return row
    raise SystemExit(f"{path}: no row of {label!r} on {track!r}")


def value(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key) or "nan")
    except ValueError:
        return math.nan


def table(specs: list[str]) -> list[dict[str, object]]:
    picked = [(m, mode, t, read_row(p, t.partition("@")[0], label), f"{p}:{label}")
              for m, mode, t, p, label in map(parse, specs)]
    cpu = {(m, t): row for m, mode, t, row, _ in picked if mode == "cpu"}
    rows = []
    for method, mode, track, row, source in picked:
        ap = value(row, "pixel_ap")
        reference = cpu.get((method, track))
        difference = ap - value(reference, "pixel_ap") if reference else math.nan
        # "student-4" is a student, "fast-bfloat16" a fast mode; other modes have no target
        kind = next((k for k in TARGETS if mode.startswith(k)), mode)
        most_nfe, largest_loss = TARGETS.get(kind, (math.nan, math.nan))
        nfe = value(row, "nfe_per_image")
        meets = "" if math.isnan(most_nfe) else \
            "yes" if nfe <= most_nfe and difference >= -largest_loss else "no"
        rows.append({"method": method, "track": track, "mode": mode, "nfe_per_image": nfe,
                     "seconds_per_image": value(row, "seconds_per_image"), "pixel_ap": ap,
                     "pixel_ap_difference": difference,
                     "volume_dice_fpr": value(row, "volume_dice_fpr"),
                     "healthy_residual": value(row, "healthy_residual"),
                     "target": "" if math.isnan(most_nfe)
                     else f"<= {most_nfe:g} NFE, AP loss <= {largest_loss:g}",
                     "meets": meets, "source": source})
    return rows


def cell(x: object) -> str:
    if isinstance(x, float):
        return "–" if math.isnan(x) else f"{x:.3f}"
    return str(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", action="append", required=True,
                        metavar="METHOD:MODE:TRACK=CSV:LABEL")
    parser.add_argument("--csv", type=Path, help="write the rows here")
    args = parser.parse_args()
    rows = table(args.row)
    shown = COLUMNS[:-1]
    print("| " + " | ".join(shown) + " |")
    print("|" + "---|" * len(shown))
    for row in rows:
        print("| " + " | ".join(cell(row[c]) for c in shown) + " |")
    if args.csv:
        with args.csv.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
