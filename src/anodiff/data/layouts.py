"""Which files of a folder are which case and sequence: the folder layouts users bring.

A dataset folder or a detection input is read as one of these layouts (detected, or forced
with ``layout=``):

- ``cases`` (anodiff's own volumes layout, BraTS-like): ``DATA/<case>/<case>_<seq>.<ext>``,
  optional ``<case>_seg.<ext>``;
- ``case``: one such case folder;
- ``nnunet`` (nnU-Net v2 raw data): ``imagesTr/<case>_<XXXX>.<ext>`` with the channel index
  ``XXXX`` named by ``dataset.json``'s ``channel_names``, ``labelsTr/<case>.<ext>``,
  ``imagesTs``/``labelsTs``; the root or one ``images*`` folder (then the ``dataset.json``
  one level up names the channels);
- ``bids``: ``sub-<id>/[ses-<id>/]anat/sub-<id>[_ses-<id>]_…_<suffix>.nii[.gz]``, the suffix
  naming the sequence (``T1w`` -> t1, ``T2w`` -> t2, ``FLAIR`` -> flair); a lesion mask is a
  file whose name holds ``label-lesion`` with suffix ``mask``, ``roi`` or ``dseg``, in
  ``anat/`` or under ``derivatives/``;
- ``files``: a flat folder of images (NIfTI, NRRD, NumPy, DICOM files or DICOM series
  folders); ``<case>_<seq>.<ext>`` files with a recognised sequence name group into cases
  (``<case>_seg`` is the segmentation), any other file is a case with one unnamed sequence;
- ``series``: one DICOM series folder, one case with one unnamed sequence;
- ``file``: one image file;
- ``images``: anodiff's 2-D layout (``DATA/images/``), read by :mod:`.datasets.images`.

Sequence names are compared after :func:`sequence_name` (``T1w``, ``t1`` and ``T1`` are all
``t1``), with an optional user mapping for anything else. An unnamed sequence (a file
without a sequence in its name, an nnU-Net channel without ``dataset.json``) can stand for
the only sequence of a one-sequence model; a named one never stands for another.

Written by hand: nnU-Net and pybids read their own layouts, but neither is a dependency
anodiff should need to find a few files, and neither knows the other layouts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anodiff.data.dicom import is_dicom_file
from anodiff.data.io import image_format, image_stem
from anodiff.errors import AnodiffError

LAYOUTS = ("auto", "cases", "case", "nnunet", "bids", "files", "series", "file", "images")
SEGMENTATION = "seg"
UNNAMED = "image"
"""The sequence name of an image whose name says no sequence."""

_ALIASES = {
    "t1": "t1", "t1w": "t1", "t1weighted": "t1", "mprage": "t1",
    "t2": "t2", "t2w": "t2", "t2weighted": "t2",
    "flair": "flair", "t2flair": "flair", "t2wflair": "flair",
    "t1ce": "t1ce", "t1c": "t1ce", "t1gd": "t1ce", "t1post": "t1ce",
    "pd": "pd", "pdw": "pd",
    "t2star": "t2star", "t2starw": "t2star", "swi": "swi",
    "dwi": "dwi", "adc": "adc", "ct": "ct",
}
KNOWN_SEQUENCES = frozenset(_ALIASES.values())
_NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_BIDS_LESION = re.compile(r"(^|_)label-lesion(_|$)")
_BIDS_MASK_SUFFIXES = ("mask", "roi", "dseg")
_BIDS_SUFFIXES = {"t1": "T1w", "t2": "T2w", "flair": "FLAIR", "pd": "PDw", "t2star": "T2starw",
                  "t1ce": "ce-<label>_T1w"}
_BIDS_CONTRAST = re.compile(r"(^|_)ce-[^_]+(_|$)")

CaseFiles = dict[str, list[Path]]
"""``{sequence or "seg": paths}`` of one case; several paths for one name are kept so that
loading the case can refuse them with both names (and ``on_error="skip"`` skips just it)."""


def sequence_name(raw: str, mapping: Mapping[str, str] | None = None) -> str:
    """The canonical name of a sequence: ``mapping`` first (exact, then case-insensitive),
    then the alias table (``T1w``/``T1``/``t1`` -> ``t1``, ``T2-FLAIR`` -> ``flair``), else
    the name in lower case."""
    if mapping:
        if raw in mapping:
            return str(mapping[raw])
        lowered = {str(k).lower(): str(v) for k, v in mapping.items()}
        if raw.lower() in lowered:
            return lowered[raw.lower()]
    key = raw.lower()
    return _ALIASES.get(re.sub(r"[-_ ]", "", key), key)


@dataclass(frozen=True)
class Found:
    """What a folder (or file) holds, as cases of named images.

    ``splits``: the split each case's place in the layout implies (nnU-Net's ``imagesTs``
    is ``test``), or empty when the layout implies none. ``passed_over``: (path, reason) of
    the entries that were not read, for ``anodiff data inspect``. ``patterns``: for each
    sequence name, the file pattern the layout looks for (for "missing" messages).
    """

    layout: str
    root: Path
    cases: dict[str, CaseFiles]
    splits: dict[str, str] = field(default_factory=dict)
    passed_over: tuple[tuple[Path, str], ...] = ()
    channel_pattern: str = "<case>_<sequence>.*"
    spellings: Mapping[str, str] = field(default_factory=dict)  # sequence -> file name part

    def looked_for(self, sequence: str) -> str:
        """The file pattern that would have given ``sequence``."""
        name = sequence_name(sequence)
        return self.channel_pattern.replace("<sequence>", self.spellings.get(name, name))

    def sequences(self) -> list[str]:
        """Every sequence name some case has, sorted."""
        return sorted({s for files in self.cases.values() for s in files} - {SEGMENTATION})


def discover(
    path: str | Path, layout: str = "auto", sequence_map: Mapping[str, str] | None = None
) -> Found:
    """Read ``path`` as ``layout`` (``auto``: :func:`find_layout`) into cases of named images.

    Raises :class:`AnodiffError` naming the path when it holds nothing readable as that
    layout.
    """
    path = Path(path)
    if not path.exists():
        raise AnodiffError(f"{path}: not found")
    if layout not in LAYOUTS:
        raise AnodiffError(f"unknown layout '{layout}'; choose from {', '.join(LAYOUTS)}")
    kind = find_layout(path) if layout == "auto" else layout
    if kind == "images":
        raise AnodiffError(f"{path}: the images layout (2-D images/ with labels.csv) is read "
                           "as a dataset, not discovered as cases")
    readers = {"cases": _cases, "case": _case, "nnunet": _nnunet, "bids": _bids,
               "files": _files, "series": _series, "file": _file}
    found = readers[kind](path, sequence_map)
    if not found.cases:
        raise AnodiffError(f"{path}: no image found as the {kind} layout ({_hint(kind)})")
    return found


def find_layout(path: Path) -> str:
    """The layout ``path`` looks like (see the module docstring), or an error saying what
    was expected."""
    if path.is_file():  # reading it says what is wrong with a file that is not an image
        return "file"
    if (path / "images").is_dir():
        return "images"
    entries = _entries(path)
    folders = [p for p in entries if p.is_dir()]
    if (path / "dataset.json").is_file() or any(
            p.name in ("imagesTr", "imagesTs") for p in folders):
        return "nnunet"
    if any(p.name.startswith("sub-") for p in folders):
        return "bids"
    if _case_images(path):
        return "case"
    if any(_case_images(p) for p in folders):
        return "cases"
    datasets = [p.name for p in folders if p.name != "images" and (p / "images").is_dir()
                or any(_case_images(q) for q in _entries(p) if q.is_dir())]
    if datasets:
        raise AnodiffError(f"{path}: holds datasets ({', '.join(datasets[:6])}), not cases; "
                           f"point at one of them, e.g. {path / datasets[0]}")
    files = [p for p in entries if p.is_file() and image_format(p) is not None]
    if files and all(_NNUNET_CHANNEL.match(image_stem(p)) for p in files) and (
            path.name.startswith("images") or (path.parent / "dataset.json").is_file()):
        return "nnunet"
    if files and not folders and all(image_format(p) == "dicom" for p in files):
        return "series"
    if files or any(_is_series(p) for p in folders):
        return "files"
    raise AnodiffError(
        f"{path}: found no images, case folders (<case>/<case>_<seq>.nii.gz), nnU-Net "
        "(imagesTr/, dataset.json), BIDS (sub-*/anat/) or DICOM series here; "
        "`anodiff data inspect` shows what each layout would read")


def match_sequences(
    found: Found, case: str, wanted: Sequence[str]
) -> tuple[CaseFiles, list[str]]:
    """``({sequence: paths}, missing)`` of ``case`` for the model's ``wanted`` sequences.

    A sequence is taken by its canonical name; the one sequence of a one-sequence model may
    also come from the case's only image when that image is unnamed. ``missing`` lists each
    sequence not found with the pattern looked for.
    """
    files = found.cases[case]
    images = {s: p for s, p in files.items() if s != SEGMENTATION}
    only = next(iter(images)) if len(images) == 1 else None
    chosen: CaseFiles = {}
    missing: list[str] = []
    for sequence in wanted:
        name = sequence_name(sequence)
        if name in images:
            chosen[sequence] = images[name]
        elif len(wanted) == 1 and only is not None and (_unnamed(only) or name == UNNAMED):
            chosen[sequence] = images[only]
        else:
            missing.append(f"{sequence} ({found.looked_for(sequence)})")
    if SEGMENTATION in files:
        chosen[SEGMENTATION] = files[SEGMENTATION]
    return chosen, missing


def _unnamed(name: str) -> bool:
    """An image name that says no sequence: a plain file, an nnU-Net channel index."""
    return name == UNNAMED or name.isdigit()


def _hint(kind: str) -> str:
    return {
        "cases": "expected <case>/<case>_<seq>.nii.gz",
        "case": "expected <case>_<seq>.nii.gz files named after the folder",
        "nnunet": "expected imagesTr/ or imagesTs/ with <case>_0000.nii.gz and a dataset.json",
        "bids": "expected sub-*/[ses-*/]anat/*_<suffix>.nii.gz",
        "files": "expected image files or DICOM series folders",
        "series": "expected DICOM files of one series",
        "file": "expected an image file",
    }[kind]


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as err:
        raise AnodiffError(f"{folder}: cannot list ({err.strerror or err})") from err


def _case_images(folder: Path, sequence_map: Mapping[str, str] | None = None) -> CaseFiles:
    """``{sequence: paths}`` of the ``<folder>_<seq>.*`` images in a case folder."""
    if not folder.is_dir():
        return {}
    found: CaseFiles = {}
    prefix = folder.name + "_"
    for path in _entries(folder):
        stem = image_stem(path)
        if stem.startswith(prefix) and image_format(path):
            found.setdefault(sequence_name(stem[len(prefix):], sequence_map), []).append(path)
    return found


def _is_series(folder: Path) -> bool:
    """Whether a folder holds DICOM files (a series) rather than anything else."""
    try:
        return any(p.is_file() and (p.suffix.lower() == ".dcm" or
                                    (not p.suffix and is_dicom_file(p)))
                   for p in folder.iterdir())
    except OSError:
        return False


def _cases(root: Path, sequence_map: Mapping[str, str] | None) -> Found:
    cases: dict[str, CaseFiles] = {}
    passed: list[tuple[Path, str]] = []
    for entry in _entries(root):
        if entry.is_dir():
            files = _case_images(entry, sequence_map)
            if files:
                cases[entry.name] = files
            else:
                passed.append((entry, f"no {entry.name}_<seq>.* image inside"))
        elif entry.name != "splits.csv" and not entry.name.endswith((".md", ".json", ".png")):
            passed.append((entry, "a file beside the case folders"))
    return Found("cases", root, cases, passed_over=tuple(passed),
                 channel_pattern="<case>/<case>_<sequence>.*")


def _case(folder: Path, sequence_map: Mapping[str, str] | None) -> Found:
    files = _case_images(folder, sequence_map)
    passed = [(p, f"not named {folder.name}_<seq>.*") for p in _entries(folder)
              if not any(p in paths for paths in files.values())]
    return Found("case", folder, {folder.name: files} if files else {},
                 passed_over=tuple(passed), channel_pattern=f"{folder.name}_<sequence>.*")


def _nnunet(path: Path, sequence_map: Mapping[str, str] | None) -> Found:
    """nnU-Net v2 raw data: the dataset root, or one of its ``images*`` folders."""
    if (path / "dataset.json").is_file() or (path / "imagesTr").is_dir() or (
            path / "imagesTs").is_dir():
        root, folders = path, [path / "imagesTr", path / "imagesTs"]
    else:
        root, folders = path.parent, [path]
    channels = _nnunet_channels(root / "dataset.json", sequence_map)
    cases: dict[str, CaseFiles] = {}
    splits: dict[str, str] = {}
    passed: list[tuple[Path, str]] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        labels_folder = folder.parent / folder.name.replace("images", "labels", 1)
        labels: dict[str, list[Path]] = {}  # listed once: {case: label files}
        for label in _entries(labels_folder) if labels_folder.is_dir() else []:
            labels.setdefault(image_stem(label), []).append(label)
        for entry in _entries(folder):
            match = _NNUNET_CHANNEL.match(image_stem(entry))
            if not match or not image_format(entry):
                passed.append((entry, "not <case>_<XXXX>.<ext> (XXXX: the channel index)"))
                continue
            case, channel = match["case"], match["channel"]
            if case in cases and splits.get(case) != _nnunet_split(folder):
                raise AnodiffError(f"{entry}: case '{case}' is in both imagesTr and imagesTs")
            sequence = channels.get(int(channel), channel)
            cases.setdefault(case, {}).setdefault(sequence, []).append(entry)
            splits[case] = _nnunet_split(folder)
            if case in labels:
                cases[case][SEGMENTATION] = labels[case]
    described = " / ".join(f"{k:04d} = {v}" for k, v in sorted(channels.items()))
    return Found("nnunet", root, cases, splits, tuple(passed),
                 channel_pattern="<case>_XXXX.* with dataset.json channel_names naming "
                                 f"<sequence> ({described or 'no dataset.json'})")


def _nnunet_split(folder: Path) -> str:
    return "test" if folder.name.endswith("Ts") else "train"


def _nnunet_channels(path: Path, sequence_map: Mapping[str, str] | None) -> dict[int, str]:
    """``{channel index: sequence}`` from dataset.json's ``channel_names`` (v2) or
    ``modality`` (v1); empty without the file."""
    if not path.is_file():
        return {}
    try:
        described = json.loads(path.read_text(encoding="utf-8"))
        names = described.get("channel_names", described.get("modality", {}))
        return {int(k): sequence_name(str(v), sequence_map) for k, v in names.items()}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError) as err:
        raise AnodiffError(f"{path}: unreadable nnU-Net dataset.json ({err}); it needs "
                           '"channel_names": {"0": "FLAIR", ...}') from err


def _bids(root: Path, sequence_map: Mapping[str, str] | None) -> Found:
    """BIDS raw data: anatomical images by subject (and session), lesion masks by label."""
    cases: dict[str, CaseFiles] = {}
    passed: list[tuple[Path, str]] = []
    for anat in sorted(root.glob("sub-*/anat")) + sorted(root.glob("sub-*/ses-*/anat")):
        session = anat.parent.name if anat.parent.name.startswith("ses-") else ""
        subject = anat.parent.parent.name if session else anat.parent.name
        case = f"{subject}_{session}" if session else subject
        for entry in _entries(anat):
            if not entry.name.endswith((".nii", ".nii.gz")):
                if not entry.name.endswith(".json"):
                    passed.append((entry, "not a NIfTI image"))
                continue
            stem = image_stem(entry)
            suffix = stem.rsplit("_", 1)[-1]
            if _BIDS_LESION.search(stem) and suffix in _BIDS_MASK_SUFFIXES:
                name = SEGMENTATION
            elif suffix == "T1w" and _BIDS_CONTRAST.search(stem):  # contrast-enhanced T1
                name = sequence_name("t1ce", sequence_map)
            else:
                name = sequence_name(suffix, sequence_map)
            cases.setdefault(case, {}).setdefault(name, []).append(entry)
    for mask in sorted((root / "derivatives").glob("**/sub-*/**/anat/*label-lesion*")):
        stem = image_stem(mask)
        parts = dict(p.split("-", 1) for p in stem.split("_") if "-" in p)
        case = "sub-" + parts.get("sub", "") + (f"_ses-{parts['ses']}" if "ses" in parts else "")
        if stem.rsplit("_", 1)[-1] in _BIDS_MASK_SUFFIXES and case in cases:
            cases[case].setdefault(SEGMENTATION, []).append(mask)
    return Found("bids", root, cases, passed_over=tuple(passed),
                 channel_pattern="sub-*/[ses-*/]anat/*_<sequence>.nii.gz",
                 spellings=_BIDS_SUFFIXES)


def _files(folder: Path, sequence_map: Mapping[str, str] | None) -> Found:
    """A flat folder: ``<case>_<seq>`` images group into cases, others are one-image cases."""
    cases: dict[str, CaseFiles] = {}
    passed: list[tuple[Path, str]] = []
    for entry in _entries(folder):
        if entry.is_dir() and not _is_series(entry):
            passed.append((entry, "a folder that is not a DICOM series"))
            continue
        if image_format(entry) is None:
            passed.append((entry, "not an image anodiff reads"))
            continue
        case, name = _split_name(image_stem(entry), sequence_map)
        cases.setdefault(case, {}).setdefault(name, []).append(entry)
    return Found("files", folder, cases, passed_over=tuple(passed),
                 channel_pattern="<case>_<sequence>.* (or one file per case for a "
                                 "one-sequence model)")


def _split_name(stem: str, sequence_map: Mapping[str, str] | None) -> tuple[str, str]:
    """(case, sequence) of a flat-folder file: ``sub01_T2w`` -> (sub01, t2); a name without
    a recognised sequence suffix is a case of its own with one unnamed sequence."""
    case, sep, suffix = stem.rpartition("_")
    if sep and case:
        name = sequence_name(suffix, sequence_map)
        if name in KNOWN_SEQUENCES or name == SEGMENTATION or (
                sequence_map and suffix.lower() in {k.lower() for k in sequence_map}):
            return case, name
    return stem, UNNAMED


def _series(folder: Path, sequence_map: Mapping[str, str] | None) -> Found:
    return Found("series", folder, {folder.name: {UNNAMED: [folder]}},
                 channel_pattern="a DICOM series folder")


def _file(path: Path, sequence_map: Mapping[str, str] | None) -> Found:
    _, name = _split_name(image_stem(path), sequence_map)
    if name == SEGMENTATION:
        raise AnodiffError(f"{path}: named like a segmentation (<case>_seg), not an image")
    return Found("file", path, {image_stem(path): {name: [path]}},
                 channel_pattern="a case folder <case>/<case>_<sequence>.* or a folder of "
                                 "<case>_<sequence>.* files; one file gives one sequence")
