"""``anodiff evaluate``: a run's detector on a dataset's test split -> metrics.json, figures
and report.html.

Thresholds a deployment could use are calibrated on the healthy validation slices of the
same dataset (:class:`anodiff.evaluation.casewise.Calibration`); the test split is used for
evaluation only, case by case as its batches are localised
(:class:`~anodiff.evaluation.casewise.TestStream`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from anodiff.config import build, to_plain
from anodiff.data import CaseSource, SliceDataset
from anodiff.devices import resolve_device
from anodiff.diffusion.distributed import joined
from anodiff.errors import AnodiffError
from anodiff.evaluation.bootstrap import DEFAULT_RESAMPLES
from anodiff.evaluation.casewise import (
    Calibration,
    ScoredSplit,
    TestStream,
    case_spans,
    evaluate_cases,
)
from anodiff.evaluation.runner import (
    BatchOutputs,
    ExamplePicker,
    OutputArrays,
    SplitSlices,
    batch_starts,
    predict,
    predict_batch,
    reduced,
    with_map_steps,
)
from anodiff.extras import installed
from anodiff.methods import Detector
from anodiff.outputs import (
    prepare_output_folder,
    replaced_atomically,
    resolved,
    write_text_atomic,
)
from anodiff.progress import progress_bar
from anodiff.report.figures import (
    curves,
    detection_by_size,
    dice_against_threshold,
    dice_distribution,
    qualitative_grid,
)
from anodiff.report.html import write_report
from anodiff.report.tables import RESULT_COLUMNS
from anodiff.scoring.postprocess import PostProcess
from anodiff.workflows.run import RunSpec, load_run, run_log
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
)

log = logging.getLogger("anodiff")

SIZES = "sizes"  # OUT/shards/sizes-I-of-N.json: the split sizes a finished shard counted

NO_TEST_SPLIT = "the dataset has no test split (splits.csv: case,split)"
NO_HEALTHY_VAL = ("the dataset has no healthy validation slices, so no threshold at a healthy "
                  "false-positive rate can be calibrated; give it a val split with healthy "
                  "cases (splits.csv: case,val)")


def json_ready(value: Any) -> Any:
    """NaN -> None so the file is strict JSON (readable by any tool)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return json_ready(value.item())
    return value


def evaluate_detector(
    detector: Detector, data: SliceDataset | CaseSource, out: Path, *, title: str,
    postprocess: PostProcess | None = None, fpr: float = 0.01, batch_size: int = 32,
    resamples: int = DEFAULT_RESAMPLES,
) -> tuple[dict[str, Any], ScoredSplit, list[tuple[str, Path]]]:
    """Calibrate on the healthy validation slices, then localise the test split case by case
    and evaluate each case as its last batch is localised (with ``resamples``
    case-bootstrap resamples), and write metrics.json and the figures of
    :func:`method_figures`; return the metrics, the scored split and the (caption, figure)
    pairs. ``data`` read whole (a :class:`SliceDataset`), or a :class:`CaseSource` whose
    test cases are read one at a time, so that one case's slices are held, not the
    split's."""
    if resamples < 0:
        raise AnodiffError(f"resamples must be >= 0, got {resamples}")
    test_cases, count, healthy_val = evaluation_parts(data)
    validation = with_map_steps(detector, predict(detector, healthy_val, batch_size,
                                                  all_pseudo_healthy=False))
    cases = progress_bar(test_cases, desc=f"{detector.name}: localise the test cases",
                         total=count, unit="case")
    scored = evaluate_cases(detector, cases, Calibration.on(validation, postprocess, fpr),
                            postprocess, batch_size, resamples)
    return score_split(scored, out, method=detector.name,
                       sequences=list(data.centre_sequences), title=title)


def evaluation_parts(data: SliceDataset | CaseSource
                     ) -> tuple[Iterator[SplitSlices], int, SliceDataset]:
    """The test cases in order (each the slices of one case: read only as it is asked for
    when ``data`` is a :class:`CaseSource`), how many there are, and the healthy validation
    slices; a named error without test cases or healthy validation slices."""
    if isinstance(data, SliceDataset):
        test_split, healthy_val = evaluation_splits(data)
        whole = SplitSlices.of(test_split)
        spans = list(case_spans(whole.cases))
        return (whole.rows(begin, end) for _, begin, end in spans), len(spans), healthy_val
    test, val = data.of_split("test"), data.of_split("val")
    if not test.keys:
        raise AnodiffError(NO_TEST_SPLIT)
    healthy_val = val.dataset().healthy() if val.keys else None
    if healthy_val is None or len(healthy_val) == 0:
        raise AnodiffError(NO_HEALTHY_VAL)
    return (SplitSlices.of(case) for case in test.each()), len(test.keys), healthy_val


