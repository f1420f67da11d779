"""Which device a command runs on: ``--device {auto,cpu,cuda,cuda:N}`` made into a torch device.

``auto`` picks the first CUDA GPU when PyTorch sees one and the CPU otherwise. Asking for a
GPU that is not there is one clear error naming the option, not a CUDA traceback later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anodiff.errors import AnodiffError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "auto (a GPU when there is one), cpu, cuda or cuda:N"


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``name`` (None means ``auto``), checked against this machine."""
    import torch  # here, so that the command line starts without loading PyTorch

    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise AnodiffError(f"--device {name!r}: not a device; use {DEVICE_HELP}") from err
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise AnodiffError(f"--device {name!r}: anodiff runs on {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise AnodiffError(f"--device {name!r}: PyTorch sees no CUDA GPU here (torch "
                           f"{torch.__version__}); install a CUDA build of PyTorch or use cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise AnodiffError(f"--device {name!r}: there are {torch.cuda.device_count()} GPU(s), "
                           f"numbered from 0")
    return device
