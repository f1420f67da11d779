"""``anodiff benchmark CONFIG --out DIR``: methods x datasets -> tables, curves, grids, report.

The config (YAML, validated against :class:`BenchmarkConfig`)::

    title: embedded benchmark
    datasets: {tumour: synth/tumour, stroke: synth/stroke}   # relative to the config file
    methods:
      - {method: threshold, preset: cpu}
      - {method: autoencoder, preset: cpu, label: vae, settings: {train: {steps: 800}}}
    data: {size: 64}            # DataConfig, shared by every method
    fpr: 0.01                   # healthy-validation false-positive rate for thresholds
    postprocess: {median_size: 1, interslice_median: 1, min_lesion_ml: 0, erode_brain: 0}
    # a method entry may add its own: {method: anoddpm, postprocess: {interslice_median: 3}}
    max_cases: null             # evaluate on N anomalous + N healthy test cases only
    resamples: 1000             # case-bootstrap resamples (intervals, paired tests)
    reference: threshold        # compare every method with this one (paired bootstrap)
    sequence_sets: [[t2], [t1]] # optional: run everything once per set of input sequences

Each method x dataset trains into ``DIR/runs/<dataset>/<label>`` (a rerun resumes or reuses
finished runs) and is evaluated into ``DIR/eval/<dataset>/<label>``; with ``sequence_sets``
the folders are ``<dataset>/<sequences>/<label>`` (``t2``, ``flair+t1``) and every set
replaces ``data.sequences``. A method entry with ``run: FOLDER`` evaluates that finished
run (from ``anodiff train`` or ``anodiff export``) instead of training; it must have been
trained on the dataset it is evaluated on, and on the same sequences (a named error says
otherwise). Its ``settings`` are test-time settings and its ``preset`` (``fast``) the
test-time settings in which that preset differs from ``cpu``: the run is evaluated with
them, everything fitted after training refitted on the dataset first
(:func:`~anodiff.workflows.export.retuned_on`), so one finished run serves a sweep of
solvers, step counts or levels. A method's post-processing is built in layers, each key
replacing the one before: the steps its run records (``anodiff export --postprocess``: what
``detect`` applies to it), the benchmark's ``postprocess:`` steps, then the entry's own
``postprocess:`` keys (which can also switch a step off: ``interslice_median: 1``). Every
method's threshold is calibrated on its own post-processed healthy validation maps, and the
report's notes name the methods whose post-processing differs from the benchmark's.
``reference`` may list several labels, e.g. ``[threshold-bright,
threshold-dark]``: on every dataset and sequence set the one with the higher pixel AP on
the test split is the reference, the intensity baseline at its better polarity (chosen
with test labels, so the comparison favours the baseline). The results go to
``DIR/results.{md,csv,json}`` (the operating point at the healthy-FPR threshold first,
with 95 % case-bootstrap intervals), ``DIR/comparisons.{md,csv}`` (every method against the
``reference``: the difference in pixel AP, per-case Dice at the FPR threshold and image
AUROC, with one-sided paired-bootstrap p-values), per-dataset ROC/PR curves of all methods,
and ``DIR/report.html``, which embeds everything.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from anodiff.config import build, listed, load_yaml, to_plain
from anodiff.data.datasets import SliceDataset
from anodiff.errors import AnodiffError
from anodiff.evaluation.bootstrap import DEFAULT_RESAMPLES, paired_comparison
from anodiff.evaluation.stream import SplitEvaluation
from anodiff.extras import installed
from anodiff.methods import Detector, method_class, preset_changes
from anodiff.methods.base import check_test_settings
from anodiff.outputs import prepare_output_folder, write_text_atomic
from anodiff.report.figures import curves, detection_by_size, dice_distribution
from anodiff.report.html import write_report
from anodiff.report.tables import RESULT_COLUMNS, markdown_table, results_markdown
from anodiff.scoring.postprocess import PostProcess
from anodiff.workflows.evaluate import evaluate_detector, json_ready
from anodiff.workflows.export import retuned_on
from anodiff.workflows.run import DataConfig, load_run, read_run, run_log, train_run

log = logging.getLogger("anodiff")

COMPARISON_COLUMNS = ("dataset", "sequences", "method", "reference", "pixel_ap_difference",
                      "pixel_ap_p", "volume_dice_fpr_difference", "volume_dice_fpr_p",
                      "image_auroc_difference", "image_auroc_p")


@dataclass(frozen=True)
class MethodEntry:
    """One method of the benchmark: name, preset, a label for tables, setting overrides, or
    ``run``, a finished run folder to evaluate instead of training (relative to the config)."""

    method: str
    preset: str | None = None  # training: cpu unless given; a finished run: its own settings
    label: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    run: str | None = None
    postprocess: dict[str, Any] = field(default_factory=dict)  # keys of PostProcess

    @property
    def name(self) -> str:
        return self.label or self.method

    def post_processing(self, recorded: PostProcess, shared: PostProcess) -> PostProcess:
        """This method's post-processing: the steps its run ``recorded``, then the
        benchmark's ``shared`` steps, then the entry's own keys (module docstring)."""
        return build(PostProcess, {**recorded.changes(), **shared.changes(),
                                   **self.postprocess}, f"{self.name}.postprocess")


@dataclass(frozen=True)
class BenchmarkConfig:
    """A benchmark: datasets (name -> folder) x methods, shared data and threshold settings.

    ``max_cases`` keeps only N anomalous and N healthy test cases and N validation cases for
    evaluation (training always sees the whole train split; see :func:`evaluation_cases`): a
    quick look, such as the demo, not a result to compare with the literature. ``notes`` are
    printed at the top of the report's notes. ``sequence_sets`` runs the whole benchmark
    once per set of input sequences (None: once, with ``data.sequences``); ``reference`` is
    one label or several (the strongest of them by pixel AP, per dataset and set).
    """

    datasets: dict[str, str]
    methods: tuple[MethodEntry, ...]
    title: str = "anodiff benchmark"
    data: DataConfig = field(default_factory=DataConfig)
    fpr: float = 0.01
    postprocess: PostProcess = field(default_factory=PostProcess)
    max_cases: int | None = None
    resamples: int = DEFAULT_RESAMPLES
    reference: str | tuple[str, ...] | None = None
    sequence_sets: tuple[tuple[str, ...], ...] | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.fpr < 1:
            raise AnodiffError(f"fpr must be in (0, 1), got {self.fpr}")
        if self.resamples < 0:
            raise AnodiffError(f"resamples must be >= 0, got {self.resamples}")
        if self.sequence_sets is not None:
            for sequences in self.sequence_sets:
                if not sequences or len(set(sequences)) != len(sequences):
                    raise AnodiffError(f"sequence_sets: every set must be distinct sequence "
                                       f"names, got {list(sequences)}")
            if not self.sequence_sets or len(set(self.sequence_sets)) != len(self.sequence_sets):
                raise AnodiffError("sequence_sets: expected distinct, non-empty sets, got "
                                   f"{[list(s) for s in self.sequence_sets]}")

    @property
    def reference_labels(self) -> tuple[str, ...]:
        """The methods the others are compared with (the strongest of them serves):
        ``reference``, else the first threshold baseline, else none."""
        if isinstance(self.reference, str):
            return (self.reference,)
        if self.reference is not None:
            return self.reference
        return tuple(m.name for m in self.methods if m.method == "threshold")[:1]

    def data_configs(self) -> list[tuple[str | None, DataConfig]]:
        """(folder tag, data options) per sequence set: one untagged run without sets."""
        if self.sequence_sets is None:
            return [(None, self.data)]
        return [("+".join(s), replace(self.data, sequences=s)) for s in self.sequence_sets]

def load_benchmark(path: Path) -> tuple[BenchmarkConfig, Path]:
    """Read a benchmark config (keys and types validated; :func:`check_benchmark` does the
    rest when it runs); returns it and the folder its paths are relative to."""
    return build(BenchmarkConfig, load_yaml(path), ""), Path(path).resolve().parent


def check_benchmark(config: BenchmarkConfig, source: str) -> None:
    """Refuse an empty benchmark, duplicate labels or a non-positive case limit."""
    if not config.methods or not config.datasets:
        raise AnodiffError(f"{source}: needs at least one dataset and one method")
    labels = [m.name for m in config.methods]
    if len(set(labels)) != len(labels):
        raise AnodiffError(f"{source}: method labels must be unique, got {labels}")
    if config.max_cases is not None and config.max_cases < 1:
        raise AnodiffError(f"{source}: max_cases must be >= 1, got {config.max_cases}")
    for entry in config.methods:
        try:
            entry.post_processing(PostProcess(), PostProcess())
        except AnodiffError as err:
            raise AnodiffError(f"{source}: method {entry.name!r}: {err}") from err
    unknown = [r for r in config.reference_labels if r not in labels]
    if unknown or (config.reference is not None and not config.reference_labels):
        raise AnodiffError(f"{source}: reference {unknown[0] if unknown else '[]'!r} is not a "
                           f"method label; choose one or more of {labels}")


def evaluation_cases(data: SliceDataset, max_cases: int | None) -> SliceDataset:
    """``data`` with fewer evaluation cases: the first ``max_cases`` anomalous and the first
    ``max_cases`` healthy test cases (a case is anomalous if any slice is), the first
    ``max_cases`` validation cases, and every train case."""
    if max_cases is None:
        return data
    test = data.split("test")
    anomalous = set(test.cases[test.labels == 1].tolist())
    keep = set(data.split("train").case_ids) | set(data.split("val").case_ids[:max_cases])
    keep.update([c for c in test.case_ids if c in anomalous][:max_cases])
    keep.update([c for c in test.case_ids if c not in anomalous][:max_cases])
    return data.select_cases(sorted(keep))


def _train(entry: MethodEntry, data_root: Path, run: Path, data: DataConfig, device: str
           ) -> float:
    """Train (or resume, or reuse a finished run); returns the seconds spent now."""
    if (run / "model").is_dir():
        log.info("reusing the finished run %s", run)
        return math.nan
    start = time.perf_counter()
    train_run(entry.method, data_root, run, entry.preset or "cpu",
              {"method": entry.settings, "data": to_plain(data)}, device)
    return time.perf_counter() - start


def run_benchmark(config_path: Path, out: Path, device: str = "auto") -> list[dict[str, Any]]:
    """``anodiff benchmark CONFIG --out DIR`` (see the module docstring)."""
    config, base = load_benchmark(config_path)
    return run_benchmark_config(config, base, out, source=str(config_path), device=device)


def run_benchmark_config(config: BenchmarkConfig, base: Path, out: Path, source: str,
                         device: str = "auto",
                         conclude: Callable[[list[dict[str, Any]]], list[str]] | None = None
                         ) -> list[dict[str, Any]]:
    """Run every method on every dataset on ``device``; write results, curves and the HTML
    report.

    Dataset folders and pretrained ``run`` folders are relative to ``base``; ``source`` names
    the configuration in the report; ``conclude`` turns the result rows into sentences that
    head the report's notes (the demo's verdict).
    """
    check_benchmark(config, source)
    out = prepare_output_folder(Path(out), [(base / folder) for folder in
                                            config.datasets.values()])
    rows: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    figures: list[tuple[str, Path]] = []
    notes: list[str] = []
    with run_log(out, "benchmark"):
        for dataset, folder in config.datasets.items():
            root = (base / folder).resolve()
            if not root.is_dir():
                raise AnodiffError(f"{source}: dataset {dataset!r} folder {root} not found"
                                   " (build the embedded one with `anodiff data synth`)")
            for tag, data_config in config.data_configs():
                found = _run_dataset(config, dataset, root, tag, data_config, base, out,
                                     source, device)
                rows += found.rows
                comparisons += found.comparisons
                figures += found.figures
                notes += found.notes
        _write_tables(rows, out, "results", RESULT_COLUMNS,
                      results_markdown(rows, RESULT_COLUMNS))
        _write_tables(comparisons, out, "comparisons", COMPARISON_COLUMNS,
                      markdown_table(comparisons, COMPARISON_COLUMNS))
        write_report(out / "report.html", config.title, rows, RESULT_COLUMNS, figures,
                     settings={"config": source, **to_plain(config)},
                     notes=[*(conclude(rows) if conclude else []), *config.notes, *notes,
                            "Pixel metrics pool the brain pixels of the anomalous test slices;"
                            " *_fpr figures threshold at the value reached by "
                            f"{config.fpr:.0%} of healthy validation pixels (the deployable "
                            "operating point); dice_max is an oracle (test labels choose its "
                            "threshold); _ci_low / _ci_high are 95 % case-bootstrap "
                            f"intervals ({config.resamples} resamples).",
                            "train_seconds is empty when a finished run was reused."],
                     tables=[(f"Against {' / '.join(config.reference_labels)} (paired "
                              "bootstrap over cases; the strongest reference by pixel AP per "
                              "dataset and sequences)", comparisons, COMPARISON_COLUMNS)])
    return rows


@dataclass
class _Measured:
    """What one dataset x sequence set adds to the benchmark."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _run_dataset(config: BenchmarkConfig, dataset: str, root: Path, tag: str | None,
                 data_config: DataConfig, base: Path, out: Path, source: str, device: str
                 ) -> _Measured:
    """Train (or reuse) and evaluate every method on one dataset and sequence set, and
    compare them with the reference."""
    data = evaluation_cases(data_config.open(root), config.max_cases)
    _check_finished_runs(config, tuple(data.centre_sequences), base, source)
    folder = dataset if tag is None else f"{dataset}/{tag}"
    measured = _Measured()
    evaluations: dict[str, SplitEvaluation] = {}
    metrics_of: dict[str, dict[str, Any]] = {}
    for entry in config.methods:
        log.info("benchmark: %s on %s%s", entry.name, dataset, f" ({tag})" if tag else "")
        if entry.run is not None:
            run, train_seconds = (base / entry.run).resolve(), math.nan
        else:
            run = out / "runs" / folder / entry.name
            train_seconds = _train(entry, root, run, data_config, device)
        detector, spec = load_run(run, device)
        entry_data = data
        if spec.data.context != data_config.context:  # a 2.5-D run: the same slices, with
            entry_data = evaluation_cases(  # their neighbours as the run's extra channels
                replace(data_config, context=spec.data.context).open(root), config.max_cases)
        post = _post_processing(entry, spec.postprocess, config.postprocess)
        if entry.run is not None:
            detector = _retuned(detector, entry, entry_data, post)
        metrics, scored, figures = evaluate_detector(
            detector, entry_data, out / "eval" / folder / entry.name,
            title=f"{entry.name} on {dataset}{f' ({tag})' if tag else ''}",
            postprocess=post, fpr=config.fpr, resamples=config.resamples)
        evaluations[entry.name], metrics_of[entry.name] = scored.evaluation, metrics
        if post != config.postprocess:
            measured.notes.append(f"{entry.name} on {folder}: post-processing "
                                  f"{listed(post.changes()) or 'none'} (its run's or its own)")
        measured.rows.append({**metrics, "dataset": dataset, "method": entry.name,
                              "sequences": "+".join(metrics["sequences"]) or "image",
                              "base_method": entry.method, "train_seconds": train_seconds})
        measured.figures += [(caption, path) for caption, path in figures
                             if path.name in ("grid.png", "dice_threshold.png")]
    measured.comparisons = _compare(dataset, evaluations, metrics_of, config)
    if installed("report"):
        measured.figures += _dataset_figures(dataset if tag is None else f"{dataset} ({tag})",
                                             evaluations, metrics_of, out / "eval" / folder)
    return measured


