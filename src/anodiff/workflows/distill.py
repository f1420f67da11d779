"""``anodiff distill RUN --steps K --out RUN2``: a run whose decoder needs K network
evaluations, distilled from RUN's (:mod:`anodiff.diffusion.distillation`).

The student trains on the training slices RUN's network trained on (``--data`` names another
copy of them), halving the teacher's DDIM hops until K are left; each halving checkpoints
under ``RUN2/distillation`` and a rerun with the same settings resumes it. The student
then decodes in K DDIM hops in place of the teacher's decoder (AnoDDPM: the student replaces
its UNet; the counterfactual method: a student under the healthy label replaces the guided
decoder, the encoding keeps the trained network), and everything
fitted after training (the healthy-FPR threshold, the case thresholds) is refitted on the
dataset's healthy slices with the student's maps. ``RUN2`` is an ordinary run folder
(``run.yaml`` + ``model/``) that ``detect``, ``evaluate`` and ``benchmark`` take; its
run.yaml records the teacher, the hops and the cost under ``distilled_from``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from anodiff.config import to_plain
from anodiff.diffusion.distillation import (
    Distillable,
    distil,
    halving_plan,
    teacher_steps_for,
)
from anodiff.diffusion.training import ArrayDataset, TrainConfig
from anodiff.errors import AnodiffError
from anodiff.locking import LOCK_FILE, run_lock
from anodiff.methods import Detector
from anodiff.outputs import prepare_output_folder, write_text_atomic
from anodiff.workflows.export import refit_with
from anodiff.workflows.run import RUN_FILE, load_run, run_log

log = logging.getLogger("anodiff")
REQUEST_FILE = "distill.json"  # what was asked for: a rerun must ask for the same to resume
# Each halving: 400 AdamW steps of 16 slices from the teacher's weights, EMA 0.99. The
# benchmark in docs/BENCHMARKS.md ("Issue 23") says what this costs and buys on 2 cores.
HALVING_TRAINING = TrainConfig(steps=400, batch_size=16, lr=1e-4, warmup_steps=20,
                               ema_decay=0.99, checkpoint_every=100)


def distill_run(run: Path, out: Path, steps: int, *, data_root: Path | None = None,
                teacher_steps: int | None = None, train: TrainConfig | None = None,
                device: str = "auto") -> Detector:
    """Distil ``run``'s decoder into a ``steps``-hop student and save the new run in ``out``
    (module docstring); ``train`` sets each halving's optimisation (default
    :data:`HALVING_TRAINING`). Returns the distilled detector."""
    run, out = Path(run), Path(out)
    detector, spec = load_run(run, device)
    if not isinstance(detector, Distillable):
        raise AnodiffError(f"{run}: {detector.name}'s decoder is not one trajectory from its "
                           "level, so it has no few-step student; distil an anoddpm or "
                           "counterfactual run")
    segment = detector.decoder_segment()
    teacher_steps = teacher_steps or teacher_steps_for(steps, segment.steps, segment.level)
    halving_plan(segment.level, teacher_steps, steps)  # refused before anything is written
    train = train or HALVING_TRAINING
    data_root = Path(data_root or spec.data_root)
    request = {"run": str(run.resolve()), "steps": steps, "teacher_steps": teacher_steps,
               "train": asdict(train)}
    prepare_output_folder(out, [run, data_root])
    with run_lock(out):
        _check_request(out, request)
        write_text_atomic(out / REQUEST_FILE, json.dumps(request, indent=2))
        with run_log(out, "distill"):
            log.info("distil %s (%s: %d hops from L = %d) to %d DDIM hops, teacher %d DDIM "
                     "hops, on %s into %s", run, detector.name, segment.steps, segment.level,
                     steps, teacher_steps, data_root, out)
            data = spec.data.open(data_root)
            student, history = distil(
                segment.start, ArrayDataset(detector.distillation_images(data)
                                            .to(detector.device)),
                segment.schedule, level=segment.level, teacher_steps=teacher_steps,
                steps=steps, config=train, teacher=segment.teacher, as_eps=segment.as_eps,
                noise=segment.noise, noise_options=segment.noise_options,
                run_dir=out / "distillation")
            distilled = detector.with_student(student, steps)
            refit_with(distilled, data, spec.postprocess)  # the map steps its run records
            distilled.save(out / "model")
            write_text_atomic(out / RUN_FILE, yaml.safe_dump(
                _run_spec(run, distilled, request, history.to_dict()), sort_keys=False))
            log.info("distilled in %.0f s; the student decodes in %d network evaluations "
                     "(the teacher run: %d)", history.seconds, steps,
                     segment.steps * segment.teacher.nfe_per_call)
    return distilled



def _check_request(out: Path, request: dict[str, Any]) -> None:
    """A folder with another distillation's checkpoints, or another run, is refused."""
    previous = out / REQUEST_FILE
    if previous.is_file():
        if json.loads(previous.read_text(encoding="utf-8")) != request:
            raise AnodiffError(f"{out}: holds a distillation with other settings "
                               f"({previous.name}); use a new --out folder, or the same "
                               "settings to resume it")
    elif any(p.name != LOCK_FILE for p in out.iterdir()):
        raise AnodiffError(f"{out}: exists and is not empty; distil into a new folder")


def _run_spec(run: Path, distilled: Detector, request: dict[str, Any],
              history: dict[str, Any]) -> dict[str, Any]:
    """The teacher's run.yaml with the student's settings and where they came from."""
    spec = yaml.safe_load((run / RUN_FILE).read_text(encoding="utf-8"))
    spec["method_config"] = to_plain(distilled.config)
    spec["distilled_from"] = {**request, **history}
    return spec
