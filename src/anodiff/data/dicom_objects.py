"""DICOM objects that PACS viewers overlay on the source series: a Segmentation (SEG) of the
mask and a Parametric Map of the anomaly map, made with highdicom (Bridge 2022).

The review (Sec. 6.4) asks for outputs fit for PACS: a new uint16 image series (what
:func:`anodiff.data.dicom.write_dicom_like` writes) is shown *beside* the scan, while SEG and
Parametric Map objects reference the source images (same Study, Frame of Reference and
per-frame geometry, a Referenced Series Sequence), so viewers that read them (OHIF, 3D
Slicer and PACS viewers) overlay them *on* it.

Both objects have a frame per source slice, in the source's slice order; highdicom copies
the patient, study and frame-of-reference attributes from the source images and writes the
plane position of every frame. The SEG is BINARY with one segment, "anomaly"
(SNOMED CT 49755003 "Morphologically abnormal structure", found automatically by an
artificial-intelligence algorithm named after the method); empty frames are left out, as the
standard allows. The Parametric Map stores the anomaly map as 32-bit floats with a
real-world value mapping of slope 1 (no units: the map is in the method's own units) and a
window over the map's range, marked RESEARCH content (highdicom's default Content
Qualification; a SEG has no such attribute): not for diagnosis.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from anodiff._version import __version__
from anodiff.errors import AnodiffError
from anodiff.outputs import replaced_atomically

MANUFACTURER = "anodiff"
SEGMENT_LABEL = "anomaly"


def _frames(array: np.ndarray, datasets: list[Dataset], what: str) -> np.ndarray:
    """(slices, rows, columns) frames of a (rows, columns[, slices]) array read from
    ``datasets``, one per source image, in their order."""
    frames = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    if len(frames) != len(datasets) or any(
            frames.shape[1:] != (int(ds.Rows), int(ds.Columns)) for ds in datasets):
        raise AnodiffError(f"{what}: an array of shape {array.shape} does not fit the "
                           f"{len(datasets)} source image(s) of {datasets[0].Rows} x "
                           f"{datasets[0].Columns}")
    return frames


def _algorithm(method: str) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=f"anodiff {method}", version=__version__,
        family=codes.cid7162.ArtificialIntelligence)


def write_segmentation(mask: np.ndarray, datasets: list[Dataset], out: Path, *,
                       method: str, description: str) -> Path:
    """Write the bool ``mask`` (the source series' array shape) as a DICOM SEG file ``out``
    that references ``datasets`` (the source images, in slice order); atomically."""
    frames = _frames(np.asarray(mask, dtype=bool), datasets, str(out))
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(method))
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=frames.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=hd.UID(), series_number=9901,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=f"anodiff {method}", software_versions=__version__,
        device_serial_number="none", series_description=description[:64],
        content_label="ANOMALY", content_description=description[:64])
    with replaced_atomically(out) as tmp:
        seg.save_as(tmp)
    return out


def write_parametric_map(values: np.ndarray, datasets: list[Dataset], out: Path, *,
                         method: str, description: str) -> Path:
    """Write the float map ``values`` (the source series' array shape) as a DICOM
    Parametric Map file ``out`` that references ``datasets``; atomically."""
    frames = _frames(np.asarray(values, dtype=np.float32), datasets, str(out))
    if not np.all(np.isfinite(frames)):
        raise AnodiffError(f"{out}: refusing to write NaN/Inf values")
    low, high = float(frames.min()), float(frames.max())
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="anomaly", lut_explanation=f"anodiff {method} anomaly map",
        unit=codes.UCUM.NoUnits, value_range=(low, high), slope=1.0, intercept=0.0)
    pmap = hd.pm.ParametricMap(
        source_images=datasets, pixel_array=frames, series_instance_uid=hd.UID(),
        series_number=9902, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=f"anodiff {method}",
        software_versions=__version__, device_serial_number="none",
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(
            window_center=(low + high) / 2, window_width=max(high - low, 1e-6))],
        content_label="ANOMALY", content_description=description[:64],
        series_description=description[:64])
    with replaced_atomically(out) as tmp:
        pmap.save_as(tmp)
    return out
