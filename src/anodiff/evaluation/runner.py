"""Run a fitted detector over a dataset split and evaluate it (``anodiff evaluate``).

Localisation runs in batches with a progress bar; wall-clock seconds and network
evaluations per image are measured here, in one place, for every method. Thresholds that a
deployment could use are calibrated on the *healthy validation* slices only (1 % pixel
false-positive rate; the 95th percentile of healthy image scores for the image F1): without
such slices there is no deployable operating point, and evaluation refuses.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import torch

from anodiff.data import SliceDataset
from anodiff.evaluation.stream import residual_sum_per_slice
from anodiff.methods import Detector
from anodiff.progress import progress_bar
from anodiff.scoring.foreground import foreground


@dataclass
class Predictions:
    """Everything a detector produced on a set of slices, as numpy arrays."""

    images: np.ndarray  # (N, C, H, W)
    truth: np.ndarray  # (N, H, W) bool
    labels: np.ndarray  # (N,) bool
    maps: np.ndarray  # (N, H, W)
    scores: np.ndarray  # (N,)
    masks: np.ndarray | None
    pseudo_healthy: np.ndarray | None
    uncertainty: np.ndarray | None  # (N, H, W) where the method has one
    cases: list[str]
    seconds_per_image: float
    nfe_per_image: float
    voxel_ml: dict[str, float] = field(default_factory=dict)  # per case (volumes only)
    pixel_mm: dict[str, tuple[float, float]] = field(default_factory=dict)  # per case, known
    slices: list[int] = field(default_factory=list)  # each slice's index in its case
    # per slice, the pseudo-healthy residual summed over its brain (where the method makes
    # pseudo-healthy images): what ``healthy_residual`` needs when they are not all kept
    residual_sums: np.ndarray | None = None
    examples: dict[int, np.ndarray] = field(default_factory=dict)  # kept pseudo-healthy rows

    @cached_property
    def foreground(self) -> np.ndarray:
        return brain(self.images)


class ExamplePicker:
    """The slices an evaluation shows (its grid), one a patient, chosen as the slices come:
    the slice with the largest lesion of each of the ``lesioned`` cases whose largest lesions
    are the largest (largest first), then the lesion-free slice with the most brain of each of
    the ``healthy`` cases where it is largest (typical anatomy rather than the skull base).
    Known from the truth and the brain alone, before localising, so only their outputs need
    be kept; the choice among the slices given so far is the one among all of them (an exact
    top-k: a slice passed over is never chosen later, and only the picks are kept), so a split
    read case by case needs no second pass. A case's slices come in one :meth:`add`; slices
    without a case count as cases of their own."""

    def __init__(self, lesioned: int = 4, healthy: int = 2) -> None:
        self.lesioned, self.healthy = lesioned, healthy
        self.largest: list[tuple[int, int]] = []  # (lesion area, row) of the lesion picks
        self.calm: list[tuple[int, int]] = []  # (brain area, row) of the healthy picks

    def add(self, start: int, truth: np.ndarray, fg: np.ndarray, cases: Sequence[str]) -> None:
        """The slices from row ``start`` on: their truth and brain (n, H, W) and cases."""
        area = truth.reshape(len(truth), -1).sum(1)
        brain_area = fg.reshape(len(fg), -1).sum(1)
        self.largest = _top(self.largest + _best_of_each_case(
            area, start, cases, area > 0), self.lesioned)
        self.calm = _top(self.calm + _best_of_each_case(
            brain_area, start, cases, area == 0), self.healthy)

    @property
    def rows(self) -> np.ndarray:
        """The chosen rows in the grid's order."""
        return np.array([row for _, row in self.largest + self.calm], dtype=int)


def _best_of_each_case(size: np.ndarray, start: int, cases: Sequence[str],
                       eligible: np.ndarray) -> list[tuple[int, int]]:
    """(size, row) of the eligible slice of the largest ``size`` in each case (the first on
    ties; a slice without a case is a case of its own)."""
    best: dict[str, tuple[int, int]] = {}
    for i in np.flatnonzero(eligible).tolist():
        key = cases[i] or f"#{start + i}"
        if key not in best or size[i] > best[key][0]:
            best[key] = (int(size[i]), start + i)
    return list(best.values())


def _top(picks: list[tuple[int, int]], count: int) -> list[tuple[int, int]]:
    """The ``count`` (size, row) picks of the largest size, the earlier row first on ties."""
    return sorted(picks, key=lambda pick: (-pick[0], pick[1]))[:count]


