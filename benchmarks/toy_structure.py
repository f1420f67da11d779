"""Pixel AP of every method on the misplaced-structure toy (tests/methods/test_toy_structure.py).

The toy's anomaly is a blob with the brightness of a healthy structure (the nucleus every
toy brain has) in the wrong place: an intensity threshold cannot tell them apart. This
prints, for the three threshold maps and every other method at its quick preset (training
steps multiplied by ``--factor``), the pixel AP inside the brain on 16 unseen lesioned
slices, and writes the table as CSV::

    .venv/bin/python benchmarks/toy_structure.py --factor 1 \\
        --out benchmarks/results/toy_structure_quick.csv
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

import torch

import anodiff
from anodiff.diffusion.training import TrainConfig
from anodiff.scoring.foreground import foreground

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "methods"))
from test_toy_structure import pixel_ap, structure_toys  # noqa: E402


def longer(config, factor: int):
    """``config`` with every training ``factor`` times as long."""
    changes = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, TrainConfig):
            changes[field.name] = dataclasses.replace(value, steps=value.steps * factor)
        elif dataclasses.is_dataclass(value):
            changes[field.name] = longer(value, factor)
    return dataclasses.replace(config, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, default=1)
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    healthy, _ = structure_toys(50, False, seed=0)
    anomalous, _ = structure_toys(50, True, seed=1)
    images, truth = structure_toys(16, True, seed=3)
    problem = {"items": [{"image": x, "label": 0} for x in healthy]
               + [{"image": x, "label": 1} for x in anomalous],
               "images": images, "truth": truth, "fg": foreground(images)}
    rows = []
    for mode in ("bright", "dark", "rarity"):
        detector = anodiff.create("threshold", mode=mode).fit(problem["items"])
        rows.append({"method": f"threshold-{mode}", "train_factor": 0,
                     "pixel_ap": round(pixel_ap(detector, problem), 3), "seconds": 0.0})
    names = args.methods or [m.name for m in anodiff.methods() if m.name != "threshold"]
    for name in names:
        start = time.perf_counter()
        detector = anodiff.create(name, preset="quick")
        detector = type(detector)(longer(detector.config, args.factor)).fit(problem["items"])
        rows.append({"method": name, "train_factor": args.factor,
                     "pixel_ap": round(pixel_ap(detector, problem), 3),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("\n| method | training x | pixel AP | s |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['train_factor']} | {row['pixel_ap']:.3f} | "
              f"{row['seconds']} |")


if __name__ == "__main__":
    main()
