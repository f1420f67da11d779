"""The evaluation protocol of :mod:`anodiff.evaluation.protocol`, case by case: a test
split's figures reduced as each case's outputs arrive, so that no split-wide map, mask or
uncertainty array is held (issue 23).

What is kept for the split: per slice, a few numbers (label, score, brain share, residual
sum, and for the anomalous slices each rule's overlap counts and HD95); per case, its Dice
and lesion matches under each rule and its flagged share; and the pooled brain pixels of the
anomalous slices (float32 score, bool truth, case index), which pixel AP and AUROC, the best
Dice and the case bootstrap need exactly (and the uncertainty's pixels where there is one).

The one global threshold, Otsu's over every brain pixel of the split, needs them all
before any mask at it: each case's filtered brain pixels are appended to an unnamed
temporary file (gone when the evaluation is), the running minimum and maximum fix the 256
bins of scikit-image's histogram, and a second pass sums it over the cases (scikit-image's
Otsu on that histogram is its Otsu on the pixels, to the bit) and then makes the masks.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from skimage.filters import threshold_otsu

from anodiff.errors import AnodiffError
from anodiff.evaluation.bootstrap import CaseFigures, WeightedAP, WeightedAUROC, intervals
from anodiff.evaluation.metrics import (
    LesionDetection,
    Overlap,
    auroc,
    average_precision,
    best_dice,
    check_shapes,
    f1_at,
    hd95,
    lesion_detection,
)
from anodiff.scoring.postprocess import PostProcess
from anodiff.scoring.thresholds import above_threshold, otsu_threshold

# Lesion volume strata (ml): small < 1 ml <= medium < 10 ml <= large. WML and small stroke
# lesions fall in the first, tumours mostly in the last (docs/data.md).
SIZE_BINS_ML: tuple[float, float] = (1.0, 10.0)
OTSU_BINS = 256  # scikit-image's default, as in Wolleb's code


def mean_of(values: Sequence[float]) -> float:
    """The mean of the values that are not NaN (NaN when none is)."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


@dataclass(frozen=True)
class CaseOutputs:
    """One case's slices as the evaluation takes them: ``maps`` (n, H, W) as localised,
    ``truth`` (n, H, W), ``scores`` (n,); ``labels`` (n,) default to "the slice's mask has a
    positive pixel", ``foreground`` to every pixel; ``predicted`` is the method's own mask,
    ``uncertainty`` its uncertainty map, ``residual_sums`` (n,) each slice's pseudo-healthy
    residual summed over its brain (:func:`residual_sum_per_slice`); ``voxel_ml`` is the
    volume of one voxel (lesion volumes; None for 2-D images) and ``pixel_mm`` the pixel
    size (HD95 in mm; None: in pixels)."""

    case: str
    maps: np.ndarray
    truth: np.ndarray
    scores: np.ndarray
    labels: np.ndarray | None = None
    foreground: np.ndarray | None = None
    predicted: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    residual_sums: np.ndarray | None = None
    voxel_ml: float | None = None
    pixel_mm: tuple[float, float] | None = None


def residual_sum_per_slice(images: np.ndarray, pseudo_healthy: np.ndarray, fg: np.ndarray
                           ) -> np.ndarray:
    """Per slice (N,), float64: the absolute residual ``|image - pseudo-healthy|`` summed
    over the channels and over the slice's foreground ``fg`` (N, H, W): the numerator of
    ``healthy_residual``, which a caller can reduce batch by batch instead of keeping the
    pseudo-healthy images."""
    residual = np.abs(images - pseudo_healthy).sum(1)
    return np.where(fg, residual, 0).reshape(len(residual), -1).sum(1, dtype=np.float64)


@dataclass
class SliceFigures:
    """Per-slice figures of one mask rule on the anomalous slices (overlap counts and
    HD95), and the flagged brain share of the healthy slices."""

    overlaps: list[Overlap] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    healthy_shares: list[float] = field(default_factory=list)

    def add(self, masks: np.ndarray, truth: np.ndarray, fg: np.ndarray, anomalous: np.ndarray,
            healthy: np.ndarray, spacing: tuple[float, float] | None) -> None:
        for mask, lesion in zip(masks[anomalous], truth[anomalous], strict=True):
            self.overlaps.append(Overlap.of(mask, lesion))
            self.distances.append(hd95(mask, lesion, spacing))
        self.healthy_shares += [float(m[f].mean()) for m, f
                                in zip(masks[healthy], fg[healthy], strict=True) if f.any()]

    def figures(self, suffix: str) -> dict[str, float]:
        """Dice, precision, recall, IoU, VS and HD95 averaged over the anomalous slices."""
        return {
            f"dice_{suffix}": mean_of([o.dice for o in self.overlaps]),
            f"precision_{suffix}": mean_of([o.precision for o in self.overlaps]),
            f"recall_{suffix}": mean_of([o.recall for o in self.overlaps]),
            f"iou_{suffix}": mean_of([o.iou for o in self.overlaps]),
            f"vs_{suffix}": mean_of([o.volumetric_similarity for o in self.overlaps]),
            f"hd95_{suffix}": mean_of(self.distances),
        }