def _post_processing(entry: MethodEntry, recorded: PostProcess, shared: PostProcess
                     ) -> PostProcess:
    """The entry's post-processing (:meth:`MethodEntry.post_processing`), logged where its
    run's recorded steps take part."""
    post = entry.post_processing(recorded, shared)
    if recorded.changes():
        log.info("benchmark: %s: its run records the post-processing %s; evaluated with %s",
                 entry.name, listed(recorded.changes()), listed(post.changes()) or "none")
    return post


def _retuned(detector: Detector, entry: MethodEntry, data: SliceDataset, post: PostProcess
             ) -> Detector:
    """A finished run's detector with the entry's preset and test-time settings, refitted on
    ``data``, its thresholds on maps filtered by ``post``'s map steps (as ``anodiff export``
    does; also without settings when those steps are not the ones the run was calibrated
    with); logs what changed (as it is when nothing does)."""
    settings = {**(preset_changes(detector.name, entry.preset) if entry.preset else {}),
                **entry.settings}
    if not settings and post.map_changes() == detector.map_steps.changes():
        return detector
    log.info("benchmark: %s with %s, refitted on the dataset", entry.name,
             listed({**settings, **post.map_changes()}) or "no map steps")
    return retuned_on(detector, settings, data, post)


def _check_finished_runs(config: BenchmarkConfig, sequences: tuple[str, ...], base: Path,
                         source: str) -> None:
    """Refuse, before anything is evaluated, a ``run:`` entry trained on other sequences
    than the ones this dataset and sequence set provide, or with a preset or settings its
    method cannot take at test time."""
    for entry in config.methods:
        if entry.run is None:
            continue
        run = (base / entry.run).resolve()
        spec = read_run(run)
        try:
            _check_test_settings(entry, spec.method)
        except AnodiffError as err:
            raise AnodiffError(f"{source}: method {entry.name!r} (the run {run}): {err}") \
                from err
        recorded = spec.data.sequences
        trained = tuple(recorded) if recorded else ()
        if trained != sequences:
            raise AnodiffError(
                f"{source}: method {entry.name!r}: the run {run} was trained on the sequences "
                f"{list(trained)}, but this benchmark evaluates {list(sequences)}; train it "
                "on these sequences (--set data.sequences=[...]) or leave it out")


