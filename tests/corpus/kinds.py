"""The malformed-input corpus (issue 19): every kind of bad input a user can bring, built in
a temporary folder (never committed as binaries), with the command it is given to and the
one-line message it must get.

A :class:`Kind` builds its bad input inside a :class:`Workspace` (a tiny volumes dataset, an
images dataset and trained runs, shared by all kinds and never modified), and returns the
``anodiff`` arguments. ``message`` is a regular expression the error line must match, and
``names`` a text it must contain (the file or key at fault; by default the last bad path
the builder made). ``batch`` kinds are ``detect`` runs where the bad input sits between two
good ones: both good ones must still be written.
"""

from __future__ import annotations

import copy
import gzip
import json
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import yaml
from PIL import Image as PILImage
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from anodiff.cli import app, error_line
from anodiff.data.synth import SynthConfig, build
from anodiff.errors import AnodiffError


@dataclass
class Workspace:
    """Shared, read-only material: a volumes dataset, an images dataset, and runs on them."""

    volumes: Path  # tumour track, 8 cases, 32^3, flair/t1/t2 + seg
    images: Path  # images/<id>.png, masks/, labels.csv
    run3: Path  # threshold on all three sequences
    run1: Path  # threshold on t1 only (takes a single volume)
    run_images: Path  # threshold on the images dataset
    work: Path  # a fresh folder per kind (set by the test)

    @property
    def case(self) -> Path:
        return self.volumes / "tumour-0000"

    @property
    def volume(self) -> Path:
        return self.case / "tumour-0000_t1.nii.gz"

    def copy_volumes(self) -> Path:
        """A private copy of the volumes dataset, to break."""
        target = self.work / "data"
        shutil.copytree(self.volumes, target)
        return target

    def copy_images(self) -> Path:
        target = self.work / "images_data"
        shutil.copytree(self.images, target)
        return target

    def copy_run(self, run: Path | None = None) -> Path:
        target = self.work / "run"
        shutil.copytree(run or self.run3, target)
        return target


Build = Callable[[Workspace], list[str]]
RUNNER = CliRunner()


class Outcome:
    """What a user sees from ``anodiff ARGS`` (as :func:`anodiff.cli.run` prints it)."""

    def __init__(self, args: list[str]) -> None:
        result = RUNNER.invoke(app, args)
        self.exception = result.exception
        if isinstance(result.exception, AnodiffError | OSError):
            self.code, self.lines = 2, [f"anodiff: error: {error_line(result.exception)}"]
        else:
            self.code = result.exit_code
            self.lines = [line for line in (result.stderr or "").splitlines()
                          if line.startswith("failed:")]
        self.traceback = result.exception is not None and not isinstance(
            result.exception, AnodiffError | OSError | SystemExit)


def train_threshold(data: Path, out: Path, *sets: str) -> None:
    """Train the threshold baseline (no network: instant) into ``out``."""
    args = ["train", "threshold", "--data", str(data), "--out", str(out), "--preset", "quick",
            "--set", "data.size=32", *[a for s in sets for a in ("--set", s)]]
    outcome = Outcome(args)
    assert outcome.code == 0, outcome.lines


