"""The cases a viewer session can show: those of ``--data`` and those uploaded, by id.

Ids are short strings made here (``c1``, ``c2``…), so a request names a case by looking it
up, never by a path: no request string ever reaches the file system. A case of ``--data``
whose files resolve outside the folder (a symbolic link pointing elsewhere) is left out and
logged, as a case whose files are missing is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from anodiff.data.datasets import InputCase, find_inputs
from anodiff.errors import AnodiffError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    """A case the viewer lists: ``source`` is what detect reads, ``origin`` "data" or
    "upload"."""

    id: str
    name: str
    source: Path
    image: Path  # the file shown under the maps (the run's first sequence)
    origin: str


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` resolves (symbolic links followed) inside ``root``."""
    try:
        path.resolve(strict=True).relative_to(root.resolve(strict=True))
    except (OSError, ValueError):
        return False
    return True


class CaseIndex:
    """The session's cases by id; thread-safe (uploads arrive while detection runs)."""

    def __init__(self, sequences: Sequence[str] | None, layout: str = "auto") -> None:
        self.sequences = tuple(sequences) if sequences else None
        self.layout = layout
        self._cases: dict[str, Case] = {}
        self._lock = threading.Lock()

    def add_folder(self, root: Path, origin: str, layout: str | None = None) -> list[Case]:
        """Index the cases ``root`` holds (any layout detect reads); files resolving outside
        ``root`` and cases lacking a sequence are left out with a warning."""
        added = []
        for case in find_inputs(root, self.sequences, layout=layout or self.layout):
            problem = self._problem(case, root)
            if problem:
                log.warning("serve: left out %s: %s", case.source, problem)
                continue
            added.append(self._add(case, origin))
        if not added:
            raise AnodiffError(f"{root}: no case the run can read (sequences "
                               f"{list(self.sequences or ['image'])})")
        return added

    def _problem(self, case: InputCase, root: Path) -> str:
        if case.missing:
            return f"missing sequence(s) {'; '.join(case.missing)}"
        files = [p for paths in case.files.values() for p in paths]
        outside = [p for p in [case.source, *files] if not inside(p, root)]
        return f"{outside[0]} resolves outside {root}" if outside else ""

    def _add(self, case: InputCase, origin: str) -> Case:
        with self._lock:
            key = f"c{len(self._cases) + 1}"
            first = next(iter(case.files.values()))[0]
            self._cases[key] = Case(key, case.name, case.source, first, origin)
            return self._cases[key]

    def get(self, key: str) -> Case:
        """The case of id ``key``; an unknown id is a :class:`KeyError`."""
        with self._lock:
            return self._cases[key]

    def all(self) -> list[Case]:
        with self._lock:
            return list(self._cases.values())
