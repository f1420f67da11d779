"""The contract every method fulfils and the one localisation pipeline they all share.

A method is one module with one :class:`Detector` subclass, registered under its public
name (:func:`anodiff.methods.registry.register`). It writes only what is its own::

    @register("mymethod")
    class MyMethod(Detector):
        supervision = "unsupervised"
        description = "one line for `anodiff methods`"
        presets = {"quick": MyConfig(...), "cpu": MyConfig()}   # MyConfig(LocalizationConfig)
        counted = ("unet",)                  # the networks whose evaluations are the NFE

        def build(self, input_shape):        # networks and fitted-state placeholders
            super().build(input_shape)
            with seeded(self.config.seed):
                self.unet = build_diffusion_unet(...)
        def fit_parts(self, data):           # train what the method owns
            ...
        def step(self, x, generator):        # the method's inference on one batch
            return RawResult(anomaly_map=..., nfe=..., pseudo_healthy=...)

Everything else is shared and configured by :class:`LocalizationConfig`:

* ``fit(data)`` = :meth:`Detector.fit_parts` -> :meth:`Detector.calibrate` (on healthy
  validation slices, for every method: the healthy-FPR pixel threshold, which the
  ``healthy_fpr`` mask rule uses and the case score counts with, and the case threshold,
  the largest case score among the healthy validation cases);
* ``localize(images)`` = :meth:`Detector.validate` (one check of shape, channels, NaN and
  range for every method) -> :meth:`Detector.step` in batches of ``batch_size`` on the
  detector's device, with one seeded CPU generator, ``samples`` times per noise level of
  ``levels`` and combined by the ``aggregate`` rule (:mod:`anodiff.scoring.aggregation`)
  -> :func:`~anodiff.scoring.rules.postprocess_map` (smoothing, foreground) -> the mask
  rule -> the score rule (:mod:`anodiff.scoring.rules`).

A Detector is an ``nn.Module``: its networks are submodules and every fitted number
(thresholds, histograms, memory banks, one-class models) is a buffer, so ``state_dict()`` is
the checkpoint (:mod:`.persistence`) and ``.to(device)`` moves everything.
"""

from __future__ import annotations

import logging
import math
from abc import ABCMeta, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar, get_args, get_type_hints

import numpy as np
import torch
from torch import Tensor, nn

from anodiff.config import build as build_config
from anodiff.config import to_plain
from anodiff.data.datasets import open_dataset
from anodiff.data.recipe import InputRecipe, raw_batch
from anodiff.diffusion.checkpoint import write_checkpoint
from anodiff.diffusion.engine import inference
from anodiff.errors import AnodiffError
from anodiff.methods.results import AnomalyResult, Processed, RawResult
from anodiff.methods.training_data import calibration_images
from anodiff.scoring.aggregation import AGGREGATES, aggregate_maps
from anodiff.scoring.foreground import foreground
from anodiff.scoring.postprocess import PostProcess
from anodiff.scoring.rules import (
    MASK_RULES,
    SCORE_RULES,
    image_scores,
    otsu_masks,
    postprocess_map,
)
from anodiff.scoring.thresholds import above_threshold, case_shares, healthy_fpr_threshold