def _check_test_settings(entry: MethodEntry, method: str) -> None:
    """A finished run's ``preset`` and ``settings`` must be test-time settings of its
    method (named errors otherwise)."""
    if entry.preset:
        preset_changes(method, entry.preset)
    check_test_settings(method, next(iter(method_class(method).presets.values())),
                        entry.settings)


def _compare(dataset: str, evaluations: dict[str, SplitEvaluation],
             measured: dict[str, dict[str, Any]], config: BenchmarkConfig
             ) -> list[dict[str, Any]]:
    """Every method against the reference on the same cases, each with its own
    post-processing (that of its evaluation): differences and one-sided paired-bootstrap
    p-values (none without a reference or resamples). With several reference labels, the
    one with the highest pixel AP serves."""
    candidates = [r for r in config.reference_labels if r in evaluations]
    if not candidates or not config.resamples:
        return []
    reference = max(candidates, key=lambda r: measured[r]["pixel_ap"])
    base = evaluations[reference].case_figures()
    sequences = "+".join(measured[reference]["sequences"]) or "image"
    rows = []
    for name, evaluation in evaluations.items():
        if name == reference:
            continue
        rows.append({"dataset": dataset, "sequences": sequences, "method": name,
                     "reference": reference,
                     **paired_comparison(evaluation.case_figures(), base, config.resamples)})
    return rows


