"""``anodiff detect RUN INPUT… --out DIR``: maps, masks and pseudo-healthy images for files.

Each input is read as cases by :func:`anodiff.data.datasets.find_inputs` (a case folder, a
volume, a DICOM series, a 2-D image, or a folder of cases in anodiff's, nnU-Net's or BIDS
layout or a flat folder of files; ``layout`` forces one), each case is made into slices by
:func:`anodiff.data.datasets.load_input_case` with the run's data options (sequences by
name in channel order, normalisation, fit mode and size), i.e. by the very loaders training
used, so detection sees what the model was trained on. One difference
is deliberate: no slice range is pruned, every slice with foreground is localised, and
slices without foreground get a zero map. Slices are localised in batches by
:func:`anodiff.evaluation.runner.predict` (the same loop ``anodiff evaluate`` times and
counts NFE with), and the maps are put back on the input's grid (``unfit``, then
``slices_to_volume``) and written with :func:`~anodiff.data.io.write_like` in the input's
own format and geometry (a case folder's reference is its first sequence's image)::

    DIR/<name>_anomaly_map.<ext>                 float map, higher = more anomalous
    DIR/<name>_mask.<ext>                        the method's own mask, else per-image Otsu
    DIR/<name>_pseudo_healthy_<sequence>.<ext>   where the method makes one
    DIR/<name>_uncertainty.<ext>                 where the method has one (an ensemble's spread)
    DIR/<name>_lesions.csv                       the mask's connected components: volume (ml),
                                                 centroid (RAS mm), box, map values
    DIR/scores.csv                               one row per input case, kept across reruns

The shared post-processing (:class:`~anodiff.scoring.postprocess.PostProcess`) comes from
two places. A run exported with ``anodiff export --postprocess ... --refit DATA`` records it,
its map steps (the inter-slice median over the case's neighbouring slices, an in-plane
median, brain erosion) with thresholds calibrated on healthy maps filtered so: detect
filters each case's maps with them and makes the ``healthy_fpr`` and ``otsu`` masks, the
image scores and the case score from the filtered maps (a method's own mask stays its own).
``detect --postprocess`` adds mask steps (opening, closing, small 2-D components, 3-D
lesions under ``min_lesion_ml`` of the case), which clean the mask before it is written and
counted; map steps are refused there, since the run's thresholds were not calibrated on maps
filtered so.

``<name>`` is the case's name: the case folder's, the file's stem, nnU-Net's case id, BIDS's
``sub-<id>[_ses-<id>]``. A bad case (unreadable, a missing sequence, the wrong number of
channels, not 2-D/3-D as the model needs) or an input with no case is logged and recorded in
scores.csv with ``status=error``, and the others still run.

Inputs are never written to: ``DIR`` may not be an input nor lie inside an input folder (a
map written into a DICOM series folder would join the series), an output that would take an
input's place is refused, and two inputs with the same name are refused rather than letting
the second overwrite the first's maps.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from anodiff.config import listed
from anodiff.data.datasets import InputCase, SliceDataset, find_inputs, load_input_case
from anodiff.data.io import Image, image_stem, write_like
from anodiff.devices import resolve_device
from anodiff.diffusion.distributed import joined
from anodiff.errors import AnodiffError
from anodiff.evaluation.runner import Predictions, predict, with_map_steps
from anodiff.methods import Detector
from anodiff.outputs import prepare_output_folder, resolved, write_text_atomic
from anodiff.progress import progress_bar
from anodiff.report.lesions import lesion_csv, lesion_table
from anodiff.scoring.postprocess import MAP_STEPS, PostProcess
from anodiff.scoring.thresholds import per_image_otsu
from anodiff.workflows.run import RunSpec, load_run, run_log
from anodiff.workflows.scores_table import ScoresTable
from anodiff.workflows.shards import (
    SHARDS_FOLDER,
    Shard,
    agree_on_plan,
    missing_units,
    model_fingerprint,
    read_plan,
    shard_for,
    shard_lock,
    shards_folder,
    wait_for,
    write_json_atomic,
)

log = logging.getLogger(__name__)

SCORES_FILE = "scores.csv"
DICOM_OUTPUTS = ("objects", "series", "both")
LESIONS_SUFFIX = "_lesions.csv"  # <name>_lesions.csv: one case's lesion table
_RGB = ("red", "green", "blue")  # channel names of an RGB image's pseudo-healthy outputs
_PSEUDO_HEALTHY = "anodiff pseudo-healthy image (normalised [0, 1] intensities)"
_UNCERTAINTY = "anodiff uncertainty (spread of the method's draws; higher = less sure)"


@dataclass(frozen=True)
class DetectRow:
    """One row of ``scores.csv``: an input case and what came of it.

    ``score`` is the image score for a 2-D image and the maximum slice score for a volume
    (the method's score rule, which need not separate cases: a threshold's maximum is 1
    everywhere). ``case_score`` is the case-level score, the same for every method and mask
    rule: the share of the case's brain (foreground) above the pixel threshold calibrated
    at training so that a fraction ``fpr`` of healthy validation brain reaches it (about
    ``fpr`` for a healthy case); ``case_threshold`` is the largest case score among the
    healthy validation cases, and ``case_anomalous`` says whether this case scores above
    it (the three are empty for a model saved without a case calibration:
    ``anodiff export RUN --refit DATA --out NEW`` adds it). ``flagged_fraction`` is the
    share of the brain that the written mask flags and ``flagged_ml`` that volume in ml
    (empty for 2-D images); ``threshold`` and ``threshold_origin`` say which mask rule made
    the mask and where its threshold came from. ``anomalous_slices`` counts the slices whose
    mask (on the model grid) has a pixel, ``lesions`` the connected components of the mask
    on the input's grid (the rows of ``<name>_lesions.csv``); ``postprocess`` lists the
    post-processing applied (``interslice_median=3, min_lesion_ml=0.1``; empty: none; the
    run's own and ``--postprocess``'s); ``seconds`` is
    the wall time for the case, reading and writing included. The numbers are None (empty
    cells) when ``status`` is ``error``; ``message`` then says why.
    """

    input: str
    name: str
    status: str  # "ok" or "error"
    message: str = ""
    score: float | None = None
    case_score: float | None = None
    case_threshold: float | None = None
    case_anomalous: bool | None = None
    flagged_fraction: float | None = None
    flagged_ml: float | None = None
    threshold: float | None = None
    threshold_origin: str = ""
    postprocess: str = ""
    n_slices: int | None = None
    anomalous_slices: int | None = None
    lesions: int | None = None
    seconds: float | None = None
    nfe_per_slice: float | None = None


@dataclass(frozen=True)
class DetectReport:
    """What :func:`detect_inputs` did: one row per input case processed, in input order,
    the CSV (which also keeps earlier runs' rows) and the cases skipped as done before."""

    rows: tuple[DetectRow, ...]
    scores_csv: Path
    skipped: tuple[str, ...] = ()

    @property
    def failures(self) -> tuple[DetectRow, ...]:
        """The inputs that could not be processed (``status == "error"``)."""
        return tuple(row for row in self.rows if row.status == "error")


@dataclass(frozen=True)
class _Item:
    """One unit of detection: an input case, or an input that gave no case (``error``)."""

    source: str
    name: str
    case: InputCase | None = None
    error: str = ""


def detect_inputs(
    run: Path,
    inputs: Sequence[Path],
    out: Path,
    *,
    batch_size: int = 32,
    progress: bool = True,
    device: str = "auto",
    layout: str = "auto",
    sequence_map: dict[str, str] | None = None,
    skip_existing: bool = False,
    dicom_output: str = "objects",
    shard: str | None = None,
    loaded: tuple[Detector, RunSpec] | None = None,
    postprocess: PostProcess | None = None,
) -> DetectReport:
    """Localise anomalies in every input with the run's model; write maps and ``scores.csv``.

    ``inputs``: case folders (``<case>/<case>_<seq>.*``), single 3-D images or DICOM series
    folders (for a one-sequence model), folders of cases in any layout
    :func:`~anodiff.data.layouts.discover` reads (``layout`` forces one, ``sequence_map``
    renames sequences, over the run's own map), or 2-D images and folders of them (for a
    model trained on the images layout). ``out`` is created if missing; a ``scores.csv``
    already there keeps its rows, those of the inputs processed now are replaced, and with
    ``skip_existing`` a case with an ``ok`` row and its map in ``out`` is not run again.
    ``dicom_output`` says what a DICOM input gets (:data:`DICOM_OUTPUTS`): ``objects``, a
    DICOM SEG of the mask and Parametric Maps of the map and uncertainty that reference the
    source series (:mod:`anodiff.data.dicom_objects`; pseudo-healthy images stay image
    series), ``series``, new image series for everything, or ``both``.
    Pseudo-healthy images are written in the normalised [0, 1] intensity scale the model
    works in, not in the input's raw intensities. Problems with the run or ``out`` raise
    :class:`AnodiffError`; problems with one input are recorded in its row and the others go
    on (see the module docstring).

    With ``shard`` (``"I/N"``) or under ``torchrun``, this process does every N-th case
    (:mod:`~anodiff.workflows.shards`): each case's row is written to
    ``OUT/shards/case-<number>.json`` after its outputs (its done marker; a rerun skips the
    cases done ``ok``), and :func:`merge_detection` (``anodiff merge``, or the main process
    itself under torchrun) makes ``scores.csv``. The report then holds this shard's rows.

    ``postprocess``: mask steps of the shared post-processing, over those the run records,
    applied to each case's mask (whichever rule made it) before it is written, counted and
    tabled; map steps are refused (see the module docstring), and ``min_lesion_ml`` fails a
    2-D image's case (it has no voxel volume) with a named error.

    ``loaded``: the run as :func:`~anodiff.workflows.run.load_run` returned it, for a caller
    that detects case after case with one model (the viewer's worker): it is used as it is,
    on its own device, instead of loading ``run`` again for every call.
    """
    run, out = Path(run), Path(out)
    paths = [Path(p) for p in inputs]
    if not paths:
        raise AnodiffError("detect: no inputs given")
    if batch_size < 1:
        raise AnodiffError(f"detect: batch_size must be positive, got {batch_size}")
    if dicom_output not in DICOM_OUTPUTS:
        raise AnodiffError(f"detect: --dicom-output must be one of {', '.join(DICOM_OUTPUTS)}, "
                           f"got {dicom_output!r}")
    masks_only = postprocess or PostProcess()
    if masks_only.map_changes():
        raise AnodiffError(
            f"detect: --postprocess {listed(masks_only.map_changes())} would change the maps "
            "whose threshold the run calibrated without it; detect takes the mask steps only "
            f"({', '.join(k for k in masks_only.to_dict() if k not in MAP_STEPS)}); give the "
            "run map steps with `anodiff export RUN --postprocess ... --refit DATA --out NEW`")
    with joined(resolve_device(device)) as (world, target):
        part = shard_for(shard, world)
        detector, spec = loaded if loaded is not None else load_run(run, target)
        post = replace(spec.postprocess, **masks_only.changes())
        # Training records the sequences it used; an images model has none.
        sequences = tuple(spec.data.sequences) if spec.data.sequences else None
        _check_scores_name(out, paths)
        prepare_output_folder(out, paths)
        names = {**(spec.data.sequence_map or {}), **(sequence_map or {})}
        items = _items(paths, sequences, layout, names)
        work = _Work(detector, spec, sequences, out, frozenset(resolved(p) for p in paths),
                     batch_size, dicom_output, _name_clashes(items), post)
        if part is None:
            return _detect_all(work, items, skip_existing, progress)
        shards_folder(out)
        with run_log(out, f"{SHARDS_FOLDER}/detect-{part.tag}"):
            agree_on_plan(out, {
                "kind": "detect", "run": str(resolved(run)), "model": model_fingerprint(run),
                "inputs": [str(resolved(p)) for p in paths], "items": len(items), "layout": layout,
                "sequence_map": sequence_map or {}, "batch_size": batch_size,
                "dicom_output": dicom_output, "postprocess": post.changes(),
                "shards": part.count})
            with shard_lock(out, part):
                rows = _detect_shard(work, items, part, progress)
        if world.distributed and world.main:
            wait_for([_item_file(out, number) for number in range(len(items))])
            return merge_detection(out)
        if not world.distributed:
            log.info("shard %s of %s done; `anodiff merge %s` once all %d are", part, out, out,
                     part.count)
        return DetectReport(tuple(rows), out / SHARDS_FOLDER)


@dataclass(frozen=True)
class _Work:
    """What every case of one detect call shares."""

    detector: Detector
    spec: RunSpec
    sequences: tuple[str, ...] | None
    out: Path
    protected: frozenset[Path]
    batch_size: int
    dicom_output: str
    clashes: dict[int, str]  # item number -> why its outputs' name is taken
    post: PostProcess  # mask steps only

    def detect(self, number: int, item: _Item) -> DetectRow:
        """The row of one item, its outputs written."""
        if item.case is None:
            return _failed(item.source, item.name, item.error)
        if number in self.clashes:
            return _failed(item.source, item.name, self.clashes[number])
        return _detect_one(self.detector, self.spec, self.sequences, item.case, self.out,
                           self.protected, self.batch_size, self.dicom_output, self.post)


def _items(paths: list[Path], sequences: tuple[str, ...] | None, layout: str,
           names: dict[str, str]) -> list[_Item]:
    """Every case of every input in order; an input that gives none is one error item."""
    items: list[_Item] = []
    for path in paths:
        try:
            cases = find_inputs(path, sequences, layout=layout, sequence_map=names)
        except AnodiffError as err:
            items.append(_Item(str(path), path.name, error=str(err)))
            continue
        items += [_Item(str(case.source), case.name, case) for case in cases]
    return items


def _name_clashes(items: list[_Item]) -> dict[int, str]:
    """The items whose outputs would be named like an earlier item's (casefold: on a
    case-insensitive file system they would overwrite them), with the refusal."""
    taken: dict[str, str] = {}
    clashes: dict[int, str] = {}
    for number, item in enumerate(items):
        if item.case is None:
            continue
        key = item.name.casefold()
        if key in taken:
            clashes[number] = (f"{item.source}: its outputs would be named '{item.name}', like "
                               f"those of {taken[key]}; rename one of them")
        else:
            taken[key] = item.source
    return clashes


def _detect_all(work: _Work, items: list[_Item], skip_existing: bool, progress: bool
                ) -> DetectReport:
    """One process, every item; ``scores.csv`` rewritten after each."""
    table = ScoresTable(work.out / SCORES_FILE, [f.name for f in fields(DetectRow)])
    rows: list[DetectRow] = []
    skipped: list[str] = []
    for number, item in enumerate(progress_bar(items, desc=f"detect ({work.spec.method})",
                                               unit="case", enabled=progress)):
        if skip_existing and item.case is not None and number not in work.clashes and \
                table.done(item.source, work.out, item.name):
            log.info("skipping %s: done before (%s)", item.source, table.path)
            skipped.append(item.source)
            continue
        rows.append(work.detect(number, item))
        table.put(asdict(rows[-1]))
    return DetectReport(tuple(rows), table.path, tuple(skipped))


def _item_file(out: Path, number: int) -> Path:
    return out / SHARDS_FOLDER / f"case-{number:07d}.json"


def _detect_shard(work: _Work, items: list[_Item], shard: Shard, progress: bool
                  ) -> list[DetectRow]:
    """The shard's items not done ``ok`` before, each row written after its outputs."""
    mine = [(number, item) for number, item in enumerate(items) if shard.takes(number)]
    todo = [(number, item) for number, item in mine
            if getattr(_read_row(work.out, number), "status", None) != "ok"]
    if len(todo) < len(mine):
        log.info("shard %s: %d of its %d cases were done before", shard, len(mine) - len(todo),
                 len(mine))
    rows = []
    for number, item in progress_bar(todo, desc=f"detect ({work.spec.method}), shard {shard}",
                                     unit="case", enabled=progress):
        rows.append(work.detect(number, item))
        write_json_atomic(_item_file(work.out, number), asdict(rows[-1]))
    return rows


def _read_row(out: Path, number: int) -> DetectRow | None:
    """The row item ``number`` got, if it has one (None also for a damaged file: redone)."""
    try:
        return DetectRow(**json.loads(_item_file(out, number).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def merge_detection(out: Path) -> DetectReport:
    """``anodiff merge`` of a sharded detect: every case's row into ``OUT/scores.csv`` in
    input order (earlier rows of other inputs kept, as a one-process rerun does)."""
    out = Path(out)
    plan = read_plan(out)
    rows = [_read_row(out, number) for number in range(plan["items"])]
    done = {number for number, row in enumerate(rows) if row is not None}
    missing = missing_units(done, plan["items"], plan["shards"])
    if missing:
        raise AnodiffError(f"{out}: not every shard is done ({missing}); run the missing "
                           "shards, then merge again")
    table = ScoresTable(out / SCORES_FILE, [f.name for f in fields(DetectRow)])
    for row in rows:
        assert row is not None
        table.put(asdict(row))
    return DetectReport(tuple(row for row in rows if row is not None), table.path)


def _detect_one(
    detector: Detector,
    spec: RunSpec,
    sequences: tuple[str, ...] | None,
    case: InputCase,
    out: Path,
    protected: frozenset[Path],
    batch_size: int,
    dicom_output: str,
    post: PostProcess,
) -> DetectRow:
    """Process one input case into its files and row; an AnodiffError becomes an error row."""
    start = time.perf_counter()
    path, name = case.source, case.name
    try:
        data = load_input_case(case, sequences, size=spec.data.size, fit=spec.data.fit,
                               normalisation=spec.data.normalisation,
                               context=spec.data.context)
        shape = tuple(data.images.shape[1:])
        if shape != tuple(detector.input_shape or ()):
            raise AnodiffError(f"{path}: gives slices of shape {shape} (channels, H, W), but "
                               f"the model takes {tuple(detector.input_shape or ())}")
        predictions = predict(detector, data, batch_size, progress=False)
        # as calibrated: scores, masks and maps filtered by the run's map steps, if any
        predictions = with_map_steps(detector, predictions, keep_filtered=True)
        masks = predictions.masks
        if masks is None:
            masks = per_image_otsu(predictions.maps, predictions.foreground)
        voxel_ml = data.voxel_ml(name)
        if post.changes():
            masks = post.masks(masks, [name] * len(masks), {name: voxel_ml})
        lesions = _write_outputs(data, name, predictions, masks, out, protected,
                                 DicomObjects(dicom_output, detector.name))
    except AnodiffError as err:
        return _failed(str(path), name, str(err))
    flagged = int((masks & predictions.foreground).sum())
    threshold, origin = mask_origin(detector)
    case = detector.case_score(torch.as_tensor(predictions.maps),
                               torch.as_tensor(predictions.foreground))
    return DetectRow(
        input=str(path),
        name=name,
        status="ok",
        score=float(predictions.scores.max()),
        case_score=None if case is None else round(case[0], 6),
        case_threshold=None if case is None else round(case[1], 6),
        case_anomalous=None if case is None else case[0] > case[1],
        flagged_fraction=round(flagged / max(int(predictions.foreground.sum()), 1), 6),
        flagged_ml=None if math.isnan(voxel_ml) else round(flagged * voxel_ml, 3),
        threshold=threshold,
        threshold_origin=origin,
        postprocess=listed(post.changes()),
        n_slices=len(data),
        anomalous_slices=int(masks.any(axis=(1, 2)).sum()),
        lesions=lesions,
        seconds=round(time.perf_counter() - start, 3),
        nfe_per_slice=float(predictions.nfe_per_image),
    )


def mask_origin(detector: Detector) -> tuple[float | None, str]:
    """The threshold of the detector's mask rule (None when it is per image) and where it
    comes from, for scores.csv."""
    config = detector.config
    if config.mask == "healthy_fpr":
        return (float(detector.threshold),
                f"healthy_fpr: {config.fpr:g} of healthy validation brain pixels above it")
    if config.mask == "otsu":
        return None, "otsu: each slice's own Otsu threshold (not calibrated)"
    return None, f"own: {detector.name}'s own mask rule"


def _failed(source: str, name: str, message: str) -> DetectRow:
    """The error row of an input or case, logged once as ``failed: INPUT: why`` (the message
    names the file at fault, which is often the input itself)."""
    log.warning("failed: %s", message if message.startswith(source) else f"{source}: {message}")
    return DetectRow(source, name, "error", message)


def _write_outputs(
    data: SliceDataset,
    name: str,
    predictions: Predictions,
    masks: np.ndarray,
    out: Path,
    protected: frozenset[Path],
    dicom: DicomObjects,
) -> int:
    """Write the map, mask, pseudo-healthy images and uncertainty of one input on its own
    grid (for a DICOM input, as ``dicom`` says), and its lesion table
    (:func:`~anodiff.report.lesions.lesion_table` of the mask as written); return the number
    of lesions.

    Every output is checked against the inputs before the first is written, so a refused
    input leaves no partial results behind.
    """
    outputs: list[tuple[str, np.ndarray, str | None]] = [
        (f"{name}_anomaly_map", predictions.maps, None),
        (f"{name}_mask", masks, None),
    ]
    if predictions.pseudo_healthy is not None:
        channels = predictions.pseudo_healthy.shape[1]
        names = data.centre_sequences if len(data.centre_sequences) == channels else _RGB
        outputs += [(f"{name}_pseudo_healthy_{channel}", predictions.pseudo_healthy[:, c],
                     _PSEUDO_HEALTHY) for c, channel in enumerate(names)]
    if predictions.uncertainty is not None:
        outputs.append((f"{name}_uncertainty", predictions.uncertainty, _UNCERTAINTY))
    reference = data.reference_image(name)
    objects = dicom.objects(reference, [stem for stem, _, description in outputs
                                        if description != _PSEUDO_HEALTHY])
    series = [stem for stem, _, _ in outputs if stem not in objects or dicom.series]
    folder = out.resolve()
    for stem in series:
        # write_like keeps the stem and picks the extension, so a clash is a same-stem input
        if any(p.parent == folder and image_stem(p) == stem for p in protected):
            raise AnodiffError(f"{out / stem}: would overwrite an input of this run; choose "
                               "another --out")
    lesions_file = out / f"{name}{LESIONS_SUFFIX}"
    for path in (lesions_file, *(out / file for file in objects.values())):
        if resolved(path) in protected:
            raise AnodiffError(f"{path}: would overwrite an input of this run; choose "
                               "another --out")
    volumes = {stem: data.reassemble(name, slices) for stem, slices, _ in outputs}
    for stem, _, description in outputs:
        if stem in series:
            write_like(volumes[stem], reference, out / stem, description=description)
        if stem in objects:
            dicom.write(volumes[stem], reference, out / objects[stem], description)
    rows = lesion_table(volumes[f"{name}_mask"], volumes[f"{name}_anomaly_map"],
                        reference.affine, volumes.get(f"{name}_uncertainty"))
    write_text_atomic(lesions_file, lesion_csv(rows))
    return len(rows)


@dataclass(frozen=True)
class DicomObjects:
    """What a DICOM input's map, mask and uncertainty become (``detect``'s
    ``dicom_output``): DICOM SEG and Parametric Map files referencing the source series,
    image series, or both; ``method`` names the algorithm in the objects."""

    output: str
    method: str

    @property
    def series(self) -> bool:
        """Whether image series are written too (every output of a non-DICOM input is)."""
        return self.output in ("series", "both")

    def objects(self, reference: Image, stems: list[str]) -> dict[str, str]:
        """``{stem: file name}`` of the outputs written as DICOM objects for ``reference``:
        none unless it is DICOM and objects are asked for."""
        if reference.format != "dicom" or self.output == "series":
            return {}
        return {stem: f"{stem}{'_seg' if stem.endswith('_mask') else '_pm'}.dcm"
                for stem in stems}

    def write(self, volume: np.ndarray, reference: Image, path: Path, description: str | None
              ) -> None:
        """A SEG of a bool ``volume``, a Parametric Map of a float one; a source series that
        highdicom cannot reference is one named error."""
        # highdicom is imported here, not with the module: only DICOM inputs pay for it
        from anodiff.data.dicom_objects import write_parametric_map, write_segmentation

        text = description or ("anodiff anomaly mask" if volume.dtype == np.bool_
                               else "anodiff anomaly map")
        write = write_segmentation if volume.dtype == np.bool_ else write_parametric_map
        try:
            write(volume, reference.header, path, method=self.method, description=text)
        except (ValueError, TypeError, AttributeError, KeyError) as err:
            raise AnodiffError(f"{reference.path}: cannot make a DICOM object that references "
                               f"it ({err}); use --dicom-output series") from err


def _check_scores_name(out: Path, inputs: list[Path]) -> None:
    """Refuse an input that scores.csv would replace."""
    for path in inputs:
        if resolved(path) == resolved(out) / SCORES_FILE:
            raise AnodiffError(f"{path}: an input named like the {SCORES_FILE} that detect "
                               f"writes into {out}; choose another --out")
