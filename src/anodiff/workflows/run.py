"""Run folders and ``anodiff train``.

A run folder holds everything needed to reuse a trained method::

    RUN/run.yaml        method, preset, resolved method config, data options, data path
    RUN/model/          the fitted detector (anodiff.load), written when training ends
    RUN/checkpoints/    training checkpoints (a rerun resumes from the latest)
    RUN/train.log       the log of every training session in this folder

Config files are YAML with two optional sections, ``method`` (the method's settings, e.g.
``train: {steps: 500}``) and ``data`` (:class:`DataConfig`); ``--set method.train.lr=1e-3``
overrides a key. Unknown keys and wrong types are named in the error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from anodiff._version import __version__
from anodiff.config import build, listed, load_yaml, merge, parse_overrides, to_plain
from anodiff.data import (
    LAYOUTS,
    CaseSource,
    DropEnds,
    ForegroundExtent,
    SliceDataset,
    open_cases,
    sequence_name,
)
from anodiff.data.datasets import MAX_CONTEXT
from anodiff.devices import resolve_device
from anodiff.diffusion.distributed import (
    World,
    backend_for,
    barrier,
    check_same_settings,
    joined,
    on_main,
)
from anodiff.diffusion.training import RESUMABLE_CHANGES
from anodiff.errors import AnodiffError
from anodiff.locking import Lock, run_lock
from anodiff.methods import Detector, load, method_class
from anodiff.outputs import TEMPORARY_MARK, prepare_output_folder, remove, write_text_atomic
from anodiff.scoring.postprocess import PostProcess

RUN_FILE = "run.yaml"
LEGACY_TEMPORARY = re.compile(r"^\..+\.(tmp|old)-\d+$")  # earlier versions' temporary names
MIN_SIZE, MAX_SIZE = 8, 1024  # slice side in pixels: a 100,000-pixel side would need TiBs
log = logging.getLogger("anodiff")


@dataclass(frozen=True)
class DataConfig:
    """How a dataset folder becomes model inputs (see :func:`anodiff.data.open_dataset`)."""

    sequences: tuple[str, ...] | None = None  # channels in order; None = all, sorted
    size: int = 64
    fit: Literal["resize", "pad"] = "resize"
    normalisation: Literal["percentile", "max", "brain"] = "percentile"
    keep_fraction: float | None = 0.1  # keep slices with >= this share of the max brain area
    drop_inferior: int = 0  # or drop fixed counts of slices at the ends (Wolleb: 80, 26)
    drop_superior: int = 0
    on_error: Literal["raise", "skip"] = "skip"  # unreadable or inconsistent cases
    on_missing: Literal["raise", "skip"] = "raise"  # cases lacking one of the sequences
    layout: str = "auto"  # how the folder is read: anodiff.data.LAYOUTS
    sequence_map: dict[str, str] | None = None  # file sequence names -> names, {T1map: t1}
    context: int = 0  # 2.5-D: neighbouring slices per side given as extra channels

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise AnodiffError(f"layout must be one of {', '.join(LAYOUTS)}, got "
                               f"'{self.layout}'")
        if self.sequences is not None:  # by name: T1w, T1 and t1 are one sequence
            object.__setattr__(self, "sequences",
                               tuple(sequence_name(s) for s in self.sequences))
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise AnodiffError(f"size must be in [{MIN_SIZE}, {MAX_SIZE}] pixels, got {self.size}")
        if self.keep_fraction is not None and not 0 <= self.keep_fraction <= 1:
            raise AnodiffError(f"keep_fraction must be in [0, 1] or null, got "
                               f"{self.keep_fraction}")
        if self.drop_inferior < 0 or self.drop_superior < 0:
            raise AnodiffError("drop_inferior and drop_superior must be >= 0")
        if not 0 <= self.context <= MAX_CONTEXT:
            raise AnodiffError(f"context must be 0 to {MAX_CONTEXT} neighbouring slices per "
                               f"side, got {self.context}")
        if self.sequences is not None and (
                not self.sequences or len(set(self.sequences)) != len(self.sequences)):
            raise AnodiffError(f"sequences must be distinct names, got {list(self.sequences)}")

    def open(self, root: str | Path, only_splits: Collection[str] | None = None
             ) -> SliceDataset:
        """Open ``root`` with these options (only the cases of ``only_splits`` if given)."""
        return self.cases(root, only_splits).dataset()

    def cases(self, root: str | Path, only_splits: Collection[str] | None = None
              ) -> CaseSource:
        """The cases of ``root`` with these options, not read yet (:class:`CaseSource`)."""
        if self.drop_inferior or self.drop_superior:
            keep = DropEnds(self.drop_inferior, self.drop_superior)
        else:
            keep = None if self.keep_fraction is None else ForegroundExtent(self.keep_fraction)
        return open_cases(root, sequences=self.sequences, size=self.size, fit=self.fit,
                          normalisation=self.normalisation, keep=keep,
                          on_error=self.on_error, on_missing=self.on_missing,
                          layout=self.layout, sequence_map=self.sequence_map,
                          context=self.context, only_splits=only_splits)


@dataclass(frozen=True)
class RunSpec:
    """The content of ``run.yaml``. ``postprocess`` is written by ``anodiff export
    --postprocess`` only: the post-processing ``detect`` applies to this run's maps and masks,
    its map steps the ones the model's thresholds were calibrated with."""

    method: str
    preset: str
    data_root: str
    data: DataConfig
    method_config: dict[str, Any]
    postprocess: PostProcess = field(default_factory=PostProcess)


