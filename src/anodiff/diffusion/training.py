"""The training loop shared by every network of the project (diffusion models, classifiers).

AdamW with linear warm-up, gradient clipping, EMA, a progress bar with the loss and it/s,
atomic checkpoints every ``checkpoint_every`` steps, and **exact resume**: a run stopped
at any checkpoint and restarted continues bit-identically to an uninterrupted one. That
holds because everything random is a function of saved state: batches come from
per-epoch permutations derived from ``(seed, epoch)``, and levels, noise and label dropout
come from a ``torch.Generator`` whose state is checkpointed with the global torch RNG
(dropout), the optimiser moments and the EMA weights. The global generator is only ever
used inside :func:`~.seeding.seeded`, so training leaves the caller's random state alone.
The network trains on the device it is on (move it, or the detector holding it, first).

**Early stopping** (optional): a ``validation`` callable scores the network to sample with
every ``validate_every`` steps (lower is better; it must draw no global randomness, e.g. a
loss on fixed held-out samples and noise, :class:`~.objectives.FixedNoiseLoss`); the best
weights so far travel in every checkpoint, training stops after ``patience`` validations
without improvement, and the trained model is the best one (Baugh 2024 stops each fold
model on its held-out tasks).

**Several processes** (``torchrun``, :mod:`~.distributed`): inside an open process group the
network trains as PyTorch's ``DistributedDataParallel`` (Li 2020: gradients all-reduced in
buckets while the backward pass runs). ``batch_size`` stays the batch of
one step over all processes; each process takes its equal, contiguous share of the same
global batch (the same per-epoch permutation, so the data order does not depend on the
number of processes), the gradients are averaged by DDP, and the reported loss is the mean
over processes. Each process draws its noise and levels from its own generator, seeded
from ``(seed, rank)``. Every process keeps the EMA (identical, as the weights are); the main
process validates (the value is broadcast, so all stop together) and writes checkpoints
holding every process's random state, after which all wait for it, and every process
resumes from the checkpoint the main one picked. Resuming on another number of processes
keeps the data order but not the other processes' noise streams (logged).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from anodiff.diffusion.checkpoint import (
    checkpoint_name,
    flatten_optimizer,
    latest_checkpoint,
    load_state_into,
    mark_latest,
    newest_readable_checkpoint,
    prune_checkpoints,
    read_checkpoint,
    unflatten_optimizer,
    write_checkpoint,
)
from anodiff.diffusion.distributed import (
    World,
    barrier,
    broadcast,
    current_world,
    gathered,
    mean_over_processes,
    per_process_batch,
    rank_seed,
)
from anodiff.diffusion.ema import EMA
from anodiff.diffusion.objectives import ClassifierObjective
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.diffusion.seeding import seeded
from anodiff.errors import AnodiffError, CheckpointError
from anodiff.progress import progress_bar

log = logging.getLogger("anodiff")
Objective = Callable[[nn.Module, dict[str, Tensor], torch.Generator], Tensor]
Validation = Callable[[nn.Module], float]  # scores the network to sample with; lower = better


class SampleSource(Protocol):
    """What the loop trains on: indexable samples, each a dict of equally shaped tensors."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Tensor]: ...


