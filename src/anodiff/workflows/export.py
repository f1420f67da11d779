"""``anodiff export RUN --out DIR``: a compact, self-contained copy of a finished run.

The copy holds ``run.yaml`` and ``model/`` only (no training checkpoints, no logs), so it
can be shared, archived with a study or shipped with a package. ``half=True`` stores the
network weights as float16, halving the size; :func:`anodiff.load` casts them back to
float32 when it loads them (the networks still compute in float32); fitted values (a
threshold, a memory bank, a one-class model) keep their precision. The rounding of the
weights (relative error <= 2^-11) changes the maps slightly; :func:`weight_rounding_error`
reports the largest weight change, and the CLI prints it. A run saved by an earlier anodiff
(checkpoint format 1) is written in the current format.

``postprocess`` records the shared post-processing that ``detect`` then applies to the run's
maps and masks. Its map steps (the inter-slice median over a case's neighbouring slices, an
in-plane median, brain erosion) change the maps the thresholds are calibrated on, so they
need a refit: :func:`calibrate_filtered` calibrates the thresholds on the filtered maps of
the refit data's healthy validation slices, as ``anodiff evaluate --postprocess`` does.
"""

from __future__ import annotations

import logging
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from anodiff.config import build as build_config
from anodiff.config import listed, to_plain
from anodiff.errors import AnodiffError
from anodiff.evaluation.runner import predict
from anodiff.methods import Detector, load, method_class, preset_changes
from anodiff.outputs import check_outside_inputs, prepare_output_folder, write_text_atomic
from anodiff.scoring.postprocess import PostProcess
from anodiff.workflows.run import RUN_FILE, load_run

log = logging.getLogger(__name__)


def as_method(detector: Detector, method: str, preset: str,
              settings: dict[str, Any] | None = None) -> Detector:
    """``detector``'s trained networks under ``method``, another method that trains the same
    parts (``thor`` on an ``anoddpm`` model: the same DDPM, another decoder).

    The new config is ``method``'s ``preset`` (its first preset if it has no such one) with
    every setting the two methods share taken from ``detector`` (so the noise the model was
    trained with carries over), then ``settings``. Every trained part (nested settings) of
    ``method`` must be among them, and every network must match by name and shape; nothing
    fitted after training comes along (thresholds hold for the old method's maps), so the
    caller refits. A method that trains other parts is a named error. The shared test-time
    settings that differ from ``method``'s preset are logged (``thor`` on the demo's AnoDDPM
    keeps its L = 100, not THOR's preset L = 250), since a user would otherwise expect the
    preset's.
    """
    target = method_class(method)
    base = target.presets.get(preset, next(iter(target.presets.values())))
    own = to_plain(detector.config)
    names = {f.name for f in fields(base)}
    missing = sorted(f.name for f in fields(base)
                     if is_dataclass(getattr(base, f.name)) and f.name not in own)
    if missing:
        raise AnodiffError(f"{method} trains {missing}, which a {detector.name} run does not "
                           "have; train it instead")
    shared = {k: v for k, v in own.items() if k in names}
    preset_values = to_plain(base)
    kept = {k: v for k, v in shared.items()
            if k not in (settings or {}) and v != preset_values[k] and not isinstance(v, dict)}
    if kept:
        log.info("%s keeps the %s run's %s (its %s preset has %s); --set changes them", method,
                 detector.name, listed(kept), preset,
                 listed({k: preset_values[k] for k in kept}))
    config = build_config(type(base), {**preset_values, **shared, **(settings or {})}, method)
    converted = target(config)
    assert detector.input_shape is not None  # load() gives fitted detectors only
    converted.prepare(detector.input_shape)
    converted.recipe = detector.recipe
    theirs = dict(detector.named_children())
    for name, network in converted.named_children():
        source = theirs.get(name)
        wanted = {k: v.shape for k, v in network.state_dict().items()}
        if source is None or {k: v.shape for k, v in source.state_dict().items()} != wanted:
            raise AnodiffError(f"{method}: its network {name!r} has no counterpart of the same "
                               f"shape in this {detector.name} model; train it instead")
        network.load_state_dict(source.state_dict())
    return converted.to(detector.device)


def retuned_on(detector: Detector, settings: dict[str, Any], data: Any,
               post: PostProcess | None = None) -> Detector:
    """``detector`` with changed test-time ``settings`` (:meth:`Detector.retuned`) and
    everything fitted after training refitted on ``data`` with them (:func:`refit_with`),
    so no threshold is left calibrated on the old settings' maps."""
    detector = detector.retuned(keep_state=True, **settings)
    refit_with(detector, data, post)
    return detector


def refit_with(detector: Detector, data: Any, post: PostProcess | None = None) -> None:
    """:meth:`Detector.refit` on ``data``, the thresholds calibrated on maps filtered by
    ``post``'s map steps where it has any (:func:`calibrate_filtered`), not on unfiltered
    maps first."""
    filtered = post is not None and bool(post.map_changes())
    detector.refit(data, calibrate=not filtered)
    if filtered:
        calibrate_filtered(detector, data, post)