def make_workspace(root: Path) -> Workspace:
    """Build the shared material under ``root``: a tiny tumour track, an images dataset,
    and threshold runs on both (about 3 s)."""
    build(root / "synth", SynthConfig(size=32, cases=8, tracks=("tumour",)), workers=1)
    volumes = root / "synth" / "tumour"
    images = root / "images"
    (images / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        PILImage.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(
            images / "images" / f"a{i}.png")
    (images / "labels.csv").write_text("id,label,split\n" + "".join(
        f"a{i},0,{'train' if i < 3 else 'val' if i == 3 else 'test'}\n" for i in range(6)))
    train_threshold(volumes, root / "run3")
    train_threshold(volumes, root / "run1", "data.sequences=[t1]")
    train_threshold(images, root / "run_images")
    return Workspace(volumes, images, root / "run3", root / "run1", root / "run_images",
                     root / "unset")


@dataclass(frozen=True)
class Kind:
    """One kind of bad input: how to build it, and the error it must get."""

    name: str
    build: Build
    message: str
    names: str | None = None  # text the message must contain; None: just the regex
    batch: bool = False  # a detect batch: good inputs around the bad one must be written


# --- helpers -------------------------------------------------------------------------------


def _nifti(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


def _singular_affine(ws: Workspace) -> list[str]:
    """An all-zero sform (code 1) and no qform: a broken header nibabel still loads."""
    img = nib.Nifti1Image(_t1(ws), None)
    img.header.set_sform(np.zeros((4, 4)), 1)
    img.header.set_qform(None, 0)
    path = ws.work / "singular.nii.gz"
    nib.save(img, path)
    return _detect(ws, path)


def _t1(ws: Workspace) -> np.ndarray:
    return np.asarray(nib.load(ws.volume).dataobj, dtype=np.float32)


def _detect(ws: Workspace, bad: Path | str, run: Path | None = None) -> list[str]:
    """A batch: a good volume, the bad input, another good volume."""
    good_a = ws.work / "good_a.nii.gz"
    good_b = ws.work / "good_b.nii.gz"
    shutil.copy(ws.volume, good_a)
    shutil.copy(ws.volumes / "tumour-0001" / "tumour-0001_t1.nii.gz", good_b)
    return ["detect", str(run or ws.run1), str(good_a), str(bad), str(good_b),
            "--out", str(ws.work / "maps")]


def _train(data: Path, out: Path, *sets: str, method: str = "threshold") -> list[str]:
    args = ["train", method, "--data", str(data), "--out", str(out), "--preset", "quick",
            "--set", "data.size=32"]
    for value in sets:
        args += ["--set", value]
    return args


def _bad_file(name: str, content: bytes) -> Build:
    def build(ws: Workspace) -> list[str]:
        path = ws.work / name
        path.write_bytes(content)
        return _detect(ws, path)
    return build


def _bad_volume(name: str, make: Callable[[np.ndarray], np.ndarray]) -> Build:
    def build(ws: Workspace) -> list[str]:
        return _detect(ws, _nifti(ws.work / name, make(_t1(ws))))
    return build


def _truncated_gzip(ws: Workspace) -> list[str]:
    raw = ws.volume.read_bytes()
    path = ws.work / "cut.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])
    return _detect(ws, path)


def _absurd_header(ws: Workspace) -> list[str]:
    img = nib.load(ws.volume)
    header = img.header.copy()
    raw = bytearray(header.binaryblock)
    raw[42:44] = np.int16(30000).tobytes()  # dim[1]: 30,000 voxels along x, data unchanged
    path = ws.work / "absurd.nii"
    path.write_bytes(bytes(raw) + b"\0" * 4 + np.asarray(img.dataobj, np.float32).tobytes())
    return _detect(ws, path)


def _folder_named_like_a_file(ws: Workspace) -> list[str]:
    path = ws.work / "scan.nii.gz"
    path.mkdir()
    return _detect(ws, path)


def _symlink_loop(ws: Workspace) -> list[str]:
    path = ws.work / "loop.nii.gz"
    path.symlink_to(ws.work / "loop.nii.gz")
    return _detect(ws, path)


def _pickled_npy(ws: Workspace) -> list[str]:
    path = ws.work / "pickled.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return _detect(ws, path)


def _png_for_volume_model(ws: Workspace) -> list[str]:
    path = ws.work / "slice.png"
    PILImage.fromarray(np.full((32, 32), 100, np.uint8)).save(path)
    return _detect(ws, path)


def _png_bomb(ws: Workspace) -> list[str]:
    path = ws.work / "bomb.png"
    PILImage.new("L", (1, 1)).save(path)
    raw = bytearray(path.read_bytes())
    raw[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR width, height: 10^10 pixels
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")  # a valid chunk CRC
    path.write_bytes(bytes(raw))
    return ["detect", str(ws.run_images), str(ws.images / "images" / "a0.png"), str(path),
            "--out", str(ws.work / "maps")]


def _dicom_series(ws: Workspace, count: int = 4) -> Path:
    """A small DICOM series built from pydicom's MR_small test file."""
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    pixels = base.pixel_array.copy()
    folder = ws.work / "series"
    folder.mkdir()
    for k in range(count):
        ds = copy.deepcopy(base)
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.PixelData = (pixels + 10 * k).astype(np.uint16).tobytes()
        ds.save_as(folder / f"IM{k}.dcm")
    return folder


def _dicom_junk_file(ws: Workspace) -> list[str]:
    folder = _dicom_series(ws, 5)
    (folder / "IM2.dcm").write_bytes(b"\0" * 64 + b"junk")  # a slice replaced by junk
    return _detect(ws, folder)


def _dicom_truncated_file(ws: Workspace) -> list[str]:
    folder = _dicom_series(ws, 5)
    raw = (folder / "IM3.dcm").read_bytes()
    (folder / "IM3.dcm").write_bytes(raw[: len(raw) - 2000])  # pixel data cut short
    return _detect(ws, folder)


def _dicom_mixed_series(ws: Workspace) -> list[str]:
    folder = _dicom_series(ws)
    ds = pydicom.dcmread(folder / "IM1.dcm")
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "IM1.dcm")
    return _detect(ws, folder)


def _dicom_uneven(ws: Workspace) -> list[str]:
    folder = _dicom_series(ws)
    ds = pydicom.dcmread(folder / "IM3.dcm")
    ds.ImagePositionPatient = [0.0, 0.0, 20.0]
    ds.save_as(folder / "IM3.dcm")
    return _detect(ws, folder)


def _not_dicom_folder(ws: Workspace) -> list[str]:
    folder = ws.work / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    return _detect(ws, folder)


# --- dataset folders -----------------------------------------------------------------------


def _splits(text: str, encoding: str = "utf-8") -> Build:
    def build(ws: Workspace) -> list[str]:
        data = ws.copy_volumes()
        cases = sorted(p.name for p in data.iterdir() if p.is_dir())
        rows = text.replace("CASE0", cases[0]).replace("CASE1", cases[1])
        rest = "".join(f"{c},train\n" for c in cases[2:])
        (data / "splits.csv").write_bytes((rows + rest).encode(encoding))
        return _train(data, ws.work / "out")
    return build


def _labels(text: str) -> Build:
    def build(ws: Workspace) -> list[str]:
        data = ws.copy_images()
        (data / "labels.csv").write_text(text)
        return _train(data, ws.work / "out")
    return build


def _case_file(change: Callable[[Path, Workspace], None]) -> Build:
    def build(ws: Workspace) -> list[str]:
        data = ws.copy_volumes()
        change(data / "tumour-0003", ws)
        return _train(data, ws.work / "out", "data.on_error=raise")
    return build


def _drop_t2(case: Path, ws: Workspace) -> None:
    (case / f"{case.name}_t2.nii.gz").unlink()


def _extra_sequence(case: Path, ws: Workspace) -> None:
    shutil.copy(case / f"{case.name}_t1.nii.gz", case / f"{case.name}_dwi.nii.gz")


def _other_shape(case: Path, ws: Workspace) -> None:
    _nifti(case / f"{case.name}_t2.nii.gz", np.ones((30, 32, 32), np.float32))


def _other_affine(case: Path, ws: Workspace) -> None:
    img = nib.load(case / f"{case.name}_t2.nii.gz")
    moved = img.affine.copy()
    moved[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), moved), case / f"{case.name}_t2.nii.gz")


