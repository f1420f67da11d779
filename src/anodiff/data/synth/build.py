"""Build the embedded benchmark: cases, splits, files, statistics, manifest and previews.

Layout (the design brief's "volumes" layout, one dataset folder per track)::

    DIR/README.md, DIR/manifest.json       what was built, how, and its statistics
    DIR/overview.png, DIR/healthy.png      preview mosaics
    DIR/<track>/splits.csv                 case,split (train / val / test)
    DIR/<track>/stats.json                 track statistics and one row per case
    DIR/<track>/<case>/<case>_t1.nii.gz, _t2.nii.gz, _flair.nii.gz, _seg.nii.gz

Cases are generated independently (see :mod:`anodiff.data.synth.case`), in parallel
worker processes when more than one core is available; results do not depend on the
number of workers, and a fixed seed gives byte-identical files.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from anodiff._version import __version__
from anodiff.data.synth.anatomy import Grid, load_reference, reference_factor
from anodiff.data.synth.case import case_name, make_case
from anodiff.data.synth.contrasts import SEQUENCES
from anodiff.data.synth.lesions import TRACKS
from anodiff.data.synth.preview import Example, healthy_figure, tracks_figure
from anodiff.data.synth.stats import SPLITS, case_stats, stats_table, track_stats
from anodiff.data.synth.writer import write_nifti
from anodiff.errors import AnodiffError
from anodiff.progress import progress_bar

TRACK_NAMES = tuple(TRACKS)
SPLIT_SHARE = {"val": 0.1, "test": 0.3}
"""Shares of a track's cases in val and test; train takes the rest."""
LESION_SHARE = {"train": 1 / 3, "val": 0.6, "test": 0.75}
"""Share of each split's cases that have a lesion (the others are healthy)."""
SHIFTED_SPLITS = {"shift": ("test",)}
"""Track -> splits acquired on shifted scanners (acquisition.SHIFTED); all else standard."""
LABELS = {
    "tumour, shift": {"1": "necrotic core", "2": "oedema", "3": "enhancing rim"},
    "structural": {"1": "changed tissue (no lesion tissue of its own)"},
    "other tracks": {"1": "lesion"},
}
TOP_FILES = ("README.md", "manifest.json", "overview.png", "healthy.png")
MANIFEST_NAME = "anodiff-synth"


@dataclass(frozen=True)
class SynthConfig:
    """What to build; every field is recorded in ``manifest.json``.

    ``cases`` is per track; the default 100 gives 60 train cases (40 healthy, 20 with a
    lesion), 10 val (4 / 6) and 30 test (8 / 22): about 2,500 lesion-free training slices
    per track at ``size`` 64.
    """

    size: int = 64
    seed: int = 0
    cases: int = 100
    tracks: tuple[str, ...] = TRACK_NAMES

    def validate(self) -> None:
        """Raise :class:`AnodiffError` naming the option that is out of range."""
        if not 24 <= self.size <= 256:
            raise AnodiffError(f"--size {self.size}: expected 24 to 256 pixels")
        if self.seed < 0:
            raise AnodiffError(f"--seed {self.seed}: expected a non-negative integer")
        if self.cases < 4:
            raise AnodiffError(f"--cases {self.cases}: expected at least 4 cases per track "
                               "(train needs a healthy and a lesion case, val and test one)")
        unknown = [t for t in self.tracks if t not in TRACKS]
        if unknown or not self.tracks or len(set(self.tracks)) != len(self.tracks):
            raise AnodiffError(f"--tracks {','.join(self.tracks)}: expected distinct names "
                               f"from {', '.join(TRACK_NAMES)}")

    @property
    def command(self) -> str:
        """The command line that rebuilds this benchmark (into any folder DIR)."""
        return (f"anodiff data synth --out DIR --size {self.size} --seed {self.seed} "
                f"--cases {self.cases} --tracks {','.join(self.tracks)}")


@dataclass(frozen=True)
class _Job:
    """One case to generate and write (picklable, for worker processes)."""

    out: Path
    track: str
    index: int
    split: str
    lesion: bool
    seed: int
    size: int

    @property
    def shifted(self) -> bool:
        """Whether this case is acquired on a shifted scanner."""
        return self.split in SHIFTED_SPLITS.get(self.track, ())


def split_plan(cases: int) -> dict[str, dict[str, int]]:
    """Healthy and lesion case counts per split for ``cases`` (>= 4) cases per track."""
    counts = {split: max(1, round(share * cases)) for split, share in SPLIT_SHARE.items()}
    counts = {"train": cases - sum(counts.values()), **counts}
    plan = {}
    for split in SPLITS:
        n = counts[split]
        lesion = min(max(1, round(LESION_SHARE[split] * n)), max(n - 1, 1))
        plan[split] = {"healthy": n - lesion, "lesion": lesion}
    return plan