class ArrayDataset:
    """In-memory training samples: images (N, C, ...), optional labels (N,), conditions and
    lesion masks (N, ...; the targets of a supervised segmentation)."""

    def __init__(self, images: Tensor, labels: Tensor | None = None, cond: Tensor | None = None,
                 masks: Tensor | None = None) -> None:
        for name, value in (("labels", labels), ("cond", cond), ("masks", masks)):
            if value is not None and len(value) != len(images):
                raise AnodiffError(f"ArrayDataset: {len(images)} images but {len(value)} {name}")
        self.images, self.labels, self.cond, self.masks = images, labels, cond, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = {"image": self.images[index]}
        if self.labels is not None:
            item["label"] = self.labels[index].long()
        if self.cond is not None:
            item["cond"] = self.cond[index]
        if self.masks is not None:
            item["mask"] = self.masks[index]
        return item


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Presets of the methods are instances of this class."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    ema_decay: float | None = 0.999
    grad_clip: float | None = 1.0
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    seed: int = 0
    validate_every: int | None = None  # steps between validations (None: checkpoint_every)
    patience: int | None = None  # validations without improvement before stopping (None: never)

    @staticmethod
    def upgrade_settings(values: dict[str, Any]) -> dict[str, Any]:
        """Settings written by earlier versions: ``device`` was a training setting and is
        now chosen at run time (``--device``, ``Detector.to``), so it is dropped."""
        values = dict(values)
        if values.pop("device", "cpu") != "cpu":
            log.warning("train.device is no longer a setting; choose the device with --device "
                        "(or Detector.to) instead")
        return values

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "checkpoint_every", "keep_checkpoints")
        bad = [name for name in positive if getattr(self, name) < 1]
        bad += [name for name in ("validate_every", "patience")
                if getattr(self, name) is not None and getattr(self, name) < 1]
        if bad or not 0 < self.lr < math.inf:  # also refuses NaN
            raise AnodiffError(f"{bad or ['lr']} must be positive (and finite), got "
                               f"{[getattr(self, name) for name in bad or ['lr']]}")
        if not self.weight_decay >= 0 or self.warmup_steps < 0:
            raise AnodiffError("weight_decay and warmup_steps must be >= 0")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise AnodiffError(f"ema_decay must be in (0, 1) or null, got {self.ema_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise AnodiffError(f"grad_clip must be > 0 or null, got {self.grad_clip}")

    @property
    def validation_interval(self) -> int:
        """Steps between two validations."""
        return self.validate_every or self.checkpoint_every


# Settings that may change between a run and its resumption (training longer, elsewhere).
RESUMABLE_CHANGES = frozenset({"steps", "checkpoint_every", "keep_checkpoints"})


@dataclass
class TrainHistory:
    """What :meth:`Trainer.fit` did: losses per step it ran, and its timing."""

    start_step: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    validations: list[tuple[int, float]] = field(default_factory=list)  # (step, value)

    @property
    def steps_per_second(self) -> float:
        return len(self.losses) / self.seconds if self.seconds > 0 else float("nan")


def batch_indices(step: int, batch_size: int, num_samples: int, seed: int) -> Tensor:
    """Sample indices of batch ``step``: consecutive slices of per-epoch permutations.

    A pure function of its arguments (no iterator state), which is what makes resume exact.
    """
    start = step * batch_size
    positions = torch.arange(start, start + batch_size)
    epochs = positions // num_samples
    out = torch.empty(batch_size, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        perm = torch.randperm(num_samples, generator=torch.Generator().manual_seed(
            seed * 1_000_003 + epoch))
        chosen = epochs == epoch
        out[chosen] = perm[positions[chosen] % num_samples]
    return out


def collate(data: SampleSource, indices: Tensor, device: torch.device) -> dict[str, Tensor]:
    """Stack the samples at ``indices`` into one batch on ``device``."""
    items = [data[int(i)] for i in indices]
    return {key: torch.stack([item[key] for item in items]).to(device) for key in items[0]}


class Trainer:
    """Trains ``model`` on ``objective``, on the device the model is on; checkpoints into
    ``run_dir`` and resumes from it.

    ``run_dir=None`` trains without checkpoints (tests, throw-away runs). ``description`` is
    stored in every checkpoint's metadata (e.g. the network's preset and channel counts)
    so a checkpoint says what it holds. ``validation`` enables early stopping (module
    docstring); :meth:`final_model` is then the best-validated network. Inside an open
    process group it trains on every process together (module docstring).
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        config: TrainConfig,
        run_dir: Path | None = None,
        description: dict[str, Any] | None = None,
        progress: bool = True,
        validation: Validation | None = None,
    ) -> None:
        if config.patience is not None and validation is None:
            raise AnodiffError("TrainConfig.patience is set but nothing validates the model")
        self.config = config
        self.validation = validation
        self.model = model
        self.device = next(model.parameters()).device
        self.world: World = current_world()
        self.process_batch = per_process_batch(config.batch_size, self.world)
        self.network: nn.Module = model if not self.world.distributed else \
            DistributedDataParallel(model, device_ids=None if self.device.type == "cpu"
                                    else [self.device], static_graph=True)
        self.objective = objective
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.description = description or {}
        self.progress = progress
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.ema = None if config.ema_decay is None else EMA(self.model, config.ema_decay)
        self.generator = torch.Generator().manual_seed(rank_seed(config.seed, self.world))
        self.step = 0
        self.best_value = float("inf")
        self.best_step = 0
        self.best_state: dict[str, Tensor] | None = None
        self.stopped_early = False

    @property
    def checkpoints(self) -> Path | None:
        """The folder holding this run's checkpoints."""
        return None if self.run_dir is None else self.run_dir / "checkpoints"

    @property
    def inference_model(self) -> nn.Module:
        """The network to sample with: the EMA copy when there is one."""
        return self.model if self.ema is None else self.ema.model

    def final_model(self) -> nn.Module:
        """What training produced: the best-validated weights with a validation, else the
        :attr:`inference_model` (a copy in the first case; the live network in the second)."""
        if self.best_state is None:
            return self.inference_model
        best = copy.deepcopy(self.inference_model)
        best.load_state_dict(self.best_state)
        return best.eval()

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to ``lr`` over ``warmup_steps``, then constant."""
        return self.config.lr * min(1.0, (step + 1) / max(self.config.warmup_steps, 1))

    def fit(self, data: SampleSource) -> TrainHistory:
        """Train up to ``config.steps`` steps in total (fewer if validation stops it early),
        resuming from the latest checkpoint."""
        if len(data) == 0:
            raise AnodiffError("training data is empty")
        if self.world.distributed and self.world.main:
            log.info("training on %d processes: batch %d per process, %d in total",
                     self.world.size, self.process_batch, self.config.batch_size)
        with seeded(rank_seed(self.config.seed, self.world), self.device):
            return self._fit(data)

    def _fit(self, data: SampleSource) -> TrainHistory:
        self.resume()
        history = TrainHistory(start_step=self.step)
        self.model.train()
        bar = progress_bar(total=self.config.steps, initial=self.step,
                           enabled=self.progress and self.world.main, desc="train", unit="step")
        started = time.perf_counter()
        while self.step < self.config.steps and not self.stopped_early:
            loss = self.train_step(data)
            history.losses.append(loss)
            bar.update(1)
            postfix = {"loss": f"{loss:.4f}"}
            if self.validation is not None and (
                self.step % self.config.validation_interval == 0
                or self.step == self.config.steps
            ):
                history.validations.append((self.step, self.validate()))
                postfix["best_val"] = f"{self.best_value:.4f}@{self.best_step}"
            bar.set_postfix(postfix)
            if self.checkpoints is not None and (
                self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps
                or self.stopped_early
            ):
                self.save_checkpoint(loss)
        history.seconds = time.perf_counter() - started
        bar.close()
        self.model.eval()
        if self.best_state is not None:
            where = f"{self.run_dir}: " if self.run_dir is not None else ""
            end = f"stopped early at step {self.step}" if self.stopped_early else \
                f"ran all {self.step} steps"
            log.info("%sbest validation %.5g at step %d; %s", where, self.best_value,
                     self.best_step, end)
        return history

    def train_step(self, data: SampleSource) -> float:
        """One optimisation step on batch ``self.step`` (this process's share of it); returns
        its loss (the mean over processes)."""
        indices = batch_indices(self.step, self.config.batch_size, len(data), self.config.seed)
        share = slice(self.world.rank * self.process_batch,
                      (self.world.rank + 1) * self.process_batch)
        batch = collate(data, indices[share], self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        loss = self.objective(self.network, batch, self.generator)
        mean = mean_over_processes(loss.detach(), self.world)  # the same on every process
        if not torch.isfinite(mean):
            raise AnodiffError(f"training diverged at step {self.step}: loss is {mean.item()}; "
                               "lower the learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        return float(mean)

    def validate(self) -> float:
        """Score the network to sample with; keep its weights if they are the best so far,
        and stop once ``patience`` validations in a row brought no improvement. With several
        processes the main one scores and every process takes its value."""
        assert self.validation is not None
        model = self.inference_model
        value = math.nan
        if self.world.main:
            was_training = model.training
            model.eval()
            with torch.no_grad():
                value = float(self.validation(model))
            model.train(was_training)
        value = broadcast(value, self.world)
        if not math.isfinite(value):  # the model or the validation data is broken
            raise AnodiffError(f"validation at step {self.step} gave {value}")
        if value < self.best_value:
            self.best_value, self.best_step = value, self.step
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif self.config.patience is not None and (
            self.step - self.best_step >= self.config.patience * self.config.validation_interval
        ):
            self.stopped_early = True
        return value

    def save_checkpoint(self, last_loss: float) -> Path:
        """Write the full training state after ``self.step`` steps (atomically; with several
        processes the main one writes, with every process's random state, and all wait)."""
        assert self.checkpoints is not None
        states = gathered(self._random_state(), self.world)
        path = self.checkpoints / checkpoint_name(self.step)
        if self.world.main:
            self._write_checkpoint(last_loss, states)
        barrier(self.world)
        return path

    def _random_state(self) -> dict[str, Tensor]:
        """This process's random state: torch's global generator (dropout), the training
        generator and, on a GPU, the device's generator."""
        rng = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if self.device.type == "cuda":  # dropout on the GPU draws from the device's generator
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def _write_checkpoint(self, last_loss: float, states: list[dict[str, Tensor]]) -> Path:
        assert self.checkpoints is not None
        optim_tensors, optim_rest = flatten_optimizer(self.optimizer.state_dict())
        rng = {f"{key}{_rank_suffix(rank)}": value
               for rank, state in enumerate(states) for key, value in state.items()}
        groups = {"model": self.model.state_dict(), "optimizer": optim_tensors, "rng": rng}
        if self.ema is not None:
            groups["ema"] = self.ema.model.state_dict()
        if self.best_state is not None:
            groups["best"] = self.best_state
        meta = {
            "step": self.step,
            "loss": last_loss,
            "train_config": asdict(self.config),
            "objective": _describe(self.objective),
            "model": self.description,
            "optimizer": optim_rest,
            "stopped_early": self.stopped_early,
            "processes": self.world.size,
        }
        if self.best_state is not None:
            meta["best"] = {"step": self.best_step, "value": self.best_value}
        name = checkpoint_name(self.step)
        path = write_checkpoint(self.checkpoints / name, groups, meta)
        mark_latest(self.checkpoints, name)
        prune_checkpoints(self.checkpoints, self.config.keep_checkpoints)
        return path

    def resume(self) -> None:
        """Restore the latest checkpoint of ``run_dir``, if there is one (with several
        processes: the one the main process finds, on every process)."""
        if self.checkpoints is None:
            return
        found = newest_readable_checkpoint(self.checkpoints) if self.world.main else None
        chosen = broadcast(None if found is None else str(found[0]), self.world)
        if chosen is None:
            return
        if found is None:
            groups, meta = read_checkpoint(Path(chosen))
            found = Path(chosen), groups, meta
        path, groups, meta = found
        saved = meta.get("train_config", {})
        changed = sorted(k for k, v in asdict(self.config).items()
                         if k not in RESUMABLE_CHANGES and saved.get(k) != v)
        if changed:
            raise AnodiffError(
                f"{path}: this run was started with other settings ({', '.join(changed)}); "
                "use a new run folder, or the run's own settings to resume it"
            )
        load_state_into(self.model, groups["model"], path / "model.safetensors")
        if self.ema is not None:
            if "ema" not in groups:
                raise CheckpointError(f"{path}: has no EMA weights but EMA is enabled")
            load_state_into(self.ema.model, groups["ema"], path / "ema.safetensors")
        try:
            self.optimizer.load_state_dict(unflatten_optimizer(groups["optimizer"],
                                                               meta["optimizer"]))
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{path}: optimiser state does not fit ({err})") from err
        self.step = int(meta["step"])
        self._restore_random_state(groups["rng"], int(meta.get("processes", 1)), path)
        if "best" in groups:
            self.best_state = groups["best"]
            self.best_step = int(meta["best"]["step"])
            self.best_value = float(meta["best"]["value"])
        self.stopped_early = bool(meta.get("stopped_early", False))
        log.info("%s: resumed from step %d (%s)", self.run_dir or self.checkpoints, self.step,
                 path.name)

    def _restore_random_state(self, rng: dict[str, Tensor], processes: int, path: Path) -> None:
        """This process's saved random state; a process the checkpoint has none for (the run
        now has more processes) starts fresh streams from ``(seed, rank, step)``."""
        suffix = _rank_suffix(self.world.rank)
        if processes != self.world.size and self.world.main:
            log.warning("%s: written by %d process(es), resumed on %d: the data order is "
                        "kept, the other processes' noise draws are not (not bit-identical to "
                        "an uninterrupted run)", path, processes, self.world.size)
        if f"generator{suffix}" not in rng:
            seed = rank_seed(self.config.seed, self.world) + self.step
            torch.manual_seed(seed)
            self.generator.manual_seed(seed)
            return
        torch.set_rng_state(rng[f"torch{suffix}"])
        if self.device.type == "cuda" and f"cuda{suffix}" in rng:
            torch.cuda.set_rng_state(rng[f"cuda{suffix}"], self.device)
        self.generator.set_state(rng[f"generator{suffix}"])


def _rank_suffix(rank: int) -> str:
    """Key suffix of a process's random state in a checkpoint: none for rank 0 (so a
    one-process checkpoint reads as before), ``@r`` for rank r."""
    return f"@{rank}" if rank else ""


def _describe(objective: Objective) -> dict[str, Any]:
    describe = getattr(objective, "describe", None)
    return describe() if callable(describe) else {"objective": type(objective).__name__}


def load_weights(checkpoint: Path, model: nn.Module, use_ema: bool = True) -> dict[str, Any]:
    """Load a checkpoint's (EMA) weights into ``model`` for inference; returns its metadata.

    ``checkpoint`` is a checkpoint directory or a run directory (its latest checkpoint).
    """
    checkpoint = Path(checkpoint)
    if (checkpoint / "checkpoints").is_dir():
        found = latest_checkpoint(checkpoint / "checkpoints")
        if found is None:
            raise CheckpointError(f"{checkpoint}: the run has no finished checkpoint yet")
        checkpoint = found
    groups, meta = read_checkpoint(checkpoint)
    group = "ema" if use_ema and "ema" in groups else "model"
    load_state_into(model, groups[group], checkpoint / f"{group}.safetensors")
    model.eval()
    return meta


def train_noise_aware_classifier(
    classifier: nn.Module,
    data: SampleSource,
    schedule: NoiseSchedule,
    config: TrainConfig,
    *,
    max_level: int | None = None,
    run_dir: Path | None = None,
    description: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[nn.Module, TrainHistory]:
    """Train a classifier ``C(x_l, l)`` with cross-entropy on ``q_sample``d inputs.

    ``data`` items need ``image`` and ``label``. Levels are uniform in [1, max_level] (all
    of them by default), see :class:`~anodiff.diffusion.objectives.ClassifierObjective`.
    The same loop, checkpoints and resume as the diffusion model; returns the network to
    guide with (its EMA copy when ``config.ema_decay`` is set) and the history.
    """
    objective = ClassifierObjective(schedule, max_level=max_level)
    trainer = Trainer(classifier, objective, config, run_dir, description, progress)
    history = trainer.fit(data)
    return trainer.final_model(), history