def config_values(config_file: Path | None, overrides: list[str]) -> dict[str, Any]:
    """A YAML config file (optional) with ``--set key=value`` overrides merged over it."""
    return merge(load_yaml(config_file) if config_file else {}, parse_overrides(overrides))


def resolve_settings(method: str, preset: str, values: dict[str, Any]
                     ) -> tuple[Any, DataConfig]:
    """The method config (preset + ``values['method']``) and data config, validated."""
    cls = method_class(method)
    unknown = sorted(set(values) - {"method", "data"})
    if unknown:
        raise AnodiffError(f"{unknown[0]}: unknown section; a config has 'method' and 'data'")
    if preset not in cls.presets:
        raise AnodiffError(f"{method}: unknown preset '{preset}'; choose one of "
                           f"{list(cls.presets)}")
    base = cls.presets[preset]
    method_config = build(type(base), values.get("method", {}), "method", base=base)
    return method_config, build(DataConfig, values.get("data", {}), "data")


def read_run(run: Path) -> RunSpec:
    """Read ``RUN/run.yaml`` with clear errors."""
    spec_file = Path(run) / RUN_FILE
    if not spec_file.is_file():
        raise AnodiffError(f"{run}: not a run folder ({RUN_FILE} missing); "
                           "create one with `anodiff train`")
    values = load_yaml(spec_file)
    try:
        return RunSpec(method=values["method"], preset=values["preset"],
                       data_root=values["data_root"],
                       data=build(DataConfig, values.get("data", {}), "data"),
                       method_config=values.get("method_config", {}),
                       postprocess=build(PostProcess, values.get("postprocess") or {},
                                         "postprocess"))
    except KeyError as err:
        raise AnodiffError(f"{spec_file}: missing key {err}") from err
    except AnodiffError as err:
        raise AnodiffError(f"{spec_file}: {err}") from err


