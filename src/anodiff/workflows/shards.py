"""Sharded inference: one ``evaluate`` or ``detect`` split over processes or jobs, resumable.

``--shard I/N`` (0-based, like torchrun's ranks and SLURM's ``--array=0-(N-1)``) gives a
process every N-th unit of work from the I-th on; under ``torchrun`` each process takes its
rank's shard without the option. The units are fixed by the inputs alone (``evaluate``: the
batches of the unsharded run, so that sharding cannot change a number; ``detect``: the input
cases), and each finished unit is written atomically as the last thing done for it, so its
file is its done marker: a killed job rerun skips the units that are there.

The shards of one output folder share ``OUT/shards/plan.json``, written once by the first
shard to start (an exclusive create) with every setting that decides the outputs; a shard
started with other settings, another model or another number of shards is refused, naming
what differs. ``anodiff merge OUT`` (run by the main process itself under ``torchrun``)
combines the units into the ``metrics.json`` or ``scores.csv`` of a one-process run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anodiff._version import __version__
from anodiff.diffusion.distributed import World
from anodiff.errors import AnodiffError
from anodiff.locking import run_lock
from anodiff.outputs import TEMPORARY_MARK, cannot_write, write_text_atomic

SHARDS_FOLDER = "shards"
PLAN_FILE = "plan.json"
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` with 0 <= I < N, or a named error."""
        match = _SHARD.match(text)
        if not match:
            raise AnodiffError(f"--shard {text!r}: expected I/N, e.g. 0/4 for the first of "
                               "four shards")
        index, count = int(match[1]), int(match[2])
        if count < 1 or not 0 <= index < count:
            raise AnodiffError(f"--shard {text}: the index must be 0 to {max(count - 1, 0)} "
                               f"for {count} shard(s) (0-based, like torchrun's ranks and "
                               "SLURM_ARRAY_TASK_ID with --array=0-N-1)")
        return cls(index, count)

    def takes(self, unit: int) -> bool:
        """Whether unit number ``unit`` is this shard's."""
        return unit % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """The shard in file names: ``I-of-N``."""
        return f"{self.index}-of-{self.count}"


def shard_for(option: str | None, world: World) -> Shard | None:
    """The shard this process works on: ``--shard``'s, or its rank's under torchrun, or
    None (the whole job, unsharded)."""
    if option is not None and world.distributed:
        raise AnodiffError("--shard: under torchrun each process takes its rank's shard; "
                           "give --shard only to processes started on their own (e.g. a "
                           "SLURM job array)")
    if option is not None:
        return Shard.parse(option)
    return Shard(world.rank, world.size) if world.distributed else None


def model_fingerprint(run: Path) -> str:
    """A digest of the run's saved model description (``model/meta.json``, which holds the
    checksums of its weights): shards of two different models are not merged."""
    meta = Path(run) / "model" / "meta.json"
    try:
        return hashlib.sha256(meta.read_bytes()).hexdigest()[:16]
    except OSError as err:
        raise AnodiffError(f"{meta}: cannot be read ({err.strerror or err})") from err


def shards_folder(out: Path) -> Path:
    """``OUT/shards``, created."""
    folder = Path(out) / SHARDS_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise cannot_write(folder, err) from err
    return folder


def agree_on_plan(out: Path, plan: dict[str, Any]) -> None:
    """Write ``plan`` as the folder's plan if it has none (an exclusive create, so two
    shards starting at once cannot both write one), else refuse if it differs."""
    path = shards_folder(out) / PLAN_FILE
    plan = {**plan, "anodiff": __version__}
    temporary = path.with_name(f"{TEMPORARY_MARK}{os.getpid()}-{PLAN_FILE}")
    try:
        temporary.write_text(json.dumps(plan, indent=2, sort_keys=True), encoding="utf-8")
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)  # fails if a plan is there: the first shard's stands
    except OSError as err:
        raise cannot_write(path, err) from err
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    earlier = read_plan(out)
    differ = sorted(k for k in plan.keys() | earlier.keys() if plan.get(k) != earlier.get(k))
    if differ:
        listed = ", ".join(f"{k} {earlier.get(k)!r} -> {plan.get(k)!r}" for k in differ[:3])
        raise AnodiffError(f"{path}: the shards in {out} were started with other settings "
                           f"({listed}); give every shard the same command, or use another "
                           "--out")


def read_plan(out: Path) -> dict[str, Any]:
    """The plan of ``out``'s shards, or a named error."""
    path = Path(out) / SHARDS_FOLDER / PLAN_FILE
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnodiffError(f"{out}: holds no shards ({path} missing); run evaluate or detect "
                           "with --shard I/N (or under torchrun) first") from None
    except (OSError, ValueError) as err:
        raise AnodiffError(f"{path}: not a readable plan ({err})") from err
    if not isinstance(plan, dict) or plan.get("kind") not in ("evaluate", "detect"):
        raise AnodiffError(f"{path}: not a plan of anodiff's shards")
    return plan


@contextlib.contextmanager
def shard_lock(out: Path, shard: Shard) -> Iterator[None]:
    """Hold the shard's lock: two jobs on one shard would write the same units."""
    with run_lock(shards_folder(out), f".lock-{shard.tag}"):
        yield


def missing_units(done: set[int], total: int, count: int) -> str:
    """A description of the units not done, by shard, for merge's refusal ("" if none)."""
    missing = [unit for unit in range(total) if unit not in done]
    if not missing:
        return ""
    by_shard: dict[int, int] = {}
    for unit in missing:
        by_shard[unit % count] = by_shard.get(unit % count, 0) + 1
    return "; ".join(f"shard {shard}/{count}: {n} unit(s) not done"
                     for shard, n in sorted(by_shard.items()))


def wait_for(files: list[Path], poll_seconds: float = 2.0) -> None:
    """Wait until every file is there: the units of a torchrun job's other processes, whose
    failure ends the whole job (so no time-out is needed here)."""
    while not all(path.is_file() for path in files):
        time.sleep(poll_seconds)


def write_json_atomic(path: Path, value: Any) -> None:
    """``value`` as JSON, written atomically."""
    write_text_atomic(path, json.dumps(value, indent=2))
