"""Noise predictors and the guidance wrappers that compose around them.

Every sampler takes one callable ``eps_fn(x, level, y=None) -> eps``. Conditioning and
guidance are wrappers that take an ``eps_fn`` and return a new one, so a method states its
recipe in one line and every sampler (DDIM, DDPM, DPM-Solver++, either direction) works
with every recipe::

    eps = unet_eps(unet)                                   # plain model
    eps = concat_condition(eps, cond=x_corrupted)          # Baugh 2024, FNDM
    eps = class_conditioned(eps, y=healthy, cfg_scale=3, null_label=2)   # Sanchez 2022
    eps = classifier_guided(eps, classifier_logits(clf), y=healthy, scale=100, schedule=s)

``level`` is an (N,) integer tensor of levels in [0, T] (see :mod:`.schedule`). Each
predictor carries ``nfe_per_call``: how many evaluations of the diffusion network one
call costs per image (2 for classifier-free guidance), which the samplers multiply by the
number of calls to report network evaluations (NFE) per image.

The wrappers are small classes with lower-case names because they are used like
functions (``eps = class_conditioned(eps, ...)``) and carry ``nfe_per_call``.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import Tensor, nn

from anodiff.diffusion.engine import evaluate_network
from anodiff.diffusion.schedule import NoiseSchedule

Prediction = Literal["eps", "x0"]


class EpsFn(Protocol):
    """A noise predictor ``eps(x_l, l, y)``; ``nfe_per_call`` network evaluations per image."""

    nfe_per_call: int

    def __call__(self, x: Tensor, level: Tensor, y: Tensor | None = None) -> Tensor: ...


class LogitsFn(Protocol):
    """A noise-aware classifier ``C(x_l, l)`` returning unnormalised class logits (N, K)."""

    def __call__(self, x: Tensor, level: Tensor) -> Tensor: ...


def network_timesteps(level: Tensor) -> Tensor:
    """Map levels to the 0-based ``timesteps`` a MONAI/diffusers network is trained with.

    Level ``l >= 1`` is timestep ``l - 1``. Level 0 (clean data) has no timestep of its own;
    it is evaluated as timestep 0 (``abar = 1 - beta_1``, i.e. 0.9999 for the linear
    schedule), which is what DDIM encoding from a clean image does in Wolleb's code too.
    """
    return (level - 1).clamp(min=0)


def _batched(y: Tensor | int, n: int, device: torch.device) -> Tensor:
    """A label given as an int or an (N,) tensor, as an (n,) long tensor."""
    y = torch.as_tensor(y, device=device, dtype=torch.long)
    return y.expand(n) if y.dim() == 0 else y


class unet_eps:
    """Adapt a diffusion network ``model(x, timesteps=..., class_labels=...)`` to an ``EpsFn``.

    ``prediction="x0"`` converts an x0-predicting network (e.g. pDDPM's) to a noise
    estimate with Eq. 2; at level 0 the conversion uses level 1, matching
    :func:`network_timesteps`. The first ``out_channels`` input channels are the noisy image,
    any further ones are concatenated conditions.
    """

    nfe_per_call = 1

    def __init__(
        self,
        model: nn.Module,
        prediction: Prediction = "eps",
        schedule: NoiseSchedule | None = None,
    ) -> None:
        if prediction == "x0" and schedule is None:
            raise ValueError("unet_eps: an x0-predicting network needs the schedule")
        self.model, self.prediction, self.schedule = model, prediction, schedule

    def __call__(self, x: Tensor, level: Tensor, y: Tensor | None = None) -> Tensor:
        timesteps = network_timesteps(level)
        out = evaluate_network(self.model, x, timesteps=timesteps, class_labels=y)
        if self.prediction == "eps":
            return out
        assert self.schedule is not None
        return self.schedule.predict_eps(x[:, : out.shape[1]], timesteps + 1, out)


class classifier_logits:
    """Adapt a classifier network ``model(x, timesteps=...)`` to a level-indexed ``LogitsFn``."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, x: Tensor, level: Tensor) -> Tensor:
        return self.model(x, timesteps=network_timesteps(level))


class concat_condition:
    """Conditioning by channel concatenation (Palette; Baugh 2024; FNDM): ``eps([x, c], l)``.

    ``cond`` has the batch size of ``x``; if an outer wrapper stacks several copies of the
    batch (classifier-free guidance), the condition is repeated to match.
    """

    def __init__(self, eps_fn: EpsFn, cond: Tensor) -> None:
        self.eps_fn, self.cond = eps_fn, cond
        self.nfe_per_call = eps_fn.nfe_per_call

    def __call__(self, x: Tensor, level: Tensor, y: Tensor | None = None) -> Tensor:
        cond = self.cond.to(x.dtype)
        if x.shape[0] != cond.shape[0]:
            cond = cond.repeat(x.shape[0] // cond.shape[0], *([1] * (cond.dim() - 1)))
        return self.eps_fn(torch.cat([x, cond], dim=1), level, y)


class class_conditioned:
    """Fix the class label, optionally with classifier-free guidance (Ho & Salimans 2022).

    Without ``cfg_scale`` the network is evaluated once with label ``y``. With it,
    ``eps = eps(x, l, null) + w * (eps(x, l, y) - eps(x, l, null))``: ``w = 0`` is the
    unconditional model, ``w = 1`` the conditional one, ``w > 1`` extrapolates toward ``y``.
    ``null_label`` is the extra class index the model was trained with under label dropout.
    Both evaluations run as one batch of 2N, and count as 2 NFE per image.
    """

    def __init__(
        self,
        eps_fn: EpsFn,
        y: Tensor | int,
        cfg_scale: float | None = None,
        null_label: int | None = None,
    ) -> None:
        if cfg_scale is not None and null_label is None:
            raise ValueError("class_conditioned: classifier-free guidance needs the null label")
        self.eps_fn, self.y, self.cfg_scale, self.null_label = eps_fn, y, cfg_scale, null_label
        self.nfe_per_call = eps_fn.nfe_per_call * (1 if cfg_scale is None else 2)

    def __call__(self, x: Tensor, level: Tensor, y: Tensor | None = None) -> Tensor:
        n = x.shape[0]
        label = _batched(self.y, n, x.device)
        if self.cfg_scale is None:
            return self.eps_fn(x, level, label)
        null = torch.full_like(label, self.null_label)
        both = self.eps_fn(torch.cat([x, x]), torch.cat([level, level]), torch.cat([label, null]))
        eps_cond, eps_uncond = both[:n], both[n:]
        return eps_uncond + self.cfg_scale * (eps_cond - eps_uncond)


class classifier_guided:
    """Classifier-gradient guidance (Dhariwal & Nichol 2021; Wolleb 2022; review Sec. 2.3).

    ``eps_hat = eps - s * sqrt(1 - abar_l) * grad_x log softmax(C(x_l, l))[y]``. The
    classifier sees only the noisy image (not concatenated conditions). The gradient is
    taken with autograd even when the sampler runs under ``torch.no_grad``.
    """

    def __init__(
        self,
        eps_fn: EpsFn,
        classifier: LogitsFn,
        y: Tensor | int,
        scale: float,
        schedule: NoiseSchedule,
    ) -> None:
        self.eps_fn, self.classifier, self.y = eps_fn, classifier, y
        self.scale, self.schedule = scale, schedule
        self.nfe_per_call = eps_fn.nfe_per_call

    def log_prob_grad(self, x: Tensor, level: Tensor) -> Tensor:
        """``grad_x log p_C(y | x_l, l)``, summed over the batch (each image its own term)."""
        label = _batched(self.y, x.shape[0], x.device)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_p = torch.log_softmax(self.classifier(x_in, level), dim=1)
            selected = log_p[torch.arange(x.shape[0], device=x.device), label]
            return torch.autograd.grad(selected.sum(), x_in)[0]

    def __call__(self, x: Tensor, level: Tensor, y: Tensor | None = None) -> Tensor:
        eps = self.eps_fn(x, level, y)
        _, sigma = self.schedule.alpha_sigma(level, x)
        return eps - self.scale * sigma * self.log_prob_grad(x, level)