def _dataset_figures(dataset: str, evaluations: dict[str, SplitEvaluation],
                     metrics_of: dict[str, dict[str, Any]], folder: Path
                     ) -> list[tuple[str, Path]]:
    """All methods on one dataset, into ``folder``: the per-case Dice and the detection by
    lesion size at the FPR threshold (for volumes), and image- and pixel-level ROC/PR
    curves (of each method's post-processed maps, as its pixel AP)."""
    figures = []
    case_dice = {name: list(m["case_dice_fpr"].values()) for name, m in metrics_of.items()
                 if m.get("case_dice_fpr")}
    if case_dice:
        figures.append((f"{dataset}: Dice per case at the FPR threshold", dice_distribution(
            case_dice, folder / "dice_cases.png", f"{dataset}: Dice per case")))
    sized = [m for m in metrics_of.values()
             if any(m.get(f"n_lesions_{size}") for size in ("small", "medium", "large"))]
    if sized:
        figures.append((f"{dataset}: lesions found by size at the FPR threshold",
                        detection_by_size(sized, folder / "detection_by_size.png",
                                          f"{dataset}: lesions found",
                                          tuple(sized[0]["size_bins_ml"]))))
    image = {name: e.image_labels for name, e in evaluations.items()}
    pixel = {name: e.anomalous_pixels for name, e in evaluations.items()}
    return [
        *figures,
        (f"{dataset}: image-level curves", curves(image, folder / "curves_image.png",
                                                  f"{dataset}: image level")),
        (f"{dataset}: pixel-level curves", curves(pixel, folder / "curves_pixel.png",
                                                  f"{dataset}: pixel level")),
    ]


def _write_tables(rows: list[dict[str, Any]], out: Path, name: str,
                  columns: Sequence[str], markdown: str) -> None:
    """``<name>.json`` (everything), ``<name>.csv`` (the columns) and ``<name>.md``
    (``markdown``)."""
    write_text_atomic(out / f"{name}.json", json.dumps(json_ready(rows), indent=2))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(json_ready(rows))
    write_text_atomic(out / f"{name}.csv", buffer.getvalue())
    write_text_atomic(out / f"{name}.md", markdown)
