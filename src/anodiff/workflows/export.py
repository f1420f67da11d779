"""``anodiff export RUN --out DIR``: a compact, self-contained copy of a finished run.

The copy holds ``run.yaml`` and ``model/`` only (no training checkpoints, no logs), so it
can be shared, archived with a study or shipped with a package. ``half=True`` stores the
network weights as float16, halving the size; :func:`anodiff.load` casts them back to
float32 when it loads them (the networks still compute in float32). The rounding of the
weights (relative error <= 2^-11) changes the maps slightly; :func:`weight_rounding_error`
reports the largest weight change, and the CLI prints it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from anodiff.config import to_plain
from anodiff.diffusion.checkpoint import write_text_atomic
from anodiff.errors import AnodiffError
from anodiff.methods.base import load
from anodiff.methods.common import training_images
from anodiff.workflows.run import RUN_FILE, load_run


def export_run(run: Path, out: Path, half: bool = False,
               settings: dict[str, Any] | None = None, refit_data: Path | None = None) -> Path:
    """Write ``out/run.yaml`` and ``out/model`` from the finished run folder ``run``.

    ``settings`` change test-time settings of the exported model (for example the L and s a
    sensitivity study chose; see :meth:`Detector.retuned`, which refuses settings of trained
    parts). A method that fits values after training (InvDetect's one-class model, tau and
    lambda: ``fit_normality``) refits them on the healthy training slices of
    ``refit_data``, so that settings those values depend on can change without retraining
    the networks. ``out`` must be new or empty (nothing of the user's is ever overwritten);
    the exported run.yaml records where it came from and what was changed.
    """
    run, out = Path(run), Path(out)
    if out.exists() and any(out.iterdir()):
        raise AnodiffError(f"{out}: exists and is not empty; export into a new folder")
    if out.resolve() == run.resolve():
        raise AnodiffError(f"{out}: is the run itself; export into a new folder")
    detector, run_spec = load_run(run)
    if refit_data is None:
        detector = detector.retuned(**(settings or {}))
    else:
        detector = detector.retuned(keep_state=True, **(settings or {}))
        healthy, _ = training_images(run_spec.data.open(Path(refit_data)), detector.supervision)
        detector.fit_normality(healthy)
    if half:
        for net in detector.networks().values():
            net.half()
    spec = yaml.safe_load((run / RUN_FILE).read_text(encoding="utf-8"))
    spec["method_config"] = to_plain(detector.config)
    spec["exported_from"] = {"run": str(run.resolve()), "changed_settings": settings or {},
                             "weights": "float16" if half else "float32",
                             "refitted_on": None if refit_data is None
                             else str(Path(refit_data).resolve())}
    out.mkdir(parents=True, exist_ok=True)
    detector.save(out / "model")
    write_text_atomic(out / RUN_FILE, yaml.safe_dump(spec, sort_keys=False))
    return out


def size_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def weight_rounding_error(run: Path, exported: Path) -> float:
    """Largest absolute difference of any network weight between a run and its export."""
    original, copy = load(Path(run) / "model"), load(Path(exported) / "model")
    worst = 0.0
    for key, net in original.networks().items():
        other = dict(copy.networks()[key].named_parameters())
        for name, param in net.named_parameters():
            worst = max(worst, (param - other[name]).abs().max().item())
    return worst
