"""Every kind of bad input (tests/corpus/kinds.py) through the command line: a non-zero exit,
one line naming the file and the problem, no traceback, the inputs untouched, and in a
detect batch the good inputs still written. Then what the kinds cannot say in one line: the
inputs that must be *accepted*, read-only and full file systems, and the run-folder lock,
orphans and checkpoint fallback."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from kinds import KINDS, Kind, Outcome, Workspace, make_workspace, train_threshold
from PIL import Image as PILImage

from anodiff.locking import LOCK_FILE


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def ws(shared: Workspace, tmp_path: Path) -> Workspace:
    work = tmp_path / "work"
    work.mkdir()
    return Workspace(shared.volumes, shared.images, shared.run3, shared.run1,
                     shared.run_images, work)


def _hashes(*roots: Path) -> dict[Path, str]:
    """sha256 of every file under the roots (symlinks not followed)."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                out[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_the_corpus_is_large_enough() -> None:
    assert len(KINDS) >= 60 and len({kind.name for kind in KINDS}) == len(KINDS)


@pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])
def test_bad_input_gets_one_named_line(kind: Kind, ws: Workspace, shared: Workspace) -> None:
    args = kind.build(ws)
    inputs = [Path(a) for a in args[1:] if os.path.lexists(a) and not a.startswith("-")]
    before = _hashes(shared.volumes, shared.images, shared.run3, shared.run1, ws.work)
    before = {p: h for p, h in before.items() if p.parent != ws.work / "maps"}
    outcome = Outcome(args)
    assert not outcome.traceback, repr(outcome.exception)
    assert outcome.code != 0
    assert 1 <= len(outcome.lines) <= 2, outcome.lines
    message = " ".join(outcome.lines)
    assert re.search(kind.message, message), message
    if kind.names is not None:
        assert kind.names in message, message
    after = _hashes(shared.volumes, shared.images, shared.run3, shared.run1, ws.work)
    assert {p: after.get(p) for p in before} == before, "an input was changed"
    new_inside = [p for p in after if p not in before and any(
        i.is_dir() and i in p.parents for i in inputs)]
    assert not new_inside, f"written into an input: {new_inside[:3]}"
    if kind.batch:
        maps = sorted(p.name for p in (ws.work / "maps").iterdir())
        assert "good_a_anomaly_map.nii.gz" in maps and "good_b_anomaly_map.nii.gz" in maps
        assert (ws.work / "maps" / "scores.csv").read_text().count(",ok,") == 2


# --- what must be accepted -----------------------------------------------------------------


@pytest.mark.parametrize("variant", ["bom", "crlf"])
def test_splits_with_bom_or_crlf_are_accepted(variant: str, ws: Workspace) -> None:
    data = ws.copy_volumes()
    text = (data / "splits.csv").read_text()
    raw = ("\ufeff" + text).encode() if variant == "bom" else text.replace("\n", "\r\n").encode()
    (data / "splits.csv").write_bytes(raw)
    train_threshold(data, ws.work / "out")


def test_unicode_and_spaces_in_paths_are_accepted(ws: Workspace) -> None:
    case = ws.work / "Patient Ü 01" / "scan Ω.nii.gz"
    case.parent.mkdir()
    shutil.copy(ws.volume, case)
    outcome = Outcome(["detect", str(ws.run1), str(case), "--out", str(ws.work / "maps é")])
    assert outcome.code == 0, outcome.lines
    assert (ws.work / "maps é" / "scan Ω_anomaly_map.nii.gz").is_file()


@pytest.mark.parametrize("mode", ["LA", "I;16", "P"])
def test_png_alpha_16_bit_and_palette_are_accepted(mode: str, ws: Workspace) -> None:
    grey = (np.arange(32 * 32).reshape(32, 32) % 200).astype(np.uint8)
    image = PILImage.fromarray(grey).convert(mode) if mode != "I;16" else \
        PILImage.fromarray(grey.astype(np.uint16) * 300)
    path = ws.work / f"img_{mode.replace(';', '')}.png"
    image.save(path)
    outcome = Outcome(["detect", str(ws.run_images), str(path), "--out", str(ws.work / "maps")])
    assert outcome.code == 0, outcome.lines


def test_a_one_channel_run_evaluates_on_its_own_sequence(ws: Workspace) -> None:
    """A T1 run on a three-sequence dataset reads T1 (what it was trained on), not three
    channels; a dataset without T1 is a named error."""
    outcome = Outcome(["evaluate", str(ws.run1), "--data", str(ws.volumes), "--out",
                       str(ws.work / "ev"), "--resamples", "0"])
    assert outcome.code == 0, outcome.lines
    assert '"t1"' in (ws.work / "ev" / "metrics.json").read_text()
    data = ws.copy_volumes()
    for path in data.rglob("*_t1.nii.gz"):
        path.unlink()
    outcome = Outcome(["evaluate", str(ws.run1), "--data", str(data), "--out",
                       str(ws.work / "ev2")])
    assert outcome.code == 2 and "lack a sequence of ['t1']" in outcome.lines[0]


def test_evaluating_into_the_run_folder_is_accepted(ws: Workspace) -> None:
    """``--out RUN/eval`` (the README's example): the run folder is anodiff's own output."""
    run = ws.copy_run()
    outcome = Outcome(["evaluate", str(run), "--data", str(ws.volumes), "--out",
                       str(run / "eval"), "--resamples", "0"])
    assert outcome.code == 0, outcome.lines
    assert (run / "eval" / "metrics.json").is_file()


# --- file systems that refuse writes -------------------------------------------------------


