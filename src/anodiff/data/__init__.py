"""Images in and maps out with their geometry, slices, normalisation and dataset folders.

- :mod:`anodiff.data.io`: ``read_image`` / ``write_like``, the only doors to the file system
  for images (backends in :mod:`~anodiff.data.formats` and :mod:`~anodiff.data.dicom`);
- :mod:`anodiff.data.normalise`: per-volume intensity normalisation, foreground masks, fitting
  slices to the model size and back;
- :mod:`anodiff.data.slicing`: volumes to axial slices (axis from the affine) and back;
- :mod:`anodiff.data.layouts`: which files of a folder are which case and sequence
  (anodiff's case folders, nnU-Net, BIDS, flat folders, DICOM series);
- :mod:`anodiff.data.datasets`: dataset folders as a ``SliceDataset``, detection inputs as
  cases.
"""

from anodiff.data.datasets import (
    DEFAULT_KEEP,
    REGIMES,
    SPLITS,
    UNLABELLED,
    CaseSource,
    InputCase,
    SliceDataset,
    SliceOptions,
    find_inputs,
    load_input_case,
    open_cases,
    open_dataset,
)
from anodiff.data.io import FORMATS, Image, image_format, read_image, write_like
from anodiff.data.layouts import LAYOUTS, Found, discover, sequence_name
from anodiff.data.normalise import (
    FIT_MODES,
    NORMALISATIONS,
    fit_to_size,
    foreground_mask,
    normalise_intensity,
    unfit,
)
from anodiff.data.slicing import (
    DropEnds,
    ForegroundExtent,
    KeepRule,
    SliceLayout,
    axial_axis,
    slices_to_volume,
    stack_sequences,
    take_slices,
    volume_to_slices,
)

__all__ = [
    "DEFAULT_KEEP",
    "FIT_MODES",
    "FORMATS",
    "LAYOUTS",
    "NORMALISATIONS",
    "REGIMES",
    "UNLABELLED",
    "SPLITS",
    "CaseSource",
    "DropEnds",
    "ForegroundExtent",
    "Found",
    "Image",
    "InputCase",
    "KeepRule",
    "SliceDataset",
    "SliceLayout",
    "SliceOptions",
    "axial_axis",
    "discover",
    "find_inputs",
    "fit_to_size",
    "foreground_mask",
    "image_format",
    "load_input_case",
    "normalise_intensity",
    "open_cases",
    "open_dataset",
    "read_image",
    "sequence_name",
    "slices_to_volume",
    "stack_sequences",
    "take_slices",
    "unfit",
    "volume_to_slices",
    "write_like",
]