def evaluation_splits(data: SliceDataset) -> tuple[SliceDataset, SliceDataset]:
    """The test split and the healthy validation slices, or a named error without them."""
    test_split = data.split("test")
    if len(test_split) == 0:
        raise AnodiffError(NO_TEST_SPLIT)
    healthy_val = data.split("val").healthy()
    if len(healthy_val) == 0:
        raise AnodiffError(NO_HEALTHY_VAL)
    return test_split, healthy_val


def score_split(
    scored: ScoredSplit, out: Path, *, method: str, sequences: list[str], title: str,
) -> tuple[dict[str, Any], ScoredSplit, list[tuple[str, Path]]]:
    """metrics.json and the figures of ``method``'s scored test split (one process's, or
    the merged shards'): the metrics, the scored split and the (caption, figure) pairs."""
    out.mkdir(parents=True, exist_ok=True)  # its callers checked and probed the location
    metrics = scored.metrics
    metrics["method"], metrics["sequences"] = method, sequences
    write_text_atomic(out / "metrics.json", json.dumps(json_ready(metrics), indent=2))
    if not installed("report"):
        log.warning("%s: no figures (they need matplotlib: pip install 'anodiff[report]'); "
                    "metrics.json and the tables are complete", out)
        return metrics, scored, []
    return metrics, scored, method_figures(scored, out, title, sequences or None)


def method_figures(scored: ScoredSplit, out: Path, title: str,
                   channel_names: list[str] | None = None) -> list[tuple[str, Path]]:
    """One method's figures into ``out``: examples (with case and slice), Dice against the
    threshold with the FPR / Otsu / best points, the per-case Dice and detection by lesion
    size at the FPR threshold (for volumes), and image- and pixel-level curves; the last
    three of the post-processed maps the metrics were computed on."""
    metrics, rows = scored.metrics, scored.rows.tolist()
    name = str(metrics["method"])
    examples = [scored.examples[row] for row in rows]
    pseudo_healthy = None if any(e.pseudo_healthy is None for e in examples) \
        else np.stack([e.pseudo_healthy for e in examples])
    labels = [f"{scored.cases[r]}, slice {scored.slices[r]}" if scored.cases[r]
              else f"slice {r}" for r in rows] if scored.slices else None
    figures = [(f"{title}: examples, a patient a row, largest lesions first (case, slice; "
                "cyan: the method's Otsu mask, green: ground truth)", qualitative_grid(
                    np.stack([e.image for e in examples]), np.stack([e.truth for e in examples]),
                    np.stack([e.map for e in examples]), np.stack([e.mask for e in examples]),
                    pseudo_healthy, out / "grid.png", title, channel_names=channel_names,
                    row_labels=labels))]
    pixels = scored.evaluation.anomalous_pixels
    if metrics["n_anomalous"]:
        otsu = scored.evaluation.slice_otsu_thresholds
        marks = {f"healthy FPR {metrics['calibration']['pixel_fpr_target']:.0%}":
                 metrics["pixel_threshold"],
                 "Otsu (median of the slices')": float(np.median(otsu)) if otsu else math.nan,
                 "best (chosen with test labels)": metrics["dice_max_threshold"]}
        figures.append((f"{title}: Dice against the threshold", dice_against_threshold(
            *pixels, marks, out / "dice_threshold.png", f"{title}: Dice against the threshold")))
    if metrics.get("case_dice_fpr"):
        figures.append((f"{title}: Dice per case at the FPR threshold", dice_distribution(
            {name: list(metrics["case_dice_fpr"].values())}, out / "dice_cases.png",
            title)))
    if any(metrics.get(f"n_lesions_{size}") for size in ("small", "medium", "large")):
        figures.append((f"{title}: lesions found by size at the FPR threshold",
                        detection_by_size([metrics], out / "detection_by_size.png", title,
                                          tuple(metrics["size_bins_ml"]))))
    figures.append((f"{title}: image-level curves", curves(
        {name: scored.evaluation.image_labels}, out / "curves_image.png",
        f"{title}: image level")))
    figures.append((f"{title}: pixel-level curves (anomalous slices)", curves(
        {name: pixels}, out / "curves_pixel.png", f"{title}: pixel level (anomalous slices)")))
    return figures


