"""One-class models of normal feature vectors, scored as a signed distance to their boundary.

InvDetect (Ma et al., Sec. 2.1) learns the normal noise latents with a one-class SVM (RBF
kernel, nu = 0.1, gamma = 1 / (d * variance of the latents), i.e. scikit-learn's
``gamma="scale"``) and scores a patch by its signed distance to the boundary: 0 on it,
positive outside (abnormal), negative inside. Three kinds, all fitted with scikit-learn:

* ``ocsvm`` — the paper's exact ``OneClassSVM`` (libsvm). Its fit time grows roughly with the
  square of the number of latents, so the method subsamples them (a stated setting).
* ``ocsvm_nystroem`` — the same RBF kernel approximated by ``Nystroem`` features and a
  linear ``SGDOneClassSVM``: linear in the number of latents, for fits on many thousands.
* ``gaussian`` — the parametric alternative the paper names (PaDiM-style): a Ledoit-Wolf
  Gaussian, score = Mahalanobis distance minus its (1 - nu) quantile on the normal
  latents, so that as with the SVM a fraction nu of the normal latents lies outside.

Every kind is held as buffers of an ``nn.Module`` (saved with the detector's state_dict in
safetensors, no pickled estimators; moved by ``.to(device)``) and scored in torch with the
fitted estimator's own formula; tests check the scores against scikit-learn's
``decision_function``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import SGDOneClassSVM
from sklearn.svm import OneClassSVM
from torch import Tensor, nn

from anodiff.errors import AnodiffError

OneClassKind = Literal["ocsvm", "ocsvm_nystroem", "gaussian"]
ONE_CLASS_KINDS: tuple[str, ...] = ("ocsvm", "ocsvm_nystroem", "gaussian")
_KEYS = {
    "ocsvm": ("support_vectors", "dual_coef", "intercept", "gamma"),
    "ocsvm_nystroem": ("components", "normalization", "coef", "offset", "gamma"),
    "gaussian": ("location", "precision", "boundary"),
}
_CHUNK = 4096  # latents scored at once (bounds the kernel matrix in memory)


def _rbf(x: Tensor, centres: Tensor, gamma: Tensor) -> Tensor:
    """exp(-gamma ||x_i - c_j||^2), (M, K)."""
    return torch.exp(-gamma * torch.cdist(x, centres).square())


class OneClassModel(nn.Module):
    """A one-class model of kind ``kind``: the tensors its score needs, as buffers.

    Built empty (each buffer a placeholder that loading or :func:`fit_one_class` fills);
    :attr:`fitted` says whether it holds a fitted model.
    """

    def __init__(self, kind: str, tensors: dict[str, Tensor] | None = None) -> None:
        super().__init__()
        if kind not in _KEYS:
            raise AnodiffError(f"unknown one-class model {kind!r}; choose one of "
                               f"{list(ONE_CLASS_KINDS)}")
        self.kind = kind
        tensors = tensors or {}
        unknown = sorted(set(tensors) - set(_KEYS[kind]))
        if unknown:
            raise AnodiffError(f"one-class model {kind}: unexpected values {unknown}")
        for key in _KEYS[kind]:
            self.register_buffer(key, tensors.get(key, torch.zeros(0, dtype=torch.float64)))

    @property
    def fitted(self) -> bool:
        """Whether every fitted value is there (loaded or fitted, not a placeholder)."""
        return all(buffer.numel() for buffer in self.buffers())

    @property
    def dim(self) -> int:
        """The dimension of the vectors it scores."""
        first = {"ocsvm": "support_vectors", "ocsvm_nystroem": "components",
                 "gaussian": "precision"}[self.kind]
        return int(getattr(self, first).shape[-1])

    @torch.no_grad()
    def score(self, z: Tensor) -> Tensor:
        """Signed distance to the boundary of vectors (M, d): > 0 outside (abnormal)."""
        if not self.fitted:
            raise AnodiffError(f"one-class model {self.kind}: not fitted")
        z = z.flatten(1).to(torch.float64)
        if z.shape[1] != self.dim:
            raise AnodiffError(f"one-class model expects {self.dim}-dimensional vectors, got "
                               f"{z.shape[1]}")
        t = {k: v.to(device=z.device, dtype=torch.float64) for k, v in self.named_buffers()}
        out = []
        for chunk in z.split(_CHUNK):
            if self.kind == "ocsvm":  # libsvm: sum_i alpha_i K(sv_i, x) - rho
                decision = _rbf(chunk, t["support_vectors"], t["gamma"]) @ t["dual_coef"] \
                    + t["intercept"]
            elif self.kind == "ocsvm_nystroem":  # <w, phi(x)> - offset
                features = _rbf(chunk, t["components"], t["gamma"]) @ t["normalization"].T
                decision = features @ t["coef"] - t["offset"]
            else:
                centred = chunk - t["location"]
                distance = ((centred @ t["precision"]) * centred).sum(1).clamp_min(0).sqrt()
                decision = t["boundary"] - distance
            out.append(-decision.reshape(-1))  # the paper's score: minus the decision value
        return torch.cat(out).float() if out else torch.zeros(0)


def rbf_gamma(latents: np.ndarray) -> float:
    """The paper's gamma: 1 / (dimension x variance of the normal latents)."""
    variance = float(latents.var())
    if variance <= 0:
        raise AnodiffError("cannot fit a one-class model: the normal vectors are all equal")
    return 1.0 / (latents.shape[1] * variance)