SUPERVISION = ("supervised", "semi", "weak", "self", "unsupervised", "none")
# The layout Detector.save writes: one tensor group, the state_dict (version 1 had one file
# per network and one of fitted values; anodiff.methods.persistence reads both).
CHECKPOINT_FORMAT = 2
STATE_FILE = "detector"
log = logging.getLogger(__name__)
# How far outside [0, 1] an input may stray (resampling round-off) before it is refused.
RANGE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class LocalizationConfig:
    """The settings every method shares: the post-processing, mask and score rules, the
    batching and the seed (:mod:`anodiff.scoring.rules`). A method's config inherits these
    (overriding defaults where its paper says otherwise) and adds its own fields.

    ``smoothing_sigma``: Gaussian smoothing of the map in pixels (0: none). ``mask``:
    ``otsu`` (per image), ``healthy_fpr`` (one threshold calibrated at training so that a
    fraction ``fpr`` of the foreground pixels of ``calibration_images`` healthy validation
    slices reach it) or ``own`` (the method's rule, where it has one). ``score``:
    ``percentile`` (``score_percentile`` of the foreground map), ``mean`` (of the whole map)
    or ``top_k`` (mean of the ``score_top_k`` highest foreground values). ``batch_size``:
    images per network batch. ``seed``: seeds the network initialisation, the calibration
    pick and the noise of ``localize`` (each part's ``train.seed`` seeds its training).

    ``samples``: draws of the step per image and noise level; ``levels``: noise levels to
    run the step at (empty: the method's own ``level``; only for methods with one);
    ``aggregate``: how the draws become one map (:mod:`anodiff.scoring.aggregation`:
    ``mean`` of the maps, or ``zscore``, the input's pixel-wise Mahalanobis distance to the
    reconstructions, for methods that reconstruct). The NFE per image is the sum over draws.
    """

    smoothing_sigma: float = 0.0
    mask: Literal["otsu", "healthy_fpr", "own"] = "otsu"
    fpr: float = 0.01
    calibration_images: int = 64
    score: Literal["percentile", "mean", "top_k"] = "percentile"
    score_percentile: float = 99.0
    score_top_k: int = 50
    batch_size: int = 32
    seed: int = 0
    samples: int = 1
    levels: tuple[int, ...] = ()
    aggregate: Literal["mean", "zscore"] = "mean"

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Refuse values that cannot work, naming the setting (runs at construction; a
        method's config extends it with ``super().check()``)."""
        if self.mask not in MASK_RULES:
            raise AnodiffError(f"mask must be one of {list(MASK_RULES)}, got {self.mask!r}")
        if self.score not in SCORE_RULES:
            raise AnodiffError(f"score must be one of {list(SCORE_RULES)}, got {self.score!r}")
        if not 0 < self.fpr < 1:
            raise AnodiffError(f"fpr must be in (0, 1), got {self.fpr}")
        if not 0 <= self.score_percentile <= 100:
            raise AnodiffError(f"score_percentile must be in [0, 100], got "
                               f"{self.score_percentile}")
        if not self.smoothing_sigma >= 0:  # also refuses NaN
            raise AnodiffError(f"smoothing_sigma must be >= 0, got {self.smoothing_sigma}")
        for name in ("calibration_images", "score_top_k", "batch_size", "samples"):
            if getattr(self, name) < 1:
                raise AnodiffError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.aggregate not in AGGREGATES:
            raise AnodiffError(f"aggregate must be one of {list(AGGREGATES)}, got "
                               f"{self.aggregate!r}")
        if len(set(self.levels)) != len(self.levels) or any(v < 1 for v in self.levels):
            raise AnodiffError(f"levels must be distinct noise levels >= 1, got "
                               f"{list(self.levels)}")
        if self.aggregate == "zscore" and self.samples * max(len(self.levels), 1) < 2:
            raise AnodiffError("aggregate zscore compares the input with several "
                               "reconstructions; set samples >= 2 or two or more levels")


@dataclass(frozen=True)
class MaskTrainedConfig(LocalizationConfig):
    """The settings of a method that learns from lesion masks (supervised or
    semi-supervised) and maps a lesion probability: ``labelled``, the number of train
    slices whose masks it may use (None: every train slice's), picked with ``label_seed``
    one case at a time among the slices with a lesion
    (:func:`~anodiff.methods.training_data.labelled_training_data`), so that methods given
    the same ``labelled`` and ``label_seed`` see the same masks; ``probability``, where its
    own mask rule flags a pixel."""

    labelled: int | None = None
    label_seed: int = 0
    probability: float = 0.5

    def check(self) -> None:
        super().check()
        if self.labelled is not None and self.labelled < 1:
            raise AnodiffError(f"labelled must be >= 1 slices (or null: all), got "
                               f"{self.labelled}")
        if not 0 < self.probability < 1:
            raise AnodiffError(f"probability must be in (0, 1), got {self.probability}")


ConfigT = TypeVar("ConfigT", bound=LocalizationConfig)


def check_images(name: str, images: Any, input_shape: tuple[int, ...]) -> Tensor:
    """``images`` as a float tensor (N, C, H, W) on the CPU, refused with one clear line when
    they cannot be what the detector was fitted on: another shape or channel count, NaN or
    infinite values, intensities outside [0, 1] (a tolerance of 1e-4 for resampling
    round-off, clipped)."""
    try:
        x = torch.as_tensor(images, dtype=torch.float32, device="cpu")
    except (TypeError, ValueError, RuntimeError) as err:
        raise AnodiffError(f"{name}: images must be a numeric array or tensor (N, C, H, W), "
                           f"got {type(images).__name__} ({err})") from err
    channels, *spatial = input_shape
    expected = f"(N, {', '.join(map(str, input_shape))})"
    if x.dim() == 2 and channels == 1 and tuple(x.shape) == tuple(spatial):
        x = x[None, None]  # one grey slice (H, W)
    elif x.dim() == 3 and tuple(x.shape) == tuple(input_shape):
        x = x[None]  # one slice (C, H, W)
    elif x.dim() == 3 and channels == 1 and tuple(x.shape[1:]) == tuple(spatial):
        x = x[:, None]  # a stack of grey slices (N, H, W)
    if x.dim() != 4:
        raise AnodiffError(f"{name}: expected images {expected}, one slice "
                           f"{tuple(input_shape)}"
                           + (f" or {tuple(spatial)}" if channels == 1 else "")
                           + f", got shape {tuple(x.shape)}; a volume must be sliced and "
                           "resized first (anodiff detect does it, in Python "
                           "anodiff.data.find_inputs + load_input_case)")
    if x.shape[1] != channels:
        raise AnodiffError(f"{name}: the model takes {channels} channel(s), got {x.shape[1]} "
                           f"(images of shape {tuple(x.shape)}, expected {expected})")
    if tuple(x.shape[2:]) != tuple(spatial):
        raise AnodiffError(f"{name}: the model takes {' x '.join(map(str, spatial))} slices, "
                           f"got {tuple(x.shape)}; resample to the training size first")
    if len(x) == 0:
        raise AnodiffError(f"{name}: no images given (N = 0)")
    if not torch.isfinite(x).all():
        raise AnodiffError(f"{name}: the images contain NaN or infinite values")
    low, high = float(x.min()), float(x.max())
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise AnodiffError(f"{name}: intensities must lie in [0, 1] (normalised as for "
                           f"training), got [{low:.4g}, {high:.4g}]")
    return x.clamp(0, 1)


class Detector(nn.Module, Generic[ConfigT], metaclass=ABCMeta):
    """An anomaly localiser: ``fit`` on a dataset, ``localize`` images in [0, 1].

    Constructed from one frozen config (a preset, possibly with overrides). Subclasses
    create their networks and fitted-state buffers in :meth:`build` (called with the input
    shape by ``fit`` and by :func:`anodiff.load`), train them in :meth:`fit_parts` and
    compute one batch in :meth:`step` (module docstring). ``counted`` names the networks
    whose evaluations ``nfe`` counts (the diffusion networks; a guidance classifier's are
    not counted). ``state_free_settings`` are the settings that the fitted state (buffers
    and calibrated threshold) does not depend on, so :meth:`retuned` may change them freely.
    ``level_setting`` names the config field that sets the test-time noise level (None: the
    method has none, so ``levels`` does not apply); ``reconstructs`` says whether the step
    returns pseudo-healthy images (``aggregate: zscore`` needs them); ``aggregatable`` is
    False for a method whose own mask rule reads per-draw extras (no ``samples``/``levels``);
    ``bfloat16_pays`` is False for a method whose networks were measured slower under
    bfloat16 autocast than in float32, so the engine's ``auto`` precision keeps float32 for
    it (an explicit ``--precision bfloat16`` still applies).
    """

    name: ClassVar[str]
    supervision: ClassVar[str]
    description: ClassVar[str]
    presets: ClassVar[dict[str, Any]]  # preset name -> the method's frozen config
    counted: ClassVar[tuple[str, ...]] = ()
    state_free_settings: ClassVar[frozenset[str]] = frozenset()
    level_setting: ClassVar[str | None] = None
    reconstructs: ClassVar[bool] = False
    aggregatable: ClassVar[bool] = True
    bfloat16_pays: ClassVar[bool] = True
    # Format-1 checkpoint keys -> current state_dict keys ("" drops one); see .persistence.
    legacy_keys: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Name a subclass after itself until :func:`~.registry.register` names it."""
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def __init__(self, config: ConfigT) -> None:
        super().__init__()
        self.config = config
        self.input_shape: tuple[int, ...] | None = None  # (C, H, W) the method was fitted on
        # Where training checkpoints go (set by `anodiff train`); fit resumes from it.
        self.run_dir: Path | None = None
        # How the training slices were normalised and sized (None: fitted on arrays).
        self.recipe: InputRecipe | None = None
        # The map steps of the shared post-processing the thresholds were calibrated on
        # (anodiff export --postprocess ... --refit): none unless calibrate_on was told so.
        self.map_steps = PostProcess()
        # The healthy_fpr mask rule's threshold: +inf (nothing flagged) until calibrated.
        self.register_buffer("threshold", torch.tensor(math.inf))
        # For every mask rule: the pixel threshold at fpr that case scores count with, and
        # the largest case score of the healthy validation cases (+inf: not calibrated).
        self.register_buffer("flag_threshold", torch.tensor(math.inf))
        self.register_buffer("case_threshold", torch.tensor(math.inf))
        # Marks the device the detector lives on, also before its networks exist.
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)
        if config.mask == "own" and type(self).own_mask is Detector.own_mask:
            raise AnodiffError(f"{self.name}: has no mask rule of its own; use mask otsu or "
                               "healthy_fpr")
        self._check_aggregation(config)

    # --- building and fitting ------------------------------------------------------------
    @classmethod
    def with_sequences(cls, config: ConfigT, sequences: Sequence[str]) -> ConfigT:
        """``config`` with settings that name a sequence (``channel: flair``) replaced by the
        channel index in ``sequences``, the data's channel order; an unknown name is an
        error listing the sequences. Most methods name none and return ``config``."""
        return config

    @property
    def device(self) -> torch.device:
        """The device the detector's networks and buffers are on (``.to()`` moves it)."""
        return self._device_anchor.device

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create the networks and fitted-state buffers for inputs of ``input_shape``
        (C, H, W); subclasses call ``super().build(input_shape)`` first."""
        self.input_shape = tuple(int(v) for v in input_shape)

    def prepare(self, input_shape: tuple[int, ...]) -> None:
        """:meth:`build` and put what it made on the detector's device."""
        self.build(input_shape)
        self.to(self.device)

    def fit(self, data: Any) -> Detector:
        """Train every part the method needs under its supervision regime, then calibrate.

        ``data``: a :class:`~anodiff.data.SliceDataset`, a dataset folder (opened with
        :func:`~anodiff.data.open_dataset`'s defaults: 64 x 64 slices, every sequence; open
        it yourself for other options), an indexable of dicts with ``image`` (and ``label``)
        or a tensor of healthy images (N, C, H, W). Settings naming a sequence are resolved
        against ``data.sequences`` first (:meth:`with_sequences`)."""
        if isinstance(data, str | Path):
            data = open_dataset(data)
        self.recipe = InputRecipe.of(data)
        sequences = getattr(data, "sequences", None)
        if sequences is not None:
            self.config = self.with_sequences(self.config, sequences)
        self.fit_parts(data)
        self.calibrate(data)
        return self

    @abstractmethod
    def fit_parts(self, data: Any) -> None:
        """Train what the method owns (calls :meth:`prepare` once the input shape is known)."""

    def fit_normality(self, data: Any) -> None:
        """Refit what the method fits on healthy training slices after its networks are
        trained (InvDetect: its one-class model, tau and lambda), so that settings those
        depend on may change without retraining. Most methods have nothing here."""

    def calibrate(self, data: Any) -> None:
        """Calibrate on ``calibration_images`` healthy validation slices of ``data`` (the
        ``val`` split; healthy training slices when there is none), taken from every case in
        turn (:func:`~anodiff.methods.training_data.calibration_images`): the pixel threshold
        that a fraction ``fpr`` of their foreground reaches (the ``healthy_fpr`` mask rule's
        ``threshold``, and ``flag_threshold`` for every rule), and ``case_threshold``, the
        largest share of a case's foreground reaching it among those cases (estimated from
        the slices picked of each). A case scoring above ``case_threshold`` is flagged more
        than any healthy validation case was (:meth:`case_score`). Where no healthy
        foreground exists to calibrate on, the ``healthy_fpr`` rule is an error and the
        other rules go without a case score (a warning says so)."""
        try:
            images, cases = calibration_images(data, self.config.calibration_images,
                                               self.config.seed)
            healthy = self.process(images)
            self.calibrate_on(healthy.anomaly_map.float().cpu().numpy(),
                              healthy.foreground.cpu().numpy(), cases, PostProcess())
        except AnodiffError as err:
            if self.config.mask == "healthy_fpr":
                raise
            log.warning("%s: no case score (%s)", self.name, err)

    def calibrate_on(self, maps: np.ndarray, fg: np.ndarray, cases: Sequence[str],
                     map_steps: PostProcess) -> tuple[float, float]:
        """Set the thresholds from healthy maps (N, H, W), filtered by ``map_steps`` (which
        the detector then keeps, :meth:`localize` ``one_case``), their foreground and each
        slice's case: the pixel threshold a fraction ``fpr`` of the foreground reaches (the
        ``healthy_fpr`` rule's ``threshold``; ``flag_threshold`` for every rule) and the case
        threshold, the largest case share reaching it. Returns both. :meth:`calibrate` gives
        it the maps of its picked slices; ``anodiff export --postprocess`` the filtered maps
        of every healthy validation slice."""
        self.map_steps = map_steps.map_steps()
        pixel = healthy_fpr_threshold(maps, self.config.fpr, fg)
        if self.config.mask == "healthy_fpr":
            self.threshold.fill_(pixel)
        self.flag_threshold.fill_(pixel)
        case = max(case_shares(above_threshold(maps, pixel, fg), fg, cases).values())
        self.case_threshold.fill_(case)
        return pixel, case

    def refit(self, data: Any, calibrate: bool = True) -> None:
        """Refit everything fitted after training (:meth:`fit_normality`, :meth:`calibrate`)
        on ``data`` with the current settings; the networks stay as they are. A detector
        saved without an input recipe takes ``data``'s. ``calibrate=False`` leaves the
        thresholds to the caller (``anodiff export --postprocess`` calibrates them on
        filtered maps instead, :func:`~anodiff.workflows.export.calibrate_filtered`)."""
        self.check_fitted()
        self.recipe = self.recipe or InputRecipe.of(data)
        self.fit_normality(data)
        if calibrate:
            self.calibrate(data)

    # --- localisation --------------------------------------------------------------------
    def localize(self, images: Any, normalise: bool = False, one_case: bool = False
                 ) -> AnomalyResult:
        """Maps, scores, masks (and pseudo-healthy images, uncertainty) for images
        (N, C, H, W) in [0, 1] (or one slice (C, H, W), one grey slice (H, W), grey slices
        (N, H, W)): :meth:`process` -> mask rule -> score rule.

        ``normalise=True`` takes raw intensities of any in-plane size instead and applies
        the normalisation and resizing the training slices had (:meth:`normalised`); the
        maps are then on the model's grid (``anodiff detect`` maps back to a file's own).
        ``one_case=True`` says the images are one case's consecutive axial slices (inferior
        -> superior): the map steps the thresholds were calibrated with (``map_steps``, set
        by ``anodiff export --postprocess interslice_median=3 --refit DATA``; :func:`load`
        says so) then filter the maps across them before the mask and score rules, as
        ``anodiff detect`` does; without it such a detector's maps stay unfiltered, and its
        masks and scores are not at the calibrated false-positive rate."""
        if normalise:
            images = self.normalised(images)
        done = self.process(images)
        maps, fg = done.anomaly_map, done.foreground
        if one_case and self.map_steps.changes():
            maps = self.case_maps(maps, fg)
        return AnomalyResult(anomaly_map=maps, score=self.scores(maps, fg), nfe=done.raw.nfe,
                             pseudo_healthy=done.raw.pseudo_healthy,
                             mask=self.masks(maps, fg, done.raw), uncertainty=done.uncertainty)

    def case_maps(self, maps: Tensor, fg: Tensor) -> Tensor:
        """One case's maps (N, H, W; its slices in order) filtered by :attr:`map_steps`."""
        filtered = self.map_steps.maps(maps.float().cpu().numpy(), fg.cpu().numpy(),
                                       ["case"] * len(maps))
        return torch.from_numpy(filtered).to(maps.device)

    def normalised(self, raw: Any) -> Tensor:
        """Raw images -> model inputs (N, C, H, W) in [0, 1], as training made them (the
        recorded :class:`~anodiff.data.recipe.InputRecipe`): for a model trained on volumes,
        each sequence normalised over all the slices given together, so pass one volume's
        axial slices (N, C, H, W), or (N, H, W) for one sequence (inferior -> superior and
        consecutive for a 2.5-D model, whose context channels are made from them); for a
        model trained on 2-D images, each image on its own."""
        self.check_fitted()
        assert self.input_shape is not None
        if self.recipe is None:
            raise AnodiffError(f"{self.name}: normalise=True needs the normalisation the "
                               "detector was trained with, which it does not know (fitted on "
                               "arrays, or saved by an earlier anodiff); normalise the images "
                               "to [0, 1] yourself and leave normalise off")
        batch = raw_batch(self.name, raw, self.recipe.raw_channels or self.input_shape[0])
        return torch.from_numpy(self.recipe.apply(batch))

    def process(self, images: Any) -> Processed:
        """validate -> step (batched) -> shared post-processing (smoothing, foreground): what
        the mask and score rules, and every calibration, start from."""
        x = self.validate(images)
        raw = self.run(x)
        fg = self.brain(x)
        sigma = self.config.smoothing_sigma
        uncertainty = None if raw.uncertainty is None else \
            postprocess_map(raw.uncertainty, fg, sigma)
        return Processed(raw, fg, postprocess_map(raw.anomaly_map, fg, sigma), uncertainty)

    def brain(self, x: Tensor) -> Tensor:
        """The foreground (N, H, W) of images ``x``: of the slice's own channels where the
        inputs carry neighbouring slices as context channels (2.5-D; the recorded
        :class:`~anodiff.data.recipe.InputRecipe`), so maps and masks stay in the slice's
        brain."""
        own = self.recipe.raw_channels if self.recipe is not None and self.recipe.context \
            else x.shape[1]
        return foreground(x[:, :own])

    def validate(self, images: Any) -> Tensor:
        """The images as a CPU float tensor, checked once for every method (
        :func:`check_images`)."""
        self.check_fitted()
        assert self.input_shape is not None
        return check_images(self.name, images, self.input_shape)

    @torch.no_grad()
    def run(self, x: Tensor) -> RawResult:
        """:meth:`step` over batches of ``batch_size`` images on the detector's device, with
        one CPU generator seeded by ``seed`` and drawn from batch after batch (the same input
        gives the same result on any device); per batch, ``samples`` draws at each of
        ``levels``, combined by the ``aggregate`` rule."""
        generator = torch.Generator().manual_seed(self.config.seed)
        variants = self._level_variants()
        results = []
        # precision and network batch (diffusion.engine)
        with inference(self.device, bfloat16_pays=self.bfloat16_pays):
            for chunk in x.split(self.config.batch_size):
                chunk = chunk.to(self.device)
                draws = [v.step(chunk, generator) for v in variants
                         for _ in range(self.config.samples)]
                results.append(self._aggregate(chunk, draws).cpu())
        return RawResult.concat(results)

    def _level_variants(self) -> list[Detector]:
        """The detectors whose steps make the draws: this one, or one sharing its networks
        per noise level of ``levels``."""
        if not self.config.levels:
            return [self]
        assert self.level_setting is not None  # refused at construction otherwise
        return [self.retuned(keep_state=True, **{self.level_setting: level})
                for level in self.config.levels]

    def _aggregate(self, x: Tensor, draws: list[RawResult]) -> RawResult:
        """One result from the draws of a batch: the ``aggregate`` rule's map, the mean
        reconstruction, the summed NFE, and the standard deviation of the draws' maps as the
        uncertainty (one draw is returned as it is)."""
        if len(draws) == 1:
            return draws[0]
        maps = torch.stack([d.anomaly_map for d in draws])
        recons = None if draws[0].pseudo_healthy is None else \
            torch.stack([d.pseudo_healthy for d in draws])  # type: ignore[misc]
        return RawResult(anomaly_map=aggregate_maps(x, maps, recons, self.config.aggregate,
                                                    self.brain(x)),
                         nfe=sum(d.nfe for d in draws),
                         pseudo_healthy=None if recons is None else recons.mean(0),
                         uncertainty=maps.std(0, correction=0))

    def _check_aggregation(self, config: LocalizationConfig) -> None:
        """Refuse ``samples``, ``levels`` or ``aggregate`` settings this method cannot use."""
        several = config.samples > 1 or bool(config.levels)
        if several and not self.aggregatable:
            raise AnodiffError(f"{self.name}: its own mask rule reads each draw's values, so "
                               "samples and levels must stay at 1 and []")
        if config.levels and self.level_setting is None:
            raise AnodiffError(f"{self.name}: has no test-time noise level, so levels does "
                               "not apply; use samples for several draws")
        if config.aggregate == "zscore" and not self.reconstructs:
            raise AnodiffError(f"{self.name}: aggregate zscore needs pseudo-healthy "
                               "reconstructions, which this method does not make; use mean")

    @abstractmethod
    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        """The method's own inference on one batch ``x`` (N, C, H, W) in [0, 1], on the
        detector's device; random draws come from ``generator`` (a CPU generator)."""

    def masks(self, maps: Tensor, fg: Tensor, raw: RawResult) -> Tensor:
        """The configured mask rule on post-processed maps (N, H, W)."""
        masks = self.rule_masks(maps, fg)
        return self.own_mask(maps, fg, raw) if masks is None else masks

    def rule_masks(self, maps: Tensor, fg: Tensor) -> Tensor | None:
        """The shared mask rules (``otsu``, ``healthy_fpr``) on post-processed maps (N, H, W);
        None for ``mask: own``, which needs the method's raw result."""
        if self.config.mask == "otsu":
            return otsu_masks(maps, fg)
        if self.config.mask == "healthy_fpr":
            return above_threshold(maps, float(self.threshold), fg)
        return None

    def own_mask(self, maps: Tensor, fg: Tensor, raw: RawResult) -> Tensor:
        """The method's own mask rule (``mask: own``); only methods that have one override."""
        raise AnodiffError(f"{self.name} has no mask rule of its own")

    def case_score(self, maps: Tensor, fg: Tensor) -> tuple[float, float] | None:
        """The case score of one case's post-processed maps (N, H, W): the share of its
        foreground above ``flag_threshold``, with ``case_threshold`` to compare it with;
        None when the detector has no case calibration (saved by an earlier anodiff, or
        retuned with settings the calibration depends on: :meth:`refit` makes it)."""
        if not bool(torch.isfinite(self.case_threshold)):
            return None
        flagged = above_threshold(maps, float(self.flag_threshold), fg)
        share = float(flagged.sum()) / max(int(fg.sum()), 1)
        return share, float(self.case_threshold)

    def scores(self, maps: Tensor, fg: Tensor) -> Tensor:
        """The configured score rule on post-processed maps (N, H, W)."""
        c = self.config
        return image_scores(maps, fg, c.score, percentile=c.score_percentile,
                            top_k=c.score_top_k)

    # --- state ---------------------------------------------------------------------------
    def check_fitted(self) -> None:
        """Refuse to localise with an untrained detector (a clear error, not garbage maps)."""
        if self.input_shape is None:
            raise AnodiffError(f"{self.name}: call fit() (or anodiff.load a saved run) first")

    def is_calibrated(self) -> bool:
        """Whether the fitted state depends on the settings: a calibrated threshold, or what
        :meth:`fitted_state` says."""
        return bool(torch.isfinite(self.threshold)) or self.fitted_state()

    def fitted_state(self) -> bool:
        """Whether the method holds fitted values (besides weights) that depend on its
        test-time settings (InvDetect's one-class model, tau, lambda)."""
        return False

    def retuned(self, *, keep_state: bool = False, **settings: Any) -> Detector:
        """A copy with changed test-time settings that shares this detector's networks and
        fitted state.

        Only settings that do not shape what was trained may change (a setting holding a
        nested config, such as a network part with its training, may not): this is how a
        sensitivity study or an export fixes L, s or the solver without retraining.

        Fitted values other than weights (a threshold calibrated on healthy maps, a
        one-class model) were computed with the current settings and would be stale, so a
        detector that has them refuses to change any setting outside its
        ``state_free_settings``, unless ``keep_state=True`` accepts that (then
        :meth:`refit` brings them up to date).
        """
        self.check_fitted()
        check_test_settings(self.name, self.config, settings)
        stale = sorted(set(settings) - self.state_free_settings - _RULE_SETTINGS)
        if self.is_calibrated() and stale and not keep_state:
            raise AnodiffError(
                f"{self.name}: its fitted values were calibrated with the current settings "
                f"and would be stale after changing {stale}; refit them (anodiff export "
                "--refit DATA) or train with these settings")
        other = self.sharing(build_config(type(self.config),
                                          {**to_plain(self.config), **settings}, self.name))
        if stale and not keep_state:  # the case calibration holds for the old settings only
            for key in ("flag_threshold", "case_threshold"):
                other.register_buffer(key, torch.full_like(getattr(self, key), math.inf))
        if other.config.mask == "healthy_fpr" and not keep_state and \
                not torch.isfinite(other.threshold):
            raise AnodiffError(f"{self.name}: mask healthy_fpr needs a threshold calibrated "
                               "on healthy slices; refit with anodiff export --refit DATA")
        return other

    def sharing(self, config: ConfigT) -> Detector:
        """A detector of ``config`` that shares this one's networks, fitted buffers and input
        recipe (:meth:`retuned` checks which settings may change first; a distillation adds
        a student part this way)."""
        other = type(self)(config)
        other.input_shape, other.recipe = self.input_shape, self.recipe
        other.map_steps = self.map_steps
        for key, module in self.named_children():
            setattr(other, key, module)
        saved = self.state_dict(keep_vars=True)
        for key, buffer in self.named_buffers(recurse=False):
            other.register_buffer(key, buffer, persistent=key in saved)
        return other

    def save(self, path: str | Path) -> Path:
        """Write the ``state_dict`` (networks and fitted state, one safetensors file), the
        config and the input shape into directory ``path`` (atomically; :func:`anodiff.load`
        reads it back)."""
        self.check_fitted()
        meta = {"format": CHECKPOINT_FORMAT, "method": self.name,
                "config": to_plain(self.config), "input_shape": list(self.input_shape or ())}
        if self.recipe is not None:
            meta["input_recipe"] = self.recipe.to_dict()
        if self.map_steps.changes():
            meta["map_steps"] = self.map_steps.changes()
        return write_checkpoint(Path(path), {STATE_FILE: self.state_dict()}, meta)


def check_test_settings(name: str, config: Any, settings: Iterable[str]) -> None:
    """Refuse, naming method ``name``, settings its ``config`` does not have or that describe
    trained parts (a nested config): what :meth:`Detector.retuned` may not change, checked
    before anything is loaded by callers that only know the method."""
    names = {f.name for f in fields(config)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise AnodiffError(f"{name}: unknown setting(s) {unknown}")
    trained = sorted(k for k in settings if _describes_a_part(type(config), k))
    if trained:
        raise AnodiffError(f"{name}: {trained} describe trained parts; retrain "
                           "instead of changing them")


def _describes_a_part(config_type: type, name: str) -> bool:
    """Whether setting ``name`` holds a nested config (a trained part), also where it may
    be None (a distilled student that a run does not have)."""
    hint = get_type_hints(config_type)[name]
    return any(is_dataclass(option) for option in (hint, *get_args(hint)))


# Settings of the shared rules that no fitted value depends on (a calibrated threshold
# depends on fpr and smoothing, which are therefore not among them).
_RULE_SETTINGS = frozenset({"mask", "score", "score_percentile", "score_top_k", "batch_size"})
