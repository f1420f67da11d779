"""``anodiff distill`` end to end on a tiny embedded benchmark: a quick AnoDDPM run becomes
a 2-step student run that the other commands take, resumes, and refuses what it cannot do;
a quick counterfactual run gets a one-evaluation-per-hop student of its guided decoder."""

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from anodiff.cli import app
from anodiff.data.synth import SynthConfig, build
from anodiff.errors import AnodiffError
from anodiff.methods import load
from anodiff.methods.parts import StudentPart
from anodiff.scoring.postprocess import PostProcess
from anodiff.workflows.run import load_run

RUNNER = CliRunner()


@pytest.fixture(scope="module")
def anoddpm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("distill")
    build(out / "synth", SynthConfig(size=32, cases=8, tracks=("tumour",)), workers=1)
    data, run = out / "synth" / "tumour", out / "ano"
    invoke("train", "anoddpm", "--data", data, "--out", run, "--preset", "quick",
           "--set", "data.size=32")
    return data, run


def invoke(*args: object) -> str:
    result = RUNNER.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def refused(*args: object) -> str:
    result = RUNNER.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0
    return str(result.exception)


def test_distill_makes_a_two_step_run_and_resumes(anoddpm_run: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    data, run = anoddpm_run
    out = tmp_path / "student"
    invoke("distill", run, "--out", out, "--steps", 2, "--teacher-steps", 4, "--iterations", 3)
    teacher, student = load(run / "model"), load(out / "model")
    assert (student.config.solver, student.config.steps) == ("ddim", 2)
    assert (teacher.config.solver, teacher.config.steps) == ("ddpm", 25)
    assert student.config.level == teacher.config.level
    assert torch.isfinite(student.threshold) and not torch.equal(student.threshold,
                                                                 teacher.threshold)
    changed = any(not torch.equal(a, b) for a, b in zip(teacher.unet.parameters(),
                                                          student.unet.parameters(),
                                                          strict=True))
    assert changed  # the student's weights, not the teacher's
    images = torch.rand(3, *student.input_shape)
    result = student.localize(images)
    assert result.nfe == 2 and result.anomaly_map.shape == (3, 32, 32)
    spec = yaml.safe_load((out / "run.yaml").read_text())
    record = spec["distilled_from"]
    assert (record["steps"], record["teacher_steps"]) == (2, 4)
    assert [stage["steps"] for stage in record["halvings"]] == [2]
    load_run(out, "cpu")  # run.yaml describes the saved model: detect and evaluate take it
    invoke("distill", run, "--out", out, "--steps", 2, "--teacher-steps", 4, "--iterations", 3)
    again = yaml.safe_load((out / "run.yaml").read_text())["distilled_from"]
    assert again["halvings"][0]["trained_steps"] == 0  # resumed from its checkpoint
    assert torch.equal(load(out / "model").threshold, student.threshold)


def test_distill_refuses_what_it_cannot_do(anoddpm_run: tuple[Path, Path],
                                           tmp_path: Path) -> None:
    data, run = anoddpm_run
    out = tmp_path / "s"
    invoke("distill", run, "--out", out, "--steps", 1, "--teacher-steps", 2, "--iterations", 1)
    assert "other settings" in refused("distill", run, "--out", out, "--steps", 2,
                                       "--teacher-steps", 4, "--iterations", 1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    assert "not empty" in refused("distill", run, "--out", tmp_path / "full", "--steps", 2)
    assert "power of two" in refused("distill", run, "--out", tmp_path / "p", "--steps", 2,
                                     "--teacher-steps", 6)
    assert "levels" in refused("distill", run, "--out", tmp_path / "l", "--steps", 16,
                               "--teacher-steps", 32)
    threshold = tmp_path / "thr"
    invoke("train", "threshold", "--data", data, "--out", threshold, "--preset", "quick",
           "--set", "data.size=32")
    assert "few-step student" in refused("distill", threshold, "--out", tmp_path / "t")
    assert "--iterations" in refused("distill", run, "--out", tmp_path / "i", "--iterations", 0)


def test_export_preset_fast_gives_a_cpu_run_its_fast_decoder(anoddpm_run: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    data, run = anoddpm_run
    message = refused("export", run, "--out", tmp_path / "stale", "--preset", "fast")
    assert "refit them" in message and "solver" in message  # no threshold left stale
    invoke("export", run, "--out", tmp_path / "fast", "--preset", "fast", "--refit", data)
    teacher, fast = load(run / "model"), load(tmp_path / "fast" / "model")
    assert (fast.config.solver, fast.config.steps) == ("ddim", 1)
    assert fast.config.level == teacher.config.level
    assert not torch.equal(fast.threshold, teacher.threshold)  # refitted on its own maps
    assert fast.localize(torch.rand(2, *fast.input_shape)).nfe == 1
    record = yaml.safe_load((tmp_path / "fast" / "run.yaml").read_text())["exported_from"]
    assert record["preset"] == "fast" and record["changed_settings"] == {"solver": "ddim",
                                                                         "steps": 1}


def test_a_student_keeps_the_map_steps_its_teacher_run_records(
        anoddpm_run: tuple[Path, Path], tmp_path: Path) -> None:
    """A run exported with ``--postprocess interslice_median=3`` distils into a run whose
    thresholds are calibrated on maps filtered so again (run.yaml and the model agree)."""
    data, run = anoddpm_run
    teacher = tmp_path / "median"
    invoke("export", run, "--out", teacher, "--postprocess", "interslice_median=3",
           "--refit", data)
    out = tmp_path / "student"
    invoke("distill", teacher, "--out", out, "--steps", 2, "--teacher-steps", 4,
           "--iterations", 2)
    student, spec = load_run(out, "cpu")
    assert student.map_steps == spec.postprocess == PostProcess(interslice_median=3)
    assert not torch.equal(student.threshold, load(teacher).threshold)


def test_a_counterfactual_run_gets_a_student_of_its_guided_decoder(
        anoddpm_run: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = anoddpm_run
    run, out = tmp_path / "cf", tmp_path / "cf2"
    invoke("train", "counterfactual", "--data", data, "--out", run, "--preset", "quick",
           "--set", "data.size=32", "--set", "method.diffusion.train.steps=10")
    invoke("distill", run, "--out", out, "--steps", 2, "--teacher-steps", 4, "--iterations", 3)
    teacher, student = load(run / "model"), load(out / "model")
    assert teacher.config.student is None
    assert student.config.student == StudentPart(steps=2, level=teacher.config.level)
    for a, b in zip(teacher.unet.parameters(), student.unet.parameters(), strict=True):
        assert torch.equal(a, b)  # the encoding keeps the trained network
    assert any(not torch.equal(a, b) for a, b in zip(teacher.unet.parameters(),
                                                       student.student.parameters(),
                                                       strict=True))
    calls = []
    hooks = [net.register_forward_hook(lambda _m, args, _o, name=name:
                                       calls.append((name, args[0].shape[0])))
             for name, net in (("unet", student.unet), ("student", student.student))]
    images = torch.rand(3, *student.input_shape)
    result = student.localize(images)
    for hook in hooks:
        hook.remove()
    steps = student.config.steps
    assert result.nfe == steps + 2  # the encoding's hops, then two of the student's
    assert sum(n for name, n in calls if name == "unet") == 3 * steps
    assert sum(n for name, n in calls if name == "student") == 3 * 2  # one batch per hop
    assert teacher.localize(images).nfe == steps + 2 * steps  # guided: two per hop
    load_run(out, "cpu")
    invoke("distill", out, "--out", tmp_path / "cf1", "--steps", 1, "--iterations", 2)
    further = load(tmp_path / "cf1" / "model")  # one more halving, from the 2-hop student
    assert further.config.student == StudentPart(steps=1, level=teacher.config.level)
    assert further.localize(images).nfe == steps + 1
    with pytest.raises(AnodiffError, match="decode_steps"):
        further.retuned(decode_steps=4)  # the student decodes in its own hops
    assert "trained parts" in refused("export", run, "--out", tmp_path / "fake",
                                      "--set", "student.steps=2", "--set", "student.level=50",
                                      "--refit", data)
