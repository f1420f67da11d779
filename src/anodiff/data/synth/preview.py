"""Preview pictures of a built benchmark: PNG mosaics composed with Pillow.

:func:`tracks_figure` shows, for every track, example cases in T1, T2 and FLAIR at their
most affected axial slice with the lesion outlined; :func:`healthy_figure` shows healthy
cases at one slice index, to make the anatomy, slice-position and intensity variation
visible. Slices are shown in the radiological convention (anterior up, the patient's right
on the left), each sequence scaled to its brain's 99.5th percentile, voxels unsmoothed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

from anodiff.data.synth.contrasts import SEQUENCES

OUTLINE_RGB = (255, 64, 32)
LABEL_WIDTH = 96
HEADER = 22
GAP = 3
GROUP_GAP = 12


@dataclass(frozen=True, eq=False)
class Example:
    """One case's volumes for a figure: ``images`` per sequence and its ``seg``."""

    case: str
    images: dict[str, np.ndarray]
    seg: np.ndarray


def tracks_figure(examples: dict[str, Sequence[Example]]) -> Image.Image:
    """Rows: tracks; per example, T1/T2/FLAIR at the slice with the most lesion voxels."""
    rows = []
    for track, cases in examples.items():
        groups = []
        for example in cases:
            k = int(np.argmax((example.seg > 0).sum(axis=(0, 1))))
            outline = _display(example.seg[:, :, k] > 0)
            groups.append([_panel(_display(_scaled(example.images[seq])[:, :, k]), outline)
                           for seq in SEQUENCES])
        rows.append((track, groups))
    return _mosaic(rows, [seq.upper() for seq in SEQUENCES])


def healthy_figure(examples: Sequence[Example], sequences: Sequence[str] = ("t1", "flair")
                   ) -> Image.Image:
    """Rows: ``sequences``; columns: healthy cases at their middle axial slice."""
    rows = []
    for seq in sequences:
        panels = []
        for example in examples:
            volume = _scaled(example.images[seq])
            panels.append(_panel(_display(volume[:, :, volume.shape[2] // 2]), None))
        rows.append((seq.upper(), [panels]))
    return _mosaic(rows, [e.case for e in examples])


def _mosaic(rows: list[tuple[str, list[list[Image.Image]]]], titles: list[str]) -> Image.Image:
    """Lay out rows of panel groups with a label column; ``titles`` head each group's panels."""
    first = rows[0][1]
    width_px, height_px = first[0][0].size
    per_group = len(first[0])
    groups = len(first)
    group_w = per_group * width_px + (per_group - 1) * GAP
    total_w = LABEL_WIDTH + groups * group_w + (groups - 1) * GROUP_GAP
    total_h = HEADER + len(rows) * (height_px + GAP)
    canvas = Image.new("RGB", (total_w, total_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    for g in range(groups):
        for p in range(per_group):
            x = LABEL_WIDTH + g * (group_w + GROUP_GAP) + p * (width_px + GAP)
            draw.text((x + 2, 4), titles[p], fill=(0, 0, 0), font=font)
    for r, (label, row_groups) in enumerate(rows):
        y = HEADER + r * (height_px + GAP)
        draw.text((4, y + height_px // 2 - 7), label, fill=(0, 0, 0), font=font)
        for g, panels in enumerate(row_groups):
            for p, panel in enumerate(panels):
                canvas.paste(panel, (LABEL_WIDTH + g * (group_w + GROUP_GAP)
                                     + p * (width_px + GAP), y))
    return canvas


def _panel(slice_2d: np.ndarray, outline: np.ndarray | None) -> Image.Image:
    """A greyscale panel upscaled to at least 128 px, with the mask's border in colour."""
    scale = max(1, 128 // slice_2d.shape[0])
    grey = np.kron(np.clip(slice_2d * 255, 0, 255).astype(np.uint8), np.ones((scale, scale),
                                                                              np.uint8))
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    if outline is not None:
        mask = np.kron(outline, np.ones((scale, scale), bool))
        rgb[mask & ~ndi.binary_erosion(mask)] = OUTLINE_RGB
    return Image.fromarray(rgb)


def _scaled(volume: np.ndarray) -> np.ndarray:
    """The volume divided by the 99.5th percentile of its brain (non-zero) voxels."""
    brain = volume[volume > 0]
    return volume / np.percentile(brain, 99.5) if brain.size else volume


def _display(slice_2d: np.ndarray) -> np.ndarray:
    """Array axes (x right, y anterior) to screen rows/columns, radiological convention."""
    return slice_2d.T[::-1, ::-1]