def example_rows(truth: np.ndarray, fg: np.ndarray, cases: Sequence[str]) -> np.ndarray:
    """The :class:`ExamplePicker` rows of a split held whole."""
    picker = ExamplePicker()
    picker.add(0, truth, fg, cases)
    return picker.rows


def brain(images: np.ndarray) -> np.ndarray:
    """The foreground (N, H, W) of slices ``images`` (N, C, H, W), as numpy
    (:func:`~anodiff.scoring.foreground.foreground`)."""
    return foreground(torch.from_numpy(images)).numpy()


@dataclass
class BatchOutputs:
    """What a detector produced on one batch of slices: arrays by kind (``maps``,
    ``scores``, and ``masks``, ``pseudo_healthy``, ``uncertainty`` where it makes them),
    the wall-clock seconds and the network evaluations spent on the whole batch. Once
    :func:`reduced` (an evaluation's batch), ``residual_sums`` stands for the pseudo-healthy
    images and ``examples`` holds those of the split's example rows in the batch."""

    arrays: dict[str, np.ndarray]
    seconds: float
    nfe: float
    examples: dict[int, np.ndarray] = field(default_factory=dict)


def reduced(outputs: BatchOutputs, images: np.ndarray, fg: np.ndarray, start: int,
            kept: Collection[int] | None) -> BatchOutputs:
    """``outputs`` of the batch that starts at slice ``start`` (``images``: its slices' own
    channels, ``fg`` their brain) with the per-slice residual sums of its pseudo-healthy images
    (:func:`~anodiff.evaluation.stream.residual_sum_per_slice`); with ``kept`` (the split's
    :func:`example_rows`) the pseudo-healthy images themselves are dropped but for those
    rows. ``outputs`` itself when it has no pseudo-healthy images (or no longer has them)."""
    pseudo_healthy = outputs.arrays.get("pseudo_healthy")
    if pseudo_healthy is None:
        return outputs
    arrays = dict(outputs.arrays)
    arrays["residual_sums"] = residual_sum_per_slice(images, pseudo_healthy, fg)
    examples = dict(outputs.examples)
    if kept is not None:
        del arrays["pseudo_healthy"]
        examples.update({row: pseudo_healthy[row - start] for row in kept
                         if start <= row < start + len(pseudo_healthy)})
    return BatchOutputs(arrays, outputs.seconds, outputs.nfe, examples)


def batch_starts(count: int, batch_size: int) -> range:
    """Where the batches of a split of ``count`` slices start: the unit of work of
    :func:`predict`, and of a shard (so that sharding cannot change a number)."""
    return range(0, count, batch_size)


def predict_batch(detector: Detector, inputs: np.ndarray, centre: int) -> BatchOutputs:
    """Localise one batch ``inputs`` (N, C, H, W); of 2.5-D inputs the pseudo-healthy
    images keep the first ``centre`` channels (the slice's own)."""
    batch = torch.from_numpy(np.ascontiguousarray(inputs))
    begin = time.perf_counter()
    result = detector.localize(batch)
    seconds = time.perf_counter() - begin
    arrays = {"maps": result.anomaly_map, "scores": result.score, "masks": result.mask,
              "pseudo_healthy": None if result.pseudo_healthy is None
              else result.pseudo_healthy[:, :centre], "uncertainty": result.uncertainty}
    return BatchOutputs({kind: values.numpy() if values.dtype == torch.bool
                         else values.float().numpy()
                         for kind, values in arrays.items() if values is not None},
                        seconds, float(result.nfe * len(batch)))


def localised(detector: Detector, split: SplitSlices, batch_size: int = 32,
              progress: bool = True) -> Iterator[tuple[int, BatchOutputs]]:
    """Each batch of ``split``'s slices localised (:func:`predict_batch`), in order, with
    the slice it starts at; a progress bar on a terminal."""
    for start in progress_bar(batch_starts(len(split.inputs), batch_size),
                              desc=f"{detector.name}: localise", enabled=progress):
        yield start, predict_batch(detector, split.inputs[start:start + batch_size],
                                   split.centre)


def centre_channels(data: Any, inputs: np.ndarray) -> int:
    """The slice's own channels of ``data``'s inputs (fewer than all for 2.5-D input)."""
    return len(getattr(data, "centre_sequences", ())) or inputs.shape[1]


