"""Training on several processes with PyTorch's DDP (gloo on CPU), through ``torchrun`` as
users start it: the same weights as one process with the same global batch, exact resume
after a process is killed, and named refusals. The worker is ``ddp_worker.py``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import train
from safetensors.torch import load_file

from anodiff.diffusion import distributed
from anodiff.diffusion.distributed import (
    World,
    check_same_settings,
    launched_world,
    per_process_batch,
    process_device,
    rank_seed,
)
from anodiff.errors import AnodiffError

WORKER = Path(__file__).with_name("ddp_worker.py")


def launch(out: Path, *args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """The worker under torchrun (processes > 1) or plainly, on one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", str(processes)] if processes > 1 else [sys.executable]
    return subprocess.run([*launcher, str(WORKER), "--out", str(out), *args], env=env,
                          capture_output=True, text=True, timeout=240)


def failure(result: subprocess.CompletedProcess) -> str:
    """What the processes themselves printed before torchrun's summary (the cause of a
    crash: a Python traceback's last line, a C++ ``what()``), then the summary's tail."""
    lines = result.stderr.splitlines()
    causes = [line for line in lines if any(mark in line for mark in
                                            ("Error", "what()", "terminate", "Aborted"))]
    return "\n".join(causes[:20]) + "\n...\n" + result.stderr[-1000:]


def weights(out: Path, name: str = "weights") -> dict[str, torch.Tensor]:
    return load_file(out / f"{name}.safetensors")


def test_two_processes_give_the_weights_of_one_with_the_same_global_batch(tmp_path: Path
                                                                          ) -> None:
    train(tmp_path / "one", steps=24, batch=8)  # one process, here
    two = launch(tmp_path / "two", "--batch", "8", "--steps", "24")
    assert two.returncode == 0, failure(two)
    for name in ("weights", "ema"):
        a, b = weights(tmp_path / "one", name), weights(tmp_path / "two", name)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    losses = [float(v) for v in (tmp_path / "two" / "losses.txt").read_text().split()]
    reference = [float(v) for v in (tmp_path / "one" / "losses.txt").read_text().split()]
    assert losses == pytest.approx(reference, rel=1e-5)  # the mean over both processes
    assert sum(losses[-6:]) < 0.8 * sum(losses[:6])  # it learns


@pytest.mark.slow
def test_a_killed_process_and_a_rerun_give_the_uninterrupted_weights(tmp_path: Path) -> None:
    whole = launch(tmp_path / "whole", "--noise", "0.1")
    killed = launch(tmp_path / "killed", "--noise", "0.1", "--kill-at", "3")
    assert whole.returncode == 0, failure(whole)
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr
    checkpoints = tmp_path / "killed" / "run" / "checkpoints"
    assert (checkpoints / "step_0000002").is_dir()  # written before the kill at step 3
    resumed = launch(tmp_path / "killed", "--noise", "0.1")
    assert resumed.returncode == 0, failure(resumed)
    for name in ("weights", "ema"):  # every process's noise stream was restored
        a, b = weights(tmp_path / "whole", name), weights(tmp_path / "killed", name)
        assert all(torch.equal(a[key], b[key]) for key in a), name


@pytest.mark.slow
def test_processes_started_with_other_settings_are_refused(tmp_path: Path) -> None:
    result = launch(tmp_path / "x", "--settings-of-rank")
    assert result.returncode != 0
    assert "process 0 and process 1 were started with different settings (lr 0.01 vs 0.05)" \
        in result.stderr


def test_differing_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "gathered", lambda value, world: [
        value, {**value, "method.train.lr": 0.002}])
    check_same_settings({"method.train.lr": 0.002}, World(0, 2))  # the same: goes on
    with pytest.raises(AnodiffError, match=r"process 0 and process 1 were started with "
                                           r"different settings \(method.train.lr 0.001 vs "
                                           r"0.002\)"):
        check_same_settings({"method.train.lr": 0.001}, World(0, 2))


def test_a_global_batch_the_processes_cannot_split_is_refused() -> None:
    assert per_process_batch(32, World(1, 4)) == 8
    with pytest.raises(AnodiffError, match="train.batch_size 30 is the batch of one step over "
                                           "all 4 processes, and 4 does not divide it; use a "
                                           r"multiple of 4 \(e.g. 28\)"):
        per_process_batch(30, World(0, 4))


def test_the_launchers_environment_is_read_and_checked(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched_world() == World()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(AnodiffError, match="WORLD_SIZE is set but 'RANK' is not"):
        launched_world()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(AnodiffError, match="RANK 2 of WORLD_SIZE 2"):
        launched_world()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launched_world() == World(1, 2, 1)
    assert rank_seed(5, World(1, 2)) != rank_seed(5, World(0, 2)) == 5
    with pytest.raises(AnodiffError, match="under torchrun give --device cuda"):
        process_device(torch.device("cuda", 1), World(1, 2, 1))
