"""A test split evaluated case by case as its batches arrive (``anodiff evaluate``, its
shards' merge, the benchmark): each case's outputs are reduced by
:class:`~anodiff.evaluation.stream.SplitEvaluation` once its last slice is localised, and
dropped, so the split's maps, masks, uncertainty and pseudo-healthy images are never held
together (issue 23). Kept for the figures: the example rows' maps, masks and pseudo-healthy
images, and what :class:`SplitEvaluation` pools.

The thresholds come first (:class:`Calibration`, from the healthy validation slices, which
are held: every one of their brain pixels enters the quantile), so the test cases can be
scored at them as they come.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from anodiff.errors import AnodiffError
from anodiff.evaluation.runner import (
    BatchOutputs,
    Predictions,
    SplitSlices,
    example_rows,
    mapped_case,
    reduced,
)
from anodiff.evaluation.stream import CaseOutputs, SplitEvaluation
from anodiff.methods import Detector
from anodiff.scoring.postprocess import PostProcess
from anodiff.scoring.thresholds import healthy_fpr_threshold, per_image_otsu

IMAGE_THRESHOLD_RULE = "95th percentile of healthy validation scores"


@dataclass(frozen=True)
class Calibration:
    """The deployable thresholds, fixed on healthy validation slices alone: the pixel
    threshold at a healthy false-positive rate ``fpr`` (on maps filtered by the evaluation's
    post-processing) and the image threshold at the 95th percentile of their scores."""

    pixel_threshold: float
    image_threshold: float
    fpr: float

    @classmethod
    def on(cls, validation: Predictions | None, postprocess: PostProcess | None = None,
           fpr: float = 0.01) -> Calibration:
        """From ``validation``'s healthy slices (refused without them)."""
        if not 0 < fpr < 1:
            raise AnodiffError(f"the healthy false-positive rate must be in (0, 1), got {fpr}")
        if validation is None or not (~validation.labels).any():
            raise AnodiffError("no healthy validation slices: the threshold at a healthy "
                               "false-positive rate cannot be calibrated; give the dataset a "
                               "val split with healthy cases (splits.csv: case,val)")
        healthy = ~validation.labels
        post = postprocess or PostProcess()
        fg = validation.foreground[healthy]
        cases = [c for c, h in zip(validation.cases, healthy, strict=True) if h]
        pixel_threshold = healthy_fpr_threshold(
            post.maps(validation.maps[healthy], fg, cases if any(cases) else None), fpr, fg)
        return cls(pixel_threshold, float(np.quantile(validation.scores[healthy], 0.95)), fpr)

    def describe(self) -> dict[str, Any]:
        """metrics.json's ``calibration``."""
        return {"pixel_fpr_target": self.fpr, "image_threshold_rule": IMAGE_THRESHOLD_RULE}


@dataclass(frozen=True)
class Example:
    """One example row of the figures' grid: its map as localised, the mask shown (the
    method's own, else the map's Otsu mask) and its pseudo-healthy image, if any."""

    map: np.ndarray
    mask: np.ndarray
    pseudo_healthy: np.ndarray | None


@dataclass
class ScoredSplit:
    """A test split once evaluated: ``metrics`` (metrics.json), the reduced evaluation
    (pooled pixels, per-case figures), the slices' geometry and the example rows."""

    metrics: dict[str, Any]
    evaluation: SplitEvaluation
    slices: SplitSlices
    rows: np.ndarray
    examples: dict[int, Example]


