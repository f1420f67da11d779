"""``anodiff data inspect PATH``: what anodiff would read from a folder, before any work.

A dry run of :func:`anodiff.data.layouts.discover`: the layout found, each case with the
file taken for each sequence, its segmentation and split, what is missing for the
sequences asked for (a run's, or ``--sequences``) with the pattern looked for, and every
entry passed over with the reason. Nothing is read but file names (and ``dataset.json``),
so it answers in a moment even for a large cohort.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from anodiff.data.datasets.tables import read_table
from anodiff.data.layouts import SEGMENTATION, discover, find_layout, match_sequences

SHOWN_CASES = 20  # cases listed in full; the rest are counted


def inspect_lines(
    path: Path,
    *,
    layout: str = "auto",
    sequence_map: Mapping[str, str] | None = None,
    sequences: Sequence[str] | None = None,
    all_cases: bool = False,
) -> list[str]:
    """The report of ``anodiff data inspect`` as lines (see the module docstring)."""
    path = Path(path)
    kind = find_layout(path) if layout == "auto" else layout
    if kind == "images":
        return _images_lines(path)
    found = discover(path, kind, sequence_map)
    wanted = list(sequences) if sequences else found.sequences()
    splits_csv = found.root / "splits.csv"
    if splits_csv.is_file():
        splits, _ = read_table(splits_csv, list(found.cases), "case", with_label=False)
        origin = f"from {splits_csv.name}"
    elif found.splits:
        splits, origin = found.splits, "from the layout"
    else:
        splits, origin = dict.fromkeys(found.cases, "train"), "all train (no splits.csv)"
    with_seg = sum(SEGMENTATION in files for files in found.cases.values())
    lines = [f"{path}: {kind} layout, {len(found.cases)} case(s); sequences found: "
             f"{', '.join(found.sequences()) or '-'}; {with_seg} with a segmentation; splits "
             f"{origin}",
             f"reading the sequences {', '.join(wanted)} as channels, in this order"]
    complete = 0
    shown = found.cases if all_cases else list(found.cases)[:SHOWN_CASES]
    for case in found.cases:
        files, missing = match_sequences(found, case, wanted)
        complete += not missing
        if case not in shown:
            continue
        taken = "; ".join(f"{s}: {_names(files[s], found.root)}" for s in wanted if s in files)
        seg = f"; seg: {_names(files[SEGMENTATION], found.root)}" if SEGMENTATION in files \
            else ""
        lacking = f"; MISSING {', '.join(missing)}" if missing else ""
        lines.append(f"  {case} [{splits.get(case, 'train')}] {taken}{seg}{lacking}")
    if len(shown) < len(found.cases):
        lines.append(f"  ... and {len(found.cases) - len(shown)} more case(s) (--all lists them)")
    lines.append(f"{complete} of {len(found.cases)} case(s) have every sequence")
    for entry, reason in found.passed_over:
        lines.append(f"passed over {entry}: {reason}")
    return lines


def _names(paths: list[Path], root: Path) -> str:
    """Paths relative to the root, several joined (several files for one name is an error
    when the case is loaded, and shown here so the user sees both)."""
    shown = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths]
    return " + ".join(shown) + (" (SEVERAL: loading refuses this case)" if len(paths) > 1
                                else "")


def _images_lines(root: Path) -> list[str]:
    """The 2-D images layout: counts of images, masks and labelled rows."""
    images = [p for p in (root / "images").iterdir() if not p.name.startswith(".")]
    masks = [p for p in (root / "masks").iterdir()] if (root / "masks").is_dir() else []
    labels = root / "labels.csv"
    return [f"{root}: images layout (2-D), {len(images)} image(s), {len(masks)} mask(s), "
            f"labels.csv {'present' if labels.is_file() else 'absent (labels from masks)'}"]
