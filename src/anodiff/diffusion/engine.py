"""The inference engine: how a method's denoising network is evaluated at test time.

Every diffusion method's cost is its network evaluations (review Sec. 6.5; issue 23 measured
one evaluation of the ``cpu`` UNet at 21.5 ms per 64² image on an Intel Xeon, 39.6 ms on an
AMD EPYC), so the engine changes *how* one evaluation runs, never what a method computes:

* **precision** — ``float32``, or ``bfloat16`` autocast (PyTorch's own
  :class:`torch.autocast`: convolutions and matrix products in bfloat16, the rest and the
  output in float32). ``auto`` takes bfloat16 only where it was measured to pay and to keep
  the figures: a CPU with AMX tiles (docs/BENCHMARKS.md "Issue 23, part 2": 2.5x per
  evaluation; three fast presets on both full splits within 0.0006 pixel AP of float32,
  1.4-3.0x faster per slice); float32 everywhere else, including GPUs, where nothing has
  been measured yet, and for a method that says bfloat16 does not pay for its networks
  (``Detector.bfloat16_pays``: InvDetect's small UNet on 16² patches ran its slices 1.5-1.9x
  slower under autocast on that AMX Xeon, part 8).
* **network batch** — the images the network sees at once. A method's ``batch_size`` fixes
  how noise is drawn (so it fixes the result); the network may take that batch in smaller
  pieces, and on CPUs smaller pieces are often cheaper per image (cache-resident
  activations: batch 8 cost 0.71x of batch 32 per image on the Xeon). ``whole`` (the
  default) keeps the method's batch; a number fixes the pieces; ``auto`` times each
  candidate size on the first real calls of each network and input shape (the work is done
  anyway, only the split differs), keeps the fastest and logs the measurement once. Pieces
  may change the last bits of a prediction (oneDNN picks kernels by batch: pieces of 4
  differed from the whole batch of 32 by 1.3e-6 in float32 on the Xeon, pieces of 8 and 16
  not at all), and ``auto`` picks by timing, so it is not the default: a seed must give
  the same maps twice.

Nothing here is written to disk: the choice is made again in every process, so a new
machine never inherits another's. :func:`configure` (``anodiff --precision ...
--network-batch ...``) overrides both. Methods call their networks through
:func:`evaluate_network` (via :class:`~anodiff.diffusion.guidance.unet_eps`); outside
:func:`inference` (training, distillation) it is a plain call.

Hand-written because no library does this: ``torch.compile``'s autotuning applies to one
graph, not to the batch a caller splits into, and it cost 70 s of compilation for 1.14x here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal
from weakref import WeakKeyDictionary

import torch
from torch import Tensor, nn

from anodiff.errors import AnodiffError

log = logging.getLogger(__name__)

Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")
CANDIDATE_BATCHES: tuple[int, ...] = (4, 8, 16, 32, 64)
TIMINGS_PER_CANDIDATE = 2  # the first call of a new shape pays one-off set-up; keep the best


NetworkBatch = int | Literal["whole", "auto"]


@dataclass
class EngineSettings:
    """The process-wide engine choice: ``precision`` and ``network_batch`` (module docstring)."""

    precision: Precision = "auto"
    network_batch: NetworkBatch = "whole"


_settings = EngineSettings()


def configure(precision: str | None = None, network_batch: int | str | None = None) -> None:
    """Set the engine for this process: ``precision`` in :data:`PRECISIONS`;
    ``network_batch`` ``whole``, ``auto`` or a positive int. None leaves a setting as it is;
    both are checked before either is set, so a refused call changes nothing."""
    if precision is not None and precision not in PRECISIONS:
        raise AnodiffError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    batch = None if network_batch is None else parse_network_batch(network_batch)
    if precision is not None:
        _settings.precision = precision  # type: ignore[assignment]
    if batch is not None:
        _settings.network_batch = batch


def parse_network_batch(value: int | str) -> NetworkBatch:
    """``whole`` / ``auto`` -> themselves; a positive int (or its text) -> itself; anything
    else is refused by name."""
    if isinstance(value, str) and value.strip().lower() in ("whole", "auto"):
        return value.strip().lower()  # type: ignore[return-value]
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < 1 or str(value).strip() not in (str(size), f"+{size}"):
        raise AnodiffError(f"--network-batch {value!r}: give whole, auto or a positive number "
                           "of images")
    return size


def current_settings() -> EngineSettings:
    """The engine settings in force (a copy)."""
    return EngineSettings(_settings.precision, _settings.network_batch)


def has_amx() -> bool:
    """Whether this CPU has AMX tiles, where bfloat16 convolutions run natively (PyTorch's
    CPU feature probe; False where this PyTorch cannot tell)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def resolved_precision(device: torch.device, precision: Precision | None = None,
                       bfloat16_pays: bool = True) -> str:
    """``float32`` or ``bfloat16`` for ``device``: the setting, or ``auto``'s rule (module
    docstring: bfloat16 on a CPU with AMX only, for networks where it was not measured to
    be slower: ``bfloat16_pays``)."""
    chosen = precision or _settings.precision
    if chosen != "auto":
        return chosen
    return "bfloat16" if device.type == "cpu" and has_amx() and bfloat16_pays else "float32"


def auto_reason(device: torch.device, precision: str, bfloat16_pays: bool) -> str:
    """Why ``auto`` chose ``precision`` (for the log line)."""
    if precision == "bfloat16":
        return "auto: this CPU has AMX"
    if not bfloat16_pays and resolved_precision(device, "auto") == "bfloat16":
        return "auto: bfloat16 was measured slower for this method's networks"
    return "auto"