def evaluate_run(run: Path, data_root: Path, out: Path, *, fpr: float = 0.01,
                 batch_size: int = 32, device: str = "auto",
                 resamples: int = DEFAULT_RESAMPLES, layout: str = "auto",
                 sequence_map: dict[str, str] | None = None, shard: str | None = None,
                 postprocess: PostProcess | None = None) -> dict[str, Any] | None:
    """``anodiff evaluate RUN --data DIR --out DIR`` on ``device``.

    The dataset is read with the run's data options, its sequences picked by name from
    whatever the folder holds; ``layout`` (default: detected) and ``sequence_map`` (over the
    run's own) say how to read this folder, which need not be laid out like the training
    data. ``postprocess`` (:class:`~anodiff.scoring.postprocess.PostProcess`: the inter-slice
    median over a case's neighbouring slices, small-lesion removal, ...) is applied to the
    healthy validation maps the thresholds are calibrated on and to the test maps alike, and
    recorded in metrics.json; None takes the post-processing the run records (``anodiff
    export --postprocess``: what ``detect`` applies), so its figures describe ``detect``.
    With ``shard`` (``"I/N"``) or under ``torchrun`` this process
    localises its share of the batches into ``OUT/shards`` (:mod:`~anodiff.workflows.shards`)
    and returns None; under torchrun the main process then waits for the others' and merges
    (returning the metrics), otherwise ``anodiff merge OUT`` does once every shard is done."""
    if not 0 < fpr < 1:
        raise AnodiffError(f"--fpr: the healthy false-positive rate must be in (0, 1), got {fpr}")
    if batch_size < 1 or resamples < 0:
        raise AnodiffError(f"need batch_size >= 1 and resamples >= 0, got {batch_size} and "
                           f"{resamples}")
    with joined(resolve_device(device)) as (world, target):
        part = shard_for(shard, world)
        detector, spec = load_run(run, target)
        post = spec.postprocess if postprocess is None else postprocess
        out = prepare_output_folder(Path(out), [Path(data_root)])  # RUN/eval is fine: ours
        if part is None:
            with run_log(out, "evaluate"):  # test cases read one at a time
                data = evaluation_source(spec, data_root, layout, sequence_map)
                title = f"{spec.method} on {Path(data_root).name}"
                metrics, _, figures = evaluate_detector(
                    detector, data, out, title=title, postprocess=post, fpr=fpr,
                    batch_size=batch_size, resamples=resamples)
                write_evaluation_report(out, title, metrics, figures, {
                    "run": str(run), "data": str(data_root), "fpr": fpr,
                    "resamples": resamples, "postprocess": post.to_dict(),
                    "run settings": to_plain(spec)})
            return metrics
        shards_folder(out)
        with run_log(out, f"{SHARDS_FOLDER}/evaluate-{part.tag}"):
            source = evaluation_source(spec, data_root, layout, sequence_map)
            sizes = evaluate_shard(detector, source, out, part, {
                "kind": "evaluate", "run": str(resolved(Path(run))),
                "model": model_fingerprint(run), "data": str(resolved(Path(data_root))),
                "layout": layout, "sequence_map": sequence_map or {}, "fpr": fpr,
                "resamples": resamples, "postprocess": post.to_dict(), "batch_size": batch_size,
                "shards": part.count})
        if not world.distributed:
            log.info("shard %s of %s done; `anodiff merge %s` once all %d are", part, out, out,
                     part.count)
            return None
        if not world.main:
            return None
        wait_for([_unit_file(out, name, start) for name, start in _units(sizes, batch_size)])
        return merge_evaluation(out)


def evaluate_shard(detector: Detector, source: CaseSource, out: Path, shard: Shard,
                   plan: dict[str, Any]) -> dict[str, int]:
    """Agree on the folder's plan (the settings), then localise the shard's batches under
    its lock, reading the test cases one at a time, and record the split sizes it counted
    (``OUT/shards/sizes-I-of-N.json``: the merge checks every shard read the same data);
    return them."""
    agree_on_plan(out, plan)
    with shard_lock(out, shard):
        sizes = localise_shard(detector, source, out, shard, plan["batch_size"])
        write_text_atomic(shards_folder(out) / f"{SIZES}-{shard.tag}.json", json.dumps(sizes))
    return sizes


def evaluation_source(spec: RunSpec, data_root: Path, layout: str,
                      sequence_map: dict[str, str] | None) -> CaseSource:
    """The test and validation cases of the dataset, not read yet (the training cases are
    never read), with the run's data options and this folder's layout and names; the cases
    left out for a missing sequence are logged."""
    names = {**(spec.data.sequence_map or {}), **(sequence_map or {})}
    source = replace(spec.data, layout=layout, sequence_map=names or None).cases(
        data_root, only_splits=("test", "val"))
    for case, problem in source.skipped:
        log.warning("skipped case %s: %s", case, problem)
    return replace(source, skipped=())


