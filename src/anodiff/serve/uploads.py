"""Uploads into the session's private folder, within limits, never trusting a name.

An upload is one file sent as the request body: a NIfTI, NRRD or PNG image, or a zip of a
DICOM series or of a case folder. Its name only gives the suffix and a display name
(:func:`safe_name`); it is stored under a fresh numbered folder of the session's private
temporary folder (mode 0700, removed when the server stops). A zip is checked member by
member before anything is written (no absolute names, no ``..``, no links, at most
:attr:`Limits.zip_members` members) and unpacked with the bytes actually decompressed
counted against :attr:`Limits.unpacked_bytes`, so a zip bomb stops at the limit whatever its
headers claim. The limits are settings of ``anodiff serve``.
"""

from __future__ import annotations

import re
import stat
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from anodiff.data.dicom import is_dicom_file
from anodiff.errors import AnodiffError

SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".png", ".zip")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Upload limits: bytes sent, members and unpacked bytes of a zip, DICOM files."""

    upload_bytes: int = 1 << 30
    zip_members: int = 4000
    unpacked_bytes: int = 4 << 30
    dicom_files: int = 3000


def safe_name(name: str) -> str:
    """A display and file name from an upload's name: its last component, with anything but
    letters, digits, ``.``, ``-`` and ``_`` replaced; a name without a known suffix is an
    error naming the suffixes taken."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(name.replace("\\", "/")).name)
    base = base.lstrip(".") or "upload"
    if not base.lower().endswith(SUFFIXES):
        raise AnodiffError(f"upload {name!r}: send one of {', '.join(SUFFIXES)} (a DICOM "
                           "series or a case folder as a .zip)")
    return base


async def receive(chunks: AsyncIterator[bytes], folder: Path, name: str, limits: Limits
                  ) -> Path:
    """Write the body ``chunks`` to ``folder / name``, stopping at ``upload_bytes``; a zip
    is unpacked into ``folder`` instead (and removed). Returns what detect should read: the
    file, or the folder of the zip's contents."""
    target = folder / name
    sent = 0
    with target.open("wb") as out:
        async for chunk in chunks:
            sent += len(chunk)
            if sent > limits.upload_bytes:
                raise AnodiffError(f"upload {name}: larger than the limit of "
                                   f"{limits.upload_bytes} bytes")
            out.write(chunk)
    if sent == 0:
        raise AnodiffError(f"upload {name}: empty")
    if not name.lower().endswith(".zip"):
        return target
    unpacked = folder / name[:-4]
    unpack(target, unpacked, limits)
    target.unlink()
    return unpacked


def unpack(archive: Path, into: Path, limits: Limits) -> None:
    """Unpack a zip within ``limits`` (module docstring); refused names and sizes are
    named errors and leave nothing unpacked behind but what the caller removes."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            if len(members) > limits.zip_members:
                raise AnodiffError(f"{archive.name}: {len(members)} files, more than the "
                                   f"limit of {limits.zip_members}")
            for member in members:
                _check_member(archive, member)
            into.mkdir()
            total = 0
            for member in members:
                path = into.joinpath(*PurePosixPath(member.filename).parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(member) as source, path.open("wb") as out:
                    while chunk := source.read(_CHUNK):
                        total += len(chunk)
                        if total > limits.unpacked_bytes:
                            raise AnodiffError(f"{archive.name}: unpacks to more than the "
                                               f"limit of {limits.unpacked_bytes} bytes")
                        out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        raise AnodiffError(f"{archive.name}: not a readable zip ({err})") from err
    dicoms = sum(1 for p in into.rglob("*") if p.is_file() and is_dicom_file(p))
    if dicoms > limits.dicom_files:
        raise AnodiffError(f"{archive.name}: {dicoms} DICOM files, more than the limit of "
                           f"{limits.dicom_files}")


def _check_member(archive: Path, member: zipfile.ZipInfo) -> None:
    name = member.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
        raise AnodiffError(f"{archive.name}: refusing the member {name!r} (an absolute "
                           "path or one leaving the archive's folder)")
    if stat.S_ISLNK(member.external_attr >> 16):
        raise AnodiffError(f"{archive.name}: refusing the member {name!r} (a symbolic link)")
