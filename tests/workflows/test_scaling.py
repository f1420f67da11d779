"""Beyond one process: ``anodiff train`` under ``torchrun`` (2 CPU processes, gloo) killed
and resumed; sharded ``evaluate`` and ``detect`` equal to one process's results; the named
refusals (shard out of range, shards of other settings, a shard already running)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from anodiff.cli import app
from anodiff.data.synth import SynthConfig, build
from anodiff.diffusion.checkpoint import read_meta
from anodiff.errors import AnodiffError
from anodiff.methods import load
from anodiff.scoring.postprocess import PostProcess
from anodiff.workflows.detect import detect_inputs
from anodiff.workflows.evaluate import evaluate_run
from anodiff.workflows.merge import merge_shards

RUNNER = CliRunner()
TRAIN = ("train", "anoddpm", "--preset", "quick", "--set", "data.size=32",
         "--set", "method.diffusion.train.steps=120",
         "--set", "method.diffusion.train.checkpoint_every=40",
         "--set", "method.diffusion.train.batch_size=8")


def torchrun(*args: str) -> list[str]:
    """``torchrun --standalone --nproc-per-node 2 -m anodiff ARGS``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            "2", "-m", "anodiff", *map(str, args)]


def environment() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def worker_of_rank(launcher: int, rank: int) -> int | None:
    """The pid of the launcher's child process that has RANK=rank (Linux /proc)."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children")
    for pid in children.read_text().split() if children.is_file() else []:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    build(out, SynthConfig(size=32, cases=8, tracks=("tumour",)), workers=1)
    return out / "tumour"


@pytest.fixture(scope="module")
def killed_and_resumed(data: Path, tmp_path_factory: pytest.TempPathFactory
                       ) -> tuple[Path, int, subprocess.CompletedProcess]:
    """A 2-process training whose process 1 is killed after the first checkpoint, then
    rerun: (the run, the first run's exit code, the rerun)."""
    run = tmp_path_factory.mktemp("ddp") / "run"
    command = torchrun(*TRAIN, "--data", data, "--out", run)
    first = subprocess.Popen(command, env=environment(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not (run / "unet" / "checkpoints" / "step_0000040").is_dir():
        assert first.poll() is None and time.monotonic() < deadline, "no checkpoint came"
        time.sleep(0.05)
    victim = worker_of_rank(first.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    code = first.wait(timeout=120)
    assert not (run / "model").exists()  # the job stopped with its process
    rerun = subprocess.run(command, env=environment(), capture_output=True, text=True,
                           timeout=300)
    return run, code, rerun


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick AnoDDPM run trained here, in one process (for the sharded inference)."""
    run = tmp_path_factory.mktemp("one") / "run"
    result = RUNNER.invoke(app, [*TRAIN[:-6], "--data", str(data), "--out", str(run)])
    assert result.exit_code == 0, result.output
    return run


def test_training_on_two_processes_resumes_after_a_process_is_killed(
        killed_and_resumed: tuple[Path, int, subprocess.CompletedProcess]) -> None:
    run, code, rerun = killed_and_resumed
    assert code != 0
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = (run / "train.log").read_text()
    assert re.search(r"resumed from step (40|80)", log)
    assert "(2 processes, gloo)" in log and "batch 4 per process, 8 in total" in log
    losses = [float(v) for v in re.findall(r"train: \d+/120 step, loss=([\d.]+)", log)]
    assert len(losses) >= 5 and losses[-1] < 0.6 * losses[0]  # it learns
    meta = read_meta(run / "unet" / "checkpoints" / "step_0000120")
    assert meta["processes"] == 2
    detector = load(run / "model")  # the checkpoint and the model load
    assert detector.name == "anoddpm" and detector.input_shape == (3, 32, 32)
    assert "[process 1]" not in rerun.stderr  # process 1 printed nothing: it had nothing to say


@pytest.mark.slow
def test_a_global_batch_two_processes_cannot_split_is_one_line(data: Path, tmp_path: Path
                                                               ) -> None:
    result = subprocess.run(
        torchrun(*TRAIN, "--set", "method.diffusion.train.batch_size=7", "--data", data,
                 "--out", tmp_path / "run"), env=environment(), capture_output=True,
        text=True, timeout=300)
    assert result.returncode != 0
    assert "anodiff: error: train.batch_size 7 is the batch of one step over all 2 " \
           "processes, and 2 does not divide it" in result.stderr
    assert "Traceback" not in result.stderr.split("anodiff: error")[0][-200:]


def sharded_evaluation(run: Path, data: Path, out: Path, post: PostProcess) -> dict:
    for shard in ("1/2", "0/2"):
        assert evaluate_run(run, data, out, shard=shard, resamples=50, batch_size=16,
                            postprocess=post) is None
    return json.loads(merge_shards(out) and (out / "metrics.json").read_text())


def test_two_shards_of_evaluate_give_the_metrics_of_one_process(
        trained: Path, data: Path, tmp_path: Path) -> None:
    """With a post-processing across slices: the plan carries it to the merge. The one
    process reads the test cases one at a time and evaluates each as its batches come; the
    shards localise their batches as the cases are read, the merge puts them together: the
    same metrics."""
    run, post = trained, PostProcess(interslice_median=3)
    evaluate_run(run, data, tmp_path / "whole", resamples=50, batch_size=16, postprocess=post)
    merged = sharded_evaluation(run, data, tmp_path / "sharded", post)
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    timing = {"seconds_per_image"}
    assert {k: v for k, v in merged.items() if k not in timing} == \
        {k: v for k, v in whole.items() if k not in timing}
    assert merged["postprocess"]["interslice_median"] == 3
    assert (tmp_path / "sharded" / "report.html").is_file()
    # a rerun of a finished shard does nothing again; the plan refuses other settings
    units = sorted((tmp_path / "sharded" / "shards").glob("*.npz"))
    kinds = [set(np.load(unit).files) for unit in units]  # residual sums, not the images
    assert all("residual_sums" in k and "pseudo_healthy" not in k for k in kinds)
    kept = {split: sum(len(np.load(unit)["example_rows"]) for unit, k
                       in zip(units, kinds, strict=True)
                       if "example_rows" in k and unit.name.startswith(split))
            for split in ("test", "val")}  # the grid rows, a slice a case: up to 4 lesioned
    assert 1 <= kept["val"] <= 2 and 2 <= kept["test"] <= 4 + 2  # cases, up to 2 healthy
    stamps = [p.stat().st_mtime_ns for p in units]
    evaluate_run(run, data, tmp_path / "sharded", shard="0/2", resamples=50, batch_size=16,
                 postprocess=post)
    assert [p.stat().st_mtime_ns for p in units] == stamps
    with pytest.raises(AnodiffError, match=r"plan.json: the shards in .* were started with "
                                           r"other settings \(batch_size 16 -> 32"):
        evaluate_run(run, data, tmp_path / "sharded", shard="0/2", resamples=50,
                     postprocess=post)
    with pytest.raises(AnodiffError, match=r"plan.json: the shards .* \(postprocess "):
        evaluate_run(run, data, tmp_path / "sharded", shard="0/2", resamples=50, batch_size=16)
    with pytest.raises(AnodiffError, match=r"plan.json: the shards .* \(shards 2 -> 3\)"):
        evaluate_run(run, data, tmp_path / "sharded", shard="2/3", resamples=50,
                     batch_size=16, postprocess=post)


def test_merge_names_the_shards_not_done(
        trained: Path, data: Path, tmp_path: Path) -> None:
    run = trained
    evaluate_run(run, data, tmp_path / "half", shard="1/2", resamples=0, batch_size=16)
    with pytest.raises(AnodiffError, match=r"not every shard is done \(shard 0/2: \d+ unit"):
        merge_shards(tmp_path / "half")
    result = RUNNER.invoke(app, ["merge", str(tmp_path / "nothing")])
    assert "holds no shards" in str(result.exception)


def test_merge_refuses_a_dataset_whose_test_slices_changed(
        trained: Path, data: Path, tmp_path: Path) -> None:
    """The merge reads the test cases one at a time: a test case that can no longer be read
    (skipped, with a warning) leaves fewer slices than the shards localised; shards that
    counted different slices are refused too."""
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    for shard in ("0/2", "1/2"):
        evaluate_run(trained, copy, tmp_path / "out", shard=shard, resamples=0, batch_size=16)
    test_case = next(line.split(",")[0] for line in (copy / "splits.csv").read_text().split()
                     if line.endswith(",test"))
    flair = next((copy / test_case).glob("*flair*"))
    intact = flair.read_bytes()
    flair.write_bytes(b"\x1f\x8b not a volume")
    with pytest.raises(AnodiffError, match=r"holds other slices than when the shards were "
                                           r"made \(.* -> test \d+, val_healthy \d+\); rerun"):
        merge_shards(tmp_path / "out")
    # a shard run after the change counts fewer slices than the one before it
    evaluate_run(trained, copy, tmp_path / "mixed", shard="0/2", resamples=0, batch_size=16)
    flair.write_bytes(intact)
    evaluate_run(trained, copy, tmp_path / "mixed", shard="1/2", resamples=0, batch_size=16)
    with pytest.raises(AnodiffError, match=r"the shards read different data .*; the dataset "
                                           r"changed while they ran"):
        merge_shards(tmp_path / "mixed")


@pytest.mark.parametrize(("shard", "message"), [
    ("2/2", "--shard 2/2: the index must be 0 to 1 for 2 shard"),
    ("-1/2", "--shard '-1/2': expected I/N"),
    ("0/0", "--shard 0/0: the index must be 0 to 0 for 0 shard"),
    ("half", "--shard 'half': expected I/N"),
])
def test_a_shard_out_of_range_is_named(
        tmp_path: Path, shard: str, message: str) -> None:
    with pytest.raises(AnodiffError, match=re.escape(message)):  # before any work
        evaluate_run(tmp_path / "run", tmp_path / "data", tmp_path / "out", shard=shard)
    with pytest.raises(AnodiffError, match=re.escape(message)):
        detect_inputs(tmp_path / "run", [tmp_path / "case"], tmp_path / "out", shard=shard)


def test_a_shard_held_by_another_job_is_refused(
        trained: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / ".lock-0-of-2").write_text(json.dumps(
        {"pid": os.getppid(), "host": os.uname().nodename, "started": time.time()}))
    with pytest.raises(AnodiffError, match=r"in use by process \d+ on .* wait for it"):
        evaluate_run(trained, data, out, shard="0/2", resamples=0)


def test_two_shards_of_detect_give_the_scores_of_one_process(
        trained: Path, data: Path, tmp_path: Path) -> None:
    run = trained
    cases = sorted(p for p in data.iterdir() if p.is_dir())[:3]
    inputs = [*cases, data / "missing_case"]
    whole = detect_inputs(run, inputs, tmp_path / "whole", progress=False)
    for shard in ("0/2", "1/2"):
        detect_inputs(run, inputs, tmp_path / "sharded", shard=shard, progress=False)
    # a rerun of shard 1 (cases 1 and 3) skips its case done ok and retries the failed one
    again = detect_inputs(run, inputs, tmp_path / "sharded", shard="1/2", progress=False)
    assert [row.status for row in again.rows] == ["error"]  # the missing input, retried
    merged = merge_shards(tmp_path / "sharded")
    assert "3 of 4 cases done" in merged

    def table(folder: Path) -> list[list[str]]:
        lines = (folder / "scores.csv").read_text().splitlines()
        seconds = lines[0].split(",").index("seconds")
        return [[v for i, v in enumerate(line.split(",")) if i != seconds] for line in lines]

    assert table(tmp_path / "sharded") == table(tmp_path / "whole")
    assert len(whole.rows) == 4
    for case in cases:
        assert (tmp_path / "sharded" / f"{case.name}_anomaly_map.nii.gz").read_bytes() == \
            (tmp_path / "whole" / f"{case.name}_anomaly_map.nii.gz").read_bytes()


@pytest.mark.slow
def test_evaluate_under_torchrun_merges_on_the_main_process(
        trained: Path, data: Path, tmp_path: Path) -> None:
    run = trained
    result = subprocess.run(torchrun("evaluate", run, "--data", data, "--out", tmp_path / "tr",
                                     "--resamples", "50", "--batch-size", "16"),
                            env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    alone = subprocess.run([sys.executable, "-m", "anodiff", "evaluate", str(run), "--data",
                            str(data), "--out", str(tmp_path / "one"), "--resamples", "50",
                            "--batch-size", "16"], env=environment(), capture_output=True,
                           text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-3000:]
    merged = json.loads((tmp_path / "tr" / "metrics.json").read_text())
    whole = json.loads((tmp_path / "one" / "metrics.json").read_text())
    merged.pop("seconds_per_image")
    whole.pop("seconds_per_image")
    assert merged == whole  # one thread per process in both


@pytest.mark.parametrize("command", [["benchmark", "x.yaml", "--out", "y"], ["merge", "x"],
                                     ["demo"]])
def test_commands_of_one_process_refuse_torchrun(monkeypatch: pytest.MonkeyPatch,
                                                 command: list[str]) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = RUNNER.invoke(app, command)
    assert isinstance(result.exception, AnodiffError)
    assert f"`anodiff {command[0]}` runs in one process; under torchrun use train, " \
           "evaluate, detect" in str(result.exception)