def write_evaluation_report(out: Path, title: str, metrics: dict[str, Any],
                            figures: list[tuple[str, Path]], settings: dict[str, Any]) -> None:
    """report.html of one evaluation."""
    write_report(out / "report.html", title,
                 [{**metrics, "dataset": Path(str(settings["data"])).name,
                   "sequences": "+".join(metrics["sequences"]) or "image"}],
                 RESULT_COLUMNS, figures, settings=settings,
                 notes=[f"*_fpr figures threshold at the value reached by "
                        f"{settings['fpr']:.0%} of healthy validation brain pixels (the "
                        "deployable operating point); intervals: 95 % case bootstrap."])
    log.info("metrics written to %s, report to %s", out / "metrics.json", out / "report.html")


def _shard_sizes(out: Path, planned: dict[str, int] | None) -> dict[str, int]:
    """The split sizes the finished shards counted (``sizes-*.json``), which must agree: a
    named error if they do not, or if no shard has finished. ``planned``: the sizes the plan
    of a folder made by an earlier anodiff records (its shards counted before starting)."""
    counted = {path.name: json.loads(path.read_text(encoding="utf-8"))
               for path in sorted(shards_folder(out).glob(f"{SIZES}-*.json"))}
    if not counted and planned is not None:
        return planned
    if not counted:
        raise AnodiffError(f"{out}: no shard has finished; run them, then merge")
    if len({json.dumps(sizes, sort_keys=True) for sizes in counted.values()}) > 1:
        raise AnodiffError(f"{out}: the shards read different data ({counted}); the dataset "
                           "changed while they ran: rerun them into another --out")
    return next(iter(counted.values()))


def _units(sizes: dict[str, int], batch_size: int) -> list[tuple[str, int]]:
    """The units of a sharded evaluation in order, from the split sizes
    (:func:`_split_sizes`): (split name, first slice) of every batch of the test split, then
    of the healthy validation slices."""
    return [(name, start) for name, size in (("test", sizes["test"]),
                                             ("val", sizes["val_healthy"]))
            for start in batch_starts(size, batch_size)]


def _unit_file(out: Path, name: str, start: int) -> Path:
    return Path(out) / SHARDS_FOLDER / f"{name}-{start:07d}.npz"


def localise_shard(detector: Detector, source: CaseSource, out: Path, shard: Shard,
                   batch_size: int) -> dict[str, int]:
    """Read the test cases one at a time and localise the shard's batches among those of the
    split held whole (every ``batch_size`` consecutive slices, across cases; numbered over
    the test split, then the healthy validation slices) that are not done yet, each written
    atomically into ``OUT/shards/<split>-<first slice>.npz`` (its done marker),
    :func:`reduced` first: no pseudo-healthy images but those of the grid's rows chosen so
    far. Returns the split sizes it counted."""
    test_cases, count, healthy_val = evaluation_parts(source)
    units = ShardUnits(detector, out, shard)
    picker = ExamplePicker()
    waiting: SplitSlices | None = None  # read, not yet in a batch
    start = 0  # the first of them
    for part in progress_bar(test_cases, desc=f"{detector.name}: shard {shard}", total=count,
                             unit="case"):
        picker.add(start + (len(waiting) if waiting is not None else 0), part.truth, part.fg,
                   part.cases)
        waiting = part if waiting is None else waiting.then(part)
        while len(waiting) >= batch_size:
            units.take("test", start, waiting.rows(0, batch_size), picker)
            waiting, start = waiting.rows(batch_size), start + batch_size
    if waiting is not None and len(waiting):
        units.take("test", start, waiting, picker)
        start += len(waiting)
    val = SplitSlices.of(healthy_val)
    val_picker = ExamplePicker()
    val_picker.add(0, val.truth, val.fg, val.cases)
    for first in batch_starts(len(val), batch_size):
        units.take("val", first, val.rows(first, first + batch_size), val_picker)
    if units.done_before:
        log.info("shard %s: %d of its %d batches were done before", shard, units.done_before,
                 units.done_before + units.localised)
    return {"test": start, "val_healthy": len(val)}