def _seg(values: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path, Workspace], None]:
    def change(case: Path, ws: Workspace) -> None:
        path = case / f"{case.name}_seg.nii.gz"
        img = nib.load(path)
        seg = np.asarray(img.dataobj, np.float32)
        seg[10:13, 10:13, 10:13] = 1.0  # a lesion, so the change is not lost on zeros
        nib.save(nib.Nifti1Image(values(seg), img.affine), path)
    return change


def _nan_in_dataset(case: Path, ws: Workspace) -> None:
    path = case / f"{case.name}_flair.nii.gz"
    img = nib.load(path)
    array = np.asarray(img.dataobj, np.float32)
    array[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(array, img.affine), path)


# --- configs and settings ------------------------------------------------------------------


def _config(content: bytes) -> Build:
    def build(ws: Workspace) -> list[str]:
        path = ws.work / "config.yaml"
        path.write_bytes(content)
        return [*_train(ws.volumes, ws.work / "out"), "--config", str(path)]
    return build


def _setting(*sets: str, method: str = "threshold") -> Build:
    def build(ws: Workspace) -> list[str]:
        return _train(ws.volumes, ws.work / "out", *sets, method=method)
    return build


# --- run folders ---------------------------------------------------------------------------


def _run_edit(edit: Callable[[Path], None]) -> Build:
    def build(ws: Workspace) -> list[str]:
        run = ws.copy_run()
        edit(run)
        return ["evaluate", str(run), "--data", str(ws.volumes), "--out", str(ws.work / "ev"),
                "--resamples", "0"]
    return build


