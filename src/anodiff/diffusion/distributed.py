"""Several processes, one job: PyTorch's own ``torch.distributed`` under ``torchrun``.

``torchrun --nproc-per-node N -m anodiff train …`` (and its multi-node rendezvous flags)
starts N copies of the command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address in their environment. :func:`joined` reads them, opens the process group
(``gloo`` for CPU processes, ``nccl`` for GPUs, chosen from the device) and gives each
process its device (GPU ``LOCAL_RANK`` of its node); without ``torchrun`` it is one process
and nothing is opened. The training loop (:class:`~.training.Trainer`) wraps its network in
``DistributedDataParallel`` inside such a group; the few collective steps a workflow needs
around it (the main process checks and writes, every process agrees on the settings, the
others learn the main one's refusal) are the helpers here.

Hand-written only where ``torch.distributed`` has no one-call answer: reading the launcher's
environment with a named error for a half-set one, the per-process seeds, and comparing
settings across processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from anodiff.errors import AnodiffError

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
RANK_SEED_STRIDE = 1_000_003  # a prime: rank r's streams start far from rank 0's
TIMEOUT = timedelta(minutes=30)  # a process that waits longer for the others gives up
# At the end, the processes wait for the main one's own last work (an evaluation's merge, a
# model's export) however long it takes: the wait is not a sign of a dead peer.
END_TIMEOUT = timedelta(hours=24)
log = logging.getLogger("anodiff")
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the job's processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether other processes share the work (a process group is open)."""
        return self.size > 1

    @property
    def main(self) -> bool:
        """The process that checks, logs and writes for all (rank 0)."""
        return self.rank == 0

    def __str__(self) -> str:
        return f"process {self.rank} of {self.size}"


def launched_world() -> World:
    """The world ``torchrun`` (or another launcher setting its variables) started this
    process in; one process when ``WORLD_SIZE`` is unset. A half-set or inconsistent
    environment is a named error, not a hang at the rendezvous."""
    if "WORLD_SIZE" not in os.environ:
        return World()
    try:
        values = {name: int(os.environ[name]) for name in ("RANK", "WORLD_SIZE")}
        local = int(os.environ.get("LOCAL_RANK", values["RANK"]))
    except KeyError as err:
        raise AnodiffError(f"WORLD_SIZE is set but {err} is not: start several processes "
                           "with torchrun, which sets them all") from None
    except ValueError as err:
        raise AnodiffError(f"the launcher's RANK / WORLD_SIZE / LOCAL_RANK must be whole "
                           f"numbers ({err})") from None
    rank, size = values["RANK"], values["WORLD_SIZE"]
    if size < 1 or not 0 <= rank < size or local < 0:
        raise AnodiffError(f"the launcher says RANK {rank} of WORLD_SIZE {size} (LOCAL_RANK "
                           f"{local}); a rank runs from 0 to WORLD_SIZE - 1")
    return World(rank, size, local)


def current_world() -> World:
    """The world of the open process group, or one process when none is open."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), launched_world().local_rank)


def backend_for(device: torch.device) -> str:
    """``nccl`` between GPUs, ``gloo`` between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def process_device(device: torch.device, world: World) -> torch.device:
    """The device of this process: GPU ``LOCAL_RANK`` when the job runs on GPUs (two
    processes on one GPU would deadlock NCCL), else ``device`` as it is."""
    if device.type != "cuda" or not world.distributed:
        return device
    if device.index is not None:
        raise AnodiffError(f"--device {device}: under torchrun give --device cuda (or auto); "
                           "each process takes the GPU numbered by its LOCAL_RANK")
    if world.local_rank >= torch.cuda.device_count():
        raise AnodiffError(f"{world} has LOCAL_RANK {world.local_rank}, but this node has "
                           f"{torch.cuda.device_count()} GPU(s): start at most that many "
                           "processes per node (torchrun --nproc-per-node)")
    return torch.device("cuda", world.local_rank)


@contextlib.contextmanager
def joined(device: torch.device) -> Iterator[tuple[World, torch.device]]:
    """Join the launcher's process group for the block (a no-op for one process) and give
    this process's world and device. A group opened here is closed at the end; between CPU
    processes (gloo) by all of them together when the block ends normally, after the main
    process's own last work (:data:`END_TIMEOUT`): PyTorch asks that
    ``destroy_process_group`` be called collectively, and a gloo process that tears its
    connections down while a peer still holds them can take that peer down with it. After
    an error no process waits (a peer may be gone)."""
    world = launched_world()
    if not world.distributed or dist.is_initialized():
        yield current_world() if world.distributed else world, process_device(device, world)
        return
    device = process_device(device, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend_for(device), timeout=TIMEOUT)
    except (RuntimeError, ValueError) as err:  # the rendezvous address, a dead peer
        raise AnodiffError(f"{world}: could not join the other processes ({err}); check "
                           "torchrun's --rdzv-endpoint / MASTER_ADDR and MASTER_PORT") from err
    try:
        yield world, device
        if backend_for(device) == "gloo":
            dist.monitored_barrier(timeout=END_TIMEOUT)
    finally:
        dist.destroy_process_group()


def rank_seed(seed: int, world: World) -> int:
    """The seed of this process's random streams: ``seed`` itself on rank 0 (one process
    draws exactly as before), shifted by a prime stride on the others."""
    return seed + world.rank * RANK_SEED_STRIDE


def per_process_batch(global_batch: int, world: World) -> int:
    """The batch each process trains on: the global batch split evenly, or a named error."""
    if global_batch % world.size:
        nearest = max(global_batch // world.size, 1) * world.size
        raise AnodiffError(f"train.batch_size {global_batch} is the batch of one step over all "
                           f"{world.size} processes, and {world.size} does not divide it; use "
                           f"a multiple of {world.size} (e.g. {nearest}) or another number of "
                           "processes")
    return global_batch // world.size


def broadcast(value: T, world: World) -> T:
    """The main process's ``value`` on every process (any picklable object)."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered(value: Any, world: World) -> list[Any]:
    """Every process's ``value``, in rank order, on every process."""
    if not world.distributed:
        return [value]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, value)
    return out


def mean_over_processes(value: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of a scalar tensor over the processes (itself for one process)."""
    if not world.distributed:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / world.size


def barrier(world: World) -> None:
    """Wait until every process gets here."""
    if world.distributed:
        dist.barrier()


def on_main(world: World, action: Callable[[], T]) -> T | None:
    """Run ``action`` on the main process only; a refusal there (an
    :class:`~anodiff.errors.AnodiffError`) is raised on every process, so none waits for a
    partner that has given up. Other processes get None."""
    result, refusal = None, None
    if world.main:
        try:
            result = action()
        except AnodiffError as err:
            refusal = str(err)
    refusal = broadcast(refusal, world)
    if refusal is not None:
        raise AnodiffError(refusal)
    return result


def check_same_settings(settings: dict[str, Any], world: World, what: str = "settings"
                        ) -> None:
    """Refuse to go on when the processes were started with different ``settings`` (a
    flat dict): every process raises the same error naming the first differing keys."""
    if not world.distributed:
        return
    everyone = gathered(settings, world)
    for rank, theirs in enumerate(everyone[1:], start=1):
        differ = sorted(k for k in everyone[0].keys() | theirs.keys()
                        if everyone[0].get(k) != theirs.get(k))
        if differ:
            listed = ", ".join(f"{k} {everyone[0].get(k)!r} vs {theirs.get(k)!r}"
                               for k in differ[:3])
            raise AnodiffError(f"process 0 and process {rank} were started with different "
                               f"{what} ({listed}); launch every process with the same "
                               "command")
