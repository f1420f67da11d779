"""A run folder's lock: one ``anodiff train`` at a time per run folder (and one process per
shard of a sharded ``evaluate`` or ``detect``).

Two processes training into the same folder would interleave checkpoints and leave a model
that neither produced. :func:`run_lock` creates ``RUN/.lock`` exclusively (``O_EXCL``) with
the owner's pid, host and start time, and removes it when the block ends. A lock whose owner
is a dead process on this host (a ``kill -9``, a power cut) is stale: it is taken over with
a warning. A lock held by a live process, or by another host (whose processes this one
cannot see, e.g. on a shared file system), is an error that names the owner and says how to
clear it. Hand-written because the standard library's ``fcntl`` locks do not survive on
every network file system and say nothing about who holds them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anodiff.errors import AnodiffError
from anodiff.outputs import cannot_write

LOCK_FILE = ".lock"
UNREADABLE_GRACE_S = 10.0  # seconds an empty lock file is left to the process writing it
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lock:
    """A held lock: its file, and the pid of a dead owner it was taken over from."""

    path: Path
    taken_from: int | str | None = None


@contextlib.contextmanager
def run_lock(folder: Path, name: str = LOCK_FILE) -> Iterator[Lock]:
    """Hold ``folder``'s lock while the block runs (the folder must exist); ``name`` tells
    apart locks of parts that may run at once (the shards of one output folder)."""
    lock = _acquire(Path(folder) / name)
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            if _owner(lock.path).get("pid") == os.getpid():
                lock.path.unlink()


def _acquire(lock: Path) -> Lock:
    """Create the lock, taking over a stale one once; otherwise a named error."""
    taken_from = None
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(lock)
            if not _stale(lock, owner):
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(owner.get("started", 0)))
                raise AnodiffError(
                    f"{lock.parent}: in use by process {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')} since {when}; wait for it to finish or use "
                    f"another --out (if that process is gone, delete {lock})") from None
            taken_from = owner.get("pid", "?")
            log.warning("%s: taking over the lock of process %s, which is no longer running",
                        lock.parent, taken_from)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        except OSError as err:
            raise cannot_write(lock, err) from err
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.time()}, handle)
        return Lock(lock, taken_from)
    raise AnodiffError(f"{lock}: another process took the lock at the same moment; retry")


def _owner(lock: Path) -> dict[str, Any]:
    """What the lock file says about its owner ({} when it is unreadable or half-written)."""
    try:
        owner = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _stale(lock: Path, owner: dict[str, Any]) -> bool:
    """A lock is stale when its owner is a process of this host that no longer exists, or
    when it has stayed unreadable for a while (a writer killed between creating and filling
    it; a fresh empty lock is another process about to write its name)."""
    if not owner:
        try:
            return time.time() - lock.stat().st_mtime > UNREADABLE_GRACE_S
        except FileNotFoundError:
            return True
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False