@dataclass
class BatchTuner:
    """Per-image seconds of each candidate network batch, measured on real calls, and the
    fastest once every candidate has :data:`TIMINGS_PER_CANDIDATE` timings."""

    candidates: tuple[int, ...]
    timings: dict[int, list[float]] = field(default_factory=dict)
    best: int | None = None

    def next_size(self) -> int:
        """The batch to use on the next call: the best, or the least-timed candidate."""
        if self.best is not None:
            return self.best
        return min(self.candidates, key=lambda c: len(self.timings.get(c, [])))

    def record(self, size: int, seconds_per_image: float) -> bool:
        """Add a timing; True when this one settled the choice."""
        if self.best is not None or size not in self.candidates:
            return False
        self.timings.setdefault(size, []).append(seconds_per_image)
        if all(len(self.timings.get(c, [])) >= TIMINGS_PER_CANDIDATE for c in self.candidates):
            self.best = min(self.candidates, key=lambda c: min(self.timings[c]))
            return True
        return False

    def summary(self) -> str:
        """``8: 14.2, 16: 16.0 ms per image`` from the best timing of each candidate."""
        return ", ".join(f"{c}: {1000 * min(self.timings[c]):.1f}" for c in self.candidates) \
            + " ms per image"


@dataclass
class InferenceEngine:
    """Runs networks at one precision, in the method's batch, fixed pieces or tuned pieces."""

    precision: str
    network_batch: NetworkBatch
    tuners: WeakKeyDictionary[nn.Module, dict[tuple[int, ...], BatchTuner]] = field(
        default_factory=WeakKeyDictionary)

    def __call__(self, model: nn.Module, x: Tensor, **kwargs: Any) -> Tensor:
        n = x.shape[0]
        tuner = self._tuner(model, x) if self.network_batch == "auto" else None
        size = self.network_batch if isinstance(self.network_batch, int) else \
            tuner.next_size() if tuner else n
        started = time.perf_counter()
        pieces = [self._forward(model, x[i:i + size], rows(kwargs, i, size, n))
                  for i in range(0, n, size)]
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        if tuner is not None and tuner.record(size, (time.perf_counter() - started) / n):
            log.info("engine: %s on %s inputs %s evaluated in batches of %d (measured: %s), "
                     "%s", type(model).__name__, x.device.type, tuple(x.shape[1:]),
                     tuner.best, tuner.summary(), self.precision)
        return out

    def _tuner(self, model: nn.Module, x: Tensor) -> BatchTuner | None:
        """The tuner of this network and per-image shape; None for batches too small to
        split (they run whole)."""
        candidates = tuple(c for c in CANDIDATE_BATCHES if c <= x.shape[0])
        if len(candidates) < 2:
            return None
        per_shape = self.tuners.setdefault(model, {})
        key = tuple(x.shape[1:])
        if key not in per_shape:
            per_shape[key] = BatchTuner(candidates)
        tuner = per_shape[key]
        return tuner if tuner.best is not None or x.shape[0] >= max(tuner.candidates) else None

    def _forward(self, model: nn.Module, x: Tensor, kwargs: dict[str, Any]) -> Tensor:
        """The network on ``x`` at the engine's precision, returned as float32."""
        if self.precision == "float32":
            return model(x, **kwargs)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = model(x, **kwargs)
        return out.float()


def rows(kwargs: dict[str, Any], start: int, size: int, n: int) -> dict[str, Any]:
    """``kwargs`` with every per-image tensor (first dimension ``n``: timesteps, labels)
    cut to rows ``start:start + size``; other values as they are."""
    return {k: v[start:start + size] if isinstance(v, Tensor) and v.dim() > 0 and
            v.shape[0] == n else v for k, v in kwargs.items()}


_engines: dict[tuple[str, str, NetworkBatch], InferenceEngine] = {}
_active: ContextVar[InferenceEngine | None] = ContextVar("anodiff_inference_engine",
                                                         default=None)


def engine_for(device: torch.device, bfloat16_pays: bool = True) -> InferenceEngine:
    """This process's engine for ``device`` under the current settings (tunings are kept
    for the life of the process, per network and input shape); ``bfloat16_pays`` as in
    :func:`resolved_precision`."""
    precision = resolved_precision(device, bfloat16_pays=bfloat16_pays)
    key = (str(device), precision, _settings.network_batch)
    if key not in _engines:
        _engines[key] = InferenceEngine(precision, _settings.network_batch)
        reason = "" if _settings.precision != "auto" else \
            f" ({auto_reason(device, precision, bfloat16_pays)})"
        log.info("engine: networks on %s in %s%s, network batch %s", device, precision,
                 reason, _settings.network_batch)
    return _engines[key]


@contextmanager
def inference(device: torch.device, bfloat16_pays: bool = True) -> Iterator[InferenceEngine]:
    """Within the block, :func:`evaluate_network` runs networks through the engine
    (``bfloat16_pays``: False keeps ``auto`` at float32, :func:`resolved_precision`)."""
    engine = engine_for(device, bfloat16_pays)
    token = _active.set(engine)
    try:
        yield engine
    finally:
        _active.reset(token)


def evaluate_network(model: nn.Module, x: Tensor, **kwargs: Any) -> Tensor:
    """``model(x, **kwargs)``, through the active engine inside :func:`inference`."""
    engine = _active.get()
    return model(x, **kwargs) if engine is None else engine(model, x, **kwargs)