@pytest.fixture
def small_mount(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (needs mount rights: root in a container; skipped otherwise)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    try:
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                              capture_output=True, check=False).returncode
    except OSError:  # no mount command
        made = -1
    if made != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root); the full-disk and "
                    "read-only cases are not exercised")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_read_only_output_is_named_before_any_work(ws: Workspace, small_mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    for args in (["detect", str(ws.run1), str(ws.volume), "--out", str(small_mount / "maps")],
                 ["train", "threshold", "--data", str(ws.volumes), "--out",
                  str(small_mount / "run"), "--preset", "quick", "--set", "data.size=32"],
                 ["evaluate", str(ws.run3), "--data", str(ws.volumes), "--out",
                  str(small_mount / "ev")]):
        outcome = Outcome(args)
        assert not outcome.traceback and outcome.code == 2, repr(outcome.exception)
        assert outcome.lines[0].startswith(f"anodiff: error: cannot write {small_mount}")
        assert outcome.lines[0].endswith(": read-only file system"), outcome.lines


def test_full_disk_leaves_no_truncated_output(ws: Workspace, small_mount: Path) -> None:
    big = ws.work / "big.nii.gz"
    volume = np.random.default_rng(0).random((64, 64, 64)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), big)  # its map (~1 MB) cannot fit in 64 KiB
    outcome = Outcome(["detect", str(ws.run1), str(big), "--out", str(small_mount / "maps")])
    assert not outcome.traceback, repr(outcome.exception)
    assert outcome.code != 0
    assert any("no space left on device" in line for line in outcome.lines), outcome.lines
    left = sorted(p.name for p in (small_mount / "maps").rglob("*"))
    assert not any(name.startswith(".tmp-") or name.endswith(".nii.gz") for name in left), left
    scores = small_mount / "maps" / "scores.csv"  # the disk was too full for it: absent, or
    assert not scores.exists() or scores.read_text().startswith("input,")  # never truncated


def test_full_disk_in_train_and_evaluate_is_one_line(ws: Workspace, small_mount: Path) -> None:
    for args in (["train", "autoencoder", "--data", str(ws.volumes), "--out",
                  str(small_mount / "run"), "--preset", "quick", "--set", "data.size=32"],
                 ["evaluate", str(ws.run3), "--data", str(ws.volumes), "--out",
                  str(small_mount / "ev"), "--resamples", "0"]):
        outcome = Outcome(args)
        assert not outcome.traceback and outcome.code == 2, repr(outcome.exception)
        assert "no space left on device" in outcome.lines[0], outcome.lines
        assert ".tmp-" not in outcome.lines[0]  # the final path is named, not the temporary
        assert not [p for p in small_mount.rglob(".tmp-*")], "a temporary output was left"


# --- run folders ---------------------------------------------------------------------------


def test_a_held_lock_refuses_a_second_train(ws: Workspace) -> None:
    run = ws.work / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(
        f'{{"pid": {os.getppid()}, "host": "{os.uname().nodename}", "started": {time.time()}}}')
    outcome = Outcome(["train", "threshold", "--data", str(ws.volumes), "--out", str(run),
                       "--preset", "quick", "--set", "data.size=32"])
    assert outcome.code == 2 and f"in use by process {os.getppid()}" in outcome.lines[0]
    assert not (run / "model").exists()


def test_a_stale_lock_is_taken_over_and_orphans_are_removed(ws: Workspace) -> None:
    run = ws.work / "run"
    (run / "checkpoints" / ".tmp-99999-step_0000200").mkdir(parents=True)
    (run / "checkpoints" / ".step_0000100.tmp-4242").mkdir()  # an earlier version's name
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run / LOCK_FILE).write_text(
        f'{{"pid": {dead.pid}, "host": "{os.uname().nodename}", "started": 0}}')
    train_threshold(ws.volumes, run)
    assert not (run / LOCK_FILE).exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == []
    log = (run / "train.log").read_text()
    assert f"took over the lock of process {dead.pid}" in log
    assert "left behind by an interrupted write" in log


def test_raising_steps_resumes_and_other_changes_are_named(ws: Workspace) -> None:
    run = ws.work / "run"
    base = ["train", "autoencoder", "--data", str(ws.volumes), "--out", str(run), "--preset",
            "quick", "--set", "data.size=32"]
    assert Outcome([*base, "--set", "method.train.steps=4"]).code == 0
    assert Outcome([*base, "--set", "method.train.steps=6"]).code == 0  # train longer
    log = (run / "train.log").read_text()
    assert "resumed from step 4" in log
    refused = Outcome([*base, "--set", "method.train.steps=6", "--set", "method.train.lr=0.5"])
    assert refused.code == 2
    assert "method.train.lr" in refused.lines[0] and "-> 0.5" in refused.lines[0]


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous(ws: Workspace) -> None:
    run = ws.work / "run"
    base = ["train", "autoencoder", "--data", str(ws.volumes), "--out", str(run), "--preset",
            "quick", "--set", "data.size=32", "--set", "method.train.checkpoint_every=2",
            "--set", "method.train.keep_checkpoints=3"]
    assert Outcome([*base, "--set", "method.train.steps=4"]).code == 0
    folder = next(p for p in run.rglob("checkpoints") if p.is_dir())
    latest = folder / (folder / "latest").read_text().strip()
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert Outcome([*base, "--set", "method.train.steps=6"]).code == 0
    log = (run / "train.log").read_text()
    assert f"cannot resume from {latest.name}" in log and "resumed from step 2" in log