@contextmanager
def run_log(run: Path, name: str):
    """Log (INFO and above) into ``RUN/<name>.log`` while the block runs."""
    handler = logging.FileHandler(Path(run) / f"{name}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def train_run(method: str, data_root: Path, run: Path, preset: str = "cpu",
              values: dict[str, Any] | None = None, device: str = "auto") -> Detector:
    """``anodiff train``: fit ``method`` on the dataset, resumably, into the run folder, on
    ``device`` (see :func:`anodiff.devices.resolve_device`).

    ``values`` holds the ``method`` and ``data`` sections (see :func:`config_values`). Under
    ``torchrun`` every process runs this: the networks train together
    (:class:`~anodiff.diffusion.training.Trainer`), the processes first check that they
    were started with the same settings, and the main process alone holds the lock, writes
    run.yaml, train.log and the model; a refusal there stops every process.
    """
    run = Path(run)
    method_config, data_config = resolve_settings(method, preset, values or {})
    with joined(resolve_device(device)) as (world, target):
        on_main(world, lambda: prepare_output_folder(run, [Path(data_root)]))
        with _lock_on_main(run, world) as lock:
            data = data_config.open(data_root)
            volumes_layout = not (Path(data_root) / "images").is_dir()
            if volumes_layout and data_config.sequences is None:  # record the channels used
                data_config = replace(data_config, sequences=tuple(data.centre_sequences))
            # a setting naming a sequence (channel: flair) is recorded as the index it trains
            # with
            method_config = method_class(method).with_sequences(method_config, data.sequences)
            spec = RunSpec(method, preset, str(Path(data_root).resolve()), data_config,
                           to_plain(method_config))
            check_same_settings({**_flat(to_plain(spec), ""), "device": target.type,
                                 "anodiff": __version__, "slices": len(data)}, world)
            on_main(world, lambda: _write_spec(run, spec))
            with run_log(run, "train") if world.main else nullcontext():
                log.info("train %s (preset %s) on %s into %s", method, preset, data_root, run)
                if lock is not None and lock.taken_from is not None:
                    log.warning("took over the lock of process %s, which is no longer running",
                                lock.taken_from)
                if world.main:
                    _remove_orphans(run)
                for case, problem in data.skipped:
                    log.warning("skipped case %s: %s", case, problem)
                log.info("%d slices (%d train), channels %s", len(data),
                         len(data.split("train")), ", ".join(data.sequences) or "-")
                log.info("device: %s%s", target, f" ({world.size} processes, "
                         f"{backend_for(target)})" if world.distributed else "")
                detector = method_class(method)(method_config).to(target)
                detector.run_dir = run
                detector.fit(data)
                if world.main:
                    detector.save(run / "model")
                    log.info("saved the fitted detector to %s", run / "model")
                barrier(world)
    return detector


@contextmanager
def _lock_on_main(run: Path, world: World) -> Iterator[Lock | None]:
    """The run folder's lock, held by the main process (None on the others); a lock held
    by another job stops every process."""
    with ExitStack() as stack:
        yield on_main(world, lambda: stack.enter_context(run_lock(run)))


def _write_spec(run: Path, spec: RunSpec) -> None:
    """Write run.yaml, after checking that a run already in the folder has the same
    settings (a resume)."""
    if (run / RUN_FILE).is_file():
        _check_same_settings(run, read_run(run), spec)
    write_text_atomic(run / RUN_FILE, yaml.safe_dump({
        "method": spec.method, "preset": spec.preset, "data_root": spec.data_root,
        "data": to_plain(spec.data), "method_config": spec.method_config}, sort_keys=False))


def _check_same_settings(run: Path, previous: RunSpec, spec: RunSpec) -> None:
    """A run folder is resumed only with its own settings; training longer (a higher
    ``train.steps``) and checkpoint bookkeeping may change. The refusal names what differs."""
    if (previous.method, previous.preset) != (spec.method, spec.preset):
        raise AnodiffError(f"{run}: holds a {previous.method} run (preset {previous.preset}), "
                           f"not {spec.method} (preset {spec.preset}); use a new --out folder")
    old = {**_flat(_settings(spec.method, previous.method_config), "method."),
           **_flat(to_plain(previous.data), "data.")}
    new = {**_flat(spec.method_config, "method."), **_flat(to_plain(spec.data), "data.")}
    changed = [key for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)
               and not _resumable(key)]
    if changed:
        listed = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
        raise AnodiffError(f"{run}: holds a run with other settings ({listed}); use a new "
                           "--out folder, or the same settings to resume (only train."
                           f"{', train.'.join(sorted(RESUMABLE_CHANGES))} may change)")