def roster(config: SynthConfig, track: str) -> list[tuple[int, str, bool]]:
    """(index, split, has lesion) of every case of ``track``, in index order.

    Split and status are dealt to the indices by a seeded shuffle, so that case numbers say
    nothing about either.
    """
    slots = [(split, lesion) for split, counts in split_plan(config.cases).items()
             for lesion in (False, True) for _ in range(counts["lesion" if lesion else "healthy"])]
    rng = np.random.default_rng(np.random.SeedSequence(config.seed,
                                                       spawn_key=(TRACK_NAMES.index(track),)))
    order = rng.permutation(len(slots))
    return [(index, *slots[slot]) for index, slot in enumerate(order)]


def build(out: str | Path, config: SynthConfig | None = None, *, overwrite: bool = False,
          workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """Generate the benchmark into ``out`` and return its manifest.

    ``out`` must be empty or new; with ``overwrite`` the paths a build writes (and the
    tracks of a previous build recorded in its manifest) are replaced, nothing else.
    ``workers`` processes generate cases (0: one per available core).
    """
    config = config or SynthConfig()
    config.validate()
    out = Path(out)
    _prepare(out, config, overwrite)
    grid = Grid(config.size)
    load_reference(reference_factor(grid))  # once here; forked workers inherit the cache
    rosters = {track: roster(config, track) for track in config.tracks}
    jobs = [_Job(out, track, index, split, lesion, config.seed, config.size)
            for track in config.tracks for index, split, lesion in rosters[track]]
    rows = _run(jobs, workers or _cores(), progress)

    voxel_ml = grid.spacing**3 / 1000.0
    stats = {}
    for track in config.tracks:
        track_rows = [row for row, job in zip(rows, jobs, strict=True) if job.track == track]
        folder = out / track
        lines = sorted(f"{row['case']},{row['split']}" for row in track_rows)
        (folder / "splits.csv").write_text("case,split\n" + "\n".join(lines) + "\n")
        stats[track] = track_stats(track_rows, voxel_ml)
        _write_json(folder / "stats.json", {"summary": stats[track], "cases": track_rows})
    manifest = {
        "name": MANIFEST_NAME,
        "command": config.command,
        "seed": config.seed,
        "size": config.size,
        "cases_per_track": config.cases,
        "tracks": list(config.tracks),
        "shape": list(grid.shape),
        "voxel_mm": grid.spacing,
        "sequences": list(SEQUENCES),
        "labels": LABELS,
        "shifted_splits": {t: list(s) for t, s in SHIFTED_SPLITS.items() if t in config.tracks},
        "splits": split_plan(config.cases),
        "versions": {name: version(name) for name in ("nilearn", "numpy", "scipy", "nibabel")}
        | {"anodiff": __version__},
        "stats": stats,
    }
    _write_json(out / "manifest.json", manifest)
    (out / "README.md").write_text(_readme(manifest, stats_table(stats)))
    _previews(out, config, rosters)
    return manifest


def _build_case(job: _Job) -> dict[str, Any]:
    """Generate one case, write its four files and return its statistics row."""
    case = make_case(job.track, job.index, seed=job.seed, size=job.size, lesion=job.lesion,
                     shifted=job.shifted)
    folder = job.out / job.track / case.name
    folder.mkdir(parents=True, exist_ok=True)
    for seq in SEQUENCES:
        write_nifti(folder / f"{case.name}_{seq}.nii.gz", case.images[seq], case.affine,
                    mask=False)
    write_nifti(folder / f"{case.name}_seg.nii.gz", case.seg, case.affine, mask=True)
    return {"case": case.name, "split": job.split, "lesion": job.lesion,
            "scanner": "shifted" if job.shifted else "standard", **case_stats(case)}


def _run(jobs: list[_Job], workers: int, progress: bool) -> list[dict[str, Any]]:
    """Run the jobs (in order of results) on ``workers`` processes, with a progress bar."""
    workers = min(workers, len(jobs))
    bar = {"total": len(jobs), "desc": "anodiff data synth", "unit": "case",
           "enabled": progress}
    if workers == 1:
        return [_build_case(job) for job in progress_bar(jobs, **bar)]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        results = pool.map(_build_case, jobs)  # submits (and forks) before tqdm's thread
        return list(progress_bar(results, **bar))


def _prepare(out: Path, config: SynthConfig, overwrite: bool) -> None:
    """Check that ``out`` may be written; with ``overwrite`` clear what the build writes."""
    if out.exists() and not out.is_dir():
        raise AnodiffError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise AnodiffError(f"{out}: folder is not empty; choose an empty or new folder, "
                               "or pass --overwrite to replace a previous build")
        for path in _owned_paths(out, config):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _owned_paths(out: Path, config: SynthConfig) -> list[Path]:
    """Paths a build writes, plus the track folders of a previous build found in ``out``."""
    tracks = set(config.tracks)
    try:
        previous = json.loads((out / "manifest.json").read_text())
        if previous.get("name") == MANIFEST_NAME:
            tracks |= {t for t in previous.get("tracks", []) if t in TRACKS}
    except (OSError, ValueError, AttributeError):
        pass  # no readable previous manifest: replace only what this build writes
    return [out / name for name in TOP_FILES] + [out / track for track in sorted(tracks)]


def _previews(out: Path, config: SynthConfig, rosters: dict[str, list]) -> None:
    """Write overview.png (two test lesion cases per track) and healthy.png (six train)."""
    examples = {}
    for track in config.tracks:
        chosen = [i for i, split, lesion in rosters[track] if split == "test" and lesion][:2]
        examples[track] = [_load_example(out, track, i) for i in chosen]
    tracks_figure(examples).save(out / "overview.png")
    first = config.tracks[0]
    healthy = [i for i, split, lesion in rosters[first] if split == "train" and not lesion][:6]
    healthy_figure([_load_example(out, first, i) for i in healthy]).save(out / "healthy.png")


def _load_example(out: Path, track: str, index: int) -> Example:
    """Read one written case back for a figure."""
    name = case_name(track, index)
    folder = out / track / name

    def read(suffix: str) -> np.ndarray:
        return np.asarray(nib.load(folder / f"{name}_{suffix}.nii.gz").get_fdata(dtype=np.float32))

    return Example(name, {seq: read(seq) for seq in SEQUENCES}, read("seg"))


def _cores() -> int:
    """CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _write_json(path: Path, data: Any) -> None:
    """Indented JSON with a final newline (stable bytes for a stable input)."""
    path.write_text(json.dumps(data, indent=2) + "\n")


def _readme(manifest: dict[str, Any], table: str) -> str:
    """The dataset folder's README: what it is, its layout, splits and statistics."""
    plan = manifest["splits"]
    split_lines = "\n".join(f"| {s} | {c['healthy']} | {c['lesion']} |" for s, c in plan.items())
    shape = "x".join(str(n) for n in manifest["shape"])
    return f"""# anodiff synthetic brain MRI benchmark

Built by anodiff {manifest['versions']['anodiff']} with

    {manifest['command']}

(seed {manifest['seed']}; the same command and package versions give byte-identical files).
Anatomy: the MNI152 2009 template shipped with nilearn {manifest['versions']['nilearn']},
warped per case; T2- and FLAIR-like images are synthesised from its tissue maps. See
anodiff's docs/data.md for how cases, lesions and contrasts are made, and for the limits.

## Layout
One dataset folder per track ({', '.join(manifest['tracks'])}), in anodiff's "volumes"
layout: `<track>/<case>/<case>_<seq>.nii.gz` for seq in t1, t2, flair, plus
`<case>_seg.nii.gz`; `<track>/splits.csv` (`case,split`); `<track>/stats.json`.
Volumes are {shape} voxels of {manifest['voxel_mm']:g} mm (axial slices last), skull-stripped
(0 outside the brain); intensities are stored as int16 x 0.001 (the NIfTI scale slope).
Masks are uint8, 0 = normal, >0 = lesion; tumour and shift labels: 1 necrotic core,
2 oedema, 3 enhancing rim. Healthy cases have an all-zero mask.

The structural track's anomalies (an enlarged ventricle, focal atrophy, a space-occupying
deformation) have no tissue of their own: every voxel shows normal CSF, grey or white
matter, and the mask holds the voxels where at least a quarter of the tissue changed. The
shift track has tumours, and its test cases (healthy and lesioned) come from another
scanner: another contrast curve, a stronger bias field, more noise, a coarser resolution;
train and val are acquired like every other track, so thresholds calibrated on val meet
the scanner change on test.

## Splits (cases per track)
| split | healthy | lesion |
|---|---|---|
{split_lines}

Unsupervised methods train on the lesion-free slices of train, weakly supervised ones on
all train slices with image labels; val is for early stopping and thresholds, test for
evaluation only.

## Statistics
{table}
Contrast = mean(lesion) / mean(reference) - 1 on the stored images; "surround" is grey and
white matter within 2 voxels of the lesion; |change| vs twin is the mean absolute contrast
against the same voxels rendered without the lesion (the exact change). The last columns
give the share of healthy brain voxels darker than the lesion's median (near 0 or 1: a
global threshold separates the lesion; near 0.5: it is inside the healthy range).
"""
