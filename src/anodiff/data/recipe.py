"""How raw intensities became a model's inputs, recorded so that the same can be done again.

A detector is trained on slices that :func:`~anodiff.data.open_dataset` normalised (per
volume and sequence for a volumes dataset, per image for an images dataset) and fitted to
the model size. :class:`InputRecipe` records those options when the detector is fitted on
such a dataset (it is saved with the detector), so that ``localize(raw, normalise=True)``
can bring raw arrays to the same [0, 1] scale and size instead of leaving every user to
re-implement the normalisation, and to get it subtly wrong: per slice instead of per volume,
or with the background in the statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from anodiff.data.normalise import fit_to_size, normalise_intensity
from anodiff.data.slicing import with_context
from anodiff.errors import AnodiffError


@dataclass(frozen=True)
class InputRecipe:
    """The normalisation and size a detector's training slices were made with.

    ``per_volume``: statistics over all slices of a volume, per sequence (volumes layout),
    or over one image (images layout). ``sequences``: the channels in order (empty for
    images). ``context``: neighbouring slices per side appended as channels (2.5-D input,
    :func:`~anodiff.data.slicing.with_context`).
    """

    normalisation: str
    normalisation_params: dict[str, float]
    size: int
    fit: str
    per_volume: bool
    sequences: tuple[str, ...] = ()
    context: int = 0

    @classmethod
    def of(cls, data: Any) -> InputRecipe | None:
        """The recipe of a :class:`~anodiff.data.SliceDataset`; None for other training data
        (tensors, items), whose normalisation anodiff does not know."""
        options = getattr(data, "options", None)
        if options is None or not hasattr(data, "volumetric"):
            return None
        return cls(options.normalisation, dict(options.normalisation_params), options.size,
                   options.fit, bool(data.volumetric), tuple(data.sequences), options.context)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the saved detector's metadata (``context`` only where there is
        one, so that a 2-D model stays readable by anodiff versions before it)."""
        values = {**asdict(self), "sequences": list(self.sequences)}
        if not self.context:
            del values["context"]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> InputRecipe:
        """Read back :meth:`to_dict`'s values."""
        return cls(**{**values, "sequences": tuple(values.get("sequences", ()))})

    @property
    def raw_channels(self) -> int:
        """Channels of a raw slice: the model's inputs without the context channels."""
        return len(self.sequences) // (2 * self.context + 1) if self.sequences else 0

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Raw images (N, C, H, W) of any H x W -> normalised inputs (N, C, size, size).

        Per volume: each channel over all N slices together (pass one volume's axial
        slices, inferior -> superior, which also gives each slice its ``context``
        neighbours: (N, C * (2k + 1), size, size)); per image: each image over its
        channels, as the images layout does."""
        if self.per_volume:
            normalised = np.stack([normalise_intensity(raw[:, c], self.normalisation,
                                                       **self.normalisation_params)
                                   for c in range(raw.shape[1])], axis=1)
        else:
            normalised = np.stack([normalise_intensity(image, self.normalisation,
                                                       **self.normalisation_params)
                                   for image in raw])
        return with_context(fit_to_size(normalised, self.size, self.fit), self.context)


def raw_batch(name: str, images: Any, channels: int) -> np.ndarray:
    """Raw images as a float32 batch (N, C, H, W): one slice (H, W) of a one-channel model,
    one slice (C, H, W), a stack of one-channel slices (N, H, W) or a batch (N, C, H, W);
    any H x W. Anything else, or NaN, is an :class:`AnodiffError` naming what was expected."""
    try:
        x = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images,
                       dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise AnodiffError(f"{name}: images must be a numeric array or tensor, got "
                           f"{type(images).__name__} ({err})") from err
    if x.ndim == 2 and channels == 1:
        x = x[None, None]
    elif x.ndim == 3 and channels == 1:
        x = x[:, None]
    elif x.ndim == 3 and x.shape[0] == channels:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != channels:
        one = "(H, W), (N, H, W), " if channels == 1 else ""
        raise AnodiffError(f"{name}: expected raw images {one}({channels}, H, W) or "
                           f"(N, {channels}, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or min(x.shape[2:]) < 1:
        raise AnodiffError(f"{name}: no images given (shape {tuple(x.shape)})")
    if not np.isfinite(x).all():
        raise AnodiffError(f"{name}: the images contain NaN or infinite values")
    return x