def _resumable(key: str) -> bool:
    """A training setting that may change on resume (``method.….train.steps``)."""
    parts = key.split(".")
    return len(parts) > 2 and parts[-2] == "train" and parts[-1] in RESUMABLE_CHANGES


def _flat(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Nested settings as ``{"method.train.steps": 1000, ...}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _remove_orphans(run: Path) -> None:
    """Delete temporary files and folders left in the run by a killed process (the lock
    says no other process is writing here)."""
    orphans = [p for p in run.rglob("*") if p.name.startswith(TEMPORARY_MARK)
               or LEGACY_TEMPORARY.match(p.name)]
    for path in sorted(orphans, key=lambda p: len(p.parts)):
        if path.exists():
            log.warning("removing %s, left behind by an interrupted write", path)
            remove(path)


def _settings(method: str, values: dict[str, Any]) -> dict[str, Any]:
    """A run.yaml's method settings as the current version writes them (an earlier
    version's keys upgraded, new keys at their defaults), to compare with new settings."""
    base = next(iter(method_class(method).presets.values()))
    return to_plain(build(type(base), values, "method_config"))


def load_run(run: Path, device: str = "auto") -> tuple[Detector, RunSpec]:
    """The fitted detector of a run folder, on ``device``, and its spec."""
    spec = read_run(run)
    model = Path(run) / "model"
    if not model.is_dir():
        raise AnodiffError(f"{run}: training has not finished (no model/ yet); rerun "
                           "`anodiff train` with the same --out to resume it")
    detector = load(model, device)
    _check_run_matches_model(Path(run), spec, detector)
    return detector, replace(spec)


def _check_run_matches_model(run: Path, spec: RunSpec, detector: Detector) -> None:
    """run.yaml (what data options to use) must describe the saved model (what it was
    trained on): an edited run.yaml would otherwise feed the model other inputs silently."""
    meta = run / "model" / "meta.json"
    if spec.method != detector.name:
        raise AnodiffError(f"{run / RUN_FILE}: says method {spec.method!r}, but {meta} holds "
                           f"a {detector.name!r} model; restore run.yaml or retrain")
    channels, height, width = detector.input_shape or (0, 0, 0)
    slab = 2 * spec.data.context + 1  # the slice and its context neighbours
    if spec.data.sequences is not None and len(spec.data.sequences) * slab != channels:
        raise AnodiffError(f"{run / RUN_FILE}: lists the sequences {list(spec.data.sequences)}"
                           f" (context {spec.data.context}), but the model in {meta} takes "
                           f"{channels} channel(s); restore run.yaml or retrain")
    if (height, width) != (spec.data.size, spec.data.size):
        raise AnodiffError(f"{run / RUN_FILE}: says data.size {spec.data.size}, but the model "
                           f"in {meta} takes {height} x {width} slices; restore run.yaml")
    recorded, calibrated = spec.postprocess.map_changes(), detector.map_steps.changes()
    if recorded != calibrated:
        raise AnodiffError(f"{run / RUN_FILE}: postprocess has the map steps "
                           f"{listed(recorded) or 'none'}, but the thresholds of the model in "
                           f"{meta} were calibrated with {listed(calibrated) or 'none'}; "
                           "restore run.yaml, or export the run again with `anodiff export RUN "
                           "--postprocess ... --refit DATA --out NEW`")
    saved = _flat(to_plain(detector.config), "")
    stated = _flat(_settings(spec.method, spec.method_config), "")
    differ = sorted(k for k in saved.keys() | stated.keys() if saved.get(k) != stated.get(k))
    if differ:
        raise AnodiffError(f"{run / RUN_FILE}: method_config differs from the model's own "
                           f"settings in {meta} ({', '.join(differ[:4])}); restore run.yaml, "
                           "or change test-time settings with `anodiff export --set`")
