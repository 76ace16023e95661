"""Device names: checked when a config or flag is read, resolved when work starts.

`auto` is the first CUDA GPU if there is one, else the CPU. Anything else must be a name torch knows
(`cpu`, `cuda`, `cuda:N`, `mps`, ...); a GPU that this machine does not have is refused up front, so a typo or a
missing driver fails in a second with the option named, not with a torch traceback after the models loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evomerge.core.errors import UserError

if TYPE_CHECKING:
    import torch


def check_device(spec: str, where: str = "device") -> str:
    """`spec` if torch can parse it (or it is `auto`); a UserError naming `where` otherwise."""
    import torch

    if spec == "auto":
        return spec
    try:
        torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"{spec!r} is not a device (auto, cpu, cuda, cuda:N, mps)", where) from None
    return spec


def pick_device(spec: str, where: str = "device") -> "torch.device":
    """The torch device for `spec`, refusing devices this machine does not have."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(check_device(spec, where))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{spec!r} was asked for, but no CUDA GPU is available", where)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"{spec!r} was asked for, but this machine has {torch.cuda.device_count()} GPU(s)", where)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{spec!r} was asked for, but MPS is not available", where)
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{spec!r}: evomerge runs on cpu, cuda or mps", where)
    return device
