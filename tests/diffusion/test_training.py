"""The training loop: it learns, it resumes bit-identically, and checkpoints fail clearly."""

import json
from pathlib import Path

import pytest
import torch

from anodiff.diffusion.checkpoint import latest_checkpoint
from anodiff.diffusion.objectives import DiffusionObjective, FixedNoiseLoss
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.diffusion.training import (
    ArrayDataset,
    TrainConfig,
    Trainer,
    batch_indices,
    load_weights,
)
from anodiff.errors import AnodiffError, CheckpointError
from anodiff.nets.builders import build_unet


def disc_images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """A toy image distribution: one bright disc of random centre and radius per image."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.rand(n, 2, generator=gen) * (size - 6) + 3
    radius = torch.rand(n, generator=gen) * 2 + 2
    dist = ((yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2).sqrt()
    return (dist < radius[:, None, None]).float().unsqueeze(1) * 0.8 + 0.1


def _trainer(run_dir: Path | None, steps: int, validation=None, **overrides) -> Trainer:
    torch.manual_seed(0)  # network initialisation
    settings = dict(batch_size=8, lr=2e-3, warmup_steps=5, ema_decay=0.9, checkpoint_every=5)
    config = TrainConfig(steps=steps, **{**settings, **overrides})
    objective = DiffusionObjective(NoiseSchedule.create("linear", 200))
    return Trainer(build_unet("quick", 1), objective, config, run_dir, {"preset": "quick"},
                   progress=False, validation=validation)


def test_a_tiny_unet_learns_the_toy_distribution() -> None:
    trainer = _trainer(None, 300, checkpoint_every=1000)
    history = trainer.fit(ArrayDataset(disc_images(256)))
    first, last = history.losses[:30], history.losses[-30:]
    reduction = (sum(first) / 30) / (sum(last) / 30)
    assert reduction > 8.0, reduction  # 17x measured on a 2-core CPU (2026-11-22)
    assert history.steps_per_second > 0


def test_resume_continues_bit_identically(tmp_path: Path) -> None:
    data = ArrayDataset(disc_images(40))
    straight = _trainer(tmp_path / "straight", 20)
    straight.fit(data)
    interrupted = _trainer(tmp_path / "resumed", 10)
    interrupted.fit(data)
    resumed = _trainer(tmp_path / "resumed", 20)  # a new process pointed at the same run
    history = resumed.fit(data)
    assert history.start_step == 10 and len(history.losses) == 10
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema.model.state_dict().values(),
                    resumed.ema.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(straight.generator.get_state(), resumed.generator.get_state())


def test_checkpoints_are_pruned_and_pointed_to(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, 20, keep_checkpoints=2)
    trainer.fit(ArrayDataset(disc_images(16)))
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["step_0000015", "step_0000020"]
    latest = latest_checkpoint(tmp_path / "checkpoints")
    meta = json.loads((latest / "meta.json").read_text())
    assert meta["step"] == 20 and meta["model"] == {"preset": "quick"}
    assert {"anodiff", "torch", "monai"} <= set(meta["versions"])
    assert meta["objective"]["schedule"] == {"kind": "linear", "num_steps": 200}
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))  # no temporary leftovers
    model = build_unet("quick", 1)
    load_weights(tmp_path, model)  # a run directory resolves to its latest checkpoint
    assert torch.equal(model.state_dict()["conv_in.conv.weight"],
                       trainer.ema.model.state_dict()["conv_in.conv.weight"])


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    _trainer(tmp_path, 5).fit(ArrayDataset(disc_images(8)))
    return latest_checkpoint(tmp_path / "checkpoints")


def test_truncated_weights_give_a_clear_error(finished_run: Path) -> None:
    weights = finished_run / "ema.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="ema.safetensors.*truncated or corrupted"):
        load_weights(finished_run, build_unet("quick", 1))


def test_flipped_byte_gives_a_clear_error(finished_run: Path) -> None:
    weights = finished_run / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        _trainer(finished_run.parent.parent, 10).fit(ArrayDataset(disc_images(8)))


def test_garbled_metadata_gives_a_clear_error(finished_run: Path) -> None:
    (finished_run / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="meta.json: corrupted"):
        load_weights(finished_run, build_unet("quick", 1))


def test_weights_of_another_network_give_a_clear_error(finished_run: Path) -> None:
    with pytest.raises(CheckpointError, match="do not fit this network"):
        load_weights(finished_run, build_unet("quick", 2))


def test_resuming_with_other_settings_is_refused(finished_run: Path) -> None:
    with pytest.raises(AnodiffError, match="other settings.*lr"):
        _trainer(finished_run.parent.parent, 10, lr=1e-4).fit(ArrayDataset(disc_images(8)))


def test_batches_cover_every_sample_once_per_epoch() -> None:
    seen = torch.cat([batch_indices(step, 8, 20, seed=3) for step in range(5)])  # 2 epochs
    assert sorted(seen[:20].tolist()) == list(range(20))
    assert sorted(seen[20:40].tolist()) == list(range(20))
    assert not torch.equal(seen[:20], seen[20:40])  # reshuffled between epochs


def test_label_dropout_needs_a_null_label() -> None:
    with pytest.raises(AnodiffError, match="null_label"):
        DiffusionObjective(NoiseSchedule.create("linear", 100), label_dropout=0.1)


def test_conditional_objective_trains_a_class_and_concat_conditioned_unet() -> None:
    images = disc_images(32)
    data = ArrayDataset(images, labels=torch.randint(0, 2, (32,)), cond=1 - images)
    objective = DiffusionObjective(NoiseSchedule.create("cosine", 100), prediction="x0",
                                   loss="l1", max_level=50, label_dropout=0.2, null_label=2,
                                   noise="simplex", noise_options={"frequency": 8.0})
    config = TrainConfig(steps=6, batch_size=8, checkpoint_every=100)
    net = build_unet("quick", 1, cond_channels=1, num_class_embeds=3)
    history = Trainer(net, objective, config, progress=False).fit(data)
    assert len(history.losses) == 6 and all(loss == loss for loss in history.losses)


class ScriptedValidation:
    """A validation whose values are given in advance (one per call), for early stopping."""

    def __init__(self, values: list[float]) -> None:
        self.values, self.calls = list(values), 0

    def __call__(self, model: torch.nn.Module) -> float:
        self.calls += 1
        return self.values[self.calls - 1]


def test_early_stopping_keeps_the_best_weights_and_stops_on_patience() -> None:
    seen: list[dict[str, torch.Tensor]] = []

    def validation(model: torch.nn.Module) -> float:
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return [3.0, 1.0, 2.0, 2.5, 0.5][len(seen) - 1]

    trainer = _trainer(None, 100, validation, validate_every=5, patience=2,
                       checkpoint_every=1000)
    history = trainer.fit(ArrayDataset(disc_images(40)))
    assert [step for step, _ in history.validations] == [5, 10, 15, 20]  # 2 without gain
    assert trainer.stopped_early and trainer.step == 20 and trainer.best_step == 10
    best = trainer.final_model().state_dict()
    assert all(torch.equal(best[k], seen[1][k]) for k in best)


def test_resume_with_validation_continues_bit_identically(tmp_path: Path) -> None:
    data = ArrayDataset(disc_images(40))
    values = [2.0, 1.0, 1.5, 1.7, 1.8, 0.5]  # best at 10, stop at 25
    def trainer(run: str, steps: int, script: list[float]) -> Trainer:
        return _trainer(tmp_path / run, steps, ScriptedValidation(script), validate_every=5,
                        patience=3)

    straight = trainer("straight", 30, values)
    straight.fit(data)
    trainer("resumed", 10, values).fit(data)
    resumed = trainer("resumed", 30, values[2:])  # validations after step 10 only
    resumed.fit(data)
    assert (resumed.best_step, resumed.best_value) == (straight.best_step, straight.best_value)
    for a, b in zip(straight.final_model().state_dict().values(),
                    resumed.final_model().state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert straight.stopped_early and (straight.step, straight.best_step) == (25, 10)
    assert len(trainer("straight", 30, []).fit(data).losses) == 0  # a finished run stays so


def test_patience_without_a_validation_is_refused() -> None:
    with pytest.raises(AnodiffError, match="nothing validates"):
        _trainer(None, 10, patience=2)


def test_fixed_noise_loss_is_deterministic_and_exact_for_a_zero_model() -> None:
    schedule = NoiseSchedule.create("linear", 200)
    images = disc_images(12) * 2 - 1
    loss = FixedNoiseLoss(schedule, images, seed=3, batch_size=5)
    assert sorted(loss.levels.tolist()) == torch.linspace(1, 200, 12).round().long().tolist()

    class Zero(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            return x[:, :1] * self.w

    assert loss(Zero()) == pytest.approx(float(loss.noise.square().mean()), rel=1e-6)
    net = build_unet("quick", 1, cond_channels=1)
    conditioned = FixedNoiseLoss(schedule, images, images, seed=3)
    assert conditioned(net) == conditioned(net)


def test_saved_weights_get_the_umask_permissions(tmp_path: Path) -> None:
    """safetensors writes owner-only files; a checkpoint follows the umask like any file."""
    import os

    from anodiff.diffusion.checkpoint import write_checkpoint

    folder = write_checkpoint(tmp_path / "ckpt", {"net": {"w": torch.zeros(2)}}, {})
    mask = os.umask(0)
    os.umask(mask)
    weights = folder / "net.safetensors"
    assert weights.stat().st_mode & 0o777 == 0o666 & ~mask
    assert (folder / "meta.json").stat().st_mode & 0o777 == 0o666 & ~mask
