"""``anodiff merge OUT``: the shards of a sharded ``evaluate`` or ``detect`` made into the
result one process would have written (:mod:`~anodiff.workflows.shards`)."""

from __future__ import annotations

from pathlib import Path

from anodiff.workflows.detect import merge_detection
from anodiff.workflows.evaluate import merge_evaluation
from anodiff.workflows.shards import read_plan


def merge_shards(out: Path) -> str:
    """Merge ``out``'s shards by their plan's kind; a line saying what was written."""
    out = Path(out)
    if read_plan(out)["kind"] == "evaluate":
        metrics = merge_evaluation(out)
        return (f"pixel_ap {metrics['pixel_ap']:.3f}, image_auroc {metrics['image_auroc']:.3f}; "
                f"all metrics in {out / 'metrics.json'}")
    report = merge_detection(out)
    return (f"{len(report.rows) - len(report.failures)} of {len(report.rows)} cases done; "
            f"scores in {report.scores_csv}")