def predict(detector: Detector, data: Any, batch_size: int = 32, progress: bool = True,
            all_pseudo_healthy: bool = True) -> Predictions:
    """Localise every slice of ``data`` (a :class:`~anodiff.data.SliceDataset`, or an
    indexable of dicts with image, label, mask), batch by batch (:func:`predict_batch`).

    A dataset's arrays are used as they are and every output is written into one array per
    kind as the batches come, so the split is held once (not a list of batches and their
    concatenation beside it). Without ``all_pseudo_healthy`` (an evaluation) the
    pseudo-healthy images, as large as the inputs, are not held: each batch's become
    per-slice residual sums, and only the :func:`example_rows` are kept. Of 2.5-D inputs
    (``data.centre_sequences`` fewer than the channels: the rest are neighbouring slices)
    the predictions keep the slice's own channels, for the foreground, the figures and the
    pseudo-healthy images."""
    collected = OutputArrays(data, all_pseudo_healthy)
    for start, outputs in localised(detector, collected.split, batch_size, progress):
        collected.put(start, outputs)
    return collected.predictions()


@dataclass
class SplitSlices:
    """What an evaluation knows of slices before localising them (a split, or some of its
    cases): the inputs (N, C, H, W), of which the first ``centre`` channels are the slice's
    own (``images``; fewer for 2.5-D inputs), the truth, labels, each slice's case and index
    in it, the cases' voxel volumes and pixel sizes (where known) and the brain of every
    slice (``fg``, computed once)."""

    inputs: np.ndarray
    centre: int
    truth: np.ndarray
    labels: np.ndarray
    cases: list[str]
    slices: list[int]
    voxel_ml: dict[str, float]
    pixel_mm: dict[str, tuple[float, float]]
    fg: np.ndarray

    @classmethod
    def of(cls, data: Any) -> SplitSlices:
        """Of ``data``: a :class:`~anodiff.data.SliceDataset` (its arrays, not copied) or an
        indexable of dicts with image, label, mask (:func:`slice_arrays`)."""
        inputs, truth, labels, cases, slices = slice_arrays(data)
        centre = centre_channels(data, inputs)
        known = dict.fromkeys(cases)
        voxel_ml = {c: data.voxel_ml(c) for c in known} if hasattr(data, "voxel_ml") else {}
        sizes = {c: data.pixel_mm(c) for c in known} if hasattr(data, "pixel_mm") else {}
        return cls(inputs, centre, truth, labels, cases, slices, voxel_ml,
                   {c: size for c, size in sizes.items() if size is not None},
                   brain(inputs[:, :centre]))

    @classmethod
    def of_predictions(cls, found: Predictions) -> SplitSlices:
        """Of predictions held whole (their images being the slices' own channels)."""
        return cls(found.images, found.images.shape[1], found.truth, found.labels,
                   list(found.cases), list(found.slices), dict(found.voxel_ml),
                   dict(found.pixel_mm), found.foreground)

    @property
    def images(self) -> np.ndarray:
        """The slices' own channels (N, centre, H, W)."""
        return self.inputs[:, :self.centre]

    def __len__(self) -> int:
        return len(self.inputs)

    def rows(self, begin: int, end: int | None = None) -> SplitSlices:
        """Rows ``begin`` to ``end`` (views, not copies)."""
        rows = slice(begin, end)
        cases = self.cases[rows]
        known = dict.fromkeys(cases)  # the sizes of these rows' cases alone, found by key
        return SplitSlices(self.inputs[rows], self.centre, self.truth[rows], self.labels[rows],
                           cases, self.slices[rows],
                           {c: self.voxel_ml[c] for c in known if c in self.voxel_ml},
                           {c: self.pixel_mm[c] for c in known if c in self.pixel_mm},
                           self.fg[rows])

    def then(self, more: SplitSlices) -> SplitSlices:
        """These slices followed by ``more``."""
        return SplitSlices(np.concatenate([self.inputs, more.inputs]), self.centre,
                           np.concatenate([self.truth, more.truth]),
                           np.concatenate([self.labels, more.labels]), self.cases + more.cases,
                           self.slices + more.slices, {**self.voxel_ml, **more.voxel_ml},
                           {**self.pixel_mm, **more.pixel_mm},
                           np.concatenate([self.fg, more.fg]))