def calibrate_filtered(detector: Detector, data: Any, post: PostProcess,
                       batch_size: int = 32) -> None:
    """Calibrate ``detector``'s thresholds on its maps of ``data``'s healthy validation slices
    (healthy training slices without a val split) filtered by ``post``'s map steps, grouped
    by case (:meth:`Detector.calibrate_on`, as :meth:`Detector.calibrate` does on unfiltered
    maps).
    Every healthy validation slice is localised (the inter-slice median needs a case's
    slices in order), where :meth:`Detector.calibrate` picks ``calibration_images`` of them;
    this is the calibration of ``anodiff evaluate --postprocess``."""
    healthy = data.for_regime("self", split="val")
    if len(healthy) == 0:
        healthy = data.for_regime("self")
    found = predict(detector, healthy, batch_size, progress=False,
                    all_pseudo_healthy=False)
    fg = found.foreground
    pixel, case = detector.calibrate_on(post.maps(found.maps, fg, found.cases), fg, found.cases,
                                        post)
    log.info("thresholds calibrated on %d healthy slices filtered by %s: pixel %.6g, case %.6g",
             len(found.maps), listed(post.map_changes()), pixel, case)


def export_run(run: Path, out: Path, half: bool = False,
               settings: dict[str, Any] | None = None, refit_data: Path | None = None,
               device: str = "auto", method: str | None = None,
               preset: str | None = None, postprocess: PostProcess | None = None) -> Path:
    """Write ``out/run.yaml`` and ``out/model`` from the finished run folder ``run``.

    ``settings`` change test-time settings of the exported model (for example the L and s a
    sensitivity study chose; see :meth:`Detector.retuned`, which refuses settings of trained
    parts). ``refit_data`` refits everything fitted after training on that dataset with the
    new settings (:meth:`Detector.refit`: a healthy-FPR threshold on its healthy validation
    slices, InvDetect's one-class model, tau and lambda on its healthy training slices), so
    that settings those values depend on can change without retraining the networks; the
    refit runs on ``device``. ``out`` must be new or empty (nothing of the user's is ever
    overwritten); the exported run.yaml records where it came from and what was changed.
    ``method`` puts the trained networks under another method that trains the same parts
    (:func:`as_method`; needs ``refit_data``). ``preset`` (``fast``) applies the test-time
    settings in which that preset differs from ``cpu`` (:func:`preset_changes`) before
    ``settings``. ``postprocess`` replaces the post-processing the run records (kept when
    None); with map steps it needs ``refit_data`` (:func:`calibrate_filtered`), and a refit
    recalibrates on the recorded map steps too.
    """
    run, out = Path(run), Path(out)
    if out.exists() and any(out.iterdir()):
        raise AnodiffError(f"{out}: exists and is not empty; export into a new folder")
    check_outside_inputs(out, [run] + ([Path(refit_data)] if refit_data is not None else []))
    detector, run_spec = load_run(run, device if refit_data is not None else "cpu")
    post = run_spec.postprocess if postprocess is None else postprocess
    if refit_data is None and post.map_changes() != run_spec.postprocess.map_changes():
        raise AnodiffError(f"--postprocess {listed(post.map_changes()) or 'without map steps'}:"
                           " the thresholds must be calibrated on maps filtered so; add --refit "
                           "DATA (a dataset with healthy validation cases)")
    if preset is not None:
        try:
            settings = {**preset_changes(method or detector.name, preset), **(settings or {})}
        except AnodiffError as err:
            raise AnodiffError(f"{run}: {err}") from err
    converted_from = None
    refit = None if refit_data is None else run_spec.data.open(Path(refit_data))
    if method is not None and method != detector.name:
        if refit_data is None:
            raise AnodiffError(f"--method {method}: its thresholds must be calibrated on its "
                               "own maps; add --refit DATA (a dataset with healthy slices)")
        converted_from = detector.name
        detector = as_method(detector, method, run_spec.preset, settings)
        refit_with(detector, refit, post)
    elif refit is None:
        detector = detector.retuned(**(settings or {}))
    else:
        detector = retuned_on(detector, settings or {}, refit, post)
    if half:
        for network in detector.children():
            if any(True for _ in network.parameters()):
                network.half()
    spec = yaml.safe_load((run / RUN_FILE).read_text(encoding="utf-8"))
    spec["method"] = detector.name
    spec["method_config"] = to_plain(detector.config)
    spec["exported_from"] = {"run": str(run.resolve()), "method": converted_from or detector.name,
                             "changed_settings": settings or {}, "preset": preset,
                             "weights": "float16" if half else "float32",
                             "refitted_on": None if refit_data is None
                             else str(Path(refit_data).resolve())}
    spec.pop("postprocess", None)
    if post.changes():
        spec["postprocess"] = post.changes()
    prepare_output_folder(out)
    detector.save(out / "model")
    write_text_atomic(out / RUN_FILE, yaml.safe_dump(spec, sort_keys=False))
    return out


def size_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def weight_rounding_error(run: Path, exported: Path) -> float:
    """Largest absolute difference of any network weight between a run and its export."""
    original, copy = load(Path(run)), load(Path(exported))
    other = dict(copy.named_parameters())
    return max(((param - other[name]).abs().max().item()
                for name, param in original.named_parameters()), default=0.0)
