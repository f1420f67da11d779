"""``anodiff demo``: the newcomer's first command — a small benchmark with nothing downloaded.

1. Build the embedded benchmark's tumour track (synthetic T1/T2/FLAIR brains from nilearn's
   MNI152 template, seed 0, 100 cases; ~15 s) into ``OUT/data``.
2. Evaluate, on a few test cases (``cases`` with a lesion and ``cases`` without):

   * ``anoddpm`` (Wyatt 2022) in its ``fast`` mode, from the checkpoint shipped with the
     package in ``anodiff/assets/demo/anoddpm-tumour``: one DDIM hop from L, one network
     evaluation per slice (on the full tumour split pixel AP 0.730, against 0.644 for the
     cpu preset's 25 ancestral hops and 0.739 for AutoDDPM's 45 evaluations; issue 23 in
     docs/BENCHMARKS.md), its thresholds refitted on the demo's data first. It was made
     by the project's own commands on the train split of the same track (the test cases
     were never seen); ``RECIPE.md`` beside it records the commands, the training time and
     the export;
   * the baselines the field forgets, fitted on the train split in seconds: Meissen's
     histogram-equalised FLAIR threshold and the intensity-rarity threshold.

3. Write ``OUT/report.html`` (inputs, pseudo-healthy images, anomaly maps, masks and ground
   truth per method; curves; a metrics table with a glossary; first, one sentence on where
   the FLAIR threshold still wins, from the figures just measured) and ``OUT/results.md``.

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
DEMO_METHOD = "anoddpm"
BASELINE = "threshold-flair"
VERDICT_METRICS = (("pixel AP", "pixel_ap"), ("per-case Dice at the healthy-FPR threshold",
                                              "volume_dice_fpr"), ("image AUROC", "image_auroc"))


def demo_checkpoint() -> Path:
    """The shipped run folder of the demo's diffusion method (run.yaml, model/, RECIPE.md)."""
    folder = Path(str(resources.files("anodiff") / "assets" / "demo"
                      / f"{DEMO_METHOD}-{DEMO_TRACK}"))
    if not (folder / "model" / "meta.json").is_file():
        raise AnodiffError(f"{folder}: the demo checkpoint is missing from this installation "
                           "(reinstall anodiff)")
    return folder


def demo_config(checkpoint: Path, cases: int) -> BenchmarkConfig:
    """The demo as a benchmark: one dataset, the shipped diffusion model and two baselines,
    compared with the FLAIR threshold."""
    return BenchmarkConfig(
        title="anodiff demo: AnoDDPM and baselines on the synthetic tumour track",
        datasets={DEMO_TRACK: f"data/{DEMO_TRACK}"},
        methods=(
            MethodEntry(DEMO_METHOD, run=str(checkpoint), preset="fast"),
            MethodEntry("threshold", label=BASELINE, settings={"mode": "bright", "channel": 0}),
            MethodEntry("threshold", label="threshold-rarity"),
        ),
        data=DataConfig(size=DEMO_DATA.size),
        max_cases=cases,
        reference=BASELINE,
        notes=(f"Demo: {cases} test cases with a tumour and {cases} without; figures from so "
               "few cases are a first look with wide error bars, not a benchmark result.",
               f"{DEMO_METHOD} is the checkpoint shipped with anodiff (cpu preset, trained on "
               f"this track's train split; see anodiff/assets/demo/{DEMO_METHOD}-{DEMO_TRACK}/"
               "RECIPE.md), run in its fast mode: one DDIM hop from L (one network evaluation "
               "per slice instead of 25 ancestral hops; on the full tumour split this scores "
               "higher, docs/BENCHMARKS.md, issue 23), its thresholds refitted on this track "
               "first. The intensity thresholds are fitted on the same train split."),
    )


def verdict(rows: list[dict[str, Any]], method: str = DEMO_METHOD, baseline: str = BASELINE
            ) -> str:
    """One sentence from the measured rows: where ``baseline`` still beats ``method``
    (pixel AP, per-case Dice at the healthy-FPR threshold, image AUROC) and where it loses."""
    row = {r["method"]: r for r in rows}
    ours, theirs = row[method], row[baseline]

    def figures(pairs: list[tuple[str, str]]) -> str:
        return ", ".join(f"{name} {theirs[key]:.3f} vs {ours[key]:.3f}" for name, key in pairs)

    lost = [(n, k) for n, k in VERDICT_METRICS if theirs[k] > ours[k]]
    won = [(n, k) for n, k in VERDICT_METRICS if theirs[k] <= ours[k]]
    if not lost:
        return (f"On these cases {method} beats the {baseline} on every headline figure "
                f"({baseline} first: {figures(won)}); with so few cases see the intervals.")
    sentence = f"Where the {baseline} still wins on these cases: {figures(lost)}"
    if won:
        sentence += f"; {method} wins on {', '.join(n for n, _ in won)}"
    return sentence + " (the threshold's figure first)."


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
                                device=device, conclude=lambda rows: [verdict(rows)])