class ShardUnits:
    """The units of a sharded evaluation as they come, numbered in order: a shard's own that
    are not done are localised and written, the others passed over."""

    def __init__(self, detector: Detector, out: Path, shard: Shard) -> None:
        self.detector, self.out, self.shard = detector, out, shard
        self.number = self.done_before = self.localised = 0

    def take(self, name: str, start: int, batch: SplitSlices, picker: ExamplePicker) -> None:
        """The batch of split ``name`` that starts at slice ``start``."""
        number, self.number = self.number, self.number + 1
        path = _unit_file(self.out, name, start)
        if not self.shard.takes(number):
            return
        if path.is_file():
            self.done_before += 1
            return
        outputs = reduced(predict_batch(self.detector, batch.inputs, batch.centre),
                          batch.images, batch.fg, start, set(picker.rows.tolist()))
        rows = sorted(outputs.examples)
        examples = {"example_rows": np.array(rows, dtype=np.int64),
                    "example_images": np.stack([outputs.examples[r] for r in rows])} \
            if rows else {}
        with replaced_atomically(path) as written:
            np.savez(written, seconds=outputs.seconds, nfe=outputs.nfe, **outputs.arrays,
                     **examples)
        self.localised += 1


def merge_evaluation(out: Path) -> dict[str, Any]:
    """``anodiff merge`` of an evaluation: the shards' batches put together, then the
    metrics, figures and report of a one-process run (the same numbers: each batch is the
    one-process run's batch). Like one process, it reads the test cases one at a time and
    evaluates each once its batches are read; a dataset whose slices changed since the
    shards were made is refused."""
    out = Path(out)
    plan = read_plan(out)
    run, data_root = Path(plan["run"]), Path(plan["data"])
    if model_fingerprint(run) != plan["model"]:
        raise AnodiffError(f"{run}: its model changed since the shards in {out} were made; "
                           "rerun them into another --out")
    detector, spec = load_run(run, "cpu")  # the score and mask rules of its map steps
    with run_log(out, "evaluate"):  # the test cases read one at a time, as in one process
        source = evaluation_source(spec, data_root, plan["layout"], plan["sequence_map"] or None)
        sizes, batch_size = _shard_sizes(out, plan.get("slices")), plan["batch_size"]
        units = _units(sizes, batch_size)
        done = {number for number, (name, start) in enumerate(units)
                if _unit_file(out, name, start).is_file()}
        missing = missing_units(done, len(units), plan["shards"])
        if missing:
            raise AnodiffError(f"{out}: not every shard is done ({missing}); run the missing "
                               "shards, then merge again")
        test_cases, _, healthy_val = evaluation_parts(source)

        def changed(test_slices: int | str) -> AnodiffError:
            return AnodiffError(f"{data_root}: holds other slices than when the shards were made "
                                f"({sizes} -> test {test_slices}, val_healthy "
                                f"{len(healthy_val)}); rerun them")

        if len(healthy_val) != sizes["val_healthy"]:
            raise changed("not read")
        post = build(PostProcess, plan.get("postprocess", {}), "postprocess")
        validation = OutputArrays(healthy_val, all_pseudo_healthy=False)
        for name, start in units:
            if name == "val":
                validation.put(start, _read_unit(_unit_file(out, name, start)))
        stream = TestStream(Calibration.on(with_map_steps(detector, validation.predictions()),
                                           post, plan["fpr"]), post, detector)
        test_units = [start for name, start in units if name == "test"]
        for part in test_cases:
            stream.extend(part)
            if stream.added > sizes["test"]:
                raise changed(f"{stream.added} or more")
            while test_units and min(test_units[0] + batch_size, sizes["test"]) <= stream.added:
                start = test_units.pop(0)
                stream.put(start, _read_unit(_unit_file(out, "test", start)))
        if stream.added != sizes["test"]:
            raise changed(stream.added)
        title = f"{spec.method} on {data_root.name}"
        metrics, _, figures = score_split(
            stream.finish(plan["resamples"]), out, method=spec.method,
            sequences=list(source.centre_sequences), title=title)
        write_evaluation_report(out, title, metrics, figures, {
            "run": str(run), "data": str(data_root), "fpr": plan["fpr"],
            "resamples": plan["resamples"], "postprocess": post.to_dict(),
            "run settings": to_plain(spec), "shards": plan["shards"]})
    return metrics


def _read_unit(path: Path) -> BatchOutputs:
    """One batch's outputs (with the example rows' pseudo-healthy images it kept), or a
    named error for a damaged file."""
    extra = ("seconds", "nfe", "example_rows", "example_images")
    try:
        with np.load(path, allow_pickle=False) as unit:
            arrays = {kind: unit[kind] for kind in unit.files if kind not in extra}
            examples = dict(zip(unit["example_rows"].tolist(), unit["example_images"],
                                strict=True)) if "example_rows" in unit.files else {}
            return BatchOutputs(arrays, float(unit["seconds"]), float(unit["nfe"]), examples)
    except (OSError, ValueError, KeyError) as err:
        raise AnodiffError(f"{path}: damaged ({err}); delete it and rerun its shard") from err