def _weights(run: Path) -> Path:
    return next((run / "model").glob("*.safetensors"))


def _truncate_weights(run: Path) -> None:
    path = _weights(run)
    path.write_bytes(path.read_bytes()[:40])


def _flip_weight_byte(run: Path) -> None:
    path = _weights(run)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))


def _meta(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        path = run / "model" / "meta.json"
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))
    return edit


def _run_yaml(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        path = run / "run.yaml"
        spec = yaml.safe_load(path.read_text())
        change(spec)
        path.write_text(yaml.safe_dump(spec))
    return edit


def _swap_model(ws: Workspace) -> list[str]:
    run = ws.copy_run()
    shutil.rmtree(run / "model")
    shutil.copytree(ws.run1 / "model", run / "model")  # a 1-channel model in a 3-channel run
    return ["evaluate", str(run), "--data", str(ws.volumes), "--out", str(ws.work / "ev")]


# --- outputs -------------------------------------------------------------------------------


def _train_into_data(ws: Workspace) -> list[str]:
    data = ws.copy_volumes()
    return _train(data, data / "run1")


def _evaluate_into_case(ws: Workspace) -> list[str]:
    data = ws.copy_volumes()
    return ["evaluate", str(ws.run3), "--data", str(data), "--out", str(data / "tumour-0000")]


def _detect_into_input(ws: Workspace) -> list[str]:
    case = ws.work / "case"
    shutil.copytree(ws.case, case)
    return ["detect", str(ws.run3), str(case), "--out", str(case / "maps")]


def _export_into_run(ws: Workspace) -> list[str]:
    run = ws.copy_run()
    return ["export", str(run), "--out", str(run / "model" / "copy")]


def _empty(folder: Path) -> Path:
    folder.mkdir()
    return folder


KINDS: tuple[Kind, ...] = (
    # files given to detect (a batch: good, bad, good)
    Kind("missing file", lambda ws: _detect(ws, ws.work / "absent.nii.gz"), r"not found",
         "absent.nii.gz", True),
    Kind("zero-byte NIfTI", _bad_file("empty.nii.gz", b""), r"unreadable NIfTI",
         "empty.nii.gz", True),
    Kind("garbage gzip", _bad_file("garbage.nii.gz", b"\x1f\x8b" + bytes(range(200))),
         r"unreadable NIfTI", "garbage.nii.gz", True),
    Kind("gzip of garbage", _bad_file("text.nii.gz", gzip.compress(b"hello" * 100)),
         r"unreadable NIfTI", "text.nii.gz", True),
    Kind("truncated gzip", _truncated_gzip, r"unreadable NIfTI", "cut.nii.gz", True),
    Kind("absurd header dimensions", _absurd_header, r"unreadable NIfTI", "absurd.nii", True),
    Kind("NaN voxels", _bad_volume("nan.nii.gz", lambda a: np.where(a > a.mean(), np.nan, a)),
         r"NaN/Inf voxels", "nan.nii.gz", True),
    Kind("Inf voxels", _bad_volume("inf.nii.gz", lambda a: np.where(a > a.mean(), np.inf, a)),
         r"NaN/Inf voxels", "inf.nii.gz", True),
    Kind("4-D volume", _bad_volume("4d.nii.gz", lambda a: np.stack([a, a], -1)),
         r"4-D image", "4d.nii.gz", True),
    Kind("2-D NIfTI for a volume model", _bad_volume("flat.nii.gz", lambda a: a[:, :, 10]),
         r"expected a 3-D volume", "flat.nii.gz", True),
    Kind("complex voxels", _bad_volume("complex.nii.gz", lambda a: a.astype(np.complex64)),
         r"complex voxels", "complex.nii.gz", True),
    Kind("empty volume", _bad_volume("zero.nii.gz", lambda a: np.zeros((0, 32, 32), np.float32)),
         r"empty image|unreadable", "zero.nii.gz", True),
    Kind("constant volume", _bad_volume("constant.nii.gz", lambda a: np.ones_like(a)),
         r"no foreground \(every voxel is 1\)", "constant.nii.gz", True),
    Kind("singular affine", _singular_affine,
         r"affine is singular", "singular.nii.gz", True),
    Kind("not an image type", _bad_file("notes.txt", b"hello"), r"unsupported file type",
         "notes.txt", True),
    Kind("folder named like a file", _folder_named_like_a_file, r"found no images",
         "scan.nii.gz", True),
    Kind("symlink loop", _symlink_loop, r"symbolic links|not found|unreadable",
         "loop.nii.gz", True),
    Kind("pickled NumPy file", _pickled_npy, r"pickle|dtype object|expected numbers",
         "pickled.npy", True),
    Kind("2-D PNG for a volume model", _png_for_volume_model, r"expected a 3-D volume",
         "slice.png", True),
    Kind("PNG decompression bomb", _png_bomb, r"DecompressionBombError",
         "bomb.png"),
    Kind("DICOM: not DICOM", _bad_file("fake.dcm", b"not dicom at all" * 10),
         r"unreadable DICOM|not DICOM|no DICOM", "fake.dcm", True),
    Kind("DICOM: junk file in a series", _dicom_junk_file, r"not evenly spaced.*IM2\.dcm",
         "IM2.dcm", True),
    Kind("DICOM: truncated file in a series", _dicom_truncated_file,
         r"IM3\.dcm", "IM3.dcm", True),
    Kind("DICOM: mixed series", _dicom_mixed_series, r"holds 2 series", "series", True),
    Kind("DICOM: uneven spacing", _dicom_uneven, r"not evenly spaced", "series", True),
    Kind("DICOM: folder without images", _not_dicom_folder, r"found no images", "notes", True),
    # dataset folders given to train
    Kind("splits.csv: unknown split", _splits("case,split\nCASE0,tset\nCASE1,test\n"),
         r"unknown split 'tset'", "splits.csv:2"),
    Kind("splits.csv: duplicate case", _splits("case,split\nCASE0,train\nCASE0,test\n"),
         r"appears twice", "splits.csv:3"),
    Kind("splits.csv: missing column", _splits("case\nCASE0\nCASE1\n"),
         r"missing column\(s\) \['split'\]", "splits.csv"),
    Kind("splits.csv: semicolons", _splits("case;split\nCASE0;train\nCASE1;test\n"),
         r"missing column", "splits.csv"),
    Kind("splits.csv: Latin-1 bytes", _splits("case,split\nCASE0,tr\xe4in\nCASE1,test\n",
                                              "latin-1"), r"unreadable CSV", "splits.csv"),
    Kind("splits.csv: unbalanced quote", _splits('case,split\n"CASE0,train\nCASE1,test\n'),
         r"unbalanced quote", "splits.csv:2"),
    Kind("splits.csv: unknown case", _splits("case,split\nCASE0,train\nCASE1,test\nghost,val\n"),
         r"cases without a file: \['ghost'\]", "splits.csv"),
    Kind("labels.csv: bad label", _labels("id,label,split\na0,2,train\na1,0,train\na2,,test\n"
                                          "a3,0,val\n"), r"label '2'", "labels.csv:2"),
    Kind("labels.csv: unknown id", _labels("id,label,split\nzz,0,train\n"),
         r"ids without a file", "labels.csv"),
    Kind("a case lacks a sequence", _case_file(_drop_t2), r"lack a sequence.*on_missing=skip",
         "tumour-0003"),
    Kind("an extra sequence in one case", _case_file(_extra_sequence),
         r"lack a sequence of \['dwi'", "dwi"),
    Kind("sequences of other shapes", _case_file(_other_shape), r"shape .* differs",
         "tumour-0003_t2.nii.gz"),
    Kind("sequences with other affines", _case_file(_other_affine), r"affine differs",
         "tumour-0003_t2.nii.gz"),
    Kind("non-binary fractional mask", _case_file(_seg(lambda s: s * 0.5)), r"not a label map",
         "tumour-0003_seg.nii.gz"),
    Kind("negative mask", _case_file(_seg(lambda s: -s)), r"not a label map",
         "tumour-0003_seg.nii.gz"),
    Kind("NaN in a training volume", _case_file(_nan_in_dataset), r"NaN/Inf voxels",
         "tumour-0003_flair.nii.gz"),
    Kind("dataset folder not found", lambda ws: _train(ws.work / "nope", ws.work / "out"),
         r"dataset folder not found", "nope"),
    Kind("empty dataset folder", lambda ws: _train(_empty(ws.work / "empty"), ws.work / "out"),
         r"found no images, case folders .*nnU-Net .*BIDS"),
    # configs and settings
    Kind("unknown method", lambda ws: ["train", "nosuch", "--data", str(ws.volumes), "--out",
                                       str(ws.work / "out")], r"nosuch", "nosuch"),
    Kind("unknown preset", lambda ws: ["train", "threshold", "--data", str(ws.volumes), "--out",
                                       str(ws.work / "out"), "--preset", "turbo"],
         r"unknown preset 'turbo'"),
    Kind("unknown key", _setting("method.modee=bright"), r"method.modee: unknown setting"),
    Kind("wrong type", _setting("method.bins=many"), r"method.bins: expected an integer"),
    Kind("bad YAML", _config(b"method: [unclosed\n"), r"not valid YAML .* line", "config.yaml"),
    Kind("python YAML tag", _config(b"method: !!python/object/apply:os.system ['true']\n"),
         r"not valid YAML \(could not determine a constructor", "config.yaml"),
    Kind("non-UTF-8 config", _config("method:\n  mode: br\xe9\n".encode("latin-1")),
         r"not UTF-8", "config.yaml"),
    Kind("a config that is a list", _config(b"- a\n- b\n"), r"top level must be a mapping",
         "config.yaml"),
    Kind("huge data.size", _setting("data.size=100000"), r"size must be in \[8, 1024\]"),
    Kind("channel out of range", _setting("method.channel=7"), r"channel 7 does not exist"),
    Kind("negative FPR", _setting("method.fpr=-0.5"), r"fpr must be in \(0, 1\)"),
    Kind("NaN learning rate", _setting("method.train.lr=nan", method="autoencoder"),
         r"method.train.lr: expected a number"),
    Kind("NaN score percentile", _setting("method.score_percentile=nan"),
         r"score_percentile: expected a number"),
    Kind("duplicate sequences", _setting("data.sequences=[t1,t1]"),
         r"sequences must be distinct"),
    Kind("unknown sequence", _setting("data.sequences=[dwi]"), r"lack a sequence of \['dwi'\]"),
    Kind("evaluate FPR outside (0, 1)",
         lambda ws: ["evaluate", str(ws.run3), "--data", str(ws.volumes), "--out",
                     str(ws.work / "ev"), "--fpr", "1.5"], r"--fpr: .* must be in \(0, 1\)"),
    # run folders
    Kind("not a run folder", lambda ws: ["evaluate", str(ws.volumes), "--data",
                                         str(ws.volumes), "--out", str(ws.work / "ev")],
         r"not a run folder", "run.yaml"),
    Kind("run without a model", _run_edit(lambda run: shutil.rmtree(run / "model")),
         r"training has not finished"),
    Kind("truncated weights", _run_edit(_truncate_weights), r"checksum mismatch",
         ".safetensors"),
    Kind("tampered weights", _run_edit(_flip_weight_byte), r"checksum mismatch",
         ".safetensors"),
    Kind("swapped model", _swap_model, r"lists the sequences .* takes 1 channel", "run.yaml"),
    Kind("meta.json names a file outside", _run_edit(_meta(
        lambda m: m.update(files={"../../x.safetensors": "0" * 64}))),
        r"not a .safetensors file of this checkpoint folder", "meta.json"),
    Kind("meta.json input_shape 'abc'", _run_edit(_meta(lambda m: m.update(input_shape="abc"))),
         r"input_shape must be three positive integers", "meta.json"),
    Kind("corrupt meta.json", _run_edit(lambda run: (run / "model" / "meta.json").write_text(
        "{not json")), r"corrupted metadata", "meta.json"),
    Kind("run.yaml names another method", _run_edit(_run_yaml(
        lambda s: s.update(method="autoencoder"))), r"says method 'autoencoder'", "run.yaml"),
    Kind("run.yaml with duplicate sequences", _run_edit(_run_yaml(
        lambda s: s["data"].update(sequences=["t1", "t1"]))), r"sequences must be distinct",
        "run.yaml"),
    Kind("run.yaml with other settings", _run_edit(_run_yaml(
        lambda s: s["method_config"].update(bins=3))), r"method_config differs .*bins",
        "run.yaml"),
    Kind("run.yaml given map steps by hand", _run_edit(_run_yaml(
        lambda s: s.update(postprocess={"interslice_median": 3}))),
        r"map steps interslice_median=3, but .* calibrated with none; restore run.yaml",
        "run.yaml"),
    Kind("meta.json map_steps with a mask step", _run_edit(_meta(
        lambda m: m.update(map_steps={"min_lesion_ml": 0.1}))),
        r"map_steps holds mask steps \(min_lesion_ml=0.1\)", "meta.json"),
    # outputs inside inputs
    Kind("train --out inside the dataset", _train_into_data,
         r"is or lies inside the input", "run1"),
    Kind("evaluate --out into a case folder", _evaluate_into_case,
         r"is or lies inside the input", "tumour-0000"),
    Kind("detect --out inside an input folder", _detect_into_input,
         r"is or lies inside the input", "maps"),
    Kind("export --out inside the run", _export_into_run, r"is or lies inside the input",
         "copy"),
    # a command the run's method cannot do
    Kind("distill of a method without a diffusion decoder",
         lambda ws: ["distill", str(ws.run3), "--out", str(ws.work / "student")],
         r"threshold's decoder .* no few-step student", "threshold"),
    Kind("export --preset the method does not have",
         lambda ws: ["export", str(ws.run3), "--out", str(ws.work / "fast"), "--preset", "turbo"],
         r"threshold: unknown preset 'turbo'", "run3"),
    # post-processing detect cannot apply honestly
    Kind("detect --postprocess with a map step",
         lambda ws: [*_detect(ws, ws.volume)[:-2], "--out", str(ws.work / "maps"),
                     "--postprocess", "interslice_median=3"],
         r"interslice_median=3 would change the maps .* mask steps only", "--postprocess"),
    Kind("detect --postprocess min_lesion_ml on a 2-D image",
         lambda ws: ["detect", str(ws.run_images), str(ws.images / "images" / "a0.png"),
                     "--out", str(ws.work / "maps"), "--postprocess", "min_lesion_ml=0.1"],
         r"failed: .*a0.png: min_lesion_ml needs the voxel size of case 'a0'", "a0.png"),
    Kind("export --postprocess with a map step but no refit",
         lambda ws: ["export", str(ws.run3), "--out", str(ws.work / "median"), "--postprocess",
                     "interslice_median=3"],
         r"interslice_median=3: the thresholds must be calibrated .* add --refit DATA",
         "--postprocess"),
)
