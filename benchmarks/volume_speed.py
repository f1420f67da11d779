"""Seconds per 100-slice case, per method, and peak memory (issue 23, "whole volumes").

Run: ``.venv/bin/python benchmarks/volume_speed.py --data runs/synth/tumour
--run LABEL=RUN [--run LABEL=RUN ...] [--slices 100] [--out CSV]``.

The case is the track's first test case with a lesion, resampled along the axial axis to
``--slices`` slices (linear interpolation, the segmentation by nearest neighbour; written to
a temporary folder: the dataset is never touched), so the volume has the in-plane grid the
models were trained on and as many slices as a clinical scan. Each run then goes through
``anodiff detect`` (:func:`anodiff.workflows.detect.detect_inputs`: reading, normalising,
localising every slice with brain in it in batches of 32, putting the maps back on the
grid, writing them) in a process of its own, so that its peak memory (``ru_maxrss``) is its
own. The same process first times one network evaluation of the run's denoiser (batch 32,
median of 5), so the wall time is also given as network evaluations per slice, every
overhead included: ``seconds / (one batch-32 evaluation / 32 * slices localised)``, the
unit the issue sets its targets in (<= 20 in fast mode, <= 4 with a distilled student).
Give fast-mode runs (``anodiff export RUN --preset fast --refit DATA``) to measure fast
mode. ``--precision`` is the engine's (:mod:`anodiff.diffusion.engine`; ``auto`` takes
bfloat16 on a CPU with AMX) and is recorded per row; the unit, one evaluation, is always
timed in float32. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import resource
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy.ndimage import zoom

SEG = "seg"  # the synthetic cases' segmentation suffix


def first_lesion_case(data: Path) -> Path:
    """The first test case (splits.csv order) whose segmentation has a lesion."""
    rows = list(csv.DictReader((data / "splits.csv").open(encoding="utf-8")))
    for row in rows:
        if row["split"] != "test":
            continue
        case = data / row["case"]
        seg = next(case.glob(f"*_{SEG}.nii*"), None)
        if seg is not None and np.asarray(nib.load(seg).dataobj).any():
            return case
    raise SystemExit(f"{data}: no test case with a lesion")


def resampled_case(case: Path, slices: int, out: Path) -> Path:
    """``case``'s volumes with ``slices`` axial slices (the last axis), the voxel size along
    it scaled to keep the field of view; written under ``out/<case>``."""
    target = out / case.name
    target.mkdir(parents=True)
    for path in sorted(case.glob("*.nii*")):
        image = nib.load(path)
        data = np.asarray(image.dataobj, dtype=np.float32)
        factor = slices / data.shape[-1]
        order = 0 if path.name.split(".")[0].endswith(f"_{SEG}") else 1
        volume = zoom(data, (1.0,) * (data.ndim - 1) + (factor,), order=order)
        affine = image.affine.copy()
        affine[:3, 2] /= factor
        nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), target / path.name)
    return target


def one_network_evaluation(detector: Any, batch: int = 32) -> float:
    """Median seconds of one forward pass of the detector's ``unet`` (an ensemble's first
    member) on a batch (NaN for a method without one): the unit the figures are given in."""
    import torch
    from engine import median_seconds

    members = getattr(detector, "members", None)
    unet = getattr(detector, "unet", None) or (members[0] if members else None)
    if unet is None:
        return float("nan")
    channels = next(p for p in unet.parameters() if p.dim() == 4).shape[1]
    x = torch.randn(batch, channels, *detector.input_shape[1:])
    t = torch.full((batch,), 250, dtype=torch.long)
    labels = {"class_labels": torch.zeros(batch, dtype=torch.long)} \
        if getattr(unet, "num_class_embeds", None) else {}  # a class-conditional network
    with torch.inference_mode():
        return median_seconds(lambda: unet(x, t, **labels), 5)


def one_run(run: Path, case: Path, out: Path, precision: str) -> dict[str, Any]:
    """In this process: one batch-32 network evaluation of the run's denoiser, then
    ``anodiff detect`` on the case at the engine's ``precision``; the row of figures."""
    import torch

    from anodiff.diffusion.engine import configure, resolved_precision
    from anodiff.workflows.detect import detect_inputs
    from anodiff.workflows.run import load_run

    configure(precision)
    detector, _ = load_run(run, "cpu")
    nfe_seconds = one_network_evaluation(detector)
    report = detect_inputs(run, [case], out, progress=False, device="cpu")
    row = report.rows[0]
    if row.status != "ok":
        raise SystemExit(f"{run}: detect failed: {row.message}")
    seconds, slices = float(row.seconds or 0), int(row.n_slices or 0)
    per_image = nfe_seconds / 32 if nfe_seconds else float("nan")
    return {"method": detector.name, "slices": slices, "seconds": seconds,
            "nfe_per_slice": row.nfe_per_slice, "one_nfe_batch32_s": nfe_seconds,
            "network_evaluations_per_slice_all_in": seconds / (per_image * slices),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads(),
            "precision": resolved_precision(torch.device("cpu"),
                                            bfloat16_pays=detector.bfloat16_pays)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a synthetic track (runs/synth/tumour)")
    parser.add_argument("--run", action="append", default=[], metavar="LABEL=RUN")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--out", type=Path, help="write the rows as CSV here")
    parser.add_argument("--precision", choices=("auto", "float32", "bfloat16"),
                        default="auto", help="the engine's network precision")
    parser.add_argument("--one", nargs=3, type=Path, help=argparse.SUPPRESS)  # RUN CASE OUT
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(*args.one, args.precision)))
        return
    if args.data is None or not args.run:
        parser.error("give --data and at least one --run LABEL=RUN")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        case = resampled_case(first_lesion_case(args.data), args.slices, Path(scratch) / "in")
        for entry in args.run:
            label, _, run = entry.partition("=")
            child = subprocess.run(
                [sys.executable, __file__, "--one", run, str(case),
                 str(Path(scratch) / "out" / label), "--precision", args.precision],
                capture_output=True, text=True, check=False)
            if child.returncode != 0:
                raise SystemExit(f"{label}: {child.stderr.strip().splitlines()[-1:]}")
            rows.append({"label": label, "run": run, "case": case.name,
                         **json.loads(child.stdout.strip().splitlines()[-1])})
    print(f"{platform.processor() or platform.machine()}, torch (see rows), {date.today()}, "
          f"{case.name} resampled to {args.slices} slices")
    print("| label | method | precision | slices localised | s per case | NFE per slice "
          "(method) | network evaluations per slice, all in | one NFE (batch 32) s | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['label']} | {row['method']} | {row['precision']} | {row['slices']} | "
              f"{row['seconds']:.1f} | {row['nfe_per_slice']:.1f} | "
              f"{row['network_evaluations_per_slice_all_in']:.1f} | "
              f"{row['one_nfe_batch32_s']:.3f} | {row['peak_mb']:.0f} |")
    if args.out:
        with args.out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