@dataclass
class CaseFiguresOfRule:
    """Per-case figures of one mask rule: lesion matches, and the 3-D Dice of the cases
    with a lesion."""

    detections: dict[str, LesionDetection] = field(default_factory=dict)
    dice: dict[str, float] = field(default_factory=dict)

    def add(self, case: str, masks: np.ndarray, truth: np.ndarray) -> None:
        self.detections[case] = lesion_detection(masks, truth)
        if truth.any():
            self.dice[case] = Overlap.of(masks, truth).dice

    @property
    def pooled(self) -> LesionDetection:
        return sum(self.detections.values(), start=LesionDetection(0, 0, 0))


class SplitEvaluation:
    """The metrics of one method on one test split, fed one case at a time (:meth:`add`,
    a case's slices in order) and read once (:meth:`results`).

    Without ``by_case`` the slices carry no case and are given in one piece (lesions are
    then matched in the stack of them all). ``image_threshold`` (on scores) and
    ``pixel_threshold`` (on the filtered maps) come from healthy validation data. HD95 is in
    mm where a case has a pixel size; when some cases have one and others not, the HD95
    figures are NaN (``hd95_unit`` "mixed": the two cannot be averaged). The conventions are
    :func:`anodiff.evaluation.protocol.evaluate`'s, which feeds this class a split held
    whole.
    """

    def __init__(self, *, by_case: bool = True, postprocess: PostProcess | None = None,
                 image_threshold: float | None = None, pixel_threshold: float | None = None,
                 size_bins_ml: tuple[float, float] = SIZE_BINS_ML) -> None:
        self.by_case = by_case
        self.post = postprocess or PostProcess()
        self.image_threshold, self.pixel_threshold = image_threshold, pixel_threshold
        self.size_bins_ml = size_bins_ml
        self.voxel_ml: dict[str, float] = {}
        self.hd95_units: set[str] = set()
        self.case_index: dict[str, int] = {}
        self.store = tempfile.TemporaryFile(prefix="anodiff-otsu-")
        self.stored: list[tuple[str, tuple[int, ...], int, tuple[float, float] | None]] = []
        # case, (n, H, W), brain pixels, pixel size
        self.low, self.high = math.inf, -math.inf  # of the filtered brain pixels
        self.labels: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.slice_case: list[np.ndarray] = []
        self.brain_share: list[np.ndarray] = []
        self.brain_pixels: list[np.ndarray] = []
        self.residual_sums: list[np.ndarray] | None = []
        self.pixel_truth: list[np.ndarray] = []
        self.pixel_scores: list[np.ndarray] = []
        self.pixel_case: list[np.ndarray] = []
        self.uncertainty: list[np.ndarray] = []
        self.wrong: dict[str, list[np.ndarray]] = {"otsu": [], "fpr": [], "own": []}
        self.otsu_of_slices: list[float] = []
        self.rules = {rule: SliceFigures() for rule in ("otsu", "fpr", "own", "global_otsu")}
        self.per_case = {rule: CaseFiguresOfRule() for rule in ("otsu", "fpr", "own")}
        self.flagged_share: dict[str, float] = {}
        self.lesioned: dict[str, bool] = {}
        self.has_foreground = self.has_own = self.has_uncertainty = True
        self.count = 0

    def add(self, outputs: CaseOutputs) -> None:
        """Reduce one case (all of its slices, or, without cases, the whole split)."""
        check_shapes(outputs.maps, outputs.truth, outputs.foreground, outputs.predicted)
        case = outputs.case if self.by_case else ""
        if case in self.case_index:
            raise AnodiffError(f"case {case!r} was given twice (a case is added whole, once)"
                               if self.by_case else "a split without cases is added in one "
                               "piece")
        self.case_index[case] = index = len(self.case_index)
        if outputs.voxel_ml is not None:
            self.voxel_ml[case] = outputs.voxel_ml
        truth = outputs.truth.astype(bool)
        n = len(truth)
        lesion = truth.reshape(n, -1).any(1)
        labels = lesion if outputs.labels is None else np.asarray(outputs.labels).astype(bool)
        self.has_foreground &= outputs.foreground is not None
        fg = np.ones_like(truth) if outputs.foreground is None \
            else outputs.foreground.astype(bool)
        ids = [case] * n if self.by_case else None
        maps = self.post.maps(outputs.maps, fg, ids)
        anomalous, healthy = labels & lesion, ~labels
        spacing = outputs.pixel_mm
        self.hd95_units.add("pixel" if spacing is None else "mm")
        self.count += n
        self.labels.append(labels)
        self.scores.append(np.asarray(outputs.scores, dtype=np.float64).ravel())
        self.slice_case.append(np.full(n, index))
        self.brain_share.append(fg.reshape(n, -1).mean(1))
        self.brain_pixels.append(fg.reshape(n, -1).sum(1))
        if self.residual_sums is not None and outputs.residual_sums is not None:
            self.residual_sums.append(np.asarray(outputs.residual_sums, dtype=np.float64))
        else:
            self.residual_sums = None
        inside = fg & anomalous[:, None, None]
        self.pixel_truth.append(truth[inside])
        self.pixel_scores.append(maps[inside])
        self.pixel_case.append(np.full(int(inside.sum()), index, dtype=np.int32))
        self._store(case, maps, fg, truth, anomalous, spacing)
        otsu = np.array([otsu_threshold(m, f) for m, f in zip(maps, fg, strict=True)])
        self.otsu_of_slices += otsu[anomalous & fg.reshape(n, -1).any(1)].tolist()
        masks = self.post.masks((maps > otsu[:, None, None]) & fg, ids, self.voxel_ml)
        self.rules["otsu"].add(masks, truth, fg, anomalous, healthy, spacing)
        self.per_case["otsu"].add(case, masks, truth)
        rules = {"otsu": masks}
        if self.pixel_threshold is not None:
            flagged = self.post.masks(above_threshold(maps, self.pixel_threshold, fg), ids,
                                      self.voxel_ml)
            self.rules["fpr"].add(flagged, truth, fg, anomalous, healthy, spacing)
            self.per_case["fpr"].add(case, flagged, truth)
            self.flagged_share[case] = float((flagged & fg).sum()) / max(int(fg.sum()), 1)
            self.lesioned[case] = bool(truth.any())
            rules["fpr"] = flagged
        self.has_own &= outputs.predicted is not None
        if outputs.predicted is not None:
            own = self.post.masks(outputs.predicted.astype(bool), ids, self.voxel_ml)
            self.rules["own"].add(own, truth, fg, anomalous, healthy, spacing)
            self.per_case["own"].add(case, own, truth)
            rules["own"] = own
        self.has_uncertainty &= outputs.uncertainty is not None
        if outputs.uncertainty is not None:
            self.uncertainty.append(np.asarray(outputs.uncertainty)[fg])
            for rule, rule_masks in rules.items():
                self.wrong[rule].append((rule_masks != truth)[fg])

    def _store(self, case: str, maps: np.ndarray, fg: np.ndarray, truth: np.ndarray,
               anomalous: np.ndarray, spacing: tuple[float, float] | None) -> None:
        """Append the case's filtered brain pixels (and its brain, truth and anomalous slices)
        to the store for the global Otsu's second pass."""
        pixels = maps[fg].astype(np.float32, copy=False)
        if pixels.size:
            self.low, self.high = min(self.low, float(pixels.min())), \
                max(self.high, float(pixels.max()))
        for values in (pixels, np.packbits(fg), np.packbits(truth), anomalous.astype(bool)):
            self.store.write(values.tobytes())
        self.stored.append((case, fg.shape, pixels.size, spacing))

    @property
    def anomalous_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """The pooled brain pixels of the anomalous slices: truth and filtered map values."""
        return _joined(self.pixel_truth, bool), _joined(self.pixel_scores, np.float32)

    @property
    def image_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Every slice's label and score."""
        return _joined(self.labels, bool), _joined(self.scores, np.float64)

    @property
    def slice_otsu_thresholds(self) -> list[float]:
        """Each anomalous slice's own Otsu threshold on its filtered map (slices with brain)."""
        return list(self.otsu_of_slices)

    def case_figures(self) -> CaseFigures:
        """The headline figures as functions of case weights (the bootstrap's and a paired
        comparison's), at this evaluation's operating point."""
        cases = tuple(self.case_index)
        labels, scores = self.image_labels
        truth, values = self.anomalous_pixels
        dice = self.per_case["fpr"].dice
        return CaseFigures(cases, WeightedAP(truth, values, _joined(self.pixel_case, np.int32)),
            WeightedAUROC(labels, scores, _joined(self.slice_case, np.int64)),
            np.array([dice.get(c, math.nan) for c in cases]))

    def results(self, resamples: int = 0, seconds_per_image: float = math.nan,
                nfe_per_image: float = math.nan) -> dict[str, Any]:
        """metrics.json's figures (see :func:`anodiff.evaluation.protocol.evaluate`)."""
        if not self.count:
            raise AnodiffError("no slices to evaluate")
        labels, scores = self.image_labels
        pixels_truth, pixels_score = self.anomalous_pixels
        n_anomalous = len(self.rules["otsu"].overlaps)
        best = best_dice(pixels_truth, pixels_score)
        otsu = self.per_case["otsu"].pooled
        results: dict[str, Any] = {
            "image_auroc": auroc(labels, scores),
            "image_ap": average_precision(labels, scores),
            "image_f1": f1_at(labels, scores, self.image_threshold)
            if self.image_threshold is not None else math.nan,
            "image_auroc_foreground_area": auroc(labels, np.concatenate(self.brain_share))
            if self.has_foreground else math.nan,
            "pixel_auroc": auroc(pixels_truth, pixels_score),
            "pixel_ap": average_precision(pixels_truth, pixels_score),
            "dice_max": best.dice,
            "dice_max_threshold": best.threshold,
            **self.rules["otsu"].figures("otsu"),
            "hd95_unit": self.hd95_units.pop() if len(self.hd95_units) == 1 else "mixed",
            "lesion_detection_rate": otsu.detection_rate,
            "lesion_false_positives_per_image": otsu.false_positives / self.count,
            "healthy_fp_area": mean_of(self.rules["otsu"].healthy_shares),
            "healthy_residual": math.nan,
            "seconds_per_image": seconds_per_image,
            "nfe_per_image": nfe_per_image,
            "n_images": self.count,
            "n_anomalous": n_anomalous,
            "postprocess": self.post.to_dict(),
        }
        if self.has_uncertainty:
            results["uncertainty_auroc_otsu"] = self._uncertainty_auroc("otsu")
        healthy = ~labels
        brain = np.concatenate(self.brain_pixels)
        if self.residual_sums is not None and brain[healthy].sum() > 0:
            residual = np.concatenate(self.residual_sums)
            results["healthy_residual"] = float(residual[healthy].sum() / brain[healthy].sum())
        if n_anomalous:  # one Otsu threshold for the whole test set (pooled foreground)
            self._global_otsu_pass()
            results.update(self.rules["global_otsu"].figures("global_otsu"))
        if self.has_own:
            results.update(self.rules["own"].figures("own"))
            if self.has_uncertainty:
                results["uncertainty_auroc_own"] = self._uncertainty_auroc("own")
            if self.by_case:
                results.update(self._operating_point("own"))
        if self.pixel_threshold is not None:
            results.update(self.rules["fpr"].figures("fpr"))
            results["pixel_threshold"] = self.pixel_threshold
            if self.has_uncertainty:
                results["uncertainty_auroc_fpr"] = self._uncertainty_auroc("fpr")
            results["healthy_fp_area_fpr"] = mean_of(self.rules["fpr"].healthy_shares)
            if self.by_case:
                results.update(self._operating_point("fpr"))
                results["case_dice_fpr"] = dict(self.per_case["fpr"].dice)
                lesioned = np.array(list(self.lesioned.values()))
                results["case_auroc_fpr"] = auroc(lesioned, list(self.flagged_share.values()))
                results["n_healthy_cases"] = int((~lesioned).sum())
                results["size_bins_ml"] = list(self.size_bins_ml)
        if self.by_case:
            results["volume_dice_otsu"] = mean_of(list(self.per_case["otsu"].dice.values()))
            results["volume_lesion_detection_rate"] = otsu.detection_rate
            results["n_volumes"] = len(self.per_case["otsu"].detections)
            if resamples:
                results.update(intervals(self.case_figures(), resamples))
        if len(self.hd95_units) > 1:  # millimetres and pixels: no mean of the two
            results.update({key: math.nan for key in results
                            if key.startswith("hd95_") and key != "hd95_unit"})
        self.store.close()
        return results

    def _uncertainty_auroc(self, rule: str) -> float:
        """AUROC of the uncertainty as a score for "``rule``'s mask is wrong here" over the
        foreground pixels (Wolleb 2022c): 1 when every wrong pixel is more uncertain than
        every right one, NaN when the masks are all right (or all wrong)."""
        return auroc(np.concatenate(self.wrong[rule]),
                     _joined(self.uncertainty, self.uncertainty[0].dtype.type))

    def _operating_point(self, rule: str) -> dict[str, float]:
        """Per-case Dice, lesion-wise precision / recall / F1 (pooled over cases) and
        detection by lesion volume of ``rule``'s masks (``fpr``, the healthy-FPR threshold;
        ``own``, the method's own mask)."""
        found = self.per_case[rule]
        pooled = found.pooled
        return {f"volume_dice_{rule}": mean_of(list(found.dice.values())),
                f"lesion_precision_{rule}": pooled.precision,
                f"lesion_recall_{rule}": pooled.detection_rate,
                f"lesion_f1_{rule}": pooled.f1,
                **size_strata(found.detections, self.voxel_ml, self.size_bins_ml, rule)}

    def _global_otsu_pass(self) -> None:
        """Otsu's threshold over every stored brain pixel (their histogram summed case by
        case), then each case's masks at it."""
        threshold = self._global_otsu()
        for case, shape, spacing, fg, truth, anomalous, pixels in self._stored_cases():
            maps = np.zeros(shape, np.float32)
            maps[fg] = pixels
            masks = self.post.masks((maps > threshold) & fg,
                                    [case] * shape[0] if self.by_case else None, self.voxel_ml)
            self.rules["global_otsu"].add(masks, truth, fg, anomalous, np.zeros(shape[0], bool),
                                          spacing)

    def _stored_cases(self) -> Iterator[tuple[str, tuple[int, ...], tuple[float, float] | None,
                                              np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """The stored cases in order: case, shape, pixel size, brain, truth, anomalous slices
        and the filtered brain pixels."""
        self.store.seek(0)
        for case, shape, n_pixels, spacing in self.stored:
            pixels = np.frombuffer(self.store.read(4 * n_pixels), np.float32)
            packed = (int(np.prod(shape)) + 7) // 8
            fg, truth = (np.unpackbits(np.frombuffer(self.store.read(packed), np.uint8),
                                       count=int(np.prod(shape))).astype(bool).reshape(shape)
                         for _ in range(2))
            anomalous = np.frombuffer(self.store.read(shape[0]), bool)
            yield case, shape, spacing, fg, truth, anomalous, pixels

    def _global_otsu(self) -> float:
        """scikit-image's Otsu threshold of every stored brain pixel, from their 256-bin
        histogram over the pixels' range (+inf, nothing flagged, for a flat map)."""
        if not self.low < self.high:
            return math.inf
        edges_range = (np.float32(self.low), np.float32(self.high))
        counts = np.zeros(OTSU_BINS, np.int64)
        edges = np.zeros(OTSU_BINS + 1)
        for *_, pixels in self._stored_cases():
            found, edges = np.histogram(pixels, bins=OTSU_BINS, range=edges_range)
            counts += found
        centres = (edges[:-1] + edges[1:]) / 2.0
        return float(threshold_otsu(hist=(counts, centres)))


def _joined(parts: list[np.ndarray], dtype: type[np.generic]) -> np.ndarray:
    """The parts of a pooled array as one, which replaces them in ``parts`` (so the pool is
    joined once, however often it is read)."""
    if len(parts) != 1:
        parts[:] = [np.concatenate(parts).astype(dtype, copy=False) if parts
                    else np.zeros(0, dtype)]
    return parts[0]


def size_strata(detections: Mapping[str, LesionDetection], voxel_ml: Mapping[str, float] | None,
                size_bins_ml: tuple[float, float], suffix: str = "fpr") -> dict[str, float]:
    """``detection_rate_<bin>_<suffix>`` and ``n_lesions_<bin>`` for lesions below the first
    edge (small), between the edges (medium) and from the second edge (large); NaN without
    voxel sizes (2-D images)."""
    volume = np.concatenate([found.sizes * (voxel_ml or {}).get(case, math.nan)
                             for case, found in detections.items()])
    hit = np.concatenate([found.found for found in detections.values()])
    small, large = size_bins_ml
    strata = {"small": volume < small, "medium": (volume >= small) & (volume < large),
              "large": volume >= large}
    out: dict[str, float] = {}
    for name, inside in strata.items():
        out[f"detection_rate_{name}_{suffix}"] = float(hit[inside].mean()) if inside.any() \
            else math.nan
        out[f"n_lesions_{name}"] = int(inside.sum())
    return out
