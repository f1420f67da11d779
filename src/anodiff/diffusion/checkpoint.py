"""Atomic, verifiable checkpoints: safetensors tensors + one JSON metadata file.

A checkpoint is a directory::

    step_0000400/
      model.safetensors      network weights
      ema.safetensors        EMA weights (if any)
      optimizer.safetensors  optimiser moments (tensors only; hyper-parameters in meta.json)
      rng.safetensors        RNG states (torch global + the training generator)
      meta.json              step, config, versions, sha256 of every tensor file

It is written into a temporary directory and renamed into place
(:func:`anodiff.outputs.replaced_atomically`), and the run's ``latest`` pointer is
replaced atomically afterwards, so a crash at any moment leaves the previous checkpoint
usable. Reading verifies the checksums, so a truncated or corrupted
file gives a :class:`~anodiff.errors.CheckpointError` naming the file, never a torch
traceback. safetensors is used because it cannot execute code on load (unlike pickle).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from anodiff._version import __version__
from anodiff.errors import CheckpointError
from anodiff.outputs import cannot_write, replaced_atomically, write_text_atomic

META_FILE = "meta.json"
log = logging.getLogger(__name__)
LATEST_FILE = "latest"


def software_versions() -> dict[str, str]:
    """Versions that matter to reproduce a checkpoint."""
    import monai

    return {
        "anodiff": __version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_mode() -> int:
    """The permissions a new file gets under the process's umask (0644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_checkpoint(
    directory: Path, groups: dict[str, dict[str, Tensor]], meta: dict[str, Any]
) -> Path:
    """Write tensor ``groups`` (name -> state dict) and ``meta`` atomically into ``directory``.

    An existing checkpoint of the same name is replaced only once the new one is complete; a
    failed write (a full disk) leaves no partial folder and is a named error.
    """
    directory = Path(directory)
    with replaced_atomically(directory) as tmp:
        tmp.mkdir()
        checksums = {}
        for name, tensors in groups.items():
            file = tmp / f"{name}.safetensors"
            try:
                save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()},
                          file)
            except SafetensorError as err:  # safetensors reports write errors as its own type
                raise cannot_write(directory / file.name, err) from err
            file.chmod(_file_mode())  # safetensors writes 0600; a run folder may be shared
            checksums[file.name] = _sha256(file)
        full_meta = {**meta, "versions": software_versions(), "files": checksums}
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2, sort_keys=True),
                                     encoding="utf-8")
    return directory


def read_meta(directory: Path) -> dict[str, Any]:
    """The metadata of a checkpoint, with a clear error if it is missing or unreadable."""
    meta_path = Path(directory) / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path}: not found (is {directory} a checkpoint directory?)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_path}: corrupted metadata ({err})") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        raise CheckpointError(f"{meta_path}: metadata lacks the list of checkpoint files")
    return meta


def read_checkpoint(directory: Path) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
    """Read and verify every tensor group of a checkpoint; returns ``(groups, meta)``."""
    directory = Path(directory)
    meta = read_meta(directory)
    groups: dict[str, dict[str, Tensor]] = {}
    for file_name, expected in meta["files"].items():
        if Path(file_name).name != file_name or not file_name.endswith(".safetensors"):
            raise CheckpointError(f"{directory / META_FILE}: lists {file_name!r}, which is not "
                                  "a .safetensors file of this checkpoint folder")
        file = directory / file_name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing from the checkpoint")
        if _sha256(file) != expected:
            raise CheckpointError(
                f"{file}: checksum mismatch, the file is truncated or corrupted; "
                "resume from an earlier checkpoint or retrain"
            )
        try:
            groups[file_name.removesuffix(".safetensors")] = load_file(file)
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{file}: unreadable safetensors file ({err})") from err
    return groups, meta


def load_state_into(module: torch.nn.Module, state: dict[str, Tensor], source: Path) -> None:
    """Load a state dict, turning key or shape mismatches into a :class:`CheckpointError`."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[:3]
        raise CheckpointError(
            f"{source}: the weights do not fit this network (another preset or channel "
            f"count?): {' '.join(first)}"
        ) from err


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split a torch optimiser state dict into tensors and a JSON-friendly remainder."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, values in rest["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint taken after ``step`` optimisation steps."""
    return f"step_{step:07d}"


def mark_latest(checkpoints: Path, name: str) -> None:
    """Point the run's ``latest`` file at checkpoint ``name`` (atomically)."""
    write_text_atomic(Path(checkpoints) / LATEST_FILE, name + "\n")


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The checkpoint the ``latest`` pointer names, or None for a fresh run."""
    pointer = Path(checkpoints) / LATEST_FILE
    if not pointer.is_file():
        return None
    target = Path(checkpoints) / pointer.read_text(encoding="utf-8").strip()
    if not target.is_dir():
        raise CheckpointError(f"{pointer}: names {target.name}, which does not exist")
    return target


Groups = dict[str, dict[str, Tensor]]  # checkpoint file stem -> state dict


def newest_readable_checkpoint(checkpoints: Path) -> tuple[Path, Groups, dict[str, Any]] | None:
    """The checkpoint to resume from, read and verified: the one ``latest`` names, else (it
    is missing, truncated or corrupted) the newest one that reads, with a warning naming
    the one passed over. None for a fresh run; an error when none of several reads."""
    checkpoints = Path(checkpoints)
    found = sorted((p for p in checkpoints.glob("step_*") if p.is_dir()), reverse=True)
    try:
        latest = latest_checkpoint(checkpoints)
    except CheckpointError as err:
        log.warning("%s", err)
        latest = None
    candidates = ([latest] if latest is not None else []) + [p for p in found if p != latest]
    problems = []
    for path in candidates:
        try:
            groups, meta = read_checkpoint(path)
        except CheckpointError as err:
            problems.append(str(err))
            log.warning("cannot resume from %s (%s); trying an earlier checkpoint", path.name,
                        err)
            continue
        if problems:
            log.warning("resuming from %s instead", path.name)
        return path, groups, meta
    if problems:
        raise CheckpointError(f"{checkpoints}: no checkpoint can be read ({problems[0]}); "
                              "delete the folder to start over")
    return None


def prune_checkpoints(checkpoints: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (never the one ``latest`` names)."""
    latest = latest_checkpoint(checkpoints)
    found = sorted(p for p in Path(checkpoints).glob("step_*") if p.is_dir())
    for old in found[: max(len(found) - keep, 0)]:
        if latest is None or old.resolve() != latest.resolve():
            shutil.rmtree(old)
