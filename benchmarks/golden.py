"""Golden maps: what every method computes, recorded before a refactoring and compared after.

``record`` builds a small embedded-benchmark tumour track (seed 0), trains every registered
method at its ``quick`` preset into ``OUT/runs/<method>`` with ``anodiff train``'s own code,
and localises a fixed set of test slices (the first ``--anomalous`` slices with a lesion and
``--healthy`` without, in dataset order) with each run and with the ``diffano`` checkpoint
that ships with the demo. Everything the detector returns is stored in
``OUT/<method>.npz``; ``OUT/golden.csv`` lists per method the NFE, pixel AP and best Dice
on those slices and a checksum of the maps.

``localize RUNS OUT`` localises the same slices with already trained runs (e.g. the runs a
``record`` made with older code, to check that checkpoints load and give the same maps).

``compare A B`` prints, per method, the largest absolute difference of every output between
two recordings and the change of the metrics, and writes ``B/compare.csv``::

    .venv/bin/python benchmarks/golden.py record runs/golden/before
    .venv/bin/python benchmarks/golden.py localize runs/golden/before/runs runs/golden/loaded
    .venv/bin/python benchmarks/golden.py record runs/golden/after
    .venv/bin/python benchmarks/golden.py compare runs/golden/before runs/golden/after
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from pathlib import Path

import numpy as np
import torch

import anodiff
from anodiff.data.synth import SynthConfig, build
from anodiff.evaluation.metrics import average_precision, best_dice
from anodiff.workflows.demo import demo_checkpoint
from anodiff.workflows.run import DataConfig, load_run, train_run

OUTPUTS = ("anomaly_map", "score", "mask", "pseudo_healthy", "uncertainty")
DEMO = "demo-diffano"


def golden_slices(data_root: Path, anomalous: int, healthy: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The fixed test slices (images, truth) of the golden set, in dataset order."""
    test = DataConfig().open(data_root).split("test")
    items = [test[i] for i in range(len(test))]
    sick = [it for it in items if it["mask"].any()][:anomalous]
    well = [it for it in items if not it["mask"].any()][:healthy]
    chosen = sick + well
    return (np.stack([np.asarray(it["image"], np.float32) for it in chosen]),
            np.stack([np.asarray(it["mask"], bool) for it in chosen]))


def localize(detector: anodiff.Detector, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of ``detector.localize`` as arrays (absent outputs are left out)."""
    result = detector.localize(torch.from_numpy(images))
    out = {"nfe": np.asarray(float(result.nfe))}
    for name in OUTPUTS:
        value = getattr(result, name)
        if value is not None:
            out[name] = value.detach().cpu().numpy()
    return out


def summary(name: str, out: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, object]:
    """NFE, pixel AP, best Dice (anomalous slices, all pixels) and a checksum of the maps."""
    sick = truth.reshape(len(truth), -1).any(1)
    pixels, values = truth[sick].ravel(), out["anomaly_map"][sick].ravel()
    return {"method": name, "nfe": float(out["nfe"]),
            "pixel_ap": round(average_precision(pixels, values), 6),
            "dice_max": round(best_dice(pixels, values).dice, 6),
            "map_sha256": hashlib.sha256(out["anomaly_map"].astype(np.float32).tobytes())
            .hexdigest()[:16]}


def write_rows(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def record_all(detectors: dict[str, anodiff.Detector], out: Path, images: np.ndarray,
               truth: np.ndarray) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "slices.npz", images=images, truth=truth)
    rows = []
    for name, detector in detectors.items():
        outputs = localize(detector, images)
        np.savez_compressed(out / f"{name}.npz", **outputs)
        rows.append(summary(name, outputs, truth))
        print(rows[-1], flush=True)
    write_rows(out / "golden.csv", rows)


def record(args: argparse.Namespace) -> None:
    out = Path(args.out)
    data = out / "data"
    if not (data / "tumour" / "splits.csv").is_file():
        build(data, SynthConfig(size=64, seed=0, cases=args.cases, tracks=("tumour",)),
              overwrite=data.exists())
    root = data / "tumour"
    images, truth = golden_slices(root, args.anomalous, args.healthy)
    detectors = {}
    for info in anodiff.methods():
        run = out / "runs" / info.name
        train_run(info.name, root, run, preset="quick")
        detectors[info.name] = load_run(run)[0]
    detectors[DEMO] = load_run(demo_checkpoint())[0]
    record_all(detectors, out, images, truth)


def localize_runs(args: argparse.Namespace) -> None:
    runs = Path(args.runs)
    slices = np.load(runs.parent / "slices.npz")
    detectors = {p.name: load_run(p)[0] for p in sorted(runs.iterdir()) if p.is_dir()}
    detectors[DEMO] = load_run(demo_checkpoint())[0]
    record_all(detectors, Path(args.out), slices["images"], slices["truth"])


def compare(args: argparse.Namespace) -> None:
    a, b = Path(args.a), Path(args.b)
    rows = []
    for before in sorted(a.glob("*.npz")):
        if before.name == "slices.npz" or not (b / before.name).is_file():
            continue
        old, new = np.load(before), np.load(b / before.name)
        row: dict[str, object] = {"method": before.stem}
        for key in ("nfe", *OUTPUTS):
            if key not in old and key not in new:
                continue
            if (key in old) != (key in new) or old[key].shape != new[key].shape:
                row[key] = "differs in presence or shape"
                continue
            diff = np.abs(old[key].astype(np.float64) - new[key].astype(np.float64))
            row[key] = float(diff.max()) if diff.size else 0.0
        rows.append(row)
        print(row)
    write_rows(b / "compare.csv", [{k: r.get(k, "") for k in ("method", "nfe", *OUTPUTS)}
                                   for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record")
    rec.add_argument("out")
    rec.add_argument("--cases", type=int, default=12)
    rec.add_argument("--anomalous", type=int, default=12)
    rec.add_argument("--healthy", type=int, default=4)
    loc = commands.add_parser("localize")
    loc.add_argument("runs")
    loc.add_argument("out")
    cmp_ = commands.add_parser("compare")
    cmp_.add_argument("a")
    cmp_.add_argument("b")
    args = parser.parse_args()
    torch.set_num_threads(2)
    {"record": record, "localize": localize_runs, "compare": compare}[args.command](args)


if __name__ == "__main__":
    main()