def fit_one_class(latents: Tensor | np.ndarray, kind: str = "ocsvm", nu: float = 0.1, *,
                  components: int = 1024, seed: int = 0) -> OneClassModel:
    """Fit a one-class model of kind ``kind`` on normal vectors (M, d).

    ``nu`` bounds the fraction of training vectors outside the boundary (SVM) or sets it
    (Gaussian); ``components`` is the number of Nystroem features; ``seed`` makes the
    Nystroem sample and the SGD order reproducible.
    """
    if kind not in ONE_CLASS_KINDS:
        raise AnodiffError(f"unknown one-class model {kind!r}; choose one of "
                           f"{list(ONE_CLASS_KINDS)}")
    if not 0 < nu < 1:
        raise AnodiffError(f"nu must be in (0, 1), got {nu}")
    x = np.asarray(torch.as_tensor(latents).reshape(len(latents), -1), dtype=np.float64)
    if len(x) < 2:
        raise AnodiffError(f"a one-class model needs at least 2 normal vectors, got {len(x)}")
    as_tensor = torch.from_numpy
    if kind == "gaussian":
        cov = LedoitWolf().fit(x)
        centred = x - cov.location_
        distance = np.sqrt(np.maximum(np.einsum("md,de,me->m", centred, cov.precision_,
                                                centred), 0))
        return OneClassModel(kind, {
            "location": as_tensor(cov.location_), "precision": as_tensor(cov.precision_),
            "boundary": torch.tensor(float(np.quantile(distance, 1 - nu)), dtype=torch.float64)})
    gamma = rbf_gamma(x)
    if kind == "ocsvm":
        svm = OneClassSVM(kernel="rbf", nu=nu, gamma=gamma).fit(x)
        return OneClassModel(kind, {
            "support_vectors": as_tensor(svm.support_vectors_),
            "dual_coef": as_tensor(svm.dual_coef_.ravel()),
            "intercept": as_tensor(np.asarray(svm.intercept_, dtype=np.float64)),
            "gamma": torch.tensor(gamma, dtype=torch.float64)})
    nystroem = Nystroem(kernel="rbf", gamma=gamma, n_components=min(components, len(x)),
                        random_state=seed).fit(x)
    sgd = SGDOneClassSVM(nu=nu, random_state=seed).fit(nystroem.transform(x))
    return OneClassModel(kind, {
        "components": as_tensor(nystroem.components_),
        "normalization": as_tensor(nystroem.normalization_),
        "coef": as_tensor(sgd.coef_.ravel()), "offset": as_tensor(np.asarray(sgd.offset_)),
        "gamma": torch.tensor(gamma, dtype=torch.float64)})