class TestStream:
    """Takes a test split's batches in slice order (:meth:`put`) and evaluates each case
    once its last slice has come; :meth:`finish` gives the :class:`ScoredSplit`.

    With ``detector``, each case's scores and rule masks are made from its maps filtered by
    the detector's map steps (:func:`~anodiff.evaluation.runner.mapped_case`, as ``anodiff
    detect`` makes them); without, the batches' are used as they are (predictions made so
    before)."""

    __test__ = False  # not a pytest class

    def __init__(self, slices: SplitSlices, calibration: Calibration,
                 postprocess: PostProcess | None = None, detector: Detector | None = None
                 ) -> None:
        self.slices, self.calibration, self.detector = slices, calibration, detector
        cases = slices.cases if any(slices.cases) else None
        self.evaluation = SplitEvaluation(
            cases=cases, postprocess=postprocess,
            image_threshold=calibration.image_threshold,
            pixel_threshold=calibration.pixel_threshold, voxel_ml=slices.voxel_ml or None,
            pixel_mm=slices.pixel_mm or None)
        self.spans = list(case_spans(slices.cases))
        self.rows = example_rows(slices.truth, slices.fg)
        self.kept = set(self.rows.tolist())
        self.examples: dict[int, Example] = {}
        self.pending: list[dict[str, np.ndarray]] = []
        self.pending_start = self.received = 0
        self.seconds = self.nfe = 0.0
        self.pseudo_healthy: dict[int, np.ndarray] = {}

    def put(self, start: int, outputs: BatchOutputs) -> None:
        """The batch that starts at slice ``start`` (the next one in order)."""
        if start != self.received:
            raise AnodiffError(f"batch at slice {start} came before the one at "
                               f"{self.received}: a test split is evaluated in order")
        rows = slice(start, start + len(outputs.arrays["maps"]))
        outputs = reduced(outputs, self.slices.images[rows], self.slices.fg[rows], start,
                          self.kept)
        self.pseudo_healthy.update(outputs.examples)
        self.pending.append(outputs.arrays)
        self.received = rows.stop
        self.seconds += outputs.seconds
        self.nfe += outputs.nfe
        while self.spans and self.spans[0][2] <= self.received:
            self._evaluate_case(*self.spans.pop(0))

    def _evaluate_case(self, case: str, begin: int, end: int) -> None:
        """Reduce the case of rows ``begin``..``end`` and keep only the rows after it."""
        arrays = {kind: np.concatenate([batch[kind] for batch in self.pending])
                  for kind in self.pending[0]}
        offset = begin - self.pending_start
        outputs = {kind: values[offset:offset + end - begin] for kind, values in arrays.items()}
        rest = {kind: values[offset + end - begin:] for kind, values in arrays.items()}
        self.pending = [rest] if len(rest["maps"]) else []
        self.pending_start = end
        rows = slice(begin, end)
        fg = self.slices.fg[rows]
        maps, scores, masks = outputs["maps"], outputs["scores"], outputs.get("masks")
        if self.detector is not None:
            _, scores, masks = mapped_case(self.detector, maps, fg, scores, masks)
        self.evaluation.add(CaseOutputs(
            case, maps, self.slices.truth[rows], scores, labels=self.slices.labels[rows],
            foreground=fg, predicted=masks, uncertainty=outputs.get("uncertainty"),
            residual_sums=outputs.get("residual_sums")))
        for row in sorted(self.kept & set(range(begin, end))):
            local = row - begin
            mask = masks[local] if masks is not None else \
                per_image_otsu(maps[local:local + 1], fg[local:local + 1])[0]
            self.examples[row] = Example(maps[local], mask, self.pseudo_healthy.get(row))

    def finish(self, resamples: int = 0) -> ScoredSplit:
        """The split's metrics (every slice must have come)."""
        if self.spans:
            raise AnodiffError(f"the test split's slices from {self.received} on were not "
                               "localised")
        n = max(len(self.slices.truth), 1)
        metrics = self.evaluation.results(resamples, self.seconds / n, self.nfe / n)
        metrics["calibration"] = self.calibration.describe()
        return ScoredSplit(metrics, self.evaluation, self.slices, self.rows, self.examples)


def case_spans(cases: list[str]) -> Iterator[tuple[str, int, int]]:
    """Each run of consecutive slices of one case: (case, first row, row after the last).
    A case whose slices are not consecutive is refused (a dataset's never are)."""
    seen: set[str] = set()
    begin = 0
    for row in range(1, len(cases) + 1):
        if row == len(cases) or cases[row] != cases[begin]:
            if cases[begin] in seen:
                raise AnodiffError(f"the slices of case {cases[begin]!r} are not consecutive")
            seen.add(cases[begin])
            yield cases[begin], begin, row
            begin = row


def evaluate_predictions(test: Predictions, validation: Predictions | None = None,
                         postprocess: PostProcess | None = None, fpr: float = 0.01,
                         resamples: int = 0) -> dict[str, Any]:
    """metrics.json for predictions held whole (``test``; the detector's map steps applied,
    :func:`~anodiff.evaluation.runner.with_map_steps`), with thresholds calibrated on healthy
    ``validation`` slices (required: refused without them) and ``resamples`` case-bootstrap
    resamples."""
    calibration = Calibration.on(validation, postprocess, fpr)
    stream = TestStream(SplitSlices.of_predictions(test), calibration, postprocess)
    n = len(test.maps)
    arrays = {kind: values for kind, values in (
        ("maps", test.maps), ("scores", test.scores), ("masks", test.masks),
        ("uncertainty", test.uncertainty), ("pseudo_healthy", test.pseudo_healthy),
        ("residual_sums", test.residual_sums)) if values is not None}
    stream.put(0, BatchOutputs(arrays, test.seconds_per_image * n, test.nfe_per_image * n,
                               dict(test.examples)))
    return stream.finish(resamples).metrics
