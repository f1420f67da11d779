"""Issue 25: one process against two (``torchrun``, gloo) on this machine's cores.

Two measurements, each command run alone and in turn:

- **sharded inference**: ``anodiff evaluate RUN --data DATA`` (``--resamples 0``) as one
  process of one thread, one process of two threads, and ``torchrun --nproc-per-node 2``
  (one thread each, the main process merging); the wall time of the whole command and the
  localisation time it logs (seconds per image × images), with the ratios to one thread,
  and whether the metrics of the two-process run equal those of one process of one thread;
- **DDP training**: ``anodiff train METHOD`` for ``--steps`` steps of the same global batch
  as one process (two threads) and as two processes (one thread each): the loss at each
  logged step (a tenth of the run) and the seconds per step.

    .venv/bin/python benchmarks/scaling.py --run runs/i23/anoddpm_demo_fast \\
        --data runs/synth/tumour --train-data runs/synth/tumour --out runs/i25/scaling \\
        --csv benchmarks/results/issue25_scaling.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ANODIFF = [sys.executable, "-m", "anodiff"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            "2", "-m", "anodiff"]
LOCALISE = re.compile(r"localise: (\d+)/\d+ it, [^\n]*?(\d+) s")


def timed(command: list[str], threads: int) -> float:
    """Run ``command`` with ``threads`` intra-op threads per process; its wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("WORLD_SIZE", None)
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def metrics(folder: Path) -> dict:
    values = json.loads((folder / "metrics.json").read_text())
    values.pop("seconds_per_image")
    return values


def inference_rows(run: Path, data: Path, out: Path) -> list[dict]:
    rows = []
    setups = [("1 process x 1 thread", ANODIFF, 1), ("1 process x 2 threads", ANODIFF, 2),
              ("2 processes x 1 thread (torchrun)", TORCHRUN, 1)]
    for label, launcher, threads in setups:
        folder = out / re.sub(r"\W+", "_", label)
        shutil.rmtree(folder, ignore_errors=True)
        wall = timed([*launcher, "evaluate", str(run), "--data", str(data), "--out",
                      str(folder), "--resamples", "0"], threads)
        values = json.loads((folder / "metrics.json").read_text())
        rows.append({"measure": "evaluate", "setup": label, "wall_s": round(wall, 1),
                     "localise_s": round(values["seconds_per_image"] * values["n_images"], 1)
                     if label.startswith("1 ") else "",
                     "images": values["n_images"], "pixel_ap": values["pixel_ap"],
                     "folder": str(folder)})
    one = out / "1_process_x_1_thread"
    for row in rows:
        row["wall_ratio_to_1_thread"] = round(rows[0]["wall_s"] / row["wall_s"], 2)
        row["metrics_equal_to_1_thread"] = metrics(Path(row["folder"])) == metrics(one)
    return rows


def training_rows(method: str, data: Path, out: Path, steps: int, batch: int) -> list[dict]:
    rows = []
    settings = ["--set", f"method.diffusion.train.steps={steps}",
                "--set", f"method.diffusion.train.batch_size={batch}",
                "--set", f"method.diffusion.train.checkpoint_every={steps}"]
    for label, launcher, threads in [("1 process x 2 threads", ANODIFF, 2),
                                     ("2 processes x 1 thread (torchrun)", TORCHRUN, 1)]:
        folder = out / ("train_" + re.sub(r"\W+", "_", label))
        shutil.rmtree(folder, ignore_errors=True)
        wall = timed([*launcher, "train", method, "--data", str(data), "--out", str(folder),
                      *settings], threads)
        log = (folder / "train.log").read_text()
        losses = re.findall(r"train: (\d+)/\d+ step, loss=([\d.]+), (\d+) s", log)
        seconds = float(losses[-1][2]) if losses else float("nan")
        for step, loss, _ in losses:
            rows.append({"measure": "train", "setup": label, "step": int(step),
                         "loss": float(loss), "wall_s": round(wall, 1),
                         "seconds_per_step": round(seconds / steps, 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--train-data", type=Path, required=True)
    parser.add_argument("--method", default="anoddpm")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--csv", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = inference_rows(args.run, args.data, args.out)
    rows += training_rows(args.method, args.train_data, args.out, args.steps, args.batch)
    columns = list(dict.fromkeys(key for row in rows for key in row if key != "folder"))
    with args.csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print({k: v for k, v in row.items() if k != "folder"})


if __name__ == "__main__":
    main()