class OutputArrays:
    """The outputs of the batches of ``data``'s slices (:class:`SplitSlices`), each written
    into one preallocated array per kind as it comes (in any order), with the time and NFE
    summed. The pseudo-healthy images are reduced as they come to per-slice residual sums
    (:func:`~anodiff.evaluation.stream.residual_sum_per_slice`), and kept whole only with
    ``all_pseudo_healthy``, else for the :func:`example_rows` alone."""

    def __init__(self, data: Any, all_pseudo_healthy: bool = True) -> None:
        self.split = SplitSlices.of(data)
        self.count = len(self.split.inputs)
        self.keep_all = all_pseudo_healthy
        self.kept = set() if all_pseudo_healthy else \
            set(example_rows(self.split.truth, self.split.fg, self.split.cases).tolist())
        self.arrays: dict[str, np.ndarray] = {}
        self.examples: dict[int, np.ndarray] = {}
        self.seconds = 0.0
        self.nfe = 0.0

    def put(self, start: int, outputs: BatchOutputs) -> None:
        """Place the batch that starts at slice ``start`` (reduced here if it was not)."""
        count = len(outputs.arrays["maps"])
        rows = slice(start, start + count)
        outputs = reduced(outputs, self.split.images[rows], self.split.fg[rows], start,
                          None if self.keep_all else self.kept)
        self.examples.update(outputs.examples)
        for kind, values in outputs.arrays.items():
            if kind not in self.arrays:
                self.arrays[kind] = np.empty((self.count, *values.shape[1:]), values.dtype)
            self.arrays[kind][start:start + len(values)] = values
        self.seconds += outputs.seconds
        self.nfe += outputs.nfe

    def predictions(self) -> Predictions:
        """The :class:`Predictions` of the data (whose slices the batches covered)."""
        split, outputs = self.split, self.arrays
        n = max(self.count, 1)
        return Predictions(
            images=split.images, truth=split.truth, labels=split.labels, maps=outputs["maps"],
            scores=outputs["scores"], masks=outputs.get("masks"),
            pseudo_healthy=outputs.get("pseudo_healthy"),
            uncertainty=outputs.get("uncertainty"), cases=split.cases,
            seconds_per_image=self.seconds / n, nfe_per_image=self.nfe / n,
            voxel_ml=split.voxel_ml, pixel_mm=split.pixel_mm, slices=split.slices,
            residual_sums=outputs.get("residual_sums"), examples=self.examples,
        )


def with_map_steps(detector: Detector, found: Predictions, keep_filtered: bool = False
                   ) -> Predictions:
    """``found`` with the image scores and the ``healthy_fpr`` / ``otsu`` masks of a detector
    whose thresholds were calibrated on filtered maps (:attr:`Detector.map_steps`) made, case
    by case, from its maps filtered so (:func:`mapped_case`), as ``anodiff detect`` makes
    them. The maps stay as localised (evaluation filters them by its own post-processing)
    unless ``keep_filtered`` (``anodiff detect`` writes the filtered ones). ``found`` itself
    when the detector has no map steps."""
    if not detector.map_steps.changes():
        return found
    fg = found.foreground
    cases = np.asarray(found.cases)
    filtered, scores = np.empty_like(found.maps), np.empty_like(found.scores)
    masks = None if found.masks is None else np.empty_like(found.masks)
    for case in dict.fromkeys(found.cases):
        rows = cases == case
        filtered[rows], scores[rows], case_masks = mapped_case(
            detector, found.maps[rows], fg[rows], found.scores[rows],
            None if found.masks is None else found.masks[rows])
        if case_masks is not None:
            if masks is None:
                masks = np.empty(found.maps.shape, bool)
            masks[rows] = case_masks
    return replace(found, scores=scores, maps=filtered if keep_filtered else found.maps,
                   masks=masks)


def mapped_case(detector: Detector, maps: np.ndarray, fg: np.ndarray, scores: np.ndarray,
                masks: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One case's maps filtered by the detector's map steps, and the image scores and the
    ``healthy_fpr`` / ``otsu`` masks made from them (a method's own mask is its own); the
    inputs as they are when it has no map steps."""
    if not detector.map_steps.changes():
        return maps, scores, masks
    filtered = detector.case_maps(torch.from_numpy(maps), torch.from_numpy(fg))
    fg_tensor = torch.from_numpy(fg)
    rule = detector.rule_masks(filtered, fg_tensor)
    return (filtered.numpy(), detector.scores(filtered, fg_tensor).numpy(),
            masks if rule is None else rule.numpy())


def slice_arrays(data: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[int]]:
    """Images (N, C, H, W) float32, masks (N, H, W) bool, labels (N,) bool, cases and slice
    indices of ``data``: a dataset's own arrays (no copy), or stacked from its items."""
    if isinstance(data, SliceDataset):
        return (data.images, data.masks.astype(bool, copy=False), data.labels != 0,
                data.cases.tolist(), data.indices.tolist())
    items = [data[i] for i in range(len(data))]
    return (np.stack([np.asarray(item["image"], dtype=np.float32) for item in items]),
            np.stack([np.asarray(item["mask"], dtype=bool) for item in items]),
            np.array([bool(item["label"]) for item in items]),
            [str(item.get("case", "")) for item in items],
            [int(item.get("index", i)) for i, item in enumerate(items)])
