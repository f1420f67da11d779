"""Reading a saved detector back: :func:`load` (``anodiff.load``).

:meth:`~anodiff.methods.base.Detector.save` writes a directory with ``meta.json`` (method,
config, input shape, checksums) and ``detector.safetensors``, the detector's
``state_dict``: network weights and fitted buffers in one file (format 2). Loading builds
the method from its config, creates its networks for the saved input shape and loads the
state strictly: a missing or unexpected key, or a network weight of another shape, is a
:class:`~anodiff.errors.CheckpointError`. Fitted buffers whose size depends on the data (a
histogram, a memory bank, a one-class model's support vectors) take the saved shape.

Checkpoints of format 1 (anodiff before the shared pipeline: ``net_<name>.safetensors`` per
network and ``state.safetensors`` for fitted values) load too: their keys are prefixed with
the network's name, renamed where a method lists it in ``legacy_keys``, and the calibrated
threshold a format-1 method did not have starts uncalibrated. ``anodiff export RUN --out
NEW`` rewrites such a run in the current format.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from anodiff.config import build, listed
from anodiff.data.recipe import InputRecipe
from anodiff.devices import resolve_device
from anodiff.diffusion.checkpoint import load_state_into, read_checkpoint
from anodiff.errors import AnodiffError, CheckpointError
from anodiff.methods.base import CHECKPOINT_FORMAT, STATE_FILE, Detector
from anodiff.methods.registry import method_class
from anodiff.scoring.postprocess import PostProcess

log = logging.getLogger(__name__)
# Keys a format-1 checkpoint may lack: they start at the freshly built detector's value.
_FORMAT_1_DEFAULTS = frozenset({"threshold"})
# The case calibration, which detectors saved before it existed lack: it starts uncalibrated.
_CASE_CALIBRATION = frozenset({"flag_threshold", "case_threshold"})


def model_folder(path: Path) -> Path:
    """The saved detector of ``path``: the folder itself, or a run folder's ``model/``."""
    return path / "model" if (path / "model" / "meta.json").is_file() else path


def load(path: str | Path, device: str | torch.device | None = "cpu") -> Detector:
    """Load a detector written by :meth:`Detector.save`, from its folder or a run folder,
    onto ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``; see
    :func:`anodiff.devices.resolve_device`)."""
    folder = model_folder(Path(path))
    groups, meta = read_checkpoint(folder)
    method = meta.get("method")
    try:
        cls = method_class(str(method))
    except AnodiffError as err:
        raise CheckpointError(f"{folder}: unknown method {method!r} in its metadata") from err
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{folder}/meta.json: the method's config is missing")
    config = build(type(next(iter(cls.presets.values()))), meta["config"], method)
    shape = meta.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and
            all(isinstance(v, int) and v > 0 for v in shape)):
        raise CheckpointError(f"{folder}/meta.json: input_shape must be three positive "
                              f"integers (channels, height, width), got {shape!r}")
    detector = cls(config).to(resolve_device(device))
    detector.prepare(tuple(shape))
    detector.recipe = _recipe(meta.get("input_recipe"), folder)
    detector.map_steps = _map_steps(meta.get("map_steps", {}), folder)
    if detector.map_steps.changes():
        log.info("%s: thresholds calibrated on maps filtered by %s across a case's slices "
                 "(localize(..., one_case=True) and anodiff detect apply them)", folder,
                 listed(detector.map_steps.changes()))
    if meta.get("format") == CHECKPOINT_FORMAT:
        state = groups.get(STATE_FILE, {})
    else:
        state = _format_1_state(detector, groups, folder)
    missing = sorted(_CASE_CALIBRATION - state.keys())
    if missing:
        log.info("%s: saved without a case calibration (an earlier anodiff); `anodiff export "
                 "RUN --refit DATA --out NEW` adds it", folder)
        state = {**state, **{key: detector.state_dict()[key] for key in missing}}
    load_fitted_state(detector, state, folder / f"{STATE_FILE}.safetensors")
    return detector.eval()


def _recipe(values: Any, folder: Path) -> InputRecipe | None:
    """The saved input recipe (None when the detector was saved without one)."""
    if values is None:
        return None
    try:
        return InputRecipe.from_dict(values)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{folder}/meta.json: input_recipe is damaged ({err})") from err


def _map_steps(values: Any, folder: Path) -> PostProcess:
    """The saved map steps the thresholds were calibrated on (none when not saved)."""
    try:
        steps = build(PostProcess, values, "map_steps")
    except AnodiffError as err:
        raise CheckpointError(f"{folder}/meta.json: {err}") from err
    if steps != steps.map_steps():
        raise CheckpointError(f"{folder}/meta.json: map_steps holds mask steps "
                              f"({listed(steps.changes())}); only map steps belong there")
    return steps


def load_fitted_state(detector: Detector, state: dict[str, Tensor], source: Path) -> None:
    """Load ``state`` strictly, first giving data-sized buffers the saved shapes."""
    buffers = dict(detector.named_buffers())
    for key, value in state.items():
        current = buffers.get(key)
        if current is not None and current.shape != value.shape:
            owner, _, leaf = key.rpartition(".")
            module = detector.get_submodule(owner) if owner else detector
            setattr(module, leaf, torch.empty(value.shape, dtype=value.dtype,
                                              device=current.device))
    load_state_into(detector, state, source)


def _format_1_state(detector: Detector, groups: dict[str, dict[str, Tensor]], folder: Path
                    ) -> dict[str, Tensor]:
    """The state_dict of a format-1 checkpoint (module docstring)."""
    state: dict[str, Tensor] = {}
    for group, tensors in groups.items():
        if group.startswith("net_"):
            prefix = group.removeprefix("net_") + "."
        elif group == "state":
            prefix = ""
        else:
            raise CheckpointError(f"{folder}/{group}.safetensors: not part of a detector "
                                  "checkpoint")
        for key, value in tensors.items():
            new = detector.legacy_keys.get(prefix + key, prefix + key)
            if new:
                state[new] = value
    current = detector.state_dict()
    for key in _FORMAT_1_DEFAULTS & (current.keys() - state.keys()):
        state[key] = current[key]
    log.info("%s: a checkpoint of an earlier anodiff (format 1); `anodiff export` rewrites it "
             "in the current format", folder)
    return state
