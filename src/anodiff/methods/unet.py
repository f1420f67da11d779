"""``unet``: the plain supervised segmentation baseline (the review Sec. 5.1).

The review compares diffusion segmentation with "the classic nnU-Net approach" (Isensee
2021) and reports, after Wolleb 2022c, that diffusion misses small lesions more often. This
is that reference, kept plain so the comparison is about the diffusion part: a residual
MONAI ``UNet`` (Ronneberger 2015's encoder-decoder with skip connections, residual units)
trained on the train-split slices and their lesion masks (healthy slices included, with
empty masks) with MONAI's ``DiceCELoss`` — the Dice + cross-entropy loss of nnU-Net, here
with one sigmoid output (lesion or not) and the Dice taken over the batch, so that slices
without a lesion add no undefined per-slice Dice. It shares the diffusion models' training
loop (EMA, checkpoints, exact resume). Not nnU-Net itself: no self-configuration, no
augmentation, no 3-D, no cascade; the ``paper`` preset is the nnU-Net 2-D depth and width.

The map is the lesion probability; the method's own mask (``mask: own``, the default) is
"probability reaches ``probability``" (0.5), and the shared rules (Otsu, healthy-FPR) apply
as for every other method. One network evaluation per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from monai.networks.nets import UNet
from torch import Tensor

from anodiff.diffusion.seeding import seeded
from anodiff.diffusion.training import ArrayDataset, TrainConfig, Trainer
from anodiff.errors import AnodiffError
from anodiff.methods.base import Detector, MaskTrainedConfig
from anodiff.methods.parts import SegmentationObjective
from anodiff.methods.registry import register
from anodiff.methods.results import RawResult
from anodiff.methods.training_data import segmentation_training_data


@dataclass(frozen=True)
class UNetConfig(MaskTrainedConfig):
    """Width and depth of the UNet (``channels`` per level, each level after the first
    halving the size), residual units per level, its training, and the probability at
    which the own mask rule flags a pixel."""

    channels: tuple[int, ...] = (16, 32, 64, 128)
    residual_units: int = 2
    dropout: float = 0.0
    # 4,000 steps: on the tumour track the Dice + CE loss sat on a plateau (1.6 -> 1.1) for
    # 2,400 steps before dropping to 0.05 (docs/BENCHMARKS.md, issue 21); 1,500 stopped on it.
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=4000, batch_size=32, lr=1e-3, warmup_steps=50, ema_decay=0.99))
    mask: Literal["otsu", "healthy_fpr", "own"] = "own"
    batch_size: int = 64

    def check(self) -> None:
        super().check()
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            raise AnodiffError(f"channels must list two or more positive widths, got "
                               f"{list(self.channels)}")
        if not 0 <= self.dropout < 1:
            raise AnodiffError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.residual_units < 0:
            raise AnodiffError(f"residual_units must be >= 0, got {self.residual_units}")


@register("unet")
class UNetDetector(Detector[UNetConfig]):
    supervision = "supervised"
    description = "plain UNet trained on lesion masks with Dice + cross-entropy (baseline)"
    counted = ("net",)
    state_free_settings = frozenset({"probability"})
    presets = {
        "quick": UNetConfig(channels=(8, 16), residual_units=1, train=TrainConfig(
            steps=60, batch_size=8, lr=3e-3, warmup_steps=5, ema_decay=None),
            calibration_images=16),
        "cpu": UNetConfig(),
        "fast": UNetConfig(),  # one network evaluation per slice already: the cpu preset
        # nnU-Net's 2-D network for 64 x 64 inputs: 32 channels doubling per level, four
        # levels; its training (SGD, poly schedule, 1000 epochs) is not reproduced.
        "paper": UNetConfig(channels=(32, 64, 128, 256, 512), train=TrainConfig(
            steps=20_000, batch_size=64, lr=1e-3, warmup_steps=0, ema_decay=None,
            checkpoint_every=1000)),
    }

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        c = self.config
        with seeded(c.seed):
            self.net = UNet(spatial_dims=2, in_channels=self.input_shape[0], out_channels=1,
                            channels=c.channels, strides=(2,) * (len(c.channels) - 1),
                            num_res_units=c.residual_units, dropout=c.dropout)

    def fit_parts(self, data: Any) -> None:
        """Train the UNet on the train slices and their masks (checkpoints under
        ``run_dir``)."""
        images, masks = segmentation_training_data(self.name, data, self.config.labelled,
                                                   self.config.label_seed)
        self.prepare(tuple(images.shape[1:]))
        trainer = Trainer(self.net, SegmentationObjective(), self.config.train, self.run_dir,
                          {"method": self.name, "input_shape": self.input_shape})
        trainer.fit(ArrayDataset(images, masks=masks))
        self.net = trainer.inference_model.eval()

    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        """The lesion probability map, one network evaluation."""
        return RawResult(anomaly_map=torch.sigmoid(self.net(x))[:, 0], nfe=1)

    def own_mask(self, maps: Tensor, fg: Tensor, raw: RawResult) -> Tensor:
        """Pixels whose lesion probability reaches ``probability``, inside the foreground."""
        return (maps >= self.config.probability) & fg
