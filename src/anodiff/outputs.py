"""Where anodiff writes: output folders checked before any work starts, files replaced
atomically, and every write error named.

Rules shared by ``train``, ``evaluate``, ``detect``, ``export`` and ``benchmark``:

- an output folder may not be an input, nor lie inside an input folder (a dataset, a case
  folder, a DICOM series, a run folder being read): nothing writes into a user's data;
- it is created and probed for writing before the work starts, so a read-only or missing
  location is one line (``cannot write OUT: read-only file system``) at once, not a
  traceback after an hour of training;
- files are written under a temporary name in the same folder and renamed into place, so a
  full disk or a kill leaves the old file or none, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from anodiff.errors import AnodiffError

TEMPORARY_MARK = ".tmp-"
"""Temporary outputs live in folders named ``.tmp-<pid>-<name>`` next to their final place
(the output keeps its own name inside, so writers that choose the encoding by extension,
like nibabel's ``.nii.gz``, still do)."""


def cannot_write(path: Path, err: OSError | Exception) -> AnodiffError:
    """The one-line error for a failed write: the path and the system's reason."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return AnodiffError(f"cannot write {path}: {reason.lower()}")


def check_outside_inputs(out: Path, inputs: Sequence[Path], option: str = "--out") -> None:
    """Refuse an output folder that is a file, an input, or inside an input folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AnodiffError(f"{out}: exists and is not a folder; {option} needs a folder")
    target = resolved(out)
    for path in inputs:
        source = resolved(Path(path))
        if source == target or (source.is_dir() and source in target.parents):
            raise AnodiffError(f"{out}: is or lies inside the input {path}; write the results "
                               f"to a folder of their own ({option})")


def resolved(path: Path) -> Path:
    """``path`` made absolute with symbolic links followed where they can be (a link loop
    or an unreadable link stays as written, for the reader to name)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return Path(os.path.abspath(path))


def prepare_output_folder(out: Path, inputs: Sequence[Path] = (), option: str = "--out"
                          ) -> Path:
    """Check ``out`` against the inputs, create it and probe that it can be written."""
    out = Path(out)
    check_outside_inputs(out, inputs, option)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f"{TEMPORARY_MARK}{os.getpid()}-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise cannot_write(out, err) from err
    return out


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """Yield a path with ``path``'s name inside a temporary folder next to it; write the
    output there (a file, a folder such as a DICOM series, or a file with its companions
    such as an NRRD ``.nhdr`` and its data file). On success everything written is renamed
    into ``path``'s folder (a folder replaces the old one only once it is complete); on any
    failure the temporary folder is removed and the old output is left as it was. An
    ``OSError`` becomes :func:`cannot_write`'s named error."""
    path = Path(path)
    staging = path.with_name(f"{TEMPORARY_MARK}{os.getpid()}-{path.name}")
    remove(staging)
    try:
        staging.mkdir(parents=True)
        yield staging / path.name
        for written in sorted(staging.iterdir()):
            _fsync(written)
            _move_into_place(written, path.parent / written.name)
        staging.rmdir()
        _sync(path.parent)  # the renames themselves survive a power cut
    except OSError as err:
        remove(staging)
        raise cannot_write(path, err) from err
    except BaseException:
        remove(staging)
        raise


def _move_into_place(written: Path, final: Path) -> None:
    """Rename a finished output onto its final name (a folder cannot replace a non-empty
    folder in one rename: the old one is moved aside first, then removed)."""
    if written.is_dir() and final.is_dir():
        old = final.with_name(f"{TEMPORARY_MARK}{os.getpid()}-old-{final.name}")
        os.rename(final, old)
        os.rename(written, final)
        remove(old)
    else:
        os.replace(written, final)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new file, never half."""
    with replaced_atomically(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove(path: Path) -> None:
    """Delete a file or folder if it exists (temporary outputs, never user data)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _sync(path: Path) -> None:
    """fsync one file or folder (a folder: its entries, i.e. the renames into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    """Flush a written file (or a folder's files) to disk before it is renamed into place."""
    for file in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
        _sync(file)
