"""``anodiff demo``: the newcomer's first command — a small benchmark with nothing downloaded.

1. Build the embedded benchmark's tumour track (synthetic T1/T2/FLAIR brains from nilearn's
   MNI152 template, seed 0, 100 cases; ~15 s) into ``OUT/data``.
2. Evaluate, on a few test cases (``cases`` with a lesion and ``cases`` without):

   * ``diffano`` (Wolleb 2022) from the checkpoint shipped with the package in
     ``anodiff/assets/demo/diffano-tumour``. It was made by the project's own commands on the
     train split of the same track (the test cases were never seen); ``RECIPE.md`` beside
     it records the commands, the training time and the export;
   * the baselines the field forgets, fitted on the train split in seconds: Meissen's
     histogram-equalised FLAIR threshold and the intensity-rarity threshold.

3. Write ``OUT/report.html`` (inputs, pseudo-healthy images, anomaly maps, masks and ground
   truth per method; curves; a metrics table with a glossary) and ``OUT/results.md``.

It is a quick look, not the benchmark: a handful of test cases, so the figures carry wide
error bars. ``anodiff benchmark benchmarks/embedded.yaml`` is the full evaluation.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

from anodiff.data.synth import SynthConfig, build
from anodiff.errors import AnodiffError
from anodiff.workflows.benchmark import BenchmarkConfig, MethodEntry, run_benchmark_config
from anodiff.workflows.run import DataConfig

log = logging.getLogger("anodiff")

DEMO_TRACK = "tumour"
DEMO_DATA = SynthConfig(size=64, seed=0, cases=100, tracks=(DEMO_TRACK,))


def demo_checkpoint() -> Path:
    """The shipped diffano run folder (run.yaml, model/, RECIPE.md)."""
    folder = Path(str(resources.files("anodiff") / "assets" / "demo" / "diffano-tumour"))
    if not (folder / "model" / "meta.json").is_file():
        raise AnodiffError(f"{folder}: the demo checkpoint is missing from this installation "
                           "(reinstall anodiff)")
    return folder


def demo_config(checkpoint: Path, cases: int) -> BenchmarkConfig:
    """The demo as a benchmark: one dataset, the shipped diffano and two baselines."""
    return BenchmarkConfig(
        title="anodiff demo: DiffANO and baselines on the synthetic tumour track",
        datasets={DEMO_TRACK: f"data/{DEMO_TRACK}"},
        methods=(
            MethodEntry("diffano", run=str(checkpoint)),
            MethodEntry("threshold", label="threshold-flair",
                        settings={"mode": "bright", "channel": 0}),
            MethodEntry("threshold", label="threshold-rarity"),
        ),
        data=DataConfig(size=DEMO_DATA.size),
        max_cases=cases,
        notes=(f"Demo: {cases} test cases with a tumour and {cases} without; figures from so "
               "few cases are a first look with wide error bars, not a benchmark result.",
               "diffano is the checkpoint shipped with anodiff (cpu preset, trained on this "
               "track's train split; see anodiff/assets/demo/diffano-tumour/RECIPE.md). "
               "The thresholds are fitted on the same train split."),
    )


def run_demo(out: Path, cases: int = 3, workers: int = 0, device: str = "auto"
             ) -> list[dict[str, Any]]:
    """Build the data (reusing an earlier demo's), evaluate, write the report into ``out``."""
    if cases < 1:
        raise AnodiffError(f"--cases must be >= 1, got {cases}")
    out = Path(out)
    checkpoint = demo_checkpoint()
    data = out / "data"
    if not (data / DEMO_TRACK / "splits.csv").is_file():
        log.info("building the %s track of the embedded benchmark into %s", DEMO_TRACK, data)
        build(data, DEMO_DATA, overwrite=data.exists(), workers=workers)
    return run_benchmark_config(demo_config(checkpoint, cases), out, out, source="anodiff demo",
                                device=device)
