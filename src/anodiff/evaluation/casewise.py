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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from anodiff.errors import AnodiffError
from anodiff.evaluation.runner import (
    BatchOutputs,
    ExamplePicker,
    Predictions,
    SplitSlices,
    mapped_case,
    predict_batch,
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
    """One example row of the figures' grid: the slice's own channels and truth, its map as
    localised, the mask shown (the method's own, else the map's Otsu mask) and its
    pseudo-healthy image, if any."""

    image: np.ndarray
    truth: np.ndarray
    map: np.ndarray
    mask: np.ndarray
    pseudo_healthy: np.ndarray | None


@dataclass
class ScoredSplit:
    """A test split once evaluated: ``metrics`` (metrics.json), the reduced evaluation
    (pooled pixels, per-case figures), each slice's case and index in it, and the example
    rows of the figures' grid with their slices (own channels) and truth."""

    metrics: dict[str, Any]
    evaluation: SplitEvaluation
    cases: list[str]
    slices: list[int]
    rows: np.ndarray
    examples: dict[int, Example]


class TestStream:
    """A test split evaluated as it comes: slices of whole cases are appended
    (:meth:`extend`, e.g. one case as it is read), localised batch by batch in order
    (:meth:`localise_next`, or batches made elsewhere given to :meth:`put`), and each case is
    evaluated and dropped once its last slice is localised; :meth:`finish` gives the
    :class:`ScoredSplit`. The batches are those of the split held whole (every ``batch_size``
    consecutive slices, across cases), so the numbers are too.

    With ``detector``, each case's scores and rule masks are made from its maps filtered by
    the detector's map steps (:func:`~anodiff.evaluation.runner.mapped_case`, as ``anodiff
    detect`` makes them); without, the batches' are used as they are (predictions made so
    before)."""

    __test__ = False  # not a pytest class

    def __init__(self, calibration: Calibration, postprocess: PostProcess | None = None,
                 detector: Detector | None = None, by_case: bool = True) -> None:
        self.calibration, self.detector = calibration, detector
        self.evaluation = SplitEvaluation(
            by_case=by_case, postprocess=postprocess,
            image_threshold=calibration.image_threshold,
            pixel_threshold=calibration.pixel_threshold)
        self.picker = ExamplePicker()
        self.waiting_slices: SplitSlices | None = None  # added, not yet evaluated
        self.base = 0  # the row of the first of them
        self.spans: list[tuple[str, int, int]] = []  # the cases not yet evaluated
        self.cases: list[str] = []
        self.indices: list[int] = []
        self.known: set[str] = set()  # the cases appended
        self.pending: list[dict[str, np.ndarray]] = []  # outputs of rows not yet evaluated
        self.received = 0
        self.seconds = self.nfe = 0.0
        self.pseudo_healthy: dict[int, np.ndarray] = {}
        self.examples: dict[int, Example] = {}

    @property
    def added(self) -> int:
        """Slices appended so far."""
        return len(self.cases)

    @property
    def waiting(self) -> int:
        """Slices appended but not localised yet."""
        return self.added - self.received

    def extend(self, part: SplitSlices) -> None:
        """Append the slices of whole cases (none of them appended before)."""
        for case, begin, end in case_spans(part.cases):
            if case in self.known:
                raise AnodiffError(f"the slices of case {case!r} are not consecutive")
            self.known.add(case)
            self.spans.append((case, self.added + begin, self.added + end))
        self.picker.add(self.added, part.truth, part.fg, part.cases)
        self.waiting_slices = part if self.waiting_slices is None \
            else self.waiting_slices.then(part)
        self.cases += part.cases
        self.indices += part.slices

    def localise_next(self, batch_size: int) -> None:
        """Localise the next ``batch_size`` waiting slices (fewer at the end) with the
        detector, and take the batch (:meth:`put`)."""
        if self.detector is None:
            raise AnodiffError("a stream without a detector takes batches localised "
                               "elsewhere (put)")
        assert self.waiting_slices is not None
        batch = self.waiting_slices.rows(self.received - self.base,
                                         self.received - self.base + batch_size)
        self.put(self.received, predict_batch(self.detector, batch.inputs, batch.centre))

    def put(self, start: int, outputs: BatchOutputs) -> None:
        """The batch that starts at slice ``start`` (the next one in order)."""
        if start != self.received:
            raise AnodiffError(f"batch at slice {start} came before the one at "
                               f"{self.received}: a test split is evaluated in order")
        count = len(outputs.arrays["maps"])
        if start + count > self.added:
            raise AnodiffError(f"a batch of slices {start} to {start + count - 1}, but only "
                               f"{self.added} were added")
        assert self.waiting_slices is not None
        batch = self.waiting_slices.rows(start - self.base, start + count - self.base)
        outputs = reduced(outputs, batch.images, batch.fg, start,
                          set(self.picker.rows.tolist()))
        self.pseudo_healthy.update(outputs.examples)
        self.pending.append(outputs.arrays)
        self.received = start + count
        self.seconds += outputs.seconds
        self.nfe += outputs.nfe
        while self.spans and self.spans[0][2] <= self.received:
            self._evaluate_case(*self.spans.pop(0))

    def _evaluate_case(self, case: str, begin: int, end: int) -> None:
        """Reduce the case of rows ``begin``..``end``, keep its example rows, and drop its
        slices and outputs."""
        assert self.waiting_slices is not None
        arrays = {kind: np.concatenate([batch[kind] for batch in self.pending])
                  for kind in self.pending[0]}
        offset = begin - (self.received - len(arrays["maps"]))
        outputs = {kind: values[offset:offset + end - begin] for kind, values in arrays.items()}
        rest = {kind: values[offset + end - begin:] for kind, values in arrays.items()}
        self.pending = [rest] if len(rest["maps"]) else []
        slices = self.waiting_slices.rows(begin - self.base, end - self.base)
        maps, scores, masks = outputs["maps"], outputs["scores"], outputs.get("masks")
        if self.detector is not None:
            _, scores, masks = mapped_case(self.detector, maps, slices.fg, scores, masks)
        self.evaluation.add(CaseOutputs(
            case, maps, slices.truth, scores, labels=slices.labels, foreground=slices.fg,
            predicted=masks, uncertainty=outputs.get("uncertainty"),
            residual_sums=outputs.get("residual_sums"), voxel_ml=slices.voxel_ml.get(case),
            pixel_mm=slices.pixel_mm.get(case)))
        chosen = set(self.picker.rows.tolist())
        for row in sorted(chosen & set(range(begin, end))):
            i = row - begin
            mask = masks[i] if masks is not None else \
                per_image_otsu(maps[i:i + 1], slices.fg[i:i + 1])[0]
            self.examples[row] = Example(slices.images[i], slices.truth[i], maps[i], mask,
                                         self.pseudo_healthy.pop(row, None))
        self.examples = {row: e for row, e in self.examples.items() if row in chosen}
        self.pseudo_healthy = {row: p for row, p in self.pseudo_healthy.items()
                               if row in chosen}
        if 2 * (end - self.base) >= len(self.waiting_slices):  # drop the evaluated slices once
            self.waiting_slices = self.waiting_slices.rows(end - self.base)  # they are half:
            self.base = end  # not a copy of the rest after each case of a split given whole

    def finish(self, resamples: int = 0) -> ScoredSplit:
        """The split's metrics (every slice appended must have been localised)."""
        if self.spans or not self.added:
            raise AnodiffError(f"the test split's slices from {self.received} on were not "
                               "localised" if self.added else "no test slices to evaluate")
        n = self.added
        metrics = self.evaluation.results(resamples, self.seconds / n, self.nfe / n)
        metrics["calibration"] = self.calibration.describe()
        return ScoredSplit(metrics, self.evaluation, self.cases, self.indices,
                           self.picker.rows, self.examples)


def evaluate_cases(detector: Detector, parts: Iterable[SplitSlices], calibration: Calibration,
                   postprocess: PostProcess | None = None, batch_size: int = 32,
                   resamples: int = 0) -> ScoredSplit:
    """A test split given as ``parts`` (whole cases, in order: one case read at a time, or
    the split at once) localised by ``detector`` and evaluated as it comes
    (:class:`TestStream`): at any time only the slices and outputs of the cases not yet
    evaluated are held."""
    stream = TestStream(calibration, postprocess, detector)
    for part in parts:
        stream.extend(part)
        while stream.waiting >= batch_size:
            stream.localise_next(batch_size)
    while stream.waiting:
        stream.localise_next(batch_size)
    return stream.finish(resamples)


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
    stream = TestStream(calibration, postprocess, by_case=any(test.cases))
    stream.extend(SplitSlices.of_predictions(test))
    n = len(test.maps)
    arrays = {kind: values for kind, values in (
        ("maps", test.maps), ("scores", test.scores), ("masks", test.masks),
        ("uncertainty", test.uncertainty), ("pseudo_healthy", test.pseudo_healthy),
        ("residual_sums", test.residual_sums)) if values is not None}
    stream.pseudo_healthy.update(test.examples)
    stream.put(0, BatchOutputs(arrays, test.seconds_per_image * n, test.nfe_per_image * n))
    return stream.finish(resamples).metrics
