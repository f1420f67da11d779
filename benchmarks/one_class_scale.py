"""Fit time and peak memory of the one-class models as the number of normal latents grows.

InvDetect fits its one-class model on noise latents of healthy patches (1,024 dimensions
for the paper's 32 x 32 one-channel patches). This measures, for each kind of
``anodiff.scoring.one_class`` and each number of latents, the fit time, the peak resident
memory of a fresh process doing only that fit, the time to score 10,000 latents, and how
well the model separates normal latents from shifted ones (AUROC), so that the choice
between the exact SVM on a subsample and the Nystroem approximation is made on numbers.

Latents are drawn from N(0, I) (normal) and N(0, 1.1^2 I) (abnormal: slightly dispersed,
as inverted abnormal patches are in the paper's account). Run::

    .venv/bin/python benchmarks/one_class_scale.py --dims 1024 --sizes 2000,5000,10000,20000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from anodiff.report.tables import markdown_table
from anodiff.scoring.one_class import ONE_CLASS_KINDS, fit_one_class


def one_fit(kind: str, n: int, dims: int, components: int) -> dict[str, float]:
    """Fit on n normal latents in this process; time, peak memory, scoring, separation."""
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(n, dims)).astype(np.float32)
    test = np.concatenate([rng.normal(size=(5000, dims)), 1.1 * rng.normal(size=(5000, dims))])
    start = time.perf_counter()
    model = fit_one_class(normal, kind, 0.1, components=components)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = model.score(torch.from_numpy(test).float()).numpy()
    score_seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {"kind": kind, "latents": n, "dims": dims, "fit_s": fit_seconds,
            "score_10k_s": score_seconds, "peak_mib": peak,
            "auroc": float(roc_auc_score(np.r_[np.zeros(5000), np.ones(5000)], scores)),
            "outside_share": float((model.score(torch.from_numpy(normal)) > 0).float().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, default=1024)
    parser.add_argument("--sizes", default="2000,5000,10000,20000")
    parser.add_argument("--kinds", default=",".join(ONE_CLASS_KINDS))
    parser.add_argument("--components", type=int, default=1024)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_fit(args.child[0], int(args.child[1]), args.dims,
                                 args.components)))
        return
    rows = []
    for n in (int(v) for v in args.sizes.split(",")):
        for kind in args.kinds.split(","):
            out = subprocess.run(
                [sys.executable, __file__, "--dims", str(args.dims), "--components",
                 str(args.components), "--child", kind, str(n)],
                capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print(markdown_table(rows, list(rows[0]), digits=3))


if __name__ == "__main__":
    main()
